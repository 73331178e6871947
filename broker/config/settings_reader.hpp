// How adapter factories read their own config section without seeing raw YAML: typed getters
// that record a ConfigProblem (file, line, config path) for every bad or unknown value.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tellonce {

struct ConfigProblem;

class SettingsReader {
 public:
  struct Impl;
  SettingsReader(std::shared_ptr<Impl> impl);
  ~SettingsReader();

  // Each getter marks the key as known; finish() reports keys nobody asked for (typos).
  std::string string(const std::string& key, const std::string& fallback);
  std::string required_string(const std::string& key);
  std::int64_t integer(const std::string& key, std::int64_t fallback, std::int64_t min, std::int64_t max);
  bool boolean(const std::string& key, bool fallback);
  std::chrono::milliseconds duration(const std::string& key, std::chrono::milliseconds fallback);  // "500ms", "5s", "2m" or ms number
  std::vector<std::string> strings(const std::string& key);  // a scalar or a sequence
  std::optional<SettingsReader> child(const std::string& key);  // nested mapping
  bool has(const std::string& key) const;

  // Records a problem at `key` (or at this section when key is empty).
  void problem(const std::string& key, const std::string& message);
  // Reports unknown keys. Call once after reading everything.
  void finish();

  std::string path() const;  // config path of this section: "partners[1].endpoint"
  bool ok() const;           // no problem recorded in this section so far

 private:
  std::shared_ptr<Impl> impl_;
};

// Checks a "host:port" listen address; returns an error message or "".
std::string check_listen_address(const std::string& value);
// Checks an http(s) URL; returns an error message or "".
std::string check_http_url(const std::string& value);

}  // namespace tellonce
