#include "broker/delivery/circuit.hpp"

#include "broker/delivery/retry_policy.hpp"

#include <algorithm>

namespace tellonce {

std::string_view to_string(Circuit::State s) {
  switch (s) {
    case Circuit::State::closed: return "closed";
    case Circuit::State::open: return "open";
    case Circuit::State::probing: return "probing";
  }
  return "?";
}

Circuit::Admission Circuit::admit(std::int64_t now_ms) {
  Admission a;
  switch (state_) {
    case State::closed:
      if (now_ms < hold_until_) {
        a.kind = Admission::Kind::wait;
        a.wait_until_ms = hold_until_;
      }
      return a;
    case State::open: {
      const std::int64_t due = std::max(probe_at_, hold_until_);
      if (now_ms < due) {
        a.kind = Admission::Kind::wait;
        a.wait_until_ms = due;
        return a;
      }
      state_ = State::probing;
      ++probes_;
      a.kind = Admission::Kind::probe;
      a.change = Change{State::open, State::probing};
      return a;
    }
    case State::probing:
      a.kind = Admission::Kind::wait;  // until the probe ends
      return a;
  }
  return a;
}

std::optional<Circuit::Change> Circuit::answered(std::int64_t) {
  if (state_ == State::closed) return std::nullopt;
  Change c{state_, State::closed};
  state_ = State::closed;
  failed_probes_ = 0;
  probes_ = 0;
  return c;
}

std::optional<Circuit::Change> Circuit::failed(std::int64_t now_ms, bool probe, double random01) {
  if (state_ == State::closed) {
    state_ = State::open;
    opened_at_ = now_ms;
    failed_probes_ = 0;
    probes_ = 0;
    probe_at_ = now_ms + backoff_ms(policy_, 1, random01);
    return Change{State::closed, State::open};
  }
  if (state_ == State::probing && probe) {
    state_ = State::open;
    ++failed_probes_;
    probe_at_ = now_ms + backoff_ms(policy_, failed_probes_ + 1, random01);
    return Change{State::probing, State::open};
  }
  return std::nullopt;  // records sent before the circuit opened, failing one after another
}

void Circuit::probe_untried(std::int64_t retry_at_ms) {
  if (state_ != State::probing) return;
  state_ = State::open;
  probe_at_ = retry_at_ms;
  if (probes_ > 0) --probes_;
}

void Circuit::hold(std::int64_t until_ms) { hold_until_ = std::max(hold_until_, until_ms); }

}  // namespace tellonce
