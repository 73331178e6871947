// libFuzzer target for the `file` inbound adapter's reading: bytes from a partner's inbox as a
// CSV export through the CSV reader and a mapping that uses every kind of field (text, lookups
// as text and as Coding, dates in every format, NHS numbers, numbers, yes/no, fixed codes,
// references, if_column, a message Bundle), then the reports; and the same bytes as NDJSON.
// Traps unless every record is JSON, every report JSON parses, row numbers rise, idempotency
// keys are unique and no more records come out than rows went in.
#include "adapters/file_inbound/csv.hpp"
#include "adapters/file_inbound/file_reading.hpp"
#include "adapters/file_inbound/mapping.hpp"
#include "tellonce/json.hpp"

#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

namespace {

using namespace tellonce;
using namespace tellonce::csvmap;

Field field(std::string path, std::string column, FieldKind kind = FieldKind::text) {
  Field f;
  f.path = path;
  // The paths below are all plain names, dots and [n]; the parser is the config's, tested there.
  std::string part;
  for (std::size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '.') {
      PathStep s;
      auto open = part.find('[');
      if (open != std::string::npos) {
        s.index = std::atoi(part.c_str() + open + 1);
        part = part.substr(0, open);
      }
      s.name = part;
      f.steps.push_back(s);
      part.clear();
    } else {
      part += path[i];
    }
  }
  f.column = std::move(column);
  f.kind = kind;
  return f;
}

std::shared_ptr<const Mapping> make_mapping() {
  Mapping m;
  m.bundle = BundleKind::message;
  m.event_system = "urn:fuzz";
  m.event_code = "outcome";
  Resource task{"Task", "Task", {}};
  auto status = field("status", "Outcome");
  status.codes = {{"Completed", "completed", "", ""}, {"Declined", "rejected", "", ""}};
  task.fields.push_back(status);
  auto nhs = field("for.identifier.value", "NHS number", FieldKind::nhs_number);
  nhs.required = true;
  task.fields.push_back(nhs);
  auto fixed = field("for.identifier.system", "");
  fixed.value = "https://fhir.nhs.uk/Id/nhs-number";
  task.fields.push_back(fixed);
  auto date = field("authoredOn", "Date", FieldKind::date);
  date.date_formats = {"dd/mm/yyyy", "yyyy-mm-dd", "dd-mm-yyyy", "dd.mm.yyyy"};
  task.fields.push_back(date);
  task.fields.push_back(field("owner.display", "Worker"));
  auto type = field("output[1].type.text", "");
  type.value = "Onward";
  type.if_column = "Onward";
  task.fields.push_back(type);
  task.fields.push_back(field("output[1].valueString", "Onward"));
  Resource obs{"Obs", "Observation", {}};
  auto code = field("code.coding[0]", "");
  code.fixed_code = Code{"", "1234", "http://snomed.info/sct", "x"};
  obs.fields.push_back(code);
  auto coding = field("valueCodeableConcept.coding[0]", "Outcome", FieldKind::coding);
  coding.codes = {{"Completed", "c", "urn:x", "C"}, {"declined", "d", "urn:x", ""}};
  obs.fields.push_back(coding);
  obs.fields.push_back(field("component[0].valueInteger", "Sessions", FieldKind::integer));
  obs.fields.push_back(field("component[1].valueQuantity.value", "Score", FieldKind::decimal));
  obs.fields.push_back(field("component[2].valueBoolean", "Agreed", FieldKind::boolean));
  // Two fields at one place, the second through what the first made a string: a row problem.
  obs.fields.push_back(field("note", "Worker"));
  obs.fields.push_back(field("note.text", "Agreed"));
  auto ref = field("focus[0].reference", "");
  ref.reference_to = "Task";
  obs.fields.push_back(ref);
  m.resources = {task, obs};
  return std::make_shared<const Mapping>(std::move(m));
}

void check_prepared(const PreparedFile& f) {
  if (f.records.size() > f.report.rows) __builtin_trap();
  std::set<std::string> keys;
  int last_row = 0;
  for (const auto& rec : f.records) {
    if (rec.row <= last_row) __builtin_trap();
    last_row = rec.row;
    if (!keys.insert(rec.idempotency_key).second) __builtin_trap();
  }
  auto json = parse_json(report_json(f.report));
  if (!json) __builtin_trap();
  (void)report_csv(f.report);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto mapping = make_mapping();
  std::string_view bytes(reinterpret_cast<const char*>(data), size);

  FileInboundSettings settings;
  settings.mapping = mapping;
  auto csv_file = prepare_file(settings, "fuzz.csv", bytes);
  check_prepared(csv_file);
  for (const auto& rec : csv_file.records) {
    // What the mapper writes is always JSON, and names the columns it placed.
    if (!parse_json(rec.body)) __builtin_trap();
    std::vector<Issue> issues{Issue{Severity::error, "value", "", "Bundle.entry[1].resource.for.identifier.value", ""},
                              Issue{Severity::error, "required", "", std::string(bytes.substr(0, 64)), "x"}};
    add_refusal(csv_file.report, rec, issues);
  }
  tidy(csv_file.report);
  check_prepared(csv_file);

  auto ndjson = prepare_file(settings, "fuzz.ndjson", bytes);
  check_prepared(ndjson);

  // The cell parsers on the raw input.
  (void)nhs_number_digits(bytes.substr(0, 40));
  (void)parse_date(bytes.substr(0, 40), {"dd/mm/yyyy", "yyyy-mm-dd", "dd-mm-yyyy", "dd.mm.yyyy"});
  (void)column_for({{1, "for.identifier.value", "NHS number"}}, std::string(bytes.substr(0, 200)));
  return 0;
}
