// Retry by time: what a failed attempt means for a delivery, as a pure function of the policy,
// the record's history and the time (tests pass `now_ms` and the random draw explicitly).
#pragma once

#include "broker/config/config.hpp"
#include "tellonce/message.hpp"

#include <cstdint>

namespace tellonce {

// The wait after `failures` consecutive failures (1 for the first): initial_backoff times
// multiplier^(failures-1), capped at max_backoff, spread by +/- jitter (random01 in [0, 1]).
std::int64_t backoff_ms(const RetryPolicy& policy, int failures, double random01);

// now_ms + backoff_ms(policy, attempts_made, random01): when a record's next attempt is due.
std::int64_t next_attempt_at(const RetryPolicy& policy, int attempts_made, std::int64_t now_ms, double random01);

struct AfterFailure {
  bool dead = false;                  // dead-letter it now
  std::int64_t retry_at_ms = 0;       // when not dead
  std::int64_t first_failed_at_ms = 0;  // the record's clock (DeliveryJob::first_failed_at_ms)
};

// A failed attempt (attempt number `attempts_made`) of a record whose first failed attempt was
// at first_failed_at_ms (0: this is its first). Permanent: dead at once. Retryable: dead once
// keep_trying_for has passed since the first failed attempt, else retried after the backoff.
AfterFailure after_failure(const RetryPolicy& policy, DeliveryOutcome outcome, int attempts_made,
                           std::int64_t first_failed_at_ms, std::int64_t now_ms, double random01);

}  // namespace tellonce
