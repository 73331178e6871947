// End-to-end: the real `tellonce serve` on loopback, real demo-sink partners, a libcurl client.
#include "harness.hpp"
#include "records.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <map>
#include <set>
#include <thread>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;

std::string config_text(unsigned short port, unsigned short a, unsigned short b, unsigned short c,
                        const std::string& extra_delivery = "") {
  std::string t = R"(broker:
  max_body_bytes: 2MB
  max_json_depth: 40
api:
  listen: 127.0.0.1:{{PORT}}
store:
  path: data/tellonce.db
delivery:
  concurrency_per_destination: 4
)" + extra_delivery + R"(  retry: { keep_trying_for: 1h, initial_backoff: 100ms, max_backoff: 400ms, multiplier: 2, jitter: 0.1 }
insecure_clear_api_keys: true
partners:
  - id: rtx
    name: Royal Example NHS Trust
    kind: trust
    ods: RTX
    api_keys: [it-rtx-key]
  - id: gp-a
    name: Example Surgery A
    kind: primary-care
    ods: A81001
    endpoint: { type: fhir-rest, url: "http://127.0.0.1:{{A}}/fhir", timeout: 2s, connect_timeout: 1s }
  - id: gp-b
    name: Example Surgery B
    kind: primary-care
    ods: A81002
    endpoint: { type: fhir-rest, url: "http://127.0.0.1:{{B}}/fhir", timeout: 2s, connect_timeout: 1s }
  - id: vcse
    name: Example Link Workers
    kind: vcse
    ods: DXX01
    endpoint: { type: fhir-rest, url: "http://127.0.0.1:{{C}}/fhir", timeout: 2s, connect_timeout: 1s }
inbound:
  - id: fhir-http
    type: fhir-rest
    listen: 127.0.0.1:{{PORT}}
    base_path: /fhir
    allow_partner_header: true
routes:
  - id: registered-gp-a
    match:
      where:
        - path: Patient.generalPractitioner.identifier.value
          equals: A81001
    to: [gp-a]
  - id: registered-gp-b-and-link-workers
    match:
      resource_type: Patient
      where:
        - path: Patient.generalPractitioner.identifier.value
          equals: A81002
    to: [gp-b, vcse]
  - id: referrals-to-link-workers
    match:
      event: servicerequest-request
    to: [vcse]
  - id: observations-to-gp-a
    match:
      resource_type: Observation
      source: rtx
    to: [gp-a]
)";
  auto fill = [&](const std::string& key, unsigned short v) {
    for (std::size_t p; (p = t.find(key)) != std::string::npos;) t.replace(p, key.size(), std::to_string(v));
  };
  fill("{{PORT}}", port);
  fill("{{A}}", a);
  fill("{{B}}", b);
  fill("{{C}}", c);
  return t;
}

// One broker (on a port it binds itself) with three partner ports held by the test; sinks are
// started on them by each test as it needs them.
struct Env {
  explicit Env(const std::string& extra_delivery = "")
      : broker{dir.path(), config_text(port, a, b, c, extra_delivery)} {}
  TempDir dir;
  ReservedPort a, b, c;
  unsigned short port = 0;
  Broker broker;
  Client client;
  std::string fhir() const { return broker.base() + "/fhir"; }
};

TEST(BrokerIntegration, AcceptsStoresAndDeliversARecord) {
  Env env;
  Sink gp(env.dir.path(), "gp-a", env.a);
  env.broker.start();

  std::string body = patient(nhs_number(1), "A81001");
  auto r = env.client.post_fhir(env.fhir() + "/Patient", body, "rtx");
  ASSERT_EQ(r.status, 202) << r.body;
  std::string id = r.headers["x-tellonce-message-id"];
  ASSERT_EQ(id.size(), 26u);
  EXPECT_NE(r.headers["location"].find("/api/messages/" + id), std::string::npos);
  EXPECT_EQ(json_string_at(r.body, "/resourceType"), "OperationOutcome");

  ASSERT_TRUE(gp.wait_for(1, 10s));
  EXPECT_EQ(gp.received_message_ids(), std::vector<std::string>{id});
  auto view = wait_for_state(env.client, env.broker.base(), id, "delivered", 10s);
  EXPECT_EQ(json_string_at(view, "/state"), "delivered") << view;
  EXPECT_EQ(json_string_at(view, "/source"), "rtx");
  EXPECT_EQ(json_string_at(view, "/resourceType"), "Patient");
  EXPECT_EQ(json_string_at(view, "/deliveries/0/destination"), "gp-a");
  EXPECT_EQ(json_string_at(view, "/deliveries/0/status"), "delivered");
  EXPECT_NE(view.find("\"received\""), std::string::npos) << view;
  EXPECT_NE(view.find("\"delivered\""), std::string::npos) << view;

  // The CLI shows the same trail.
  Process cli({tellonce_binary().string(), "message", id, "--api", env.broker.base(), "--token-file", token_file(env.dir.path())}, env.dir.path() / "cli.log");
  auto line = cli.wait_for_line("delivered", 10s);
  EXPECT_TRUE(line.has_value()) << cli.output();
}

TEST(BrokerIntegration, FansOutToEveryMatchingPartner) {
  Env env;
  Sink gp_b(env.dir.path(), "gp-b", env.b);
  Sink vcse(env.dir.path(), "vcse", env.c);
  env.broker.start();

  auto r = env.client.post_fhir(env.fhir() + "/Patient", patient(nhs_number(2), "A81002"), "rtx");
  ASSERT_EQ(r.status, 202) << r.body;
  std::string id = r.headers["x-tellonce-message-id"];
  ASSERT_TRUE(gp_b.wait_for(1, 10s));
  ASSERT_TRUE(vcse.wait_for(1, 10s));
  EXPECT_EQ(gp_b.received_message_ids().front(), id);
  EXPECT_EQ(vcse.received_message_ids().front(), id);

  // A message Bundle: routed by its event code.
  auto m = env.client.post_fhir(env.fhir() + "/$process-message",
                                referral_message("7f2b0c1e-1111-4aaa-8bbb-000000000001", nhs_number(3), "A81001"),
                                "rtx");
  ASSERT_EQ(m.status, 202) << m.body;
  ASSERT_TRUE(vcse.wait_for(2, 10s));
  EXPECT_EQ(vcse.received_message_ids().back(), m.headers["x-tellonce-message-id"]);
}

TEST(BrokerIntegration, RejectsBadInputPreciselyAndKeepsTheConnection) {
  Env env;
  Sink gp(env.dir.path(), "gp-a", env.a);
  env.broker.start();
  auto& c = env.client;
  auto url = env.fhir() + "/Patient";

  auto warm = c.post_fhir(url, patient(nhs_number(10), "A81001"), "rtx");
  ASSERT_EQ(warm.status, 202) << warm.body;

  auto malformed = c.post_fhir(url, R"({"resourceType":"Patient", "gender": )", "rtx");
  EXPECT_EQ(malformed.status, 400);
  EXPECT_EQ(json_string_at(malformed.body, "/resourceType"), "OperationOutcome");
  EXPECT_NE(malformed.body.find("malformed JSON at 1:"), std::string::npos) << malformed.body;
  EXPECT_EQ(malformed.new_connections, 0) << "connection should stay open";

  auto bad_utf8 = c.post_fhir(url, std::string("{\"resourceType\":\"Patient\",\"id\":\"a\xff\"}"), "rtx");
  EXPECT_EQ(bad_utf8.status, 400);
  EXPECT_NE(bad_utf8.body.find("UTF-8"), std::string::npos) << bad_utf8.body;

  auto wrong_type = c.request("POST", url, patient(nhs_number(11), "A81001"),
                              {"Content-Type: text/plain", "X-Tellonce-Partner: rtx"});
  EXPECT_EQ(wrong_type.status, 415);
  EXPECT_EQ(json_string_at(wrong_type.body, "/resourceType"), "OperationOutcome");

  std::string deep = R"({"resourceType":"Patient","extension":)";
  for (int i = 0; i < 60; ++i) deep += "[";
  for (int i = 0; i < 60; ++i) deep += "]";
  deep += "}";
  auto too_deep = c.post_fhir(url, deep, "rtx");
  EXPECT_EQ(too_deep.status, 400);
  EXPECT_NE(too_deep.body.find("nesting"), std::string::npos) << too_deep.body;

  auto unknown_type = c.post_fhir(env.fhir() + "/Pateint", R"({"resourceType":"Pateint"})", "rtx");
  EXPECT_EQ(unknown_type.status, 422) << unknown_type.body;
  EXPECT_EQ(outcome_rules(unknown_type.body), std::vector<std::string>{"fhir-resource-type"}) << unknown_type.body;
  EXPECT_EQ(outcome_locations(unknown_type.body), std::vector<std::string>{"resourceType"}) << unknown_type.body;

  auto bad_date = c.post_fhir(url, patient(nhs_number(12), "A81001", "p1", "1980-02-30"), "rtx");
  EXPECT_EQ(bad_date.status, 422) << bad_date.body;
  auto locs = outcome_locations(bad_date.body);
  EXPECT_NE(std::find(locs.begin(), locs.end(), "Patient.birthDate"), locs.end()) << bad_date.body;

  auto bad_nhs = c.post_fhir(url, patient("9000000015", "A81001"), "rtx");
  EXPECT_EQ(bad_nhs.status, 422) << bad_nhs.body;
  locs = outcome_locations(bad_nhs.body);
  EXPECT_NE(std::find(locs.begin(), locs.end(), "Patient.identifier[0].value"), locs.end()) << bad_nhs.body;

  auto no_partner = c.post_fhir(url, patient(nhs_number(13), "A81001"), "");
  EXPECT_EQ(no_partner.status, 401);

  auto after = c.post_fhir(url, patient(nhs_number(14), "A81001"), "rtx");
  EXPECT_EQ(after.status, 202) << after.body;
  EXPECT_EQ(after.new_connections, 0) << "rejections must not cost the partner its connection";

  // Oversized: answered from the headers, then the connection closes (draining could be abuse).
  std::string huge = R"({"resourceType":"Patient","id":"x","text":{"status":"generated","div":")" +
                     std::string(3 * 1024 * 1024, 'a') + "\"}}";
  auto oversized = c.post_fhir(url, huge, "rtx");
  EXPECT_EQ(oversized.status, 413);

  // Nothing rejected was stored: the store holds exactly the two good records, both delivered
  // (a delivered record is never sent again), so the partner has exactly those two.
  std::string warm_id = warm.headers["x-tellonce-message-id"], after_id = after.headers["x-tellonce-message-id"];
  auto stored = stored_message_ids(c, env.broker.base());
  EXPECT_EQ(std::set<std::string>(stored.begin(), stored.end()), (std::set<std::string>{warm_id, after_id}));
  for (const auto& id : {warm_id, after_id})
    EXPECT_EQ(json_string_at(wait_for_state(c, env.broker.base(), id, "delivered", 10s), "/state"), "delivered");
  ASSERT_TRUE(gp.wait_for(2, 10s));
  auto got = gp.received_message_ids();
  EXPECT_EQ(std::set<std::string>(got.begin(), got.end()), (std::set<std::string>{warm_id, after_id}));
  EXPECT_EQ(got.size(), 2u);

  // Each rejection is logged with its partner, channel, count and rule@location, no values.
  auto log = env.broker.output();
  EXPECT_NE(log.find("rejected record from rtx on fhir-http: 1 error(s): invalid uk-nhs-number@Patient.identifier[0].value"),
            std::string::npos) << log;
  EXPECT_NE(log.find("rejected record from rtx on fhir-http: 1 error(s): invalid fhir-resource-type@resourceType"),
            std::string::npos) << log;
}

TEST(BrokerIntegration, DuplicateSubmissionIsStoredOnce) {
  Env env;
  Sink gp(env.dir.path(), "gp-a", env.a);
  Sink vcse(env.dir.path(), "vcse", env.c);
  env.broker.start();

  auto body = patient(nhs_number(20), "A81001");
  auto first = env.client.post_fhir(env.fhir() + "/Patient", body, "rtx", {"Idempotency-Key: order-778"});
  auto second = env.client.post_fhir(env.fhir() + "/Patient", body, "rtx", {"Idempotency-Key: order-778"});
  ASSERT_EQ(first.status, 202) << first.body;
  EXPECT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(second.headers["x-tellonce-message-id"], first.headers["x-tellonce-message-id"]);
  EXPECT_EQ(second.headers["x-tellonce-duplicate"], "true");

  // A FHIR message is identified by its MessageHeader.id, with no header needed.
  auto msg = referral_message("0c9d3a54-2222-4ccc-8ddd-000000000002", nhs_number(21), "A81009");
  auto m1 = env.client.post_fhir(env.fhir(), msg, "rtx");
  auto m2 = env.client.post_fhir(env.fhir(), msg, "rtx");
  ASSERT_EQ(m1.status, 202) << m1.body;
  EXPECT_EQ(m2.headers["x-tellonce-duplicate"], "true");
  EXPECT_EQ(m2.headers["x-tellonce-message-id"], m1.headers["x-tellonce-message-id"]);

  // Two messages stored, both delivered (never sent again): each partner got its one exactly once.
  auto stored = stored_message_ids(env.client, env.broker.base());
  EXPECT_EQ(std::set<std::string>(stored.begin(), stored.end()),
            (std::set<std::string>{first.headers["x-tellonce-message-id"], m1.headers["x-tellonce-message-id"]}));
  for (const auto& id : stored)
    EXPECT_EQ(json_string_at(wait_for_state(env.client, env.broker.base(), id, "delivered", 10s), "/state"), "delivered");
  ASSERT_TRUE(gp.wait_for(1, 10s));
  ASSERT_TRUE(vcse.wait_for(1, 10s));
  EXPECT_EQ(gp.received_message_ids(), std::vector<std::string>{first.headers["x-tellonce-message-id"]});
  EXPECT_EQ(vcse.received_message_ids(), std::vector<std::string>{m1.headers["x-tellonce-message-id"]});
}

TEST(BrokerIntegration, UnroutableRecordIsHeldAndVisible) {
  Env env;
  env.broker.start();
  auto r = env.client.post_fhir(env.fhir() + "/Patient", patient(nhs_number(30), "Y99999"), "rtx");
  ASSERT_EQ(r.status, 202) << r.body;
  EXPECT_NE(r.body.find("unroutable"), std::string::npos) << r.body;
  std::string id = r.headers["x-tellonce-message-id"];
  auto view = env.client.request("GET", env.broker.base() + "/api/messages/" + id);
  EXPECT_EQ(json_string_at(view.body, "/state"), "unroutable") << view.body;
  auto list = env.client.request("GET", env.broker.base() + "/api/messages?state=unroutable");
  EXPECT_NE(list.body.find(id), std::string::npos) << list.body;
}

TEST(BrokerIntegration, DestinationDownThenUpGetsEverythingWithoutDelayingOthers) {
  Env env;
  Sink gp_b(env.dir.path(), "gp-b", env.b);
  Sink vcse(env.dir.path(), "vcse", env.c);
  env.broker.start();

  auto down = env.client.post_fhir(env.fhir() + "/Patient", patient(nhs_number(40), "A81001"), "rtx");
  ASSERT_EQ(down.status, 202) << down.body;
  std::string id = down.headers["x-tellonce-message-id"];
  auto up = env.client.post_fhir(env.fhir() + "/Patient", patient(nhs_number(41), "A81002"), "rtx");
  ASSERT_EQ(up.status, 202);
  // The healthy partner is served while gp-a is down.
  ASSERT_TRUE(gp_b.wait_for(1, 10s));

  std::string view;
  for (int i = 0; i < 100; ++i) {
    view = env.client.request("GET", env.broker.base() + "/api/messages/" + id).body;
    if (!json_string_at(view, "/deliveries/0/lastError").empty())
      break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(json_string_at(view, "/state"), "delivering") << view;
  EXPECT_FALSE(json_string_at(view, "/deliveries/0/lastError").empty()) << view;

  Sink gp_a(env.dir.path(), "gp-a", env.a);
  ASSERT_TRUE(gp_a.wait_for(1, 15s));
  EXPECT_EQ(gp_a.received_message_ids().front(), id);
  EXPECT_EQ(json_string_at(wait_for_state(env.client, env.broker.base(), id, "delivered", 10s), "/state"), "delivered");
}

// With no memory budget for queued bodies every delivery reads its body back from the store,
// across retries while the partner is down: what arrives is still exactly what was sent.
TEST(BrokerIntegration, QueuedBodiesPastTheMemoryBudgetAreReadBackFromTheStore) {
  Env env("  max_queued_body_bytes: 0\n");
  env.broker.start();

  auto compact = [](const std::string& json) {
    rapidjson::Document d;
    d.Parse(json.c_str());
    rapidjson::StringBuffer sb;
    rapidjson::Writer<rapidjson::StringBuffer> w(sb);
    d.Accept(w);
    return std::string(sb.GetString());
  };
  std::multiset<std::string> sent;
  for (int i = 0; i < 5; ++i) {
    auto body = patient(nhs_number(500 + i), "A81001", "budget-" + std::to_string(i));
    auto r = env.client.post_fhir(env.fhir() + "/Patient", body, "rtx");
    ASSERT_EQ(r.status, 202) << r.body;
    sent.insert(compact(body));
  }
  std::this_thread::sleep_for(300ms);  // gp-a is down: attempts fail and the jobs requeue bodiless
  Sink gp_a(env.dir.path(), "gp-a", env.a);
  ASSERT_TRUE(gp_a.wait_for(5, 15s));
  auto bodies = gp_a.received_bodies();
  EXPECT_EQ(std::multiset<std::string>(bodies.begin(), bodies.end()), sent);
}

TEST(BrokerIntegration, BrokerCrashWithPendingDeliveriesLosesNothing) {
  Env env;
  env.broker.start();
  std::set<std::string> accepted;
  for (int i = 0; i < 60; ++i) {
    auto r = env.client.post_fhir(env.fhir() + "/Patient", patient(nhs_number(100 + i), "A81001", "p" + std::to_string(i)), "rtx");
    ASSERT_EQ(r.status, 202) << r.body;
    accepted.insert(r.headers["x-tellonce-message-id"]);
  }
  env.broker.crash();  // SIGKILL: no chance to flush anything not already durable

  Sink gp(env.dir.path(), "gp-a", env.a);
  env.broker.start();
  ASSERT_TRUE(gp.wait_for(accepted.size(), 30s)) << gp.received_message_ids().size() << " of " << accepted.size();
  auto got = gp.received_message_ids();
  std::set<std::string> received(got.begin(), got.end());
  for (auto& id : accepted) EXPECT_TRUE(received.count(id)) << "lost " << id;
}

TEST(BrokerIntegration, SamePatientArrivesInAcceptanceOrderDespiteRetries) {
  Env env;
  // The first three requests fail with 503, so early records retry while later ones wait.
  Sink gp(env.dir.path(), "gp-a", env.a, {"--fail-status", "503", "--fail-first", "3"});
  env.broker.start();
  std::vector<std::string> order_x, order_y;
  for (int i = 0; i < 6; ++i) {
    auto rx = env.client.post_fhir(env.fhir() + "/Observation", observation(nhs_number(200), std::to_string(60 + i)), "rtx");
    auto ry = env.client.post_fhir(env.fhir() + "/Observation", observation(nhs_number(201), std::to_string(80 + i)), "rtx");
    ASSERT_EQ(rx.status, 202) << rx.body;
    ASSERT_EQ(ry.status, 202) << ry.body;
    order_x.push_back(rx.headers["x-tellonce-message-id"]);
    order_y.push_back(ry.headers["x-tellonce-message-id"]);
  }
  for (auto& id : order_x) wait_for_state(env.client, env.broker.base(), id, "delivered", 15s);
  for (auto& id : order_y) wait_for_state(env.client, env.broker.base(), id, "delivered", 15s);
  ASSERT_TRUE(gp.wait_for(order_x.size() + order_y.size(), 10s));
  auto got = gp.received_message_ids();
  auto delivered_order = [&](const std::vector<std::string>& ids) {
    std::vector<std::string> out;
    std::set<std::string> want(ids.begin(), ids.end()), seen;
    for (auto& g : got)
      if (want.count(g) && seen.insert(g).second) out.push_back(g);
    return out;
  };
  EXPECT_EQ(delivered_order(order_x), order_x);
  EXPECT_EQ(delivered_order(order_y), order_y);
}

std::size_t count_lines_with(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++n;
  return n;
}

// A partner down for longer than the old retry-by-count policy's whole backoff (6 attempts from
// 100 ms, capped at 400 ms: about 1.5 s) loses nothing: its records wait behind the circuit, go
// out in each patient's order when it is back, and the log says so in a few lines.
TEST(BrokerIntegration, PartnerDownLongerThanTheOldRetryPolicyLosesNothing) {
  Env env;
  env.broker.start();
  constexpr int patients = 4, per_patient = 10;
  std::map<std::string, std::vector<std::string>> sent;  // patient -> message ids in acceptance order
  for (int i = 0; i < per_patient; ++i) {
    for (int p = 0; p < patients; ++p) {
      auto nhs = nhs_number(600 + p);
      auto r = env.client.post_fhir(env.fhir() + "/Observation", observation(nhs, std::to_string(50 + i)), "rtx");
      ASSERT_EQ(r.status, 202) << r.body;
      sent[nhs].push_back(r.headers["x-tellonce-message-id"]);
    }
  }
  std::this_thread::sleep_for(4s);  // the outage: gp-a has no listener
  Sink gp(env.dir.path(), "gp-a", env.a);
  ASSERT_TRUE(gp.wait_for(patients * per_patient, 20s)) << gp.received_message_ids().size();
  for (auto& [nhs, ids] : sent)
    for (auto& id : ids)
      EXPECT_EQ(json_string_at(wait_for_state(env.client, env.broker.base(), id, "delivered", 10s), "/state"),
                "delivered") << id;
  auto failed = env.client.request("GET", env.broker.base() + "/api/messages?state=failed");
  EXPECT_EQ(failed.body.find("\"id\""), std::string::npos) << "dead-lettered: " << failed.body;

  auto got = gp.received_message_ids();
  for (auto& [nhs, ids] : sent) {
    std::set<std::string> want(ids.begin(), ids.end()), seen;
    std::vector<std::string> order;
    for (auto& g : got)
      if (want.count(g) && seen.insert(g).second) order.push_back(g);
    EXPECT_EQ(order, ids) << "patient " << nhs;
  }

  // One line per change of gp-a's circuit: opened, then probing / probe failed per probe
  // (about one per 400 ms), closed. Retry by count logged every attempt of every record.
  const std::string out = env.broker.output();
  const auto lines = count_lines_with(out, "destination=gp-a");
  const auto probes = count_lines_with(out, "circuit probing destination=gp-a");
  EXPECT_EQ(count_lines_with(out, "circuit open destination=gp-a event=circuit.open partner"), 0u);  // no answer: transport=
  EXPECT_EQ(count_lines_with(out, "circuit closed destination=gp-a"), 1u) << out;
  EXPECT_GE(probes, 3u) << out;
  EXPECT_LE(lines, 2 + 2 * probes) << out;
  EXPECT_LT(lines, static_cast<std::size_t>(patients * per_patient)) << out;
}

TEST(BrokerIntegration, DeadLetterThenReplay) {
  Env env;
  {
    // A partner that rejects the record outright: permanent, so dead-lettered at once.
    Sink gp(env.dir.path(), "gp-a-rejecting", env.a, {"--fail-status", "400", "--fail-first", "1000"});
    env.broker.start();
    auto r = env.client.post_fhir(env.fhir() + "/Patient", patient(nhs_number(300), "A81001"), "rtx");
    ASSERT_EQ(r.status, 202);
    std::string id = r.headers["x-tellonce-message-id"];
    auto view = wait_for_state(env.client, env.broker.base(), id, "failed", 10s);
    ASSERT_EQ(json_string_at(view, "/state"), "failed") << view;
    EXPECT_EQ(json_string_at(view, "/deliveries/0/status"), "dead");
    gp.stop();

    Sink fixed(env.dir.path(), "gp-a", env.a);
    Process cli({tellonce_binary().string(), "replay", id, "--api", env.broker.base(), "--token-file", token_file(env.dir.path())}, env.dir.path() / "replay.log");
    ASSERT_TRUE(cli.wait_for_line("queued again", 10s).has_value()) << cli.output();
    ASSERT_TRUE(fixed.wait_for(1, 10s));
    EXPECT_EQ(fixed.received_message_ids().front(), id);
    view = wait_for_state(env.client, env.broker.base(), id, "delivered", 10s);
    EXPECT_EQ(json_string_at(view, "/state"), "delivered") << view;
    EXPECT_NE(view.find("replayed"), std::string::npos) << view;
  }
  auto unknown = env.client.request("POST", env.broker.base() + "/api/messages/01ZZZZZZZZZZZZZZZZZZZZZZZZ/replay");
  EXPECT_EQ(unknown.status, 404);
}

}  // namespace
}  // namespace tellonce::itest
