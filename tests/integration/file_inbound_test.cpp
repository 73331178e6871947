// End-to-end for the `file` inbound adapter: the real broker watches a partner's inbox folder,
// turns CSV rows (through the channel's mapping) and NDJSON lines into records, delivers the good
// ones, writes reports naming the bad ones, and moves each file to archive/ or rejected/. A
// kill -9 in the middle of a file loses no row and stores none twice.
#include "harness.hpp"
#include "records.hpp"

#include <gtest/gtest.h>

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <thread>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

bool wait_for_path(const fs::path& p, std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (fs::exists(p)) return true;
    std::this_thread::sleep_for(20ms);
  }
  return fs::exists(p);
}

const char* kMapping = R"(    mapping:
      bundle: transaction
      resources:
        - type: Task
          fields:
            - { path: intent, value: order }
            - { path: status, column: Outcome, codes: [ { value: Completed, code: completed }, { value: Declined, code: rejected } ] }
            - { path: for.identifier.system, value: "https://fhir.nhs.uk/Id/nhs-number" }
            - { path: for.identifier.value, column: NHS number, as: nhs-number, required: true }
            - { path: authoredOn, column: Referral date, as: date, required: true }
            - { path: owner.display, column: Link worker }
        - type: Observation
          fields:
            - { path: status, value: final }
            - { path: code.text, value: Social prescribing referral outcome }
            - { path: subject.identifier.system, value: "https://fhir.nhs.uk/Id/nhs-number" }
            - { path: subject.identifier.value, column: NHS number, as: nhs-number, required: true }
            - { path: valueString, column: Outcome }
            - { path: "focus[0].reference", reference_to: Task }
)";

std::string config(const fs::path& inbox, unsigned short sink, const std::string& store_extra = "") {
  return R"(api:
  listen: 127.0.0.1:0
store:
  path: data/tellonce.db
)" + store_extra + R"(partners:
  - id: vcse-linkworkers
    kind: vcse
    ods: 8JK99
  - id: gp-a
    kind: primary-care
    ods: A81001
    endpoint: { type: fhir-rest, url: "http://127.0.0.1:)" + std::to_string(sink) + R"(/fhir", timeout: 5s }
inbound:
  - id: linkworker-outcomes
    type: file
    inbox: ")" + inbox.string() + R"("
    partner: vcse-linkworkers
    poll_interval: 100ms
)" + kMapping + R"(routes:
  - id: outcomes-to-gp
    match: { source: [vcse-linkworkers] }
    to: [gp-a]
)";
}

std::string csv_row(int i, const char* date = "03/02/2026") {
  std::string nhs = nhs_number(1000 + i);
  return nhs.substr(0, 3) + " " + nhs.substr(3, 3) + " " + nhs.substr(6) + "," + date + ",Link worker " +
         std::to_string(i % 7) + ",Completed\r\n";
}

// NDJSON wants each resource on one line.
std::string one_line(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  rapidjson::StringBuffer b;
  rapidjson::Writer<rapidjson::StringBuffer> w(b);
  d.Accept(w);
  return b.GetString();
}

const std::string kHeader = "NHS number,Referral date,Link worker,Outcome\r\n";

TEST(FileInbound, GoodRowsAreDeliveredAndTheReportNamesTheBadOnes) {
  TempDir dir("tellonce-file-inbound");
  const auto inbox = dir / "inbox";
  fs::create_directories(inbox);
  Sink sink(dir.path(), "gp", 0);
  Broker broker(dir.path(), config(inbox, sink.port()));
  broker.start();

  std::string csv = kHeader + csv_row(1) + csv_row(2, "31/02/2026") + csv_row(3) +
                    "\"123 456 7890\",03/02/2026,Sam,Completed\r\n" +  // 10 digits, a wrong check digit
                    csv_row(5) + "999 000,,Jo,Maybe\r\n";
  write_file(dir / "outcomes.tmp", csv);
  fs::rename(dir / "outcomes.tmp", inbox / "outcomes.csv");  // appears whole
  ASSERT_TRUE(wait_for_path(inbox / "archive" / "outcomes.csv", 15s)) << broker.output();
  EXPECT_FALSE(fs::exists(inbox / "outcomes.csv"));

  const auto report = read_file(inbox / "reports" / "outcomes.csv.report.csv");
  EXPECT_NE(report.find("3,Referral date,is not a date"), std::string::npos) << report;
  EXPECT_NE(report.find("5,NHS number,\"is not a valid NHS number"), std::string::npos) << report;
  EXPECT_NE(report.find("7,NHS number,\"is not an NHS number"), std::string::npos) << report;
  EXPECT_NE(report.find("7,Referral date,\"is empty"), std::string::npos) << report;
  EXPECT_NE(report.find("7,Outcome,\"is not one of the values"), std::string::npos) << report;
  EXPECT_EQ(report.find("2,"), std::string::npos) << report;  // good rows are not listed
  rapidjson::Document json;
  json.Parse(read_file(inbox / "reports" / "outcomes.csv.report.json").c_str());
  ASSERT_TRUE(json.IsObject());
  EXPECT_EQ(json["rows"].GetInt(), 6);
  EXPECT_EQ(json["accepted"].GetInt(), 3);
  EXPECT_EQ(json["bad_rows"].GetInt(), 3);

  // The three good rows reach the GP, and the store keeps each row as it was in the file.
  ASSERT_TRUE(sink.wait_for(3, 15s));
  EXPECT_EQ(sink.received_bodies().size(), 3u);
  Client client;
  auto ids = stored_message_ids(client, broker.base());
  ASSERT_EQ(ids.size(), 3u);
  auto original = client.request("GET", broker.base() + "/api/messages/" + ids.back() + "/original?reason=test");
  EXPECT_EQ(original.status, 200);
  EXPECT_EQ(original.headers["content-type"].substr(0, 8), "text/csv");
  EXPECT_EQ(original.body, kHeader + csv_row(1));  // the oldest: row 2
  // No cell reaches the log.
  EXPECT_EQ(broker.output().find(nhs_number(1002)), std::string::npos);
  EXPECT_EQ(broker.output().find("123 456 7890"), std::string::npos);
  EXPECT_EQ(broker.stop(), 0);
}

TEST(FileInbound, AnUnreadableFileIsRejectedAndNdjsonLinesAreRecords) {
  TempDir dir("tellonce-file-inbound");
  const auto inbox = dir / "inbox";
  fs::create_directories(inbox);
  Sink sink(dir.path(), "gp", 0);
  Broker broker(dir.path(), config(inbox, sink.port()));
  broker.start();

  write_file(inbox / "latin1.csv", kHeader + "943 476 5919,03/02/2026,Zo\xeb,Completed\r\n");
  write_file(inbox / "columns.csv", "NHS number,Outcome\r\n943 476 5919,Completed\r\n");
  write_file(inbox / "export.ndjson", one_line(patient(nhs_number(7), "A81001", "n1")) + "\n{not json\n" +
                                          one_line(patient(nhs_number(8), "A81001", "n2")) + "\n");
  ASSERT_TRUE(wait_for_path(inbox / "rejected" / "latin1.csv", 15s)) << broker.output();
  ASSERT_TRUE(wait_for_path(inbox / "rejected" / "columns.csv", 15s)) << broker.output();
  EXPECT_NE(read_file(inbox / "rejected" / "latin1.csv.report.csv").find("UTF-8"), std::string::npos);
  EXPECT_NE(read_file(inbox / "rejected" / "columns.csv.report.csv").find("'Referral date'"), std::string::npos);

  ASSERT_TRUE(wait_for_path(inbox / "archive" / "export.ndjson", 15s)) << broker.output();
  auto report = read_file(inbox / "reports" / "export.ndjson.report.csv");
  EXPECT_NE(report.find("\r\n2,"), std::string::npos) << report;  // line 2 named
  EXPECT_EQ(report.find("\r\n1,"), std::string::npos) << report;
  ASSERT_TRUE(sink.wait_for(2, 15s));
  Client client;
  EXPECT_EQ(stored_message_ids(client, broker.base()).size(), 2u);
  EXPECT_EQ(broker.stop(), 0);
}

TEST(FileInbound, AKillMidFileThenARestartStoresEveryRowExactlyOnce) {
  TempDir dir("tellonce-file-inbound-crash");
  const auto inbox = dir / "inbox";
  fs::create_directories(inbox);
  ReservedPort down;  // the GP is down: deliveries stay pending, which does not matter here
  // A commit window per row makes the file take seconds, so the kill lands inside it.
  Broker broker(dir.path(), config(inbox, down.port(), "  max_commit_delay: 10ms\n"));
  broker.start();

  constexpr int kRows = 600;
  std::string csv = kHeader;
  for (int i = 0; i < kRows; ++i) csv += csv_row(i);
  write_file(dir / "big.tmp", csv);
  fs::rename(dir / "big.tmp", inbox / "big.csv");

  Client client;
  auto end = std::chrono::steady_clock::now() + 30s;
  std::size_t stored = 0;
  while (std::chrono::steady_clock::now() < end && (stored = stored_message_ids(client, broker.base()).size()) < 20)
    std::this_thread::sleep_for(10ms);
  ASSERT_GE(stored, 20u);
  broker.crash();
  ASSERT_TRUE(fs::exists(inbox / "big.csv")) << "the file was finished before the kill; the test needs it mid-file";

  broker.start();
  ASSERT_TRUE(wait_for_path(inbox / "archive" / "big.csv", 60s)) << broker.output();
  auto ids = stored_message_ids(client, broker.base());
  EXPECT_EQ(ids.size(), static_cast<std::size_t>(kRows));
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(std::unique(ids.begin(), ids.end()), ids.end());
  rapidjson::Document json;
  json.Parse(read_file(inbox / "reports" / "big.csv.report.json").c_str());
  ASSERT_TRUE(json.IsObject());
  EXPECT_EQ(json["bad_rows"].GetInt(), 0);
  EXPECT_GE(json["already_received"].GetInt(), 20);  // stored before the kill: duplicates now
  EXPECT_EQ(json["accepted"].GetInt() + json["already_received"].GetInt(), kRows);
  EXPECT_EQ(broker.stop(), 0);
}

// The shipped demo: its mapping and example file, checked offline as a partner would.
TEST(CsvCheck, RunsTheShippedMappingOfflineAndPrintsTheReportAndOneRowsFhir) {
  TempDir dir("tellonce-csv-check");
  const auto config = (source_dir() / "config" / "tellonce.yaml").string();
  const auto example = (source_dir() / "config" / "examples" / "linkworker-outcomes.csv").string();
  Process check({tellonce_binary().string(), "csv-check", "--config", config, "--channel", "linkworker-outcomes",
                 example, "--row", "3"},
                dir / "check.log");
  check.wait_for_line("\"url\": \"Observation\"", 30s);  // drains stdout into the log
  EXPECT_EQ(check.wait_exit(30s), 1);  // the example has two bad rows on purpose
  auto out = check.output();
  EXPECT_NE(out.find("row,column,problem\r\n5,Referral date,is not a date"), std::string::npos) << out;
  EXPECT_NE(out.find("6,Outcome,\"is not one of the values"), std::string::npos) << out;
  EXPECT_NE(out.find("5 rows: 3 good, 2 bad"), std::string::npos) << out;
  EXPECT_NE(out.find("row 3 becomes:"), std::string::npos) << out;
  EXPECT_NE(out.find("\"valueString\": \"Walking group, Tuesdays\""), std::string::npos) << out;

  // A file of good rows only: exit 0.
  write_file(dir / "good.csv", "NHS number,Referral date,Outcome date,Link worker,Outcome,Onward service,GP practice\n"
                               "943 476 5919,03/02/2026,17/03/2026,Sam,Completed,,A81001\n");
  Process good({tellonce_binary().string(), "csv-check", "--config", config, "--channel", "linkworker-outcomes",
                (dir / "good.csv").string()},
               dir / "good.log");
  good.wait_for_line("row:", 30s);
  EXPECT_EQ(good.wait_exit(30s), 0) << good.output();
  EXPECT_NE(good.output().find("1 row: 1 good, 0 bad"), std::string::npos) << good.output();
}

}  // namespace
}  // namespace tellonce::itest
