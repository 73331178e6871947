#include "delivery/delivery.hpp"

#include "support/builders.hpp"
#include "support/fake_store.hpp"
#include "support/recording_outbound.hpp"
#include "support/run_async.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <mutex>

namespace tellonce {
namespace {

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

class DispatcherTest : public ::testing::Test {
 protected:
  asio::io_context io;
  test::FakeStore store;
  test::FailingStore failing_store{store};  // what the dispatcher writes to
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
    dispatcher = std::make_unique<Dispatcher>(io, failing_store, *queue, s, std::move(adapters));
    dispatcher->start();
  }

  // Bounded, so a bug fails the test instead of hanging it.
  void run_until(const std::function<bool()>& done) { test::run_until(io, done); }

  void TearDown() override {
    if (dispatcher) dispatcher->stop();
    io.restart();
    io.poll();
  }
};

TEST_F(DispatcherTest, DownThenUpRetriesThenDelivers) {
  auto partner = std::make_shared<test::RecordingOutbound>([](int call) { return call < 2 ? test::unavailable() : test::delivered(); });
  start({{"trust-a", partner}}, settings());
  queue->push(test::job(1, "trust-a"));
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
  auto partner = std::make_shared<test::RecordingOutbound>([](int) { return test::refused(); });
  start({{"trust-a", partner}}, settings());
  queue->push(test::job(1, "trust-a"));
  run_until([&] { return dispatcher->stats("trust-a").dead == 1; });

  ASSERT_EQ(store.attempts.size(), 1u);
  EXPECT_TRUE(store.attempts[0].dead);
  EXPECT_EQ(store.attempts[0].outcome, DeliveryOutcome::permanent);
  EXPECT_EQ(store.attempts[0].partner_code, "HTTP 400");
  EXPECT_EQ(store.attempts[0].detail, "Patient.identifier missing");
  EXPECT_EQ(partner->calls, 1);
}

TEST_F(DispatcherTest, GivesUpAfterMaxAttempts) {
  auto partner = std::make_shared<test::RecordingOutbound>([](int) { return test::unavailable(); });
  start({{"trust-a", partner}}, settings());
  queue->push(test::job(1, "trust-a"));
  run_until([&] { return dispatcher->stats("trust-a").dead == 1; });

  ASSERT_EQ(store.attempts.size(), 4u);
  EXPECT_TRUE(store.attempts.back().dead);
  EXPECT_EQ(store.attempts.back().attempt, 4);
  EXPECT_EQ(dispatcher->stats("trust-a").failed_attempts, 4u);
}

TEST_F(DispatcherTest, DownPartnerDoesNotDelayAnother) {
  auto down = std::make_shared<HangingAdapter>();
  auto up = std::make_shared<test::RecordingOutbound>([](int) { return test::delivered(); });
  start({{"trust-down", down}, {"gp-up", up}}, settings());
  for (int i = 1; i <= 5; ++i) {
    auto a = test::job(i, "trust-down");
    a.patient_key = "p" + std::to_string(i);
    queue->push(a);
    auto b = test::job(100 + i, "gp-up");
    b.patient_key = "p" + std::to_string(i);
    queue->push(b);
  }
  run_until([&] { return dispatcher->stats("gp-up").delivered == 5; });

  EXPECT_EQ(dispatcher->stats("gp-up").delivered, 5u);
  EXPECT_EQ(down->calls, 2);  // both of its workers are stuck on the unresponsive partner
  EXPECT_EQ(dispatcher->stats("trust-down").delivered, 0u);
  EXPECT_EQ(queue->stats("trust-down").in_flight, 2u);
  EXPECT_EQ(queue->stats("trust-down").ready, 3u);
  for (const auto& a : store.attempts_for("gp-up")) EXPECT_TRUE(a.ok());
}

TEST_F(DispatcherTest, PatientsLaterRecordWaitsForTheRetriedOne) {
  std::vector<std::string> order;
  class Recording : public OutboundAdapter {
   public:
    explicit Recording(std::vector<std::string>& order) : order_(order) {}
    asio::awaitable<DeliveryResult> deliver(const DeliveryJob& job) override {
      order_.push_back(job.message_id);
      co_return order_.size() == 1 ? test::unavailable() : test::delivered();  // the first attempt of m1 fails
    }
    std::string describe() const override { return "recording"; }

   private:
    std::vector<std::string>& order_;
  };
  start({{"trust-a", std::make_shared<Recording>(order)}}, settings());
  queue->push(test::job(1, "trust-a"));
  queue->push(test::job(2, "trust-a"));  // same patient
  run_until([&] { return dispatcher->stats("trust-a").delivered == 2; });
  EXPECT_EQ(order, (std::vector<std::string>{"m1", "m1", "m2"}));
}

TEST_F(DispatcherTest, StoreOutageKeepsJobPending) {
  failing_store.fail_next(test::FailingStore::FailOn::record_attempt);
  auto partner = std::make_shared<test::RecordingOutbound>([](int) { return test::delivered(); });
  start({{"trust-a", partner}}, settings());
  queue->push(test::job(1, "trust-a"));
  run_until([&] { return dispatcher->stats("trust-a").delivered == 1; });

  EXPECT_EQ(partner->calls, 2);  // delivered again because the first outcome was not recorded
  ASSERT_EQ(store.attempts.size(), 1u);
  EXPECT_TRUE(store.attempts[0].ok());
  EXPECT_EQ(store.attempts[0].attempt, 1);
}

TEST_F(DispatcherTest, StopEndsWorkers) {
  auto partner = std::make_shared<test::RecordingOutbound>();
  start({{"trust-a", partner}}, settings());
  test::run_ready(io);
  // Each worker coroutine holds the adapter while it runs: two workers, two references.
  const long with_workers = partner.use_count();
  dispatcher->stop();
  test::run_ready(io);
  EXPECT_EQ(partner.use_count(), with_workers - settings().concurrency_per_destination)
      << "every worker coroutine has ended and released the adapter";
  EXPECT_TRUE(partner->stopped);
  queue->push(test::job(1, "trust-a"));
  test::run_ready(io);
  EXPECT_EQ(partner->calls, 0);
}

}  // namespace
}  // namespace tellonce
