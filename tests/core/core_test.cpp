#include "tellonce/error.hpp"
#include "tellonce/json.hpp"
#include "tellonce/message.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <set>

namespace tellonce {
namespace {

TEST(ParseJson, AcceptsAResource) {
  auto r = parse_json(R"({"resourceType":"Patient","id":"x"})");
  ASSERT_TRUE(r);
  EXPECT_STREQ((*r)["resourceType"].GetString(), "Patient");
}

TEST(ParseJson, MalformedNamesLineAndColumn) {
  auto r = parse_json("{\n  \"resourceType\": \"Patient\",\n  \"id\": }");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::malformed);
  EXPECT_EQ(r.error().issues.at(0).code, "structure");
  EXPECT_NE(r.error().issues[0].diagnostics.find("at 3:9"), std::string::npos) << r.error().issues[0].diagnostics;
}

TEST(ParseJson, RejectsInvalidUtf8) {
  auto r = parse_json("{\"a\":\"\xc3\x28\"}");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().issues[0].diagnostics.find("invalid UTF-8"), std::string::npos);
}

TEST(ParseJson, RejectsTrailingGarbage) {
  EXPECT_FALSE(parse_json(R"({"a":1} {"b":2})"));
}

TEST(ParseJson, DepthLimit) {
  std::string deep(10, '[');
  deep += std::string(10, ']');
  EXPECT_TRUE(parse_json(deep, JsonLimits{1024, 10}));
  auto r = parse_json(deep, JsonLimits{1024, 9});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().issues[0].code, "too-costly");
}

// The parser recurses once a level: the deepest documents the configuration allows (1000 levels)
// parse, and a million levels are refused at the limit, not by the stack.
TEST(ParseJson, TheDeepestAllowedDocumentParsesAndDeeperOnesStopAtTheLimit) {
  std::string allowed = std::string(1000, '[') + std::string(1000, ']');
  EXPECT_TRUE(parse_json(allowed, JsonLimits{1 << 20, 1000}));
  std::string hostile = std::string(1'000'000, '[') + std::string(1'000'000, ']');
  auto r = parse_json(hostile, JsonLimits{1 << 22, 1000});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().issues[0].code, "too-costly");
  std::string objects;
  for (int i = 0; i < 1001; ++i) objects += "{\"a\":";
  objects += "1" + std::string(1001, '}');
  auto o = parse_json(objects, JsonLimits{1 << 20, 1000});
  ASSERT_FALSE(o);
  EXPECT_EQ(o.error().issues[0].code, "too-costly");
}

TEST(ParseJson, SizeLimitIs413) {
  auto r = parse_json(R"({"resourceType":"Patient"})", JsonLimits{10, 64});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::too_large);
}

TEST(OperationOutcome, OneIssuePerProblemWithLocationAndRule) {
  std::vector<Issue> issues{
      {Severity::error, "value", "bad \"date\"", "Patient.birthDate", "fhir-date"},
      {Severity::warning, "invariant", "odd", "", ""},
  };
  auto json = operation_outcome_json(issues);
  rapidjson::Document d;
  d.Parse(json.c_str());
  ASSERT_FALSE(d.HasParseError()) << json;
  EXPECT_STREQ(d["resourceType"].GetString(), "OperationOutcome");
  ASSERT_EQ(d["issue"].Size(), 2u);
  EXPECT_STREQ(d["issue"][0]["severity"].GetString(), "error");
  EXPECT_STREQ(d["issue"][0]["expression"][0].GetString(), "Patient.birthDate");
  EXPECT_STREQ(d["issue"][0]["diagnostics"].GetString(), "bad \"date\"");
  EXPECT_STREQ(d["issue"][0]["details"]["coding"][0]["code"].GetString(), "fhir-date");
  EXPECT_FALSE(d["issue"][1].HasMember("expression"));
}

TEST(OperationOutcome, EveryTextIsCutOnACharacterBoundary) {
  // Issue 7 item 2: an answer quoting a 9 MB key or value must not be 9 MB (or twice that).
  std::string huge;
  for (int i = 0; i < 50000; ++i) huge += "\xC3\xA9";  // é: cutting mid-character would break UTF-8
  auto json = operation_outcome_json({Issue{Severity::error, "value", huge, "Patient." + huge, "rule"}});
  rapidjson::Document d;
  d.Parse<rapidjson::kParseValidateEncodingFlag>(json.c_str());
  ASSERT_FALSE(d.HasParseError()) << "not valid JSON/UTF-8";
  std::string diagnostics = d["issue"][0]["diagnostics"].GetString();
  EXPECT_LE(diagnostics.size(), outcome_limits::max_text_bytes + 40);
  EXPECT_EQ(diagnostics.rfind("\xC3\xA9", 0), 0u);
  EXPECT_NE(diagnostics.find("more bytes)"), std::string::npos) << diagnostics.substr(diagnostics.size() - 40);
  EXPECT_LE(std::string(d["issue"][0]["expression"][0].GetString()).size(), outcome_limits::max_text_bytes + 40);
  EXPECT_LT(json.size(), 4 * (outcome_limits::max_text_bytes + 100));
}

TEST(OperationOutcome, TheAnswerIsCappedAndCountsWhatItLeftOut) {
  std::vector<Issue> issues;
  // Control characters escape to six bytes each: the worst case for the answer's size.
  for (int i = 0; i < 3000; ++i)
    issues.push_back({i % 2 ? Severity::warning : Severity::error, "value", std::string(5000, '\x01'),
                      "Patient.k" + std::to_string(i), "test"});
  auto json = operation_outcome_json(issues);
  EXPECT_LE(json.size(), outcome_limits::max_answer_bytes);
  rapidjson::Document d;
  d.Parse(json.c_str());
  ASSERT_FALSE(d.HasParseError());
  const auto& listed = d["issue"];
  ASSERT_GT(listed.Size(), 2u);
  ASSERT_LT(listed.Size(), issues.size());
  std::size_t left_out = issues.size() - (listed.Size() - 1);
  std::size_t errors_left_out = 0;
  for (std::size_t i = listed.Size() - 1; i < issues.size(); ++i) errors_left_out += issues[i].is_error();
  const auto& last = listed[listed.Size() - 1];
  EXPECT_STREQ(last["details"]["coding"][0]["code"].GetString(), "answer-limit");
  EXPECT_STREQ(last["severity"].GetString(), "error");
  std::string text = last["diagnostics"].GetString();
  EXPECT_EQ(text.rfind(std::to_string(left_out) + " more issue(s) not listed", 0), 0u) << text;
  EXPECT_NE(text.find("(" + std::to_string(errors_left_out) + " of them errors)"), std::string::npos) << text;
  EXPECT_STREQ(listed[1]["expression"][0].GetString(), "Patient.k1");  // in order
}

TEST(MessageId, UniqueSortableAndUlidShaped) {
  std::set<std::string> seen;
  std::string prev;
  for (int i = 0; i < 10000; ++i) {
    auto id = new_message_id();
    ASSERT_EQ(id.size(), 26u);
    EXPECT_TRUE(seen.insert(id).second);
    EXPECT_EQ(id.find_first_not_of("0123456789ABCDEFGHJKMNPQRSTVWXYZ"), std::string::npos);
    if (!prev.empty()) {
      EXPECT_LE(prev.substr(0, 10), id.substr(0, 10));  // time prefix never goes back
    }
    prev = id;
  }
}

TEST(ContentHash, Sha256) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Failure, KindsAndSummary) {
  auto f = Failure::retryable(Errc::unavailable, Issue{Severity::error, "transient", "store busy", "", ""});
  EXPECT_TRUE(f.is_retryable());
  EXPECT_EQ(f.summary(), "unavailable: store busy");
  auto p = Failure::permanent(Errc::invalid, Issue{Severity::error, "value", "bad", "Patient.gender", ""});
  EXPECT_FALSE(p.is_retryable());
  // A record's problems are summarised by rule and location only: diagnostics may quote values.
  EXPECT_EQ(p.summary(), "invalid value@Patient.gender");
  auto named = Failure::permanent(Errc::invalid, Issue{Severity::error, "value", "9434765918 is wrong",
                                                       "Patient.identifier[0].value", "uk-nhs-number"});
  EXPECT_EQ(named.summary(), "invalid uk-nhs-number@Patient.identifier[0].value");
  EXPECT_TRUE(has_errors(p.issues));
  EXPECT_FALSE(has_errors({Issue{Severity::warning, "x", "y", "", ""}}));
}

}  // namespace
}  // namespace tellonce
