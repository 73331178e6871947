// Private to the config component: what a SettingsReader holds. Only loader.cpp and
// settings_reader.cpp include it, so yaml-cpp stays out of the public headers.
#pragma once

#include "broker/config/config.hpp"
#include "tellonce/settings_reader.hpp"

#include <yaml-cpp/yaml.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

namespace tellonce {

// A listener or partner reference a section declared, for the checks made after loading.
struct DeclaredListener {
  std::string address, protocol, mount, path;
  int line = 0;
};
struct DeclaredPartnerReference {
  std::string partner_id, path;
  int line = 0;
};

// Every problem found in one file, and every cross-reference declared in it: shared by all
// readers over that file.
struct ProblemLog {
  std::string file;
  std::vector<ConfigProblem> problems;
  std::vector<DeclaredListener> listeners;
  std::vector<DeclaredPartnerReference> partner_references;

  void add(int line, std::string path, std::string message) {
    problems.push_back(ConfigProblem{file, line, std::move(path), std::move(message)});
  }
};

struct SettingsReader::Impl {
  YAML::Node node;  // the mapping this reader covers (may be Null for an empty section)
  std::string path;
  std::shared_ptr<ProblemLog> log;
  std::set<std::string, std::less<>> known;
  int fallback_line = 0;  // line of the section's key (or list item): where missing keys are reported
  bool finished = false;
};

// 1-based line of a node, or 0 when yaml-cpp has no mark for it.
inline int line_of(const YAML::Node& n) {
  if (!n.IsDefined()) return 0;
  int l = n.Mark().line;
  return l >= 0 ? l + 1 : 0;
}

// Config path of key inside a section path: "" + "broker" -> "broker", "routes[0]" + "to" -> "routes[0].to".
inline std::string join_path(const std::string& base, const std::string& key) {
  if (key.empty()) return base;
  if (base.empty()) return key;
  return base + "." + key;
}

// Parses "250ms", "10s", "5m", "1h" or a bare integer (ms).
std::optional<std::int64_t> parse_duration_ms(std::string_view text);
// Parses "10MB", "512KB", "100B" or a bare integer (bytes).
std::optional<std::uint64_t> parse_byte_size(std::string_view text);

}  // namespace tellonce
