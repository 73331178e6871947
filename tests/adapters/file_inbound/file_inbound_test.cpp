#include "load.hpp"

#include "support/io_thread.hpp"
#include "tellonce/json.hpp"
#include "tellonce/pipeline.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <sstream>
#include <thread>

namespace tellonce {
namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

const char* kGood = "NHS number,Referral date,Link worker,Outcome,Onward service,Sessions\r\n"
                    "943 476 5919,03/02/2026,Sam,Completed,,4\r\n"
                    "999 323 7418,31/02/2026,Jo,Completed,,\r\n"
                    "999 797 6630,12/02/2026,Jo,\"Declined\",\"Walking group, Tuesdays\",\r\n";

class FilePrepare : public ::testing::Test {
 protected:
  test::TempDir dir{"tellonce-file-prepare"};
  test::LoadedChannel loaded;
  void SetUp() override {
    fs::create_directories(dir / "in");
    loaded = test::load_file_channel(dir.path(), std::string("    inbox: in\n    partner: vcse-linkworkers\n") +
                                                     test::kOutcomeMapping);
    ASSERT_TRUE(loaded.settings) << loaded.problems;
  }
};

TEST_F(FilePrepare, GoodRowsBecomeRecordsWithTheirOriginalRowAndAKeyOfFileHashAndRow) {
  auto f = prepare_file(*loaded.settings, "outcomes.csv", kGood);
  EXPECT_FALSE(f.report.rejected);
  EXPECT_EQ(f.report.rows, 3u);
  ASSERT_EQ(f.records.size(), 2u);
  EXPECT_EQ(f.records[0].row, 2);
  EXPECT_EQ(f.records[1].row, 4);
  EXPECT_EQ(f.records[0].idempotency_key, sha256_hex(kGood) + ":2");
  EXPECT_EQ(f.records[1].original_bytes,
            "NHS number,Referral date,Link worker,Outcome,Onward service,Sessions\r\n"
            "999 797 6630,12/02/2026,Jo,\"Declined\",\"Walking group, Tuesdays\",\r\n");
  ASSERT_EQ(f.report.problems.size(), 1u);
  EXPECT_EQ(f.report.problems[0].row, 3);
  EXPECT_EQ(f.report.problems[0].column, "Referral date");
}

TEST_F(FilePrepare, TheReportNamesRowsAndColumnsAsCsvAndJson) {
  auto f = prepare_file(*loaded.settings, "outcomes.csv", kGood);
  f.report.accepted = 1;
  add_refusal(f.report, f.records[1],
              {Issue{Severity::error, "value", "quoting 9997976630", "Bundle.entry[0].resource.for.identifier.value",
                     "uk-nhs-number"},
               Issue{Severity::warning, "value", "just a warning", "Bundle.entry[0].resource.owner", ""}});
  tidy(f.report);
  auto csv = report_csv(f.report);
  EXPECT_EQ(csv, "row,column,problem\r\n"
                 "3,Referral date,is not a date written as dd/mm/yyyy or yyyy-mm-dd (for example 31/01/2025)\r\n"
                 "4,NHS number,\"is not a valid NHS number: its last digit does not match the others, so there is "
                 "probably a typing mistake\"\r\n");
  auto json = parse_json(report_json(f.report));
  ASSERT_TRUE(json);
  EXPECT_EQ((*json)["rows"].GetInt(), 3);
  EXPECT_EQ((*json)["accepted"].GetInt(), 1);
  EXPECT_EQ((*json)["bad_rows"].GetInt(), 2);
  EXPECT_STREQ((*json)["outcome"].GetString(), "processed");
  EXPECT_EQ((*json)["problems"][1]["row"].GetInt(), 4);
  EXPECT_EQ(report_json(f.report).find("9997976630"), std::string::npos);
}

TEST_F(FilePrepare, AFileThatCannotBeReadIsRejectedWithOneReason) {
  auto missing = prepare_file(*loaded.settings, "a.csv", "NHS number,Outcome\n9434765919,Completed\n");
  EXPECT_TRUE(missing.report.rejected);
  EXPECT_TRUE(missing.records.empty());
  ASSERT_EQ(missing.report.problems.size(), 1u);
  EXPECT_NE(missing.report.problems[0].problem.find("'Referral date'"), std::string::npos);
  EXPECT_NE(report_csv(missing.report).find("file,,"), std::string::npos);

  EXPECT_TRUE(prepare_file(*loaded.settings, "b.csv", "NHS number\n\xff\n").report.rejected);
  EXPECT_TRUE(prepare_file(*loaded.settings, "c.csv", "").report.rejected);
  EXPECT_TRUE(prepare_file(*loaded.settings, "d.xlsx", "x").report.rejected);
}

TEST_F(FilePrepare, NdjsonLinesAreRecordsNumberedByLine) {
  auto f = prepare_file(*loaded.settings, "export.ndjson", "{\"resourceType\":\"Patient\"}\n\n{\"resourceType\":\"Task\"}\r\n");
  EXPECT_EQ(f.report.format, "ndjson");
  ASSERT_EQ(f.records.size(), 2u);
  EXPECT_EQ(f.records[1].row, 3);
  EXPECT_EQ(f.records[1].body, "{\"resourceType\":\"Task\"}");
  EXPECT_TRUE(f.records[1].original_bytes.empty());
  add_refusal(f.report, f.records[0], {Issue{Severity::error, "structure", "bad json", "(body)", ""}});
  EXPECT_NE(f.report.problems[0].problem.find("JSON"), std::string::npos);
}

// A pipeline that records what it is given and answers as told.
class FakePipeline final : public Pipeline {
 public:
  asio::awaitable<Result<Accepted>> accept(InboundRecord record) override {
    std::lock_guard lk(mu);
    if (unavailable) {
      ++refused_unavailable;
      cv.notify_all();
      co_return Failure::retryable(Errc::unavailable, Issue{Severity::error, "transient", "store down", "", ""});
    }
    if (record.body.find("\"rejected\"") != std::string::npos) {
      records.push_back(record);
      cv.notify_all();
      co_return Failure::permanent(Errc::invalid, Issue{Severity::error, "code-invalid", "no",
                                                         "Bundle.entry[0].resource.status", "x"});
    }
    bool dup = std::any_of(records.begin(), records.end(),
                           [&](const InboundRecord& r) { return r.idempotency_key == record.idempotency_key; });
    records.push_back(record);
    cv.notify_all();
    co_return Accepted{"m" + std::to_string(records.size()), dup, MessageState::accepted, {}, {}};
  }
  asio::awaitable<Result<std::size_t>> replay(std::string) override { co_return std::size_t{0}; }

  std::mutex mu;
  std::condition_variable cv;
  std::vector<InboundRecord> records;
  bool unavailable = false;
  int refused_unavailable = 0;
};

class Directory final : public PartnerDirectory {
 public:
  std::string_view by_api_key(std::string_view) const override { return {}; }
  std::string_view by_id(std::string_view id) const override { return id == "vcse-linkworkers" ? id : ""; }
  std::string_view by_hl7v2_facility(std::string_view) const override { return {}; }
};

bool wait_until(const std::function<bool()>& done) {
  for (int i = 0; i < 1000 && !done(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return done();
}

TEST_F(FilePrepare, TheAdapterHandsEachGoodRowToThePipelineThenArchivesTheFileWithItsReports) {
  FakePipeline pipeline;
  Directory partners;
  test::IoThread io;
  InboundContext ctx{partners, pipeline, io.io.get_executor(), nullptr, "drops"};
  FileInboundSettings s = *loaded.settings;
  s.poll_interval = std::chrono::milliseconds(20);
  auto adapter = make_file_inbound(s, ctx);
  adapter->start();
  io.start();
  const fs::path in = dir / "in";
  std::ofstream(in / ".outcomes.csv.tmp") << kGood;  // written under a name that is never taken...
  std::ofstream(in / "notes.tmp") << kGood;
  fs::rename(in / ".outcomes.csv.tmp", in / "outcomes.csv");  // ...then renamed
  ASSERT_TRUE(wait_until([&] { return fs::exists(in / "archive" / "outcomes.csv"); }));
  {
    std::lock_guard lk(pipeline.mu);
    ASSERT_EQ(pipeline.records.size(), 2u);
    const auto& r = pipeline.records[0];
    EXPECT_EQ(r.source, "vcse-linkworkers");
    EXPECT_EQ(r.channel, "drops");
    EXPECT_EQ(r.original_content_type, "text/csv");
    EXPECT_EQ(r.idempotency_key, sha256_hex(kGood) + ":2");
    EXPECT_NE(r.original_bytes.find("943 476 5919"), std::string::npos);
    EXPECT_TRUE(parse_json(r.body));
  }
  EXPECT_FALSE(fs::exists(in / "outcomes.csv"));
  EXPECT_TRUE(fs::exists(in / "notes.tmp"));
  auto report = read_text(in / "reports" / "outcomes.csv.report.csv");
  EXPECT_NE(report.find("3,Referral date"), std::string::npos) << report;
  EXPECT_NE(report.find("4,Outcome,is not one of the codes"), std::string::npos) << report;  // the pipeline's refusal
  auto json = read_text(in / "reports" / "outcomes.csv.report.json");
  EXPECT_NE(json.find("\"accepted\":1"), std::string::npos) << json;

  // An unreadable file goes to rejected/ with its report beside it.
  std::ofstream(in / "broken.csv") << "just one column\n";
  ASSERT_TRUE(wait_until([&] { return fs::exists(in / "rejected" / "broken.csv"); }));
  EXPECT_TRUE(fs::exists(in / "rejected" / "broken.csv.report.csv"));
  EXPECT_NE(read_text(in / "rejected" / "broken.csv.report.json").find("\"outcome\":\"rejected\""), std::string::npos);
  adapter->stop();
  io.stop();
}

TEST_F(FilePrepare, WhenTheStoreIsUnavailableTheFileStaysAndIsTakenAgainWithoutDuplicates) {
  FakePipeline pipeline;
  pipeline.unavailable = true;
  Directory partners;
  test::IoThread io;
  InboundContext ctx{partners, pipeline, io.io.get_executor(), nullptr, "drops"};
  FileInboundSettings s = *loaded.settings;
  s.poll_interval = std::chrono::milliseconds(20);
  auto adapter = make_file_inbound(s, ctx);
  adapter->start();
  io.start();
  const fs::path in = dir / "in";
  std::ofstream(in / "outcomes.csv") << kGood;
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard lk(pipeline.mu);
    return pipeline.refused_unavailable >= 2;  // tried, left, tried again
  }));
  EXPECT_TRUE(fs::exists(in / "outcomes.csv"));
  EXPECT_FALSE(fs::exists(in / "archive" / "outcomes.csv"));
  {
    std::lock_guard lk(pipeline.mu);
    pipeline.unavailable = false;
  }
  ASSERT_TRUE(wait_until([&] { return fs::exists(in / "archive" / "outcomes.csv"); }));
  std::lock_guard lk(pipeline.mu);
  EXPECT_EQ(pipeline.records.size(), 2u);  // rows 2 and 4, each once
  adapter->stop();
}

}  // namespace
}  // namespace tellonce
