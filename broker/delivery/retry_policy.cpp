#include "delivery/delivery.hpp"

#include <algorithm>
#include <cmath>

namespace tellonce {

std::optional<std::int64_t> next_attempt_at(const RetryPolicy& policy, int attempts_made,
                                            std::int64_t now_ms, double random01) {
  if (attempts_made >= policy.max_attempts) return std::nullopt;
  const double initial = static_cast<double>(policy.initial_backoff.count());
  const double cap = static_cast<double>(policy.max_backoff.count());
  const int exponent = std::max(attempts_made, 1) - 1;
  double backoff = std::min(initial * std::pow(std::max(policy.multiplier, 1.0), exponent), cap);
  // Spreads retries of many records that failed together so they do not hit the partner at once.
  const double jitter = std::clamp(policy.jitter, 0.0, 1.0);
  backoff *= 1.0 + jitter * (2.0 * std::clamp(random01, 0.0, 1.0) - 1.0);
  return now_ms + static_cast<std::int64_t>(std::llround(std::max(backoff, 0.0)));
}

}  // namespace tellonce
