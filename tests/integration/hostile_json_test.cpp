// Hostile JSON against the real `tellonce serve` (issue 7): each body is answered precisely and
// the broker keeps answering everyone afterwards.
#include "harness.hpp"
#include "records.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace tellonce::itest {
namespace {

std::string config_text(unsigned short port) {
  std::string t = R"(broker:
  max_body_bytes: 12MB
api:
  listen: 127.0.0.1:{{PORT}}
store:
  path: data/tellonce.db
insecure_clear_api_keys: true
partners:
  - id: rtx
    name: Royal Example NHS Trust
    kind: trust
    ods: RTX
    api_keys: [it-rtx-key]
inbound:
  - id: fhir-http
    type: fhir-rest
    listen: 127.0.0.1:{{PORT}}
    base_path: /fhir
    allow_partner_header: true
routes: []
)";
  for (std::size_t p; (p = t.find("{{PORT}}")) != std::string::npos;) t.replace(p, 8, std::to_string(port));
  return t;
}

struct Env {
  // Port 0: the broker binds its own and reports it (base() is then the bound address).
  Env() : broker{dir.path(), config_text(0)} { broker.start(); }
  TempDir dir;
  Broker broker;
  Client client;
  std::string patients() const { return broker.base() + "/fhir/Patient"; }
  // A good record still gets its 202: the broker is alive and serving.
  void expect_still_serving(int n) {
    Client fresh;
    auto ok = fresh.post_fhir(patients(), patient(nhs_number(n), "A81001", "alive-" + std::to_string(n)), "rtx");
    EXPECT_EQ(ok.status, 202) << ok.body << "\n" << broker.output();
  }
};

bool has_rule(const std::string& outcome, const std::string& rule) {
  auto rules = outcome_rules(outcome);
  return std::find(rules.begin(), rules.end(), rule) != rules.end();
}

TEST(HostileJson, DecimalWithThreeHundredFiftyLeadingZerosDoesNotStopTheBroker) {
  Env env;
  std::string tiny = "0." + std::string(350, '0') + "1";
  std::string body = R"({"resourceType":"Patient","extension":[{"url":"http://example.org/x","valueDecimal":)" +
                     tiny + "}]}";
  auto r = env.client.post_fhir(env.patients(), body, "rtx");
  EXPECT_EQ(r.status, 202) << r.body;  // a valid decimal: held, not a crash
  auto negative = env.client.post_fhir(env.patients(), body.replace(body.find(tiny), 1, "-0"), "rtx");
  EXPECT_EQ(negative.status, 202) << negative.body;
  env.expect_still_serving(1);
}

TEST(HostileJson, DuplicateResourceTypeLoneSurrogatesAndBomAreRefusedPrecisely) {
  Env env;
  auto& c = env.client;
  auto dup = c.post_fhir(env.patients(), R"({"resourceType":"Patient","resourceType":"Patient"})", "rtx");
  EXPECT_EQ(dup.status, 422) << dup.body;
  EXPECT_TRUE(has_rule(dup.body, "fhir-duplicate")) << dup.body;

  auto low = c.post_fhir(env.patients(), R"({"resourceType":"Patient","name":[{"family":"a\udc00"}]})", "rtx");
  EXPECT_EQ(low.status, 400) << low.body;
  EXPECT_NE(low.body.find("at 1:47"), std::string::npos) << low.body;
  EXPECT_NE(low.body.find("lone UTF-16 low surrogate"), std::string::npos) << low.body;

  auto high = c.post_fhir(env.patients(), R"({"resourceType":"Patient","name":[{"family":"a\ud800"}]})", "rtx");
  EXPECT_EQ(high.status, 400) << high.body;
  EXPECT_NE(high.body.find("high surrogate"), std::string::npos) << high.body;

  auto bom = c.post_fhir(env.patients(), "\xEF\xBB\xBF" + patient(nhs_number(2), "A81001"), "rtx");
  EXPECT_EQ(bom.status, 400) << bom.body;
  EXPECT_NE(bom.body.find("byte-order mark"), std::string::npos) << bom.body;
  env.expect_still_serving(3);
}

TEST(HostileJson, AMillionProblemsGetABoundedAnswer) {
  Env env;
  std::string body = R"({"resourceType":"Patient")";
  for (int i = 0; i < 300000; ++i) body += ",\"k" + std::to_string(i) + "\":1";
  body += '}';
  auto r = env.client.post_fhir(env.patients(), body, "rtx");
  EXPECT_EQ(r.status, 422);
  EXPECT_LT(r.body.size(), 64u * 1024) << "the answer lists 100 issues and counts the rest";
  EXPECT_TRUE(has_rule(r.body, "issue-limit")) << r.body.substr(0, 2000);
  auto long_string = env.client.post_fhir(
      env.patients(), R"({"resourceType":"Patient","name":[{"family":")" + std::string(9 << 20, 'a') + R"("}]})", "rtx");
  EXPECT_EQ(long_string.status, 422);
  EXPECT_TRUE(has_rule(long_string.body, "fhir-string-length")) << long_string.body.substr(0, 2000);
  env.expect_still_serving(4);
}

}  // namespace
}  // namespace tellonce::itest
