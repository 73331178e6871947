// HL7 v2 messages in ER7 (pipe-and-hat) encoding: parsing, and escaping text for output.
//
// Contract
// - Pure functions and value types: no I/O, no globals; safe from any thread.
// - parse() never throws for any input (it is fuzzed: fuzz/hl7v2_fuzzer.cpp). What it cannot read is
//   a Failure{Errc::malformed} whose issues are located in v2 terms ("MSH^1^2": segment id, its
//   1-based occurrence, field; then component when known) and never quote the message's values.
// - A Message owns a copy of the text it was parsed from; Segment references stay valid while
//   the Message lives and is not moved-from.
// - Everything a caller reads through value() is UTF-8 with the escapes resolved: the escapes
//   \F\ \S\ \T\ \R\ \E\ become the message's own delimiters, \Xhh..\ the bytes named (decoded in the message's
//   character set), \.br\ a line feed; other formatting escapes (\H\ \N\ \.sp\ ...) are dropped.
// - What parse() accepts: a leading UTF-8 byte-order mark; segments ended by CR, LF or CRLF; blank
//   lines and trailing whitespace; MSH-2 of four characters or five (the v2.7 truncation character);
//   MSH-18 character sets ASCII, 8859/1, UNICODE and UNICODE UTF-8 (8859/1 is decoded to UTF-8;
//   bytes that are not valid in the declared set are malformed). A declared character set it cannot
//   decode is Errc::unsupported.
#pragma once

#include "tellonce/error.hpp"

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tellonce::hl7v2 {

// The delimiters a message declares in MSH-1 and MSH-2.
struct Encoding {
  char field = '|';
  char component = '^';
  char repetition = '~';
  char escape = '\\';
  char subcomponent = '&';
  char truncation = '\0';  // v2.7 fifth character; '\0' when not declared
};

// One segment. Field numbers follow HL7: MSH-1 is the field separator itself, MSH-2 the
// encoding characters, so for MSH value(3) is the sending application, as in every spec table.
// All indexes are 1-based; asking past the end gives an empty value (HL7's "not present").
class Segment {
 public:
  std::string_view id() const;                 // "PID"
  std::size_t position() const;                // 1-based place in the message
  std::size_t occurrence() const;              // 1-based: the 2nd OBX is 2 (for ERR-2)
  std::size_t field_count() const;             // highest field number present
  std::size_t repetition_count(std::size_t field) const;                    // 0 when empty
  std::size_t component_count(std::size_t field, std::size_t rep = 1) const;
  // The decoded value of one subcomponent.
  std::string value(std::size_t field, std::size_t component = 1, std::size_t subcomponent = 1,
                    std::size_t rep = 1) const;
  // The field's raw text as received (still escaped), for diagnostics that must quote structure
  // only and for re-sending a segment unchanged.
  std::string_view raw_field(std::size_t field) const;
  // HL7 explicit null ("" in the message): the sender asks to delete the value.
  bool is_explicit_null(std::size_t field, std::size_t rep = 1) const;

  // Implementation detail, public for the parser: where this segment's text and fields lie.
  // Its fields are owner_->fields_[first_field_ .. first_field_ + field_count_), the first being
  // field 1 (for MSH: the separator); one vector for the whole message, not one per segment.
  struct Span { std::size_t begin = 0, end = 0; };
  const class Message* owner_ = nullptr;
  std::size_t position_ = 0, occurrence_ = 0;
  Span id_;
  std::size_t first_field_ = 0, field_count_ = 0;
};

class Message {
 public:
  Message() = default;
  // Copies and moves re-point each Segment at its new owner (Segments hold offsets into text_).
  Message(const Message& other);
  Message(Message&& other) noexcept;
  Message& operator=(const Message& other);
  Message& operator=(Message&& other) noexcept;

  const Encoding& encoding() const { return encoding_; }
  std::string_view charset() const { return charset_; }   // MSH-18 as declared; empty: ASCII
  const std::vector<Segment>& segments() const { return segments_; }
  const Segment& msh() const { return segments_.front(); }  // parse() guarantees MSH first
  const Segment* first(std::string_view id) const;          // nullptr when absent
  std::vector<const Segment*> all(std::string_view id) const;

  // The MSH fields every caller needs, decoded.
  std::string message_code() const;     // MSH-9.1  "ADT"
  std::string trigger_event() const;    // MSH-9.2  "A01"
  std::string structure() const;        // MSH-9.3  "ADT_A01" (may be empty)
  std::string control_id() const;       // MSH-10
  std::string processing_id() const;    // MSH-11.1 "P", "T", "D"
  std::string version() const;          // MSH-12.1 "2.4"
  std::string accept_ack_type() const;  // MSH-15   AL, NE, ER, SU; empty: original mode
  std::string app_ack_type() const;     // MSH-16

  // Implementation detail, public for the parser.
  std::string text_;  // normalised: BOM stripped, charset decoded to UTF-8, segments ended by '\r'
  Encoding encoding_;
  std::string charset_;
  bool latin1_ = false;  // \Xhh..\ bytes are ISO 8859-1 (else UTF-8)
  std::vector<Segment> segments_;
  std::vector<Segment::Span> fields_;  // every segment's fields, in order
  void adopt_segments();  // points each Segment's owner_ at this Message
};

// Parses one message (what sat between MLLP's start and end bytes).
Result<Message> parse(std::string_view er7);

// Decodes one raw (escaped) value with the message's delimiters. Exposed for tests and fuzzing.
std::string unescape(std::string_view raw, const Encoding& enc);

// Escapes UTF-8 text for a field value: delimiters become \F\ \S\ \T\ \R\ \E\, line breaks \.br\.
std::string escape(std::string_view text, const Encoding& enc = {});

}  // namespace tellonce::hl7v2
