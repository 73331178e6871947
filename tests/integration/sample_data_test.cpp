// Every public example in ../shared/data goes through the real broker: valid FHIR is accepted,
// the known defects listed in SOURCES.md are rejected with the location of the problem.
#include "harness.hpp"

#include <gtest/gtest.h>

#include <rapidjson/document.h>

#include <map>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;

struct Sample {
  std::filesystem::path file;
  std::string type;
  std::string bundle_type;
};

std::vector<Sample> samples(const std::filesystem::path& folder) {
  std::vector<Sample> out;
  if (!std::filesystem::exists(folder)) return out;
  for (auto& e : std::filesystem::recursive_directory_iterator(folder)) {
    if (!e.is_regular_file() || e.path().extension() != ".json") continue;
    rapidjson::Document d;
    d.Parse(read_file(e.path()).c_str());
    if (d.HasParseError() || !d.IsObject() || !d.HasMember("resourceType") || !d["resourceType"].IsString())
      continue;  // not a FHIR resource (e.g. an HTTP envelope, or the known-malformed file)
    Sample s{e.path(), d["resourceType"].GetString(), ""};
    if (d.HasMember("type") && d["type"].IsString()) s.bundle_type = d["type"].GetString();
    out.push_back(std::move(s));
  }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.file < b.file; });
  return out;
}

// Known defects: listed in ../shared/data/SOURCES.md, or found by this broker and noted in
// docs/sample-data-defects.md. Each must be refused with this rule at this location.
struct KnownDefect {
  const char* rule;
  const char* location;
};
const std::map<std::string, KnownDefect> kKnownDefects = {
    {"PatientCompoundName.json", {"uk-nhs-number", "Bundle.entry[0].resource.identifier[0].value"}},
    {"UKCore-Patient-BabyPatient-Example.json", {"uk-nhs-number", "Patient.identifier[0].value"}},
    {"Extension-UKCore-ConditionEpisode-Example.json", {"fhir-choice", "Condition.extension[0].valueCodeableConcept"}},
    {"bundle-questionnaire.json", {"fhir-cardinality", "Questionnaire.item[0].item[0].linkId"}},
    {"Personal_Details_RelatedPersonBundle.json", {"ele-1", "Bundle.entry[0].resource.patient"}},
};

std::string config(unsigned short port, unsigned short sink) {
  return "broker:\n  max_body_bytes: 4MB\napi:\n  listen: 127.0.0.1:" + std::to_string(port) +
         "\nstore:\n  path: data/t.db\npartners:\n  - id: src\n    name: Source\n    kind: trust\n    ods: RTX\n"
         "  - id: sink\n    name: Everyone\n    kind: vcse\n    ods: DXX01\n    endpoint: { type: fhir-rest, url: "
         "\"http://127.0.0.1:" + std::to_string(sink) + "/fhir\" }\n"
         "inbound:\n  - id: http\n    type: fhir-rest\n    listen: 127.0.0.1:" + std::to_string(port) +
         "\n    base_path: /fhir\n    allow_partner_header: true\n"
         "routes:\n  - id: all\n    match: {}\n    to: [sink]\n";
}

class SampleData : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(shared_data_dir()))
      GTEST_SKIP() << "shared sample data not found at " << shared_data_dir() << " (expected beside the checkout)";
  }
};

// Posts a sample the way a partner would: resources to /fhir/{type}, message Bundles to
// $process-message, transaction/batch Bundles to the base, other Bundles to /fhir/Bundle.
HttpReply post(Client& c, const std::string& base, const Sample& s) {
  std::string url = base + "/fhir/" + s.type;
  if (s.type == "Bundle" && s.bundle_type == "message") url = base + "/fhir/$process-message";
  else if (s.type == "Bundle" && (s.bundle_type == "transaction" || s.bundle_type == "batch")) url = base + "/fhir";
  return c.post_fhir(url, read_file(s.file), "src");
}

// strict: every file not listed as a known defect must be accepted. Otherwise (BaRS, whose
// examples carry template placeholders and hand-edited JSON) a refusal must still be a 422
// whose every error issue says where the problem is.
void run_folder(const std::string& folder, std::size_t min_expected, bool strict, std::size_t min_accepted) {
  auto all = samples(shared_data_dir() / folder);
  ASSERT_GE(all.size(), min_expected) << folder;
  TempDir dir;
  Sink sink(dir.path(), "sink", 0);
  Broker broker(dir.path(), config(0, sink.port()));
  broker.start();
  Client c;
  std::size_t accepted = 0;
  for (auto& s : all) {
    auto r = post(c, broker.base(), s);
    std::string name = s.file.filename().string();
    if (auto known = kKnownDefects.find(name); known != kKnownDefects.end()) {
      EXPECT_EQ(r.status, 422) << name << ": " << r.body;
      auto rules = outcome_rules(r.body);
      auto locs = outcome_locations(r.body);
      EXPECT_NE(std::find(rules.begin(), rules.end(), known->second.rule), rules.end()) << name << ": " << r.body;
      EXPECT_NE(std::find(locs.begin(), locs.end(), known->second.location), locs.end()) << name << ": " << r.body;
      continue;
    }
    if (!strict && r.status == 422) {
      auto locs = outcome_locations(r.body);
      EXPECT_FALSE(locs.empty()) << name << ": " << r.body;
      continue;
    }
    EXPECT_TRUE(r.status == 202 || r.status == 200) << s.file << " → " << r.status << "\n" << r.body.substr(0, 2000);
    if (r.status == 202) ++accepted;
  }
  EXPECT_GE(accepted, min_accepted) << folder;
  EXPECT_TRUE(sink.wait_for(accepted, 60s)) << sink.received_message_ids().size() << " of " << accepted;
}

TEST_F(SampleData, FhirR4SpecExamples) { run_folder("fhir-r4-spec-examples", 60, true, 60); }
TEST_F(SampleData, UkCoreExamples) { run_folder("ukcore-examples/json-converted", 200, true, 200); }
TEST_F(SampleData, PdsExamples) { run_folder("pds-examples", 10, true, 10); }
TEST_F(SampleData, BarsExamples) { run_folder("bars-api-examples", 100, false, 100); }
TEST_F(SampleData, SyntheaTransactionBundles) { run_folder("synthea-r4", 8, true, 8); }

}  // namespace
}  // namespace tellonce::itest
