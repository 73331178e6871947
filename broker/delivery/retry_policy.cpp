#include "broker/delivery/retry_policy.hpp"

#include <algorithm>
#include <cmath>

namespace tellonce {

std::int64_t backoff_ms(const RetryPolicy& policy, int failures, double random01) {
  const double initial = static_cast<double>(policy.initial_backoff.count());
  const double cap = static_cast<double>(policy.max_backoff.count());
  // Past ~64 doublings the cap has long been reached; the clamp keeps pow() finite.
  const int exponent = std::clamp(failures, 1, 64) - 1;
  double backoff = std::min(initial * std::pow(std::max(policy.multiplier, 1.0), exponent), cap);
  // Spreads retries of many records that failed together so they do not hit the partner at once.
  const double jitter = std::clamp(policy.jitter, 0.0, 1.0);
  backoff *= 1.0 + jitter * (2.0 * std::clamp(random01, 0.0, 1.0) - 1.0);
  return static_cast<std::int64_t>(std::llround(std::max(backoff, 0.0)));
}

std::int64_t next_attempt_at(const RetryPolicy& policy, int attempts_made, std::int64_t now_ms, double random01) {
  return now_ms + backoff_ms(policy, attempts_made, random01);
}

AfterFailure after_failure(const RetryPolicy& policy, DeliveryOutcome outcome, int attempts_made,
                           std::int64_t first_failed_at_ms, std::int64_t now_ms, double random01) {
  AfterFailure out;
  out.first_failed_at_ms = first_failed_at_ms > 0 ? first_failed_at_ms : now_ms;
  if (outcome != DeliveryOutcome::retryable) {
    out.dead = true;
    return out;
  }
  if (now_ms - out.first_failed_at_ms >= policy.keep_trying_for.count()) {
    out.dead = true;
    return out;
  }
  out.retry_at_ms = next_attempt_at(policy, attempts_made, now_ms, random01);
  return out;
}

}  // namespace tellonce
