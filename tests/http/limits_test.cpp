// Token bucket, partner limits, connection caps and log throttling, on an injected clock: no
// test sleeps or measures time.
#include "tellonce/adapter.hpp"
#include "tellonce/http_server.hpp"
#include "tellonce/limits.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace tellonce {
namespace {

constexpr std::int64_t kSecond = 1'000'000'000;
constexpr std::int64_t kStart = 1000 * kSecond;  // any point on a monotonic clock

TEST(TokenBucket, AFullBucketGivesItsBurstAtOnceThenRefuses) {
  TokenBucket bucket(5, 10);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(bucket.take(kStart), 0) << "token " << i;
  // The eleventh waits for one token: 1/5 s.
  EXPECT_EQ(bucket.take(kStart), kSecond / 5);
  // A refusal takes nothing: asking again at the same time gives the same wait.
  EXPECT_EQ(bucket.take(kStart), kSecond / 5);
}

TEST(TokenBucket, RefillsAtItsRate) {
  TokenBucket bucket(5, 10);
  for (int i = 0; i < 10; ++i) ASSERT_EQ(bucket.take(kStart), 0);
  // Half a second later 2.5 tokens have come back: two can be taken, the third waits 0.1 s.
  std::int64_t later = kStart + kSecond / 2;
  EXPECT_EQ(bucket.take(later), 0);
  EXPECT_EQ(bucket.take(later), 0);
  EXPECT_EQ(bucket.take(later), kSecond / 10);
}

TEST(TokenBucket, NeverHoldsMoreThanItsBurst) {
  TokenBucket bucket(2, 3);
  ASSERT_EQ(bucket.take(kStart), 0);
  // An hour of quiet refills it to 3, not to 7,200.
  std::int64_t later = kStart + 3600 * kSecond;
  for (int i = 0; i < 3; ++i) EXPECT_EQ(bucket.take(later), 0) << "token " << i;
  EXPECT_GT(bucket.take(later), 0);
}

TEST(TokenBucket, SlowRatesWaitLong) {
  TokenBucket bucket(0.1, 1);  // one record every ten seconds
  EXPECT_EQ(bucket.take(kStart), 0);
  EXPECT_EQ(bucket.take(kStart), 10 * kSecond);
  EXPECT_EQ(bucket.take(kStart + 4 * kSecond), 6 * kSecond);
  EXPECT_EQ(bucket.take(kStart + 10 * kSecond), 0);
}

TEST(TokenBucket, RetryAfterIsWholeSecondsRoundedUpAndAtLeastOne) {
  EXPECT_EQ(TokenBucket::retry_after_seconds(1), 1);
  EXPECT_EQ(TokenBucket::retry_after_seconds(kSecond / 5), 1);
  EXPECT_EQ(TokenBucket::retry_after_seconds(kSecond), 1);
  EXPECT_EQ(TokenBucket::retry_after_seconds(kSecond + 1), 2);
  EXPECT_EQ(TokenBucket::retry_after_seconds(10 * kSecond), 10);
}

struct FakeClock {
  std::shared_ptr<std::int64_t> now = std::make_shared<std::int64_t>(kStart);
  LimitClock fn() const {
    return [now = now] { return *now; };
  }
};

TEST(PartnerLimits, EachPartnerHasItsOwnBucket) {
  FakeClock clock;
  PartnerLimits limits({{"gp-a", RateLimit{1, 2, 0}}, {"gp-b", RateLimit{1, 2, 0}}}, 0, clock.fn());
  std::vector<std::pair<std::string, std::string>> told;
  limits.on_throttled([&](std::string_view p, std::string_view ch) { told.emplace_back(p, ch); });
  EXPECT_FALSE(limits.admit("gp-a", "fhir"));
  EXPECT_FALSE(limits.admit("gp-a", "fhir"));
  auto refused = limits.admit("gp-a", "fhir");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->retry_after_seconds, 1);
  EXPECT_EQ(refused->limit, "partner 'gp-a' may send 1 records per second (burst 2)");
  // gp-a's flood does not touch gp-b's bucket, nor a partner with no limit.
  EXPECT_FALSE(limits.admit("gp-b", "fhir"));
  EXPECT_FALSE(limits.admit("gp-b", "mllp"));
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(limits.admit("trust-x", "fhir"));
  ASSERT_EQ(told.size(), 1u);
  EXPECT_EQ(told[0], std::make_pair(std::string("gp-a"), std::string("fhir")));
  *clock.now += kSecond;
  EXPECT_FALSE(limits.admit("gp-a", "fhir"));
}

TEST(PartnerLimits, BurstDefaultsToTheRateAndAtLeastOne) {
  FakeClock clock;
  PartnerLimits limits({{"a", RateLimit{3, 0, 0}}, {"b", RateLimit{0.5, 0, 0}}}, 0, clock.fn());
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(limits.admit("a", "c"));
  EXPECT_TRUE(limits.admit("a", "c"));
  EXPECT_FALSE(limits.admit("b", "c"));
  auto refused = limits.admit("b", "c");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->retry_after_seconds, 2);
  EXPECT_EQ(refused->limit, "partner 'b' may send 0.5 records per second (burst 1)");
}

TEST(PartnerLimits, ConnectionCapsAreKnownPerPartner) {
  PartnerLimits limits({{"a", RateLimit{0, 0, 2}}, {"b", RateLimit{5, 5, 0}}}, 0);
  EXPECT_EQ(limits.max_connections("a"), 2u);
  EXPECT_EQ(limits.max_connections("b"), 0u);
  EXPECT_EQ(limits.max_connections("nobody"), 0u);
  EXPECT_TRUE(limits.caps_connections());
  EXPECT_FALSE(limits.admit("a", "c"));  // a cap but no rate: never throttled
  EXPECT_FALSE(PartnerLimits({{"b", RateLimit{5, 5, 0}}}, 0).caps_connections());
  EXPECT_TRUE(PartnerLimits({}, 4).caps_connections());
}

class CertDirectory final : public PartnerDirectory {
 public:
  std::string_view by_api_key(std::string_view) const override { return {}; }
  std::string_view by_id(std::string_view) const override { return {}; }
  std::string_view by_hl7v2_facility(std::string_view) const override { return {}; }
  std::string_view by_certificate(std::string_view fingerprint, std::string_view) const override {
    if (fingerprint == "sha256:AA") return "gp-a";
    if (fingerprint == "sha256:BB") return "gp-b";
    return {};
  }
};

TEST(ConnectionCaps, PerAddressPlacesComeBackWhenSlotsEnd) {
  CertDirectory dir;
  PartnerLimits limits({}, 2);
  ConnectionCaps caps(limits, dir);
  auto first = caps.for_address("10.0.0.1");
  auto second = caps.for_address("10.0.0.1");
  ASSERT_TRUE(first && second);
  EXPECT_FALSE(caps.for_address("10.0.0.1"));
  EXPECT_TRUE(caps.for_address("10.0.0.2"));  // another address has places of its own
  EXPECT_EQ(caps.open("a:10.0.0.1"), 2u);
  first.reset();
  EXPECT_EQ(caps.open("a:10.0.0.1"), 1u);
  ConnectionCaps::Slot moved = std::move(*second);
  second.reset();  // the moved-from slot gives nothing back
  EXPECT_EQ(caps.open("a:10.0.0.1"), 1u);
  EXPECT_TRUE(caps.for_address("10.0.0.1"));
}

TEST(ConnectionCaps, PerPartnerByCertificate) {
  CertDirectory dir;
  PartnerLimits limits({{"gp-a", RateLimit{0, 0, 1}}}, 0);
  ConnectionCaps caps(limits, dir);
  std::string partner;
  auto held = caps.for_certificate("sha256:AA", "", partner);
  ASSERT_TRUE(held);
  EXPECT_EQ(partner, "gp-a");
  EXPECT_TRUE(held->held());
  EXPECT_FALSE(caps.for_certificate("sha256:AA", "", partner));
  EXPECT_EQ(partner, "gp-a");
  // gp-b has no cap; an unknown certificate names nobody; neither is refused nor counted.
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(caps.for_certificate("sha256:BB", "", partner));
  EXPECT_EQ(caps.open("p:gp-b"), 0u);
  EXPECT_TRUE(caps.for_certificate("sha256:CC", "", partner));
  EXPECT_EQ(partner, "");
  held.reset();
  EXPECT_TRUE(caps.for_certificate("sha256:AA", "", partner));
}

TEST(LogThrottle, OneLineASecondWithTheCountLeftOut) {
  FakeClock clock;
  LogThrottle throttle(std::chrono::seconds(1), clock.fn());
  std::uint64_t more = 99;
  ASSERT_TRUE(throttle.allow(more));
  EXPECT_EQ(more, 0u);
  for (int i = 0; i < 500; ++i) EXPECT_FALSE(throttle.allow(more));
  *clock.now += kSecond / 2;
  EXPECT_FALSE(throttle.allow(more));
  *clock.now += kSecond / 2;
  ASSERT_TRUE(throttle.allow(more));
  EXPECT_EQ(more, 501u);
  EXPECT_EQ(LogThrottle::more(more), " (and 501 more since the last line)");
  EXPECT_EQ(LogThrottle::more(0), "");
}

TEST(ThrottledResponse, Is429WithRetryAfterAndTheLimit) {
  HttpRequest req{http::verb::post, "/fhir/Patient", 11};
  auto res = throttled_response(req, Throttle{7, "partner 'gp-a' may send 1 records per second (burst 2)"});
  EXPECT_EQ(res.result(), http::status::too_many_requests);
  EXPECT_EQ(res[http::field::retry_after], "7");
  EXPECT_NE(res.body().find("\"throttled\""), std::string::npos);
  EXPECT_NE(res.body().find("partner 'gp-a' may send 1 records per second (burst 2)"), std::string::npos);
}

}  // namespace
}  // namespace tellonce
