// Issue 12 on the real broker: operators sign in to the admin API and each role meets what it
// may not do; partners' credentials do not open it; partners' `may:` is enforced at intake; the
// API refuses to listen beyond loopback without TLS and operators.
#include "harness.hpp"

#include <gtest/gtest.h>

using namespace std::chrono_literals;

namespace tellonce::itest {
namespace {

constexpr const char* kRtxKey = "rtx-clear-key-for-operators-test-0123456789";

// The usual config with the trust limited to Observations and given a (clear, test-only) key.
std::string limited_config(unsigned short sink) {
  std::string yaml = one_route_config(sink);
  const std::string rtx = "    ods: RTX\n";
  yaml.replace(yaml.find(rtx), rtx.size(),
               rtx + "    api_keys: [\"" + kRtxKey + "\"]\n    may: { resource_types: [Observation], channels: [fhir-http] }\n");
  return "insecure_clear_api_keys: true\n" + yaml;
}

TEST(Operators, EachRoleMeetsWhatItMayNotDoAndPartnersKeysDoNotOpenTheApi) {
  TempDir dir;
  ReservedPort sink;
  Broker broker(dir.path(), limited_config(sink));
  broker.start();
  Client client;
  const auto patient = read_file(source_dir() / "config/examples/patient-a81001.json");

  // Per-partner authorisation: a Patient from a partner that may send only Observations.
  auto refused = client.request("POST", broker.base() + "/fhir/Patient", patient,
                                {"Content-Type: application/fhir+json", bearer(kRtxKey)});
  EXPECT_EQ(refused.status, 403) << refused.body;
  EXPECT_NE(refused.body.find("may not send Patient resources"), std::string::npos) << refused.body;

  Client anonymous;
  anonymous.operator_token("");
  auto none = anonymous.request("GET", broker.base() + "/api/messages");
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.headers["www-authenticate"], R"(Bearer realm="tellonce")");
  EXPECT_EQ(anonymous.request("GET", broker.base() + "/api/messages", "", {bearer("wrong-token-000000000000")}).status, 401);
  // A partner's key is not an operator's token, on every admin endpoint.
  for (const char* path : {"/api/messages", "/api/destinations", "/api/flow", "/metrics", "/api/messages/X/body?reason=x"})
    EXPECT_EQ(anonymous.request("GET", broker.base() + path, "", {bearer(kRtxKey)}).status, 401) << path;
  EXPECT_EQ(anonymous.request("POST", broker.base() + "/api/destinations/gp-a/pause", "", {bearer(kRtxKey)}).status, 401);
  EXPECT_EQ(anonymous.request("GET", broker.base() + "/healthz").status, 200);  // probes stay open
  EXPECT_EQ(anonymous.request("GET", broker.base() + "/readyz").status, 200);

  // Viewer: metadata yes; replay, pause, bodies no.
  auto list = client.request("GET", broker.base() + "/api/messages", "", {bearer(kViewerToken)});
  EXPECT_EQ(list.status, 200) << list.body;
  auto replay = client.request("POST", broker.base() + "/api/replay?state=failed", "", {bearer(kViewerToken)});
  EXPECT_EQ(replay.status, 403);
  EXPECT_NE(replay.body.find("needs the operator role"), std::string::npos) << replay.body;
  EXPECT_EQ(client.request("POST", broker.base() + "/api/destinations/gp-a/pause", "", {bearer(kViewerToken)}).status, 403);
  EXPECT_EQ(client.request("GET", broker.base() + "/api/messages/X/body?reason=x", "", {bearer(kViewerToken)}).status, 403);
  // The metrics token reads /metrics and nothing else.
  EXPECT_EQ(client.request("GET", broker.base() + "/metrics", "", {bearer(kMetricsToken)}).status, 200);
  EXPECT_EQ(client.request("GET", broker.base() + "/api/messages", "", {bearer(kMetricsToken)}).status, 403);
  // Operator: no configuration reload; admin: yes.
  auto reload = client.request("POST", broker.base() + "/api/config/reload", "", {bearer(kOperatorToken)});
  EXPECT_EQ(reload.status, 403);
  EXPECT_NE(reload.body.find("needs the admin role"), std::string::npos) << reload.body;
  EXPECT_EQ(client.request("POST", broker.base() + "/api/config/reload", "", {bearer(kAdminToken)}).status, 200);
  EXPECT_EQ(broker.output().find(kOperatorToken), std::string::npos);  // tokens are never logged
}

TEST(Operators, ABodyViewNeedsAReasonAndGoesOnTheTrailWithWhoAndWhy) {
  TempDir dir;
  Sink gp(dir.path(), "gp", 0);
  Broker broker(dir.path(), one_route_config(gp.port()));
  broker.start();
  Client client;
  auto sent = client.post_fhir(broker.base() + "/fhir/Patient",
                               read_file(source_dir() / "config/examples/patient-a81001.json"), "rtx");
  ASSERT_EQ(sent.status, 202) << sent.body;
  const std::string id = sent.headers["x-tellonce-message-id"];
  const std::string body_url = broker.base() + "/api/messages/" + id + "/body";
  EXPECT_EQ(client.request("GET", body_url, "", {bearer(kOperatorToken)}).status, 400);
  auto shown = client.request("GET", body_url + "?reason=ticket%2042", "", {bearer(kOperatorToken), "X-Tellonce-Actor: cli:alice"});
  EXPECT_EQ(shown.status, 200);
  EXPECT_NE(shown.body.find("\"Patient\""), std::string::npos);
  auto view = client.request("GET", broker.base() + "/api/messages/" + id);
  EXPECT_NE(view.body.find(R"("kind":"viewed","what":"body","actor":"itest-operator via cli:alice","reason":"ticket 42")"),
            std::string::npos) << view.body;
  EXPECT_NE(view.body.find("body viewed by itest-operator via cli:alice, reason: ticket 42"), std::string::npos);
}

TEST(Operators, AnApiBeyondLoopbackWithoutTlsAndOperatorsIsRefusedAtStartUp) {
  TempDir dir;
  std::string yaml = one_route_config(ReservedPort().port());
  const std::string loopback = "api:\n  listen: 127.0.0.1:0\n";
  yaml.replace(yaml.find(loopback), loopback.size(), "api:\n  listen: 0.0.0.0:0\n");
  // Operators present (the harness adds them) but no TLS on the listener: still refused.
  Broker broker(dir.path(), yaml);
  Process serve({tellonce_binary().string(), "serve", "--config", broker.config_path().string()}, dir.path() / "serve.log");
  EXPECT_NE(serve.wait_exit(20s), 0);
  EXPECT_NE(serve.output().find("api.listen: the admin API listens beyond loopback (0.0.0.0:0) but its listener has no TLS"),
            std::string::npos) << serve.output();
  EXPECT_NE(serve.output().find("tellonce.yaml:2:"), std::string::npos) << serve.output();  // file and line
}

}  // namespace
}  // namespace tellonce::itest
