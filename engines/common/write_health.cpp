#include "engines/common/write_health.hpp"

#include "tellonce/log.hpp"
#include "tellonce/message.hpp"

namespace tellonce::store_detail {

void WriteHealth::note(bool ok, const std::string& error) {
  if (ok) {
    if (failing_.exchange(false)) log::info("store", "writes succeed again");
    return;
  }
  std::lock_guard lock(mutex_);
  error_ = error;
  if (!failing_.exchange(true)) failing_since_ms_ = now_ms();
}

std::string WriteHealth::failure_text() {
  std::lock_guard lock(mutex_);
  return "the message store cannot save records (failing for " +
         std::to_string((now_ms() - failing_since_ms_) / 1000) + " s): " + error_;
}

bool WriteHealth::probe_due(std::chrono::steady_clock::duration interval) {
  std::lock_guard lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  if (now - last_probe_ < interval) return false;
  last_probe_ = now;
  return true;
}

}  // namespace tellonce::store_detail
