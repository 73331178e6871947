#include "tellonce/json.hpp"

#include <rapidjson/error/en.h>
#include <rapidjson/reader.h>
#include <rapidjson/stream.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <vector>

namespace tellonce {
namespace {

// The decimal exponent of a JSON number's leading significant digit (2 for 150, -3 for
// 0.0012), plus its exponent part; saturates far beyond any double's range.
long long decimal_magnitude(std::string_view n) {
  std::size_t i = n.starts_with('-') ? 1 : 0;
  std::size_t int_start = i;
  while (i < n.size() && n[i] >= '0' && n[i] <= '9') ++i;
  std::size_t int_end = i;
  long long lead = 0;
  std::size_t first = n.find_first_not_of('0', int_start);
  if (first < int_end) {
    lead = static_cast<long long>(int_end - first) - 1;
  } else if (i < n.size() && n[i] == '.') {
    std::size_t frac = ++i;
    while (i < n.size() && n[i] == '0') ++i;
    lead = -static_cast<long long>(i - frac) - 1;
    while (i < n.size() && n[i] >= '0' && n[i] <= '9') ++i;
  }
  if (i < n.size() && (n[i] == 'e' || n[i] == 'E')) {
    ++i;
    bool minus = i < n.size() && n[i] == '-';
    if (i < n.size() && (n[i] == '-' || n[i] == '+')) ++i;
    long long e = 0;
    for (; i < n.size(); ++i) e = std::min(e * 10 + (n[i] - '0'), 1'000'000'000'000LL);
    lead += minus ? -e : e;
  }
  return lead;
}

// Where in `body` the first \u escape of a lone UTF-16 surrogate is, in the string that ends
// (closing quote included) at `end`. Only called once the string is known to hold one.
std::size_t lone_surrogate_offset(std::string_view body, std::size_t end) {
  // The opening quote is the nearest quote not escaped, i.e. after an even run of backslashes.
  std::size_t open = end >= 2 ? end - 2 : 0;
  for (; open > 0; --open) {
    if (body[open] != '"') continue;
    std::size_t slashes = 0;
    while (slashes < open && body[open - 1 - slashes] == '\\') ++slashes;
    if (slashes % 2 == 0) break;
  }
  auto hex4 = [&](std::size_t at) {
    unsigned cp = 0;
    std::from_chars(body.data() + at, body.data() + at + 4, cp, 16);
    return cp;
  };
  for (std::size_t i = open + 1; i + 1 < end; ++i) {
    if (body[i] != '\\') continue;
    if (body[i + 1] != 'u' || i + 6 > end) { ++i; continue; }
    unsigned cp = hex4(i + 2);
    if (cp >= 0xD800 && cp <= 0xDBFF) { i += 11; continue; }  // a pair: the reader checked the low half
    if (cp >= 0xDC00 && cp <= 0xDFFF) return i;
    i += 5;
  }
  return open;
}

// What a body can hold, found in one pass before parsing: bytes past ASCII (only then must the
// reader check UTF-8; the check is byte by byte and was a fifth of the parse), a NUL byte (never
// JSON, and the in-place reader would take it for the end) and \u escapes (only they can make a
// lone surrogate, so without one no string is searched for it).
struct BodyShape {
  bool ascii = true;
  bool nul = false;
  bool u_escapes = false;
};

BodyShape shape_of(std::string_view body) {
  BodyShape shape;
  unsigned char high = 0, low = 0xFF;
  for (unsigned char c : body) {  // vectorised by the compiler
    high |= c;
    low = std::min(low, c);
  }
  shape.ascii = high < 0x80;
  shape.nul = low == 0;  // an empty body leaves low at 0xFF
  for (auto at = body.find('\\'); at != std::string_view::npos && at + 1 < body.size(); at = body.find('\\', at + 2)) {
    if (body[at + 1] == 'u') {
      shape.u_escapes = true;
      break;
    }
  }
  return shape;
}

// A UTF-16 surrogate encoded as UTF-8 (ED A0..BF xx): only a \u escape can put one into a
// string, as the raw bytes are refused by encoding validation.
bool holds_surrogate(const char* s, std::size_t n) {
  const char* end = s + n;
  for (const char* p = s; (p = static_cast<const char*>(std::memchr(p, '\xED', end - p))) != nullptr; ++p)
    if (p + 1 < end && (static_cast<unsigned char>(p[1]) & 0xE0) == 0xA0) return true;
  return false;
}

// Sits between RapidJSON's reader and the Document: converts numbers itself (see
// parse_json_into), refuses strings holding a lone surrogate and nesting past the limit. Any
// refusal stops the parse with its own text. Its place is the reader's error offset, read
// after the parse: the reader works on a copy of the stream inside a string or number, so the
// stream itself does not say where the handler was called.
struct IntakeHandler {
  rapidjson::Document* target = nullptr;
  bool surrogates_possible = true;
  unsigned max_depth = 0;
  unsigned depth = 0;
  bool too_deep = false;
  std::string refusal;
  // The reader's offset is then just past the string's closing quote, not at the escape.
  bool refused_surrogate = false;

  bool refuse(std::string why) {
    refusal = std::move(why);
    return false;
  }

  bool Null() { return target->Null(); }
  bool Bool(bool b) { return target->Bool(b); }
  bool Int(int i) { return target->Int(i); }
  bool Uint(unsigned u) { return target->Uint(u); }
  bool Int64(std::int64_t i) { return target->Int64(i); }
  bool Uint64(std::uint64_t u) { return target->Uint64(u); }
  bool Double(double d) { return target->Double(d); }
  bool RawNumber(const char* s, rapidjson::SizeType n, bool) {
    const char* last = s + n;
    if (std::string_view(s, n).find_first_of(".eE") == std::string_view::npos) {
      if (s[0] == '-') {
        std::int64_t i;
        if (auto r = std::from_chars(s, last, i); r.ec == std::errc{} && r.ptr == last) return target->Int64(i);
      } else {
        std::uint64_t u;
        if (auto r = std::from_chars(s, last, u); r.ec == std::errc{} && r.ptr == last) return target->Uint64(u);
      }
      // Integers beyond 64 bits are held as doubles, as RapidJSON does.
    }
    double d = 0;
    auto r = std::from_chars(s, last, d);
    if (r.ec == std::errc::result_out_of_range) {  // the reader's offset: where the number starts
      if (decimal_magnitude({s, n}) > 0)
        return refuse("the number is too big: the broker holds decimals up to about 1.8e308");
      d = s[0] == '-' ? -0.0 : 0.0;  // nearer zero than any double: zero, the nearest one
    } else if (r.ec != std::errc{} || r.ptr != last) {
      return refuse("not a JSON number");
    }
    return target->Double(d);
  }
  bool String(const char* s, rapidjson::SizeType n, bool copy) {
    if (surrogates_possible && holds_surrogate(s, n)) return refuse_surrogate();
    return target->String(s, n, copy);
  }
  bool Key(const char* s, rapidjson::SizeType n, bool copy) {
    if (surrogates_possible && holds_surrogate(s, n)) return refuse_surrogate();
    return target->Key(s, n, copy);
  }
  // The iterative parser cannot blow the stack; the limit bounds what the validator walks.
  bool deeper() {
    if (++depth <= max_depth) return true;
    too_deep = true;
    return false;
  }
  bool StartObject() { return deeper() && target->StartObject(); }
  bool EndObject(rapidjson::SizeType members) { return --depth, target->EndObject(members); }
  bool StartArray() { return deeper() && target->StartArray(); }
  bool EndArray(rapidjson::SizeType elements) { return --depth, target->EndArray(elements); }

  bool refuse_surrogate() {
    refused_surrogate = true;
    return refuse("a \\u escape of a lone UTF-16 low surrogate (\\udc00-\\udfff without a high surrogate "
                  "escape before it) is not a character: encode the character itself");
  }
};

}  // namespace

const rapidjson::Value* json_member(const rapidjson::Value& v, std::string_view name) {
  if (!v.IsObject()) return nullptr;
  for (const auto& m : v.GetObject())  // the first of that name, as RapidJSON's FindMember
    if (m.name.GetStringLength() == name.size() && same_bytes(m.name.GetString(), name.data(), name.size()))
      return &m.value;
  return nullptr;
}

std::string_view json_string(const rapidjson::Value* v) {
  if (!v || !v->IsString()) return {};
  return {v->GetString(), v->GetStringLength()};
}

std::string line_column(std::string_view text, std::size_t offset) {
  std::size_t line = 1, col = 1;
  for (std::size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') { ++line; col = 1; } else { ++col; }
  }
  return std::to_string(line) + ":" + std::to_string(col);
}

Result<void> parse_json_into(rapidjson::Document& doc, std::string_view body, const JsonLimits& limits) {
  if (body.size() > limits.max_bytes) {
    return Failure::permanent(Errc::too_large, Issue{Severity::error, "too-long",
        "body is " + std::to_string(body.size()) + " bytes; the limit is " +
            std::to_string(limits.max_bytes), "(body)", ""});
  }
  if (body.starts_with("\xEF\xBB\xBF")) {
    return Failure::permanent(Errc::malformed, Issue{Severity::error, "structure",
        "the body starts with a UTF-8 byte-order mark (bytes EF BB BF): FHIR JSON must not start with "
        "one; remove it", "(body)", "json-bom"});
  }
  // Numbers reach the handler as text (kParseNumbersAsStringsFlag) and are converted by
  // number_value: RapidJSON 1.1's own conversion crashes on long decimals (full precision)
  // and overflows int on huge exponents, so none of its number code runs on partner input.
  constexpr unsigned flags = rapidjson::kParseNumbersAsStringsFlag;
  const auto shape = shape_of(body);
  if (shape.nul) {  // a string spells it \u0000
    const auto at = body.find('\0');
    return Failure::permanent(Errc::malformed, Issue{Severity::error, "structure",
        "malformed JSON at " + line_column(body, at) + " (byte " + std::to_string(at) +
            "): a NUL byte (0x00) is not allowed in JSON; inside a string write it as \\u0000", "(body)", "json"});
  }
  rapidjson::GenericReader<rapidjson::UTF8<>, rapidjson::UTF8<>> reader;
  IntakeHandler handler{nullptr, shape.u_escapes, limits.max_depth, 0, false, {}, false};
  // RapidJSON reads fastest in place: strings are unescaped where they lie and the Document
  // points at them, where a read from the body would copy each twice (to the reader's stack,
  // then into the Document). So the body is copied once, NUL-terminated, into the Document's
  // own allocator, which lives as long as the values pointing into it. (A value copied out into
  // another Document shares those strings, as any RapidJSON constant string is shared: nothing
  // here copies one out.) RapidJSON's SSE2 scanning is not used: its aligned 16-byte loads
  // read past the terminating NUL of every other string it parses, which ASan reports.
  char* text = static_cast<char*>(doc.GetAllocator().Malloc(body.size() + 1));
  std::memcpy(text, body.data(), body.size());
  text[body.size()] = '\0';
  rapidjson::InsituStringStream stream(text);
  auto parse = [&]<unsigned Flags>() {
    auto generate = [&](rapidjson::Document& target) {
      handler.target = &target;
      return !reader.template Parse<Flags>(stream, handler).IsError();
    };
    doc.Populate(generate);
  };
  constexpr unsigned insitu = flags | rapidjson::kParseInsituFlag;
  if (shape.ascii) parse.template operator()<insitu>();  // ASCII is valid UTF-8
  else parse.template operator()<insitu | rapidjson::kParseValidateEncodingFlag>();
  if (handler.too_deep) {
    return Failure::permanent(Errc::malformed, Issue{Severity::error, "too-costly",
        "JSON nesting is deeper than the limit of " + std::to_string(limits.max_depth) + " levels",
        "(body)", "json-depth"});
  }
  if (reader.HasParseError()) {
    if (!handler.refusal.empty()) {
      const auto at = handler.refused_surrogate ? lone_surrogate_offset(body, reader.GetErrorOffset())
                                                : reader.GetErrorOffset();
      return Failure::permanent(Errc::malformed, Issue{Severity::error, "structure",
          "malformed JSON at " + line_column(body, at) + " (byte " + std::to_string(at) + "): " + handler.refusal,
          "(body)", "json"});
    }
    auto code = reader.GetParseErrorCode();
    std::size_t offset = reader.GetErrorOffset();
    std::string why = code == rapidjson::kParseErrorStringInvalidEncoding
                          ? "invalid UTF-8"
                      : code == rapidjson::kParseErrorStringUnicodeSurrogateInvalid
                          ? "a \\u escape of a UTF-16 high surrogate (\\ud800-\\udbff) must be followed by a "
                            "low surrogate escape (\\udc00-\\udfff)"
                          : rapidjson::GetParseError_En(code);
    return Failure::permanent(Errc::malformed, Issue{Severity::error, "structure",
        "malformed JSON at " + line_column(body, offset) + " (byte " + std::to_string(offset) + "): " + why,
        "(body)", "json"});
  }
  return {};
}

Result<rapidjson::Document> parse_json(std::string_view body, const JsonLimits& limits) {
  rapidjson::Document doc;
  if (auto parsed = parse_json_into(doc, body, limits); !parsed) return parsed.error();
  return doc;
}

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out.push_back('"');
  // Most values (ids, codes, partner names) need no escape: appended whole, not byte by byte.
  const bool plain = std::none_of(s.begin(), s.end(), [](unsigned char c) { return c < 0x20 || c == '"' || c == '\\'; });
  if (plain) {
    out.append(s);
    out.push_back('"');
    return;
  }
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out.push_back(hex[c >> 4]);
          out.push_back(hex[c & 0xf]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

namespace {

// Text cut to at most max bytes on a UTF-8 character boundary, marked when cut.
void append_capped_json_string(std::string& out, std::string_view s, std::size_t max) {
  if (s.size() <= max) return append_json_string(out, s);
  std::size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // not mid-character
  std::string shortened(s.substr(0, cut));
  shortened += "... (" + std::to_string(s.size() - cut) + " more bytes)";
  append_json_string(out, shortened);
}

void append_issue(std::string& out, const Issue& i) {
  out += R"({"severity":)";
  append_json_string(out, to_string(i.severity));
  out += R"(,"code":)";
  append_capped_json_string(out, i.code.empty() ? "processing" : i.code, outcome_limits::max_text_bytes);
  if (!i.rule.empty()) {
    out += R"(,"details":{"coding":[{"system":"urn:tellonce:rule","code":)";
    append_capped_json_string(out, i.rule, outcome_limits::max_text_bytes);
    out += "}]}";
  }
  out += R"(,"diagnostics":)";
  append_capped_json_string(out, i.diagnostics, outcome_limits::max_text_bytes);
  if (!i.location.empty()) {
    out += R"(,"location":[)";
    append_capped_json_string(out, i.location, outcome_limits::max_text_bytes);
    out += R"(],"expression":[)";
    append_capped_json_string(out, i.location, outcome_limits::max_text_bytes);
    out += "]";
  }
  out += "}";
}

}  // namespace

std::string operation_outcome_json(const std::vector<Issue>& issues) {
  std::string out = R"({"resourceType":"OperationOutcome","issue":[)";
  // Room kept for the closing issue and brackets: one capped issue escapes to at most
  // 6 bytes per byte of its four capped texts (\u00XX), plus the fixed parts.
  constexpr std::size_t reserve = 4 * 6 * (outcome_limits::max_text_bytes + 64) + 512;
  std::size_t listed = 0;
  std::size_t errors_left_out = 0;
  for (const auto& i : issues) {
    if (listed > 0 && out.size() + reserve > outcome_limits::max_answer_bytes) {
      errors_left_out += i.is_error();
      continue;
    }
    if (listed++ > 0) out.push_back(',');
    append_issue(out, i);
  }
  if (listed < issues.size()) {
    std::size_t left_out = issues.size() - listed;
    std::string text = std::to_string(left_out) + " more issue(s) not listed: the answer is capped at " +
                       std::to_string(outcome_limits::max_answer_bytes / 1024) + " KiB (" +
                       std::to_string(errors_left_out) + " of them errors)";
    out.push_back(',');
    append_issue(out, Issue{errors_left_out ? Severity::error : Severity::information, "too-costly",
                            std::move(text), "", "answer-limit"});
  }
  if (issues.empty())
    out += R"({"severity":"information","code":"informational","diagnostics":"no issues"})";
  out += "]}";
  return out;
}

}  // namespace tellonce
