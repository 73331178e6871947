// Metric types with Prometheus conventions and the text exposition format (version 0.0.4).
//
// Cost on the hot path: a Counter, Gauge or Histogram is a few relaxed atomics, no lock. A
// labelled child is found through Family::with(values): the first use of a label set on a
// thread takes the family's mutex once; later uses on that thread are one lookup in a
// per-thread table (hashing the values as string_views: nothing is allocated or built).
// Hold on to a child reference where the label set is fixed, to skip even that lookup.
//
// Threading: every method may be called from any thread. Children live as long as their
// family, and a family as long as its Registry. Rendering takes each family's mutex briefly
// to walk its children; the values it reads are relaxed loads, so a scrape sees each value at
// some moment during the scrape (Prometheus expects no more).
//
// Cardinality: a family keeps at most `max_children` label sets; later new ones all land on
// one child whose every label value is "overflow", so a partner sending made-up values cannot
// grow the process without bound.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tellonce::metrics {

// alignas: children of one family are updated from different threads; a cache line each keeps
// them from slowing one another down.
class alignas(64) Counter {
 public:
  void inc(std::uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

class alignas(64) Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Cumulative buckets are computed when rendering; each observation adds to one bucket.
class alignas(64) Histogram {
 public:
  explicit Histogram(std::span<const double> upper_bounds);  // ascending; +Inf is implied
  void observe(double v);
  std::span<const double> bounds() const { return bounds_; }
  std::uint64_t bucket(std::size_t i) const { return buckets_[i].load(std::memory_order_relaxed); }  // i <= bounds().size()
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds_.size() + 1 (the last: +Inf)
  std::atomic<double> sum_{0};
};

// Writes Prometheus text: escaping as the format requires, numbers as Prometheus reads them.
void append_escaped_label_value(std::string& out, std::string_view value);  // \ " newline
void append_escaped_help(std::string& out, std::string_view help);          // \ newline
void append_number(std::string& out, double v);                             // +Inf, -Inf, NaN, shortest form
void append_labels(std::string& out, std::span<const std::string> names, std::span<const std::string> values,
                   std::string_view extra_name = {}, std::string_view extra_value = {});

class FamilyBase {
 public:
  virtual ~FamilyBase() = default;
  virtual void render(std::string& out) const = 0;
};

namespace detail {
std::uint64_t next_family_id();
// The per-thread table behind Family::with: (family id, label values) -> child.
void* cached_child(std::uint64_t family, std::span<const std::string_view> values);
void cache_child(std::uint64_t family, std::span<const std::string_view> values, void* child);
}  // namespace detail

// A named metric with fixed label names and one child of type T per label set.
template <class T>
class Family : public FamilyBase {
 public:
  using Factory = std::function<std::unique_ptr<T>()>;
  Family(std::string name, std::string help, std::string type, std::vector<std::string> label_names,
         Factory make, std::size_t max_children)
      : id_(detail::next_family_id()), name_(std::move(name)), help_(std::move(help)), type_(std::move(type)),
        label_names_(std::move(label_names)), make_(std::move(make)), max_children_(max_children) {}

  // `values` in the order of the label names (missing ones are "").
  T& with(std::initializer_list<std::string_view> values) { return with(std::span(values.begin(), values.size())); }
  T& with(std::span<const std::string_view> values) {
    if (void* hit = detail::cached_child(id_, values)) return *static_cast<T*>(hit);
    T* child = find_or_add(values);
    detail::cache_child(id_, values, child);
    return *child;
  }

  // Calls f(label values, child) for each child in label order, under the family's mutex.
  template <class F>
  void for_each(F&& f) const {
    std::lock_guard lock(mu_);
    for (const auto& [values, child] : children_) f(values, *child);
  }

  const std::string& name() const { return name_; }
  std::span<const std::string> label_names() const { return label_names_; }

  // Prometheus text for the metric types (specialised in registry.cpp); nothing for other
  // child types (a Family may also just group per-label state, as flow.hpp's do).
  void render(std::string&) const override {}

 private:
  T* find_or_add(std::span<const std::string_view> values) {
    std::vector<std::string> key(label_names_.size());
    for (std::size_t i = 0; i < key.size() && i < values.size(); ++i) key[i] = std::string(values[i]);
    std::lock_guard lock(mu_);
    auto it = children_.find(key);
    if (it != children_.end()) return it->second.get();
    if (children_.size() >= max_children_) key.assign(label_names_.size(), "overflow");
    auto& slot = children_[key];
    if (!slot) slot = make_();
    return slot.get();
  }

  std::uint64_t id_;
  std::string name_, help_, type_;
  std::vector<std::string> label_names_;
  Factory make_;
  std::size_t max_children_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_;
};

template <>
void Family<Counter>::render(std::string& out) const;
template <>
void Family<Gauge>::render(std::string& out) const;
template <>
void Family<Histogram>::render(std::string& out) const;

// The families of one process (or one test), rendered in registration order.
class Registry {
 public:
  static constexpr std::size_t default_max_children = 2000;

  Family<Counter>& counter(std::string name, std::string help, std::vector<std::string> labels,
                           std::size_t max_children = default_max_children);
  Family<Gauge>& gauge(std::string name, std::string help, std::vector<std::string> labels,
                       std::size_t max_children = default_max_children);
  Family<Histogram>& histogram(std::string name, std::string help, std::vector<std::string> labels,
                               std::vector<double> upper_bounds, std::size_t max_children = default_max_children);

  // The whole exposition, ending in a newline.
  std::string render() const;

 private:
  std::vector<std::unique_ptr<FamilyBase>> families_;  // appended before any rendering starts
};

}  // namespace tellonce::metrics
