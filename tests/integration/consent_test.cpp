// Consent and data protection on the real `tellonce serve` with three demo-sink partners: a GP
// (direct care, entitled to restricted records), a charity (direct care, not entitled) and an
// analytics service reached by a secondary-use route.
#include "harness.hpp"
#include "records.hpp"

#include "support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <thread>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;

std::string config_text(unsigned short gp, unsigned short charity, unsigned short analytics) {
  auto endpoint = [](unsigned short port) {
    return R"(endpoint: { type: fhir-rest, url: "http://127.0.0.1:)" + std::to_string(port) + R"(/fhir", timeout: 2s })";
  };
  return R"(api:
  listen: 127.0.0.1:0
store:
  path: data/tellonce.db
consent:
  opt_out_file: opt-out.txt
  poll_every: 100ms
partners:
  - id: rtx
    kind: trust
    ods: RTX
  - id: gp-a
    kind: primary-care
    ods: A81001
    restricted_records: entitled
    )" + endpoint(gp) + R"(
  - id: charity
    kind: vcse
    ods: 8JK99
    )" + endpoint(charity) + R"(
  - id: analytics
    kind: trust
    ods: X26
    )" + endpoint(analytics) + R"(
)" + std::string(kFhirHttpInboundYaml) + R"(routes:
  - id: care
    match: { resource_type: [Patient] }
    to: [gp-a, charity]
  - id: research
    purpose: secondary-use
    match: { resource_type: [Patient] }
    to: [analytics]
)";
}

std::string consent_denying(const std::string& id, const std::string& nhs, const std::string& recipient_ods) {
  std::string actor = recipient_ods.empty() ? "" : R"(,"actor":[{"role":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ParticipationType","code":"IRCP"}]},
      "reference":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":")" + recipient_ods + R"("}}}])";
  return R"({"resourceType":"Consent","id":")" + id + R"(","status":"active",
    "scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"patient-privacy"}]},
    "category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],
    "patient":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" + nhs + R"("}},
    "policyRule":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"OPTIN"}]},
    "provision":{"type":"permit","provision":[{"type":"deny")" + actor + "}]}}";
}

std::string restricted_patient(const std::string& nhs) {
  return R"({"resourceType":"Patient","id":"r1",
    "meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}]},
    "identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" + nhs + R"("}],
    "name":[{"family":"Example","given":["Alex"]}],
    "telecom":[{"system":"phone","value":"01632 960000"}],
    "address":[{"line":["1 Hidden Street"],"city":"Leeds","postalCode":"LS1 1AA"}]})";
}

struct Partners {
  TempDir dir;
  ReservedPort gp_port, charity_port, analytics_port;
  Sink gp{dir.path(), "gp-a", gp_port};
  Sink charity{dir.path(), "charity", charity_port};
  Sink analytics{dir.path(), "analytics", analytics_port};
};

std::string post(Client& c, Broker& b, const std::string& path, const std::string& body) {
  auto r = c.post_fhir(b.base() + path, body, "rtx");
  EXPECT_EQ(r.status, 202) << r.body;
  return r.headers["x-tellonce-message-id"];
}

bool received(const Sink& s, const std::string& id) {
  for (const auto& m : s.received_message_ids())
    if (m == id) return true;
  return false;
}

TEST(ConsentIntegration, OptOutWithholdsSecondaryUseAndDirectCareIsDelivered) {
  Partners p;
  write_file(p.dir.path() / "opt-out.txt", "# national data opt-out\n" + nhs_number(51) + "\nnot-a-number\n");
  Broker broker(p.dir.path(), config_text(p.gp_port, p.charity_port, p.analytics_port));
  broker.start();
  Client client;

  const std::string opted_out = post(client, broker, "/fhir/Patient", patient(nhs_number(51), "A81001"));
  const std::string other = post(client, broker, "/fhir/Patient", patient(nhs_number(52), "A81001"));
  ASSERT_TRUE(p.gp.wait_for(2, 10s));
  ASSERT_TRUE(p.analytics.wait_for(1, 10s));
  auto view = wait_for_state(client, broker.base(), opted_out, "delivered", 10s);
  auto other_view = wait_for_state(client, broker.base(), other, "delivered", 10s);
  EXPECT_TRUE(received(p.gp, opted_out));
  EXPECT_TRUE(received(p.charity, opted_out));
  EXPECT_TRUE(received(p.analytics, other));
  EXPECT_FALSE(received(p.analytics, opted_out));
  EXPECT_NE(view.find("\"kind\":\"withheld\""), std::string::npos) << view;
  EXPECT_NE(view.find("destination=analytics withheld by consent: national data opt-out (purpose secondary-use, route research)"),
            std::string::npos) << view;
  EXPECT_EQ(other_view.find("withheld"), std::string::npos) << other_view;

  auto metrics = client.request("GET", broker.base() + "/metrics");
  EXPECT_NE(metrics.body.find("tellonce_deliveries_withheld_total{destination=\"analytics\",reason=\"opt-out\"} 1"),
            std::string::npos) << metrics.body;

  // The list is reloaded when it changes: now 52 is on it too.
  write_file(p.dir.path() / "opt-out.txt", nhs_number(51) + "\n" + nhs_number(52) + "\n");
  for (int i = 0; i < 200 && broker.output().find("loaded: 2 NHS numbers") == std::string::npos; ++i)
    std::this_thread::sleep_for(50ms);
  ASSERT_NE(broker.output().find("loaded: 2 NHS numbers"), std::string::npos) << broker.output();
  const std::string later = post(client, broker, "/fhir/Patient", patient(nhs_number(52), "A81001"));
  auto later_view = wait_for_state(client, broker.base(), later, "delivered", 10s);
  EXPECT_NE(later_view.find("national data opt-out"), std::string::npos) << later_view;

  // The bad line is reported by its number; no NHS number is ever written to the output.
  const auto out = broker.output();
  EXPECT_NE(out.find("line 3: not an NHS number"), std::string::npos) << out;
  EXPECT_EQ(out.find(nhs_number(51)), std::string::npos);
  EXPECT_EQ(out.find(nhs_number(52)), std::string::npos);
}

TEST(ConsentIntegration, AConsentSentThroughTheBrokerWithholdsItsRecipientAndSurvivesARestart) {
  Partners p;
  write_file(p.dir.path() / "opt-out.txt", "");
  Broker broker(p.dir.path(), config_text(p.gp_port, p.charity_port, p.analytics_port));
  broker.start();
  Client client;

  post(client, broker, "/fhir/Consent", consent_denying("c-61", nhs_number(61), "8JK99"));
  const std::string first = post(client, broker, "/fhir/Patient", patient(nhs_number(61), "A81001"));
  auto view = wait_for_state(client, broker.base(), first, "delivered", 10s);
  EXPECT_TRUE(received(p.gp, first));
  EXPECT_TRUE(received(p.analytics, first));
  EXPECT_FALSE(received(p.charity, first));
  EXPECT_NE(view.find("destination=charity withheld by consent: Consent/c-61 provision.provision[0] deny recipient=8JK99"),
            std::string::npos) << view;

  // A Consent denying everything: nothing is delivered, and the record says why.
  post(client, broker, "/fhir/Consent", consent_denying("c-62", nhs_number(62), ""));
  const std::string none = post(client, broker, "/fhir/Patient", patient(nhs_number(62), "A81001"));
  auto none_view = wait_for_state(client, broker.base(), none, "unroutable", 10s);
  EXPECT_NE(none_view.find("nothing delivered: every destination (analytics,charity,gp-a) withheld by consent"),
            std::string::npos) << none_view;

  ASSERT_EQ(broker.stop(), 0);
  broker.start();
  EXPECT_NE(broker.output().find("2 stored Consent(s) applied"), std::string::npos) << broker.output();
  const std::string after = post(client, broker, "/fhir/Patient", patient(nhs_number(61), "A81001", "p2"));
  auto after_view = wait_for_state(client, broker.base(), after, "delivered", 10s);
  EXPECT_TRUE(received(p.gp, after));
  EXPECT_FALSE(received(p.charity, after));
  EXPECT_NE(after_view.find("Consent/c-61"), std::string::npos) << after_view;

  auto cli = client.request("GET", broker.base() + "/api/messages/" + none);
  EXPECT_EQ(cli.status, 200);
}

TEST(ConsentIntegration, RestrictedPatientReachesANonEntitledPartnerWithoutAddressOrTelecom) {
  Partners p;
  write_file(p.dir.path() / "opt-out.txt", "");
  Broker broker(p.dir.path(), config_text(p.gp_port, p.charity_port, p.analytics_port));
  broker.start();
  Client client;

  const std::string id = post(client, broker, "/fhir/Patient", restricted_patient(nhs_number(71)));
  auto view = wait_for_state(client, broker.base(), id, "delivered", 10s);
  ASSERT_TRUE(p.gp.wait_for(1, 5s));
  ASSERT_TRUE(p.charity.wait_for(1, 5s));
  const auto to_gp = p.gp.received_bodies().front();
  const auto to_charity = p.charity.received_bodies().front();
  EXPECT_NE(to_gp.find("Hidden Street"), std::string::npos) << to_gp;
  EXPECT_NE(to_gp.find("01632 960000"), std::string::npos) << to_gp;
  EXPECT_EQ(to_charity.find("Hidden Street"), std::string::npos) << to_charity;
  EXPECT_EQ(to_charity.find("01632"), std::string::npos) << to_charity;
  EXPECT_NE(to_charity.find(nhs_number(71)), std::string::npos) << to_charity;
  EXPECT_NE(view.find("restricted record, partner not entitled: 1 address(es), 1 telecom(s) removed"),
            std::string::npos) << view;
  EXPECT_EQ(view.find("Hidden Street"), std::string::npos);
}

}  // namespace
}  // namespace tellonce::itest
