#include "delivery/delivery.hpp"

#include "support/null_store.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <mutex>

namespace tellonce {
namespace {

Failure store_down() { return Failure::retryable(Errc::unavailable, Issue{Severity::error, "transient", "store down", "", ""}); }

// Records attempts in memory; can refuse the next few writes to act as a store outage.
class FakeStore : public testing::NullStore {
 public:
  std::vector<DeliveryAttempt> attempts;
  int refuse_next_writes = 0;

  asio::awaitable<Result<Committed>> commit(NewMessage) override { co_return store_down(); }
  asio::awaitable<Result<void>> record_attempt(DeliveryAttempt attempt) override {
    if (refuse_next_writes > 0) {
      --refuse_next_writes;
      co_return store_down();
    }
    attempts.push_back(std::move(attempt));
    co_return Result<void>{};
  }

  std::vector<DeliveryAttempt> for_destination(const std::string& d) const {
    std::vector<DeliveryAttempt> out;
    for (const auto& a : attempts)
      if (a.destination == d) out.push_back(a);
    return out;
  }
};

// Answers each delivery with whatever the script says for that call number (0-based).
class ScriptedAdapter : public OutboundAdapter {
 public:
  explicit ScriptedAdapter(std::function<DeliveryResult(int)> script) : script_(std::move(script)) {}
  int calls = 0;
  asio::awaitable<DeliveryResult> deliver(const DeliveryJob&) override { co_return script_(calls++); }
  std::string describe() const override { return "scripted"; }

 private:
  std::function<DeliveryResult(int)> script_;
};

// A partner that accepts the connection and never answers.
class HangingAdapter : public OutboundAdapter {
 public:
  int calls = 0;
  asio::awaitable<DeliveryResult> deliver(const DeliveryJob&) override {
    ++calls;
    asio::steady_timer never(co_await asio::this_coro::executor, std::chrono::hours(1));
    co_await never.async_wait(asio::use_awaitable);
    co_return DeliveryResult{};
  }
  std::string describe() const override { return "hanging"; }
};

DeliveryResult ok() { return {DeliveryOutcome::ok, "HTTP 200", ""}; }
DeliveryResult unavailable() { return {DeliveryOutcome::retryable, "HTTP 503", "down for maintenance"}; }
DeliveryResult rejected() { return {DeliveryOutcome::permanent, "HTTP 400", "Patient.identifier missing"}; }

DeliveryJob job(std::int64_t seq, std::string destination) {
  DeliveryJob j;
  j.delivery_id = seq;
  j.seq = seq;
  j.message_id = "m" + std::to_string(seq);
  j.destination = std::move(destination);
  j.patient_key = "9000000009";
  j.resource_type = "Patient";
  j.body = R"({"resourceType":"Patient"})";
  return j;
}

class DispatcherTest : public ::testing::Test {
 protected:
  asio::io_context io;
  FakeStore store;
  std::unique_ptr<Queue> queue = make_memory_queue(io.get_executor());
  std::unique_ptr<Dispatcher> dispatcher;

  DeliverySettings settings() {
    DeliverySettings s;
    s.concurrency_per_destination = 2;
    s.retry.max_attempts = 4;
    s.retry.initial_backoff = std::chrono::milliseconds(10);
    s.retry.max_backoff = std::chrono::milliseconds(40);
    s.retry.jitter = 0.0;
    return s;
  }

  void start(std::map<std::string, std::shared_ptr<OutboundAdapter>> adapters, DeliverySettings s) {
    dispatcher = std::make_unique<Dispatcher>(io, store, *queue, s, std::move(adapters));
    dispatcher->start();
  }

  // Bounded, so a bug fails the test instead of hanging it.
  void run_until(const std::function<bool()>& done) {
    auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done() && std::chrono::steady_clock::now() < limit) {
      io.restart();
      io.run_one_for(std::chrono::milliseconds(20));
    }
  }

  void TearDown() override {
    if (dispatcher) dispatcher->stop();
    io.restart();
    io.poll();
  }
};

TEST_F(DispatcherTest, DownThenUpRetriesThenDelivers) {
  auto partner = std::make_shared<ScriptedAdapter>([](int call) { return call < 2 ? unavailable() : ok(); });
  start({{"trust-a", partner}}, settings());
  queue->push(job(1, "trust-a"));
  run_until([&] { return dispatcher->stats("trust-a").delivered == 1; });

  ASSERT_EQ(store.attempts.size(), 3u);
  for (int i = 0; i < 2; ++i) {
    const auto& a = store.attempts[i];
    EXPECT_EQ(a.attempt, i + 1);
    EXPECT_FALSE(a.ok());
    EXPECT_EQ(a.outcome, DeliveryOutcome::retryable);
    EXPECT_FALSE(a.dead);
    EXPECT_EQ(a.partner_code, "HTTP 503");
    EXPECT_GT(a.next_attempt_ms, a.at_ms);
    EXPECT_EQ(a.message_id, "m1");
  }
  EXPECT_TRUE(store.attempts[2].ok());
  EXPECT_EQ(store.attempts[2].attempt, 3);
  EXPECT_EQ(store.attempts[2].next_attempt_ms, 0);
  auto st = dispatcher->stats("trust-a");
  EXPECT_EQ(st.failed_attempts, 2u);
  EXPECT_EQ(st.dead, 0u);
}

TEST_F(DispatcherTest, PermanentRejectionIsDeadAtOnce) {
  auto partner = std::make_shared<ScriptedAdapter>([](int) { return rejected(); });
  start({{"trust-a", partner}}, settings());
  queue->push(job(1, "trust-a"));
  run_until([&] { return dispatcher->stats("trust-a").dead == 1; });

  ASSERT_EQ(store.attempts.size(), 1u);
  EXPECT_TRUE(store.attempts[0].dead);
  EXPECT_EQ(store.attempts[0].outcome, DeliveryOutcome::permanent);
  EXPECT_EQ(store.attempts[0].partner_code, "HTTP 400");
  EXPECT_EQ(store.attempts[0].detail, "Patient.identifier missing");
  EXPECT_EQ(partner->calls, 1);
}

TEST_F(DispatcherTest, GivesUpAfterMaxAttempts) {
  auto partner = std::make_shared<ScriptedAdapter>([](int) { return unavailable(); });
  start({{"trust-a", partner}}, settings());
  queue->push(job(1, "trust-a"));
  run_until([&] { return dispatcher->stats("trust-a").dead == 1; });

  ASSERT_EQ(store.attempts.size(), 4u);
  EXPECT_TRUE(store.attempts.back().dead);
  EXPECT_EQ(store.attempts.back().attempt, 4);
  EXPECT_EQ(dispatcher->stats("trust-a").failed_attempts, 4u);
}

TEST_F(DispatcherTest, DownPartnerDoesNotDelayAnother) {
  auto down = std::make_shared<HangingAdapter>();
  auto up = std::make_shared<ScriptedAdapter>([](int) { return ok(); });
  start({{"trust-down", down}, {"gp-up", up}}, settings());
  for (int i = 1; i <= 5; ++i) {
    auto a = job(i, "trust-down");
    a.patient_key = "p" + std::to_string(i);
    queue->push(a);
    auto b = job(100 + i, "gp-up");
    b.patient_key = "p" + std::to_string(i);
    queue->push(b);
  }
  run_until([&] { return dispatcher->stats("gp-up").delivered == 5; });

  EXPECT_EQ(dispatcher->stats("gp-up").delivered, 5u);
  EXPECT_EQ(down->calls, 2);  // both of its workers are stuck on the unresponsive partner
  EXPECT_EQ(dispatcher->stats("trust-down").delivered, 0u);
  EXPECT_EQ(queue->stats("trust-down").in_flight, 2u);
  EXPECT_EQ(queue->stats("trust-down").ready, 3u);
  for (const auto& a : store.for_destination("gp-up")) EXPECT_TRUE(a.ok());
}

TEST_F(DispatcherTest, PatientsLaterRecordWaitsForTheRetriedOne) {
  std::vector<std::string> order;
  class Recording : public OutboundAdapter {
   public:
    explicit Recording(std::vector<std::string>& order) : order_(order) {}
    asio::awaitable<DeliveryResult> deliver(const DeliveryJob& job) override {
      order_.push_back(job.message_id);
      co_return order_.size() == 1 ? unavailable() : ok();  // the first attempt of m1 fails
    }
    std::string describe() const override { return "recording"; }

   private:
    std::vector<std::string>& order_;
  };
  start({{"trust-a", std::make_shared<Recording>(order)}}, settings());
  queue->push(job(1, "trust-a"));
  queue->push(job(2, "trust-a"));  // same patient
  run_until([&] { return dispatcher->stats("trust-a").delivered == 2; });
  EXPECT_EQ(order, (std::vector<std::string>{"m1", "m1", "m2"}));
}

TEST_F(DispatcherTest, StoreOutageKeepsJobPending) {
  store.refuse_next_writes = 1;
  auto partner = std::make_shared<ScriptedAdapter>([](int) { return ok(); });
  start({{"trust-a", partner}}, settings());
  queue->push(job(1, "trust-a"));
  run_until([&] { return dispatcher->stats("trust-a").delivered == 1; });

  EXPECT_EQ(partner->calls, 2);  // delivered again because the first outcome was not recorded
  ASSERT_EQ(store.attempts.size(), 1u);
  EXPECT_TRUE(store.attempts[0].ok());
  EXPECT_EQ(store.attempts[0].attempt, 1);
}

TEST_F(DispatcherTest, StopEndsWorkers) {
  auto partner = std::make_shared<ScriptedAdapter>([](int) { return ok(); });
  start({{"trust-a", partner}}, settings());
  io.restart();
  io.poll();
  dispatcher->stop();
  queue->push(job(1, "trust-a"));
  io.restart();
  io.poll();
  EXPECT_EQ(partner->calls, 0);
  EXPECT_EQ(queue->stats("trust-a").in_flight, 0u);
}

}  // namespace
}  // namespace tellonce
