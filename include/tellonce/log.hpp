// One-line structured log to stderr: `2026-11-23T10:00:00.123Z level component message key=value`.
#pragma once

#include <string_view>

namespace tellonce::log {

enum class Level { debug, info, warn, error };
void set_level(Level l);
bool enabled(Level l);
void write(Level l, std::string_view component, std::string_view message);

inline void info(std::string_view c, std::string_view m) { write(Level::info, c, m); }
inline void warn(std::string_view c, std::string_view m) { write(Level::warn, c, m); }
inline void error(std::string_view c, std::string_view m) { write(Level::error, c, m); }
inline void debug(std::string_view c, std::string_view m) { if (enabled(Level::debug)) write(Level::debug, c, m); }

}  // namespace tellonce::log
