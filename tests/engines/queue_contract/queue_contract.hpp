// The behaviour every Queue must have (include/tellonce/queue.hpp), as a parameterised suite.
// An implementation runs it with
//   INSTANTIATE_TEST_SUITE_P(Name, QueueContract, testing::Values(QueueKind{name, factory, n}))
// where the factory makes a QueueFixture: whatever one test's queue needs (queues of its own on a
// shared broker...), set up in its constructor and removed in its destructor.
//
// The cases hold for a queue whose push completes only once a remote broker confirmed, and whose
// jobs reach next() asynchronously: before asserting that a job is NOT handed out, a case waits
// (bounded) until stats() shows the queue holds what was pushed, so the answer depends on the
// queue's rules and not on how fast a broker is.
#pragma once

#include "tellonce/queue.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>

#include <gtest/gtest.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>

namespace tellonce::test {

class QueueFixture {
 public:
  virtual ~QueueFixture() = default;
  // The queue under test; its timers and handlers run on `executor` (the test's io_context).
  virtual std::unique_ptr<Queue> open(asio::any_io_executor executor) = 0;
};

struct QueueKind {
  std::string name;
  std::function<std::unique_ptr<QueueFixture>()> make;  // nullptr: nothing to test against (skip)
  std::size_t bulk_jobs = 2000;  // jobs in the per-patient order case
};

inline void PrintTo(const QueueKind& kind, std::ostream* os) { *os << kind.name; }

// A next() call running on the test's io_context; `result` is set once it completes.
struct Take {
  bool done = false;
  std::optional<DeliveryJob> result;
};

class QueueContract : public ::testing::TestWithParam<QueueKind> {
 protected:
  void SetUp() override;
  void TearDown() override;

  void push(DeliveryJob j);
  std::shared_ptr<Take> start_take(std::string destination = "trust-a");
  // Waits (bounded) for the take to complete; false if it did not.
  bool finish(const Take& t, std::chrono::milliseconds limit = std::chrono::seconds(10));
  std::int64_t take_seq(std::string destination = "trust-a");
  void settle(std::int64_t seq, std::string patient, Settlement::Kind kind, std::int64_t retry_at = 0);
  // Waits (bounded) until the queue holds `count` jobs for the destination (ready + waiting +
  // in flight); false if it never did.
  bool holds(std::size_t count, std::string destination = "trust-a");
  void drain();  // runs what is ready on the io_context, a few rounds

  asio::io_context io;
  std::unique_ptr<QueueFixture> fixture;
  std::unique_ptr<Queue> queue;
};

}  // namespace tellonce::test
