#include "broker/validate/validate_command.hpp"

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
    "usage: tellonce validate [--schemas DIR] [--text] [--ndjson] FILE...|-\n"
    "  Validates FHIR R4 JSON records (UK Core rules included).\n"
    "  default: one OperationOutcome (JSON) per file, one per line, in argument order\n"
    "  --text     readable lines: FILE: error LOCATION: DIAGNOSTICS [RULE]\n"
    "  --ndjson   one resource per line; one OperationOutcome per non-blank line, with the line\n"
    "             number at the start of every diagnostics (\"line 3: ...\")\n"
    "  -          read standard input\n"
    "  exit status: 0 no errors, 1 errors found, 2 usage error\n";

struct Options {
  std::filesystem::path schema_dir;
  bool text = false;
  bool ndjson = false;
  std::vector<std::string> inputs;
};


std::vector<Issue> check(const Validator& validator, std::string_view body) {
  auto doc = parse_json(body);
  if (!doc) return doc.error().issues;
  std::vector<Issue> issues;
  validator.validate(*doc, issues);
  return issues;
}

// Prints one record's result; returns true when it has errors.
bool print(const Options& options, const std::string& label, std::vector<Issue> issues, long line) {
  if (options.text) {
    std::string where = line > 0 ? label + ":" + std::to_string(line) : label;
    if (issues.empty()) std::cout << where << ": ok\n";
    for (const Issue& i : issues) {
      std::cout << where << ": " << to_string(i.severity) << ' ' << (i.location.empty() ? "-" : i.location)
                << ": " << i.diagnostics;
      if (!i.rule.empty()) std::cout << " [" << i.rule << ']';
      std::cout << '\n';
    }
  } else {
    if (line > 0) {
      std::string prefix = "line " + std::to_string(line) + ": ";
      if (issues.empty()) issues.push_back(Issue{Severity::information, "informational", "no issues", "", ""});
      for (Issue& i : issues) i.diagnostics.insert(0, prefix);
    }
    std::cout << operation_outcome_json(issues) << '\n';
  }
  return has_errors(issues);
}

}  // namespace

int run_validate_command(int argc, char** argv, const std::filesystem::path& default_schema_dir) {
  Options options;
  options.schema_dir = default_schema_dir;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--text") {
      options.text = true;
    } else if (arg == "--ndjson") {
      options.ndjson = true;
    } else if (arg == "--schemas" && i + 1 < argc) {
      options.schema_dir = argv[++i];
    } else if (arg == "--help" || arg == "-h") {
      std::cout << usage;
      return 0;
    } else if (arg.size() > 1 && arg[0] == '-') {
      std::cerr << "tellonce validate: unknown option " << arg << '\n' << usage;
      return 2;
    } else {
      options.inputs.push_back(arg);
    }
  }
  if (options.inputs.empty()) {
    std::cerr << "tellonce validate: no input files\n" << usage;
    return 2;
  }

  std::unique_ptr<Validator> validator;
  try {
    validator = make_fhir_validator(ValidatorSettings{options.schema_dir});
  } catch (const std::exception& e) {
    std::cerr << "tellonce validate: cannot load schemas from " << options.schema_dir << ": " << e.what() << '\n';
    return 2;
  }

  bool errors = false;
  for (const std::string& input : options.inputs) {
    std::string content;
    if (!read_command_input(input, content)) {
      std::cerr << "tellonce validate: cannot read " << input << '\n';
      return 2;
    }
    std::string label = input == "-" ? "(stdin)" : input;
    if (!options.ndjson) {
      errors |= print(options, label, check(*validator, content), 0);
      continue;
    }
    std::istringstream lines(content);
    std::string line;
    for (long n = 1; std::getline(lines, line); ++n) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      errors |= print(options, label, check(*validator, line), n);
    }
  }
  return errors ? 1 : 0;
}

bool read_command_input(const std::string& name, std::string& content) {
  if (name == "-") {
    content.assign(std::istreambuf_iterator<char>(std::cin), {});
    return true;
  }
  std::ifstream in(name, std::ios::binary);
  if (!in) return false;
  std::ostringstream text;
  text << in.rdbuf();
  content = text.str();
  return true;
}

}  // namespace tellonce
