// Load from partners: per-partner rate limits (a token bucket per partner), connection caps per
// partner and per remote address on each listener, and a rate limit for repetitive log lines.
//
// Configuration (broker/config): `limits:` at the top level holds the broker-wide default
// (records_per_second, burst, max_connections, max_connections_per_address); a partner's own
// `limits:` replaces the default's rate and connection cap for that partner. Nothing set: no
// limit, and the hot path pays one branch.
//
// Threading: everything here may be used from any thread once built. TokenBucket is lock-free
// (one atomic, compare-and-swap); PartnerLimits is read-only after construction apart from its
// buckets; ConnectionCaps takes a small mutex per connection opened and closed (never per
// record), and only on listeners where a cap is configured. Time comes from an injected clock
// so that tests need no sleeping.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace tellonce {

class PartnerDirectory;  // tellonce/adapter.hpp

// Nanoseconds on a monotonic clock (steady_clock by default; tests pass their own).
using LimitClock = std::function<std::int64_t()>;
std::int64_t steady_now_ns();

struct RateLimit {
  double records_per_second = 0;    // 0: no rate limit
  double burst = 0;                 // records taken at once after a quiet spell; 0: max(1, rate)
  std::size_t max_connections = 0;  // open connections per listener; 0: no cap
};

// A token bucket of `burst` tokens refilled at `per_second`, kept as the time at which it
// will be full again (the GCRA form: one atomic, no refill timer). Each take() costs a token.
class TokenBucket {
 public:
  TokenBucket(double per_second, double burst);
  // 0 when a token was taken at `now_ns`; otherwise the nanoseconds until one will be there
  // (nothing is taken).
  std::int64_t take(std::int64_t now_ns);
  // A wait as the whole seconds an HTTP Retry-After says: rounded up, at least 1.
  static std::int64_t retry_after_seconds(std::int64_t wait_ns);

 private:
  std::int64_t interval_ns_;  // one token's worth of time
  std::int64_t span_ns_;      // a full bucket's worth of time (burst × interval)
  std::atomic<std::int64_t> full_at_ns_{std::numeric_limits<std::int64_t>::min() / 2};
};

// Why a record (or a mailbox read) was refused for its partner's rate.
struct Throttle {
  std::int64_t retry_after_seconds = 1;
  std::string limit;  // "partner 'gp-a' may send 5 records per second (burst 10)"
};

// Every partner's rate and connection cap, from the configuration.
class PartnerLimits {
 public:
  // `per_partner` holds every partner with a limit of its own or from the default.
  PartnerLimits(std::unordered_map<std::string, RateLimit> per_partner, std::size_t max_connections_per_address,
                LimitClock clock = steady_now_ns);
  // nullopt: `partner` may send one more record (or make one more read) now on `channel`.
  // Otherwise the record is refused and on_throttled is told. Lock-free.
  std::optional<Throttle> admit(std::string_view partner, std::string_view channel);
  std::size_t max_connections(std::string_view partner) const;  // 0: no cap
  std::size_t max_connections_per_address() const { return per_address_; }
  bool caps_connections() const;  // any connection cap at all
  // Told of every refusal (the broker counts tellonce_records_throttled_total). Before use.
  void on_throttled(std::function<void(std::string_view partner, std::string_view channel)> f) {
    on_throttled_ = std::move(f);
  }

 private:
  struct Entry {
    RateLimit limit;
    std::unique_ptr<TokenBucket> bucket;  // null: no rate
  };
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, Entry, Hash, std::equal_to<>> entries_;
  bool any_rate_ = false;
  std::size_t per_address_ = 0;
  LimitClock clock_;
  std::function<void(std::string_view, std::string_view)> on_throttled_;
};

// Open connections of one listener by remote address and by partner (the partner a client
// certificate names). A Slot holds one place and gives it back when destroyed.
class ConnectionCaps {
 public:
  ConnectionCaps(const PartnerLimits& limits, const PartnerDirectory& partners)
      : limits_(limits), partners_(partners) {}
  class Slot {
   public:
    Slot() = default;
    Slot(ConnectionCaps* caps, std::string key) : caps_(caps), key_(std::move(key)) {}
    Slot(Slot&& o) noexcept : caps_(std::exchange(o.caps_, nullptr)), key_(std::move(o.key_)) {}
    Slot& operator=(Slot&& o) noexcept;
    ~Slot();
    bool held() const { return caps_ != nullptr; }

   private:
    ConnectionCaps* caps_ = nullptr;
    std::string key_;
  };
  // A place for a connection from `address`; nullopt when that address is at its cap.
  // Without a per-address cap the slot holds nothing and costs nothing.
  std::optional<Slot> for_address(const std::string& address);
  // The partner a verified certificate names ("" when none) and a place for it; nullopt when
  // that partner is at its cap. `partner` is set either way.
  std::optional<Slot> for_certificate(std::string_view fingerprint, std::string_view subject, std::string& partner);
  std::size_t open(const std::string& key) const;  // for tests: "a:<address>" or "p:<partner>"

 private:
  std::optional<Slot> take(std::string key, std::size_t cap);
  void give_back(const std::string& key);
  const PartnerLimits& limits_;
  const PartnerDirectory& partners_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::size_t> open_;  // under mu_
};

// At most one line per `interval` for a recurring event (say, failed TLS handshakes on one
// listener); the ones in between are counted and the next line says how many were left out.
class LogThrottle {
 public:
  explicit LogThrottle(std::chrono::milliseconds interval = std::chrono::seconds(1), LimitClock clock = steady_now_ns)
      : interval_ns_(std::chrono::nanoseconds(interval).count()), clock_(std::move(clock)) {}
  // Whether to log this event now; when true, `suppressed` is how many were not logged since
  // the last line. Lock-free.
  bool allow(std::uint64_t& suppressed);
  // The line's suffix for `suppressed` left-out events: "" or " (and 12 more since the last line)".
  static std::string more(std::uint64_t suppressed);

 private:
  std::int64_t interval_ns_;
  LimitClock clock_;
  std::atomic<std::int64_t> next_ns_{std::numeric_limits<std::int64_t>::min()};
  std::atomic<std::uint64_t> suppressed_{0};
};

}  // namespace tellonce
