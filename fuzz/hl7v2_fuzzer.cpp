// libFuzzer target: bytes from an MLLP peer through the HL7 v2 library. The input is fed to a
// FrameReader in pieces whose sizes the input itself chooses (a frame split across reads, several
// in one); every message it hands out, and the whole input as one message, goes through parse(),
// every value of every segment, build_ack() and read_ack(); the input is also read as an ACK and
// unescaped. Traps when an invariant breaks:
// - an ACK the library built does not read back, or reads back another MSA-2 than MSH-10;
// - unescape(escape(text)) is not the text (for text without line breaks);
// - a message framed by mllp_frame() does not come back out of a FrameReader whole;
// - what FhirToV2 renders from the input (read as FHIR JSON) does not parse, or names another
//   MSH-10 than the control id it was given (every value it writes must be escaped).
#include "hl7v2/ack.hpp"
#include "hl7v2/er7.hpp"
#include "hl7v2/from_fhir.hpp"
#include "hl7v2/mllp.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace hl7 = tellonce::hl7v2;

namespace {

void check_message(std::string_view bytes) {
  auto parsed = hl7::parse(bytes);
  if (!parsed.has_value()) {
    const std::string ack = hl7::build_ack_for_unparsed(bytes, hl7::AckCode::AR, {{"MSH^1", "100", 'E', "x"}},
                                                        {}, "K1", "20240101");
    if (!hl7::read_ack(ack).has_value()) __builtin_trap();
    return;
  }
  const hl7::Message& m = parsed.value();
  std::size_t seen = 0;
  for (const hl7::Segment& s : m.segments()) {
    for (std::size_t f = 1; f <= s.field_count() + 1 && f <= 40; ++f) {
      for (std::size_t r = 1; r <= s.repetition_count(f) + 1 && r <= 4; ++r) {
        for (std::size_t c = 1; c <= s.component_count(f, r) + 1 && c <= 12; ++c) {
          seen += s.value(f, c, 1, r).size() + s.value(f, c, 2, r).size();
        }
        seen += s.is_explicit_null(f, r);
      }
    }
  }
  volatile std::size_t sink = seen;
  (void)sink;
  const hl7::Message copy = m;  // copies re-point their segments
  if (copy.segments().size() != m.segments().size() || copy.control_id() != m.control_id()) __builtin_trap();

  const std::string ack =
      hl7::build_ack(m, hl7::AckCode::AE, {{"PID^1^3^1", "102", 'E', "a|b^c~d\\e&f\rg"}}, {}, "K2", "20240101");
  const auto read = hl7::read_ack(ack);
  if (!read.has_value() || read->code != hl7::AckCode::AE || read->acked_control_id != m.control_id()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  // The framer, fed in pieces sized by the input's own bytes, with a limit small enough to hit.
  hl7::FrameReader reader(size == 0 ? 64 : 64 + static_cast<std::size_t>(data[0]) * 64);
  std::size_t pos = 0, k = 0;
  while (pos < size) {
    const std::size_t piece = 1 + static_cast<std::size_t>(data[k++ % size]) % 97;
    reader.feed(input.substr(pos, piece));
    pos += piece;
    while (auto event = reader.next()) {
      if (event->kind == hl7::FrameEvent::Kind::message) check_message(event->message);
    }
  }

  // The whole input as one message, as an ACK, and as one escaped value.
  check_message(input);
  (void)hl7::read_ack(input);
  (void)hl7::unescape(input, hl7::Encoding{});

  if (input.find_first_of("\r\n") == std::string_view::npos) {
    if (hl7::unescape(hl7::escape(input), hl7::Encoding{}) != input) __builtin_trap();
  }
  static const auto to_v2 = hl7::FhirToV2::load(TELLONCE_SOURCE_DIR "/schemas/hl7v2");
  if (const auto rendered = to_v2->render(input, hl7::V2Addressing{}, "C|1^2", "20240101120000")) {
    const auto back = hl7::parse(rendered->er7);
    if (!back.has_value() || back->control_id() != "C|1^2") __builtin_trap();
  }

  if (input.find_first_of(std::string_view("\x0b\x1c", 2)) == std::string_view::npos) {
    hl7::FrameReader fresh(size + 16);
    const std::string framed = hl7::mllp_frame(input);
    fresh.feed(framed);
    auto event = fresh.next();
    if (!event || event->kind != hl7::FrameEvent::Kind::message || event->message != framed.substr(1, framed.size() - 3))
      __builtin_trap();
    if (fresh.next().has_value()) __builtin_trap();
  }
  return 0;
}
