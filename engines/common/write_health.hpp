// Whether a store's writes succeed, for Store::health(): set by the store's writer thread after
// each batch, read from any thread. A batch that failed as a whole (not one write's constraint)
// means records cannot be stored now; the next batch that commits means they can again. While
// writes fail, health() runs a probe write of its own at most once an interval and otherwise
// answers with the last failure (so a health check cannot queue up behind a stuck writer).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace tellonce::store_detail {

class WriteHealth {
 public:
  // Writer thread, after each batch: ok, or the engine's message for why it failed.
  void note(bool ok, const std::string& error);
  bool failing() const { return failing_.load(); }
  // "the message store cannot save records (failing for N s): <error>"
  std::string failure_text();
  // True at most once per interval: the caller then probes with a write of its own.
  bool probe_due(std::chrono::steady_clock::duration interval);

 private:
  std::atomic<bool> failing_{false};
  std::mutex mutex_;
  std::string error_;
  std::int64_t failing_since_ms_ = 0;
  std::chrono::steady_clock::time_point last_probe_{};
};

}  // namespace tellonce::store_detail
