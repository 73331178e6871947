// Records per minute over the last 15 minutes, for the console's dashboard (GET /api/flow):
// records in per channel (accepted, rejected), deliveries out per destination (delivered,
// failed), and the most frequent rejection reasons.
//
// Cost and threading: record_*() may be called from any thread; each is a per-thread lookup
// of its label (registry.hpp, Family::with) and one compare-and-swap on a minute slot, no lock.
// A slot holds its minute and its count in one 64-bit word, so a count is never added to the
// wrong minute when the minute turns. json() may run at the same time as recording.
#pragma once

#include "broker/metrics/registry.hpp"

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

namespace tellonce::metrics {

// Counts for the last `slots` minutes; a slot is reused when its minute comes round again.
class MinuteCounts {
 public:
  static constexpr std::size_t slots = 16;  // 15 minutes shown, one spare
  void add(std::int64_t minute, std::uint64_t n = 1);
  std::uint64_t at(std::int64_t minute) const;  // 0 for a minute no longer (or not yet) held

 private:
  // minute (low 24 bits) << 40 | count (40 bits)
  std::array<std::atomic<std::uint64_t>, slots> slots_{};
};

class FlowRecorder {
 public:
  static constexpr int minutes = 15;
  static constexpr std::size_t max_reasons = 256;  // distinct reasons kept; later ones count as "overflow"

  void record_in(std::string_view channel, bool accepted, std::int64_t now_ms);
  void record_rejection_reason(std::string_view reason, std::int64_t now_ms);
  // delivered: the partner took it (or it was placed in its mailbox); failed: an attempt that failed.
  void record_out(std::string_view destination, bool delivered, std::int64_t now_ms);

  // {"minuteStarts":[ms x15], "in":{"<channel>":{"accepted":[15],"rejected":[15]}},
  //  "out":{"<destination>":{"delivered":[15],"failed":[15]}}, "topRejections":[{"reason","count"}]}
  // Oldest minute first; the last is the minute now_ms falls in. topRejections: at most 5
  // reasons, most frequent first, counted over the 15 minutes.
  std::string json(std::int64_t now_ms) const;

 private:
  struct InOut {
    MinuteCounts first, second;  // accepted/rejected or delivered/failed
  };
  Family<InOut> in_{"in", "", "", {"channel"}, [] { return std::make_unique<InOut>(); }, 1000};
  Family<InOut> out_{"out", "", "", {"destination"}, [] { return std::make_unique<InOut>(); }, 1000};
  Family<MinuteCounts> reasons_{"reasons", "", "", {"reason"}, [] { return std::make_unique<MinuteCounts>(); },
                                max_reasons};
};

}  // namespace tellonce::metrics
