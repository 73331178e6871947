#include "adapters/fhir_rest_inbound/fhir_rest_inbound.hpp"

#include "support/loopback_client.hpp"
#include "tellonce/pipeline.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <mutex>

namespace tellonce {
namespace {

using test::make_request;

class FakePipeline : public Pipeline {
 public:
  std::mutex mu;
  std::vector<InboundRecord> received;
  Result<Accepted> answer = Accepted{"01JTEST0000000000000000000", false, MessageState::delivering,
                                     {"gp-a81001", "vcse-x"}, {}};

  asio::awaitable<Result<Accepted>> accept(InboundRecord record) override {
    std::lock_guard lk(mu);
    received.push_back(std::move(record));
    co_return answer;
  }
  asio::awaitable<Result<std::size_t>> replay(std::string) override { co_return std::size_t{0}; }
};

// Partners by key and by id, as the broker's directory answers from the config.
class FakePartners : public PartnerDirectory {
 public:
  std::string_view by_api_key(std::string_view key) const override {
    return key == "key-trust" ? std::string_view(trust_) : std::string_view();
  }
  std::string_view by_id(std::string_view id) const override {
    if (id == trust_) return trust_;
    if (id == gp_) return gp_;
    return {};
  }
  std::string_view by_hl7v2_facility(std::string_view) const override { return {}; }

 private:
  std::string trust_ = "trust-rx1", gp_ = "gp-a81001";
};

const std::string patient = R"({"resourceType":"Patient","id":"p1"})";

// What the endpoint's rule says about `json`: empty when it takes the record, else the first
// issue's location and diagnostics.
std::string rule_verdict(const InboundRecord& rec, const std::string& json) {
  rapidjson::Document doc;
  doc.Parse(json.c_str());
  if (!rec.rule) return "no rule";
  auto refusal = rec.rule(doc);
  if (!refusal) return "";
  EXPECT_EQ(refusal->code, Errc::malformed);
  return refusal->issues.at(0).location + ": " + refusal->issues.at(0).diagnostics;
}

class FhirRestInboundTest : public ::testing::Test {
 protected:
  void SetUp() override { build(true); }

  void build(bool allow_partner_header) {
    FhirRestInboundSettings settings;
    settings.listen = "127.0.0.1:0";
    settings.allow_partner_header = allow_partner_header;
    InboundContext ctx{partners_, pipeline_, io_.io.get_executor(), &servers_, "fhir-in"};
    adapter_ = fhir_rest_inbound_type().create(std::make_shared<FhirRestInboundSettings>(settings), ctx);
    adapter_->start();  // mounts
    servers_.start_all();
    io_.start();
    port_ = servers_.at("127.0.0.1:0").port();
  }

  void TearDown() override {
    servers_.stop_all();
    io_.stop();
  }

  HttpResponse post(std::string target, std::string body, std::string content_type = "application/fhir+json",
                    std::string key = "key-trust") {
    auto req = make_request(http::verb::post, std::move(target), std::move(body), std::move(content_type));
    if (!key.empty()) req.set(http::field::authorization, "Bearer " + key);
    return test::send(port_, req);
  }

  test::IoThread io_;
  FakePipeline pipeline_;
  FakePartners partners_;
  HttpServers servers_{io_.io, HttpLimits{}};
  std::unique_ptr<InboundAdapter> adapter_;
  unsigned short port_ = 0;
};

TEST_F(FhirRestInboundTest, CreateIsAcceptedWithLocationAndMessageId) {
  auto res = post("/fhir/Patient", patient);
  EXPECT_EQ(res.result(), http::status::accepted);
  EXPECT_EQ(res[http::field::location], "/api/messages/01JTEST0000000000000000000");
  EXPECT_EQ(res["X-Tellonce-Message-Id"], "01JTEST0000000000000000000");
  EXPECT_TRUE(res["X-Tellonce-Duplicate"].empty());
  EXPECT_NE(res.body().find("routed to gp-a81001, vcse-x"), std::string::npos);
  ASSERT_EQ(pipeline_.received.size(), 1u);
  const auto& rec = pipeline_.received[0];
  EXPECT_EQ(rec.source, "trust-rx1");
  EXPECT_EQ(rec.channel, "fhir-in");
  EXPECT_EQ(rec.body, patient);
  EXPECT_EQ(rule_verdict(rec, patient), "");
  EXPECT_EQ(rule_verdict(rec, R"({"resourceType":"Observation"})"),
            "resourceType: this endpoint takes Patient resources but the body is a Observation");
}

TEST_F(FhirRestInboundTest, LocationIgnoresTheClientsHostHeader) {
  auto req = make_request(http::verb::post, "/fhir/Patient", patient);
  req.set(http::field::authorization, "Bearer key-trust");
  req.set(http::field::host, "evil.example:443");
  auto res = test::send(port_, std::move(req));
  EXPECT_EQ(res.result(), http::status::accepted);
  EXPECT_EQ(res[http::field::location], "/api/messages/01JTEST0000000000000000000");
  EXPECT_EQ(res.body().find("evil.example"), std::string::npos);
}

TEST_F(FhirRestInboundTest, WarningsBecomeWarningIssues) {
  Accepted a{"01JWARN", false, MessageState::unroutable, {}, {}};
  a.warnings.push_back(Issue{Severity::warning, "value", "no GP practice", "Patient.generalPractitioner", ""});
  pipeline_.answer = a;
  auto res = post("/fhir/Patient", patient);
  EXPECT_EQ(res.result(), http::status::accepted);
  EXPECT_NE(res.body().find("held as unroutable"), std::string::npos);
  EXPECT_NE(res.body().find(R"("severity":"warning")"), std::string::npos);
}

TEST_F(FhirRestInboundTest, DuplicateIs200WithHeader) {
  pipeline_.answer = Accepted{"01JOLD", true, MessageState::delivered, {}, {}};
  auto res = post("/fhir/Patient", patient);
  EXPECT_EQ(res.result(), http::status::ok);
  EXPECT_EQ(res["X-Tellonce-Duplicate"], "true");
  EXPECT_NE(res.body().find("duplicate of message 01JOLD"), std::string::npos);
}

TEST_F(FhirRestInboundTest, WrongContentTypeIs415) {
  auto res = post("/fhir/Patient", patient, "text/plain");
  EXPECT_EQ(res.result(), http::status::unsupported_media_type);
  EXPECT_NE(res.body().find("not-supported"), std::string::npos);
  EXPECT_NE(res.body().find("application/fhir+json"), std::string::npos);
  EXPECT_TRUE(pipeline_.received.empty());
}

TEST_F(FhirRestInboundTest, CharsetParameterIsCheckedNotRejected) {
  EXPECT_EQ(post("/fhir/Patient", patient, "application/json; charset=UTF-8").result(), http::status::accepted);
  EXPECT_EQ(post("/fhir/Patient", patient, "application/fhir+json;charset=latin1").result(),
            http::status::unsupported_media_type);
}

TEST_F(FhirRestInboundTest, MissingPartnerIs401NamingTheHeaders) {
  auto res = post("/fhir/Patient", patient, "application/fhir+json", "");
  EXPECT_EQ(res.result(), http::status::unauthorized);
  EXPECT_NE(res.body().find("security"), std::string::npos);
  EXPECT_NE(res.body().find("X-Tellonce-Partner"), std::string::npos);
  EXPECT_TRUE(pipeline_.received.empty());
}

TEST_F(FhirRestInboundTest, UnknownKeyIs401) {
  EXPECT_EQ(post("/fhir/Patient", patient, "application/fhir+json", "stolen").result(), http::status::unauthorized);
}

TEST_F(FhirRestInboundTest, PartnerHeaderNamesTheSource) {
  auto req = make_request(http::verb::post, "/fhir/Patient", patient);
  req.set("X-Tellonce-Partner", "gp-a81001");
  EXPECT_EQ(test::send(port_, req).result(), http::status::accepted);
  ASSERT_EQ(pipeline_.received.size(), 1u);
  EXPECT_EQ(pipeline_.received[0].source, "gp-a81001");
  req.set("X-Tellonce-Partner", "nobody");
  EXPECT_EQ(test::send(port_, req).result(), http::status::unauthorized);
}

TEST_F(FhirRestInboundTest, PipelineFailurePassesThroughWithOutcome) {
  pipeline_.answer = Failure::permanent(Errc::malformed, Issue{Severity::error, "value", "NHS number check digit is wrong",
                                                   "Patient.identifier[0].value", "uk-nhs-number"});
  auto res = post("/fhir/Patient", patient);
  EXPECT_EQ(res.result(), http::status::bad_request);
  rapidjson::Document doc;
  doc.Parse(res.body().c_str());
  ASSERT_TRUE(doc.IsObject());
  EXPECT_STREQ(doc["resourceType"].GetString(), "OperationOutcome");
  EXPECT_STREQ(doc["issue"][0]["diagnostics"].GetString(), "NHS number check digit is wrong");
}

TEST_F(FhirRestInboundTest, RetryableFailureKeepsItsStatus) {
  pipeline_.answer = Failure::retryable(Errc::unavailable, Issue{Severity::error, "transient", "store busy", "", ""});
  EXPECT_EQ(post("/fhir/Patient", patient).result(), http::status::service_unavailable);
}

TEST_F(FhirRestInboundTest, MetadataIsACapabilityStatement) {
  auto res = test::send(port_, make_request(http::verb::get, "/fhir/metadata"));
  EXPECT_EQ(res.result(), http::status::ok);
  rapidjson::Document doc;
  doc.Parse(res.body().c_str());
  ASSERT_TRUE(doc.IsObject());
  EXPECT_STREQ(doc["resourceType"].GetString(), "CapabilityStatement");
  EXPECT_STREQ(doc["fhirVersion"].GetString(), "4.0.1");
  EXPECT_STREQ(doc["software"]["name"].GetString(), "tellonce");
  EXPECT_FALSE(doc["implementation"].HasMember("url")) << "never built from the client's Host header";
  EXPECT_STREQ(doc["rest"][0]["operation"][0]["name"].GetString(), "process-message");
  EXPECT_GT(doc["rest"][0]["resource"].Size(), 5u);
}

TEST_F(FhirRestInboundTest, IdempotencyKeyIsForwardedElseRequestId) {
  auto req = make_request(http::verb::post, "/fhir/Patient", patient);
  req.set(http::field::authorization, "Bearer key-trust");
  req.set("X-Request-Id", "req-1");
  test::send(port_, req);
  req.set("Idempotency-Key", "idem-1");
  test::send(port_, req);
  ASSERT_EQ(pipeline_.received.size(), 2u);
  EXPECT_EQ(pipeline_.received[0].idempotency_key, "req-1");
  EXPECT_EQ(pipeline_.received[1].idempotency_key, "idem-1");
}

TEST_F(FhirRestInboundTest, ProcessMessageTakesOnlyMessageBundles) {
  std::string bundle = R"({"resourceType":"Bundle","type":"message","entry":[]})";
  EXPECT_EQ(post("/fhir/$process-message", bundle).result(), http::status::accepted);
  ASSERT_EQ(pipeline_.received.size(), 1u);
  const auto& rec = pipeline_.received[0];
  EXPECT_EQ(rule_verdict(rec, bundle), "");
  EXPECT_NE(rule_verdict(rec, R"({"resourceType":"Bundle","type":"collection"})").find("Bundle.type: $process-message"),
            std::string::npos);
  EXPECT_NE(rule_verdict(rec, patient).find("resourceType: $process-message"), std::string::npos);
}

TEST_F(FhirRestInboundTest, BaseAndBundleEndpointsAreToldApart) {
  // The pipeline runs the rule once it has parsed the body; the adapter says which rule.
  EXPECT_EQ(post("/fhir", R"({"resourceType":"Bundle","type":"transaction","entry":[]})").result(),
            http::status::accepted);
  EXPECT_EQ(post("/fhir/Bundle", R"({"resourceType":"Bundle","type":"document"})").result(),
            http::status::accepted);
  ASSERT_EQ(pipeline_.received.size(), 2u);
  const std::string searchset = R"({"resourceType":"Bundle","type":"searchset"})";
  const auto& at_base = pipeline_.received[0];
  EXPECT_EQ(rule_verdict(at_base, R"({"resourceType":"Bundle","type":"transaction"})"), "");
  EXPECT_EQ(rule_verdict(at_base, R"({"resourceType":"Bundle","type":"batch"})"), "");
  EXPECT_NE(rule_verdict(at_base, searchset).find("Bundle.type: POST to the base takes a Bundle of type message, "
                                                  "transaction or batch; this one is 'searchset'"),
            std::string::npos);
  EXPECT_NE(rule_verdict(at_base, R"({"resourceType":"Bundle"})").find("untyped"), std::string::npos);
  EXPECT_NE(rule_verdict(at_base, patient).find("resourceType: this endpoint takes Bundle"), std::string::npos);
  // The same searchset posted as a resource to /Bundle is a create, and is taken.
  EXPECT_EQ(rule_verdict(pipeline_.received[1], searchset), "");
}

TEST_F(FhirRestInboundTest, OtherMethodsAre405WithAllow) {
  auto res = test::send(port_, make_request(http::verb::get, "/fhir/Patient"));
  EXPECT_EQ(res.result(), http::status::method_not_allowed);
  EXPECT_EQ(res[http::field::allow], "POST");
  EXPECT_EQ(test::send(port_, make_request(http::verb::post, "/fhir/metadata", "{}")).result(),
            http::status::method_not_allowed);
}

}  // namespace
}  // namespace tellonce
