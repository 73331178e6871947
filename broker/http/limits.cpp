#include "tellonce/limits.hpp"

#include "tellonce/adapter.hpp"
#include "tellonce/error.hpp"
#include "tellonce/http_server.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace tellonce {

std::int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

TokenBucket::TokenBucket(double per_second, double burst) {
  if (!(per_second > 0)) throw std::invalid_argument("a token bucket needs a rate above 0");
  if (burst < 1) burst = 1;
  interval_ns_ = std::max<std::int64_t>(1, std::llround(1e9 / per_second));
  span_ns_ = std::llround(burst * static_cast<double>(interval_ns_));
}

std::int64_t TokenBucket::take(std::int64_t now_ns) {
  std::int64_t full_at = full_at_ns_.load(std::memory_order_relaxed);
  for (;;) {
    // Taking a token moves the time the bucket is full again one interval later; it may be at
    // most a whole bucket ahead of now.
    std::int64_t next = std::max(full_at, now_ns) + interval_ns_;
    std::int64_t allowed_at = next - span_ns_;
    if (allowed_at > now_ns) return allowed_at - now_ns;
    if (full_at_ns_.compare_exchange_weak(full_at, next, std::memory_order_relaxed)) return 0;
  }
}

std::int64_t TokenBucket::retry_after_seconds(std::int64_t wait_ns) {
  constexpr std::int64_t second = 1'000'000'000;
  return std::max<std::int64_t>(1, (wait_ns + second - 1) / second);
}

namespace {

std::string number_text(double v) {
  if (v == std::floor(v) && v < 1e15) return std::to_string(static_cast<long long>(v));
  std::string s = std::to_string(v);
  while (!s.empty() && s.back() == '0') s.pop_back();
  return s;
}

}  // namespace

PartnerLimits::PartnerLimits(std::unordered_map<std::string, RateLimit> per_partner,
                             std::size_t max_connections_per_address, LimitClock clock)
    : per_address_(max_connections_per_address), clock_(std::move(clock)) {
  for (auto& [partner, limit] : per_partner) {
    Entry e{limit, nullptr};
    if (limit.records_per_second > 0) {
      double burst = limit.burst > 0 ? limit.burst : std::max(1.0, limit.records_per_second);
      e.limit.burst = burst;
      e.bucket = std::make_unique<TokenBucket>(limit.records_per_second, burst);
      any_rate_ = true;
    }
    entries_.emplace(partner, std::move(e));
  }
}

std::optional<Throttle> PartnerLimits::admit(std::string_view partner, std::string_view channel) {
  if (!any_rate_) return std::nullopt;  // the default: no rate anywhere, one branch
  auto it = entries_.find(partner);
  if (it == entries_.end() || !it->second.bucket) return std::nullopt;
  std::int64_t wait = it->second.bucket->take(clock_());
  if (wait == 0) return std::nullopt;
  if (on_throttled_) on_throttled_(partner, channel);
  const RateLimit& l = it->second.limit;
  return Throttle{TokenBucket::retry_after_seconds(wait),
                  "partner '" + std::string(partner) + "' may send " + number_text(l.records_per_second) +
                      " records per second (burst " + number_text(l.burst) + ")"};
}

std::size_t PartnerLimits::max_connections(std::string_view partner) const {
  auto it = entries_.find(partner);
  return it == entries_.end() ? 0 : it->second.limit.max_connections;
}

bool PartnerLimits::caps_connections() const {
  if (per_address_ > 0) return true;
  return std::any_of(entries_.begin(), entries_.end(), [](const auto& e) { return e.second.limit.max_connections > 0; });
}

ConnectionCaps::Slot& ConnectionCaps::Slot::operator=(Slot&& o) noexcept {
  if (this != &o) {
    if (caps_) caps_->give_back(key_);
    caps_ = std::exchange(o.caps_, nullptr);
    key_ = std::move(o.key_);
  }
  return *this;
}

ConnectionCaps::Slot::~Slot() {
  if (caps_) caps_->give_back(key_);
}

std::optional<ConnectionCaps::Slot> ConnectionCaps::take(std::string key, std::size_t cap) {
  std::lock_guard lk(mu_);
  auto& n = open_[key];
  if (n >= cap) {
    if (n == 0) open_.erase(key);
    return std::nullopt;
  }
  ++n;
  return Slot(this, std::move(key));
}

void ConnectionCaps::give_back(const std::string& key) {
  std::lock_guard lk(mu_);
  auto it = open_.find(key);
  if (it == open_.end()) return;
  if (--it->second == 0) open_.erase(it);
}

std::optional<ConnectionCaps::Slot> ConnectionCaps::for_address(const std::string& address) {
  std::size_t cap = limits_.max_connections_per_address();
  if (cap == 0) return Slot();
  return take("a:" + address, cap);
}

std::optional<ConnectionCaps::Slot> ConnectionCaps::for_certificate(std::string_view fingerprint,
                                                                    std::string_view subject, std::string& partner) {
  partner = fingerprint.empty() ? std::string() : std::string(partners_.by_certificate(fingerprint, subject));
  if (partner.empty()) return Slot();
  std::size_t cap = limits_.max_connections(partner);
  if (cap == 0) return Slot();
  return take("p:" + partner, cap);
}

std::size_t ConnectionCaps::open(const std::string& key) const {
  std::lock_guard lk(mu_);
  auto it = open_.find(key);
  return it == open_.end() ? 0 : it->second;
}

HttpResponse throttled_response(const HttpRequest& req, const Throttle& throttle) {
  auto res = outcome_response(req, http::status::too_many_requests,
                              {Issue{Severity::error, "throttled",
                                     "rate limit: " + throttle.limit + "; retry after " +
                                         std::to_string(throttle.retry_after_seconds) + " s",
                                     "", "rate-limit"}});
  res.set(http::field::retry_after, std::to_string(throttle.retry_after_seconds));
  return res;
}

bool LogThrottle::allow(std::uint64_t& suppressed) {
  std::int64_t now = clock_();
  std::int64_t next = next_ns_.load(std::memory_order_relaxed);
  if (now >= next && next_ns_.compare_exchange_strong(next, now + interval_ns_, std::memory_order_relaxed)) {
    suppressed = suppressed_.exchange(0, std::memory_order_relaxed);
    return true;
  }
  suppressed_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

std::string LogThrottle::more(std::uint64_t suppressed) {
  if (suppressed == 0) return {};
  return " (and " + std::to_string(suppressed) + " more since the last line)";
}

}  // namespace tellonce
