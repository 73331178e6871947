#include "tellonce/pipeline.hpp"

#include "tellonce/queue.hpp"
#include "tellonce/router.hpp"
#include "tellonce/store.hpp"
#include "tellonce/validator.hpp"

#include "support/fake_store.hpp"
#include "support/run_async.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

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

// Holds the validation of a record carrying "slow" until release(); notes where each record was
// validated and, with the test's own notes, the order things happened in.
class GatedValidator : public Validator {
 public:
  void validate(const rapidjson::Value& r, std::vector<Issue>&) const override {
    char name[16] = {};
    pthread_getname_np(pthread_self(), name, sizeof name);
    std::unique_lock lock(mutex_);
    if (!r.HasMember("slow")) {
      small_thread_ = std::this_thread::get_id();
      return;
    }
    big_thread_name_ = name;
    // Only a guard against hanging when the big record blocks the I/O thread (the bug): the
    // order of events below is what the test checks, not how long anything took.
    if (!released_cv_.wait_for(lock, std::chrono::seconds(10), [&] { return released_; }))
      events_.push_back("big gave up waiting");
    events_.push_back("big validated");
  }
  void note(std::string event) {
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(event));
  }
  void release() {
    {
      std::lock_guard lock(mutex_);
      released_ = true;
    }
    released_cv_.notify_all();
  }
  std::vector<std::string> events() const {
    std::lock_guard lock(mutex_);
    return events_;
  }
  std::thread::id small_thread() const {
    std::lock_guard lock(mutex_);
    return small_thread_;
  }
  std::string big_thread_name() const {
    std::lock_guard lock(mutex_);
    return big_thread_name_;
  }

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable released_cv_;
  bool released_ = false;
  mutable std::vector<std::string> events_;
  mutable std::thread::id small_thread_;
  mutable std::string big_thread_name_;
};

TEST(PipelineHeavyRecords, ASmallRecordIsAnsweredWhileABigOneIsStillBeingValidated) {
  // Issue 7 item 3: one partner's costly record must not hold everyone else's on its I/O thread.
  GatedValidator validator;
  FakeRouter router;
  test::FakeStore store;
  FakeQueue queue;
  auto pipeline = make_pipeline(validator, router, store, queue, JsonLimits{1 << 20, 16},
                                HeavyRecords{/*min_body_bytes=*/1024, /*threads=*/1});
  InboundRecord big;
  big.source = "rtx";
  big.channel = "http";
  big.body = R"({"resourceType":"Patient","slow":true,"pad":")" + std::string(2000, 'x') + "\"}";
  InboundRecord small = big;
  small.body = R"({"resourceType":"Patient"})";

  asio::io_context io;  // one I/O thread: this test's
  int answered = 0;
  asio::co_spawn(io, pipeline->accept(std::move(big)), [&](std::exception_ptr e, Result<Accepted> r) {
    validator.note(!e && r ? "big answered" : "big failed");
    ++answered;
  });
  asio::co_spawn(io, pipeline->accept(std::move(small)), [&](std::exception_ptr e, Result<Accepted> r) {
    validator.note(!e && r ? "small answered" : "small failed");
    ++answered;
    validator.release();  // only now may the big one finish
  });
  io.run();  // returns once both are answered: the pool holds work on io while validating

  ASSERT_EQ(answered, 2);
  auto events = validator.events();
  EXPECT_EQ(events, (std::vector<std::string>{"small answered", "big validated", "big answered"}));
  EXPECT_EQ(validator.small_thread(), std::this_thread::get_id()) << "a small record stays inline";
  EXPECT_EQ(validator.big_thread_name(), "validate");
  EXPECT_EQ(store.stored.size(), 2u);
}

TEST(PipelineHeavyRecords, ABigRecordRejectedOnThePoolIsAnsweredWithItsIssues) {
  FakeValidator validator;
  FakeRouter router;
  test::FakeStore store;
  FakeQueue queue;
  auto pipeline = make_pipeline(validator, router, store, queue, JsonLimits{1 << 20, 16},
                                HeavyRecords{/*min_body_bytes=*/64, /*threads=*/2});
  InboundRecord bad;
  bad.source = "rtx";
  bad.channel = "http";
  bad.body = R"({"resourceType":"Patient","bad":true,"pad":")" + std::string(100, 'x') + "\"}";
  InboundRecord broken = bad;
  broken.body = R"({"resourceType":"Patient","pad":")" + std::string(100, 'x') + "\",}";
  auto r = test::run_async(pipeline->accept(std::move(bad)));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::invalid);
  ASSERT_EQ(r.error().issues.size(), 1u);
  EXPECT_EQ(r.error().issues[0].location, "Patient.bad");
  auto b = test::run_async(pipeline->accept(std::move(broken)));
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code, Errc::malformed);
  EXPECT_TRUE(store.stored.empty());
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
