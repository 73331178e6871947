#include "broker/delivery/circuit.hpp"

#include <gtest/gtest.h>

namespace tellonce {
namespace {

using Kind = Circuit::Admission::Kind;
using State = Circuit::State;

RetryPolicy policy() {
  RetryPolicy p;
  p.initial_backoff = std::chrono::milliseconds(500);
  p.max_backoff = std::chrono::milliseconds(4000);
  p.multiplier = 2.0;
  p.jitter = 0.0;
  return p;
}

TEST(Circuit, ClosedSendsAndAPartnerFailureOpensIt) {
  Circuit c(policy());
  EXPECT_EQ(c.admit(1000).kind, Kind::send);
  EXPECT_TRUE(c.sending_allowed(1000));
  auto change = c.failed(1000, false, 0.5);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->from, State::closed);
  EXPECT_EQ(change->to, State::open);
  EXPECT_EQ(c.next_probe_at(), 1500);
  EXPECT_FALSE(c.sending_allowed(1000));  // a worker that got a job meanwhile puts it back
}

TEST(Circuit, OpenHoldsEveryoneThenAdmitsExactlyOneProbe) {
  Circuit c(policy());
  c.failed(1000, false, 0.5);
  auto early = c.admit(1200);
  EXPECT_EQ(early.kind, Kind::wait);
  EXPECT_EQ(early.wait_until_ms, 1500);
  auto probe = c.admit(1500);
  EXPECT_EQ(probe.kind, Kind::probe);
  ASSERT_TRUE(probe.change);
  EXPECT_EQ(probe.change->to, State::probing);
  auto other = c.admit(1500);
  EXPECT_EQ(other.kind, Kind::wait);
  EXPECT_EQ(other.wait_until_ms, Circuit::never);  // until the probe ends
  EXPECT_EQ(c.probes(), 1);
}

TEST(Circuit, FailedProbesBackOffExponentiallyUpToTheCap) {
  Circuit c(policy());
  std::int64_t now = 0;
  c.failed(now, false, 0.5);
  std::vector<std::int64_t> gaps;
  for (int i = 0; i < 6; ++i) {
    now = c.next_probe_at();
    ASSERT_EQ(c.admit(now).kind, Kind::probe);
    auto change = c.failed(now, true, 0.5);
    ASSERT_TRUE(change);
    EXPECT_EQ(change->from, State::probing);
    EXPECT_EQ(change->to, State::open);
    gaps.push_back(c.next_probe_at() - now);
  }
  EXPECT_EQ(gaps, (std::vector<std::int64_t>{1000, 2000, 4000, 4000, 4000, 4000}));
  EXPECT_EQ(c.failed_probes(), 6);
}

TEST(Circuit, FailuresOfRecordsSentBeforeItOpenedChangeNothing) {
  Circuit c(policy());
  c.failed(1000, false, 0.5);
  EXPECT_FALSE(c.failed(1001, false, 0.5));
  EXPECT_EQ(c.next_probe_at(), 1500);  // not pushed back by the stragglers
  ASSERT_EQ(c.admit(1500).kind, Kind::probe);
  EXPECT_FALSE(c.failed(1600, false, 0.5));  // not the probe
  EXPECT_EQ(c.state(), State::probing);
}

TEST(Circuit, AnAnswerClosesIt) {
  Circuit c(policy());
  c.failed(1000, false, 0.5);
  ASSERT_EQ(c.admit(1500).kind, Kind::probe);
  auto change = c.answered(1600);
  ASSERT_TRUE(change);
  EXPECT_EQ(change->from, State::probing);
  EXPECT_EQ(change->to, State::closed);
  EXPECT_EQ(c.admit(1600).kind, Kind::send);
  EXPECT_FALSE(c.answered(1700));  // already closed: no change to log
  // The next outage starts from the first backoff again.
  c.failed(2000, false, 0.5);
  EXPECT_EQ(c.next_probe_at(), 2500);
}

TEST(Circuit, AProbeWithoutAVerdictGoesBackWithoutMoreBackoff) {
  Circuit c(policy());
  c.failed(0, false, 0.5);
  ASSERT_EQ(c.admit(500).kind, Kind::probe);
  c.probe_untried(900);
  EXPECT_EQ(c.state(), State::open);
  EXPECT_EQ(c.failed_probes(), 0);
  EXPECT_EQ(c.admit(800).kind, Kind::wait);
  EXPECT_EQ(c.admit(900).kind, Kind::probe);
}

TEST(Circuit, TheBrokersOwnFaultHoldsWithoutChangingState) {
  Circuit c(policy());
  c.hold(2000);
  EXPECT_EQ(c.state(), State::closed);
  auto a = c.admit(1000);
  EXPECT_EQ(a.kind, Kind::wait);
  EXPECT_EQ(a.wait_until_ms, 2000);
  EXPECT_FALSE(a.change);
  EXPECT_FALSE(c.sending_allowed(1999));
  EXPECT_EQ(c.admit(2000).kind, Kind::send);
  // While open, a hold past the probe time delays the probe.
  c.failed(3000, false, 0.5);
  c.hold(4000);
  EXPECT_EQ(c.admit(3500).wait_until_ms, 4000);
  EXPECT_EQ(c.admit(4000).kind, Kind::probe);
}

}  // namespace
}  // namespace tellonce
