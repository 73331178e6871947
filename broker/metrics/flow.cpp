#include "broker/metrics/flow.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <vector>

namespace tellonce::metrics {
namespace {

constexpr std::uint64_t count_bits = 40;
constexpr std::uint64_t count_mask = (std::uint64_t{1} << count_bits) - 1;
constexpr std::uint64_t minute_mask = (std::uint64_t{1} << 24) - 1;  // 24 bits of minutes: 31 years

std::uint64_t minute_tag(std::int64_t minute) { return static_cast<std::uint64_t>(minute) & minute_mask; }
std::int64_t minute_of(std::int64_t ms) { return ms / 60'000; }

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

void write_string(JsonWriter& w, std::string_view s) { w.String(s.data(), static_cast<rapidjson::SizeType>(s.size())); }

void write_series(JsonWriter& w, const char* key, const MinuteCounts& counts, std::int64_t first_minute) {
  w.Key(key);
  w.StartArray();
  for (int i = 0; i < FlowRecorder::minutes; ++i) w.Uint64(counts.at(first_minute + i));
  w.EndArray();
}

}  // namespace

void MinuteCounts::add(std::int64_t minute, std::uint64_t n) {
  auto& slot = slots_[static_cast<std::size_t>(minute) % slots];
  const std::uint64_t tag = minute_tag(minute);
  std::uint64_t seen = slot.load(std::memory_order_relaxed);
  for (;;) {
    const std::uint64_t seen_tag = seen >> count_bits;
    if (seen_tag != tag && seen_tag > tag) return;  // the slot already holds a later minute: too late to count
    const std::uint64_t count = seen_tag == tag ? (seen & count_mask) : 0;
    const std::uint64_t next = tag << count_bits | std::min(count + n, count_mask);
    if (slot.compare_exchange_weak(seen, next, std::memory_order_relaxed)) return;
  }
}

std::uint64_t MinuteCounts::at(std::int64_t minute) const {
  const std::uint64_t v = slots_[static_cast<std::size_t>(minute) % slots].load(std::memory_order_relaxed);
  return (v >> count_bits) == minute_tag(minute) ? (v & count_mask) : 0;
}

void FlowRecorder::record_in(std::string_view channel, bool accepted, std::int64_t now_ms) {
  auto& c = in_.with({channel});
  (accepted ? c.first : c.second).add(minute_of(now_ms));
}

void FlowRecorder::record_rejection_reason(std::string_view reason, std::int64_t now_ms) {
  reasons_.with({reason}).add(minute_of(now_ms));
}

void FlowRecorder::record_out(std::string_view destination, bool delivered, std::int64_t now_ms) {
  auto& c = out_.with({destination});
  (delivered ? c.first : c.second).add(minute_of(now_ms));
}

std::string FlowRecorder::json(std::int64_t now_ms) const {
  const std::int64_t first = minute_of(now_ms) - (minutes - 1);
  rapidjson::StringBuffer buffer;
  JsonWriter w(buffer);
  w.StartObject();
  w.Key("minuteStarts");
  w.StartArray();
  for (int i = 0; i < minutes; ++i) w.Int64((first + i) * 60'000);
  w.EndArray();
  w.Key("in");
  w.StartObject();
  in_.for_each([&](const std::vector<std::string>& labels, const InOut& c) {
    write_string(w, labels[0]);
    w.StartObject();
    write_series(w, "accepted", c.first, first);
    write_series(w, "rejected", c.second, first);
    w.EndObject();
  });
  w.EndObject();
  w.Key("out");
  w.StartObject();
  out_.for_each([&](const std::vector<std::string>& labels, const InOut& c) {
    write_string(w, labels[0]);
    w.StartObject();
    write_series(w, "delivered", c.first, first);
    write_series(w, "failed", c.second, first);
    w.EndObject();
  });
  w.EndObject();
  std::vector<std::pair<std::string, std::uint64_t>> reasons;
  reasons_.for_each([&](const std::vector<std::string>& labels, const MinuteCounts& c) {
    std::uint64_t total = 0;
    for (int i = 0; i < minutes; ++i) total += c.at(first + i);
    if (total > 0) reasons.emplace_back(labels[0], total);
  });
  std::stable_sort(reasons.begin(), reasons.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  if (reasons.size() > 5) reasons.resize(5);
  w.Key("topRejections");
  w.StartArray();
  for (const auto& [reason, count] : reasons) {
    w.StartObject();
    w.Key("reason");
    write_string(w, reason);
    w.Key("count");
    w.Uint64(count);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace tellonce::metrics
