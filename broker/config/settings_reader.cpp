#include "tellonce/settings_reader.hpp"

#include "broker/config/settings_reader_impl.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>

namespace tellonce {

namespace {

struct Entry {
  YAML::Node key;
  YAML::Node value;
};

// Map lookup without yaml-cpp's operator[], which throws on scalars and can insert on non-const nodes.
std::optional<Entry> find_entry(const YAML::Node& map, std::string_view key) {
  if (!map.IsMap()) return std::nullopt;
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (it->first.IsScalar() && it->first.Scalar() == key) return Entry{it->first, it->second};
  }
  return std::nullopt;
}

int entry_line(const Entry& e) {
  int l = line_of(e.value);
  return l ? l : line_of(e.key);
}

std::string describe_kind(const YAML::Node& n) {
  if (n.IsMap()) return "a mapping";
  if (n.IsSequence()) return "a list";
  if (n.IsNull()) return "empty";
  return "'" + n.Scalar() + "'";
}

template <class Int>
std::optional<Int> parse_whole(std::string_view text) {
  Int v{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

// Splits "250ms" into the number and its unit.
std::pair<std::string_view, std::string_view> split_unit(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
  return {text.substr(0, i), text.substr(i)};
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace

std::optional<std::int64_t> parse_duration_ms(std::string_view text) {
  auto [digits, unit] = split_unit(text);
  if (digits.empty()) return std::nullopt;
  auto n = parse_whole<std::int64_t>(digits);
  if (!n) return std::nullopt;
  std::int64_t scale = 0;
  if (unit.empty() || unit == "ms") scale = 1;
  else if (unit == "s") scale = 1000;
  else if (unit == "m") scale = 60 * 1000;
  else if (unit == "h") scale = 60 * 60 * 1000;
  else if (unit == "d") scale = 24 * 60 * 60 * 1000;
  else return std::nullopt;
  if (*n > std::numeric_limits<std::int64_t>::max() / scale) return std::nullopt;
  return *n * scale;
}

std::optional<std::uint64_t> parse_byte_size(std::string_view text) {
  auto [digits, unit] = split_unit(text);
  if (digits.empty()) return std::nullopt;
  auto n = parse_whole<std::uint64_t>(digits);
  if (!n) return std::nullopt;
  std::uint64_t scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "KB") scale = 1024;
  else if (unit == "MB") scale = 1024 * 1024;
  else if (unit == "GB") scale = 1024 * 1024 * 1024;
  else return std::nullopt;
  if (*n > std::numeric_limits<std::uint64_t>::max() / scale) return std::nullopt;
  return *n * scale;
}

SettingsReader::SettingsReader(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
SettingsReader::~SettingsReader() = default;

std::string SettingsReader::path() const { return impl_->path; }

bool SettingsReader::ok() const {
  const auto& own = impl_->path;
  for (const auto& p : impl_->log->problems) {
    if (own.empty() || p.path == own) return false;
    if (p.path.size() > own.size() && p.path.compare(0, own.size(), own) == 0 &&
        (p.path[own.size()] == '.' || p.path[own.size()] == '['))
      return false;
  }
  return true;
}

bool SettingsReader::has(const std::string& key) const {
  auto e = find_entry(impl_->node, key);
  return e && !e->value.IsNull();
}

int SettingsReader::line(const std::string& key) const {
  if (!key.empty()) {
    if (auto e = find_entry(impl_->node, key)) {
      if (int l = entry_line(*e)) return l;
    }
  }
  // A missing key points at the section's own key ("endpoint:"), where it should be added.
  return impl_->fallback_line ? impl_->fallback_line : line_of(impl_->node);
}

void SettingsReader::problem(const std::string& key, const std::string& message) {
  impl_->log->add(line(key), join_path(impl_->path, key), message);
}

std::string SettingsReader::string(const std::string& key, const std::string& fallback) {
  impl_->known.insert(key);
  auto e = find_entry(impl_->node, key);
  if (!e || e->value.IsNull()) return fallback;
  if (!e->value.IsScalar()) {
    problem(key, "expected a text value, found " + describe_kind(e->value));
    return fallback;
  }
  return e->value.Scalar();
}

std::string SettingsReader::required_string(const std::string& key) {
  if (!has(key)) {
    impl_->known.insert(key);
    problem(key, "required");
    return "";
  }
  return string(key, "");
}

std::int64_t SettingsReader::integer(const std::string& key, std::int64_t fallback, std::int64_t min,
                                     std::int64_t max) {
  std::string text = string(key, "");
  if (text.empty()) return fallback;
  auto v = parse_whole<std::int64_t>(text);
  if (!v) {
    problem(key, "expected a whole number, found '" + text + "'");
    return fallback;
  }
  if (*v < min || *v > max) {
    problem(key, text + " is out of range (" + std::to_string(min) + " to " + std::to_string(max) + ")");
    return fallback;
  }
  return *v;
}

std::uint64_t SettingsReader::byte_size(const std::string& key, std::uint64_t fallback, std::uint64_t min,
                                        std::uint64_t max) {
  std::string text = string(key, "");
  if (text.empty()) return fallback;
  auto v = parse_byte_size(text);
  if (!v) {
    problem(key, "expected a size such as 10MB, 512KB or a number of bytes, found '" + text + "'");
    return fallback;
  }
  if (*v < min || *v > max) {
    problem(key, text + " is out of range (" + std::to_string(min) + " to " + std::to_string(max) + " bytes)");
    return fallback;
  }
  return *v;
}

double SettingsReader::number(const std::string& key, double fallback, double min, double max) {
  std::string text = string(key, "");
  if (text.empty()) return fallback;
  double v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(v)) {
    problem(key, "expected a number, found '" + text + "'");
    return fallback;
  }
  if (v < min || v > max) {
    std::string range = std::to_string(min) + " to " + std::to_string(max);
    problem(key, text + " is out of range (" + range + ")");
    return fallback;
  }
  return v;
}

bool SettingsReader::boolean(const std::string& key, bool fallback) {
  std::string text = string(key, "");
  if (text.empty()) return fallback;
  if (text == "true") return true;
  if (text == "false") return false;
  problem(key, "expected true or false, found '" + text + "'");
  return fallback;
}

std::chrono::milliseconds SettingsReader::duration(const std::string& key, std::chrono::milliseconds fallback) {
  std::string text = string(key, "");
  if (text.empty()) return fallback;
  auto v = parse_duration_ms(text);
  if (!v) {
    problem(key, "expected a duration such as 250ms, 10s, 5m, 1h, 3d or a number of ms, found '" + text + "'");
    return fallback;
  }
  return std::chrono::milliseconds(*v);
}

std::vector<SettingsReader::Located> SettingsReader::located_strings(const std::string& key) {
  impl_->known.insert(key);
  std::vector<Located> out;
  auto e = find_entry(impl_->node, key);
  if (!e || e->value.IsNull()) return out;
  std::string base = join_path(impl_->path, key);
  if (e->value.IsScalar()) {
    out.push_back(Located{e->value.Scalar(), base, entry_line(*e)});
    return out;
  }
  if (!e->value.IsSequence()) {
    problem(key, "expected a value or a list of values, found " + describe_kind(e->value));
    return out;
  }
  std::size_t i = 0;
  for (const YAML::Node& item : e->value) {
    std::string item_path = base + "[" + std::to_string(i++) + "]";
    if (!item.IsScalar()) {
      impl_->log->add(line_of(item), item_path, "expected a value, found " + describe_kind(item));
      continue;
    }
    out.push_back(Located{item.Scalar(), item_path, line_of(item)});
  }
  return out;
}

std::vector<std::string> SettingsReader::strings(const std::string& key) {
  std::vector<std::string> out;
  for (auto& l : located_strings(key)) out.push_back(std::move(l.value));
  return out;
}

SettingsReader SettingsReader::section(const std::string& key) {
  if (auto c = child(key)) return std::move(*c);
  auto impl = std::make_shared<Impl>();
  impl->node = YAML::Node(YAML::NodeType::Null);
  impl->path = join_path(impl_->path, key);
  impl->log = impl_->log;
  impl->fallback_line = impl_->fallback_line;
  return SettingsReader(std::move(impl));
}

std::string SettingsReader::file_path(const std::string& key, const std::string& fallback) {
  auto value = string(key, fallback);
  if (value.empty()) return value;
  std::filesystem::path p(value);
  if (p.is_relative()) p = std::filesystem::path(impl_->log->file).parent_path() / p;
  return p.lexically_normal().string();
}

std::optional<SettingsReader> SettingsReader::child(const std::string& key) {
  impl_->known.insert(key);
  auto e = find_entry(impl_->node, key);
  if (!e || e->value.IsNull()) return std::nullopt;
  if (!e->value.IsMap()) {
    problem(key, "expected a mapping of settings, found " + describe_kind(e->value));
    return std::nullopt;
  }
  auto impl = std::make_shared<Impl>();
  impl->node = e->value;
  impl->path = join_path(impl_->path, key);
  impl->log = impl_->log;
  impl->fallback_line = line_of(e->key);
  return SettingsReader(std::move(impl));
}

std::vector<SettingsReader> SettingsReader::sequence(const std::string& key) {
  impl_->known.insert(key);
  std::vector<SettingsReader> out;
  auto e = find_entry(impl_->node, key);
  if (!e || e->value.IsNull()) return out;
  if (!e->value.IsSequence()) {
    problem(key, "expected a list, found " + describe_kind(e->value));
    return out;
  }
  std::string base = join_path(impl_->path, key);
  std::size_t i = 0;
  for (const YAML::Node& item : e->value) {
    std::string item_path = base + "[" + std::to_string(i++) + "]";
    if (!item.IsMap()) {
      impl_->log->add(line_of(item), item_path, "expected a mapping of settings, found " + describe_kind(item));
      continue;
    }
    auto impl = std::make_shared<Impl>();
    impl->node = item;
    impl->path = item_path;
    impl->log = impl_->log;
    impl->fallback_line = line_of(item);
    out.emplace_back(std::move(impl));
  }
  return out;
}

void SettingsReader::declare_listener(const std::string& key, const std::string& address,
                                      const std::string& protocol, const std::string& mount) {
  impl_->log->listeners.push_back(DeclaredListener{address, protocol, mount, join_path(impl_->path, key), line(key)});
}

void SettingsReader::declare_partner_reference(const std::string& key, const std::string& partner_id) {
  impl_->log->partner_references.push_back(
      DeclaredPartnerReference{partner_id, join_path(impl_->path, key), line(key)});
}

void SettingsReader::finish() {
  if (impl_->finished) return;
  impl_->finished = true;
  if (!impl_->node.IsMap()) return;
  std::map<std::string, int, std::less<>> seen;
  for (auto it = impl_->node.begin(); it != impl_->node.end(); ++it) {
    YAML::Node key_node = it->first;  // a copy: it-> returns a temporary proxy
    std::string key = key_node.IsScalar() ? key_node.Scalar() : "?";
    std::string path = join_path(impl_->path, key);
    if (auto [pos, fresh] = seen.emplace(key, line_of(key_node)); !fresh) {
      impl_->log->add(line_of(key_node), path, "duplicate key (first at line " + std::to_string(pos->second) + ")");
      continue;
    }
    if (impl_->known.contains(key)) continue;
    std::string message = "unknown key '" + key + "'";
    // Suggest the closest key this section reads: typos are the usual cause.
    std::string best;
    std::size_t best_distance = 3;
    for (const auto& k : impl_->known) {
      auto d = edit_distance(key, k);
      if (d < best_distance) best_distance = d, best = k;
    }
    if (!best.empty()) message += " (did you mean '" + best + "'?)";
    impl_->log->add(line_of(key_node), path, message);
  }
}

// ---- address checks ----

namespace {

bool valid_port(std::string_view p) {
  if (p.empty() || p.size() > 5) return false;
  auto v = parse_whole<unsigned>(p);
  return v && *v <= 65535;
}

bool valid_ipv4(std::string_view h) {
  int parts = 0;
  while (true) {
    auto dot = h.find('.');
    auto part = h.substr(0, dot);
    if (part.empty() || part.size() > 3) return false;
    auto v = parse_whole<unsigned>(part);
    if (!v || *v > 255) return false;
    ++parts;
    if (dot == std::string_view::npos) break;
    h.remove_prefix(dot + 1);
  }
  return parts == 4;
}

bool valid_ipv6_text(std::string_view h) {
  if (h.empty() || h.find(':') == std::string_view::npos) return false;
  return std::all_of(h.begin(), h.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' || c == '.';
  });
}

bool valid_hostname(std::string_view h) {
  if (h.empty() || h.size() > 253 || h.front() == '-' || h.front() == '.') return false;
  return std::all_of(h.begin(), h.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '.';
  });
}

}  // namespace

std::string check_listen_address(const std::string& value) {
  std::string_view v = value;
  std::string_view host, port;
  if (!v.empty() && v.front() == '[') {
    auto close = v.find("]:");
    if (close == std::string_view::npos) return "expected [IPv6]:port, e.g. [::1]:8080";
    host = v.substr(1, close - 1);
    port = v.substr(close + 2);
    if (!valid_ipv6_text(host)) return "'" + std::string(host) + "' is not an IPv6 address";
  } else {
    auto colon = v.rfind(':');
    if (colon == std::string_view::npos) return "expected host:port, e.g. 127.0.0.1:8080";
    host = v.substr(0, colon);
    port = v.substr(colon + 1);
    if (host != "localhost" && !valid_ipv4(host))
      return "host '" + std::string(host) + "' must be an IPv4 address, [IPv6] or localhost";
  }
  if (!valid_port(port)) return "port '" + std::string(port) + "' must be a number from 0 to 65535";
  return "";
}

bool loopback_listen_address(std::string_view value) {
  auto colon = value.rfind(':');
  auto host = value.substr(0, colon == std::string_view::npos ? value.size() : colon);
  return host == "localhost" || host == "[::1]" || host.starts_with("127.");
}

std::optional<HttpUrl> split_http_url(std::string_view v, std::string& why) {
  HttpUrl u;
  if (v.starts_with("http://")) v.remove_prefix(7);
  else if (v.starts_with("https://")) u.https = true, v.remove_prefix(8);
  else return why = "URL must start with http:// or https://", std::nullopt;
  const auto end = v.find_first_of("/?#");
  std::string_view authority = v.substr(0, end);
  if (end != std::string_view::npos) u.rest = v.substr(end, v.find('#', end) - end);
  if (auto at = authority.rfind('@'); at != std::string_view::npos) {
    u.userinfo = authority.substr(0, at);
    authority.remove_prefix(at + 1);
  }
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return why = "unclosed '[' in URL host", std::nullopt;
    u.host = authority.substr(1, close - 1);
    u.ipv6 = true;
    auto after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':') return why = "unexpected text after ']' in URL host", std::nullopt;
    if (!after.empty()) u.port = after.substr(1), u.port_given = true;
  } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    u.host = authority.substr(0, colon);
    u.port = authority.substr(colon + 1);
    u.port_given = true;
  } else {
    u.host = authority;
  }
  return u;
}

std::string check_http_url(const std::string& value) {
  std::string why;
  auto url = split_http_url(value, why);
  if (!url) return why;
  if (url->ipv6 && !valid_ipv6_text(url->host)) return "'" + url->host + "' is not an IPv6 address";
  if (url->port_given && !valid_port(url->port))
    return "port '" + url->port + "' must be a number from 0 to 65535";
  if (url->ipv6) return "";
  if (url->host.empty()) return "URL has no host";
  if (!valid_hostname(url->host)) return "'" + url->host + "' is not a valid host name";
  return "";
}

}  // namespace tellonce
