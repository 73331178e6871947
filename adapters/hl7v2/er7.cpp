// ER7 parsing: one pass over the input builds a normalised UTF-8 copy (segments ended by '\r')
// and the spans of each segment's fields in it. Components, repetitions and escapes are only
// looked at when a caller asks for a value, so a message costs one allocation for its text and
// one per segment for its field spans.
#include "hl7v2/er7.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>
#include <utility>

namespace tellonce::hl7v2 {

namespace {

constexpr std::string_view kBom = "\xEF\xBB\xBF";

Failure malformed(std::string rule, std::string location, std::string diagnostics) {
  return Failure::permanent(Errc::malformed, Issue{Severity::error, "structure", std::move(diagnostics),
                                                   std::move(location), std::move(rule)});
}

std::string v2_location(std::string_view segment_id, std::size_t occurrence, std::size_t field = 0) {
  std::string loc(segment_id);
  loc += '^';
  loc += std::to_string(occurrence);
  if (field > 0) {
    loc += '^';
    loc += std::to_string(field);
  }
  return loc;
}

bool is_line_end(char c) { return c == '\r' || c == '\n'; }
bool is_blank(char c) { return c == ' ' || c == '\t'; }

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is not valid (overlong forms,
// surrogates and code points past U+10FFFF are invalid).
std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  std::size_t len;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (s.size() - i < len) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return 0;
  }
  return len;
}

bool all_ascii(std::string_view s) {
  std::size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    std::uint64_t word;
    std::memcpy(&word, s.data() + i, 8);
    if (word & 0x8080808080808080ULL) return false;
  }
  for (; i < s.size(); ++i)
    if (static_cast<unsigned char>(s[i]) >= 0x80) return false;
  return true;
}

void append_latin1(std::string& out, unsigned char b) {
  if (b < 0x80) {
    out += static_cast<char>(b);
  } else {
    out += static_cast<char>(0xC0 | (b >> 6));
    out += static_cast<char>(0x80 | (b & 0x3F));
  }
}

// Appends bytes named by \Xhh..\ as UTF-8: transcoded from 8859/1, or checked as UTF-8 with each
// invalid sequence replaced by U+FFFD (a value cannot fail once the message has parsed).
void append_bytes(std::string& out, std::string_view bytes, bool latin1) {
  if (latin1) {
    for (char c : bytes) append_latin1(out, static_cast<unsigned char>(c));
    return;
  }
  std::size_t i = 0;
  while (i < bytes.size()) {
    const std::size_t n = utf8_sequence_length(bytes, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(bytes.substr(i, n));
      i += n;
    }
  }
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

void unescape_into(std::string& out, std::string_view raw, const Encoding& enc, bool latin1) {
  std::size_t i = 0;
  while (i < raw.size()) {
    const std::size_t esc = raw.find(enc.escape, i);
    if (esc == std::string_view::npos) {
      out.append(raw.substr(i));
      return;
    }
    out.append(raw.substr(i, esc - i));
    const std::size_t close = raw.find(enc.escape, esc + 1);
    if (close == std::string_view::npos) {
      // An escape that never closes is text, not a sequence (senders that do not escape '\').
      out.append(raw.substr(esc));
      return;
    }
    const std::string_view seq = raw.substr(esc + 1, close - esc - 1);
    i = close + 1;
    if (seq.size() == 1) {
      switch (seq[0]) {
        case 'F': out += enc.field; break;
        case 'S': out += enc.component; break;
        case 'T': out += enc.subcomponent; break;
        case 'R': out += enc.repetition; break;
        case 'E': out += enc.escape; break;
        case 'P':
          if (enc.truncation != '\0') out += enc.truncation;
          break;
        default: break;  // \H\ \N\ (highlighting) and unknown ones: dropped
      }
    } else if (seq == ".br") {
      out += '\n';
    } else if (seq.size() >= 3 && (seq[0] == 'X' || seq[0] == 'x') && seq.size() % 2 == 1) {
      std::string bytes;
      bytes.reserve(seq.size() / 2);
      bool ok = true;
      for (std::size_t k = 1; k + 1 < seq.size(); k += 2) {
        const int h = hex_digit(seq[k]), l = hex_digit(seq[k + 1]);
        if (h < 0 || l < 0) {
          ok = false;
          break;
        }
        bytes += static_cast<char>(h * 16 + l);
      }
      if (ok) append_bytes(out, bytes, latin1);
    }
    // Everything else (\.sp\ \.in\ \Cxxyy\ \Mxxyyzz\ \Zxx\ ...) is dropped.
  }
}

std::string unescape_value(std::string_view raw, const Encoding& enc, bool latin1) {
  if (raw == "\"\"") return {};  // explicit null: no value
  std::string out;
  if (raw.find(enc.escape) == std::string_view::npos) {
    out.assign(raw);
    return out;
  }
  out.reserve(raw.size());
  unescape_into(out, raw, enc, latin1);
  return out;
}

// The n-th (1-based) piece of `s` split by `sep`; empty when there are fewer pieces.
std::string_view nth_piece(std::string_view s, char sep, std::size_t n) {
  if (n == 0) return {};
  std::size_t start = 0;
  for (std::size_t k = 1; k < n; ++k) {
    const std::size_t next = s.find(sep, start);
    if (next == std::string_view::npos) return {};
    start = next + 1;
  }
  const std::size_t end = s.find(sep, start);
  return s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
}

std::size_t piece_count(std::string_view s, char sep) {
  if (s.empty()) return 0;
  return static_cast<std::size_t>(std::count(s.begin(), s.end(), sep)) + 1;
}

bool is_segment_id_char(char c) { return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

bool usable_delimiter(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u > 0x20 && u < 0x7F && !is_segment_id_char(c) && !(c >= 'a' && c <= 'z');
}

enum class Charset { utf8_lenient, ascii, latin1, utf8 };

// MSH-18's first repetition, first component, trimmed: the message's default character set.
std::string_view declared_charset(std::string_view msh18_raw, const Encoding& enc) {
  std::string_view v = nth_piece(nth_piece(msh18_raw, enc.repetition, 1), enc.component, 1);
  while (!v.empty() && is_blank(v.front())) v.remove_prefix(1);
  while (!v.empty() && is_blank(v.back())) v.remove_suffix(1);
  return v;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

// Which field of a segment line byte `offset` lies in (1-based; MSH counts its separator as 1).
std::size_t field_at(std::string_view line, std::size_t offset, char field_sep, bool is_msh) {
  const std::size_t seps = static_cast<std::size_t>(
      std::count(line.begin(), line.begin() + static_cast<std::ptrdiff_t>(std::min(offset, line.size())), field_sep));
  return is_msh ? seps + 1 : seps;
}

// Occurrences per segment id. A real message has a handful of distinct ids, which a short list
// counts fastest; a hostile one may have thousands, so past 32 they move to a hash map.
class OccurrenceCounter {
 public:
  std::size_t next(std::string_view id) {
    const std::uint32_t key = static_cast<std::uint32_t>(static_cast<unsigned char>(id[0])) << 16 |
                              static_cast<std::uint32_t>(static_cast<unsigned char>(id[1])) << 8 |
                              static_cast<unsigned char>(id[2]);
    if (many_.empty()) {
      for (std::size_t i = 0; i < few_count_; ++i)
        if (few_[i].first == key) return ++few_[i].second;
      if (few_count_ < few_.size()) {
        few_[few_count_++] = {key, 1};
        return 1;
      }
      for (const auto& [k, n] : few_) many_.emplace(k, n);
    }
    return ++many_[key];
  }

 private:
  std::array<std::pair<std::uint32_t, std::size_t>, 32> few_{};
  std::size_t few_count_ = 0;
  std::unordered_map<std::uint32_t, std::size_t> many_;
};

}  // namespace

// ---- Segment ---------------------------------------------------------------------------------

std::string_view Segment::id() const {
  return std::string_view(owner_->text_).substr(id_.begin, id_.end - id_.begin);
}
std::size_t Segment::position() const { return position_; }
std::size_t Segment::occurrence() const { return occurrence_; }
std::size_t Segment::field_count() const { return field_count_; }

std::string_view Segment::raw_field(std::size_t field) const {
  if (field == 0 || field > field_count_) return {};
  const Span& s = owner_->fields_[first_field_ + field - 1];
  return std::string_view(owner_->text_).substr(s.begin, s.end - s.begin);
}

namespace {
// MSH-1 and MSH-2 hold the delimiters themselves: never split or unescaped.
bool is_delimiter_field(const Segment& seg, std::size_t field) {
  return field <= 2 && seg.id() == "MSH";
}
}  // namespace

std::size_t Segment::repetition_count(std::size_t field) const {
  const std::string_view raw = raw_field(field);
  if (raw.empty()) return 0;
  if (is_delimiter_field(*this, field)) return 1;
  return piece_count(raw, owner_->encoding_.repetition);
}

std::size_t Segment::component_count(std::size_t field, std::size_t rep) const {
  const std::string_view raw = raw_field(field);
  if (is_delimiter_field(*this, field)) return raw.empty() || rep != 1 ? 0 : 1;
  return piece_count(nth_piece(raw, owner_->encoding_.repetition, rep), owner_->encoding_.component);
}

std::string Segment::value(std::size_t field, std::size_t component, std::size_t subcomponent,
                           std::size_t rep) const {
  const std::string_view raw = raw_field(field);
  if (raw.empty()) return {};
  if (is_delimiter_field(*this, field)) {
    return component == 1 && subcomponent == 1 && rep == 1 ? std::string(raw) : std::string();
  }
  const Encoding& enc = owner_->encoding_;
  const std::string_view piece =
      nth_piece(nth_piece(nth_piece(raw, enc.repetition, rep), enc.component, component), enc.subcomponent,
                subcomponent);
  return unescape_value(piece, enc, owner_->latin1_);
}

bool Segment::is_explicit_null(std::size_t field, std::size_t rep) const {
  if (is_delimiter_field(*this, field)) return false;
  return nth_piece(raw_field(field), owner_->encoding_.repetition, rep) == "\"\"";
}

// ---- Message ---------------------------------------------------------------------------------

void Message::adopt_segments() {
  for (Segment& s : segments_) s.owner_ = this;
}
Message::Message(const Message& other)
    : text_(other.text_), encoding_(other.encoding_), charset_(other.charset_), latin1_(other.latin1_),
      segments_(other.segments_), fields_(other.fields_) {
  adopt_segments();
}
Message::Message(Message&& other) noexcept
    : text_(std::move(other.text_)), encoding_(other.encoding_), charset_(std::move(other.charset_)),
      latin1_(other.latin1_), segments_(std::move(other.segments_)), fields_(std::move(other.fields_)) {
  adopt_segments();
}
Message& Message::operator=(const Message& other) {
  if (this != &other) {
    Message copy(other);
    *this = std::move(copy);
  }
  return *this;
}
Message& Message::operator=(Message&& other) noexcept {
  if (this != &other) {
    text_ = std::move(other.text_);
    encoding_ = other.encoding_;
    charset_ = std::move(other.charset_);
    latin1_ = other.latin1_;
    segments_ = std::move(other.segments_);
    fields_ = std::move(other.fields_);
    adopt_segments();
  }
  return *this;
}

const Segment* Message::first(std::string_view id) const {
  for (const Segment& s : segments_)
    if (s.id() == id) return &s;
  return nullptr;
}

std::vector<const Segment*> Message::all(std::string_view id) const {
  std::vector<const Segment*> out;
  for (const Segment& s : segments_)
    if (s.id() == id) out.push_back(&s);
  return out;
}

std::string Message::message_code() const { return msh().value(9, 1); }
std::string Message::trigger_event() const { return msh().value(9, 2); }
std::string Message::structure() const { return msh().value(9, 3); }
std::string Message::control_id() const { return msh().value(10); }
std::string Message::processing_id() const { return msh().value(11, 1); }
std::string Message::version() const { return msh().value(12, 1); }
std::string Message::accept_ack_type() const { return msh().value(15); }
std::string Message::app_ack_type() const { return msh().value(16); }

// ---- parse -----------------------------------------------------------------------------------

Result<Message> parse(std::string_view er7) {
  if (er7.substr(0, kBom.size()) == kBom) er7.remove_prefix(kBom.size());
  // Leading blank lines and white space before the first segment.
  std::size_t start = 0;
  while (start < er7.size() && (is_line_end(er7[start]) || is_blank(er7[start]))) ++start;
  er7.remove_prefix(start);
  if (er7.empty()) return malformed("hl7v2-empty", "", "the message is empty");

  const std::string_view head = er7.substr(0, 3);
  if (head == "FHS" || head == "BHS") {
    return Failure::permanent(
        Errc::unsupported,
        Issue{Severity::error, "not-supported",
              "batches (FHS/BHS) are not accepted: send each message in its own MLLP frame",
              std::string(head) + "^1", "hl7v2-batch"});
  }
  if (head != "MSH" || er7.size() < 4) {
    return malformed("hl7v2-msh", "MSH^1", "the message does not start with an MSH segment");
  }

  Message msg;
  Encoding& enc = msg.encoding_;
  enc.field = er7[3];
  if (!usable_delimiter(enc.field)) {
    return malformed("hl7v2-encoding", "MSH^1^1", "MSH-1 (field separator) is not a printable delimiter");
  }
  std::size_t msh_end = 0;
  while (msh_end < er7.size() && !is_line_end(er7[msh_end])) ++msh_end;
  const std::string_view msh_line = er7.substr(0, msh_end);
  const std::string_view msh2 = nth_piece(msh_line.substr(4), enc.field, 1);
  if (msh2.size() != 4 && msh2.size() != 5) {
    return malformed("hl7v2-encoding", "MSH^1^2",
                     "MSH-2 (encoding characters) must be 4 characters (5 with the truncation character), found " +
                         std::to_string(msh2.size()));
  }
  enc.component = msh2[0];
  enc.repetition = msh2[1];
  enc.escape = msh2[2];
  enc.subcomponent = msh2[3];
  enc.truncation = msh2.size() == 5 ? msh2[4] : '\0';
  {
    std::array<char, 6> all{enc.field, enc.component, enc.repetition, enc.escape, enc.subcomponent,
                            enc.truncation};
    const std::size_t n = msh2.size() + 1;
    for (std::size_t a = 0; a < n; ++a) {
      if (!usable_delimiter(all[a])) {
        return malformed("hl7v2-encoding", "MSH^1^2",
                         "MSH-2 character " + std::to_string(a) + " is not a printable delimiter");
      }
      for (std::size_t b = a + 1; b < n; ++b) {
        if (all[a] == all[b]) {
          return malformed("hl7v2-encoding", "MSH^1^2", "MSH-1/MSH-2 declare the same delimiter twice");
        }
      }
    }
  }

  // MSH-18: MSH-1 is the separator, so MSH-n is the (n-1)-th piece after "MSH".
  Charset charset = Charset::utf8_lenient;
  {
    const std::string_view declared = declared_charset(nth_piece(msh_line, enc.field, 18), enc);
    msg.charset_.assign(declared);
    if (declared.empty()) {
      charset = Charset::utf8_lenient;  // HL7 says ASCII; UTF-8 (its superset) is read as sent
    } else if (iequals(declared, "ASCII")) {
      charset = Charset::ascii;
    } else if (iequals(declared, "8859/1")) {
      charset = Charset::latin1;
      msg.latin1_ = true;
    } else if (iequals(declared, "UNICODE UTF-8") || iequals(declared, "UNICODE")) {
      // Plain UNICODE (deprecated) in an 8-bit stream whose MSH reads as ASCII can only be UTF-8.
      charset = Charset::utf8;
    } else {
      return Failure::permanent(
          Errc::unsupported,
          Issue{Severity::error, "not-supported",
                "MSH-18 declares a character set this broker cannot decode (it reads ASCII, 8859/1, "
                "UNICODE and UNICODE UTF-8)",
                "MSH^1^18", "hl7v2-charset"});
    }
  }

  const bool ascii_only = all_ascii(er7);  // the common case: nothing to check byte by byte
  msg.text_.reserve(charset == Charset::latin1 ? er7.size() + er7.size() / 8 : er7.size());
  msg.segments_.reserve(16);
  // One span per field separator (plus MSH-1): counting them first spares the vector's regrowth.
  msg.fields_.reserve(static_cast<std::size_t>(std::count(er7.begin(), er7.end(), enc.field)) + 2);
  OccurrenceCounter occurrences;
  std::size_t pos = 0;
  while (pos < er7.size()) {
    std::size_t end = pos;
    while (end < er7.size() && !is_line_end(er7[end])) ++end;
    std::string_view line = er7.substr(pos, end - pos);
    pos = end;
    if (pos < er7.size() && er7[pos] == '\r' && pos + 1 < er7.size() && er7[pos + 1] == '\n') ++pos;
    if (pos < er7.size()) ++pos;
    while (!line.empty() && is_blank(line.back())) line.remove_suffix(1);
    if (line.empty()) continue;  // blank line

    const std::size_t position = msg.segments_.size() + 1;
    if (line.size() < 3 || !is_segment_id_char(line[0]) || !is_segment_id_char(line[1]) ||
        !is_segment_id_char(line[2]) || (line.size() > 3 && line[3] != enc.field)) {
      return malformed("hl7v2-segment-id", "",
                       "segment " + std::to_string(position) +
                           " does not start with a segment id (three upper-case letters or digits) and the "
                           "field separator");
    }
    const std::string_view id = line.substr(0, 3);
    const bool is_msh = id == "MSH";
    if (is_msh && position != 1) {
      return malformed("hl7v2-msh", v2_location("MSH", 2),
                       "a second MSH segment: one message per MLLP frame (batches are not accepted)");
    }
    const std::size_t occurrence = occurrences.next(id);

    // Decode the line into the normalised text.
    const std::size_t seg_begin = msg.text_.size();
    if (charset == Charset::latin1) {
      for (char c : line) append_latin1(msg.text_, static_cast<unsigned char>(c));
    } else if (ascii_only) {
      msg.text_.append(line);
    } else {
      std::size_t i = 0;
      while (i < line.size()) {
        const auto b = static_cast<unsigned char>(line[i]);
        if (b < 0x80) {
          ++i;
          continue;
        }
        const std::size_t n = charset == Charset::ascii ? 0 : utf8_sequence_length(line, i);
        if (n == 0) {
          const std::size_t field = field_at(line, i, enc.field, is_msh);
          return malformed("hl7v2-charset", v2_location(id, occurrence, field),
                           std::string("byte ") + std::to_string(i + 1) + " of this segment is not valid " +
                               (charset == Charset::ascii ? "ASCII (MSH-18 declares ASCII)"
                                                          : "UTF-8 (declare MSH-18 8859/1 for Latin-1 text)"));
        }
        i += n;
      }
      msg.text_.append(line);
    }
    const std::size_t seg_end = msg.text_.size();
    msg.text_ += '\r';

    Segment seg;
    seg.owner_ = &msg;
    seg.position_ = position;
    seg.occurrence_ = occurrence;
    seg.id_ = {seg_begin, seg_begin + 3};
    const std::string_view text(msg.text_);
    auto& fields = msg.fields_;
    seg.first_field_ = fields.size();
    if (is_msh || seg_end > seg_begin + 3) {
      if (is_msh) fields.push_back({seg_begin + 3, seg_begin + 4});  // MSH-1: the separator itself
      // One pass over the segment; fields are short, so a byte loop beats a memchr call per field.
      const char* data = text.data();
      const char sep = enc.field;
      std::size_t f = seg_begin + 4;
      for (std::size_t i = f; i < seg_end; ++i) {
        if (data[i] == sep) {
          fields.push_back({f, i});
          f = i + 1;
        }
      }
      fields.push_back({f, seg_end});
    }
    // Trailing empty fields are "not present": field_count() is the highest field with a value.
    while (fields.size() > seg.first_field_ && fields.back().begin == fields.back().end) fields.pop_back();
    seg.field_count_ = fields.size() - seg.first_field_;
    msg.segments_.push_back(std::move(seg));
  }
  msg.adopt_segments();
  return msg;
}

std::string unescape(std::string_view raw, const Encoding& enc) {
  std::string out;
  out.reserve(raw.size());
  unescape_into(out, raw, enc, false);
  return out;
}

std::string escape(std::string_view text, const Encoding& enc) {
  std::string out;
  out.reserve(text.size() + 8);
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const auto seq = [&](char code) {
      out += enc.escape;
      out += code;
      out += enc.escape;
    };
    if (c == enc.field) {
      seq('F');
    } else if (c == enc.component) {
      seq('S');
    } else if (c == enc.subcomponent) {
      seq('T');
    } else if (c == enc.repetition) {
      seq('R');
    } else if (c == enc.escape) {
      seq('E');
    } else if (enc.truncation != '\0' && c == enc.truncation) {
      seq('P');
    } else if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      out += enc.escape;
      out += ".br";
      out += enc.escape;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace tellonce::hl7v2
