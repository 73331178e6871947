#include "broker/validate/primitives.hpp"

#include <array>
#include <utility>

namespace tellonce::fhir {
namespace {

bool digit(char c) { return c >= '0' && c <= '9'; }
bool lower_hex(char c) { return digit(c) || (c >= 'a' && c <= 'f'); }
bool space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Reads exactly n digits at s[pos]; advances pos.
bool digits(std::string_view s, std::size_t& pos, int n, int& value) {
  if (pos + n > s.size()) return false;
  value = 0;
  for (int i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (!digit(c)) return false;
    value = value * 10 + (c - '0');
  }
  pos += n;
  return true;
}

bool leap(int year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

int days_in_month(int year, int month) {
  static constexpr std::array<int, 12> days{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && leap(year) ? 29 : days[month - 1];
}

// YYYY, YYYY-MM or YYYY-MM-DD; `parts` says how many were present.
bool date_part(std::string_view s, std::size_t& pos, int& parts) {
  int year = 0, month = 0, day = 0;
  if (!digits(s, pos, 4, year) || year == 0) return false;
  parts = 1;
  if (pos == s.size() || s[pos] != '-') return true;
  ++pos;
  if (!digits(s, pos, 2, month) || month < 1 || month > 12) return false;
  parts = 2;
  if (pos == s.size() || s[pos] != '-') return true;
  ++pos;
  if (!digits(s, pos, 2, day) || day < 1 || day > days_in_month(year, month)) return false;
  parts = 3;
  return true;
}

// hh:mm:ss(.fff)? — FHIR allows a leap second 60.
bool time_part(std::string_view s, std::size_t& pos) {
  int h = 0, m = 0, sec = 0;
  if (!digits(s, pos, 2, h) || h > 23) return false;
  if (pos == s.size() || s[pos++] != ':') return false;
  if (!digits(s, pos, 2, m) || m > 59) return false;
  if (pos == s.size() || s[pos++] != ':') return false;
  if (!digits(s, pos, 2, sec) || sec > 60) return false;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    std::size_t start = pos;
    while (pos < s.size() && digit(s[pos])) ++pos;
    if (pos == start) return false;
  }
  return true;
}

// Z or +hh:mm / -hh:mm, offsets up to 14:00.
bool zone_part(std::string_view s, std::size_t& pos) {
  if (pos == s.size()) return false;
  if (s[pos] == 'Z') { ++pos; return true; }
  if (s[pos] != '+' && s[pos] != '-') return false;
  ++pos;
  int h = 0, m = 0;
  if (!digits(s, pos, 2, h)) return false;
  if (pos == s.size() || s[pos++] != ':') return false;
  if (!digits(s, pos, 2, m) || m > 59) return false;
  return h < 14 || (h == 14 && m == 0);
}

// FHIR string: non-empty, no control characters other than tab, CR, LF.
bool is_fhir_string(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s)
    if (c < 0x20 && c != '\t' && c != '\r' && c != '\n') return false;
  return true;
}

bool is_uri(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s)
    if (c <= 0x20) return false;
  return true;
}

bool is_oid(std::string_view s) {
  constexpr std::string_view prefix = "urn:oid:";
  if (s.substr(0, prefix.size()) != prefix) return false;
  std::size_t pos = prefix.size();
  if (pos >= s.size() || s[pos] < '0' || s[pos] > '2') return false;
  ++pos;
  int arcs = 0;
  while (pos < s.size()) {
    if (s[pos++] != '.' || pos == s.size() || !digit(s[pos])) return false;
    bool leading_zero = s[pos] == '0';
    std::size_t start = pos;
    while (pos < s.size() && digit(s[pos])) ++pos;
    if (leading_zero && pos - start > 1) return false;
    ++arcs;
  }
  return arcs > 0;
}

bool is_uuid(std::string_view s) {
  constexpr std::string_view prefix = "urn:uuid:";
  if (s.size() != prefix.size() + 36 || s.substr(0, prefix.size()) != prefix) return false;
  std::string_view u = s.substr(prefix.size());
  for (std::size_t i = 0; i < u.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? u[i] != '-' : !lower_hex(u[i])) return false;
  }
  return true;
}

bool is_base64(std::string_view s) {
  std::size_t chars = 0, padding = 0;
  for (char c : s) {
    if (space(c)) continue;
    bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || digit(c) || c == '+' || c == '/';
    if (c == '=') {
      ++padding;
    } else if (!alpha || padding > 0) {
      return false;  // data after padding
    }
    ++chars;
  }
  return chars > 0 && chars % 4 == 0 && padding <= 2;
}

std::string_view view(const rapidjson::Value& v) { return {v.GetString(), v.GetStringLength()}; }

// Narrative.div: one <div> element in the XHTML namespace (the content itself is not parsed).
bool is_xhtml_div(std::string_view s) {
  if (!is_fhir_string(s)) return false;
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  if (s.size() < 5 || s.substr(0, 4) != "<div" || !(space(s[4]) || s[4] == '>' || s[4] == '/')) return false;
  std::size_t close = s.find('>');
  std::string_view open_tag = s.substr(0, close == std::string_view::npos ? s.size() : close + 1);
  constexpr std::string_view ns_double = "xmlns=\"http://www.w3.org/1999/xhtml\"";
  constexpr std::string_view ns_single = "xmlns='http://www.w3.org/1999/xhtml'";
  if (open_tag.find(ns_double) == std::string_view::npos && open_tag.find(ns_single) == std::string_view::npos)
    return false;
  return open_tag.ends_with("/>") ? open_tag.size() == s.size() : s.ends_with("</div>");
}

}  // namespace

bool is_date(std::string_view s) {
  std::size_t pos = 0;
  int parts = 0;
  return date_part(s, pos, parts) && pos == s.size();
}

bool is_date_time(std::string_view s) {
  std::size_t pos = 0;
  int parts = 0;
  if (!date_part(s, pos, parts)) return false;
  if (pos == s.size()) return true;
  if (parts != 3 || s[pos++] != 'T') return false;
  return time_part(s, pos) && zone_part(s, pos) && pos == s.size();
}

bool is_instant(std::string_view s) {
  std::size_t pos = 0;
  int parts = 0;
  if (!date_part(s, pos, parts) || parts != 3) return false;
  if (pos == s.size() || s[pos++] != 'T') return false;
  return time_part(s, pos) && zone_part(s, pos) && pos == s.size();
}

bool is_time(std::string_view s) {
  std::size_t pos = 0;
  return time_part(s, pos) && pos == s.size();
}

bool is_id(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    bool ok = digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// [^\s]+(\s[^\s]+)*: no leading, trailing or doubled whitespace.
bool is_code(std::string_view s) {
  if (s.empty() || space(s.front()) || space(s.back())) return false;
  for (std::size_t i = 1; i < s.size(); ++i)
    if (space(s[i]) && space(s[i - 1])) return false;
  return is_fhir_string(s);
}

std::optional<Primitive> primitive_from_name(std::string_view name) {
  static constexpr std::pair<std::string_view, Primitive> names[] = {
      {"boolean", Primitive::boolean},     {"integer", Primitive::integer},
      {"positiveInt", Primitive::positive_int}, {"unsignedInt", Primitive::unsigned_int},
      {"decimal", Primitive::decimal},     {"string", Primitive::string},
      {"markdown", Primitive::markdown},   {"xhtml", Primitive::xhtml},
      {"code", Primitive::code},           {"id", Primitive::id},
      {"uri", Primitive::uri},             {"url", Primitive::url},
      {"canonical", Primitive::canonical}, {"oid", Primitive::oid},
      {"uuid", Primitive::uuid},           {"base64Binary", Primitive::base64_binary},
      {"date", Primitive::date},           {"dateTime", Primitive::date_time},
      {"instant", Primitive::instant},     {"time", Primitive::time},
  };
  for (auto& [n, p] : names)
    if (n == name) return p;
  return std::nullopt;
}

std::size_t utf8_characters(std::string_view s) {
  std::size_t continuation = 0;
  for (unsigned char c : s) continuation += (c & 0xC0) == 0x80;
  return s.size() - continuation;
}

PrimitiveFault check_primitive(Primitive type, const rapidjson::Value& v) {
  switch (type) {
    case Primitive::boolean:
      return v.IsBool() ? PrimitiveFault::none : PrimitiveFault::json_type;
    case Primitive::decimal:
      return v.IsNumber() ? PrimitiveFault::none : PrimitiveFault::json_type;
    case Primitive::integer:
    case Primitive::positive_int:
    case Primitive::unsigned_int: {
      if (!v.IsNumber()) return PrimitiveFault::json_type;
      if (!v.IsInt()) return v.IsInt64() || v.IsUint64() ? PrimitiveFault::range : PrimitiveFault::format;
      int i = v.GetInt();
      if (type == Primitive::positive_int && i < 1) return PrimitiveFault::range;
      if (type == Primitive::unsigned_int && i < 0) return PrimitiveFault::range;
      return PrimitiveFault::none;
    }
    default:
      break;
  }
  if (!v.IsString()) return PrimitiveFault::json_type;
  std::string_view s = view(v);
  // Bytes are at least characters, so counting is needed only past the limit in bytes.
  if (s.size() > max_string_characters && type != Primitive::base64_binary && type != Primitive::xhtml &&
      utf8_characters(s) > max_string_characters)
    return PrimitiveFault::too_long;
  bool ok = false;
  switch (type) {
    case Primitive::string:
    case Primitive::markdown: ok = is_fhir_string(s); break;
    case Primitive::xhtml: ok = is_xhtml_div(s); break;
    case Primitive::code: ok = is_code(s); break;
    case Primitive::id: ok = is_id(s); break;
    case Primitive::uri:
    case Primitive::url:
    case Primitive::canonical: ok = is_uri(s); break;
    case Primitive::oid: ok = is_oid(s); break;
    case Primitive::uuid: ok = is_uuid(s); break;
    case Primitive::base64_binary: ok = is_base64(s); break;
    case Primitive::date: return is_date(s) ? PrimitiveFault::none : PrimitiveFault::date;
    case Primitive::date_time: return is_date_time(s) ? PrimitiveFault::none : PrimitiveFault::date;
    case Primitive::instant: return is_instant(s) ? PrimitiveFault::none : PrimitiveFault::date;
    case Primitive::time: return is_time(s) ? PrimitiveFault::none : PrimitiveFault::date;
    default: break;
  }
  return ok ? PrimitiveFault::none : PrimitiveFault::format;
}

std::string_view expected_form(Primitive type) {
  switch (type) {
    case Primitive::boolean: return "true or false";
    case Primitive::integer: return "a whole JSON number from -2147483648 to 2147483647";
    case Primitive::positive_int: return "a whole JSON number from 1 to 2147483647";
    case Primitive::unsigned_int: return "a whole JSON number from 0 to 2147483647";
    case Primitive::decimal: return "a JSON number";
    case Primitive::string:
    case Primitive::markdown: return "a non-empty JSON string without control characters";
    case Primitive::xhtml: return "one <div xmlns=\"http://www.w3.org/1999/xhtml\"> element as a JSON string";
    case Primitive::code: return "a non-empty JSON string without leading, trailing or repeated whitespace";
    case Primitive::id: return "1-64 characters from A-Z a-z 0-9 - .";
    case Primitive::uri:
    case Primitive::url:
    case Primitive::canonical: return "a non-empty JSON string without whitespace";
    case Primitive::oid: return "urn:oid: followed by a dotted OID such as urn:oid:1.2.3";
    case Primitive::uuid: return "urn:uuid: followed by a lower-case UUID";
    case Primitive::base64_binary: return "base64 text";
    case Primitive::date: return "YYYY, YYYY-MM or YYYY-MM-DD and a real calendar date";
    case Primitive::date_time:
      return "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss(.sss) with Z or +hh:mm, a real date";
    case Primitive::instant: return "YYYY-MM-DDThh:mm:ss(.sss) with Z or +hh:mm, a real date";
    case Primitive::time: return "hh:mm:ss(.sss)";
  }
  return "a valid value";
}

}  // namespace tellonce::fhir
