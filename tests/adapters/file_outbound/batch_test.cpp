// The `file` outbound adapter's batch formats (ndjson, csv): batching by count and by time, the
// manifest, write failures, stop(), redelivery after a restart, the CSV reverse mapping, and
// the outbox's atomicity under load with a concurrent reader.
#include "adapters/file_outbound/csv_mapping.hpp"
#include "adapters/file_outbound/file_outbound.hpp"
#include "broker/config/config.hpp"
#include "support/run_async.hpp"
#include "support/temp_dir.hpp"
#include "tellonce/json.hpp"

#include <boost/asio/co_spawn.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

namespace tellonce {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using file_outbound::append_csv_field;
using file_outbound::parse_csv_path;
using file_outbound::render_csv_row;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> names_ending(const fs::path& dir, std::string_view suffix) {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().ends_with(suffix)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> lines_of(const std::string& text, std::string_view end = "\n") {
  std::vector<std::string> out;
  for (std::size_t at = 0; at < text.size();) {
    auto next = text.find(end, at);
    if (next == std::string::npos) next = text.size();
    out.push_back(text.substr(at, next - at));
    at = next + end.size();
  }
  return out;
}

struct Manifest {
  std::string file, format, sha256, created;
  std::size_t records = 0, bytes = 0;
  std::vector<std::string> message_ids;
};

std::optional<Manifest> read_manifest(const fs::path& p) {
  auto doc = parse_json(slurp(p));
  if (!doc) return std::nullopt;
  Manifest m;
  m.file = std::string(json_string(json_member(*doc, "file")));
  m.format = std::string(json_string(json_member(*doc, "format")));
  m.sha256 = std::string(json_string(json_member(*doc, "sha256")));
  m.created = std::string(json_string(json_member(*doc, "created")));
  if (auto* r = json_member(*doc, "records"); r && r->IsUint64()) m.records = r->GetUint64();
  if (auto* b = json_member(*doc, "bytes"); b && b->IsUint64()) m.bytes = b->GetUint64();
  if (auto* ids = json_member(*doc, "message_ids"); ids && ids->IsArray())
    for (auto& id : ids->GetArray()) m.message_ids.emplace_back(json_string(&id));
  return m;
}

std::string patient(const std::string& family) {
  return R"({"resourceType":"Patient","name":[{"family":")" + family + R"(","given":["Jo","Ann"]}]})";
}

DeliveryJob job(std::string id, std::string body, std::string type = "application/fhir+json") {
  DeliveryJob j;
  j.message_id = std::move(id);
  j.destination = "carers-centre";
  j.content_type = std::move(type);
  j.body = std::move(body);
  return j;
}

// Starts one delivery per job on `io`, results in job order once run.
struct Deliveries {
  std::vector<DeliveryJob> jobs;
  std::vector<std::optional<DeliveryResult>> results;

  static asio::awaitable<DeliveryResult> call(OutboundAdapter& a, const DeliveryJob& j) {
    co_return co_await a.deliver(j);
  }
  void start(asio::io_context& io, OutboundAdapter& adapter, std::vector<DeliveryJob> js) {
    jobs = std::move(js);
    results.assign(jobs.size(), std::nullopt);
    for (std::size_t i = 0; i < jobs.size(); ++i)
      asio::co_spawn(io, call(adapter, jobs[i]), [this, i](std::exception_ptr e, DeliveryResult r) {
        if (e) r.detail = "threw";
        results[i] = std::move(r);
      });
  }
  bool done() const {
    return std::all_of(results.begin(), results.end(), [](auto& r) { return r.has_value(); });
  }
};

class FileBatchTest : public ::testing::Test {
 protected:
  test::TempDir dir{"tellonce-file-batch"};
  fs::path outbox = dir / "outbox";
  asio::io_context io;

  void SetUp() override { fs::create_directories(outbox); }

  FileOutboundSettings ndjson(std::size_t max_records, std::chrono::milliseconds max_wait) {
    FileOutboundSettings s;
    s.directory = outbox;
    s.format = FileOutboundFormat::ndjson;
    s.batch_max_records = max_records;
    s.batch_max_wait = max_wait;
    return s;
  }
  // Runs the deliveries to completion (bounded: a hang fails the test).
  void run(OutboundAdapter& a, Deliveries& d, std::vector<DeliveryJob> jobs) {
    d.start(io, a, std::move(jobs));
    ASSERT_TRUE(test::run_until(io, [&] { return d.done(); }, 20s));
  }
};

TEST_F(FileBatchTest, ABatchClosesAtMaxRecordsWithAManifestThatMatchesIt) {
  auto adapter = make_file_outbound(ndjson(3, 1h));  // time never closes a batch here
  std::vector<DeliveryJob> jobs;
  for (int i = 0; i < 6; ++i) jobs.push_back(job(new_message_id(), patient("F" + std::to_string(i))));
  Deliveries d;
  run(*adapter, d, jobs);
  for (auto& r : d.results) {
    EXPECT_EQ(r->outcome, DeliveryOutcome::ok) << r->partner_code << " " << r->detail;
    EXPECT_EQ(r->partner_code, "file written");
  }
  auto manifests = names_ending(outbox, ".manifest.json");
  auto data = names_ending(outbox, ".ndjson");
  ASSERT_EQ(manifests.size(), 2u);
  ASSERT_EQ(data.size(), 2u);
  EXPECT_TRUE(names_ending(outbox, ".tmp").empty());
  EXPECT_LT(data[0], data[1]);  // batch order
  for (int b = 0; b < 2; ++b) {
    auto m = read_manifest(outbox / manifests[b]);
    ASSERT_TRUE(m) << manifests[b];
    EXPECT_EQ(m->file, data[b]);
    EXPECT_EQ(manifests[b], data[b].substr(0, data[b].size() - 7) + ".manifest.json");
    EXPECT_EQ(m->format, "ndjson");
    const auto bytes = slurp(outbox / m->file);
    EXPECT_EQ(m->sha256, sha256_hex(bytes));
    EXPECT_EQ(m->bytes, bytes.size());
    EXPECT_EQ(m->records, 3u);
    EXPECT_EQ(m->created.size(), 24u) << m->created;  // 2026-11-30T19:30:00.123Z
    std::vector<std::string> want_ids, want_lines;
    for (int i = 0; i < 3; ++i) {
      want_ids.push_back(jobs[b * 3 + i].message_id);
      want_lines.push_back(jobs[b * 3 + i].body);
    }
    EXPECT_EQ(m->message_ids, want_ids);  // in the file's order
    EXPECT_EQ(lines_of(bytes), want_lines);
  }
}

TEST_F(FileBatchTest, ABatchClosesAfterMaxWaitWhenFewRecordsCome) {
  auto adapter = make_file_outbound(ndjson(500, 50ms));
  Deliveries d;
  run(*adapter, d, {job(new_message_id(), patient("A")), job(new_message_id(), patient("B"))});
  for (auto& r : d.results) EXPECT_EQ(r->outcome, DeliveryOutcome::ok) << r->detail;
  auto manifests = names_ending(outbox, ".manifest.json");
  ASSERT_EQ(manifests.size(), 1u);
  auto m = read_manifest(outbox / manifests[0]);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->records, 2u);
  EXPECT_EQ(m->message_ids, (std::vector<std::string>{d.jobs[0].message_id, d.jobs[1].message_id}));
}

TEST_F(FileBatchTest, APrettyPrintedRecordBecomesOneLine) {
  auto adapter = make_file_outbound(ndjson(1, 1h));
  Deliveries d;
  run(*adapter, d, {job(new_message_id(), "{\r\n  \"resourceType\": \"Patient\",\n  \"active\": true\n}\n")});
  ASSERT_EQ(d.results[0]->outcome, DeliveryOutcome::ok) << d.results[0]->detail;
  auto data = names_ending(outbox, ".ndjson");
  ASSERT_EQ(data.size(), 1u);
  auto lines = lines_of(slurp(outbox / data[0]));
  ASSERT_EQ(lines.size(), 1u);
  auto doc = parse_json(lines[0]);
  ASSERT_TRUE(doc) << lines[0];
  EXPECT_EQ(json_string(json_member(*doc, "resourceType")), "Patient");
}

TEST_F(FileBatchTest, AFailedWriteMakesEveryDeliveryInTheBatchRetryable) {
  auto adapter = make_file_outbound(ndjson(3, 1h));
  fs::remove_all(outbox);
  Deliveries d;
  std::vector<DeliveryJob> jobs;
  for (int i = 0; i < 3; ++i) jobs.push_back(job(new_message_id(), patient("X")));
  run(*adapter, d, jobs);
  for (auto& r : d.results) {
    EXPECT_EQ(r->outcome, DeliveryOutcome::retryable);
    EXPECT_EQ(r->partner_code, "file ENOENT");
    EXPECT_NE(r->detail.find("create"), std::string::npos) << r->detail;
  }
  // Once the folder is back, the same records make one complete batch.
  fs::create_directories(outbox);
  Deliveries again;
  run(*adapter, again, jobs);
  for (auto& r : again.results) EXPECT_EQ(r->outcome, DeliveryOutcome::ok) << r->detail;
  EXPECT_EQ(names_ending(outbox, ".manifest.json").size(), 1u);
}

TEST_F(FileBatchTest, StopEndsWaitingDeliveriesAsRetryableAndLaterOnesAtOnce) {
  auto adapter = make_file_outbound(ndjson(500, 1h));
  Deliveries d;
  d.start(io, *adapter, {job(new_message_id(), patient("A")), job(new_message_id(), patient("B"))});
  test::run_ready(io);  // both are now waiting for their batch
  EXPECT_FALSE(d.done());
  adapter->stop();
  ASSERT_TRUE(test::run_until(io, [&] { return d.done(); }));
  for (auto& r : d.results) {
    EXPECT_EQ(r->outcome, DeliveryOutcome::retryable);
    EXPECT_EQ(r->partner_code, "file not written");
  }
  Deliveries later;
  run(*adapter, later, {job(new_message_id(), patient("C"))});
  EXPECT_EQ(later.results[0]->outcome, DeliveryOutcome::retryable);
  EXPECT_TRUE(names_ending(outbox, ".ndjson").empty());
}

TEST_F(FileBatchTest, ARedeliveryAfterARestartIsAnsweredFromTheManifestsAndLeftoversGo) {
  const auto id = new_message_id();
  {
    auto first = make_file_outbound(ndjson(1, 1h));
    Deliveries d;
    run(*first, d, {job(id, patient("A"))});
    ASSERT_EQ(d.results[0]->outcome, DeliveryOutcome::ok);
  }
  // What a crash mid-batch leaves: a temporary file, and a data file whose manifest never came.
  std::ofstream(outbox / "batch-0000000000000001.ndjson.tmp") << "{\"partial";
  std::ofstream(outbox / "batch-0000000000000002.ndjson") << "{}\n";
  std::ofstream(outbox / "partner-notes.txt") << "not ours";
  auto second = make_file_outbound(ndjson(1, 1h));
  Deliveries d;
  run(*second, d, {job(id, patient("A"))});
  EXPECT_EQ(d.results[0]->outcome, DeliveryOutcome::ok);
  EXPECT_NE(d.results[0]->detail.find("already"), std::string::npos) << d.results[0]->detail;
  EXPECT_EQ(names_ending(outbox, ".manifest.json").size(), 1u);  // nothing written twice
  EXPECT_EQ(names_ending(outbox, ".ndjson").size(), 1u);
  EXPECT_TRUE(names_ending(outbox, ".tmp").empty());
  EXPECT_TRUE(fs::exists(outbox / "partner-notes.txt"));
}

// --- CSV ---

TEST(CsvField, QuotesOnlyWhatRfc4180Needs) {
  auto field = [](std::string_view v) {
    std::string out;
    append_csv_field(out, v);
    return out;
  };
  EXPECT_EQ(field("plain"), "plain");
  EXPECT_EQ(field(""), "");
  EXPECT_EQ(field("a,b"), "\"a,b\"");
  EXPECT_EQ(field("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(field("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(field("cr\rhere"), "\"cr\rhere\"");
  EXPECT_EQ(field(" padded"), "\" padded\"");
}

TEST(CsvPath, ParsesNamesIndexesAndFiltersAndRefusesTheRest) {
  auto ok = parse_csv_path("identifier[system=https://fhir.nhs.uk/Id/nhs-number].value");
  ASSERT_EQ(ok.index(), 0u) << std::get<1>(ok);
  auto& path = std::get<0>(ok);
  ASSERT_EQ(path.size(), 2u);
  EXPECT_EQ(path[0].name, "identifier");
  EXPECT_EQ(path[0].filter_key, "system");
  EXPECT_EQ(path[0].filter_value, "https://fhir.nhs.uk/Id/nhs-number");
  EXPECT_EQ(path[1].name, "value");
  auto indexed = parse_csv_path("name[1].family");
  ASSERT_EQ(indexed.index(), 0u);
  EXPECT_EQ(std::get<0>(indexed)[0].index, 1u);
  for (const char* bad : {"", "name..family", "name[x]", "name[", "name[=a]", "name.", "na-me"})
    EXPECT_EQ(parse_csv_path(bad).index(), 1u) << bad;
}

file_outbound::CsvMapping patient_mapping() {
  file_outbound::CsvMapping m;
  m.resource_type = "Patient";
  for (auto [header, path] : std::vector<std::pair<std::string, std::string>>{
           {"nhs_number", "identifier[system=https://fhir.nhs.uk/Id/nhs-number].value"},
           {"family", "name.family"},
           {"given", "name[0].given"},
           {"second_given", "name.given[1]"},
           {"active", "active"},
           {"missing", "telecom[0].value"}})
    m.columns.push_back({header, std::get<0>(parse_csv_path(path))});
  return m;
}

TEST(CsvRow, RendersThePathsValuesQuotedWhereNeeded) {
  auto mapping = patient_mapping();
  EXPECT_EQ(file_outbound::csv_header(mapping), "nhs_number,family,given,second_given,active,missing\r\n");
  auto r = render_csv_row(mapping, R"({"resourceType":"Patient","active":true,
    "identifier":[{"system":"local","value":"L1"},{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9000000009"}],
    "name":[{"family":"O'Brien, \"Jr\"","given":["Mary","Ann"]},{"family":"Other"}]})");
  ASSERT_TRUE(r.row) << r.why;
  EXPECT_EQ(*r.row, "9000000009,\"O'Brien, \"\"Jr\"\"\",Mary Ann,Ann,true,\r\n");
}

TEST(CsvRow, AnotherResourceTypeOrAStructureIsRefusedWithoutQuotingValues) {
  auto mapping = patient_mapping();
  auto wrong = render_csv_row(mapping, R"({"resourceType":"Observation","status":"final"})");
  EXPECT_FALSE(wrong.row);
  EXPECT_NE(wrong.why.find("Observation"), std::string::npos) << wrong.why;
  EXPECT_FALSE(render_csv_row(mapping, "not json").row);
  file_outbound::CsvMapping structure;
  structure.resource_type = "Patient";
  structure.columns.push_back({"name", std::get<0>(parse_csv_path("name"))});
  auto r = render_csv_row(structure, R"({"resourceType":"Patient","name":[{"family":"Secret"}]})");
  EXPECT_FALSE(r.row);
  EXPECT_EQ(r.why.find("Secret"), std::string::npos) << r.why;
}

TEST_F(FileBatchTest, CsvBatchHasAHeaderAndARowPerRecordAndARecordItCannotRenderFailsAlone) {
  FileOutboundSettings s;
    s.directory = outbox;
  s.format = FileOutboundFormat::csv;
  s.batch_max_records = 2;
  s.batch_max_wait = 1h;
  s.csv_resource_type = "Patient";
  s.csv_columns = {{"family", "name.family"}, {"given", "name.given"}};
  auto adapter = make_file_outbound(s);
  Deliveries d;
  run(*adapter, d,
      {job(new_message_id(), patient("Smith, J")), job(new_message_id(), R"({"resourceType":"Observation"})"),
       job(new_message_id(), patient("Jones"))});
  EXPECT_EQ(d.results[0]->outcome, DeliveryOutcome::ok) << d.results[0]->detail;
  EXPECT_EQ(d.results[1]->outcome, DeliveryOutcome::permanent);
  EXPECT_EQ(d.results[1]->partner_code, "file not renderable");
  EXPECT_EQ(d.results[2]->outcome, DeliveryOutcome::ok) << d.results[2]->detail;
  auto data = names_ending(outbox, ".csv");
  ASSERT_EQ(data.size(), 1u);
  EXPECT_EQ(slurp(outbox / data[0]), "family,given\r\n\"Smith, J\",Jo Ann\r\nJones,Jo Ann\r\n");
  auto m = read_manifest(outbox / names_ending(outbox, ".manifest.json").at(0));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->format, "csv");
  EXPECT_EQ(m->message_ids, (std::vector<std::string>{d.jobs[0].message_id, d.jobs[2].message_id}));
}

// --- Atomicity: a reader polling the outbox while the adapter writes under load ---

TEST_F(FileBatchTest, AConcurrentReaderNeverSeesAPartialFileOrAManifestAheadOfItsFile) {
  auto adapter = make_file_outbound(ndjson(40, 20ms));
  constexpr int total = 1200;
  std::vector<DeliveryJob> jobs;
  const std::string padding(3000, 'x');  // big enough that a write takes more than one syscall's worth of time
  for (int i = 0; i < total; ++i)
    jobs.push_back(job(new_message_id(), R"({"resourceType":"Patient","id":")" + std::to_string(i) +
                                             R"(","text":{"div":")" + padding + R"("}})"));
  std::atomic<bool> writing_done{false};
  std::atomic<int> manifests_checked{0}, data_files_checked{0};
  std::vector<std::string> reader_errors;
  std::thread reader([&] {
    while (true) {
      const bool last_round = writing_done.load();
      std::vector<fs::path> entries;
      std::error_code ec;
      for (auto& e : fs::directory_iterator(outbox, ec)) entries.push_back(e.path());
      for (const auto& p : entries) {
        const auto name = p.filename().string();
        if (name.ends_with(".tmp")) continue;  // the contract: never read these
        if (name.ends_with(".manifest.json")) {
          auto m = read_manifest(p);
          if (!m) {
            reader_errors.push_back("unreadable manifest " + name);
            continue;
          }
          if (!fs::exists(outbox / m->file)) {
            reader_errors.push_back(name + " names " + m->file + ", which is not there");
            continue;
          }
          const auto bytes = slurp(outbox / m->file);
          if (sha256_hex(bytes) != m->sha256 || lines_of(bytes).size() != m->records)
            reader_errors.push_back(name + " does not match " + m->file);
          ++manifests_checked;
        } else if (name.ends_with(".ndjson")) {
          // Even outside the contract, a visible data file is whole: every line a whole record.
          const auto bytes = slurp(p);
          bool whole = !bytes.empty() && bytes.back() == '\n';
          for (const auto& line : lines_of(bytes)) whole = whole && parse_json(line).has_value();
          if (!whole) reader_errors.push_back("partial data file " + name);
          ++data_files_checked;
        }
      }
      if (last_round) return;
      std::this_thread::yield();
    }
  });
  Deliveries d;
  d.start(io, *adapter, jobs);
  const bool finished = test::run_until(io, [&] { return d.done(); }, 60s);
  writing_done = true;
  reader.join();
  ASSERT_TRUE(finished);
  for (auto& r : d.results) ASSERT_EQ(r->outcome, DeliveryOutcome::ok) << r->detail;
  EXPECT_TRUE(reader_errors.empty()) << reader_errors.size() << " problems, first: " << reader_errors.front();
  EXPECT_GT(manifests_checked.load(), 0);
  EXPECT_GT(data_files_checked.load(), 0);
  // Every record is in exactly one batch, and the batches list them in delivery order.
  std::vector<std::string> listed;
  for (const auto& name : names_ending(outbox, ".manifest.json")) {
    auto m = read_manifest(outbox / name);
    ASSERT_TRUE(m);
    listed.insert(listed.end(), m->message_ids.begin(), m->message_ids.end());
  }
  std::vector<std::string> want;
  for (auto& j : jobs) want.push_back(j.message_id);
  EXPECT_EQ(listed, want);
}

// --- Settings through the real config loader ---

class FileBatchSettingsTest : public FileBatchTest {
 protected:
  ConfigLoad load(const std::string& endpoint_lines) {
    auto path = dir / "tellonce.yaml";
    std::ofstream(path) << "partners:\n  - id: carers\n    kind: vcse\n    ods: 8JK99\n    endpoint:\n"
                           "      type: file\n      directory: " << outbox.string() << "\n" << endpoint_lines;
    AdapterRegistry registry;
    register_builtin_engines(registry);
    registry.add(file_outbound_type());
    return load_config(path, registry);
  }
  static std::string problems(const ConfigLoad& l) {
    std::string out;
    for (const auto& p : l.problems) out += p.to_string() + "\n";
    return out;
  }
};

TEST_F(FileBatchSettingsTest, ReadsNdjsonBatchingAndDefaults) {
  auto l = load("      format: ndjson\n      batch_max_wait: 2s\n");
  ASSERT_TRUE(l.config) << problems(l);
  const auto& s = settings_as<FileOutboundSettings>(l.config->partners[0].endpoint->settings);
  EXPECT_EQ(s.format, FileOutboundFormat::ndjson);
  EXPECT_EQ(s.batch_max_records, 500u);
  EXPECT_EQ(s.batch_max_wait, 2s);
}

TEST_F(FileBatchSettingsTest, ReadsACsvMapping) {
  auto l = load("      format: csv\n      batch_max_records: 100\n      csv:\n        resource_type: Patient\n"
                "        columns:\n          - { header: nhs_number, path: "
                "\"identifier[system=https://fhir.nhs.uk/Id/nhs-number].value\" }\n"
                "          - { header: family, path: name.family }\n");
  ASSERT_TRUE(l.config) << problems(l);
  const auto& s = settings_as<FileOutboundSettings>(l.config->partners[0].endpoint->settings);
  EXPECT_EQ(s.format, FileOutboundFormat::csv);
  EXPECT_EQ(s.batch_max_records, 100u);
  EXPECT_EQ(s.csv_resource_type, "Patient");
  ASSERT_EQ(s.csv_columns.size(), 2u);
  EXPECT_EQ(s.csv_columns[1].header, "family");
  EXPECT_EQ(s.csv_columns[1].path, "name.family");
}

TEST_F(FileBatchSettingsTest, BadValuesAreProblemsWithTheirPathsAndLines) {
  auto l = load("      format: ndjosn\n");
  EXPECT_FALSE(l.config);
  EXPECT_NE(problems(l).find("tellonce.yaml:8: partners[0].endpoint.format: 'ndjosn' is not a format"),
            std::string::npos) << problems(l);

  l = load("      batch_max_records: 10\n");  // the default format does not batch
  EXPECT_FALSE(l.config);
  EXPECT_NE(problems(l).find("partners[0].endpoint.batch_max_records: applies to format ndjson or csv only"),
            std::string::npos) << problems(l);

  l = load("      format: ndjson\n      batch_max_records: 0\n      batch_max_wait: 0s\n");
  EXPECT_FALSE(l.config);
  auto text = problems(l);
  EXPECT_NE(text.find("partners[0].endpoint.batch_max_records"), std::string::npos) << text;
  EXPECT_NE(text.find("partners[0].endpoint.batch_max_wait"), std::string::npos) << text;

  l = load("      format: csv\n");
  EXPECT_FALSE(l.config);
  EXPECT_NE(problems(l).find("partners[0].endpoint.csv: format csv needs a csv mapping"), std::string::npos)
      << problems(l);

  l = load("      format: csv\n      csv:\n        resource_type: Patient\n        columns:\n"
           "          - { header: family, path: \"name[x].family\" }\n");
  EXPECT_FALSE(l.config);
  EXPECT_NE(problems(l).find("tellonce.yaml:12: partners[0].endpoint.csv.columns[0].path: '[x]'"),
            std::string::npos) << problems(l);
}

}  // namespace
}  // namespace tellonce
