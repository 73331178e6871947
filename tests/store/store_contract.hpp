// The behaviour every Store must have, as a parameterised suite. An implementation runs it
// with INSTANTIATE_TEST_SUITE_P(Name, StoreContract, testing::Values(StoreKind{...})).
#pragma once

#include "store/store.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <exception>
#include <memory>
#include <optional>
#include <ostream>
#include <string>

namespace tellonce::testing {

// Runs one coroutine to completion on a fresh io_context, rethrowing what it threw.
template <class T>
T run(asio::awaitable<T> task) {
  asio::io_context io;
  std::exception_ptr error;
  std::optional<T> out;
  auto done = [&](std::exception_ptr e, T value) {
    error = e;
    out = std::move(value);
  };
  asio::co_spawn(io, std::move(task), done);
  io.run();
  if (error) std::rethrow_exception(error);
  return std::move(*out);
}

// A routed message from hospital-1 with a small Bundle body and one validator warning.
NewMessage sample(std::string idempotency_key = "", std::vector<std::string> destinations = {"trust-a", "gp-b"},
                  std::string source = "hospital-1");

// Opens (or reopens) a store whose data lives in dir.
using StoreFactory = std::function<std::unique_ptr<Store>(const std::filesystem::path& dir)>;

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

  std::filesystem::path dir_;
  std::unique_ptr<Store> store_;
};

}  // namespace tellonce::testing
