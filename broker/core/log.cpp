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
std::atomic<Format> g_format{Format::text};
std::mutex g_mu;

constexpr const char* level_names[] = {"debug", "info", "warn", "error"};

// Length of the valid UTF-8 sequence at s[i], or 0 when it is not one.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  std::size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 0;
  return n;
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (auto n = utf8_length(s, i)) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    } else {
      out += "\\ufffd";  // not UTF-8: the line stays valid JSON
    }
    ++i;
  }
  out += '"';
}

// The value of ` key=value` (or at the start) in a log message; quoted values keep their spaces.
std::string_view pair_value(std::string_view message, std::string_view key) {
  for (std::size_t at = message.find(key); at != std::string_view::npos; at = message.find(key, at + 1)) {
    const bool starts_word = at == 0 || message[at - 1] == ' ';
    const std::size_t value_at = at + key.size();
    if (!starts_word || value_at >= message.size() || message[value_at] != '=') continue;
    auto rest = message.substr(value_at + 1);
    if (!rest.empty() && rest.front() == '"') {
      auto close = rest.find('"', 1);
      return rest.substr(1, close == std::string_view::npos ? std::string_view::npos : close - 1);
    }
    auto end = rest.find_first_of(" ,;:)");
    return rest.substr(0, end);
  }
  return {};
}

void append_time(std::string& line) {
  using namespace std::chrono;
  line += iso8601_utc(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

}  // namespace

void set_level(Level l) { g_level = l; }
void set_format(Format f) { g_format = f; }
bool enabled(Level l) { return l >= g_level.load(std::memory_order_relaxed); }

std::string json_line(Level l, std::string_view component, std::string_view message) {
  std::string line;
  line.reserve(96 + component.size() + message.size());
  line += "{\"time\":\"";
  append_time(line);
  line += "\",\"level\":\"";
  line += level_names[static_cast<int>(l)];
  line += "\",\"component\":";
  append_json_string(line, component);
  line += ",\"message\":";
  append_json_string(line, message);
  static constexpr std::pair<std::string_view, std::string_view> fields[] = {
      {"message", "messageId"}, {"partner", "partner"}, {"destination", "destination"},
      {"channel", "channel"},   {"event", "event"}};
  for (const auto& [key, name] : fields) {
    auto value = pair_value(message, key);
    // A delivery's line names its partner as destination=.
    if (value.empty() && key == "partner") value = pair_value(message, "destination");
    if (value.empty()) continue;
    line += ",\"";
    line += name;
    line += "\":";
    append_json_string(line, value);
  }
  line += "}\n";
  return line;
}

void write(Level l, std::string_view component, std::string_view message) {
  if (!enabled(l)) return;
  std::string line;
  if (g_format.load(std::memory_order_relaxed) == Format::json) {
    line = json_line(l, component, message);
  } else {
    line.reserve(64 + component.size() + message.size());
    append_time(line);
    line += ' ';
    line += level_names[static_cast<int>(l)];
    line += ' ';
    line += component;
    line += ' ';
    line += message;
    line += '\n';
  }
  std::lock_guard lk(g_mu);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace tellonce::log

namespace tellonce {

std::string iso8601_utc(std::int64_t ms) {
  std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[40];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms % 1000));
  return buf;
}

}  // namespace tellonce
