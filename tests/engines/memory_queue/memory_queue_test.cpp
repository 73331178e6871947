#include "engines/memory_queue/memory_queue.hpp"

#include "support/builders.hpp"
#include "support/run_async.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <map>

namespace tellonce {
namespace {

// Queue tests name the patient first: it is what ordering is about.
DeliveryJob job(std::int64_t seq, std::string patient, std::string destination = "trust-a") {
  return test::job(seq, std::move(destination), std::move(patient));
}

// Runs one of the queue's awaitables to completion on an io_context of its own (the memory
// queue's push and settle complete without suspending).
template <class T>
T run_now(asio::awaitable<T> op) {
  static thread_local asio::io_context ctx;
  ctx.restart();
  std::optional<T> out;
  asio::co_spawn(ctx, std::move(op), [&](std::exception_ptr e, T value) {
    if (e) std::rethrow_exception(e);
    out.emplace(std::move(value));
  });
  ctx.run();
  return std::move(*out);
}

void push(Queue& q, DeliveryJob j) { ASSERT_TRUE(run_now(q.push(std::move(j)))); }

// A next() call running on the test's io_context; `result` is set once it completes.
struct Take {
  bool done = false;
  std::optional<DeliveryJob> result;
};

asio::awaitable<void> take_into(Queue& q, std::string destination, std::shared_ptr<Take> t) {
  t->result = co_await q.next(std::move(destination));
  t->done = true;
}

class QueueTest : public ::testing::Test {
 protected:
  asio::io_context io;
  std::unique_ptr<Queue> queue = make_memory_queue(io.get_executor());

  std::shared_ptr<Take> start_take(std::string destination = "trust-a") {
    auto t = std::make_shared<Take>();
    auto rethrow = [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);
    };
    asio::co_spawn(io, take_into(*queue, std::move(destination), t), rethrow);
    drain();
    return t;
  }

  void drain() { test::run_ready(io); }

  // Runs the io_context until the take completes (bounded so a bug fails instead of hanging).
  void run_until_done(const Take& t) { test::run_until(io, [&] { return t.done; }); }

  std::int64_t take_seq(std::string destination = "trust-a") {
    auto t = start_take(std::move(destination));
    EXPECT_TRUE(t->done);
    if (!t->done || !t->result) return -1;
    return t->result->seq;
  }

  void settle(std::int64_t seq, std::string patient, Settlement::Kind kind, std::int64_t retry_at = 0) {
    auto j = job(seq, std::move(patient));
    ASSERT_TRUE(run_now(queue->settle(j, Settlement{kind, retry_at})));
    drain();
  }
};

TEST_F(QueueTest, HandsOutJobsInSeqOrder) {
  push(*queue, job(3, ""));
  push(*queue, job(1, ""));
  push(*queue, job(2, ""));
  EXPECT_EQ(take_seq(), 1);
  EXPECT_EQ(take_seq(), 2);
  EXPECT_EQ(take_seq(), 3);
  EXPECT_EQ(queue->stats("trust-a").in_flight, 3u);
}

TEST_F(QueueTest, WaiterResumesWhenAJobIsPushed) {
  auto t = start_take();
  EXPECT_FALSE(t->done);
  push(*queue, job(7, ""));
  drain();
  ASSERT_TRUE(t->done);
  ASSERT_TRUE(t->result);
  EXPECT_EQ(t->result->seq, 7);
}

TEST_F(QueueTest, DestinationsAreIndependent) {
  auto other = start_take("gp-b");
  push(*queue, job(1, "p1", "trust-a"));
  drain();
  EXPECT_FALSE(other->done);
  EXPECT_EQ(take_seq("trust-a"), 1);
  push(*queue, job(2, "p1", "gp-b"));  // same patient elsewhere is not held
  drain();
  ASSERT_TRUE(other->done);
  EXPECT_EQ(other->result->seq, 2);
}

TEST_F(QueueTest, PatientHeldWhileEarlierJobInFlightOthersNot) {
  push(*queue, job(1, "p1"));
  push(*queue, job(2, "p1"));
  push(*queue, job(3, "p2"));
  EXPECT_EQ(take_seq(), 1);
  EXPECT_EQ(take_seq(), 3);
  auto third = start_take();
  EXPECT_FALSE(third->done);
  auto s = queue->stats("trust-a");
  EXPECT_EQ(s.ready, 0u);
  EXPECT_EQ(s.waiting, 1u);
  EXPECT_EQ(s.in_flight, 2u);

  settle(1, "p1", Settlement::Kind::delivered);
  ASSERT_TRUE(third->done);
  EXPECT_EQ(third->result->seq, 2);
}

TEST_F(QueueTest, RetryHoldsPatientUntilRetryTime) {
  push(*queue, job(1, "p1"));
  push(*queue, job(2, "p1"));
  push(*queue, job(3, "p2"));
  EXPECT_EQ(take_seq(), 1);
  settle(1, "p1", Settlement::Kind::retry, now_ms() + 150);
  EXPECT_EQ(take_seq(), 3);  // the other patient is not held back

  auto t = start_take();
  EXPECT_FALSE(t->done);  // seq 1 is backing off, seq 2 waits behind it
  EXPECT_EQ(queue->stats("trust-a").waiting, 2u);
  run_until_done(*t);
  ASSERT_TRUE(t->done);
  ASSERT_TRUE(t->result);
  EXPECT_EQ(t->result->seq, 1);  // the retry comes before the patient's later record
  EXPECT_GE(t->result->not_before_ms, 0);

  auto later = start_take();
  EXPECT_FALSE(later->done);
  settle(1, "p1", Settlement::Kind::delivered);
  ASSERT_TRUE(later->done);
  EXPECT_EQ(later->result->seq, 2);
}

TEST_F(QueueTest, DeadReleasesThePatientsNextJob) {
  push(*queue, job(1, "p1"));
  push(*queue, job(2, "p1"));
  EXPECT_EQ(take_seq(), 1);
  auto t = start_take();
  EXPECT_FALSE(t->done);
  settle(1, "p1", Settlement::Kind::dead);
  ASSERT_TRUE(t->done);
  EXPECT_EQ(t->result->seq, 2);
}

// Bodies are kept in memory up to the budget; past it a job queues without its body (handed
// out with an empty body, for the dispatcher to read from the store), and the budget frees up
// as jobs leave for a worker.
TEST(QueueBodyBudget, BodiesPastTheBudgetAreNotCarried) {
  asio::io_context io;
  auto queue = make_memory_queue(io.get_executor(), 10);
  auto with_body = [](std::int64_t seq, std::string body) {
    auto j = job(seq, "");
    j.body = std::move(body);
    return j;
  };
  push(*queue, with_body(1, "123456"));
  push(*queue, with_body(2, "abcdef"));  // 12 bytes would pass 10
  push(*queue, with_body(3, "xyz"));     // 9 fits

  std::vector<DeliveryJob> taken;
  auto take = [&](int n) -> asio::awaitable<void> {
    for (int i = 0; i < n; ++i) taken.push_back(*co_await queue->next("trust-a"));
  };
  auto rethrow = [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  };
  asio::co_spawn(io, take(3), rethrow);
  io.run();
  ASSERT_EQ(taken.size(), 3u);
  EXPECT_EQ(taken[0].body, "123456");
  EXPECT_TRUE(taken[1].body.empty());
  EXPECT_EQ(taken[2].body, "xyz");

  // All three left: the whole budget is free again (10 bytes fit), and a retried job is
  // measured anew: 6 more would pass 10, so it comes back without its body.
  push(*queue, with_body(4, "0123456789"));
  ASSERT_TRUE(run_now(queue->settle(taken[0], Settlement{Settlement::Kind::retry, 0})));
  io.restart();
  asio::co_spawn(io, take(2), rethrow);
  io.run();
  ASSERT_EQ(taken.size(), 5u);
  EXPECT_EQ(taken[3].seq, 1);
  EXPECT_TRUE(taken[3].body.empty());
  EXPECT_EQ(taken[4].body, "0123456789");
}

TEST_F(QueueTest, PushAndSettleFailOnceStopped) {
  push(*queue, job(1, ""));
  auto t = start_take();
  ASSERT_TRUE(t->done && t->result);
  queue->stop();
  auto pushed = run_now(queue->push(job(2, "")));
  ASSERT_FALSE(pushed);
  EXPECT_EQ(pushed.error().code, Errc::unavailable);
  EXPECT_TRUE(pushed.error().is_retryable());
  auto settled = run_now(queue->settle(*t->result, Settlement{Settlement::Kind::delivered, 0}));
  ASSERT_FALSE(settled);
  EXPECT_EQ(settled.error().code, Errc::unavailable);
}

// A job taken and given back untried (retry at a time already past) goes back to its place:
// ahead of later jobs, and still holding back its patient's next one.
TEST_F(QueueTest, UntriedJobGoesBackToItsPlace) {
  push(*queue, job(1, "p1"));
  push(*queue, job(2, "p1"));
  push(*queue, job(3, "p2"));
  auto first = start_take();
  ASSERT_TRUE(first->done && first->result);
  EXPECT_EQ(first->result->seq, 1);
  settle(1, "p1", Settlement::Kind::retry, 0);
  EXPECT_EQ(take_seq(), 1);  // before 3, and 2 is still behind it
  EXPECT_EQ(take_seq(), 3);
  auto t = start_take();
  EXPECT_FALSE(t->done);
}

TEST_F(QueueTest, JobNotDueYetWaitsForItsTime) {
  auto j = job(1, "");
  j.not_before_ms = now_ms() + 100;
  push(*queue, j);
  auto t = start_take();
  EXPECT_FALSE(t->done);
  EXPECT_EQ(queue->stats("trust-a").waiting, 1u);
  run_until_done(*t);
  ASSERT_TRUE(t->done);
  EXPECT_EQ(t->result->seq, 1);
}

TEST_F(QueueTest, StopWakesWaitersWithNothing) {
  auto a = start_take();
  auto b = start_take("gp-b");
  queue->stop();
  drain();
  ASSERT_TRUE(a->done);
  ASSERT_TRUE(b->done);
  EXPECT_FALSE(a->result);
  EXPECT_FALSE(b->result);
  EXPECT_FALSE(run_now(queue->push(job(1, ""))));
  auto c = start_take();
  ASSERT_TRUE(c->done);
  EXPECT_FALSE(c->result);
}

asio::awaitable<void> drain_all(Queue& q, std::size_t count, std::map<std::string, std::int64_t>& last_seq,
                                std::size_t& taken, bool& in_order) {
  while (taken < count) {
    auto j = co_await q.next("trust-a");
    if (!j) co_return;
    auto& last = last_seq[j->patient_key];
    if (j->seq <= last) in_order = false;
    last = j->seq;
    ++taken;
    (void)co_await q.settle(*j, Settlement{Settlement::Kind::delivered, 0});
  }
}

TEST_F(QueueTest, HundredThousandJobsKeepPerPatientOrder) {
  constexpr std::size_t count = 100000;
  for (std::size_t i = 1; i <= count; ++i)
    push(*queue, job(static_cast<std::int64_t>(i), "p" + std::to_string(i % 997)));
  EXPECT_EQ(queue->stats("trust-a").ready + queue->stats("trust-a").waiting, count);

  std::map<std::string, std::int64_t> last_seq;
  std::size_t taken = 0;
  bool in_order = true;
  auto rethrow = [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  };
  asio::co_spawn(io, drain_all(*queue, count, last_seq, taken, in_order), rethrow);
  io.run();
  EXPECT_EQ(taken, count);
  EXPECT_TRUE(in_order);
  auto s = queue->stats("trust-a");
  EXPECT_EQ(s.ready + s.waiting + s.in_flight, 0u);
}

}  // namespace
}  // namespace tellonce
