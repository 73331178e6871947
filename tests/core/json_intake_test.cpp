// Hostile JSON intake (issue 7): numbers RapidJSON's own conversion crashes on, lone
// surrogate escapes, a byte-order mark. parse_json must refuse precisely or hold the value.
#include "tellonce/json.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

namespace tellonce {
namespace {

// The one number in {"v": text}, parsed.
const rapidjson::Document& number_doc(rapidjson::Document& keep, const std::string& text) {
  auto r = parse_json("{\"v\":" + text + "}");
  EXPECT_TRUE(r) << (r ? "" : r.error().issues.at(0).diagnostics);
  if (r) keep = std::move(*r);
  return keep;
}

std::string diagnostics_of(const Result<rapidjson::Document>& r) {
  return r ? std::string("(parsed)") : r.error().issues.at(0).diagnostics;
}

TEST(ParseJsonNumbers, ThreeHundredFiftyLeadingZerosAfterThePointDoNotCrash) {
  // Issue 7 item 1: this SIGSEGV'd in RapidJSON 1.1's full-precision path.
  std::string tiny = "0." + std::string(350, '0') + "1";
  rapidjson::Document doc;
  const auto& d = number_doc(doc, tiny);
  ASSERT_TRUE(d.IsObject());
  ASSERT_TRUE(d["v"].IsDouble());
  EXPECT_EQ(d["v"].GetDouble(), 0.0);  // 1e-351 is below the smallest double
  std::string negative = "-0." + std::string(350, '0') + "1";
  EXPECT_TRUE(std::signbit(number_doc(doc, negative)["v"].GetDouble()));
}

TEST(ParseJsonNumbers, LongDecimalsKeepFullPrecision) {
  rapidjson::Document doc;
  for (const std::string& text : std::vector<std::string>{"0.1", "2.2250738585072011e-308", "1.7976931348623157e308",
                           "0." + std::string(300, '0') + "1", "3.14159265358979323846264338327950288",
                           "123456789012345678901234567890e-10", "4.9e-324", "1E5", "-2.5e-3"}) {
    const auto& d = number_doc(doc, text);
    ASSERT_TRUE(d.IsObject()) << text;
    EXPECT_EQ(d["v"].GetDouble(), std::strtod(text.c_str(), nullptr)) << text;  // correctly rounded
  }
}

TEST(ParseJsonNumbers, IntegersStayExactAndTyped) {
  rapidjson::Document doc;
  EXPECT_EQ(number_doc(doc, "9007199254740993")["v"].GetUint64(), 9007199254740993u);
  EXPECT_EQ(number_doc(doc, "-9223372036854775808")["v"].GetInt64(), INT64_MIN);
  EXPECT_TRUE(number_doc(doc, "42")["v"].IsInt());
  EXPECT_TRUE(number_doc(doc, "-42")["v"].IsInt());
  EXPECT_EQ(number_doc(doc, "-0")["v"].GetInt(), 0);
  EXPECT_TRUE(number_doc(doc, "18446744073709551616")["v"].IsDouble());  // beyond 64 bits
  EXPECT_TRUE(number_doc(doc, "-9223372036854775809")["v"].IsDouble());
}

TEST(ParseJsonNumbers, ExtremeExponentsAreHeldOrRefusedWithAPosition) {
  rapidjson::Document doc;
  EXPECT_EQ(number_doc(doc, "1e-2147483649")["v"].GetDouble(), 0.0);
  // RapidJSON's reader itself refuses an integer part beyond a double's range, exponent or not.
  EXPECT_FALSE(parse_json("{\"v\":1" + std::string(400, '0') + "e-400}"));
  auto big = parse_json(R"({"v":)" + std::string(400, '9') + "}");
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code, Errc::malformed);
  EXPECT_NE(diagnostics_of(big).find("at 1:6"), std::string::npos) << diagnostics_of(big);
  EXPECT_NE(diagnostics_of(big).find("too big"), std::string::npos) << diagnostics_of(big);
  EXPECT_FALSE(parse_json(R"({"v":1e400})"));
}

TEST(ParseJsonStrings, LoneLowSurrogateEscapeIsRefusedAtItsPosition) {
  auto r = parse_json(R"({"family":"ab\udc00cd"})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::malformed);
  EXPECT_NE(diagnostics_of(r).find("at 1:14 (byte 13)"), std::string::npos) << diagnostics_of(r);
  EXPECT_NE(diagnostics_of(r).find("lone UTF-16 low surrogate"), std::string::npos) << diagnostics_of(r);
  // After an escaped quote and a surrogate pair in the same string, and in a key.
  auto later = parse_json(R"({"a":"x\"\ud83d\ude00\uDFFF"})");
  ASSERT_FALSE(later);
  EXPECT_NE(diagnostics_of(later).find("(byte 21)"), std::string::npos) << diagnostics_of(later);
  auto key = parse_json(R"({"\udc00":1})");
  ASSERT_FALSE(key);
  EXPECT_NE(diagnostics_of(key).find("(byte 2)"), std::string::npos) << diagnostics_of(key);
}

TEST(ParseJsonStrings, LoneHighSurrogateEscapeIsRefusedInPlainWords) {
  auto r = parse_json(R"({"family":"ab\ud800cd"})");
  ASSERT_FALSE(r);
  EXPECT_NE(diagnostics_of(r).find("must be followed by a low surrogate"), std::string::npos) << diagnostics_of(r);
}

TEST(ParseJsonStrings, SurrogatePairsAndEscapedBackslashesAreFine) {
  auto r = parse_json(R"({"a":"\ud83d\ude00","b":"\\udc00"})");
  ASSERT_TRUE(r) << diagnostics_of(r);
  EXPECT_STREQ((*r)["a"].GetString(), "\xF0\x9F\x98\x80");
  EXPECT_STREQ((*r)["b"].GetString(), "\\udc00");
}

// The parse skips the UTF-8 check for an all-ASCII body and the surrogate search for one without
// a \u escape: what those checks catch must still be caught wherever the body takes that path.
TEST(ParseJsonStrings, ChecksSkippedForPlainBodiesStillCatchWhatTheyMust) {
  auto after_backslash = parse_json(R"({"a":"\\\udc00"})");  // an escaped backslash, then the lone escape
  ASSERT_FALSE(after_backslash);
  EXPECT_NE(diagnostics_of(after_backslash).find("lone UTF-16 low surrogate"), std::string::npos)
      << diagnostics_of(after_backslash);
  auto accented = parse_json("{\"family\":\"Bront\xC3\xAB\"}");
  ASSERT_TRUE(accented) << diagnostics_of(accented);
  EXPECT_STREQ((*accented)["family"].GetString(), "Bront\xC3\xAB");
  auto broken = parse_json("{\"family\":\"Bront\xC3\xAB\",\"given\":\"\xC3\"}");
  ASSERT_FALSE(broken);
  EXPECT_NE(diagnostics_of(broken).find("invalid UTF-8"), std::string::npos) << diagnostics_of(broken);
}

TEST(ParseJson, ByteOrderMarkIsNamed) {
  auto r = parse_json("\xEF\xBB\xBF{\"resourceType\":\"Patient\"}");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::malformed);
  EXPECT_NE(diagnostics_of(r).find("byte-order mark"), std::string::npos) << diagnostics_of(r);
  EXPECT_EQ(r.error().issues[0].rule, "json-bom");
}

// A NUL byte used to end the parse: `{...}<NUL>junk` was accepted whole, junk and all, and kept
// as the record's body. Now refused where it is, inside a string or after the value alike.
TEST(ParseJson, NulByteIsRefusedAtItsPlace) {
  using namespace std::string_literals;
  auto after = parse_json("{\"resourceType\":\"Basic\"}\0{\"junk\""s);
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error().code, Errc::malformed);
  EXPECT_NE(diagnostics_of(after).find("at 1:25 (byte 24): a NUL byte"), std::string::npos) << diagnostics_of(after);
  auto inside = parse_json("{\"a\":\n\"x\0y\"}"s);
  ASSERT_FALSE(inside);
  EXPECT_NE(diagnostics_of(inside).find("at 2:3 (byte 8): a NUL byte"), std::string::npos) << diagnostics_of(inside);
  auto escaped = parse_json(R"({"a":"x\u0000y"})");  // the escape is the way to say it
  ASSERT_TRUE(escaped) << diagnostics_of(escaped);
  EXPECT_EQ((*escaped)["a"].GetStringLength(), 3u);
}

// The in-place parse reads a copy of the body: strings and gaps of every length up to 39 read
// whole, wherever the body ends, and a body cut short is still refused.
TEST(ParseJson, LongRunsAndEveryEndAlignmentParse) {
  for (std::size_t pad = 0; pad < 40; ++pad) {
    std::string body = "{\"v\":\"" + std::string(pad, 'a') + "\"" + std::string(pad, ' ') + "}" + std::string(pad % 17, '\n');
    auto r = parse_json(body);
    ASSERT_TRUE(r) << pad << ": " << diagnostics_of(r);
    EXPECT_EQ((*r)["v"].GetStringLength(), pad);
    auto cut = parse_json(body.substr(0, body.size() - (pad % 17) - 1));  // the closing brace gone
    EXPECT_FALSE(cut) << pad;
  }
}

}  // namespace
}  // namespace tellonce
