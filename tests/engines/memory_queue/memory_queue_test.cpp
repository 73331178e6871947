// The memory queue: the Queue contract suite (tests/engines/queue_contract), plus its memory
// budget for bodies, which only an in-process queue has.
#include "engines/memory_queue/memory_queue.hpp"

#include "queue_contract.hpp"
#include "support/builders.hpp"
#include "support/run_async.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <gtest/gtest.h>

#include <chrono>

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

}  // namespace
}  // namespace tellonce

namespace tellonce::test {
namespace {

class MemoryFixture final : public QueueFixture {
 public:
  std::unique_ptr<Queue> open(asio::any_io_executor executor) override {
    return make_memory_queue(std::move(executor));
  }
};

INSTANTIATE_TEST_SUITE_P(Memory, QueueContract,
                         ::testing::Values(QueueKind{
                             "memory", [] { return std::make_unique<MemoryFixture>(); }, 100000}));

}  // namespace
}  // namespace tellonce::test
