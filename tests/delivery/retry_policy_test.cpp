#include "broker/delivery/retry_policy.hpp"

#include <gtest/gtest.h>

namespace tellonce {
namespace {

constexpr std::int64_t hour_ms = 60 * 60 * 1000;

RetryPolicy policy(double jitter = 0.0) {
  RetryPolicy p;
  p.keep_trying_for = std::chrono::hours(72);
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

TEST(RetryPolicy, BackoffIsCappedEvenAfterThousandsOfAttempts) {
  auto p = policy();
  EXPECT_EQ(backoff_ms(p, 5, 0.5), 5000);  // 8000 capped
  EXPECT_EQ(backoff_ms(p, 60, 0.5), 5000);
  EXPECT_EQ(backoff_ms(p, 100000, 0.5), 5000);
}

TEST(RetryPolicy, JitterStaysWithinBounds) {
  auto p = policy(0.2);
  EXPECT_EQ(backoff_ms(p, 2, 0.0), 800);   // 1000 - 20%
  EXPECT_EQ(backoff_ms(p, 2, 1.0), 1200);  // 1000 + 20%
  for (double r = 0.0; r <= 1.0; r += 0.05) {
    auto b = backoff_ms(p, 2, r);
    EXPECT_GE(b, 800);
    EXPECT_LE(b, 1200);
  }
}

TEST(RetryPolicy, PermanentRefusalIsDeadAtOnce) {
  auto after = after_failure(policy(), DeliveryOutcome::permanent, 1, 0, 1000, 0.5);
  EXPECT_TRUE(after.dead);
}

TEST(RetryPolicy, FirstFailureStartsTheClock) {
  // A record that was never tried (held behind an open circuit for days) has no clock yet:
  // its first failure is retried, however long after acceptance it comes.
  const std::int64_t now = 10 * 24 * hour_ms;
  auto after = after_failure(policy(), DeliveryOutcome::retryable, 1, 0, now, 0.5);
  EXPECT_FALSE(after.dead);
  EXPECT_EQ(after.first_failed_at_ms, now);
  EXPECT_EQ(after.retry_at_ms, now + 500);
}

TEST(RetryPolicy, RetriesByTimeNotByCount) {
  auto p = policy();
  const std::int64_t first = 1000;
  // Attempt 500 an hour in: still within the 72 h.
  auto early = after_failure(p, DeliveryOutcome::retryable, 500, first, first + hour_ms, 0.5);
  EXPECT_FALSE(early.dead);
  EXPECT_EQ(early.first_failed_at_ms, first);
  EXPECT_EQ(early.retry_at_ms, first + hour_ms + 5000);
  // Just before the period ends: retried; at its end: dead.
  auto last = after_failure(p, DeliveryOutcome::retryable, 3, first, first + 72 * hour_ms - 1, 0.5);
  EXPECT_FALSE(last.dead);
  auto over = after_failure(p, DeliveryOutcome::retryable, 3, first, first + 72 * hour_ms, 0.5);
  EXPECT_TRUE(over.dead);
}

TEST(RetryPolicy, TheOldCountPolicysOutageNoLongerKillsRecords) {
  // The shipped count policy (8 attempts from 500 ms) gave up about 64 s after the first
  // failure; a 75 s outage dead-lettered every record. Now the same backoff keeps going.
  auto p = policy();
  p.max_backoff = std::chrono::minutes(5);
  std::int64_t now = 0, first = 0;
  for (int attempt = 1; attempt <= 12; ++attempt) {
    auto after = after_failure(p, DeliveryOutcome::retryable, attempt, first, now, 0.5);
    ASSERT_FALSE(after.dead) << "attempt " << attempt;
    first = after.first_failed_at_ms;
    now = after.retry_at_ms;
  }
  EXPECT_GT(now, 75 * 1000);
}

}  // namespace
}  // namespace tellonce
