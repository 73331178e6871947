#include "broker/api/api.hpp"
#include "broker/api/operators.hpp"
#include "tellonce/tls.hpp"

#include "broker/config/config.hpp"
#include "broker/core/trail.hpp"
#include "support/fake_store.hpp"
#include "support/loopback_client.hpp"
#include "tellonce/pipeline.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

namespace tellonce {
namespace {

using test::make_request;

class ReplayPipeline : public Pipeline {
 public:
  std::vector<std::string> replayed;
  asio::awaitable<Result<Accepted>> accept(InboundRecord) override { co_return Accepted{}; }
  asio::awaitable<Result<std::size_t>> replay(std::string id) override {
    replayed.push_back(id);
    if (id != "01JKNOWN") co_return Failure::permanent(Errc::not_found, Issue{Severity::error, "not-found", "no message " + id, "", ""});
    co_return std::size_t{2};
  }
};

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MessageView m;
    m.id = "01JKNOWN";
    m.source = "trust-rx1";
    m.channel = "fhir-in";
    m.resource_type = "Bundle";
    m.event = "https://fhir.nhs.uk/CodeSystem/message-events-bars|servicerequest-request";
    m.patient_key = "9434765919";
    m.content_hash = "abc";
    m.received_at_ms = 1700000000123;
    m.state = MessageState::delivering;
    m.body_bytes = 42;
    DeliveryView d;
    d.delivery_id = 7;
    d.destination = "gp-a81001";
    d.attempts = 2;
    d.next_attempt_ms = 1700000005000;
    d.last_outcome = DeliveryOutcome::retryable;
    d.last_partner_code = "HTTP 503";
    d.last_detail = "maintenance";
    m.deliveries.push_back(d);
    LifecycleEvent received;
    received.kind = EventKind::received;
    received.at_ms = 1700000000123;
    received.source = "trust-rx1";
    m.events.push_back(received);
    LifecycleEvent attempt;
    attempt.kind = EventKind::attempt;
    attempt.at_ms = 1700000001000;
    attempt.destination = "gp-a81001";
    attempt.attempt = 2;
    attempt.outcome = DeliveryOutcome::retryable;
    attempt.partner_code = "HTTP 503";
    attempt.detail = "maintenance";
    attempt.next_attempt_ms = 1700000005000;
    m.events.push_back(attempt);
    store_.messages[m.id] = m;
    config_.operators.push_back(OperatorAccount{"api-test", OperatorRole::operator_, {api_key_hash(kToken)}, {}, 0});
    config_.operators.push_back(OperatorAccount{"api-viewer", OperatorRole::viewer, {api_key_hash(kViewer)}, {}, 0});
    mount_api(server_, store_, pipeline_, config_);
    server_.start();
    io_.start();
  }
  void TearDown() override {
    server_.stop();
    io_.stop();
  }
  static constexpr const char* kToken = "api-test-operator-token-0123456789";
  HttpResponse get(std::string target) {
    auto req = make_request(http::verb::get, std::move(target));
    req.set(http::field::authorization, std::string("Bearer ") + kToken);
    return test::send(server_.port(), std::move(req));
  }
  HttpResponse post(std::string target, std::string token = kToken) {
    auto req = make_request(http::verb::post, std::move(target));
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    return test::send(server_.port(), std::move(req));
  }
  HttpResponse get_as(std::string target, std::string token) {
    auto req = make_request(http::verb::get, std::move(target));
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    return test::send(server_.port(), std::move(req));
  }
  static constexpr const char* kViewer = "api-test-viewer-token-0123456789";

  test::IoThread io_;
  test::FakeStore store_;
  ReplayPipeline pipeline_;
  Config config_;
  HttpServer server_{io_.io, "127.0.0.1:0", HttpLimits{}};
};

TEST_F(ApiTest, MessageViewIsJson) {
  auto res = get("/api/messages/01JKNOWN");
  ASSERT_EQ(res.result(), http::status::ok);
  rapidjson::Document doc;
  doc.Parse(res.body().c_str());
  ASSERT_TRUE(doc.IsObject()) << res.body();
  EXPECT_STREQ(doc["id"].GetString(), "01JKNOWN");
  EXPECT_STREQ(doc["resourceType"].GetString(), "Bundle");
  EXPECT_STREQ(doc["patientKey"].GetString(), "9434765919");
  EXPECT_STREQ(doc["receivedAt"].GetString(), "2023-11-14T22:13:20.123Z");
  EXPECT_STREQ(doc["state"].GetString(), "delivering");
  EXPECT_EQ(doc["bodyBytes"].GetInt(), 42);
  const auto& d = doc["deliveries"][0];
  EXPECT_STREQ(d["destination"].GetString(), "gp-a81001");
  EXPECT_STREQ(d["status"].GetString(), "pending");
  EXPECT_EQ(d["attempts"].GetInt(), 2);
  EXPECT_STREQ(d["nextAttemptAt"].GetString(), "2023-11-14T22:13:25.000Z");
  EXPECT_STREQ(d["lastOutcome"].GetString(), "retryable");
  EXPECT_STREQ(d["lastPartnerCode"].GetString(), "HTTP 503");
  EXPECT_STREQ(d["lastReason"].GetString(), "maintenance");
  EXPECT_STREQ(d["lastError"].GetString(), "HTTP 503: maintenance");
  ASSERT_EQ(doc["events"].Size(), 2u);
  EXPECT_STREQ(doc["events"][0]["kind"].GetString(), "received");
  EXPECT_STREQ(doc["events"][0]["source"].GetString(), "trust-rx1");
  const auto& a = doc["events"][1];
  EXPECT_STREQ(a["kind"].GetString(), "attempt");
  EXPECT_STREQ(a["destination"].GetString(), "gp-a81001");
  EXPECT_EQ(a["attempt"].GetInt(), 2);
  EXPECT_STREQ(a["outcome"].GetString(), "retryable");
  EXPECT_STREQ(a["partnerCode"].GetString(), "HTTP 503");
  EXPECT_STREQ(a["reason"].GetString(), "maintenance");
  EXPECT_STREQ(a["nextAttemptAt"].GetString(), "2023-11-14T22:13:25.000Z");
  // The words come from core/trail (its own test covers them); here only that they are there.
  EXPECT_STREQ(a["detail"].GetString(), trail_text(store_.messages["01JKNOWN"].events[1]).c_str());
}

// An attempt's excerpt is the start of the partner's answer, at most 512 bytes and cut between
// characters: 2-byte "é"s put byte 512 in the middle of one.
TEST_F(ApiTest, AnAttemptsExcerptIsTheStartOfALongAnswerCutBetweenCharacters) {
  std::string answer = "x";
  while (answer.size() < 2000) answer += "\xC3\xA9";
  store_.messages["01JKNOWN"].events[1].detail = answer;
  auto res = get("/api/messages/01JKNOWN");
  ASSERT_EQ(res.result(), http::status::ok);
  rapidjson::Document doc;
  ASSERT_FALSE(doc.Parse(res.body().c_str()).HasParseError()) << res.body();
  ASSERT_EQ(doc["attempts"].Size(), 1u);
  const std::string excerpt = doc["attempts"][0]["excerpt"].GetString();
  EXPECT_EQ(excerpt.size(), 511u);  // 512 would split the last "é"
  EXPECT_EQ(answer.compare(0, excerpt.size(), excerpt), 0);
  EXPECT_STREQ(doc["attempts"][0]["partnerCode"].GetString(), "HTTP 503");
}

// The stored FHIR form and what the partner sent, each with its own content type; for a record
// that arrived as FHIR both are the body.
TEST_F(ApiTest, BodyAndOriginalAreServedAsStored) {
  NewMessage converted;
  converted.id = "01JCONVERTED";
  converted.body = R"({"resourceType":"Bundle","type":"message"})";
  converted.original_content_type = "x-application/hl7-v2+er7";
  converted.original_bytes = "MSH|^~\\&|PAS|RTX|||20261130||ADT^A01|1|P|2.4\r";
  store_.stored.push_back(converted);
  MessageView view;
  view.id = converted.id;
  view.content_type = "application/fhir+json";
  view.body_bytes = converted.body.size();
  view.original_content_type = converted.original_content_type;
  view.original_bytes = converted.original_bytes.size();
  store_.messages[view.id] = view;
  NewMessage plain;
  plain.id = "01JPLAIN";
  plain.body = R"({"resourceType":"Patient"})";
  store_.stored.push_back(plain);
  store_.messages[plain.id] = MessageView{};
  store_.messages[plain.id].id = plain.id;
  store_.messages[plain.id].content_type = "application/fhir+json";

  auto body = get("/api/messages/01JCONVERTED/body?reason=support%20ticket");
  ASSERT_EQ(body.result(), http::status::ok);
  EXPECT_EQ(body.body(), converted.body);
  EXPECT_EQ(body[http::field::content_type], "application/fhir+json");
  auto original = get("/api/messages/01JCONVERTED/original?reason=support%20ticket");
  ASSERT_EQ(original.result(), http::status::ok);
  EXPECT_EQ(original.body(), converted.original_bytes);
  EXPECT_EQ(original[http::field::content_type], "x-application/hl7-v2+er7");
  auto same = get("/api/messages/01JPLAIN/original?reason=support%20ticket");
  ASSERT_EQ(same.result(), http::status::ok);
  EXPECT_EQ(same.body(), plain.body);

  auto json = get("/api/messages/01JCONVERTED");
  rapidjson::Document doc;
  doc.Parse(json.body().c_str());
  ASSERT_TRUE(doc.IsObject()) << json.body();
  EXPECT_STREQ(doc["contentType"].GetString(), "application/fhir+json");
  ASSERT_TRUE(doc["original"].IsObject());
  EXPECT_STREQ(doc["original"]["contentType"].GetString(), "x-application/hl7-v2+er7");
  EXPECT_EQ(doc["original"]["bytes"].GetUint64(), converted.original_bytes.size());
  auto plain_json = get("/api/messages/01JPLAIN");
  doc.Parse(plain_json.body().c_str());
  ASSERT_TRUE(doc.IsObject());
  EXPECT_TRUE(doc["original"].IsNull());

  EXPECT_EQ(get("/api/messages/01JNOPE/body?reason=x").result(), http::status::not_found);
  EXPECT_EQ(get("/api/messages/01JNOPE/original?reason=x").result(), http::status::not_found);
  EXPECT_EQ(post("/api/messages/01JPLAIN/body").result(),
            http::status::method_not_allowed);
}

TEST_F(ApiTest, UnknownMessageIs404Outcome) {
  auto res = get("/api/messages/01JNOPE");
  EXPECT_EQ(res.result(), http::status::not_found);
  EXPECT_NE(res.body().find("OperationOutcome"), std::string::npos);
}

TEST_F(ApiTest, ReplayAnswersCount) {
  auto res = post("/api/messages/01JKNOWN/replay");
  EXPECT_EQ(res.result(), http::status::ok);
  EXPECT_EQ(res.body(), R"({"replayed":2})");
  ASSERT_EQ(pipeline_.replayed.size(), 1u);
  EXPECT_EQ(pipeline_.replayed[0], "01JKNOWN");
}

TEST_F(ApiTest, ReplayOfUnknownIs404) {
  auto res = post("/api/messages/01JNOPE/replay");
  EXPECT_EQ(res.result(), http::status::not_found);
}

TEST_F(ApiTest, ListPassesTheQuery) {
  store_.summaries.push_back(MessageSummary{"01JA", "trust-rx1", "Patient", MessageState::unroutable, 1700000000000, "fhir-http", "", "c1"});
  auto res = get("/api/messages?state=unroutable&source=trust%2Drx1&limit=5");
  ASSERT_EQ(res.result(), http::status::ok);
  ASSERT_TRUE(store_.last_query.state.has_value());
  EXPECT_EQ(*store_.last_query.state, MessageState::unroutable);
  EXPECT_EQ(store_.last_query.source, "trust-rx1");
  EXPECT_EQ(store_.last_query.limit, 6);  // one more than asked: whether there is a next page
  rapidjson::Document doc;
  doc.Parse(res.body().c_str());
  ASSERT_TRUE(doc.IsObject());
  EXPECT_STREQ(doc["messages"][0]["id"].GetString(), "01JA");
  EXPECT_FALSE(doc.HasMember("next"));  // the only page

  // Every tracking filter reaches the store; a full page names the next one.
  for (int i = 0; i < 2; ++i) store_.summaries.push_back(store_.summaries.front());
  store_.summaries[1].cursor = "c2";
  res = get("/api/messages?destination=gp-a&route=r1&resourceType=Bundle&event=ADT%5EA01&nhsNumber=9449306753"
            "&since=2026-11-30T09:00:00Z&until=1764500000000&cursor=abc&limit=2");
  ASSERT_EQ(res.result(), http::status::ok) << res.body();
  EXPECT_EQ(store_.last_query.destination, "gp-a");
  EXPECT_EQ(store_.last_query.route, "r1");
  EXPECT_EQ(store_.last_query.resource_type, "Bundle");
  EXPECT_EQ(store_.last_query.event, "ADT^A01");
  EXPECT_EQ(store_.last_query.nhs_number, "9449306753");
  EXPECT_EQ(store_.last_query.since_ms, 1796029200000);
  EXPECT_EQ(store_.last_query.until_ms, 1764500000000);
  EXPECT_EQ(store_.last_query.cursor, "abc");
  doc.Parse(res.body().c_str());
  EXPECT_EQ(doc["messages"].Size(), 2u);
  EXPECT_STREQ(doc["next"].GetString(), "c2");
  EXPECT_EQ(get("/api/messages?nhsNumber=12345").result(), http::status::bad_request);
  EXPECT_EQ(get("/api/messages?since=yesterday").result(), http::status::bad_request);
  EXPECT_EQ(get("/api/messages?state=lost").result(), http::status::bad_request);
  EXPECT_EQ(get("/api/messages?limit=0").result(), http::status::bad_request);
}

TEST_F(ApiTest, Health) {
  auto res = get("/api/health");
  EXPECT_EQ(res.result(), http::status::ok);
  EXPECT_EQ(res.body(), R"({"status":"ok"})");
}

// Issue 12: operators sign in, and each role meets what it may not do.
TEST_F(ApiTest, NoTokenOrAWrongTokenIs401WithWwwAuthenticate) {
  auto none = get_as("/api/messages/01JKNOWN", "");
  EXPECT_EQ(none.result(), http::status::unauthorized);
  EXPECT_EQ(std::string(none[http::field::www_authenticate]), R"(Bearer realm="tellonce")");
  auto wrong = get_as("/api/messages/01JKNOWN", "not-a-token-anyone-has-0000000000");
  EXPECT_EQ(wrong.result(), http::status::unauthorized);
  EXPECT_NE(std::string(wrong[http::field::www_authenticate]).find("invalid_token"), std::string::npos);
  EXPECT_EQ(get_as("/api/health", "").result(), http::status::ok);  // a probe stays open
}

TEST_F(ApiTest, AViewerSeesMetadataButCannotReplayOrReadBodies) {
  EXPECT_EQ(get_as("/api/messages/01JKNOWN", kViewer).result(), http::status::ok);
  auto replay = post("/api/messages/01JKNOWN/replay", kViewer);
  EXPECT_EQ(replay.result(), http::status::forbidden);
  EXPECT_NE(replay.body().find("needs the operator role"), std::string::npos) << replay.body();
  EXPECT_EQ(post("/api/replay?state=failed", kViewer).result(), http::status::forbidden);
  auto body = get_as("/api/messages/01JPLAIN/body?reason=curious", kViewer);
  EXPECT_EQ(body.result(), http::status::forbidden);
  EXPECT_TRUE(store_.views.empty());
}

TEST_F(ApiTest, AnOperatorCannotReloadTheConfiguration) {
  auto res = post("/api/config/reload");
  EXPECT_EQ(res.result(), http::status::forbidden);
  EXPECT_NE(res.body().find("needs the admin role"), std::string::npos) << res.body();
}

TEST_F(ApiTest, ABodyViewNeedsAReasonAndIsRecordedWithWhoAndWhy) {
  NewMessage plain;
  plain.id = "01JPLAIN";
  plain.body = R"({"resourceType":"Patient"})";
  store_.stored.push_back(plain);
  store_.messages[plain.id].id = plain.id;
  store_.messages[plain.id].content_type = "application/fhir+json";
  auto refused = get("/api/messages/01JPLAIN/body");
  EXPECT_EQ(refused.result(), http::status::bad_request);
  EXPECT_TRUE(store_.views.empty());
  auto req = make_request(http::verb::get, "/api/messages/01JPLAIN/body");
  req.set(http::field::authorization, std::string("Bearer ") + kToken);
  req.set("X-Tellonce-Reason", "ticket 42");
  req.set("X-Tellonce-Actor", "console");
  req.set("X-Tellonce-Operator", "someone-else");  // forged: replaced by the signed-in operator
  EXPECT_EQ(test::send(server_.port(), std::move(req)).result(), http::status::ok);
  ASSERT_EQ(store_.views.size(), 1u);
  EXPECT_EQ(store_.views[0], "01JPLAIN body api-test via console ticket 42");
}

TEST_F(ApiTest, RolesNeededByPath) {
  EXPECT_EQ(role_needed(http::verb::get, "/metrics"), OperatorRole::metrics);
  EXPECT_EQ(role_needed(http::verb::get, "/api/flow"), OperatorRole::viewer);
  EXPECT_EQ(role_needed(http::verb::get, "/api/messages/X/original"), OperatorRole::operator_);
  EXPECT_EQ(role_needed(http::verb::post, "/api/destinations/gp/pause"), OperatorRole::operator_);
  EXPECT_EQ(role_needed(http::verb::post, "/api/config/reload"), OperatorRole::admin);
}

}  // namespace
}  // namespace tellonce
