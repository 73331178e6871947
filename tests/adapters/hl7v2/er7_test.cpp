#include "hl7v2/er7.hpp"

#include "support/temp_dir.hpp"
#include "tellonce/json.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace tellonce::hl7v2 {
namespace {

// A small ADT^A01 in v2.4 with CR segment ends; tests change what they look at.
std::string adt(std::string_view msh18 = "", std::string_view pid5 = "SMITH^JOHN^^^MR",
                std::string_view end = "\r") {
  std::string m;
  m += "MSH|^~\\&|PAS|RX1|TIE|RX1|20240101120000||ADT^A01^ADT_A01|CTRL-1|P|2.4|||AL|NE||";
  m += msh18;
  m += end;
  m += "EVN|A01|20240101120000";
  m += end;
  m += "PID|1||9000000009^^^NHS^NH~A123^^^RX1^MR||";
  m += pid5;
  m += "||19800101|M";
  m += end;
  m += "PV1|1|I";
  m += end;
  return m;
}

Message parsed(std::string_view er7) {
  auto r = parse(er7);
  EXPECT_TRUE(r.has_value()) << (r.has_value() ? "" : r.error().issues.front().diagnostics);
  return r.has_value() ? std::move(r.value()) : Message{};
}

Issue only_issue(const Result<Message>& r) {  // a copy: Result::error() returns by value
  static const Issue none;
  EXPECT_FALSE(r.has_value());
  if (r.has_value() || r.error().issues.empty()) return none;
  return r.error().issues.front();
}

TEST(Er7Parse, ReadsSegmentsFieldsComponentsAndMshHeader) {
  const Message m = parsed(adt());
  ASSERT_EQ(m.segments().size(), 4u);
  EXPECT_EQ(m.segments()[2].id(), "PID");
  EXPECT_EQ(m.segments()[2].position(), 3u);
  EXPECT_EQ(m.message_code(), "ADT");
  EXPECT_EQ(m.trigger_event(), "A01");
  EXPECT_EQ(m.structure(), "ADT_A01");
  EXPECT_EQ(m.control_id(), "CTRL-1");
  EXPECT_EQ(m.processing_id(), "P");
  EXPECT_EQ(m.version(), "2.4");
  EXPECT_EQ(m.accept_ack_type(), "AL");
  EXPECT_EQ(m.app_ack_type(), "NE");
  EXPECT_EQ(m.msh().value(1), "|");
  EXPECT_EQ(m.msh().value(2), "^~\\&");
  EXPECT_EQ(m.msh().value(3), "PAS");
  EXPECT_EQ(m.msh().value(4), "RX1");
  const Segment* pid = m.first("PID");
  ASSERT_NE(pid, nullptr);
  EXPECT_EQ(pid->value(5, 1), "SMITH");
  EXPECT_EQ(pid->value(5, 2), "JOHN");
  EXPECT_EQ(pid->value(5, 5), "MR");
  EXPECT_EQ(pid->value(5, 6), "");
  EXPECT_EQ(pid->value(8), "M");
  EXPECT_EQ(pid->field_count(), 8u);
  EXPECT_EQ(pid->value(30), "");  // past the end: not present
  EXPECT_EQ(m.first("OBX"), nullptr);
}

TEST(Er7Parse, RepetitionsComponentsAndSubcomponents) {
  std::string msg = adt();
  msg += "ZXX|a&b&c^d~e^f&g\r";
  const Message m = parsed(msg);
  const Segment* pid = m.first("PID");
  ASSERT_NE(pid, nullptr);
  EXPECT_EQ(pid->repetition_count(3), 2u);
  EXPECT_EQ(pid->value(3, 1, 1, 1), "9000000009");
  EXPECT_EQ(pid->value(3, 4, 1, 1), "NHS");
  EXPECT_EQ(pid->value(3, 5, 1, 1), "NH");
  EXPECT_EQ(pid->value(3, 1, 1, 2), "A123");
  EXPECT_EQ(pid->value(3, 5, 1, 2), "MR");
  EXPECT_EQ(pid->value(3, 1, 1, 3), "");
  EXPECT_EQ(pid->component_count(3, 1), 5u);
  EXPECT_EQ(pid->repetition_count(4), 0u);
  const Segment* z = m.first("ZXX");
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(z->value(1, 1, 1), "a");
  EXPECT_EQ(z->value(1, 1, 2), "b");
  EXPECT_EQ(z->value(1, 1, 3), "c");
  EXPECT_EQ(z->value(1, 2, 1), "d");
  EXPECT_EQ(z->value(1, 2, 1, 2), "f");
  EXPECT_EQ(z->value(1, 2, 2, 2), "g");
  EXPECT_EQ(z->raw_field(1), "a&b&c^d~e^f&g");
}

TEST(Er7Parse, SegmentOccurrencesCountPerId) {
  std::string msg = adt();
  msg += "OBX|1|NM|x\rOBX|2|NM|y\rNTE|1\rOBX|3|ST|z\r";
  const Message m = parsed(msg);
  const auto obx = m.all("OBX");
  ASSERT_EQ(obx.size(), 3u);
  EXPECT_EQ(obx[0]->occurrence(), 1u);
  EXPECT_EQ(obx[2]->occurrence(), 3u);
  EXPECT_EQ(obx[2]->value(3), "z");
  EXPECT_EQ(m.first("NTE")->occurrence(), 1u);
}

TEST(Er7Parse, OccurrencesStayRightWithManyDistinctSegmentIds) {
  std::string msg = adt();
  for (int round = 0; round < 2; ++round)
    for (int i = 0; i < 40; ++i) msg += std::string("Z") + std::to_string(10 + i) + "|" + std::to_string(round) + "\r";
  const Message m = parsed(msg);
  const auto z49 = m.all("Z49");
  ASSERT_EQ(z49.size(), 2u);
  EXPECT_EQ(z49[0]->occurrence(), 1u);
  EXPECT_EQ(z49[1]->occurrence(), 2u);
  EXPECT_EQ(z49[1]->value(1), "1");
  EXPECT_EQ(m.all("Z10")[1]->occurrence(), 2u);
  EXPECT_EQ(m.first("PID")->occurrence(), 1u);
}

TEST(Er7Parse, SegmentEndsMayBeCrLfOrCrLf) {
  for (std::string_view end : {"\r", "\n", "\r\n"}) {
    const Message m = parsed(adt("", "SMITH^JOHN", end));
    ASSERT_EQ(m.segments().size(), 4u) << "segment end " << int(end[0]) << " size " << end.size();
    EXPECT_EQ(m.first("PID")->value(5, 2), "JOHN");
    EXPECT_EQ(m.first("PV1")->value(2), "I");
    // The normalised text ends every segment with CR only.
    EXPECT_EQ(m.text_.find('\n'), std::string::npos);
  }
}

TEST(Er7Parse, LeadingBomBlankLinesAndTrailingWhitespaceAreTolerated) {
  std::string msg = "\xEF\xBB\xBF\r\n";
  msg += adt("", "SMITH^JOHN", "  \r\n\r\n");
  msg += " \t\n\n";
  const Message m = parsed(msg);
  ASSERT_EQ(m.segments().size(), 4u);
  EXPECT_EQ(m.msh().value(3), "PAS");
  EXPECT_EQ(m.first("PID")->value(5, 2), "JOHN");
  EXPECT_EQ(m.first("PV1")->value(2), "I");
}

TEST(Er7Parse, EncodingCharactersDeclaredInMshAreUsed) {
  const std::string msg =
      "MSH#*@!%#PAS#RX1#TIE#RX1#20240101##ADT*A01#C9#P#2.4\r"
      "PID#1##9000000009***NHS@X1##JONES*ANN!S!%T\r";
  const Message m = parsed(msg);
  EXPECT_EQ(m.encoding().field, '#');
  EXPECT_EQ(m.encoding().component, '*');
  EXPECT_EQ(m.encoding().repetition, '@');
  EXPECT_EQ(m.encoding().escape, '!');
  EXPECT_EQ(m.encoding().subcomponent, '%');
  EXPECT_EQ(m.trigger_event(), "A01");
  const Segment* pid = m.first("PID");
  EXPECT_EQ(pid->value(3, 4), "NHS");
  EXPECT_EQ(pid->value(3, 1, 1, 2), "X1");
  EXPECT_EQ(pid->value(5, 2, 1), "ANN*");  // !S! is the component separator
  EXPECT_EQ(pid->value(5, 2, 2), "T");
}

TEST(Er7Parse, FifthEncodingCharacterIsTheTruncationCharacter) {
  const std::string msg = "MSH|^~\\&#|PAS|RX1|||20240101||ADT^A01|C1|P|2.7\rNTE|1||cut here# and \\P\\\r";
  const Message m = parsed(msg);
  EXPECT_EQ(m.encoding().truncation, '#');
  EXPECT_EQ(m.msh().value(2), "^~\\&#");
  EXPECT_EQ(m.msh().value(3), "PAS");
  EXPECT_EQ(m.first("NTE")->value(3), "cut here# and #");
  // Without the fifth character '#' is ordinary text and \P\ means nothing.
  const Message four = parsed("MSH|^~\\&|PAS|RX1|||20240101||ADT^A01|C1|P|2.5\rNTE|1||a#\\P\\b\r");
  EXPECT_EQ(four.encoding().truncation, '\0');
  EXPECT_EQ(four.first("NTE")->value(3), "a#b");
}

TEST(Er7Parse, EscapesBecomeTheMessagesDelimiters) {
  const Message m = parsed(adt("", "O\\T\\BRIEN\\F\\X\\S\\Y\\R\\Z\\E\\W^ANN"));
  const Segment* pid = m.first("PID");
  EXPECT_EQ(pid->value(5, 1), "O&BRIEN|X^Y~Z\\W");
  EXPECT_EQ(pid->value(5, 2), "ANN");
  EXPECT_EQ(pid->raw_field(5), "O\\T\\BRIEN\\F\\X\\S\\Y\\R\\Z\\E\\W^ANN");
}

TEST(Er7Parse, LineBreakHexAndFormattingEscapes) {
  std::string msg = adt();
  msg += "NTE|1||line one\\.br\\line two\\H\\bold\\N\\\\.sp\\x\\X41C3A9\\y\\Zfoo\\end\r";
  const Message m = parsed(msg);
  EXPECT_EQ(m.first("NTE")->value(3), "line one\nline twoboldxA\xC3\xA9yend");
}

TEST(Er7Unescape, HexThatIsNotUtf8BecomesReplacementCharacters) {
  EXPECT_EQ(unescape("a\\XFF41\\b", Encoding{}), "a\xEF\xBF\xBD" "Ab");
  EXPECT_EQ(unescape("\\X4\\", Encoding{}), "");          // odd number of digits: dropped
  EXPECT_EQ(unescape("\\XZZ\\", Encoding{}), "");         // not hex: dropped
  EXPECT_EQ(unescape("back\\slash", Encoding{}), "back\\slash");  // never closed: text
}

TEST(Er7Escape, EscapeThenUnescapeGivesTheTextBack) {
  const std::string text = "O'Brien|A^B~C&D\\E\r\nnext\nline";
  const std::string escaped = escape(text);
  EXPECT_EQ(escaped, "O'Brien\\F\\A\\S\\B\\R\\C\\T\\D\\E\\E\\.br\\next\\.br\\line");
  EXPECT_EQ(unescape(escaped, Encoding{}), "O'Brien|A^B~C&D\\E\nnext\nline");
  Encoding with_truncation;
  with_truncation.truncation = '#';
  EXPECT_EQ(escape("a#b", with_truncation), "a\\P\\b");
  EXPECT_EQ(escape("a#b"), "a#b");
}

TEST(Er7Escape, ControlBytesAreHexSoNoValueCarriesMllpFraming) {
  const std::string text = std::string("a\x0b" "b\x1c" "c\x00" "d\te\x7f", 10);
  const std::string escaped = escape(text);
  EXPECT_EQ(escaped, "a\\X0B\\b\\X1C\\c\\X00\\d\te\\X7F\\");
  EXPECT_EQ(escaped.find_first_of(std::string_view("\x0b\x1c\x00", 3)), std::string::npos);
  EXPECT_EQ(unescape(escaped, Encoding{}), text);
}

TEST(Er7Parse, ExplicitNullIsSeenAndReadsAsEmpty) {
  const Message m = parsed(adt("", "\"\""));
  const Segment* pid = m.first("PID");
  EXPECT_TRUE(pid->is_explicit_null(5));
  EXPECT_EQ(pid->value(5), "");
  EXPECT_FALSE(pid->is_explicit_null(8));
  EXPECT_FALSE(pid->is_explicit_null(6));
}

TEST(Er7Charset, Latin1IsDecodedToUtf8IncludingHexEscapes) {
  std::string msg = adt("8859/1", "M\xDCLLER^J\xD6RG\\XE9\\");
  const Message m = parsed(msg);
  EXPECT_EQ(m.charset(), "8859/1");
  EXPECT_EQ(m.first("PID")->value(5, 1), "M\xC3\x9CLLER");
  EXPECT_EQ(m.first("PID")->value(5, 2), "J\xC3\x96RG\xC3\xA9");
}

TEST(Er7Charset, Utf8DeclaredOrNotIsReadAsSent) {
  for (std::string_view cs : {"UNICODE UTF-8", "UNICODE", ""}) {
    const Message m = parsed(adt(cs, "M\xC3\xBCLLER^\\XC3A9\\"));
    EXPECT_EQ(m.first("PID")->value(5, 1), "M\xC3\xBCLLER") << cs;
    EXPECT_EQ(m.first("PID")->value(5, 2), "\xC3\xA9") << cs;
  }
}

TEST(Er7Charset, AsciiDeclaredRefusesEightBitBytesWithoutQuotingThem) {
  const Message ok = parsed(adt("ASCII"));
  EXPECT_EQ(ok.charset(), "ASCII");
  const auto r = parse(adt("ASCII", "M\xC3\xBCLLER"));
  const Issue& issue = only_issue(r);
  EXPECT_EQ(r.error().code, Errc::malformed);
  EXPECT_EQ(issue.location, "PID^1^5");
  EXPECT_EQ(issue.rule, "hl7v2-charset");
  EXPECT_EQ(issue.diagnostics.find("LLER"), std::string::npos);
}

TEST(Er7Charset, InvalidUtf8IsMalformedAtItsField) {
  for (std::string_view cs : {"UNICODE UTF-8", ""}) {
    std::string msg = adt(cs);
    msg += "OBX|1|ST|code||bad \xC0\xAF value\r";
    const auto r = parse(msg);
    const Issue& issue = only_issue(r);
    EXPECT_EQ(r.error().code, Errc::malformed) << cs;
    EXPECT_EQ(issue.location, "OBX^1^5") << cs;
    EXPECT_EQ(issue.diagnostics.find("value"), std::string::npos);
  }
  // A lone surrogate encoded in UTF-8 and a sequence cut off at the end.
  EXPECT_FALSE(parse(adt("", "\xED\xA0\x80")).has_value());
  EXPECT_FALSE(parse(adt("", "A\xE2\x82")).has_value());
}

TEST(Er7Charset, UndecodableDeclaredSetIsUnsupported) {
  for (std::string_view cs : {"UNICODE UTF-16", "8859/2", "ISO IR87"}) {
    const auto r = parse(adt(cs));
    const Issue& issue = only_issue(r);
    EXPECT_EQ(r.error().code, Errc::unsupported) << cs;
    EXPECT_EQ(issue.location, "MSH^1^18");
  }
  // The first repetition is the message's set; later ones are alternates for escapes.
  EXPECT_TRUE(parse(adt("8859/1~ISO IR87")).has_value());
}

TEST(Er7Parse, BrokenHeadersAreMalformedAndLocated) {
  struct Case {
    std::string input;
    Errc code;
    std::string location;
  };
  const Case cases[] = {
      {"", Errc::malformed, ""},
      {"\r\n  \n", Errc::malformed, ""},
      {"PID|1||123\r", Errc::malformed, "MSH^1"},
      {"MSH", Errc::malformed, "MSH^1"},
      {"MSH|", Errc::malformed, "MSH^1^2"},
      {"MSH|^~|A\r", Errc::malformed, "MSH^1^2"},
      {"MSH|^~\\&#!|A\r", Errc::malformed, "MSH^1^2"},
      {"MSH|^^\\&|A\r", Errc::malformed, "MSH^1^2"},
      {"MSH|^~|&|A\r", Errc::malformed, "MSH^1^2"},
      {"MSHA^~\\&|A\r", Errc::malformed, "MSH^1^1"},
      {"MSH|^~\\&|A\rpid|1\r", Errc::malformed, ""},
      {"MSH|^~\\&|A\rPID-1\r", Errc::malformed, ""},
      {"MSH|^~\\&|A\rMSH|^~\\&|B\r", Errc::malformed, "MSH^2"},
      {"FHS|^~\\&|A\rBHS|^~\\&\rMSH|^~\\&|A\r", Errc::unsupported, "FHS^1"},
      {"BHS|^~\\&|A\r", Errc::unsupported, "BHS^1"},
  };
  for (const Case& c : cases) {
    const auto r = parse(c.input);
    ASSERT_FALSE(r.has_value()) << testing::PrintToString(c.input);
    EXPECT_EQ(r.error().code, c.code) << testing::PrintToString(c.input);
    ASSERT_EQ(r.error().issues.size(), 1u);
    EXPECT_EQ(r.error().issues[0].location, c.location) << testing::PrintToString(c.input);
    EXPECT_FALSE(r.error().issues[0].rule.empty());
  }
}

TEST(Er7Parse, SegmentWithoutFieldsAndMshWithOnlyDelimitersParse) {
  const Message m = parsed("MSH|^~\\&\rZZ1\r");
  EXPECT_EQ(m.segments().size(), 2u);
  EXPECT_EQ(m.segments()[1].field_count(), 0u);
  EXPECT_EQ(m.control_id(), "");
  EXPECT_EQ(m.msh().field_count(), 2u);
}

TEST(Er7Message, SurvivesCopyAndMove) {
  auto r = parse(adt());
  ASSERT_TRUE(r.has_value());
  Message moved = std::move(r.value());
  Message copy = moved;
  Message assigned;
  assigned = copy;
  {
    Message temp = std::move(moved);
    EXPECT_EQ(temp.first("PID")->value(5, 2), "JOHN");
  }
  EXPECT_EQ(copy.first("PID")->value(5, 2), "JOHN");
  EXPECT_EQ(assigned.first("PID")->value(5, 1), "SMITH");
  EXPECT_EQ(&assigned.first("PID")->id()[0], &assigned.text_[assigned.first("PID")->id_.begin]);
}

// Every sample message the converter's tests use parses and keeps MSH-9 readable.
TEST(Er7Samples, EveryMicrosoftAndItkSampleMessageParses) {
  // TELLONCE_SHARED_DATA in the environment overrides ../shared/data (for worktrees elsewhere).
  const char* env = std::getenv("TELLONCE_SHARED_DATA");
  const std::filesystem::path shared = env != nullptr ? env : TELLONCE_SHARED_DATA;
  const auto ms = shared / "hl7v2-ms-fhir-converter" / "messages";
  const auto itk = shared / "nhs-itk-v2";
  if (!std::filesystem::exists(ms) || !std::filesystem::exists(itk)) {
    GTEST_SKIP() << "shared sample data not found at " << shared << " (expected beside the checkout)";
  }
  std::size_t count = 0;
  for (const auto& dir : {ms, itk}) {
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
      if (!e.is_regular_file()) continue;
      const auto ext = e.path().extension();
      if (ext != ".hl7" && ext != ".txt" && ext != "") continue;
      std::ifstream in(e.path(), std::ios::binary);
      std::stringstream s;
      s << in.rdbuf();
      const std::string text = s.str();
      if (text.find("MSH") == std::string::npos) continue;  // scenario texts
      const auto r = parse(text);
      ASSERT_TRUE(r.has_value()) << e.path() << ": " << r.error().issues.front().diagnostics << " at "
                                 << r.error().issues.front().location;
      const Message& m = r.value();
      EXPECT_FALSE(m.message_code().empty()) << e.path();
      EXPECT_FALSE(m.control_id().empty()) << e.path();
      // One segment per non-blank line.
      std::size_t lines = 0;
      std::string line;
      std::istringstream split(text);
      while (std::getline(split, line)) {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
        if (line.size() > 3 || (line.size() == 3 && line != "\xEF\xBB\xBF")) ++lines;
      }
      EXPECT_EQ(m.segments().size(), lines) << e.path();
      // Files named after their type and event ("ADT-A01-01.hl7", "MDM-T02-1.hl7") agree with MSH-9.
      // Not LAB-ORU-1 (named by department), nor OML-O21-02, which upstream holds an ORM^O01.
      const std::string name = e.path().stem().string();
      const bool named_by_event = name.find('-') == 3 && name.size() > 8 && name[7] == '-' &&
                                  name.rfind("LAB-", 0) != 0 && name != "OML-O21-02";
      if (dir == ms && named_by_event) {
        EXPECT_EQ(m.message_code(), name.substr(0, 3)) << e.path();
        EXPECT_EQ(m.trigger_event(), name.substr(4, 3)) << e.path();
      }
      ++count;
    }
  }
  EXPECT_GE(count, 139u + 18u);
}

// A parser nobody here wrote, Debian's python3-hl7, splits every Microsoft sample message into the
// same segments and raw fields. Both see the text normalised the same way (byte-order mark, line
// ends, trailing blanks); python-hl7 leaves values escaped, so raw_field() is what compares.
TEST(Er7Samples, RawFieldsAgreeWithPythonHl7) {
  const char* env = std::getenv("TELLONCE_SHARED_DATA");
  const std::filesystem::path dir =
      std::filesystem::path(env != nullptr ? env : TELLONCE_SHARED_DATA) / "hl7v2-ms-fhir-converter" / "messages";
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "shared sample data not found at " << dir;
  test::TempDir tmp;
  const auto script = tmp / "dump.py";
  std::ofstream(script) << R"(import glob, json, re, sys
import hl7
out = {}
for f in sorted(glob.glob(sys.argv[1] + '/*.hl7')):
    text = open(f, encoding='utf-8-sig').read()
    lines = [l.rstrip(' \t') for l in re.split(r'\r\n|\r|\n', text)]
    segs = []
    for seg in hl7.parse('\r'.join(l for l in lines if l)):
        fields = [str(x) for x in seg]
        while len(fields) > 1 and fields[-1] == '':
            fields.pop()
        segs.append(fields)
    out[f] = segs
json.dump(out, sys.stdout)
)";
  const std::string command = "/usr/bin/python3 " + script.string() + " " + dir.string() + " 2>/dev/null";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  ASSERT_NE(pipe, nullptr);
  std::string out;
  std::array<char, 65536> buf;
  while (std::size_t n = fread(buf.data(), 1, buf.size(), pipe.get())) out.append(buf.data(), n);
  if (out.empty()) GTEST_SKIP() << "python3-hl7 is not installed (scripts/install-deps.sh installs it)";
  const auto theirs = parse_json(out, JsonLimits{64 * 1024 * 1024, 64});
  ASSERT_TRUE(theirs.has_value());
  std::size_t files = 0, segments = 0;
  for (const auto& [name, segs] : theirs.value().GetObject()) {
    std::ifstream in(name.GetString(), std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    const auto ours = parse(text.str());
    ASSERT_TRUE(ours.has_value()) << name.GetString();
    ASSERT_EQ(ours->segments().size(), segs.Size()) << name.GetString();
    for (rapidjson::SizeType i = 0; i < segs.Size(); ++i) {
      const Segment& seg = ours->segments()[i];
      const auto& fields = segs[i].GetArray();
      ASSERT_EQ(seg.id(), std::string_view(fields[0].GetString())) << name.GetString();
      ASSERT_EQ(seg.field_count(), fields.Size() - 1) << name.GetString() << " " << seg.id();
      for (rapidjson::SizeType f = 1; f < fields.Size(); ++f) {
        EXPECT_EQ(seg.raw_field(f), std::string_view(fields[f].GetString(), fields[f].GetStringLength()))
            << name.GetString() << " " << seg.id() << "-" << f;
      }
      ++segments;
    }
    ++files;
  }
  EXPECT_EQ(files, 139u);
  EXPECT_GT(segments, 1000u);
}

}  // namespace
}  // namespace tellonce::hl7v2
