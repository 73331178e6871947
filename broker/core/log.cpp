#include "tellonce/log.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>

namespace tellonce::log {
namespace {
std::atomic<Level> g_level{Level::info};
std::mutex g_mu;
}

void set_level(Level l) { g_level = l; }
bool enabled(Level l) { return l >= g_level.load(std::memory_order_relaxed); }

void write(Level l, std::string_view component, std::string_view message) {
  if (!enabled(l)) return;
  using namespace std::chrono;
  auto now = system_clock::now();
  auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::time_t t = system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char ts[32];
  std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  static constexpr const char* names[] = {"debug", "info", "warn", "error"};
  std::string line;
  line.reserve(64 + component.size() + message.size());
  line += ts;
  char msbuf[8];
  std::snprintf(msbuf, sizeof msbuf, ".%03dZ ", static_cast<int>(ms));
  line += msbuf;
  line += names[static_cast<int>(l)];
  line += ' ';
  line += component;
  line += ' ';
  line += message;
  line += '\n';
  std::lock_guard lk(g_mu);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace tellonce::log
