// How adapter factories read their own config section without seeing raw YAML: typed getters
// that record a ConfigProblem (file, line, config path) for every bad or unknown value.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
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
  std::chrono::milliseconds duration(const std::string& key, std::chrono::milliseconds fallback);  // "500ms", "5s", "2m", "1h", "3d" or ms number
  std::vector<std::string> strings(const std::string& key);  // a scalar or a sequence
  std::optional<SettingsReader> child(const std::string& key);  // nested mapping
  // Like child(), but an absent section reads as an empty one, so every value takes its default.
  SettingsReader section(const std::string& key);
  // A file or folder path; a relative one is taken from the folder of the config file, so that
  // a config and what it names move together. Empty stays empty.
  std::string file_path(const std::string& key, const std::string& fallback);
  bool has(const std::string& key) const;

  // Added for the loader (and usable by adapters):
  // a byte count written as a number or with a B/KB/MB/GB suffix (1024-based).
  std::uint64_t byte_size(const std::string& key, std::uint64_t fallback, std::uint64_t min, std::uint64_t max);
  // A decimal number such as 0.2 or 2.
  double number(const std::string& key, double fallback, double min, double max);
  // A sequence of mappings, one reader per item (path "key[i]"); non-mapping items are problems.
  std::vector<SettingsReader> sequence(const std::string& key);
  // 1-based line of the key's value (of this section when key is empty or absent); 0 if unknown.
  int line(const std::string& key = "") const;
  // Like strings(), with each item's config path and line, for checks made after loading.
  struct Located {
    std::string value;
    std::string path;
    int line = 0;
  };
  std::vector<Located> located_strings(const std::string& key);

  // Cross-references, checked once the whole file is read, each reported at `key`'s line:
  // this section listens on `address` with `protocol`. Listeners must not share an address
  // (a wildcard host overlaps every host on its port), except "http" ones, which share one
  // server per exact address and must differ in `mount` (their path prefix).
  void declare_listener(const std::string& key, const std::string& address, const std::string& protocol,
                        const std::string& mount = "");
  // `partner_id` (the value at `key`) must be the id of a partner in `partners`.
  void declare_partner_reference(const std::string& key, const std::string& partner_id);

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
// True when a listen address that check_listen_address accepts binds loopback only (127.x.x.x,
// [::1], localhost): nothing beyond this machine can reach it.
bool loopback_listen_address(std::string_view value);
// Checks an http(s) URL; returns an error message or "".
std::string check_http_url(const std::string& value);

// An http(s) URL in parts, as check_http_url reads it (the parts are not checked here).
struct HttpUrl {
  bool https = false;
  std::string userinfo;    // before '@', as written (percent-encoded); empty when none
  std::string host;        // an IPv6 address without its brackets
  bool ipv6 = false;       // the host was in brackets
  std::string port;        // as written; empty when none
  bool port_given = false; // a ':' follows the host (its port may still be empty: a problem)
  std::string rest;        // the path and query, without the fragment; may be empty
};
// nullopt with `why` when the URL cannot be split (no http(s) scheme, a bad bracket).
std::optional<HttpUrl> split_http_url(std::string_view value, std::string& why);

}  // namespace tellonce
