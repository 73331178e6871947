#include "delivery/delivery.hpp"

#include <gtest/gtest.h>

namespace tellonce {
namespace {

RetryPolicy policy(int max_attempts = 8, double jitter = 0.0) {
  RetryPolicy p;
  p.max_attempts = max_attempts;
  p.initial_backoff = std::chrono::milliseconds(500);
  p.max_backoff = std::chrono::milliseconds(5000);
  p.multiplier = 2.0;
  p.jitter = jitter;
  return p;
}

TEST(RetryPolicy, BackoffGrowsExponentially) {
  auto p = policy();
  EXPECT_EQ(next_attempt_at(p, 1, 1000, 0.5), 1500);
  EXPECT_EQ(next_attempt_at(p, 2, 1000, 0.5), 2000);
  EXPECT_EQ(next_attempt_at(p, 3, 1000, 0.5), 3000);
  EXPECT_EQ(next_attempt_at(p, 4, 1000, 0.5), 5000);
}

TEST(RetryPolicy, BackoffIsCapped) {
  auto p = policy(100);
  EXPECT_EQ(next_attempt_at(p, 5, 0, 0.5), 5000);  // 8000 capped
  EXPECT_EQ(next_attempt_at(p, 60, 0, 0.5), 5000);
}

TEST(RetryPolicy, JitterStaysWithinBounds) {
  auto p = policy(8, 0.2);
  EXPECT_EQ(next_attempt_at(p, 2, 0, 0.0), 800);   // 1000 - 20%
  EXPECT_EQ(next_attempt_at(p, 2, 0, 1.0), 1200);  // 1000 + 20%
  for (double r = 0.0; r <= 1.0; r += 0.05) {
    auto at = next_attempt_at(p, 2, 0, r);
    ASSERT_TRUE(at);
    EXPECT_GE(*at, 800);
    EXPECT_LE(*at, 1200);
  }
}

TEST(RetryPolicy, DeadAfterMaxAttempts) {
  auto p = policy(3);
  EXPECT_TRUE(next_attempt_at(p, 2, 0, 0.5));
  EXPECT_FALSE(next_attempt_at(p, 3, 0, 0.5));
  EXPECT_FALSE(next_attempt_at(p, 4, 0, 0.5));
}

}  // namespace
}  // namespace tellonce
