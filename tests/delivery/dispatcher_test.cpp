#include "broker/delivery/delivery.hpp"
#include "engines/memory_queue/memory_queue.hpp"
#include "tellonce/validator.hpp"

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
#include <map>
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
    s.retry.keep_trying_for = std::chrono::milliseconds(150);
    s.retry.initial_backoff = std::chrono::milliseconds(10);
    s.retry.max_backoff = std::chrono::milliseconds(40);
    s.retry.jitter = 0.0;
    return s;
  }

  void start(std::map<std::string, std::shared_ptr<OutboundAdapter>> adapters, DeliverySettings s) {
    dispatcher = std::make_unique<Dispatcher>(io, failing_store, *queue, s, std::move(adapters));
    dispatcher->start();
  }

  // The memory queue's push completes at once; after stop() it fails, which some tests expect.
  Result<void> push(DeliveryJob j) { return test::run_async(queue->push(std::move(j))); }

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
  (void)push(test::job(1, "trust-a"));
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

// A mailbox answers "held": recorded as held, settled for the queue, so the same patient's next
// record follows at once (it would wait forever behind a job left in flight).
TEST_F(DispatcherTest, HeldIsRecordedAndReleasesThePatientsNextRecord) {
  auto mailbox = std::make_shared<test::RecordingOutbound>([](int) {
    return DeliveryResult{DeliveryOutcome::held, "mailbox", "placed in the mailbox", false};
  });
  start({{"carers", mailbox}}, settings());
  for (int seq = 1; seq <= 3; ++seq) (void)push(test::job(seq, "carers"));  // one patient
  run_until([&] { return store.attempts.size() == 3; });

  ASSERT_EQ(mailbox->received.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(mailbox->received[i].seq, i + 1);
    const auto& a = store.attempts[i];
    EXPECT_EQ(a.outcome, DeliveryOutcome::held);
    EXPECT_TRUE(a.held());
    EXPECT_FALSE(a.dead);
    EXPECT_EQ(a.attempt, 1);
    EXPECT_EQ(a.next_attempt_ms, 0);
    EXPECT_EQ(a.partner_code, "mailbox");
  }
  run_until([&] { return dispatcher->stats("carers").delivered == 3; });
  EXPECT_EQ(dispatcher->stats("carers").failed_attempts, 0u);
  EXPECT_EQ(queue->stats("carers").in_flight, 0u);
}

TEST_F(DispatcherTest, PermanentRejectionIsDeadAtOnce) {
  auto partner = std::make_shared<test::RecordingOutbound>([](int) { return test::refused(); });
  start({{"trust-a", partner}}, settings());
  (void)push(test::job(1, "trust-a"));
  run_until([&] { return dispatcher->stats("trust-a").dead == 1; });

  ASSERT_EQ(store.attempts.size(), 1u);
  EXPECT_TRUE(store.attempts[0].dead);
  EXPECT_EQ(store.attempts[0].outcome, DeliveryOutcome::permanent);
  EXPECT_EQ(store.attempts[0].partner_code, "HTTP 400");
  EXPECT_EQ(store.attempts[0].detail, "Patient.identifier missing");
  EXPECT_EQ(partner->calls, 1);
}

TEST_F(DispatcherTest, GivesUpOnceKeepTryingForHasPassed) {
  auto partner = std::make_shared<test::RecordingOutbound>([](int) { return test::unavailable(); });
  start({{"trust-a", partner}}, settings());
  (void)push(test::job(1, "trust-a"));
  run_until([&] { return dispatcher->stats("trust-a").dead == 1; });

  ASSERT_GE(store.attempts.size(), 3u);  // 10, 20, 40, 40... ms apart: several attempts in 150 ms
  const auto& first = store.attempts.front();
  const auto& last = store.attempts.back();
  EXPECT_TRUE(last.dead);
  EXPECT_GE(last.at_ms - first.at_ms, 150);
  for (std::size_t i = 0; i + 1 < store.attempts.size(); ++i) {
    EXPECT_FALSE(store.attempts[i].dead);
    EXPECT_LT(store.attempts[i].at_ms - first.at_ms, 150);
  }
  EXPECT_EQ(dispatcher->stats("trust-a").failed_attempts, store.attempts.size());
}

TEST_F(DispatcherTest, DownPartnerDoesNotDelayAnother) {
  auto down = std::make_shared<HangingAdapter>();
  auto up = std::make_shared<test::RecordingOutbound>([](int) { return test::delivered(); });
  start({{"trust-down", down}, {"gp-up", up}}, settings());
  for (int i = 1; i <= 5; ++i) {
    auto a = test::job(i, "trust-down");
    a.patient_key = "p" + std::to_string(i);
    (void)push(a);
    auto b = test::job(100 + i, "gp-up");
    b.patient_key = "p" + std::to_string(i);
    (void)push(b);
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
  (void)push(test::job(1, "trust-a"));
  (void)push(test::job(2, "trust-a"));  // same patient
  run_until([&] { return dispatcher->stats("trust-a").delivered == 2; });
  EXPECT_EQ(order, (std::vector<std::string>{"m1", "m1", "m2"}));
}

TEST_F(DispatcherTest, StoreOutageKeepsJobPending) {
  failing_store.fail_next(test::FailingStore::FailOn::record_attempt);
  auto partner = std::make_shared<test::RecordingOutbound>([](int) { return test::delivered(); });
  start({{"trust-a", partner}}, settings());
  (void)push(test::job(1, "trust-a"));
  run_until([&] { return dispatcher->stats("trust-a").delivered == 1; });

  EXPECT_EQ(partner->calls, 2);  // delivered again because the first outcome was not recorded
  ASSERT_EQ(store.attempts.size(), 1u);
  EXPECT_TRUE(store.attempts[0].ok());
  EXPECT_EQ(store.attempts[0].attempt, 1);
}

// A partner that is down while `down` is set; counts the calls made meanwhile.
class SwitchableAdapter : public OutboundAdapter {
 public:
  bool down = true;
  int calls_while_down = 0;
  std::vector<std::string> delivered;
  asio::awaitable<DeliveryResult> deliver(const DeliveryJob& job) override {
    if (down) {
      ++calls_while_down;
      co_return test::unavailable();
    }
    delivered.push_back(job.message_id);
    co_return test::delivered();
  }
  std::string describe() const override { return "switchable"; }
};

std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

TEST_F(DispatcherTest, OpenCircuitSendsOnlyProbesThenDrainsInOrder) {
  auto s = settings();
  s.retry.keep_trying_for = std::chrono::hours(1);
  auto partner = std::make_shared<SwitchableAdapter>();
  ::testing::internal::CaptureStderr();
  start({{"trust-a", partner}}, s);
  constexpr int records = 60;
  for (int i = 1; i <= records; ++i) (void)push(test::job(i, "trust-a", "p" + std::to_string(i % 7)));
  // Down for 120 ms: probes 10, 20, 40, 40 ms apart; without the circuit the workers would
  // have tried every record (several times) by then.
  const auto up_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(120);
  run_until([&] { return std::chrono::steady_clock::now() >= up_at; });
  EXPECT_NE(dispatcher->stats("trust-a").circuit, Circuit::State::closed);
  const int calls_while_down = partner->calls_while_down;
  partner->down = false;
  run_until([&] { return dispatcher->stats("trust-a").delivered == static_cast<std::uint64_t>(records); });
  const std::string log = ::testing::internal::GetCapturedStderr();

  const std::size_t probes = count_of(log, "circuit probing destination=trust-a");
  // Only the two in flight when it opened, then one probe at a time (the last probe found it up).
  EXPECT_GE(calls_while_down, 2);
  EXPECT_LE(static_cast<std::size_t>(calls_while_down), 2 + probes);
  EXPECT_LT(calls_while_down, records / 3);
  EXPECT_EQ(dispatcher->stats("trust-a").circuit, Circuit::State::closed);
  EXPECT_EQ(dispatcher->stats("trust-a").dead, 0u);
  ASSERT_EQ(partner->delivered.size(), static_cast<std::size_t>(records));
  std::map<std::string, int> last_per_patient;
  for (const auto& id : partner->delivered) {
    const int seq = std::stoi(id.substr(1));
    auto& last = last_per_patient["p" + std::to_string(seq % 7)];
    EXPECT_GT(seq, last) << id << " arrived after a later record of its patient";
    last = seq;
  }
  // One log line per change of the circuit, none per held record.
  const std::size_t lines = count_of(log, "destination=trust-a");
  EXPECT_GE(lines, 2u) << log;                // at least: opened, closed
  EXPECT_LE(lines, 2u + 2u * probes) << log;  // plus probing / probe failed per probe
  EXPECT_EQ(count_of(log, "circuit open destination=trust-a"), 1 + (probes - 1)) << log;
  EXPECT_EQ(count_of(log, "circuit closed destination=trust-a"), 1u) << log;
}

TEST_F(DispatcherTest, BrokerFaultIsNotThePartnersFailure) {
  auto s = settings();
  s.concurrency_per_destination = 1;
  auto partner = std::make_shared<test::RecordingOutbound>([](int call) {
    if (call > 0) return test::delivered();
    DeliveryResult r{DeliveryOutcome::retryable, "", "broker: out of file descriptors (Too many open files)"};
    r.broker_fault = true;
    return r;
  });
  start({{"trust-a", partner}}, s);
  (void)push(test::job(1, "trust-a"));
  run_until([&] { return dispatcher->stats("trust-a").delivered == 1; });

  EXPECT_EQ(partner->calls, 2);
  ASSERT_EQ(store.attempts.size(), 1u);  // the fault is not on the trail
  EXPECT_TRUE(store.attempts[0].ok());
  EXPECT_EQ(store.attempts[0].attempt, 1);
  auto st = dispatcher->stats("trust-a");
  EXPECT_EQ(st.broker_faults, 1u);
  EXPECT_EQ(st.failed_attempts, 0u);
  EXPECT_EQ(st.dead, 0u);
  EXPECT_EQ(st.circuit, Circuit::State::closed);
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
  EXPECT_FALSE(push(test::job(1, "trust-a")));  // the queue is stopped
  test::run_ready(io);
  EXPECT_EQ(partner->calls, 0);
}

// A destination with an allow-list: its adapter gets the minimised record, the trail's attempt
// says how much was removed, and the stored body (the job's) is left as it was. Another
// destination gets the same record untouched.
TEST_F(DispatcherTest, MinimisedDestinationGetsTheMinimisedBodyAndTheTrailCountsTheRemovals) {
  Config config;
  config.minimisation.push_back(MinimisationList{"names-only", {{"Patient.name", "minimisation[0].allow[0]", 2}}, 1});
  auto compiled = compile_minimisation(config, std::filesystem::path(TELLONCE_SOURCE_DIR) / "schemas");
  ASSERT_TRUE(compiled.problems.empty());
  auto validator = make_fhir_validator(ValidatorSettings{std::filesystem::path(TELLONCE_SOURCE_DIR) / "schemas"});
  auto minimiser = std::make_shared<Minimiser>(compiled.lists.at("names-only"),
                                               std::map<std::string, std::shared_ptr<const AllowList>>{}, *validator, store);
  auto charity = std::make_shared<test::RecordingOutbound>();
  auto trust = std::make_shared<test::RecordingOutbound>();
  dispatcher = std::make_unique<Dispatcher>(io, failing_store, *queue, settings(),
                                            std::map<std::string, std::shared_ptr<OutboundAdapter>>{{"charity", charity}, {"trust-a", trust}},
                                            std::map<std::string, std::shared_ptr<const Minimiser>>{{"charity", minimiser}});
  dispatcher->start();
  const std::string body = R"({"resourceType":"Patient","name":[{"family":"Example"}],"birthDate":"1980-04-12",)"
                           R"("gender":"female","telecom":[{"system":"phone","value":"1"},{"system":"email","value":"a@b"}]})";
  auto to_charity = test::job(1, "charity");
  to_charity.body = body;
  auto to_trust = test::job(2, "trust-a");
  to_trust.body = body;
  (void)push(to_charity);
  (void)push(to_trust);
  run_until([&] { return store.attempts.size() == 2; });

  ASSERT_EQ(charity->received.size(), 1u);
  EXPECT_EQ(charity->received[0].body, R"({"resourceType":"Patient","name":[{"family":"Example"}]})");
  ASSERT_EQ(trust->received.size(), 1u);
  EXPECT_EQ(trust->received[0].body, body);
  for (const auto& a : store.attempts) {
    if (a.destination == "charity") EXPECT_EQ(a.detail, "minimised by allow-list names-only: 4 elements removed");
    else EXPECT_EQ(a.detail, "");
    EXPECT_TRUE(a.ok());
  }
}

// A mailbox with an allow-list: the held attempt carries the minimised body, which the partner
// collects later; one without keeps the stored body (held_body empty).
TEST_F(DispatcherTest, AMinimisedHeldDeliveryKeepsTheMinimisedBodyForItsMailbox) {
  Config config;
  config.minimisation.push_back(MinimisationList{"names-only", {{"Patient.name", "minimisation[0].allow[0]", 2}}, 1});
  auto compiled = compile_minimisation(config, std::filesystem::path(TELLONCE_SOURCE_DIR) / "schemas");
  ASSERT_TRUE(compiled.problems.empty());
  auto validator = make_fhir_validator(ValidatorSettings{std::filesystem::path(TELLONCE_SOURCE_DIR) / "schemas"});
  auto minimiser = std::make_shared<Minimiser>(compiled.lists.at("names-only"),
                                               std::map<std::string, std::shared_ptr<const AllowList>>{}, *validator, store);
  auto hold = [](int) { return DeliveryResult{DeliveryOutcome::held, "mailbox", "placed in the mailbox", false}; };
  auto carers = std::make_shared<test::RecordingOutbound>(hold);
  auto pantry = std::make_shared<test::RecordingOutbound>(hold);
  dispatcher = std::make_unique<Dispatcher>(io, failing_store, *queue, settings(),
                                            std::map<std::string, std::shared_ptr<OutboundAdapter>>{{"carers", carers}, {"pantry", pantry}},
                                            std::map<std::string, std::shared_ptr<const Minimiser>>{{"carers", minimiser}});
  dispatcher->start();
  const std::string body = R"({"resourceType":"Patient","name":[{"family":"Example"}],"birthDate":"1980-04-12"})";
  auto to_carers = test::job(1, "carers");
  to_carers.body = body;
  auto to_pantry = test::job(2, "pantry");
  to_pantry.body = body;
  (void)push(to_carers);
  (void)push(to_pantry);
  run_until([&] { return store.attempts.size() == 2; });

  for (const auto& a : store.attempts) {
    EXPECT_TRUE(a.held());
    if (a.destination == "carers") EXPECT_EQ(a.held_body, R"({"resourceType":"Patient","name":[{"family":"Example"}]})");
    else EXPECT_EQ(a.held_body, "");
  }
}

// A record the list keeps nothing of is never handed to the adapter: dead at once, reason on the trail.
TEST_F(DispatcherTest, RecordAnAllowListRefusesIsNeverSent) {
  Config config;
  config.minimisation.push_back(MinimisationList{"names-only", {{"Patient.name", "minimisation[0].allow[0]", 2}}, 1});
  auto compiled = compile_minimisation(config, std::filesystem::path(TELLONCE_SOURCE_DIR) / "schemas");
  auto validator = make_fhir_validator(ValidatorSettings{std::filesystem::path(TELLONCE_SOURCE_DIR) / "schemas"});
  auto minimiser = std::make_shared<Minimiser>(compiled.lists.at("names-only"),
                                               std::map<std::string, std::shared_ptr<const AllowList>>{}, *validator, store);
  auto charity = std::make_shared<test::RecordingOutbound>();
  dispatcher = std::make_unique<Dispatcher>(io, failing_store, *queue, settings(),
                                            std::map<std::string, std::shared_ptr<OutboundAdapter>>{{"charity", charity}},
                                            std::map<std::string, std::shared_ptr<const Minimiser>>{{"charity", minimiser}});
  dispatcher->start();
  auto j = test::job(1, "charity");
  j.body = R"({"resourceType":"Condition","subject":{"reference":"Patient/1"}})";
  (void)push(j);
  run_until([&] { return dispatcher->stats("charity").dead == 1; });
  EXPECT_EQ(charity->calls, 0);
  ASSERT_EQ(store.attempts.size(), 1u);
  EXPECT_EQ(store.attempts[0].outcome, DeliveryOutcome::permanent);
  EXPECT_EQ(store.attempts[0].partner_code, kNotSent);  // the partner was never asked
  EXPECT_EQ(store.attempts[0].detail, "allow-list names-only keeps nothing of a Condition");
}

}  // namespace
}  // namespace tellonce
