// `tellonce convert --from hl7v2 [--schemas DIR] FILE|-`: converts one HL7 v2 message to the FHIR
// message Bundle the broker would store, validates it with the broker's validator, and prints the
// Bundle (indented) followed by the validation outcome (an OperationOutcome whose diagnostics name
// the v2 field each issue came from). No broker needed: for integration engineers checking a feed.
#include "broker/cli/convert_command.hpp"
#include "broker/validate/validate_command.hpp"

#include "hl7v2/er7.hpp"
#include "hl7v2/to_fhir.hpp"
#include "tellonce/json.hpp"
#include "tellonce/validator.hpp"

#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace tellonce {
namespace {

constexpr const char* usage =
    "usage: tellonce convert --from hl7v2 [--schemas DIR] FILE|-\n"
    "  Converts one HL7 v2 message (ER7; CR, LF or CRLF segment ends) to a FHIR R4 message Bundle,\n"
    "  validates it (FHIR R4 + UK Core) and prints the Bundle, then the OperationOutcome.\n"
    "  The mapping is docs/hl7v2-mapping.md; its tables are DIR/hl7v2/*.csv.\n"
    "  exit status: 0 converted and valid, 1 refused (unparseable, unsupported event, unmappable\n"
    "  field) or invalid, 2 usage error\n";

// Indents compact JSON by its tokens, keeping every value's text as written (numbers included).
std::string indent_json(std::string_view json) {
  std::string out;
  out.reserve(json.size() * 2);
  int depth = 0;
  bool in_string = false;
  auto newline = [&] {
    out += '\n';
    out.append(static_cast<std::size_t>(depth) * 2, ' ');
  };
  for (std::size_t i = 0; i < json.size(); ++i) {
    char c = json[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < json.size()) {
        out += json[++i];
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        out += c;
        break;
      case '{':
      case '[':
        out += c;
        if (i + 1 < json.size() && (json[i + 1] == '}' || json[i + 1] == ']')) {
          out += json[++i];
        } else {
          ++depth;
          newline();
        }
        break;
      case '}':
      case ']':
        --depth;
        newline();
        out += c;
        break;
      case ',':
        out += c;
        newline();
        break;
      case ':':
        out += ": ";
        break;
      default:
        out += c;
    }
  }
  return out;
}

}  // namespace

int run_convert_command(int argc, char** argv, const std::filesystem::path& default_schema_dir) {
  std::filesystem::path schema_dir = default_schema_dir;
  std::string from, input;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--from" && i + 1 < argc) {
      from = argv[++i];
    } else if (arg == "--schemas" && i + 1 < argc) {
      schema_dir = argv[++i];
    } else if (arg == "--help" || arg == "-h") {
      std::cout << usage;
      return 0;
    } else if (arg.size() > 1 && arg[0] == '-') {
      std::cerr << "tellonce convert: unknown option " << arg << '\n' << usage;
      return 2;
    } else if (input.empty()) {
      input = arg;
    } else {
      std::cerr << "tellonce convert: one message file at a time\n" << usage;
      return 2;
    }
  }
  if (from != "hl7v2") {
    std::cerr << "tellonce convert: --from hl7v2 is required (the only format converted)\n" << usage;
    return 2;
  }
  if (input.empty()) {
    std::cerr << "tellonce convert: no input file\n" << usage;
    return 2;
  }

  std::unique_ptr<hl7v2::V2ToFhir> converter;
  std::unique_ptr<Validator> validator;
  try {
    converter = hl7v2::V2ToFhir::load(schema_dir / "hl7v2");
    validator = make_fhir_validator(ValidatorSettings{schema_dir});
  } catch (const std::exception& e) {
    std::cerr << "tellonce convert: cannot load schemas from " << schema_dir << ": " << e.what() << '\n';
    return 2;
  }
  std::string content;
  if (!read_command_input(input, content)) {
    std::cerr << "tellonce convert: cannot read " << input << '\n';
    return 2;
  }

  auto message = hl7v2::parse(content);
  if (!message) {
    std::cout << operation_outcome_json(message.error().issues) << '\n';
    return 1;
  }
  auto converted = converter->convert(*message);
  if (!converted) {
    std::cout << operation_outcome_json(converted.error().issues) << '\n';
    return 1;
  }
  std::cout << indent_json(converted->bundle_json) << '\n';

  std::vector<Issue> issues;
  auto doc = parse_json(converted->bundle_json);
  if (!doc) {
    issues = doc.error().issues;  // a converter bug: say so rather than hide it
  } else {
    validator->validate(*doc, issues);
  }
  for (Issue& issue : issues) {
    std::string v2 = hl7v2::v2_location_for(*converted, issue.location);
    if (!v2.empty()) issue.diagnostics += " (HL7 v2 " + v2 + ")";
  }
  bool errors = has_errors(issues);
  for (const Issue& w : converted->warnings) {
    Issue copy = w;
    copy.diagnostics += " (HL7 v2 " + w.location + ")";
    copy.location.clear();
    issues.push_back(std::move(copy));
  }
  if (issues.empty()) issues.push_back(Issue{Severity::information, "informational", "no issues", "", ""});
  std::cout << operation_outcome_json(issues) << '\n';
  return errors ? 1 : 0;
}

}  // namespace tellonce
