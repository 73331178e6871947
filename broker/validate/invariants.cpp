// FHIR R4 invariants written out by hand. Keys, severities and wording follow the `constraint`
// lists of the R4 StructureDefinitions; each check says in plain words what the partner must fix.
#include "broker/validate/rules.hpp"

#include "tellonce/json.hpp"
#include "broker/validate/bundle_rules.hpp"
#include "broker/validate/contained_ids.hpp"
#include "broker/validate/narrative_rules.hpp"
#include "broker/validate/questionnaire_rules.hpp"
#include "broker/validate/ucum.hpp"

#include <openssl/sha.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <utility>

namespace tellonce {
namespace {

using rapidjson::Value;


// FHIRPath exists(): present and not an empty array, string or object.
bool exists(const Value* v) {
  if (!v || v->IsNull()) return false;
  if (v->IsArray()) return !v->Empty();
  if (v->IsString()) return v->GetStringLength() > 0;
  if (v->IsObject()) return v->MemberCount() > 0;
  return true;
}
bool has(const Value& v, std::string_view name) { return exists(json_member(v, name)); }

std::string_view str_at(const Value& v, std::string_view name) { return json_string(json_member(v, name)); }

// A choice element value[x]: "valueQuantity", "valueString" ... (not "value" nor "valueSet").
bool is_value_choice(std::string_view name) {
  return name.size() > 5 && name.starts_with("value") && name[5] >= 'A' && name[5] <= 'Z';
}
// A primitive value[x] given only as its "_valueCode" companion (an extension) exists too.
bool has_value_choice(const Value& v) {
  for (auto& m : v.GetObject()) {
    std::string_view name{m.name.GetString(), m.name.GetStringLength()};
    if (!name.empty() && name[0] == '_') name.remove_prefix(1);
    if (is_value_choice(name) && exists(&m.value)) return true;
  }
  return false;
}

// Some member whose name starts with `stem` ("abatement" for abatement[x]) exists.
bool has_choice(const Value& v, std::string_view stem) {
  for (auto& m : v.GetObject()) {
    std::string_view name{m.name.GetString(), m.name.GetStringLength()};
    if (!name.empty() && name[0] == '_') name.remove_prefix(1);
    if (name.size() > stem.size() && name.starts_with(stem) && exists(&m.value)) return true;
  }
  return false;
}

// element.coding.where(system = `system` and code in `codes`).exists()
bool has_coding(const Value& v, std::string_view element, std::string_view system,
                std::initializer_list<std::string_view> codes) {
  const Value* cc = json_member(v, element);
  const Value* codings = cc ? json_member(*cc, "coding") : nullptr;
  if (!codings || !codings->IsArray()) return false;
  for (auto& c : codings->GetArray())
    if (str_at(c, "system") == system && std::find(codes.begin(), codes.end(), str_at(c, "code")) != codes.end())
      return true;
  return false;
}

void report(std::vector<Issue>& out, std::string_view rule, std::string location, std::string text,
            Severity severity = Severity::error) {
  Issue issue;
  issue.severity = severity;
  issue.code = "invariant";
  issue.rule = std::string(rule);
  issue.location = std::move(location);
  issue.diagnostics = std::move(text);
  out.push_back(std::move(issue));
}

std::string indexed(const std::string& path, std::string_view name, std::size_t i) {
  std::string s = path;
  s += '.';
  s += name;
  s += '[';
  s += std::to_string(i);
  s += ']';
  return s;
}
std::string child(const std::string& path, std::string_view name) {
  std::string s = path;
  s += '.';
  s += name;
  return s;
}

// ---- ele-1 -------------------------------------------------------------------------------

void check_ele_1(const Value& v, const std::string& path, std::vector<Issue>& out) {
  if (!v.IsObject()) return;
  for (auto& m : v.GetObject()) {
    std::string_view name{m.name.GetString(), m.name.GetStringLength()};
    if (name != "id") return;
  }
  report(out, "ele-1", path,
         "Element is empty: every element must have a value or child elements (remove it or fill "
         "it in)");
}

// ---- datatypes ---------------------------------------------------------------------------

// Only an extension inside a complex extension may name itself with a bare word (its url is
// relative to the outer one); everywhere else the url identifies the definition, so it must be
// absolute. Whether the parent is an extension is read from the location: ".extension[i]"
// (or modifierExtension) right before this one's own ".extension[j]".
bool inside_extension(std::string_view path) {
  auto strip_item = [](std::string_view& p) {
    if (p.empty() || p.back() != ']') return false;
    auto open = p.rfind('[');
    auto dot = p.rfind('.', open);
    if (open == std::string_view::npos || dot == std::string_view::npos) return false;
    std::string_view name = p.substr(dot + 1, open - dot - 1);
    p = p.substr(0, dot);
    return name == "extension" || name == "modifierExtension";
  };
  std::string_view p = path;
  return strip_item(p) && strip_item(p);
}

void check_extension_url(const Value& v, const std::string& path, std::vector<Issue>& out) {
  std::string_view url = str_at(v, "url");
  if (url.empty() || url.find(':') != std::string_view::npos || inside_extension(path)) return;
  report(out, "ext-url-absolute", child(path, "url"),
         "extension url '" + std::string(url.substr(0, 64)) +
             "' is not absolute: only an extension inside a complex extension may use a bare name");
}

void check_extension(const Value& v, const std::string& path, std::vector<Issue>& out) {
  check_extension_url(v, path, out);
  bool nested = has(v, "extension");
  bool valued = has_value_choice(v);
  if (nested == valued)
    report(out, "ext-1", path,
           nested ? "Extension has both nested extensions and a value[x]: it must have one or the "
                    "other, not both"
                  : "Extension has neither nested extensions nor a value[x]: it must have one of them");
}

// A FHIR date/dateTime/instant as the interval of instants it may denote, in UTC microseconds.
struct InstantRange {
  std::int64_t earliest = 0;
  std::int64_t latest = 0;
  bool zoned = false;  // has a time and so a zone; a bare date is in the writer's local zone
};

std::int64_t days_from_civil(int y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return static_cast<std::int64_t>(era) * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

bool read_digits(std::string_view s, std::size_t& pos, std::size_t count, int& out) {
  if (pos + count > s.size()) return false;
  int v = 0;
  for (std::size_t i = 0; i < count; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  pos += count;
  out = v;
  return true;
}

// Returns nothing when the text is not a FHIR date/dateTime (the structural check reports that).
std::optional<InstantRange> instant_range(std::string_view s) {
  constexpr std::int64_t second = 1'000'000, day = 86'400 * second;
  std::size_t pos = 0;
  int year = 0, month = 1, dayn = 1;
  if (!read_digits(s, pos, 4, year)) return std::nullopt;
  if (pos == s.size()) {
    std::int64_t a = days_from_civil(year, 1, 1) * day, b = days_from_civil(year + 1, 1, 1) * day;
    return InstantRange{a, b - 1};
  }
  if (s[pos++] != '-' || !read_digits(s, pos, 2, month) || month < 1 || month > 12)
    return std::nullopt;
  if (pos == s.size()) {
    int ny = month == 12 ? year + 1 : year;
    unsigned nm = month == 12 ? 1 : static_cast<unsigned>(month + 1);
    std::int64_t a = days_from_civil(year, static_cast<unsigned>(month), 1) * day;
    std::int64_t b = days_from_civil(ny, nm, 1) * day;
    return InstantRange{a, b - 1};
  }
  if (s[pos++] != '-' || !read_digits(s, pos, 2, dayn) || dayn < 1 || dayn > 31) return std::nullopt;
  std::int64_t date = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(dayn)) * day;
  if (pos == s.size()) return InstantRange{date, date + day - 1};
  int hh = 0, mm = 0, ss = 0;
  if (s[pos++] != 'T' || !read_digits(s, pos, 2, hh) || pos >= s.size() || s[pos++] != ':' ||
      !read_digits(s, pos, 2, mm))
    return std::nullopt;
  if (pos < s.size() && s[pos] == ':') {
    ++pos;
    if (!read_digits(s, pos, 2, ss)) return std::nullopt;
  }
  std::int64_t micros = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    std::int64_t scale = 100'000;
    std::size_t start = pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      micros += (s[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
    if (pos == start) return std::nullopt;
  }
  std::int64_t t = date + ((hh * 60 + mm) * 60 + ss) * second + micros;
  if (pos < s.size()) {
    if (s[pos] == 'Z') {
      ++pos;
    } else if (s[pos] == '+' || s[pos] == '-') {
      int sign = s[pos++] == '+' ? 1 : -1, oh = 0, om = 0;
      if (!read_digits(s, pos, 2, oh) || pos >= s.size() || s[pos++] != ':' ||
          !read_digits(s, pos, 2, om))
        return std::nullopt;
      t -= sign * (oh * 60 + om) * 60 * second;
    } else {
      return std::nullopt;
    }
  }
  if (pos != s.size()) return std::nullopt;
  return InstantRange{t, t, true};
}

void check_period(const Value& v, const std::string& path, std::vector<Issue>& out) {
  std::string_view start = str_at(v, "start"), end = str_at(v, "end");
  if (start.empty() || end.empty()) return;
  auto a = instant_range(start), b = instant_range(end);
  if (!a || !b) return;
  // A bare date compared with a zoned time may lie anywhere from UTC-12 to UTC+14.
  constexpr std::int64_t zone_slack = 14LL * 3600 * 1'000'000;
  std::int64_t slack = a->zoned != b->zoned ? zone_slack : 0;
  if (a->earliest > b->latest + slack) {
    report(out, "per-1", path,
           "Period start (" + std::string(start) + ") is after its end (" + std::string(end) +
               "): start must not be later than end");
    return;
  }
  // A bare date (2023-06-21, 2023-06, 2023) against a value that says the same and more
  // (2023-06-21T06:20:00Z): per-1 compares them as FHIRPath does, and there the order of values of
  // different precision that agree as far as both go is unknown, so the rule fails (as in the
  // reference validator). Dates that differ within the shorter precision were settled above.
  auto is_date = [](std::string_view d) { return d.size() == 4 || d.size() == 7 || d.size() == 10; };
  std::string_view shorter = start.size() < end.size() ? start : end;
  std::string_view longer = start.size() < end.size() ? end : start;
  if (shorter.size() != longer.size() && is_date(shorter) && longer.starts_with(shorter))
    report(out, "per-1", path,
           "Period start (" + std::string(start) + ") and end (" + std::string(end) +
               ") are given to different precisions that agree as far as both go, so start cannot be shown "
               "to be no later than end: give both to the same precision");
}

constexpr std::string_view ucum = "http://unitsofmeasure.org";

// A code in UCUM must be a UCUM expression: a receiver converts or compares by it.
void check_ucum_code(const Value& v, const std::string& path, std::vector<Issue>& out) {
  if (str_at(v, "system") != ucum) return;
  const Value* code = json_member(v, "code");
  if (!code || !code->IsString()) return;
  std::string_view text{code->GetString(), code->GetStringLength()};
  auto problem = ucum::check_unit(text);
  if (!problem) return;
  report(out, "ucum-syntax", child(path, "code"),
         "the unit code is not a valid UCUM expression (http://unitsofmeasure.org): " + problem->what +
             " at character " + std::to_string(problem->offset + 1) +
             " (UCUM examples: mg, mL, mmol/L, kg/m2, 10*9/L, mm[Hg], /min, {cells}/uL)");
}

// `type` is Quantity or one of its profiles: SimpleQuantity (R4 elements such as Range.low,
// Dosage.doseAndRate.doseQuantity, Immunization.doseQuantity) or MoneyQuantity.
void check_quantity(const Value& v, std::string_view type, const std::string& path, std::vector<Issue>& out) {
  if (has(v, "code") && !has(v, "system"))
    report(out, "qty-3", path,
           "Quantity has a unit code but no system: add the code system of the unit (usually "
           "http://unitsofmeasure.org)");
  if (type == "SimpleQuantity" && has(v, "comparator"))
    report(out, "sqty-1", child(path, "comparator"),
           "a comparator is not allowed here: this element is a SimpleQuantity (an exact amount)");
  if (type == "MoneyQuantity") {
    std::string_view system = str_at(v, "system");
    if (has(v, "value") && !has(v, "code"))
      report(out, "mqty-1", path, "a MoneyQuantity with a value needs a currency code (ISO 4217, e.g. GBP)");
    if (!system.empty() && system != "urn:iso:std:iso:4217")
      report(out, "mqty-1", child(path, "system"),
             "a MoneyQuantity's system must be urn:iso:std:iso:4217 (ISO 4217 currencies), not '" +
                 std::string(system) + "'");
  }
  check_ucum_code(v, path, out);
}

// Coding.system and Identifier.system name a code or identifier system, so they are absolute
// URIs (http:, https:, urn:oid:, urn:uuid: ...): "SNOMED" or "NHS" means nothing to a receiver.
void check_system_is_absolute(const Value& v, std::string_view type, const std::string& path,
                              std::vector<Issue>& out) {
  std::string_view system = str_at(v, "system");
  if (system.empty() || system.find(':') != std::string_view::npos) return;
  report(out, "fhir-system-uri", child(path, "system"),
         std::string(type) + ".system '" + std::string(system) +
             "' is not an absolute URI: use the system's URI, e.g. http://snomed.info/sct");
}

// age-1: a value needs a code, the system is UCUM, and an age is positive.
void check_age(const Value& v, const std::string& path, std::vector<Issue>& out) {
  check_quantity(v, "Age", path, out);
  const Value* value = json_member(v, "value");
  if (value && !has(v, "code"))
    report(out, "age-1", path, "Age has a value but no code: add the UCUM unit code (a, mo, wk, d ...)");
  if (has(v, "system") && str_at(v, "system") != ucum)
    report(out, "age-1", path, "Age.system must be http://unitsofmeasure.org");
  if (value && value->IsNumber() && value->GetDouble() <= 0)
    report(out, "age-1", path, "Age.value must be positive");
}

// drt-1: a coded duration is in UCUM and has a value.
void check_duration(const Value& v, const std::string& path, std::vector<Issue>& out) {
  check_quantity(v, "Duration", path, out);
  if (has(v, "code") && (str_at(v, "system") != ucum || !has(v, "value")))
    report(out, "drt-1", path, "Duration with a code needs system http://unitsofmeasure.org and a value");
}

void check_contact_point(const Value& v, const std::string& path, std::vector<Issue>& out) {
  if (has(v, "value") && !has(v, "system"))
    report(out, "cpt-2", path,
           "ContactPoint has a value but no system: say what kind of contact it is (phone, email ...)");
}

// The bytes of base64 text (whitespace skipped, as line-wrapped base64 is common), or nothing
// when it is not base64: the structural check reports that.
std::optional<std::string> base64_decode(std::string_view text) {
  auto sextet = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string bytes;
  bytes.reserve(text.size() / 4 * 3);
  std::uint32_t group = 0;
  int filled = 0, padding = 0;
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      ++padding;
      group <<= 6;
    } else {
      int s = sextet(c);
      if (s < 0 || padding) return std::nullopt;
      group = (group << 6) | static_cast<std::uint32_t>(s);
    }
    if (++filled == 4) {
      if (padding > 2) return std::nullopt;
      bytes += static_cast<char>(group >> 16);
      if (padding < 2) bytes += static_cast<char>((group >> 8) & 0xFF);
      if (padding < 1) bytes += static_cast<char>(group & 0xFF);
      group = 0;
      filled = 0;
    }
  }
  if (filled != 0) return std::nullopt;
  return bytes;
}

std::string base64_encode(const unsigned char* data, std::size_t size) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string text;
  for (std::size_t i = 0; i < size; i += 3) {
    std::uint32_t group = static_cast<std::uint32_t>(data[i]) << 16;
    if (i + 1 < size) group |= static_cast<std::uint32_t>(data[i + 1]) << 8;
    if (i + 2 < size) group |= data[i + 2];
    text += alphabet[(group >> 18) & 63];
    text += alphabet[(group >> 12) & 63];
    text += i + 1 < size ? alphabet[(group >> 6) & 63] : '=';
    text += i + 2 < size ? alphabet[group & 63] : '=';
  }
  return text;
}

// RFC 6838 type/subtype with optional "; name=value" parameters (syntax only: the registry of
// media types is not shipped).
bool mime_type_valid(std::string_view s) {
  auto token = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("!#$&^_.+-").find(c) != std::string_view::npos;
  };
  std::size_t pos = 0, start = 0;
  while (pos < s.size() && token(s[pos])) ++pos;
  if (pos == start || pos >= s.size() || s[pos] != '/') return false;
  start = ++pos;
  while (pos < s.size() && token(s[pos])) ++pos;
  if (pos == start) return false;
  if (pos == s.size()) return true;
  // parameters: anything printable after a ';'
  while (pos < s.size() && s[pos] == ' ') ++pos;
  return pos < s.size() && s[pos] == ';';
}

// BCP 47 syntax: a 2-8 letter language (or x- / i- private and grandfathered forms), then subtags
// of 1-8 letters or digits.
bool language_tag_valid(std::string_view s) {
  if (s.empty()) return false;
  std::size_t index = 0;
  while (!s.empty()) {
    auto dash = s.find('-');
    std::string_view part = s.substr(0, dash);
    if (part.empty() || part.size() > 8) return false;
    for (char c : part) {
      bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
      if (!alpha && !(index > 0 && c >= '0' && c <= '9')) return false;
    }
    if (index == 0 && part.size() == 1 && part != "x" && part != "X" && part != "i" && part != "I") return false;
    if (dash == std::string_view::npos) break;
    s.remove_prefix(dash + 1);
    if (s.empty()) return false;
    ++index;
  }
  return true;
}

void check_content_type(const Value& v, const std::string& path, std::vector<Issue>& out) {
  std::string_view type = str_at(v, "contentType");
  if (!type.empty() && !mime_type_valid(type))
    report(out, "mime-type", child(path, "contentType"),
           "contentType '" + std::string(type.substr(0, 64)) + "' is not a MIME type (type/subtype, e.g. application/pdf)");
}

void check_language(const Value& v, const std::string& path, std::vector<Issue>& out) {
  std::string_view language = str_at(v, "language");
  if (!language.empty() && !language_tag_valid(language))
    report(out, "language-tag", child(path, "language"),
           "language '" + std::string(language.substr(0, 64)) + "' is not a BCP 47 language tag (e.g. en, en-GB, cy)");
}

void check_attachment(const Value& v, const std::string& path, std::vector<Issue>& out) {
  check_content_type(v, path, out);
  check_language(v, path, out);
  const bool data = has(v, "data");
  if (data && !has(v, "contentType"))
    report(out, "att-1", path, "Attachment has inline data but no contentType: add its MIME type");
  const Value* size = json_member(v, "size");
  std::string_view hash = str_at(v, "hash");
  if (!data || (!size && hash.empty())) return;
  auto bytes = base64_decode(str_at(v, "data"));
  if (!bytes) return;
  if (size && size->IsUint64() && size->GetUint64() != bytes->size())
    report(out, "att-size", child(path, "size"),
           "Attachment.size is " + std::to_string(size->GetUint64()) + " but data holds " +
               std::to_string(bytes->size()) + " bytes: size must be the number of bytes in data");
  if (!hash.empty()) {
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1(reinterpret_cast<const unsigned char*>(bytes->data()), bytes->size(), digest);
    std::string expected = base64_encode(digest, sizeof digest);
    if (hash != expected)
      report(out, "att-hash", child(path, "hash"),
             "Attachment.hash does not match data: it must be the base64 SHA-1 of the bytes in data (" + expected +
                 ")");
  }
}

void check_ratio(const Value& v, const std::string& path, std::vector<Issue>& out) {
  bool numerator = has(v, "numerator"), denominator = has(v, "denominator");
  if (numerator != denominator)
    report(out, "rat-1", path,
           std::string("Ratio has a ") + (numerator ? "numerator but no denominator" : "denominator but no numerator") +
               ": give both, or neither (with an extension saying why)");
  else if (!numerator && !has(v, "extension"))
    report(out, "rat-1", path, "Ratio has neither numerator and denominator nor an extension");
}

const Value* number_at(const Value& v, std::string_view name) {
  const Value* n = json_member(v, name);
  return n && n->IsNumber() ? n : nullptr;
}

// rng-2 where the comparison is plain: both ends have a value and the same unit (or none).
void check_range(const Value& v, const std::string& path, std::vector<Issue>& out) {
  const Value* low = json_member(v, "low");
  const Value* high = json_member(v, "high");
  if (!low || !high || !low->IsObject() || !high->IsObject()) return;
  const Value* a = number_at(*low, "value");
  const Value* b = number_at(*high, "value");
  if (!a || !b || str_at(*low, "code") != str_at(*high, "code") || str_at(*low, "unit") != str_at(*high, "unit"))
    return;
  if (a->GetDouble() > b->GetDouble())
    report(out, "rng-2", path, "Range low is greater than its high: low must not be above high");
}

void check_timing(const Value& v, const std::string& path, std::vector<Issue>& out) {
  const Value* repeat = json_member(v, "repeat");
  if (!repeat || !repeat->IsObject()) return;
  std::string at = child(path, "repeat");
  if (has(*repeat, "duration") && !has(*repeat, "durationUnit"))
    report(out, "tim-1", at, "Timing.repeat has a duration but no durationUnit: add the unit (min, h, d ...)");
  if (has(*repeat, "period") && !has(*repeat, "periodUnit"))
    report(out, "tim-2", at, "Timing.repeat has a period but no periodUnit: add the unit (h, d, wk ...)");
  const Value* duration = number_at(*repeat, "duration");
  if (duration && duration->GetDouble() < 0)
    report(out, "tim-4", at, "Timing.repeat.duration must not be negative");
  const Value* period = number_at(*repeat, "period");
  if (period && period->GetDouble() < 0)
    report(out, "tim-5", at, "Timing.repeat.period must not be negative");
  if (has(*repeat, "periodMax") && !has(*repeat, "period"))
    report(out, "tim-6", at, "Timing.repeat has periodMax without period");
  if (has(*repeat, "durationMax") && !has(*repeat, "duration"))
    report(out, "tim-7", at, "Timing.repeat has durationMax without duration");
  if (has(*repeat, "countMax") && !has(*repeat, "count"))
    report(out, "tim-8", at, "Timing.repeat has countMax without count");
  if (has(*repeat, "offset")) {
    bool meal_relative = false, any_when = false;
    if (const Value* when = json_member(*repeat, "when"); when && when->IsArray())
      for (auto& w : when->GetArray()) {
        std::string_view code = json_string(&w);
        any_when |= !code.empty();
        meal_relative |= code == "C" || code == "CM" || code == "CD" || code == "CV";
      }
    if (!any_when || meal_relative)
      report(out, "tim-9", at, "Timing.repeat.offset needs a when that is not C, CM, CD or CV");
  }
  if (has(*repeat, "timeOfDay") && has(*repeat, "when"))
    report(out, "tim-10", at, "Timing.repeat must not have both timeOfDay and when");
}

// ---- resources ---------------------------------------------------------------------------

void check_bundle(const Value& v, const std::string& path, std::vector<Issue>& out) {
  std::string_view type = str_at(v, "type");
  const Value* entries = json_member(v, "entry");
  const bool entry_list = entries && entries->IsArray();
  const auto count = entry_list ? entries->Size() : 0u;

  if (has(v, "total") && type != "searchset" && type != "history")
    report(out, "bdl-1", child(path, "total"),
           "Bundle.total is only allowed in searchset and history Bundles, not in a '" +
               std::string(type) + "' Bundle");

  const bool wants_request = type == "batch" || type == "transaction" || type == "history";
  const bool wants_response =
      type == "batch-response" || type == "transaction-response" || type == "history";
  for (rapidjson::SizeType i = 0; i < count; ++i) {
    const Value& entry = (*entries)[i];
    if (!entry.IsObject()) continue;
    if (has(entry, "search") && type != "searchset")
      report(out, "bdl-2", child(indexed(path, "entry", i), "search"),
             "entry.search is only allowed in a searchset Bundle");
    if (has(entry, "request") != wants_request)
      report(out, "bdl-3", indexed(path, "entry", i),
             wants_request ? "entry.request is required in a '" + std::string(type) + "' Bundle"
                           : "entry.request is only allowed in batch, transaction and history "
                             "Bundles, not in a '" + std::string(type) + "' Bundle");
    if (has(entry, "response") != wants_response)
      report(out, "bdl-4", indexed(path, "entry", i),
             wants_response ? "entry.response is required in a '" + std::string(type) + "' Bundle"
                            : "entry.response is only allowed in batch-response, "
                              "transaction-response and history Bundles");
    if (!has(entry, "resource") && !has(entry, "request") && !has(entry, "response"))
      report(out, "bdl-5", indexed(path, "entry", i),
             "Bundle entry has no resource, request or response");
    if (str_at(entry, "fullUrl").find("/_history/") != std::string_view::npos)
      report(out, "bdl-8", child(indexed(path, "entry", i), "fullUrl"),
             "entry.fullUrl must not be a version-specific URL (containing /_history/)");
  }

  if (type != "history" && count > 1) {
    // (fullUrl, meta.versionId, entry index): equal pairs are duplicates.
    std::vector<std::tuple<std::string_view, std::string_view, rapidjson::SizeType>> keys;
    keys.reserve(count);
    for (rapidjson::SizeType i = 0; i < count; ++i) {
      const Value& entry = (*entries)[i];
      std::string_view full_url = str_at(entry, "fullUrl");
      if (full_url.empty()) continue;
      std::string_view version;
      if (const Value* res = json_member(entry, "resource"))
        if (const Value* meta = json_member(*res, "meta")) version = str_at(*meta, "versionId");
      keys.emplace_back(full_url, version, i);
    }
    std::sort(keys.begin(), keys.end());
    for (std::size_t k = 1; k < keys.size(); ++k)
      if (std::get<0>(keys[k]) == std::get<0>(keys[k - 1]) &&
          std::get<1>(keys[k]) == std::get<1>(keys[k - 1]))
        report(out, "bdl-7", child(indexed(path, "entry", std::get<2>(keys[k])), "fullUrl"),
               "entry.fullUrl '" + std::string(std::get<0>(keys[k])) + "' is used by entry[" +
                   std::to_string(std::get<2>(keys[k - 1])) +
                   "] too: fullUrl must be unique unless meta.versionId differs");
  }

  if (type == "searchset") {
    // A search answer's matches and includes are resources on the server (so they have ids);
    // an entry marked outcome is the server's OperationOutcome about the search.
    for (rapidjson::SizeType i = 0; i < count; ++i) {
      const Value& entry = (*entries)[i];
      const Value* search = json_member(entry, "search");
      const Value* res = json_member(entry, "resource");
      if (!search || !res || !res->IsObject()) continue;
      std::string_view mode = str_at(*search, "mode");
      std::string_view kind = str_at(*res, "resourceType");
      if ((mode == "match" || mode == "include") && str_at(*res, "id").empty())
        report(out, "bundle-search-id", child(indexed(path, "entry", i), "resource"),
               "a search result (search.mode " + std::string(mode) + ") must have an id: it is a resource on the server");
      if (mode == "outcome" && kind != "OperationOutcome")
        report(out, "bundle-search-outcome", child(indexed(path, "entry", i), "resource"),
               "an entry with search.mode outcome must be an OperationOutcome, not " + std::string(kind.substr(0, 64)));
    }
  }

  if (type == "document") {
    const Value* id = json_member(v, "identifier");
    if (!id || !has(*id, "system") || !has(*id, "value"))
      report(out, "bdl-9", path, "A document Bundle must have an identifier with a system and a value");
    if (!has(v, "timestamp"))
      report(out, "bdl-10", path, "A document Bundle must have a timestamp");
  }
  auto first_type = [&]() -> std::string_view {
    if (count == 0) return {};
    const Value* res = json_member((*entries)[0], "resource");
    return res ? str_at(*res, "resourceType") : std::string_view{};
  };
  if (type == "document" && first_type() != "Composition")
    report(out, "bdl-11", count ? child(indexed(path, "entry", 0), "resource") : path,
           "A document Bundle must have a Composition as its first entry");
  if (type == "message" && first_type() != "MessageHeader")
    report(out, "bdl-12", count ? child(indexed(path, "entry", 0), "resource") : path,
           "A message Bundle must have a MessageHeader as its first entry");
  fhir::check_bundle_entries(v, type, path, out);
  fhir::check_bundle_narrative_links(v, path, out);
}

void check_observation(const Value& v, const std::string& path, std::vector<Issue>& out) {
  if (const Value* ranges = json_member(v, "referenceRange"); ranges && ranges->IsArray())
    for (rapidjson::SizeType i = 0; i < ranges->Size(); ++i) {
      const Value& r = (*ranges)[i];
      if (r.IsObject() && !has(r, "low") && !has(r, "high") && !has(r, "text"))
        report(out, "obs-3", indexed(path, "referenceRange", i),
               "Observation.referenceRange must have at least a low, a high or a text");
    }
  const bool valued = has_value_choice(v);
  if (valued && has(v, "dataAbsentReason"))
    report(out, "obs-6", child(path, "dataAbsentReason"),
           "Observation has both a value and a dataAbsentReason: give a dataAbsentReason only when "
           "there is no value");
  if (!valued) return;
  const Value* code = json_member(v, "code");
  const Value* codings = code ? json_member(*code, "coding") : nullptr;
  const Value* components = json_member(v, "component");
  if (!codings || !codings->IsArray() || !components || !components->IsArray()) return;
  for (rapidjson::SizeType i = 0; i < components->Size(); ++i) {
    const Value* ccode = json_member((*components)[i], "code");
    const Value* ccodings = ccode ? json_member(*ccode, "coding") : nullptr;
    if (!ccodings || !ccodings->IsArray()) continue;
    for (auto& a : ccodings->GetArray())
      for (auto& b : codings->GetArray())
        if (a == b) {
          report(out, "obs-7", indexed(path, "component", i),
                 "Observation.component has the same code as the Observation itself, so the "
                 "Observation must not also have a value[x]");
          goto next_component;
        }
  next_component:;
  }
}

bool scope_is(const Value& v, std::string_view code) {
  const Value* scope = json_member(v, "scope");
  const Value* codings = scope ? json_member(*scope, "coding") : nullptr;
  if (!codings || !codings->IsArray()) return false;
  for (auto& c : codings->GetArray())
    if (str_at(c, "system") == "http://terminology.hl7.org/CodeSystem/consentscope" &&
        str_at(c, "code") == code)
      return true;
  return false;
}

void check_consent(const Value& v, const std::string& path, std::vector<Issue>& out) {
  if (!has(v, "policy") && !has(v, "policyRule"))
    report(out, "ppc-1", path, "Consent must have either a policy or a policyRule");
  if (has(v, "patient")) return;
  // R4 writes these with system 'something' (a spec error, fixed in R4B), so in R4 they never
  // fire. We check the real consentscope system but only warn: an R4-valid Consent must pass.
  static constexpr std::pair<std::string_view, std::string_view> scoped[] = {
      {"ppc-2", "patient-privacy"}, {"ppc-3", "research"}, {"ppc-4", "adr"}, {"ppc-5", "treatment"}};
  for (auto [rule, code] : scoped)
    if (scope_is(v, code))
      report(out, rule, path,
             "A Consent with scope '" + std::string(code) + "' should name the patient",
             Severity::warning);
}

void check_condition(const Value& v, const std::string& path, std::vector<Issue>& out) {
  constexpr std::string_view clinical = "http://terminology.hl7.org/CodeSystem/condition-clinical";
  constexpr std::string_view verification = "http://terminology.hl7.org/CodeSystem/condition-ver-status";
  if (has_choice(v, "abatement") && !has_coding(v, "clinicalStatus", clinical, {"resolved", "remission", "inactive"}))
    report(out, "con-4", path,
           "Condition has an abatement, so its clinicalStatus must be inactive, resolved or remission");
  if (has(v, "clinicalStatus") && has_coding(v, "verificationStatus", verification, {"entered-in-error"}))
    report(out, "con-5", path,
           "Condition is entered-in-error, so it must not have a clinicalStatus");
}

void check_allergy(const Value& v, const std::string& path, std::vector<Issue>& out) {
  constexpr std::string_view verification =
      "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification";
  bool entered_in_error = has_coding(v, "verificationStatus", verification, {"entered-in-error"});
  if (!entered_in_error && !has(v, "clinicalStatus"))
    report(out, "ait-1", path,
           "AllergyIntolerance needs a clinicalStatus unless its verificationStatus is entered-in-error");
  if (entered_in_error && has(v, "clinicalStatus"))
    report(out, "ait-2", path,
           "AllergyIntolerance is entered-in-error, so it must not have a clinicalStatus");
}

void check_organization(const Value& v, const std::string& path, std::vector<Issue>& out) {
  if (!has(v, "identifier") && !has(v, "name"))
    report(out, "org-1", path, "Organization must have at least a name or an identifier");
}

void check_appointment(const Value& v, const std::string& path, std::vector<Issue>& out) {
  bool start = has(v, "start"), end = has(v, "end");
  std::string_view status = str_at(v, "status");
  if (start != end)
    report(out, "app-2", path, "Appointment must have both start and end, or neither");
  if (!(start && end) && status != "proposed" && status != "cancelled" && status != "waitlist" && !status.empty())
    report(out, "app-3", path,
           "Appointment with status '" + std::string(status) +
               "' needs start and end: only proposed, cancelled and waitlist appointments may leave them out");
  if (has(v, "cancelationReason") && status != "cancelled" && status != "no-show" && !status.empty())
    report(out, "app-4", child(path, "cancelationReason"),
           "cancelationReason is only for cancelled or no-show appointments");
}

void check_service_request(const Value& v, const std::string& path, std::vector<Issue>& out) {
  if (has(v, "orderDetail") && !has(v, "code"))
    report(out, "prr-1", child(path, "orderDetail"), "ServiceRequest.orderDetail needs a code");
}

// The patient-birthTime extension on birthDate gives the time of birth, so its date (in the
// zone it is written in) is the birthDate.
void check_birth_time(const Value& v, const std::string& path, std::vector<Issue>& out) {
  const Value* companion = json_member(v, "_birthDate");
  const Value* extensions = companion && companion->IsObject() ? json_member(*companion, "extension") : nullptr;
  if (!extensions || !extensions->IsArray()) return;
  std::string_view birth_date = str_at(v, "birthDate");
  for (rapidjson::SizeType i = 0; i < extensions->Size(); ++i) {
    const Value& ext = (*extensions)[i];
    if (!ext.IsObject() || str_at(ext, "url") != "http://hl7.org/fhir/StructureDefinition/patient-birthTime")
      continue;
    std::string_view time = str_at(ext, "valueDateTime");
    if (birth_date.empty() || time.size() < 10) continue;  // no date to compare, or the type check's business
    std::string_view date = time.substr(0, std::min<std::size_t>(birth_date.size(), 10));
    if (!birth_date.starts_with(date) && date != birth_date)
      report(out, "pat-birth-time", indexed(child(path, "birthDate"), "extension", i) + ".valueDateTime",
             "the birthTime extension says " + std::string(time.substr(0, 10)) + " but birthDate is " +
                 std::string(birth_date) + ": the time of birth must fall on the birth date");
  }
}

void check_patient(const Value& v, const std::string& path, std::vector<Issue>& out) {
  check_birth_time(v, path, out);
  const Value* contacts = json_member(v, "contact");
  if (!contacts || !contacts->IsArray()) return;
  for (rapidjson::SizeType i = 0; i < contacts->Size(); ++i) {
    const Value& c = (*contacts)[i];
    if (c.IsObject() && !has(c, "name") && !has(c, "telecom") && !has(c, "address") &&
        !has(c, "organization"))
      report(out, "pat-1", indexed(path, "contact", i),
             "Patient.contact must have a name, telecom, address or organization");
  }
}

// Every "#x" string anywhere in `v` (local references, canonicals or uris), as "x".
void collect_local_references(const Value& v, fhir::IdSet& out) {
  ++fhir::validation_steps;
  if (v.IsString()) {
    std::string_view s{v.GetString(), v.GetStringLength()};
    if (s.size() > 1 && s[0] == '#') out.add(s.substr(1));
  } else if (v.IsArray()) {
    for (auto& e : v.GetArray()) collect_local_references(e, out);
  } else if (v.IsObject()) {
    for (auto& m : v.GetObject()) collect_local_references(m.value, out);
  }
}

// Does any string in `v` equal "#" + id (a local reference, canonical or uri to it)?
bool refers_to(const Value& v, std::string_view id) {
  ++fhir::validation_steps;
  if (v.IsString()) {
    std::string_view s{v.GetString(), v.GetStringLength()};
    return s.size() == id.size() + 1 && s[0] == '#' && s.substr(1) == id;
  }
  if (v.IsArray()) {
    for (auto& e : v.GetArray())
      if (refers_to(e, id)) return true;
  } else if (v.IsObject()) {
    for (auto& m : v.GetObject())
      if (refers_to(m.value, id)) return true;
  }
  return false;
}
// Does a contained resource point back at its container ("#")?
bool refers_to_container(const Value& v) {
  ++fhir::validation_steps;
  if (v.IsObject()) {
    if (str_at(v, "reference") == "#") return true;
    for (auto& m : v.GetObject())
      if (refers_to_container(m.value)) return true;
  } else if (v.IsArray()) {
    for (auto& e : v.GetArray())
      if (refers_to_container(e)) return true;
  }
  return false;
}

void check_contained(const Value& v, const std::string& path, std::vector<Issue>& out) {
  const Value* contained = json_member(v, "contained");
  if (!contained || !contained->IsArray()) return;
  // Few contained resources: one walk of v each, no allocation. Many: every local reference
  // in v collected once, so the cost stays linear in the size of v.
  bool use_index = contained->Size() > fhir::IdSet::scan_limit;
  fhir::IdSet references;
  if (use_index) {
    collect_local_references(v, references);
    references.freeze();
  }
  for (rapidjson::SizeType i = 0; i < contained->Size(); ++i) {
    const Value& res = (*contained)[i];
    if (!res.IsObject()) continue;
    if (has(res, "contained"))
      report(out, "dom-2", child(indexed(path, "contained", i), "contained"),
             "A contained resource must not contain resources itself");
    if (const Value* meta = json_member(res, "meta")) {
      if (has(*meta, "versionId") || has(*meta, "lastUpdated"))
        report(out, "dom-4", child(indexed(path, "contained", i), "meta"),
               "A contained resource must not have meta.versionId or meta.lastUpdated");
      if (has(*meta, "security"))
        report(out, "dom-5", child(indexed(path, "contained", i), "meta.security"),
               "A contained resource must not have security labels (put them on the container)");
    }
    std::string_view id = str_at(res, "id");
    bool referenced = use_index ? references.contains(id) : refers_to(v, id);
    if (!id.empty() && !referenced && !refers_to_container(res))
      report(out, "dom-3", indexed(path, "contained", i),
             "Contained resource '#" + std::string(id) +
                 "' is not referenced from the rest of the resource: reference it or remove it");
  }
}

// A conformance resource's url is its canonical identity: an absolute URI that others cite
// (ValueSet/vs-1 or c1 cannot be), and a urn:uuid must hold a real UUID. In R4 only canonical
// (conformance) resources have a top-level url.
void check_canonical_url(const Value& v, const std::string& path, std::vector<Issue>& out) {
  const Value* url = json_member(v, "url");
  if (!url || !url->IsString()) return;
  std::string_view u(url->GetString(), url->GetStringLength());
  if (u.empty()) return;  // the primitive check reports an empty string
  std::size_t colon = u.find(':');
  bool scheme = colon != std::string_view::npos && colon > 0 &&
                std::isalpha(static_cast<unsigned char>(u[0]));
  for (std::size_t i = 1; scheme && i < colon; ++i) {
    char c = u[i];
    scheme = std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
  }
  if (!scheme)
    report(out, "canonical-url", child(path, "url"),
           "url '" + std::string(u.substr(0, 64)) + "' is not an absolute URI: a canonical URL must be absolute, "
           "e.g. https://example.org/fhir/ValueSet/my-codes");
  else if (u.starts_with("urn:uuid:") && !fhir::urn_uuid_valid(u))
    report(out, "canonical-url", child(path, "url"),
           "url '" + std::string(u.substr(0, 64)) + "' is not a valid urn:uuid (8-4-4-4-12 hexadecimal digits)");
}

// A CodeSystem that supplements another adds displays or properties to its codes and holds no
// codes of its own: its content is "supplement" (and a CodeSystem with that content says what
// it supplements).
void check_code_system(const Value& v, const std::string& path, std::vector<Issue>& out) {
  const bool supplements = has(v, "supplements");
  std::string_view content = str_at(v, "content");
  if (supplements && !content.empty() && content != "supplement")
    report(out, "cs-supplement", child(path, "content"),
           "a CodeSystem with supplements must have content 'supplement', not '" + std::string(content.substr(0, 32)) + "'");
  if (!supplements && content == "supplement")
    report(out, "cs-supplement", child(path, "supplements"),
           "a CodeSystem with content 'supplement' must say which code system it supplements (supplements)");
}

// sdf-20 and sdf-23: the root element of a profile (the one whose path has no ".") is the
// resource or type itself. It cannot be sliced or be a slice: there is only ever one of it.
void check_structure_definition(const Value& v, const std::string& path, std::vector<Issue>& out) {
  for (std::string_view view : {"differential", "snapshot"}) {
    const Value* holder = json_member(v, view);
    const Value* elements = holder ? json_member(*holder, "element") : nullptr;
    if (!elements || !elements->IsArray()) continue;
    for (rapidjson::SizeType i = 0; i < elements->Size(); ++i) {
      const Value& e = (*elements)[i];
      std::string_view element_path = str_at(e, "path");
      if (element_path.empty() || element_path.find('.') != std::string_view::npos) continue;
      std::string where = indexed(child(path, view), "element", i);
      if (has(e, "slicing"))
        report(out, "sdf-20", child(where, "slicing"),
               "the root element " + std::string(element_path.substr(0, 64)) +
                   " cannot be sliced: slice the elements inside it");
      if (has(e, "sliceName"))
        report(out, "sdf-23", child(where, "sliceName"),
               "the root element " + std::string(element_path.substr(0, 64)) + " cannot be a slice (sliceName)");
    }
  }
}

// ras-2: a probability given as a decimal is a percentage, at most 100.
void check_risk_assessment(const Value& v, const std::string& path, std::vector<Issue>& out) {
  const Value* predictions = json_member(v, "prediction");
  if (!predictions || !predictions->IsArray()) return;
  for (rapidjson::SizeType i = 0; i < predictions->Size(); ++i) {
    const Value* p = json_member((*predictions)[i], "probabilityDecimal");
    if (p && p->IsNumber() && p->GetDouble() > 100)
      report(out, "ras-2", child(indexed(path, "prediction", i), "probabilityDecimal"),
             "probabilityDecimal is a percentage and must be at most 100");
  }
}

// que-12: an item enabled by more than one condition says how they combine (enableBehavior).
// R4's text reads "count() > 2", an error fixed in later versions and applied by the reference
// validator as "> 1": with two conditions and no behaviour the item's meaning is undefined.
void check_questionnaire_items(const Value& owner, const std::string& path, std::vector<Issue>& out, int depth) {
  const Value* items = json_member(owner, "item");
  if (!items || !items->IsArray() || depth > 64) return;
  for (rapidjson::SizeType i = 0; i < items->Size(); ++i) {
    const Value& item = (*items)[i];
    const std::string here = indexed(path, "item", i);
    const Value* when = json_member(item, "enableWhen");
    if (when && when->IsArray() && when->Size() > 1 && !has(item, "enableBehavior"))
      report(out, "que-12", here,
             "item has " + std::to_string(when->Size()) +
                 " enableWhen conditions but no enableBehavior: say whether all or any must hold");
    check_questionnaire_items(item, here, out, depth + 1);
  }
}

class FhirInvariants final : public RuleSet {
 public:
  void check(std::string_view type, const Value& value, const std::string& path,
             std::vector<Issue>& out) const override {
    if (!value.IsObject()) return;
    if (value.HasMember("resourceType")) {
      check_contained(value, path, out);
      fhir::check_narrative(value, path, out);
      check_language(value, path, out);
      if (type == "Binary") check_content_type(value, path, out);
      if (type == "Bundle") check_bundle(value, path, out);
      else if (type == "Observation") check_observation(value, path, out);
      else if (type == "Consent") check_consent(value, path, out);
      else if (type == "Patient") check_patient(value, path, out);
      else if (type == "Condition") check_condition(value, path, out);
      else if (type == "AllergyIntolerance") check_allergy(value, path, out);
      else if (type == "Organization") check_organization(value, path, out);
      else if (type == "Appointment") check_appointment(value, path, out);
      else if (type == "ServiceRequest") check_service_request(value, path, out);
      else if (type == "RiskAssessment") check_risk_assessment(value, path, out);
      else if (type == "CodeSystem") check_code_system(value, path, out);
      else if (type == "StructureDefinition") check_structure_definition(value, path, out);
      else if (type == "QuestionnaireResponse") fhir::check_questionnaire_response(value, path, out);
      else if (type == "Questionnaire") check_questionnaire_items(value, path, out, 0);
      check_canonical_url(value, path, out);
      return;
    }
    check_ele_1(value, path, out);
    if (type == "Extension") check_extension(value, path, out);
    else if (type == "Period") check_period(value, path, out);
    else if (type == "Age") check_age(value, path, out);
    else if (type == "Duration") check_duration(value, path, out);
    else if (type == "Quantity" || type == "SimpleQuantity" || type == "Count" || type == "Distance" ||
             type == "MoneyQuantity")
      check_quantity(value, type, path, out);
    else if (type == "ContactPoint") check_contact_point(value, path, out);
    else if (type == "Attachment") check_attachment(value, path, out);
    else if (type == "Coding" || type == "Identifier") check_system_is_absolute(value, type, path, out);
    else if (type == "Ratio") check_ratio(value, path, out);
    else if (type == "Range") check_range(value, path, out);
    else if (type == "Timing") check_timing(value, path, out);
  }
};

}  // namespace

std::unique_ptr<RuleSet> make_fhir_invariants() { return std::make_unique<FhirInvariants>(); }

}  // namespace tellonce
