// Per-destination circuit: when a partner is failing, stop sending it anything, probe it with
// one record at a time (backing off between probes), and open the flood gates again once it
// answers. Pure state machine: every call takes the time (ms since epoch) explicitly; the
// Dispatcher owns one per destination and guards it with its own mutex (not thread-safe).
//
//   closed --partner failure--> open --probe due, a worker admitted--> probing
//   probing --probe failed--> open (next probe after a longer backoff)
//   open/probing --any record answered (delivered, or refused for good)--> closed
//
// "Answered" closes the circuit even for a permanent refusal: the partner is up. The broker's
// own failures (out of descriptors...) never change the state: they hold the destination for a
// moment (hold_until) without blaming the partner.
#pragma once

#include "broker/config/config.hpp"

#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>

namespace tellonce {

class Circuit {
 public:
  enum class State { closed, open, probing };
  static constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();

  struct Change {
    State from = State::closed;
    State to = State::closed;
  };

  // What a worker that wants to take a job may do now.
  struct Admission {
    enum class Kind { send, probe, wait } kind = Kind::send;
    std::int64_t wait_until_ms = never;  // with wait: ask again then (never: when the state changes)
    std::optional<Change> change;        // open -> probing when this admission made the probe
  };

  explicit Circuit(RetryPolicy policy) : policy_(policy) {}

  Admission admit(std::int64_t now_ms);
  // Whether a worker admitted earlier with `send` may still send (the circuit may have opened
  // while it waited for a job). A probe may always send.
  bool sending_allowed(std::int64_t now_ms) const { return state_ == State::closed && now_ms >= hold_until_; }

  // The partner answered a record (delivered, or refused it for good): closes the circuit.
  std::optional<Change> answered(std::int64_t now_ms);
  // The partner could not take a record (no answer, or "try later"). Opens a closed circuit; a
  // failed probe reopens it with the next backoff. Other failures while open change nothing.
  std::optional<Change> failed(std::int64_t now_ms, bool probe, double random01);
  // The probe ended without the partner's verdict (the broker's own failure, a store error,
  // no job to send): back to open, next probe due at `retry_at_ms`, backoff unchanged.
  void probe_untried(std::int64_t retry_at_ms);
  // The broker's own resources failed: nobody sends before until_ms; the state is unchanged.
  void hold(std::int64_t until_ms);

  State state() const { return state_; }
  std::int64_t next_probe_at() const { return probe_at_; }
  int failed_probes() const { return failed_probes_; }
  std::int64_t opened_at() const { return opened_at_; }
  int probes() const { return probes_; }  // probes sent since the circuit opened

 private:
  RetryPolicy policy_;
  State state_ = State::closed;
  std::int64_t probe_at_ = 0;
  std::int64_t hold_until_ = 0;
  std::int64_t opened_at_ = 0;
  int failed_probes_ = 0;
  int probes_ = 0;
};

std::string_view to_string(Circuit::State s);

}  // namespace tellonce
