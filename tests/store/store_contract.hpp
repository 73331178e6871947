// The behaviour every Store must have, as a parameterised suite. An implementation runs it
// with INSTANTIATE_TEST_SUITE_P(Name, StoreContract, testing::Values(StoreKind{...})).
#pragma once

#include "store/store.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <ostream>
#include <string>

namespace tellonce::testing {

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
