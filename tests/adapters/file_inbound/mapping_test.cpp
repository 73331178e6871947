#include "load.hpp"

#include "tellonce/json.hpp"

#include <gtest/gtest.h>

namespace tellonce {
namespace {

using csvmap::map_row;

class CsvMapping : public ::testing::Test {
 protected:
  test::TempDir dir{"tellonce-csv-mapping"};
  test::LoadedChannel loaded;
  const std::vector<std::string> header{"NHS number", "Referral date", "Link worker", "Outcome", "Onward service",
                                        "Sessions"};

  void SetUp() override {
    std::filesystem::create_directories(dir / "in");
    loaded = test::load_file_channel(dir.path(), std::string("    inbox: in\n    partner: vcse-linkworkers\n") +
                                                     test::kOutcomeMapping);
    ASSERT_TRUE(loaded.settings) << loaded.problems;
    ASSERT_TRUE(loaded.settings->mapping);
  }

  csvmap::MappedRow map(std::vector<std::string> cells) {
    csv::Row row{2, "", std::move(cells)};
    return map_row(*loaded.settings->mapping, header, row, "abc:2");
  }
};

TEST_F(CsvMapping, BuildsATransactionWithATaskAndAnObservationFromOneRow) {
  auto r = map({"943 476 5919", "03/02/2026", "Sam", "completed", "Walking group", "6"});
  ASSERT_TRUE(r.problems.empty()) << r.problems[0].column << ": " << r.problems[0].problem;
  auto doc = parse_json(r.json);
  ASSERT_TRUE(doc);
  const auto& b = *doc;
  EXPECT_STREQ(b["type"].GetString(), "transaction");
  const auto& task = b["entry"][0]["resource"];
  EXPECT_STREQ(task["resourceType"].GetString(), "Task");
  EXPECT_STREQ(task["status"].GetString(), "completed");  // looked up, ignoring case
  EXPECT_STREQ(task["for"]["identifier"]["value"].GetString(), "9434765919");  // spaces gone
  EXPECT_STREQ(task["authoredOn"].GetString(), "2026-02-03");
  EXPECT_STREQ(task["output"][0]["type"]["text"].GetString(), "Onward service");
  EXPECT_STREQ(task["output"][0]["valueString"].GetString(), "Walking group");
  EXPECT_STREQ(b["entry"][0]["request"]["url"].GetString(), "Task");
  const auto& obs = b["entry"][1]["resource"];
  EXPECT_STREQ(obs["code"]["coding"][0]["code"].GetString(), "1234");
  EXPECT_STREQ(obs["valueCodeableConcept"]["coding"][0]["system"].GetString(), "urn:x");
  EXPECT_STREQ(obs["valueCodeableConcept"]["coding"][0]["display"].GetString(), "Done");
  EXPECT_EQ(obs["valueQuantity"]["value"].GetInt(), 6);
  EXPECT_EQ(std::string(obs["focus"][0]["reference"].GetString()), b["entry"][0]["fullUrl"].GetString());
  // The same row always becomes the same record.
  EXPECT_EQ(map({"943 476 5919", "03/02/2026", "Sam", "completed", "Walking group", "6"}).json, r.json);
}

TEST_F(CsvMapping, EmptyCellsLeaveTheirElementsOutAndIsoDatesAreTaken) {
  auto r = map({"9434765919", "2026-02-03", "", "Declined", "", ""});
  ASSERT_TRUE(r.problems.empty());
  auto doc = parse_json(r.json);
  ASSERT_TRUE(doc);
  const auto& task = (*doc)["entry"][0]["resource"];
  EXPECT_FALSE(task.HasMember("owner"));
  EXPECT_FALSE(task.HasMember("output"));  // if_column: no onward service, no output at all
  EXPECT_STREQ(task["authoredOn"].GetString(), "2026-02-03");
  EXPECT_FALSE((*doc)["entry"][1]["resource"].HasMember("valueQuantity"));
}

TEST_F(CsvMapping, BadCellsAreNamedByColumnWithoutQuotingThem) {
  auto r = map({"943 476 591", "31/02/2026", "Sam", "Maybe later", "", "six"});
  std::map<std::string, std::string> by_column;
  for (const auto& p : r.problems) by_column[p.column] = p.problem;
  EXPECT_TRUE(r.json.empty());
  EXPECT_NE(by_column["NHS number"].find("10 digits"), std::string::npos);
  EXPECT_NE(by_column["Referral date"].find("dd/mm/yyyy"), std::string::npos);
  EXPECT_NE(by_column["Outcome"].find("Completed, Declined"), std::string::npos);
  EXPECT_NE(by_column["Sessions"].find("whole number"), std::string::npos);
  for (const auto& p : r.problems) {
    EXPECT_EQ(p.problem.find("591"), std::string::npos) << p.problem;
    EXPECT_EQ(p.problem.find("31/02"), std::string::npos) << p.problem;
    EXPECT_EQ(p.problem.find("Maybe"), std::string::npos) << p.problem;
  }
}

TEST_F(CsvMapping, ARequiredEmptyCellIsAProblem) {
  auto r = map({"", "03/02/2026", "", "Completed", "", ""});
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_EQ(r.problems[0].column, "NHS number");
  EXPECT_NE(r.problems[0].problem.find("empty"), std::string::npos);
}

TEST_F(CsvMapping, ExtraCellsBeyondTheHeaderAreAProblemOfTheRow) {
  auto r = map({"9434765919", "03/02/2026", "", "Completed", "", "", "stray"});
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_EQ(r.problems[0].column, "");
}

TEST_F(CsvMapping, AValidatorIssueIsTracedBackToItsColumn) {
  auto r = map({"9434765919", "03/02/2026", "Sam", "Completed", "", ""});
  EXPECT_EQ(csvmap::column_for(r.placements, "Bundle.entry[0].resource.for.identifier.value"), "NHS number");
  EXPECT_EQ(csvmap::column_for(r.placements, "Bundle.entry[1].resource.subject.identifier[0].value"), "NHS number");
  EXPECT_EQ(csvmap::column_for(r.placements, "Bundle.entry[1].resource.valueCodeableConcept.coding[0].code"), "Outcome");
  EXPECT_EQ(csvmap::column_for(r.placements, "Bundle.entry[0].resource.intent"), "");
  Issue nhs{Severity::error, "value", "9434765918 fails", "Bundle.entry[0].resource.for.identifier.value", "uk-nhs-number"};
  auto words = csvmap::words_for(nhs);
  EXPECT_NE(words.find("not a valid NHS number"), std::string::npos);
  EXPECT_EQ(words.find("9434765918"), std::string::npos);
}

TEST_F(CsvMapping, ColumnsTheMappingNeedsAreListedOnce) {
  auto need = loaded.settings->mapping->columns();
  EXPECT_EQ(need.size(), 6u);
  auto missing = csvmap::missing_columns(*loaded.settings->mapping, {"nhs NUMBER", "Referral date", "Outcome"});
  EXPECT_EQ(missing, (std::vector<std::string>{"Link worker", "Onward service", "Sessions"}));
}

TEST(CsvCells, NhsNumbersAndDates) {
  EXPECT_EQ(csvmap::nhs_number_digits(" 943 476 5919 "), "9434765919");
  EXPECT_EQ(csvmap::nhs_number_digits("943-476-5919"), "9434765919");
  EXPECT_FALSE(csvmap::nhs_number_digits("943 476 591"));
  EXPECT_FALSE(csvmap::nhs_number_digits("943476591X"));
  std::vector<std::string> both{"dd/mm/yyyy", "yyyy-mm-dd"};
  EXPECT_EQ(csvmap::parse_date("3/2/2026", both), "2026-02-03");
  EXPECT_EQ(csvmap::parse_date("29/02/2024", both), "2024-02-29");
  EXPECT_FALSE(csvmap::parse_date("29/02/2025", both));
  EXPECT_FALSE(csvmap::parse_date("2026-13-01", both));
  EXPECT_FALSE(csvmap::parse_date("03-02-2026", both));  // not a listed format
  EXPECT_EQ(csvmap::parse_date("03-02-2026", {"dd-mm-yyyy"}), "2026-02-03");
  EXPECT_FALSE(csvmap::parse_date("02/03/26", both));
}

TEST(CsvMappingSettings, AMessageBundleStartsWithItsMessageHeader) {
  test::TempDir dir;
  auto l = test::load_file_channel(dir.path(), R"(    inbox: .
    partner: vcse-linkworkers
    mapping:
      bundle: message
      event: { system: "urn:events", code: outcome }
      resources:
        - type: Observation
          fields:
            - { path: status, value: final }
            - { path: code.text, column: What }
)");
  ASSERT_TRUE(l.settings) << l.problems;
  csv::Row row{2, "", {"x"}};
  auto r = map_row(*l.settings->mapping, {"What"}, row, "h:2");
  auto doc = parse_json(r.json);
  ASSERT_TRUE(doc);
  EXPECT_STREQ((*doc)["type"].GetString(), "message");
  EXPECT_STREQ((*doc)["entry"][0]["resource"]["resourceType"].GetString(), "MessageHeader");
  EXPECT_STREQ((*doc)["entry"][0]["resource"]["eventCoding"]["code"].GetString(), "outcome");
  EXPECT_EQ(csvmap::column_for(r.placements, "Bundle.entry[1].resource.code.text"), "What");
}

TEST(CsvMappingSettings, EveryBadMappingKeyIsReportedWithLineAndPath) {
  test::TempDir dir;
  auto l = test::load_file_channel(dir.path(), R"(    inbox: .
    partner: vcse-linkworkers
    mapping:
      bundle: parcel
      resources:
        - type: task
          fields:
            - { path: status, colum: Outcome }
            - { path: "for..value", column: NHS number, as: nhs }
            - { path: "focus[0].reference", reference_to: Nothing }
            - { path: a, column: B, as: coding }
            - { path: d, column: D, as: text, date_formats: [mm/dd/yyyy] }
)");
  EXPECT_FALSE(l.load.config);
  const auto& t = l.problems;
  auto has = [&](const std::string& s) { return t.find(s) != std::string::npos; };
  EXPECT_TRUE(has(":13: inbound[0].mapping.bundle:")) << t;
  EXPECT_TRUE(has(":15: inbound[0].mapping.resources[0].type:")) << t;
  EXPECT_TRUE(has("inbound[0].mapping.resources[0].fields[0].colum: unknown key")) << t;
  EXPECT_TRUE(has(":18: inbound[0].mapping.resources[0].fields[1].path:")) << t;
  EXPECT_TRUE(has("inbound[0].mapping.resources[0].fields[1].as: must be")) << t;
  EXPECT_TRUE(has("fields[2].reference_to: no resource of this mapping is called 'Nothing'")) << t;
  EXPECT_TRUE(has("fields[3].codes:")) << t;
  EXPECT_TRUE(has("fields[4].date_formats: 'mm/dd/yyyy'")) << t;
  EXPECT_TRUE(has("tellonce.yaml:")) << t;
}

TEST(FileInboundSettings, ReadsItsKeysAndChecksTheInboxAndPartner) {
  test::TempDir dir;
  std::filesystem::create_directories(dir / "drops");
  auto ok = test::load_file_channel(dir.path(), "    inbox: drops\n    partner: vcse-linkworkers\n    format: ndjson\n"
                                                "    poll_interval: 250ms\n");
  ASSERT_TRUE(ok.settings) << ok.problems;
  EXPECT_EQ(ok.settings->inbox, dir / "drops");  // relative to the config
  EXPECT_EQ(ok.settings->format, FileFormat::ndjson);
  EXPECT_EQ(ok.settings->poll_interval, std::chrono::milliseconds(250));
  EXPECT_FALSE(ok.settings->mapping);

  auto bad = test::load_file_channel(dir.path(), "    inbox: nowhere\n    partner: someone\n    format: xlsx\n");
  EXPECT_FALSE(bad.load.config);
  EXPECT_NE(bad.problems.find("inbound[0].inbox: '"), std::string::npos) << bad.problems;
  EXPECT_NE(bad.problems.find("unknown partner 'someone'"), std::string::npos) << bad.problems;
  EXPECT_NE(bad.problems.find("inbound[0].format: must be csv or ndjson"), std::string::npos) << bad.problems;

  auto csv_without_mapping = test::load_file_channel(dir.path(), "    inbox: drops\n    partner: vcse-linkworkers\n    format: csv\n");
  EXPECT_NE(csv_without_mapping.problems.find("needs a `mapping:`"), std::string::npos) << csv_without_mapping.problems;

  auto created = test::load_file_channel(dir.path(), "    inbox: later\n    create_inbox: true\n    partner: vcse-linkworkers\n");
  EXPECT_TRUE(created.settings) << created.problems;
}

}  // namespace
}  // namespace tellonce

namespace tellonce {
namespace {

// A report is UTF-8 a partner's tools read: a location cut inside a character (found by
// fuzz_csv, fuzz/corpus/csv/cut-bom-in-location.csv) is left out, not written as broken bytes.
TEST(CsvReportWords, ALocationThatIsNotUtf8IsLeftOut) {
  Issue cut{Severity::error, "required", "", "Bundle.entry[1].resource\xEF\xBB", ""};
  const auto words = csvmap::words_for(cut);
  EXPECT_TRUE(csv::is_utf8(words)) << words;
  EXPECT_EQ(words, "is missing: the record needs it");
  Issue fine{Severity::error, "required", "", "Bundle.entry[1].resource.status", ""};
  EXPECT_EQ(csvmap::words_for(fine), "is missing: the record needs it (at Bundle.entry[1].resource.status)");
}

}  // namespace
}  // namespace tellonce
