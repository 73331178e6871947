#include "broker/metrics/registry.hpp"

#include <charconv>
#include <cmath>
#include <functional>
#include <unordered_map>

namespace tellonce::metrics {

Histogram::Histogram(std::span<const double> upper_bounds)
    : bounds_(upper_bounds.begin(), upper_bounds.end()),
      buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {}

void Histogram::observe(double v) {
  std::size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;  // a dozen bounds: a scan beats a search
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

void append_escaped_label_value(std::string& out, std::string_view value) {
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
}

void append_escaped_help(std::string& out, std::string_view help) {
  for (char c : help) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
}

void append_number(std::string& out, double v) {
  if (std::isnan(v)) { out += "NaN"; return; }
  if (std::isinf(v)) { out += v > 0 ? "+Inf" : "-Inf"; return; }
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, ec == std::errc() ? end : buf);
}

namespace {
void append_count(std::string& out, std::uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}

void append_header(std::string& out, const std::string& name, const std::string& help, std::string_view type) {
  out += "# HELP ";
  out += name;
  out += ' ';
  append_escaped_help(out, help);
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}
}  // namespace

void append_labels(std::string& out, std::span<const std::string> names, std::span<const std::string> values,
                   std::string_view extra_name, std::string_view extra_value) {
  if (names.empty() && extra_name.empty()) return;
  out += '{';
  bool first = true;
  auto one = [&](std::string_view name, std::string_view value) {
    if (!first) out += ',';
    first = false;
    out += name;
    out += "=\"";
    append_escaped_label_value(out, value);
    out += '"';
  };
  for (std::size_t i = 0; i < names.size(); ++i) one(names[i], i < values.size() ? values[i] : std::string_view());
  if (!extra_name.empty()) one(extra_name, extra_value);
  out += '}';
}

template <>
void Family<Counter>::render(std::string& out) const {
  append_header(out, name_, help_, "counter");
  for_each([&](const std::vector<std::string>& values, const Counter& c) {
    out += name_;
    append_labels(out, label_names_, values);
    out += ' ';
    append_count(out, c.value());
    out += '\n';
  });
}

template <>
void Family<Gauge>::render(std::string& out) const {
  append_header(out, name_, help_, "gauge");
  for_each([&](const std::vector<std::string>& values, const Gauge& g) {
    out += name_;
    append_labels(out, label_names_, values);
    out += ' ';
    append_number(out, g.value());
    out += '\n';
  });
}

template <>
void Family<Histogram>::render(std::string& out) const {
  append_header(out, name_, help_, "histogram");
  const std::string bucket_name = name_ + "_bucket";
  for_each([&](const std::vector<std::string>& values, const Histogram& h) {
    std::uint64_t cumulative = 0;
    std::string le;
    for (std::size_t i = 0; i <= h.bounds().size(); ++i) {
      cumulative += h.bucket(i);
      le.clear();
      if (i < h.bounds().size()) append_number(le, h.bounds()[i]);
      else le = "+Inf";
      out += bucket_name;
      append_labels(out, label_names_, values, "le", le);
      out += ' ';
      append_count(out, cumulative);
      out += '\n';
    }
    out += name_;
    out += "_sum";
    append_labels(out, label_names_, values);
    out += ' ';
    append_number(out, h.sum());
    out += '\n';
    out += name_;
    out += "_count";
    append_labels(out, label_names_, values);
    out += ' ';
    append_count(out, cumulative);  // the +Inf bucket: one total, consistent with the buckets
    out += '\n';
  });
}

namespace detail {

std::uint64_t next_family_id() {
  static std::atomic<std::uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

namespace {
// Ids are never reused, so an entry of a destroyed family (tests) is never looked up again.
struct CacheKey {
  std::uint64_t family;
  std::vector<std::string> values;
};
struct CacheProbe {
  std::uint64_t family;
  std::span<const std::string_view> values;
};

std::size_t hash_of(std::uint64_t family, auto&& values) {
  std::size_t h = std::hash<std::uint64_t>{}(family);
  for (const auto& v : values) h = h * 1099511628211ull ^ std::hash<std::string_view>{}(std::string_view(v));
  return h;
}

struct CacheHash {
  using is_transparent = void;
  std::size_t operator()(const CacheKey& k) const { return hash_of(k.family, k.values); }
  std::size_t operator()(const CacheProbe& k) const { return hash_of(k.family, k.values); }
};

struct CacheEqual {
  using is_transparent = void;
  template <class A, class B>
  bool operator()(const A& a, const B& b) const {
    if (a.family != b.family || a.values.size() != b.values.size()) return false;
    for (std::size_t i = 0; i < a.values.size(); ++i)
      if (std::string_view(a.values[i]) != std::string_view(b.values[i])) return false;
    return true;
  }
};

using ChildCache = std::unordered_map<CacheKey, void*, CacheHash, CacheEqual>;

ChildCache& thread_cache() {
  thread_local ChildCache cache;
  return cache;
}
}  // namespace

void* cached_child(std::uint64_t family, std::span<const std::string_view> values) {
  auto& cache = thread_cache();
  auto it = cache.find(CacheProbe{family, values});
  return it == cache.end() ? nullptr : it->second;
}

void cache_child(std::uint64_t family, std::span<const std::string_view> values, void* child) {
  // A thread that somehow met very many label sets starts its table again (the family keeps
  // the children; only the shortcut is lost).
  auto& cache = thread_cache();
  if (cache.size() > 4 * Registry::default_max_children) cache.clear();
  cache.emplace(CacheKey{family, std::vector<std::string>(values.begin(), values.end())}, child);
}

}  // namespace detail

Family<Counter>& Registry::counter(std::string name, std::string help, std::vector<std::string> labels,
                                   std::size_t max_children) {
  auto family = std::make_unique<Family<Counter>>(std::move(name), std::move(help), "counter", std::move(labels),
                                                  [] { return std::make_unique<Counter>(); }, max_children);
  auto& ref = *family;
  families_.push_back(std::move(family));
  return ref;
}

Family<Gauge>& Registry::gauge(std::string name, std::string help, std::vector<std::string> labels,
                               std::size_t max_children) {
  auto family = std::make_unique<Family<Gauge>>(std::move(name), std::move(help), "gauge", std::move(labels),
                                                [] { return std::make_unique<Gauge>(); }, max_children);
  auto& ref = *family;
  families_.push_back(std::move(family));
  return ref;
}

Family<Histogram>& Registry::histogram(std::string name, std::string help, std::vector<std::string> labels,
                                       std::vector<double> upper_bounds, std::size_t max_children) {
  auto bounds = std::make_shared<std::vector<double>>(std::move(upper_bounds));
  auto family = std::make_unique<Family<Histogram>>(
      std::move(name), std::move(help), "histogram", std::move(labels),
      [bounds] { return std::make_unique<Histogram>(*bounds); }, max_children);
  auto& ref = *family;
  families_.push_back(std::move(family));
  return ref;
}

std::string Registry::render() const {
  std::string out;
  out.reserve(16 * 1024);
  for (const auto& family : families_) family->render(out);
  return out;
}

}  // namespace tellonce::metrics
