// The behaviour every Store must have, as a parameterised suite. An implementation runs it
// with INSTANTIATE_TEST_SUITE_P(Name, StoreContract, testing::Values(StoreKind{name, factory})),
// where the factory makes a StoreFixture: whatever one test's store needs (a temporary folder,
// a database schema on a server...), set up in its constructor and removed in its destructor.
#pragma once

#include "tellonce/store.hpp"
#include "support/run_async.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <exception>
#include <memory>
#include <optional>
#include <ostream>
#include <string>

namespace tellonce::test {

// Store tests write run(...) for test::run_async(...): one coroutine on a fresh io_context.
template <class T>
T run(asio::awaitable<T> task) {
  return run_async(std::move(task));
}

// A routed message from hospital-1 with a small Bundle body and one validator warning.
NewMessage sample(std::string idempotency_key = "", std::vector<std::string> destinations = {"trust-a", "gp-b"},
                  std::string source = "hospital-1");

// One attempt at `job`: delivered (ok), refused for good (dead) or to be retried in 30 s.
DeliveryAttempt attempt_on(const DeliveryJob& job, int number, bool ok, bool dead = false);

// One test's store. open() opens it; after the previous store from open() was closed and
// destroyed, open() again reopens the same data (as a restarted broker would).
class StoreFixture {
 public:
  virtual ~StoreFixture() = default;
  virtual std::unique_ptr<Store> open() = 0;
};

using StoreFactory = std::function<std::unique_ptr<StoreFixture>()>;

struct StoreKind {
  std::string name;
  StoreFactory open;
};

inline void PrintTo(const StoreKind& kind, std::ostream* os) { *os << kind.name; }

class StoreContract : public ::testing::TestWithParam<StoreKind> {
 protected:
  void SetUp() override;
  void TearDown() override;
  void reopen();

  std::unique_ptr<StoreFixture> fixture_;
  std::unique_ptr<Store> store_;
};

}  // namespace tellonce::test
