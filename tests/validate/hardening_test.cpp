// Hostile records against the full validator (issue 7): bounded issue lists, work linear in
// the record's size (counted in steps, not timed), FHIR's string limit, one resourceType.
#include "tellonce/json.hpp"
#include "broker/validate/contained_ids.hpp"
#include "tellonce/validator.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>

namespace tellonce {
namespace {

const Validator& validator() {
  static auto v = make_fhir_validator(ValidatorSettings{std::filesystem::path(TELLONCE_SOURCE_DIR) / "schemas"});
  return *v;
}

std::vector<Issue> validate(const std::string& json) {
  auto doc = parse_json(json, JsonLimits{64 * 1024 * 1024, 64});
  EXPECT_TRUE(doc) << (doc ? "" : doc.error().issues.at(0).diagnostics);
  std::vector<Issue> issues;
  if (doc) validator().validate(*doc, issues);
  return issues;
}

bool has_rule(const std::vector<Issue>& issues, const std::string& rule, const std::string& location) {
  return std::any_of(issues.begin(), issues.end(),
                     [&](const Issue& i) { return i.rule == rule && i.location == location && i.is_error(); });
}

// A Patient whose `contained` is a chain of n Observations, each naming the next by "#id".
std::string contained_chain(int n) {
  std::string s = R"({"resourceType":"Patient","contained":[)";
  for (int i = 0; i < n; ++i) {
    if (i) s += ',';
    s += R"({"resourceType":"Observation","id":"c)" + std::to_string(i) +
         R"(","status":"final","code":{"text":"x"},"subject":{"reference":"#"})";
    if (i + 1 < n) s += R"(,"hasMember":[{"reference":"#c)" + std::to_string(i + 1) + R"("}])";
    s += '}';
  }
  s += R"(],"link":[{"other":{"reference":"#c0"},"type":"seealso"}]})";
  return s;
}

std::uint64_t steps_to_validate(const std::string& json) {
  auto doc = parse_json(json, JsonLimits{64 * 1024 * 1024, 64});
  EXPECT_TRUE(doc);
  std::vector<Issue> issues;
  std::uint64_t before = fhir::validation_steps;
  validator().validate(*doc, issues);
  EXPECT_FALSE(std::any_of(issues.begin(), issues.end(), [](const Issue& i) { return i.is_error(); }))
      << issues.at(0).location << ": " << issues.at(0).diagnostics;
  return fhir::validation_steps - before;
}

TEST(ValidatorHardening, ContainedChainWorkGrowsLinearly) {
  // Issue 7 item 3: quadratic in the chain's length (33 s of CPU for 40,000). Sixteen times the
  // chain must cost about sixteen times the steps, not 256 times; 24 leaves room for the
  // logarithm of the sorted id lookups.
  std::uint64_t small = steps_to_validate(contained_chain(250));
  std::uint64_t large = steps_to_validate(contained_chain(4000));
  ASSERT_GT(small, 250u);
  EXPECT_LT(large, small * 24) << small << " steps for 250, " << large << " for 4000";
}

// A QuestionnaireResponse answering n choice questions of its contained Questionnaire, each
// from a contained ValueSet of its own.
std::string questionnaire_response(int n) {
  std::string q = R"({"resourceType":"Questionnaire","id":"q","status":"active","item":[)";
  std::string sets, answers;
  for (int i = 0; i < n; ++i) {
    std::string k = std::to_string(i);
    q += std::string(i ? "," : "") + R"({"linkId":"q)" + k + R"(","type":"choice","answerValueSet":"#v)" + k + R"("})";
    sets += R"(,{"resourceType":"ValueSet","id":"v)" + k +
            R"(","status":"active","compose":{"include":[{"system":"https://example.org/cs","concept":[{"code":"a"},{"code":"b)" +
            k + R"("}]}]}})";
    answers += std::string(i ? "," : "") + R"({"linkId":"q)" + k +
               R"(","answer":[{"valueCoding":{"system":"https://example.org/cs","code":"b)" + k + R"("}}]})";
  }
  return R"({"resourceType":"QuestionnaireResponse","status":"completed","questionnaire":"#q","contained":[)" + q +
         "]}" + sets + R"(],"item":[)" + answers + "]}";
}

TEST(ValidatorHardening, QuestionnaireResponseWorkGrowsLinearly) {
  std::uint64_t small = steps_to_validate(questionnaire_response(250));
  std::uint64_t large = steps_to_validate(questionnaire_response(4000));
  ASSERT_GT(small, 250u);
  EXPECT_LT(large, small * 24) << small << " steps for 250, " << large << " for 4000";
}

TEST(ValidatorHardening, ContainedLookupsStillFindEveryTarget) {
  auto issues = validate(contained_chain(30));  // above the scan limit: the indexed path
  EXPECT_FALSE(std::any_of(issues.begin(), issues.end(), [](const Issue& i) { return i.is_error(); }));
  std::string broken = contained_chain(30);
  broken.replace(broken.find("#c17\""), 5, "#c99\"");  // c16 now names nothing
  broken.insert(broken.find('[') + 1, R"({"resourceType":"Organization","id":"lonely","name":"x"},)");
  issues = validate(broken);
  EXPECT_TRUE(has_rule(issues, "ref-1", "Patient.contained[17].hasMember[0]"));
  EXPECT_TRUE(has_rule(issues, "dom-3", "Patient.contained[0]"));  // referenced by nothing
}

TEST(ValidatorHardening, IssuesAreCappedWithACountOfTheRest) {
  // Issue 7 item 2: a million unknown keys gave a million issues (233 MB answer).
  std::string s = R"({"resourceType":"Patient")";
  for (int i = 0; i < 20000; ++i) s += ",\"k" + std::to_string(i) + "\":1";
  s += '}';
  auto issues = validate(s);
  ASSERT_EQ(issues.size(), max_issues_per_record + 1);
  EXPECT_EQ(issues[0].location, "Patient.k0");
  const Issue& last = issues.back();
  EXPECT_EQ(last.rule, "issue-limit");
  EXPECT_TRUE(last.is_error());
  EXPECT_NE(last.diagnostics.find("(19900 of them errors)"), std::string::npos) << last.diagnostics;
  EXPECT_LT(operation_outcome_json(issues).size(), 64u * 1024);
}

TEST(ValidatorHardening, CappedRuleIssuesKeepTheRecordRejected) {
  // Issues from rule sets past the cap are counted too, by severity.
  std::string s = R"({"resourceType":"Patient","extension":[)";
  for (int i = 0; i < 500; ++i) s += std::string(i ? "," : "") + R"({"url":"http://example.org/x"})";
  s += "]}";
  auto issues = validate(s);
  ASSERT_EQ(issues.size(), max_issues_per_record + 1);
  EXPECT_EQ(issues.back().rule, "issue-limit");
  EXPECT_TRUE(issues.back().is_error());
}

TEST(ValidatorHardening, LongUnknownNamesAreShortenedInTheAnswer) {
  std::string name(100000, 'x');
  auto issues = validate(R"({"resourceType":"Patient",")" + name + R"(":1})");
  std::erase_if(issues, [](const Issue& i) { return !i.is_error(); });
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_LT(issues[0].location.size(), 100u);
  EXPECT_LT(issues[0].diagnostics.size(), 200u);
}

TEST(ValidatorHardening, StringOverOneMegabyteIsRefused) {
  std::string family(9 * 1024 * 1024, 'a');
  auto issues = validate(R"({"resourceType":"Patient","name":[{"family":")" + family + R"("}]})");
  ASSERT_TRUE(has_rule(issues, "fhir-string-length", "Patient.name[0].family"));
  // At the limit is fine, in characters: 1,048,576 two-byte characters pass.
  std::string at_limit;
  for (int i = 0; i < 1024 * 1024; ++i) at_limit += "\xC3\xA9";
  issues = validate(R"({"resourceType":"Patient","name":[{"family":")" + at_limit + R"("}]})");
  EXPECT_FALSE(has_rule(issues, "fhir-string-length", "Patient.name[0].family"));
  issues = validate(R"({"resourceType":"Patient","name":[{"family":")" + at_limit + R"(a"}]})");
  EXPECT_TRUE(has_rule(issues, "fhir-string-length", "Patient.name[0].family"));
}

TEST(ValidatorHardening, ResourceTypeTwiceIsADuplicate) {
  auto issues = validate(R"({"resourceType":"Patient","resourceType":"Observation"})");
  EXPECT_TRUE(has_rule(issues, "fhir-duplicate", "Patient.resourceType"));
  issues = validate(R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":)"
                    R"({"resourceType":"Patient","gender":"male","resourceType":"Patient"}}]})");
  EXPECT_TRUE(has_rule(issues, "fhir-duplicate", "Bundle.entry[0].resource.resourceType"));
}

}  // namespace
}  // namespace tellonce
