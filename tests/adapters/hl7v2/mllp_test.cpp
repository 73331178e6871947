#include "hl7v2/mllp.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tellonce::hl7v2 {
namespace {

using Kind = FrameEvent::Kind;

std::vector<FrameEvent> drain(FrameReader& r) {
  std::vector<FrameEvent> out;
  while (auto e = r.next()) out.push_back(std::move(*e));
  return out;
}

std::string framed(std::string_view body) {
  std::string f;
  f += kMllpStart;
  f += body;
  f += kMllpEnd1;
  f += kMllpEnd2;
  return f;
}

TEST(MllpFrame, WrapsAndNormalisesSegmentEndsToCr) {
  EXPECT_EQ(mllp_frame("MSH|a\nPID|1\r\nPV1|1\r"), "\x0bMSH|a\rPID|1\rPV1|1\r\x1c\x0d");
  EXPECT_EQ(mllp_frame("MSH|a\nPID|1"), "\x0bMSH|a\rPID|1\r\x1c\x0d");
}

TEST(FrameReader, OneFrameInOneRead) {
  FrameReader r(1024);
  r.feed(framed("MSH|1\r"));
  const auto events = drain(r);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, Kind::message);
  EXPECT_EQ(events[0].message, "MSH|1\r");
  EXPECT_FALSE(r.inside_frame());
}

TEST(FrameReader, FrameSplitAtEveryByte) {
  const std::string bytes = framed("MSH|1\rPID|2\r") + framed("MSH|3\r");
  for (std::size_t cut = 1; cut < bytes.size(); ++cut) {
    FrameReader r(1024);
    r.feed(bytes.substr(0, cut));
    auto events = drain(r);
    r.feed(bytes.substr(cut));
    for (auto& e : drain(r)) events.push_back(std::move(e));
    ASSERT_EQ(events.size(), 2u) << "cut at " << cut;
    EXPECT_EQ(events[0].message, "MSH|1\rPID|2\r") << "cut at " << cut;
    EXPECT_EQ(events[1].message, "MSH|3\r") << "cut at " << cut;
  }
}

TEST(FrameReader, ByteAtATime) {
  FrameReader r(1024);
  const std::string bytes = framed("MSH|1\r");
  std::vector<FrameEvent> events;
  for (char c : bytes) {
    r.feed(std::string_view(&c, 1));
    for (auto& e : drain(r)) events.push_back(std::move(e));
    if (c == kMllpStart) {
      EXPECT_TRUE(r.inside_frame());
    }
  }
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].message, "MSH|1\r");
  EXPECT_FALSE(r.inside_frame());
}

TEST(FrameReader, SeveralFramesInOneRead) {
  FrameReader r(1024);
  r.feed(framed("A") + framed("B") + framed("C"));
  const auto events = drain(r);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].message, "A");
  EXPECT_EQ(events[1].message, "B");
  EXPECT_EQ(events[2].message, "C");
}

TEST(FrameReader, InsideFrameWhileAFrameIsOpen) {
  FrameReader r(1024);
  r.feed("\x0bMSH|1\r");
  EXPECT_FALSE(r.next().has_value());
  EXPECT_TRUE(r.inside_frame());
  r.feed("\x1c");
  EXPECT_FALSE(r.next().has_value());
  EXPECT_TRUE(r.inside_frame());
  r.feed("\x0d");
  const auto e = r.next();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->message, "MSH|1\r");
  EXPECT_FALSE(r.inside_frame());
}

TEST(FrameReader, TooLargeIsReportedOnceAndTheFrameSkipped) {
  FrameReader r(10);
  r.feed(std::string(1, kMllpStart) + std::string(8, 'x'));
  EXPECT_TRUE(drain(r).empty());
  std::vector<FrameEvent> events;
  for (int i = 0; i < 50; ++i) {
    r.feed(std::string(100, 'y'));
    for (auto& e : drain(r)) events.push_back(std::move(e));
  }
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, Kind::too_large);
  EXPECT_TRUE(r.inside_frame());
  r.feed(std::string("zz\x1c\x0d") + framed("OK"));
  const auto after = drain(r);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].kind, Kind::message);
  EXPECT_EQ(after[0].message, "OK");
}

TEST(FrameReader, TooLargeInOneReadIsReportedAndTheNextFrameStillRead) {
  FrameReader r(4);
  r.feed(framed("12345") + framed("1234"));
  const auto events = drain(r);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, Kind::too_large);
  EXPECT_EQ(events[1].kind, Kind::message);
  EXPECT_EQ(events[1].message, "1234");
}

TEST(FrameReader, StrayBytesAreReportedNotTreatedAsMessages) {
  FrameReader r(1024);
  r.feed(std::string("junk") + framed("A") + "\r\n" + framed("B") + "tail");
  const auto events = drain(r);
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[0].kind, Kind::stray_bytes);
  EXPECT_EQ(events[0].skipped, 4u);
  EXPECT_EQ(events[1].message, "A");
  EXPECT_EQ(events[2].kind, Kind::stray_bytes);
  EXPECT_EQ(events[2].skipped, 2u);
  EXPECT_EQ(events[3].message, "B");
  EXPECT_EQ(events[4].kind, Kind::stray_bytes);
  EXPECT_EQ(events[4].skipped, 4u);
}

TEST(FrameReader, ANewStartCutsOffAnUnfinishedFrame) {
  FrameReader r(1024);
  r.feed(std::string("\x0bhalf") + framed("whole"));
  const auto events = drain(r);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, Kind::stray_bytes);
  EXPECT_EQ(events[0].skipped, 5u);
  EXPECT_EQ(events[1].message, "whole");
}

TEST(FrameReader, EndByteWithoutCarriageReturnStillEndsTheFrame) {
  FrameReader r(1024);
  r.feed(std::string("\x0b" "A\x1cX") + framed("B"));
  const auto events = drain(r);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].message, "A");
  EXPECT_EQ(events[1].kind, Kind::stray_bytes);
  EXPECT_EQ(events[2].message, "B");
}

}  // namespace
}  // namespace tellonce::hl7v2
