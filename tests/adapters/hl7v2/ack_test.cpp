#include "hl7v2/ack.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <memory>
#include <string>

namespace tellonce::hl7v2 {
namespace {

const std::string kAdt =
    "MSH|^~\\&|PAS^1.2.3^ISO|RX1|TIE|RX2|20240101120000||ADT^A01^ADT_A01|CTRL-42|T|2.4|||AL|NE\r"
    "PID|1||9000000009^^^NHS^NH||SMITH^JOHN\r";

Message parsed(std::string_view er7) {
  auto r = parse(er7);
  EXPECT_TRUE(r.has_value()) << testing::PrintToString(std::string(er7));
  return r.has_value() ? std::move(r.value()) : Message{};
}

AckSender tie() { return AckSender{"TIE", "RX2"}; }

TEST(BuildAck, SwapsSenderAndReceiverAndEchoesTheHeader) {
  const std::string ack =
      build_ack(parsed(kAdt), AckCode::AA, {}, tie(), "ACK-1", "20240101120001+0000");
  EXPECT_EQ(ack,
            "MSH|^~\\&|TIE|RX2|PAS^1.2.3^ISO|RX1|20240101120001+0000||ACK^A01^ACK|ACK-1|T|2.4\r"
            "MSA|AA|CTRL-42\r");
}

TEST(BuildAck, OneErrPerErrorInV25LayoutWithEveryTextEscaped) {
  const std::vector<AckError> errors{
      {"PID^1^3^1", "102", 'E', "uk-nhs-number at Patient.identifier[0]: check digit | wrong ^ here"},
      {"", "", 'W', "second"},
  };
  const std::string ack = build_ack(parsed(kAdt), AckCode::AE, errors, tie(), "ACK-2", "20240101120001");
  const Message m = parsed(ack);
  EXPECT_EQ(m.first("MSA")->value(1), "AE");
  EXPECT_EQ(m.first("MSA")->value(2), "CTRL-42");
  EXPECT_EQ(m.first("MSA")->value(3), "uk-nhs-number at Patient.identifier[0]: check digit | wrong ^ here");
  const auto err = m.all("ERR");
  ASSERT_EQ(err.size(), 2u);
  EXPECT_EQ(err[0]->value(1), "");
  EXPECT_EQ(err[0]->value(2, 1), "PID");
  EXPECT_EQ(err[0]->value(2, 2), "1");
  EXPECT_EQ(err[0]->value(2, 3), "3");
  EXPECT_EQ(err[0]->value(2, 4), "1");
  EXPECT_EQ(err[0]->value(3, 1), "102");
  EXPECT_EQ(err[0]->value(3, 2), "Data type error");
  EXPECT_EQ(err[0]->value(3, 3), "HL70357");
  EXPECT_EQ(err[0]->value(4), "E");
  EXPECT_EQ(err[0]->value(8), "uk-nhs-number at Patient.identifier[0]: check digit | wrong ^ here");
  EXPECT_EQ(err[1]->raw_field(2), "");
  EXPECT_EQ(err[1]->value(3, 1), "207");  // no code given: application internal error
  EXPECT_EQ(err[1]->value(4), "W");
  EXPECT_EQ(err[1]->value(8), "second");
}

TEST(BuildAck, MsaTextIsCutTo80CharactersOnACharacterBoundary) {
  std::string long_text(79, 'a');
  long_text += "\xC3\xA9 and more";
  const std::string ack =
      build_ack(parsed(kAdt), AckCode::AE, {{"", "101", 'E', long_text}}, tie(), "A", "20240101");
  const Message m = parsed(ack);
  EXPECT_EQ(m.first("MSA")->value(3), std::string(79, 'a'));
  EXPECT_EQ(m.first("ERR")->value(8), long_text);
}

TEST(BuildAck, UsesTheOriginalsOwnDelimiters) {
  const std::string original = "MSH#*@!%#PAS#RX1#TIE#RX2#20240101##ADT*A08#C9#P#2.4\rPID#1\r";
  const std::string ack =
      build_ack(parsed(original), AckCode::AR, {{"PID^1^3", "101", 'E', "a#b*c"}}, tie(), "K1", "20240101");
  EXPECT_EQ(ack.substr(0, 9), "MSH#*@!%#");
  const Message m = parsed(ack);
  EXPECT_EQ(m.msh().value(9, 2), "A08");
  EXPECT_EQ(m.first("MSA")->value(2), "C9");
  EXPECT_EQ(m.first("ERR")->value(2, 3), "3");
  EXPECT_EQ(m.first("ERR")->value(8), "a#b*c");
}

TEST(BuildAck, RoundTripThroughReadAck) {
  const std::vector<AckError> errors{{"PV1^1^2", "103", 'E', "first problem"}, {"", "207", 'E', "second; problem"}};
  for (AckCode code : {AckCode::AA, AckCode::AE, AckCode::AR, AckCode::CA, AckCode::CE, AckCode::CR}) {
    const std::string ack = build_ack(parsed(kAdt), code, code == AckCode::AA ? std::vector<AckError>{} : errors,
                                      tie(), "ACK-3", hl7_timestamp_now());
    const auto read = read_ack(ack);
    ASSERT_TRUE(read.has_value()) << ack;
    EXPECT_EQ(read->code, code);
    EXPECT_EQ(read->acked_control_id, "CTRL-42");
    if (code == AckCode::AA) {
      EXPECT_TRUE(read->text.empty());
      EXPECT_TRUE(read->error_codes.empty());
    } else {
      EXPECT_EQ(read->text, "first problem; second; problem");  // MSA-3 repeats ERR-8: once
      EXPECT_EQ(read->error_codes, (std::vector<std::string>{"103", "207"}));
    }
  }
}

TEST(BuildAckForUnparsed, EchoesWhatItCanReadOfTheMsh) {
  // Unparseable: the ASCII charset is declared but a later segment carries an 8-bit byte.
  const std::string raw =
      "MSH|^~\\&|PAS|RX1|TIE|RX2|20240101||ADT^A01|CTRL-7|P|2.3||||||ASCII\rPID|1||\xE9\r";
  ASSERT_FALSE(parse(raw).has_value());
  const std::string ack =
      build_ack_for_unparsed(raw, AckCode::AR, {{"PID^1^3", "102", 'E', "not ASCII"}}, tie(), "K", "20240101");
  const Message m = parsed(ack);
  EXPECT_EQ(m.msh().value(3), "TIE");
  EXPECT_EQ(m.msh().value(5), "PAS");
  EXPECT_EQ(m.msh().value(6), "RX1");
  EXPECT_EQ(m.msh().value(9, 2), "A01");
  EXPECT_EQ(m.msh().value(12), "2.3");
  EXPECT_EQ(m.first("MSA")->value(1), "AR");
  EXPECT_EQ(m.first("MSA")->value(2), "CTRL-7");
  EXPECT_EQ(m.first("ERR")->value(8), "not ASCII");
}

TEST(BuildAckForUnparsed, ReEscapesFieldsFromOtherDelimitersAndDropsUnreadableOnes) {
  const std::string raw = "MSH#*@!%#PA|S*X#R\x01X1#####ADT*A31#C|1##2.4\rgarbage";
  const std::string ack = build_ack_for_unparsed(raw, AckCode::AR, {}, tie(), "K", "20240101");
  const Message m = parsed(ack);
  EXPECT_EQ(m.encoding().field, '|');
  EXPECT_EQ(m.msh().value(5, 1), "PA|S");
  EXPECT_EQ(m.msh().value(5, 2), "X");
  EXPECT_EQ(m.msh().value(6), "");  // a control byte: not echoed
  EXPECT_EQ(m.msh().value(9, 2), "A31");
  EXPECT_EQ(m.first("MSA")->value(2), "C|1");
}

TEST(BuildAckForUnparsed, AnythingAtAllGivesAParseableAck) {
  for (std::string_view raw : {std::string_view(""), std::string_view("hello"), std::string_view("MSH"),
                               std::string_view("MSH||||"), std::string_view("MSH|^~\\&"),
                               std::string_view("MSH\r^~\\&|A"), std::string_view("\xEF\xBB\xBF\nMSH|^~\\&|A|B")}) {
    const std::string ack = build_ack_for_unparsed(raw, AckCode::AR, {}, tie(), "K", "20240101");
    const auto read = read_ack(ack);
    ASSERT_TRUE(read.has_value()) << testing::PrintToString(std::string(raw));
    EXPECT_EQ(read->code, AckCode::AR);
  }
}

// ACKs made by Debian's python3-hl7 0.4.5 (hl7.parse(msg).create_ack(...)), for
//   MSH|^~\&|PAS|RX1|TIE|RX2|20240101120000||ADT^A01^ADT_A01|CTRL-42|P|2.4 / PID|1||9000000009^^^NHS^NH
// with: create_ack(); create_ack(ack_code="AR", message_id="ACK-9", application="TIE", facility="RX2").
TEST(ReadAck, ReadsAcksMadeByPythonHl7) {
  const auto aa = read_ack("MSH|^~\\&|TIE|RX2|PAS|RX1|20261130183038||ACK^A01^ACK|6334183038634249P6I4|P|2.4\r"
                           "MSA|AA|CTRL-42\r");
  ASSERT_TRUE(aa.has_value());
  EXPECT_EQ(aa->code, AckCode::AA);
  EXPECT_EQ(aa->acked_control_id, "CTRL-42");
  const auto ar = read_ack("MSH|^~\\&|TIE|RX2|PAS|RX1|20261130183101||ACK^A01^ACK|ACK-9|P|2.4\rMSA|AR|CTRL-42\r");
  ASSERT_TRUE(ar.has_value());
  EXPECT_EQ(ar->code, AckCode::AR);
  EXPECT_EQ(ar->acked_control_id, "CTRL-42");
}

// The same library run now, on a message this broker could send; skipped where it is not installed.
TEST(ReadAck, ReadsAnAckPythonHl7MakesNow) {
  const char* script =
      "/usr/bin/python3 -c 'import hl7,sys; "
      "m=hl7.parse(\"MSH|^~\\\\&|TELLONCE|X26|GP|A81001|20240101||ADT^A31^ADT_A05|D-17-1|P|2.4\\rPID|1\\r\"); "
      "sys.stdout.write(str(m.create_ack(ack_code=\"AE\", application=\"GP\", facility=\"A81001\")))' 2>/dev/null";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(script, "r"), pclose);
  ASSERT_NE(pipe, nullptr);
  std::string out;
  std::array<char, 512> buf;
  while (std::size_t n = fread(buf.data(), 1, buf.size(), pipe.get())) out.append(buf.data(), n);
  if (out.empty()) GTEST_SKIP() << "python3-hl7 is not installed (scripts/install-deps.sh installs it)";
  const auto ack = read_ack(out);
  ASSERT_TRUE(ack.has_value()) << out;
  EXPECT_EQ(ack->code, AckCode::AE);
  EXPECT_EQ(ack->acked_control_id, "D-17-1");
}

TEST(ReadAck, ReadsV24ErrorsFromErr1) {
  const auto ack = read_ack(
      "MSH|^~\\&|GP|A81001|TELLONCE|X26|20240101||ACK^A31|9|P|2.4\r"
      "MSA|AE|D-1|record rejected\r"
      "ERR|PID^1^3^204&Unknown key identifier&HL70357~PID^1^8^103&Table value not found&HL70357\r");
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(ack->code, AckCode::AE);
  EXPECT_EQ(ack->text, "record rejected; Unknown key identifier; Table value not found");
  EXPECT_EQ(ack->error_codes, (std::vector<std::string>{"204", "103"}));
}

TEST(ReadAck, RefusesWhatIsNotAnAck) {
  const auto no_msa = read_ack("MSH|^~\\&|A|B|C|D|20240101||ACK|1|P|2.4\r");
  ASSERT_FALSE(no_msa.has_value());
  EXPECT_EQ(no_msa.error().issues.front().location, "MSA^1");
  const auto bad_code = read_ack("MSH|^~\\&|A|B|C|D|20240101||ACK|1|P|2.4\rMSA|OK|1\r");
  ASSERT_FALSE(bad_code.has_value());
  EXPECT_EQ(bad_code.error().issues.front().location, "MSA^1^1");
  EXPECT_FALSE(read_ack("not hl7 at all").has_value());
}

TEST(AckCodes, NamesRoundTrip) {
  for (AckCode code : {AckCode::AA, AckCode::AE, AckCode::AR, AckCode::CA, AckCode::CE, AckCode::CR}) {
    EXPECT_EQ(ack_code_from(to_string(code)), code);
  }
  EXPECT_FALSE(ack_code_from("aa").has_value());
  EXPECT_FALSE(ack_code_from("").has_value());
}

TEST(Hl7Timestamp, IsUtcToTheSecondWithOffset) {
  const std::string ts = hl7_timestamp_now();
  ASSERT_EQ(ts.size(), 19u);
  EXPECT_EQ(ts.substr(14), "+0000");
  for (std::size_t i = 0; i < 14; ++i) EXPECT_TRUE(ts[i] >= '0' && ts[i] <= '9') << ts;
  EXPECT_GE(ts.substr(0, 4), "2024");
  EXPECT_TRUE(parse("MSH|^~\\&|A|B|C|D|" + ts + "||ACK|1|P|2.4\r").has_value());
}

}  // namespace
}  // namespace tellonce::hl7v2
