#include "broker/cli/csv_check_command.hpp"

#include "adapters/file_inbound/file_inbound.hpp"
#include "broker/config/config.hpp"
#include "tellonce/json.hpp"
#include "tellonce/validator.hpp"

#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

#include <charconv>
#include <fstream>
#include <iostream>
#include <sstream>

namespace tellonce {
namespace {

constexpr const char* usage =
    "usage: tellonce csv-check --config FILE --channel ID DATA.csv [--row N]\n"
    "  Runs the mapping of `file` inbound channel ID and the broker's validator over DATA.csv (or\n"
    "  .ndjson) without a broker, and prints the report the broker would write; with --row N also the\n"
    "  FHIR record row N becomes (rows are numbered as in a spreadsheet: the header is row 1).\n"
    "  exit status: 0 every row is good, 1 a row is bad or the file would be rejected, 2 usage error\n";

}  // namespace

int run_csv_check_command(int argc, char** argv, const AdapterRegistry& registry,
                          const std::filesystem::path& default_schema_dir) {
  std::string config_file, channel, input;
  int row = 0;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--config" && i + 1 < argc) {
      config_file = argv[++i];
    } else if (arg == "--channel" && i + 1 < argc) {
      channel = argv[++i];
    } else if (arg == "--row" && i + 1 < argc) {
      std::string_view n = argv[++i];
      auto [p, ec] = std::from_chars(n.data(), n.data() + n.size(), row);
      if (ec != std::errc{} || p != n.data() + n.size() || row < 1) {
        std::cerr << "tellonce csv-check: --row takes a row number (2 is the first row after the header)\n";
        return 2;
      }
    } else if (arg == "--help" || arg == "-h") {
      std::cout << usage;
      return 0;
    } else if (arg.size() > 1 && arg[0] == '-') {
      std::cerr << "tellonce csv-check: unknown option " << arg << '\n' << usage;
      return 2;
    } else if (input.empty()) {
      input = arg;
    } else {
      std::cerr << "tellonce csv-check: one file at a time\n" << usage;
      return 2;
    }
  }
  if (config_file.empty() || channel.empty() || input.empty()) {
    std::cerr << usage;
    return 2;
  }
  auto load = load_config(config_file, registry);
  if (!load.config) {
    for (const auto& p : load.problems) std::cerr << p.to_string() << '\n';
    std::cerr << "tellonce csv-check: " << config_file << " has problems (run tellonce check-config)\n";
    return 2;
  }
  const InboundChannel* ch = nullptr;
  for (const auto& c : load.config->inbound)
    if (c.id == channel) ch = &c;
  if (!ch || ch->type != "file") {
    std::cerr << "tellonce csv-check: " << config_file << " has no `file` inbound channel '" << channel << "'\n";
    return 2;
  }
  const auto& settings = settings_as<FileInboundSettings>(ch->settings);
  std::unique_ptr<Validator> validator;
  try {
    const auto& v = load.config->validation;
    validator = make_fhir_validator(
        ValidatorSettings{v.schema_dir.empty() ? default_schema_dir : v.schema_dir, v.nhs_number_check_digit_is_error});
  } catch (const std::exception& e) {
    std::cerr << "tellonce csv-check: cannot load schemas: " << e.what() << '\n';
    return 2;
  }
  std::ifstream in(input, std::ios::binary);
  if (!in) {
    std::cerr << "tellonce csv-check: cannot read " << input << '\n';
    return 2;
  }
  std::stringstream bytes;
  bytes << in.rdbuf();
  auto file = prepare_file(settings, std::filesystem::path(input).filename().string(), bytes.str());

  const JsonLimits limits{load.config->max_body_bytes, load.config->max_json_depth};
  std::string row_json;
  bool row_found = false;
  for (const auto& rec : file.records) {
    std::vector<Issue> issues;
    auto doc = parse_json(rec.body, limits);
    if (!doc) issues = doc.error().issues;
    else validator->validate(*doc, issues);
    if (has_errors(issues)) add_refusal(file.report, rec, issues);
    else ++file.report.accepted;
    if (rec.row == row) {
      row_found = true;
      if (doc) {
        rapidjson::StringBuffer buf;
        rapidjson::PrettyWriter<rapidjson::StringBuffer> w(buf);
        w.SetIndent(' ', 2);
        doc->Accept(w);
        row_json = buf.GetString();
      }
    }
  }
  tidy(file.report);
  std::cout << report_csv(file.report);
  const auto& r = file.report;
  if (r.rejected) std::cout << "the broker would move this file to rejected/\n";
  else
    std::cout << r.rows << (r.rows == 1 ? " row: " : " rows: ") << r.accepted << " good, " << r.bad_rows() << " bad\n";
  if (row > 0) {
    if (!row_json.empty()) std::cout << "row " << row << " becomes:\n" << row_json << '\n';
    else if (row_found) std::cout << "row " << row << " is not JSON\n";
    else std::cout << "row " << row << " gives no record (bad, blank or beyond the file)\n";
  }
  return r.rejected || r.bad_rows() > 0 ? 1 : 0;
}

}  // namespace tellonce
