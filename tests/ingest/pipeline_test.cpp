#include "ingest/pipeline.hpp"

#include "queue/queue.hpp"
#include "route/router.hpp"
#include "store/store.hpp"
#include "validate/validator.hpp"

#include "support/fake_store.hpp"
#include "support/run_async.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include <map>

namespace tellonce {
namespace {

// Rejects any resource carrying "bad": true; warns on "odd": true.
class FakeValidator : public Validator {
 public:
  void validate(const rapidjson::Value& r, std::vector<Issue>& out) const override {
    if (r.HasMember("bad")) out.push_back({Severity::error, "value", "bad flag", "Patient.bad", "test"});
    if (r.HasMember("odd")) out.push_back({Severity::warning, "value", "odd flag", "Patient.odd", "test"});
  }
};

class FakeRouter : public Router {
 public:
  std::vector<RouteMatch> route(const RouteInput& in) const override {
    if (in.record.HasMember("nowhere")) return {};
    return {RouteMatch{"r1", {"gp", "vcse"}}, RouteMatch{"r2", {"gp"}}};
  }
};

class FakeQueue : public Queue {
 public:
  std::vector<DeliveryJob> pushed;
  bool refuse = false;  // a queue that cannot take jobs (a broker that did not confirm)
  asio::awaitable<Result<void>> push(DeliveryJob j) override {
    if (refuse)
      co_return Failure::retryable(Errc::unavailable, Issue{Severity::error, "transient", "queue down", "", ""});
    pushed.push_back(std::move(j));
    co_return Result<void>{};
  }
  asio::awaitable<std::optional<DeliveryJob>> next(std::string) override { co_return std::nullopt; }
  asio::awaitable<Result<void>> settle(DeliveryJob, Settlement) override { co_return Result<void>{}; }
  QueueStats stats(const std::string&) const override { return {}; }
  void stop() override {}
};

class PipelineTest : public ::testing::Test {
 protected:
  FakeValidator validator;
  FakeRouter router;
  test::FakeStore store;
  FakeQueue queue;
  std::unique_ptr<Pipeline> pipeline = make_pipeline(validator, router, store, queue, JsonLimits{4096, 16});

  Result<Accepted> accept(InboundRecord rec) { return test::run_async(pipeline->accept(std::move(rec))); }
  static InboundRecord record(std::string body, std::string key = "") {
    InboundRecord r;
    r.source = "rtx";
    r.channel = "http";
    r.content_type = "application/fhir+json";
    r.body = std::move(body);
    r.idempotency_key = std::move(key);
    return r;
  }
};

TEST_F(PipelineTest, AcceptsStoresAndEnqueuesEachDestinationOnce) {
  auto r = accept(record(R"({"resourceType":"Patient","odd":true})"));
  ASSERT_TRUE(r) << r.error().summary();
  EXPECT_FALSE(r->duplicate);
  EXPECT_EQ(r->destinations, (std::vector<std::string>{"gp", "vcse"}));
  ASSERT_EQ(store.stored.size(), 1u);
  EXPECT_EQ(store.stored[0].route_ids, (std::vector<std::string>{"r1", "r2"}));
  EXPECT_EQ(store.stored[0].content_hash.size(), 64u);
  EXPECT_EQ(store.stored[0].warnings.size(), 1u);
  EXPECT_EQ(r->warnings.size(), 1u);
  EXPECT_EQ(queue.pushed.size(), 2u);
}

TEST_F(PipelineTest, QueueRefusalStillAcceptsTheCommittedRecord) {
  queue.refuse = true;  // the deliveries stay pending in the store, queued again at start-up
  auto r = accept(record(R"({"resourceType":"Patient","odd":true})"));
  ASSERT_TRUE(r) << r.error().summary();
  EXPECT_EQ(store.stored.size(), 1u);
  EXPECT_TRUE(queue.pushed.empty());
}

TEST_F(PipelineTest, ValidationErrorsAre422AndNothingIsStored) {
  auto r = accept(record(R"({"resourceType":"Patient","bad":true,"odd":true})"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::invalid);
  EXPECT_EQ(r.error().issues.size(), 2u);  // the warning travels with the error
  EXPECT_TRUE(store.stored.empty());
  EXPECT_TRUE(queue.pushed.empty());
  EXPECT_EQ(pipeline->counters().rejected, 1u);
}

TEST_F(PipelineTest, MalformedJsonIs400WithPosition) {
  // The value is missing on line 2, column 18 (byte 19): the comma comes where it should be.
  auto r = accept(record("{\n  \"resourceType\":,\"id\":\"x\"}"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::malformed);  // answered 400 at the HTTP edge
  ASSERT_EQ(r.error().issues.size(), 1u);
  EXPECT_NE(r.error().issues[0].diagnostics.find("malformed JSON at 2:18 (byte 19)"), std::string::npos)
      << r.error().issues[0].diagnostics;
  EXPECT_TRUE(store.stored.empty());
}

TEST_F(PipelineTest, MissingResourceTypeIsRefusedBeforeTheEndpointRule) {
  auto rec = record(R"({"id":"x"})");
  bool rule_ran = false;
  rec.rule = [&rule_ran](const rapidjson::Value&) -> std::optional<Failure> {
    rule_ran = true;
    return std::nullopt;
  };
  auto a = accept(std::move(rec));
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().issues[0].location, "resourceType");
  EXPECT_FALSE(rule_ran);
}

TEST_F(PipelineTest, TheEndpointRuleSeesTheParsedRecordAndItsRefusalIsTheAnswer) {
  auto rec = record(R"({"resourceType":"Observation"})");
  std::string seen;
  rec.rule = [&seen](const rapidjson::Value& doc) -> std::optional<Failure> {
    seen = doc["resourceType"].GetString();
    return Failure::permanent(Errc::malformed, Issue{Severity::error, "invariant", "this endpoint takes Patient",
                                                      "resourceType", "endpoint-type"});
  };
  auto r = accept(std::move(rec));
  EXPECT_EQ(seen, "Observation");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::malformed);
  EXPECT_EQ(r.error().issues[0].rule, "endpoint-type");
  EXPECT_TRUE(store.stored.empty());
  EXPECT_TRUE(queue.pushed.empty());
  EXPECT_EQ(pipeline->counters().rejected, 1u);

  auto taken = record(R"({"resourceType":"Patient","odd":true})");
  taken.rule = [](const rapidjson::Value&) -> std::optional<Failure> { return std::nullopt; };
  EXPECT_TRUE(accept(std::move(taken)));
  EXPECT_EQ(store.stored.size(), 1u);
}

TEST_F(PipelineTest, UnroutableIsStoredNotDropped) {
  auto r = accept(record(R"({"resourceType":"Patient","nowhere":true})"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->state, MessageState::unroutable);
  EXPECT_EQ(store.stored.size(), 1u);
  EXPECT_TRUE(queue.pushed.empty());
  EXPECT_EQ(pipeline->counters().unroutable, 1u);
}

TEST_F(PipelineTest, DuplicateIsAnsweredWithTheFirstIdAndNotEnqueued) {
  auto first = accept(record(R"({"resourceType":"Patient"})", "k1"));
  auto second = accept(record(R"({"resourceType":"Patient"})", "k1"));
  ASSERT_TRUE(first && second);
  EXPECT_TRUE(second->duplicate);
  EXPECT_EQ(second->message_id, first->message_id);
  EXPECT_EQ(queue.pushed.size(), 2u);  // only the first one's two destinations
  EXPECT_EQ(pipeline->counters().duplicates, 1u);
}

TEST(IdempotencyKey, HeaderThenMessageHeaderThenBundleId) {
  InboundRecord rec;
  rapidjson::Document msg;
  msg.Parse(R"({"resourceType":"Bundle","id":"b1","type":"message","entry":[{"resource":{"resourceType":"MessageHeader","id":"mh1"}}]})");
  EXPECT_EQ(idempotency_key_for(rec, msg), "message-header:mh1");
  rapidjson::Document tx;
  tx.Parse(R"({"resourceType":"Bundle","id":"b2","type":"transaction"})");
  EXPECT_EQ(idempotency_key_for(rec, tx), "bundle:b2");
  rapidjson::Document pat;
  pat.Parse(R"({"resourceType":"Patient","id":"p1"})");
  EXPECT_EQ(idempotency_key_for(rec, pat), "");
  rec.idempotency_key = "abc";
  EXPECT_EQ(idempotency_key_for(rec, pat), "key:abc");
}

}  // namespace
}  // namespace tellonce
