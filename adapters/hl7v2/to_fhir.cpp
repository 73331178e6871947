// HL7 v2 -> FHIR R4 message Bundle. The vocabulary lives in schemas/hl7v2/*.csv (read once by
// load()); this file holds the structure: which segment and field lands where. The Bundle is
// written straight into a string with rapidjson's Writer, no DOM.
// docs/hl7v2-mapping.md is the field-by-field description; keep the two in step.
#include "hl7v2/to_fhir.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace tellonce::hl7v2 {
namespace {

// ---------------------------------------------------------------------------------------------
// Tables

struct Coding {
  std::string system, code, display;
};
using CodeMap = std::unordered_map<std::string, Coding>;

struct EventRule {
  std::string kind;              // adt, patient, merge, oru
  std::string encounter_status;  // adt only
  std::string focus;             // patient, encounter, report
};

struct IdentifierSystemRule {
  std::string context, authority, type, shape, system;
};

struct ParticipantRule {
  std::size_t field = 0;
  Coding type;
};

struct Tables {
  std::unordered_map<std::string, EventRule> events;  // "ADT^A01"
  CodeMap sex, patient_class, abnormal_flags, observation_status, report_status, name_use, address_use,
      address_type, telecom_use, telecom_system, verification_status, coding_systems;
  std::unordered_map<std::string, std::string> units;  // v2 unit -> UCUM code
  std::vector<IdentifierSystemRule> identifier_systems;
  std::vector<ParticipantRule> participants;
};

struct CsvRow {
  std::size_t line = 0;
  std::vector<std::string> cells;
};

[[noreturn]] void table_error(const std::filesystem::path& file, std::size_t line, const std::string& what) {
  throw std::runtime_error(file.string() + ":" + std::to_string(line) + ": " + what);
}

// A small CSV reader: '#' comment lines and blank lines skipped, the first other line is the
// header and must be exactly `columns`; quoted cells with "" escapes; one record per line.
std::vector<CsvRow> read_csv(const std::filesystem::path& file, const std::vector<std::string>& columns) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error(file.string() + ": cannot read the table");
  std::vector<CsvRow> rows;
  std::string text;
  bool header_seen = false;
  for (std::size_t line = 1; std::getline(in, text); ++line) {
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (text.empty() || text[0] == '#') continue;
    std::vector<std::string> cells(1);
    bool quoted = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
      char c = text[i];
      if (quoted) {
        if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
          cells.back() += '"';
          ++i;
        } else if (c == '"') {
          quoted = false;
        } else {
          cells.back() += c;
        }
      } else if (c == '"' && cells.back().empty()) {
        quoted = true;
      } else if (c == ',') {
        cells.emplace_back();
      } else {
        cells.back() += c;
      }
    }
    if (quoted) table_error(file, line, "unterminated quoted cell");
    if (!header_seen) {
      if (cells != columns) {
        std::string want;
        for (const auto& c : columns) want += (want.empty() ? "" : ",") + c;
        table_error(file, line, "header must be " + want);
      }
      header_seen = true;
      continue;
    }
    if (cells.size() != columns.size())
      table_error(file, line, "expected " + std::to_string(columns.size()) + " cells, found " +
                                  std::to_string(cells.size()));
    rows.push_back(CsvRow{line, std::move(cells)});
  }
  if (!header_seen) table_error(file, 1, "no header line");
  return rows;
}

CodeMap load_code_map(const std::filesystem::path& dir, const char* name) {
  auto file = dir / name;
  CodeMap map;
  for (auto& row : read_csv(file, {"v2_code", "system", "code", "display", "source"})) {
    if (row.cells[0].empty()) table_error(file, row.line, "v2_code is empty");
    if (row.cells[2].empty()) table_error(file, row.line, "code is empty");
    if (!map.emplace(row.cells[0], Coding{row.cells[1], row.cells[2], row.cells[3]}).second)
      table_error(file, row.line, "v2_code listed twice");
  }
  return map;
}

Tables load_tables(const std::filesystem::path& dir) {
  Tables t;
  {
    auto file = dir / "events.csv";
    for (auto& row : read_csv(file, {"message_code", "trigger_event", "kind", "encounter_status", "focus", "source"})) {
      const auto& kind = row.cells[2];
      if (kind != "adt" && kind != "patient" && kind != "merge" && kind != "oru")
        table_error(file, row.line, "kind must be adt, patient, merge or oru");
      if (kind == "adt" && row.cells[3].empty()) table_error(file, row.line, "adt events need an encounter_status");
      const auto& focus = row.cells[4];
      if (focus != "patient" && focus != "encounter" && focus != "report")
        table_error(file, row.line, "focus must be patient, encounter or report");
      if (!t.events.emplace(row.cells[0] + "^" + row.cells[1], EventRule{kind, row.cells[3], focus}).second)
        table_error(file, row.line, "event listed twice");
    }
  }
  t.sex = load_code_map(dir, "sex.csv");
  t.patient_class = load_code_map(dir, "patient_class.csv");
  t.abnormal_flags = load_code_map(dir, "abnormal_flags.csv");
  t.observation_status = load_code_map(dir, "observation_status.csv");
  t.report_status = load_code_map(dir, "report_status.csv");
  t.name_use = load_code_map(dir, "name_use.csv");
  t.address_use = load_code_map(dir, "address_use.csv");
  t.address_type = load_code_map(dir, "address_type.csv");
  t.telecom_use = load_code_map(dir, "telecom_use.csv");
  t.telecom_system = load_code_map(dir, "telecom_system.csv");
  t.verification_status = load_code_map(dir, "verification_status.csv");
  {
    auto file = dir / "coding_systems.csv";
    for (auto& row : read_csv(file, {"v2_name", "uri", "source"})) {
      if (row.cells[0].empty() || row.cells[1].empty()) table_error(file, row.line, "v2_name and uri are required");
      if (!t.coding_systems.emplace(row.cells[0], Coding{row.cells[1], "", ""}).second)
        table_error(file, row.line, "v2_name listed twice");
    }
  }
  {
    auto file = dir / "units.csv";
    for (auto& row : read_csv(file, {"v2_unit", "ucum_code", "source"})) {
      if (row.cells[0].empty() || row.cells[1].empty()) table_error(file, row.line, "v2_unit and ucum_code are required");
      if (!t.units.emplace(row.cells[0], row.cells[1]).second) table_error(file, row.line, "v2_unit listed twice");
    }
  }
  {
    auto file = dir / "identifier_systems.csv";
    for (auto& row : read_csv(file, {"context", "assigning_authority", "identifier_type", "value_shape", "system", "source"})) {
      const auto& c = row.cells;
      if (c[0] != "patient" && c[0] != "practitioner" && c[0] != "organization")
        table_error(file, row.line, "context must be patient, practitioner or organization");
      if (c[3] != "any" && c[3] != "gmp" && c[3] != "ods" && c[3] != "gmc")
        table_error(file, row.line, "value_shape must be any, gmp, ods or gmc");
      if (c[4].empty()) table_error(file, row.line, "system is required");
      t.identifier_systems.push_back(IdentifierSystemRule{c[0], c[1], c[2], c[3], c[4]});
    }
  }
  {
    auto file = dir / "participants.csv";
    for (auto& row : read_csv(file, {"pv1_field", "code", "display", "source"})) {
      std::size_t field = 0;
      for (char ch : row.cells[0]) {
        if (ch < '0' || ch > '9') table_error(file, row.line, "pv1_field must be a field number");
        field = field * 10 + static_cast<std::size_t>(ch - '0');
      }
      if (field == 0 || field > 60 || row.cells[1].empty()) table_error(file, row.line, "pv1_field 1-60 and code are required");
      t.participants.push_back(
          ParticipantRule{field, Coding{"http://terminology.hl7.org/CodeSystem/v3-ParticipationType", row.cells[1], row.cells[2]}});
    }
  }
  return t;
}

// ---------------------------------------------------------------------------------------------
// Small text helpers

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'a' && x <= 'z') x = static_cast<char>(x - 32);
    if (y >= 'a' && y <= 'z') y = static_cast<char>(y - 32);
    if (x != y) return false;
  }
  return true;
}

// FHIR `code`: no leading/trailing whitespace, single spaces inside.
std::string as_code(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  bool space = false;
  for (char c : trim(s)) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

bool shape_matches(std::string_view shape, std::string_view v) {
  if (shape == "any") return true;
  if (shape == "gmp") return v.size() == 8 && v[0] == 'G' && all_digits(v.substr(1));
  if (shape == "gmc") return (v.size() == 8 && v[0] == 'C' && all_digits(v.substr(1))) || (v.size() == 7 && all_digits(v));
  if (shape == "ods") {
    if (v.size() < 3 || v.size() > 10) return false;
    for (char c : v)
      if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return false;
    return true;
  }
  return false;
}

bool is_oid(std::string_view s) {
  if (s.size() < 3 || (s[0] < '0' || s[0] > '2') || s[1] != '.') return false;
  bool digit = false;
  for (std::size_t i = 2; i < s.size(); ++i) {
    if (s[i] >= '0' && s[i] <= '9') {
      digit = true;
    } else if (s[i] == '.' && digit) {
      digit = false;
    } else {
      return false;
    }
  }
  return digit;
}

bool is_uuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (std::size_t i = 0; i < 36; ++i) {
    char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
      return false;
    }
  }
  return true;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return out;
}

// Percent-encodes everything but RFC 3986 unreserved characters.
std::string pct_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
        c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// FHIR decimal from v2 NM text: optional sign, digits, optional fraction. Leading zeros and a
// leading '+' are dropped, ".5" becomes "0.5", "5." becomes "5". nullopt: not a number.
std::optional<std::string> fhir_decimal(std::string_view s) {
  s = trim(s);
  std::string out;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    if (s[0] == '-') out += '-';
    s.remove_prefix(1);
  }
  std::size_t dot = s.find('.');
  std::string_view whole = s.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? std::string_view{} : s.substr(dot + 1);
  if (whole.empty() && frac.empty()) return std::nullopt;
  if ((!whole.empty() && !all_digits(whole)) || (!frac.empty() && !all_digits(frac))) return std::nullopt;
  while (whole.size() > 1 && whole[0] == '0') whole.remove_prefix(1);
  out += whole.empty() ? std::string_view("0") : whole;
  if (!frac.empty()) {
    out += '.';
    out += frac;
  }
  if (out == "-0") out = "0";
  return out;
}

// ---------------------------------------------------------------------------------------------
// Dates: HL7 DTM YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ] -> FHIR date / dateTime / instant.

struct Dtm {
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  int precision = 0;  // 1 year, 2 month, 3 day, 4 hour, 5 minute, 6 second
  std::string fraction;
  bool has_offset = false;
  int offset_minutes = 0;
};

int days_in_month(int y, int m) {
  static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 29;
  return days[m - 1];
}

std::optional<Dtm> parse_dtm(std::string_view s) {
  s = trim(s);
  Dtm d;
  auto num = [&](std::size_t at, std::size_t len, int& out) {
    if (s.size() < at + len) return false;
    auto part = s.substr(at, len);
    if (!all_digits(part)) return false;
    out = 0;
    for (char c : part) out = out * 10 + (c - '0');
    return true;
  };
  std::size_t tz = s.find_first_of("+-");
  std::string_view zone = tz == std::string_view::npos ? std::string_view{} : s.substr(tz);
  s = s.substr(0, tz);
  std::size_t dot = s.find('.');
  if (dot != std::string_view::npos) {
    d.fraction = s.substr(dot + 1);
    s = s.substr(0, dot);
    if (d.fraction.empty() || !all_digits(d.fraction) || s.size() != 14) return std::nullopt;
  }
  if (!all_digits(s)) return std::nullopt;
  static const std::size_t lengths[] = {4, 6, 8, 10, 12, 14};
  int precision = 0;
  for (int i = 0; i < 6; ++i)
    if (s.size() == lengths[i]) precision = i + 1;
  if (precision == 0) return std::nullopt;
  d.precision = precision;
  num(0, 4, d.year);
  if (precision >= 2 && (!num(4, 2, d.month) || d.month < 1 || d.month > 12)) return std::nullopt;
  if (precision >= 3 && (!num(6, 2, d.day) || d.day < 1 || d.day > days_in_month(d.year, d.month))) return std::nullopt;
  if (precision >= 4 && (!num(8, 2, d.hour) || d.hour > 23)) return std::nullopt;
  if (precision >= 5 && (!num(10, 2, d.minute) || d.minute > 59)) return std::nullopt;
  if (precision >= 6 && (!num(12, 2, d.second) || d.second > 59)) return std::nullopt;
  if (d.year < 1) return std::nullopt;
  if (!zone.empty()) {
    int hh = 0, mm = 0;
    if (zone.size() != 5 || !all_digits(zone.substr(1))) return std::nullopt;
    hh = (zone[1] - '0') * 10 + (zone[2] - '0');
    mm = (zone[3] - '0') * 10 + (zone[4] - '0');
    if (hh > 14 || mm > 59) return std::nullopt;
    d.has_offset = true;
    d.offset_minutes = (zone[0] == '-' ? -1 : 1) * (hh * 60 + mm);
  }
  return d;
}

// Day of week, 0 = Sunday (Sakamoto).
int weekday(int y, int m, int d) {
  static const int t[] = {0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4};
  if (m < 3) y -= 1;
  return (y + y / 4 - y / 100 + y / 400 + t[m - 1] + d) % 7;
}
int last_sunday(int y, int m) {
  int d = days_in_month(y, m);
  return d - weekday(y, m, d);
}

// UK civil time (ITK messages, MSH-17 GBR, carry local time without an offset): British Summer
// Time from 01:00 GMT on the last Sunday of March to 01:00 GMT on the last Sunday of October.
// The repeated hour in October is read as BST (its first occurrence).
int uk_offset_minutes(const Dtm& d) {
  int march = last_sunday(d.year, 3), october = last_sunday(d.year, 10);
  auto key = [](int m, int day, int h) { return (m * 100 + day) * 100 + h; };
  int now = key(d.month, d.day, d.hour);
  return (now >= key(3, march, 1) && now < key(10, october, 2)) ? 60 : 0;
}

std::string two(int v) {
  char b[3] = {static_cast<char>('0' + v / 10 % 10), static_cast<char>('0' + v % 10), 0};
  return b;
}

std::string format_date(const Dtm& d, int max_precision) {
  char year[5];
  std::snprintf(year, sizeof year, "%04d", d.year);
  std::string out = year;
  int p = std::min(d.precision, max_precision);
  if (p >= 2) out += "-" + two(d.month);
  if (p >= 3) out += "-" + two(d.day);
  return out;
}

enum class TimeOutcome { full, date_only };

// dateTime: with a time only when the offset is known (FHIR requires one), seconds padded.
std::string format_datetime(const Dtm& d, bool assume_uk, TimeOutcome* outcome, bool instant = false) {
  if (d.precision <= 3) {
    if (outcome) *outcome = TimeOutcome::full;
    return format_date(d, 3);
  }
  bool offset_known = d.has_offset || assume_uk;
  if (!offset_known) {
    if (outcome) *outcome = TimeOutcome::date_only;
    return format_date(d, 3);
  }
  if (outcome) *outcome = TimeOutcome::full;
  int offset = d.has_offset ? d.offset_minutes : uk_offset_minutes(d);
  std::string out = format_date(d, 3) + "T" + two(d.hour) + ":" + two(d.precision >= 5 ? d.minute : 0) + ":" +
                    two(d.precision >= 6 ? d.second : 0);
  if (!d.fraction.empty()) out += "." + d.fraction;
  if (offset == 0 && instant) {
    out += "Z";
  } else {
    int a = offset < 0 ? -offset : offset;
    out += (offset < 0 ? "-" : "+") + two(a / 60) + ":" + two(a % 60);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Deterministic ids: the same message (sender, MSH-10) always gives the same ids, so a resend
// converts to the same Bundle and MessageHeader.id, which the broker detects as a duplicate.

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
std::uint64_t fnv(std::string_view s, std::uint64_t h) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

struct IdSeed {
  std::uint64_t a = 0, b = 0;
};

std::string uuid_of(const IdSeed& seed, std::string_view label) {
  std::uint64_t hi = mix(fnv(label, seed.a)), lo = mix(fnv(label, seed.b) ^ hi);
  hi = (hi & 0xFFFFFFFFFFFF0FFFULL) | 0x0000000000008000ULL;  // version 8: name-based, own hash
  lo = (lo & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL;  // RFC 4122 variant
  char out[37];
  std::snprintf(out, sizeof out, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(hi >> 32),
                static_cast<unsigned>((hi >> 16) & 0xFFFF), static_cast<unsigned>(hi & 0xFFFF),
                static_cast<unsigned>(lo >> 48), static_cast<unsigned long long>(lo & 0xFFFFFFFFFFFFULL));
  return out;
}

// ---------------------------------------------------------------------------------------------
// The conversion of one message.

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

std::string v2_location(const Segment& s, std::size_t field = 0, std::size_t component = 0) {
  std::string out(s.id());
  out += '^';
  out += std::to_string(s.occurrence());
  if (field) {
    out += '^';
    out += std::to_string(field);
    if (component) {
      out += '^';
      out += std::to_string(component);
    }
  }
  return out;
}

class Builder {
 public:
  Builder(const Tables& tables, const Message& message) : t_(tables), m_(message), w_(entries_) {}

  Result<Converted> run();

 private:
  // --- reading
  std::string get(const Segment& s, std::size_t f, std::size_t c = 1, std::size_t sc = 1, std::size_t rep = 1) const {
    std::string v = s.value(f, c, sc, rep);
    std::string_view t = trim(v);
    if (t == "\"\"") return {};
    if (t.size() != v.size()) return std::string(t);
    return v;
  }

  // --- writing
  void key(std::string_view k) { w_.Key(k.data(), static_cast<rapidjson::SizeType>(k.size())); }
  void str(std::string_view v) { w_.String(v.data(), static_cast<rapidjson::SizeType>(v.size())); }
  void field(std::string_view k, std::string_view v) {
    if (v.empty()) return;
    key(k);
    str(v);
  }
  void reference(std::string_view k, const std::string& uuid) {
    key(k);
    w_.StartObject();
    field("reference", "urn:uuid:" + uuid);
    w_.EndObject();
  }
  void coding(const Coding& c) {
    w_.StartObject();
    field("system", c.system);
    field("code", c.code);
    field("display", c.display);
    w_.EndObject();
  }
  void codeable(std::string_view k, const Coding& c) {
    key(k);
    codeable_body(c);
  }
  void codeable_body(const Coding& c) {
    w_.StartObject();
    key("coding");
    w_.StartArray();
    coding(c);
    w_.EndArray();
    w_.EndObject();
  }
  void map_location(std::string fhir, std::string v2) { out_.locations.emplace_back(std::move(fhir), std::move(v2)); }
  std::string at(std::string_view suffix) const { return prefix_ + std::string(suffix); }

  void error(const std::string& location, std::string code, std::string rule, std::string text) {
    errors_.push_back(Issue{Severity::error, std::move(code), std::move(text), location, std::move(rule)});
  }
  void warn(const std::string& location, std::string rule, std::string text) {
    out_.warnings.push_back(Issue{Severity::warning, "informational", std::move(text), location, std::move(rule)});
  }

  // Opens entry N (resource `type`, id `uuid`); close with end_entry().
  void begin_entry(std::string_view type, const std::string& uuid) {
    if (entry_count_ > 0) entries_.Put(',');
    w_.Reset(entries_);
    ++entry_count_;
    prefix_ = "Bundle.entry[" + std::to_string(entry_count_) + "].resource";
    w_.StartObject();
    field("fullUrl", "urn:uuid:" + uuid);
    key("resource");
    w_.StartObject();
    field("resourceType", type);
    field("id", uuid);
  }
  void end_entry() {
    w_.EndObject();
    w_.EndObject();
  }

  // --- pieces
  std::optional<std::string> date_field(const Segment& s, std::size_t f, bool date_only, std::size_t rep = 1,
                                        std::size_t component = 1);
  std::string identifier_system(std::string_view context, std::string_view authority, std::string_view oid,
                                std::string_view oid_type, std::string_view type, std::string_view value) const;
  bool write_cx(const Segment& s, std::size_t f, std::size_t rep, std::string_view context, const std::string& path,
                const Coding* default_type = nullptr);
  void write_cwe(const Segment& s, std::size_t f, std::size_t rep, std::size_t first_component = 1);
  bool cwe_present(const Segment& s, std::size_t f, std::size_t rep = 1) const;
  bool write_xpn(const Segment& s, std::size_t f, std::size_t rep);
  bool write_xad(const Segment& s, std::size_t f, std::size_t rep);
  bool write_xtn(const Segment& s, std::size_t f, std::size_t rep, std::string_view default_use);
  std::optional<std::pair<std::string, std::string>> xtn_value(const Segment& s, std::size_t f, std::size_t rep) const;
  bool xad_present(const Segment& s, std::size_t f, std::size_t rep) const {
    for (std::size_t c : {1, 2, 3, 4, 5, 6, 9})
      if (!get(s, f, c, 1, rep).empty()) return true;
    return false;
  }
  std::string xcn_display(const Segment& s, std::size_t f, std::size_t rep) const;
  void write_practitioner_reference(const Segment& s, std::size_t f, std::size_t rep);
  void write_quantity_body(const std::string& number, const Segment& obx, std::size_t units_field);
  std::string endpoint(const Segment& msh, std::size_t f, std::string_view kind) const;
  std::optional<Coding> lookup(const CodeMap& map, const Segment& s, std::size_t f, std::string_view rule,
                               bool required, std::size_t rep = 1, std::size_t component = 1);

  void write_patient(const Segment& pid, const std::string& uuid, const Segment* pd1, const std::string* replaces,
                     const std::string* replaced_by);
  void write_merged_patient(const Segment& mrg, const std::string& uuid, const std::string& survivor);
  void write_encounter(const Segment& pv1, const std::string& uuid, const std::string& status,
                       const std::string* patient);
  void write_report(const Segment& obr, const std::string& uuid, const std::vector<std::string>& obx_uuids, const std::string* patient, const std::string* encounter);
  void write_observation(const Segment& obx, const std::string& uuid, const Segment* obr,
                         const std::vector<const Segment*>& notes, const std::string* patient,
                         const std::string* encounter);
  bool write_obx_value(const Segment& obx);
  void write_reference_range(const Segment& obx);

  std::string write_header(const std::vector<std::string>& focus);

  const Tables& t_;
  const Message& m_;
  Converted out_;
  std::vector<Issue> errors_;
  IdSeed seed_;
  bool assume_uk_time_ = false;
  bool dropped_time_warned_ = false;
  rapidjson::StringBuffer entries_;
  JsonWriter w_;
  int entry_count_ = 0;
  std::string prefix_;
};

std::optional<Coding> Builder::lookup(const CodeMap& map, const Segment& s, std::size_t f, std::string_view rule,
                                      bool required, std::size_t rep, std::size_t component) {
  std::string code = get(s, f, component, 1, rep);
  if (code.empty()) return std::nullopt;
  auto it = map.find(code);
  if (it != map.end()) return it->second;
  if (required) {
    error(v2_location(s, f), "code-invalid", std::string(rule),
          "the code is not in the converter's table for this field (schemas/hl7v2, docs/hl7v2-mapping.md)");
  } else {
    warn(v2_location(s, f), std::string(rule), "the code is not in the converter's table for this field; not mapped");
  }
  return std::nullopt;
}

std::optional<std::string> Builder::date_field(const Segment& s, std::size_t f, bool date_only, std::size_t rep,
                                               std::size_t component) {
  std::string raw = get(s, f, component, 1, rep);
  if (raw.empty()) return std::nullopt;
  auto d = parse_dtm(raw);
  if (!d) {
    error(v2_location(s, f), "value", "hl7v2-date", "not a valid HL7 date/time (YYYY[MM[DD[HHMM[SS[.S]]]]][+/-ZZZZ])");
    return std::nullopt;
  }
  if (date_only) return format_date(*d, 3);
  TimeOutcome outcome;
  std::string text = format_datetime(*d, assume_uk_time_, &outcome);
  if (outcome == TimeOutcome::date_only && !dropped_time_warned_) {
    dropped_time_warned_ = true;
    warn(v2_location(s, f), "hl7v2-time-without-offset",
         "a time without a UTC offset was reduced to its date (FHIR needs the offset); this applies to every such field in the message");
  }
  return text;
}

std::string Builder::identifier_system(std::string_view context, std::string_view authority, std::string_view oid,
                                       std::string_view oid_type, std::string_view type, std::string_view value) const {
  for (const auto& rule : t_.identifier_systems) {
    if (rule.context != context) continue;
    if (!rule.authority.empty() && !iequals(rule.authority, authority)) continue;
    if (!rule.type.empty() && !iequals(rule.type, type)) continue;
    if (!shape_matches(rule.shape, value)) continue;
    return rule.system;
  }
  if (!oid.empty()) {
    if ((oid_type.empty() || iequals(oid_type, "ISO")) && is_oid(oid)) return "urn:oid:" + std::string(oid);
    if (iequals(oid_type, "UUID") && is_uuid(oid)) return "urn:uuid:" + lower(oid);
  }
  return {};
}

// CX: 1 id, 4 assigning authority (HD: namespace & universal id & type), 5 identifier type.
bool Builder::write_cx(const Segment& s, std::size_t f, std::size_t rep, std::string_view context,
                       const std::string& path, const Coding* default_type) {
  std::string value = get(s, f, 1, 1, rep);
  if (value.empty()) return false;
  std::string authority = get(s, f, 4, 1, rep), oid = get(s, f, 4, 2, rep), oid_type = get(s, f, 4, 3, rep);
  std::string type = as_code(get(s, f, 5, 1, rep));
  std::string system = identifier_system(context, authority, oid, oid_type, type, value);
  w_.StartObject();
  if (system == "https://fhir.nhs.uk/Id/nhs-number" && context == "patient" && s.id() == "PID") {
    // PID-32: the NHS number's verification status (UK Core extension on the identifier).
    for (std::size_t r = 1; r <= std::max<std::size_t>(1, s.repetition_count(32)); ++r) {
      std::string code = get(s, 32, 1, 1, r);
      if (code.empty()) continue;
      auto it = t_.verification_status.find(code);
      if (it == t_.verification_status.end()) continue;
      key("extension");
      w_.StartArray();
      w_.StartObject();
      field("url", "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus");
      codeable("valueCodeableConcept", it->second);
      w_.EndObject();
      w_.EndArray();
      map_location(path + ".extension[0]", v2_location(s, 32));
      break;
    }
  }
  field("system", system);
  field("value", value);
  if (!type.empty()) {
    codeable("type", Coding{"http://terminology.hl7.org/CodeSystem/v2-0203", type, ""});
  } else if (default_type) {
    codeable("type", *default_type);
  }
  if (system.empty() && !authority.empty()) {
    key("assigner");
    w_.StartObject();
    field("display", authority);
    w_.EndObject();
  }
  w_.EndObject();
  map_location(path, v2_location(s, f));
  return true;
}

bool Builder::cwe_present(const Segment& s, std::size_t f, std::size_t rep) const {
  return !get(s, f, 1, 1, rep).empty() || !get(s, f, 2, 1, rep).empty() || !get(s, f, 9, 1, rep).empty();
}

// CWE/CE: triplets (1 code, 2 text, 3 coding system) and (4, 5, 6); 9 original text.
void Builder::write_cwe(const Segment& s, std::size_t f, std::size_t rep, std::size_t first) {
  w_.StartObject();
  bool any = false;
  for (std::size_t c : {first, first + 3}) {
    std::string code = as_code(get(s, f, c, 1, rep));
    if (code.empty()) continue;
    if (!any) {
      key("coding");
      w_.StartArray();
      any = true;
    }
    std::string system_name = get(s, f, c + 2, 1, rep), system;
    auto it = t_.coding_systems.find(system_name);
    if (it != t_.coding_systems.end()) {
      system = it->second.system;
    } else if (system_name.size() == 8 && system_name.compare(0, 4, "HL70") == 0 && all_digits(system_name.substr(4))) {
      system = "http://terminology.hl7.org/CodeSystem/v2-" + system_name.substr(4);
    }
    coding(Coding{system, code, get(s, f, c + 1, 1, rep)});
  }
  if (any) w_.EndArray();
  std::string text = get(s, f, 9, 1, rep);
  if (text.empty() && !any) text = get(s, f, first + 1, 1, rep);
  field("text", text);
  w_.EndObject();
}

// XPN: 1 family (FN.1), 2 given, 3 further given, 4 suffix, 5 prefix, 6 degree, 7 name type.
bool Builder::write_xpn(const Segment& s, std::size_t f, std::size_t rep) {
  std::string family = get(s, f, 1, 1, rep), given = get(s, f, 2, 1, rep), middle = get(s, f, 3, 1, rep);
  if (family.empty() && given.empty()) return false;
  w_.StartObject();
  auto use = t_.name_use.find(get(s, f, 7, 1, rep));
  if (use != t_.name_use.end()) field("use", use->second.code);
  field("family", family);
  if (!given.empty() || !middle.empty()) {
    key("given");
    w_.StartArray();
    if (!given.empty()) str(given);
    if (!middle.empty()) str(middle);
    w_.EndArray();
  }
  std::string prefix = get(s, f, 5, 1, rep);
  if (!prefix.empty()) {
    key("prefix");
    w_.StartArray();
    str(prefix);
    w_.EndArray();
  }
  std::string suffix = get(s, f, 4, 1, rep), degree = get(s, f, 6, 1, rep);
  if (!suffix.empty() || !degree.empty()) {
    key("suffix");
    w_.StartArray();
    if (!suffix.empty()) str(suffix);
    if (!degree.empty()) str(degree);
    w_.EndArray();
  }
  w_.EndObject();
  return true;
}

// XAD: 1 street (SAD.1), 2 other designation, 3 city, 4 state/county, 5 postcode, 6 country,
// 7 address type, 9 county/parish.
bool Builder::write_xad(const Segment& s, std::size_t f, std::size_t rep) {
  std::string line1 = get(s, f, 1, 1, rep), line2 = get(s, f, 2, 1, rep), city = get(s, f, 3, 1, rep),
              state = get(s, f, 4, 1, rep), postcode = get(s, f, 5, 1, rep), country = get(s, f, 6, 1, rep),
              district = get(s, f, 9, 1, rep);
  if (!xad_present(s, f, rep)) return false;
  w_.StartObject();
  std::string type_code = get(s, f, 7, 1, rep);
  auto use = t_.address_use.find(type_code);
  if (use != t_.address_use.end()) field("use", use->second.code);
  auto type = t_.address_type.find(type_code);
  if (type != t_.address_type.end()) field("type", type->second.code);
  if (!line1.empty() || !line2.empty()) {
    key("line");
    w_.StartArray();
    if (!line1.empty()) str(line1);
    if (!line2.empty()) str(line2);
    w_.EndArray();
  }
  field("city", city);
  field("district", district);
  field("state", state);
  field("postalCode", postcode);
  field("country", country);
  w_.EndObject();
  return true;
}

// XTN: 1 number (old form), 2 use, 3 equipment, 4 email, 5 country, 6 area, 7 local number,
// 8 extension, 12 unformatted number.
std::optional<std::pair<std::string, std::string>> Builder::xtn_value(const Segment& s, std::size_t f,
                                                                     std::size_t rep) const {
  std::string equipment = get(s, f, 3, 1, rep), email = get(s, f, 4, 1, rep), value;
  auto sys = t_.telecom_system.find(equipment);
  std::string system = sys != t_.telecom_system.end() ? sys->second.code : std::string();
  if (system == "email" || (system.empty() && !email.empty())) {
    value = email.empty() ? get(s, f, 1, 1, rep) : email;
    system = "email";
  } else {
    value = get(s, f, 1, 1, rep);
    if (value.empty()) value = get(s, f, 12, 1, rep);
    if (value.empty()) {
      std::string country = get(s, f, 5, 1, rep), area = get(s, f, 6, 1, rep), local = get(s, f, 7, 1, rep),
                  ext = get(s, f, 8, 1, rep);
      if (!local.empty()) {
        if (!country.empty()) value += "+" + country + " ";
        if (!area.empty()) value += "(" + area + ") ";
        value += local;
        if (!ext.empty()) value += " ext " + ext;
      }
    }
    if (system.empty()) system = "phone";
  }
  if (value.empty()) return std::nullopt;
  return std::pair{std::move(system), std::move(value)};
}

bool Builder::write_xtn(const Segment& s, std::size_t f, std::size_t rep, std::string_view default_use) {
  auto found = xtn_value(s, f, rep);
  if (!found) return false;
  const auto& [system, value] = *found;
  w_.StartObject();
  field("system", system);
  field("value", value);
  auto use = t_.telecom_use.find(get(s, f, 2, 1, rep));
  if (use != t_.telecom_use.end()) {
    field("use", use->second.code);
  } else if (iequals(get(s, f, 3, 1, rep), "CP")) {  // a mobile phone (FHIR R4 has it as a use, not a system)
    field("use", "mobile");
  } else {
    field("use", default_use);
  }
  w_.EndObject();
  return true;
}

// XCN display: 6 prefix, 3 given, 2 family (FN.1).
std::string Builder::xcn_display(const Segment& s, std::size_t f, std::size_t rep) const {
  std::string out;
  for (std::size_t c : {6, 3, 2}) {
    std::string part = get(s, f, c, 1, rep);
    if (part.empty()) continue;
    if (!out.empty()) out += ' ';
    out += part;
  }
  return out;
}

// A logical Reference(Practitioner) from XCN: 1 id, 9 assigning authority, 13 identifier type.
void Builder::write_practitioner_reference(const Segment& s, std::size_t f, std::size_t rep) {
  std::string id = get(s, f, 1, 1, rep);
  w_.StartObject();
  field("type", "Practitioner");
  if (!id.empty()) {
    std::string system = identifier_system("practitioner", get(s, f, 9, 1, rep), get(s, f, 9, 2, rep),
                                           get(s, f, 9, 3, rep), get(s, f, 13, 1, rep), id);
    key("identifier");
    w_.StartObject();
    field("system", system);
    field("value", id);
    w_.EndObject();
  }
  field("display", xcn_display(s, f, rep));
  w_.EndObject();
}

std::string Builder::endpoint(const Segment& msh, std::size_t f, std::string_view kind) const {
  std::string ns = get(msh, f, 1), uid = get(msh, f, 2), uid_type = get(msh, f, 3);
  if (!uid.empty()) {
    if ((uid_type.empty() || iequals(uid_type, "ISO")) && is_oid(uid)) return "urn:oid:" + uid;
    if (iequals(uid_type, "UUID") && is_uuid(uid)) return "urn:uuid:" + lower(uid);
  }
  if (ns.empty()) ns = uid;
  if (ns.empty()) return {};
  return "urn:tellonce:hl7v2:" + std::string(kind) + ":" + pct_encode(ns);
}

// Quantity members (after the caller opened the object): value, unit, UCUM system and code.
void Builder::write_quantity_body(const std::string& number, const Segment& obx, std::size_t units_field) {
  key("value");
  w_.RawValue(number.data(), number.size(), rapidjson::kNumberType);
  if (units_field == 0) return;
  std::string unit_code = get(obx, units_field, 1), unit_text = get(obx, units_field, 2),
              unit_system = get(obx, units_field, 3);
  std::string unit = !unit_text.empty() ? unit_text : unit_code;
  field("unit", unit);
  std::string ucum;
  if (!unit_code.empty()) {
    if (iequals(unit_system, "UCUM")) {
      ucum = unit_code;
    } else {
      auto it = t_.units.find(unit_code);
      if (it != t_.units.end()) ucum = it->second;
    }
  }
  if (!ucum.empty()) {
    field("system", "http://unitsofmeasure.org");
    field("code", ucum);
  }
}

// ---------------------------------------------------------------------------------------------
// Resources

void Builder::write_patient(const Segment& pid, const std::string& uuid, const Segment* pd1,
                            const std::string* replaces, const std::string* replaced_by) {
  begin_entry("Patient", uuid);
  map_location(prefix_, v2_location(pid));
  // identifier: PID-3 (each repetition), then PID-2 and PID-4 (older senders' external and
  // alternate ids).
  {
    bool open = false;
    int n = 0;
    for (std::size_t f : {std::size_t{3}, std::size_t{2}, std::size_t{4}}) {
      for (std::size_t r = 1; r <= pid.repetition_count(f); ++r) {
        if (get(pid, f, 1, 1, r).empty()) continue;
        if (!open) {
          key("identifier");
          w_.StartArray();
          open = true;
        }
        if (write_cx(pid, f, r, "patient", at(".identifier[" + std::to_string(n) + "]"))) ++n;
      }
    }
    if (open) w_.EndArray();
  }
  // name: PID-5 repetitions.
  {
    bool open = false;
    int n = 0;
    for (std::size_t r = 1; r <= pid.repetition_count(5); ++r) {
      if (get(pid, 5, 1, 1, r).empty() && get(pid, 5, 2, 1, r).empty()) continue;
      if (!open) {
        key("name");
        w_.StartArray();
        open = true;
      }
      if (write_xpn(pid, 5, r)) map_location(at(".name[" + std::to_string(n++) + "]"), v2_location(pid, 5));
    }
    if (open) w_.EndArray();
  }
  // telecom: PID-13 (home), PID-14 (work).
  {
    bool open = false;
    int n = 0;
    for (std::size_t f : {std::size_t{13}, std::size_t{14}}) {
      for (std::size_t r = 1; r <= pid.repetition_count(f); ++r) {
        if (!xtn_value(pid, f, r)) continue;
        if (!open) {
          key("telecom");
          w_.StartArray();
          open = true;
        }
        if (write_xtn(pid, f, r, f == 13 ? "home" : "work"))
          map_location(at(".telecom[" + std::to_string(n++) + "]"), v2_location(pid, f));
      }
    }
    if (open) w_.EndArray();
  }
  if (auto sex = lookup(t_.sex, pid, 8, "hl7v2-sex-unmapped", false)) {
    field("gender", sex->code);
    map_location(at(".gender"), v2_location(pid, 8));
  }
  if (auto birth = date_field(pid, 7, true)) {
    field("birthDate", *birth);
    map_location(at(".birthDate"), v2_location(pid, 7));
  }
  if (auto death = date_field(pid, 29, false)) {
    field("deceasedDateTime", *death);
    map_location(at(".deceasedDateTime"), v2_location(pid, 29));
  } else {
    std::string flag = get(pid, 30);
    if (flag == "Y" || flag == "N") {
      key("deceasedBoolean");
      w_.Bool(flag == "Y");
      map_location(at(".deceasedBoolean"), v2_location(pid, 30));
    }
  }
  {
    bool open = false;
    int n = 0;
    for (std::size_t r = 1; r <= pid.repetition_count(11); ++r) {
      if (!xad_present(pid, 11, r)) continue;
      if (!open) {
        key("address");
        w_.StartArray();
        open = true;
      }
      if (write_xad(pid, 11, r)) map_location(at(".address[" + std::to_string(n++) + "]"), v2_location(pid, 11));
    }
    if (open) w_.EndArray();
  }
  // generalPractitioner: PD1-3 (first repetition: the registered practice), PD1-4 (the GP).
  if (pd1) {
    std::string practice_code = get(*pd1, 3, 10);
    if (practice_code.empty()) practice_code = get(*pd1, 3, 3);
    std::string practice_name = get(*pd1, 3, 1);
    std::string gp_code = get(*pd1, 4, 1);
    std::string gp_name = xcn_display(*pd1, 4, 1);
    if (!practice_code.empty() || !practice_name.empty() || !gp_code.empty() || !gp_name.empty()) {
      key("generalPractitioner");
      w_.StartArray();
      int n = 0;
      if (!practice_code.empty() || !practice_name.empty()) {
        w_.StartObject();
        field("type", "Organization");
        if (!practice_code.empty()) {
          std::string system = identifier_system("organization", get(*pd1, 3, 6), get(*pd1, 3, 6, 2),
                                                 get(*pd1, 3, 6, 3), get(*pd1, 3, 7), practice_code);
          if (system.empty())
            warn(v2_location(*pd1, 3), "hl7v2-not-ods",
                 "the practice code is not shaped like an ODS code; kept without an identifier system");
          key("identifier");
          w_.StartObject();
          field("system", system);
          field("value", practice_code);
          w_.EndObject();
        }
        field("display", practice_name);
        w_.EndObject();
        map_location(at(".generalPractitioner[" + std::to_string(n++) + "]"), v2_location(*pd1, 3));
      }
      if (!gp_code.empty() || !gp_name.empty()) {
        write_practitioner_reference(*pd1, 4, 1);
        map_location(at(".generalPractitioner[" + std::to_string(n++) + "]"), v2_location(*pd1, 4));
      }
      w_.EndArray();
    }
  }
  if (replaces || replaced_by) {
    key("link");
    w_.StartArray();
    w_.StartObject();
    reference("other", replaces ? *replaces : *replaced_by);
    field("type", replaces ? "replaces" : "replaced-by");
    w_.EndObject();
    w_.EndArray();
  }
  end_entry();
}

void Builder::write_merged_patient(const Segment& mrg, const std::string& uuid, const std::string& survivor) {
  begin_entry("Patient", uuid);
  map_location(prefix_, v2_location(mrg));
  // MRG-1 prior patient identifier list, MRG-4 prior patient id (older versions).
  bool open = false;
  int n = 0;
  for (std::size_t f : {std::size_t{1}, std::size_t{4}}) {
    for (std::size_t r = 1; r <= mrg.repetition_count(f); ++r) {
      if (get(mrg, f, 1, 1, r).empty()) continue;
      if (!open) {
        key("identifier");
        w_.StartArray();
        open = true;
      }
      if (write_cx(mrg, f, r, "patient", at(".identifier[" + std::to_string(n) + "]"))) ++n;
    }
  }
  if (open) w_.EndArray();
  key("active");
  w_.Bool(false);
  if (!get(mrg, 7, 1).empty() || !get(mrg, 7, 2).empty()) {
    key("name");
    w_.StartArray();
    write_xpn(mrg, 7, 1);
    w_.EndArray();
    map_location(at(".name[0]"), v2_location(mrg, 7));
  }
  key("link");
  w_.StartArray();
  w_.StartObject();
  reference("other", survivor);
  field("type", "replaced-by");
  w_.EndObject();
  w_.EndArray();
  end_entry();
}

void Builder::write_encounter(const Segment& pv1, const std::string& uuid, const std::string& status,
                              const std::string* patient) {
  begin_entry("Encounter", uuid);
  map_location(prefix_, v2_location(pv1));
  // PV1-19 visit number.
  if (!get(pv1, 19, 1).empty()) {
    key("identifier");
    w_.StartArray();
    static const Coding visit_number{"http://terminology.hl7.org/CodeSystem/v2-0203", "VN", "Visit number"};
    write_cx(pv1, 19, 1, "encounter", at(".identifier[0]"), &visit_number);
    w_.EndArray();
  }
  field("status", status);
  map_location(at(".status"), "MSH^1^9");
  // PV1-2 patient class: Encounter.class is required, so an unmapped class is refused.
  std::string patient_class = get(pv1, 2);
  if (patient_class.empty()) {
    error(v2_location(pv1, 2), "required", "hl7v2-required-field",
          "PV1-2 patient class is required to build Encounter.class");
  } else if (auto c = lookup(t_.patient_class, pv1, 2, "hl7v2-patient-class-unmapped", true)) {
    key("class");
    coding(*c);
    map_location(at(".class"), v2_location(pv1, 2));
  }
  if (patient) reference("subject", *patient);
  // Participants: PV1-7/8/9/17 (participants.csv).
  {
    bool open = false;
    int n = 0;
    for (const auto& rule : t_.participants) {
      for (std::size_t r = 1; r <= pv1.repetition_count(rule.field); ++r) {
        if (get(pv1, rule.field, 1, 1, r).empty() && get(pv1, rule.field, 2, 1, r).empty()) continue;
        if (!open) {
          key("participant");
          w_.StartArray();
          open = true;
        }
        w_.StartObject();
        key("type");
        w_.StartArray();
        w_.StartObject();
        key("coding");
        w_.StartArray();
        coding(rule.type);
        w_.EndArray();
        w_.EndObject();
        w_.EndArray();
        key("individual");
        write_practitioner_reference(pv1, rule.field, r);
        w_.EndObject();
        map_location(at(".participant[" + std::to_string(n++) + "]"), v2_location(pv1, rule.field));
      }
    }
    if (open) w_.EndArray();
  }
  // PV1-44 admit, PV1-45 discharge.
  {
    auto start = date_field(pv1, 44, false);
    auto end = date_field(pv1, 45, false);
    if (start || end) {
      key("period");
      w_.StartObject();
      if (start) field("start", *start);
      if (end) field("end", *end);
      w_.EndObject();
      if (start) map_location(at(".period.start"), v2_location(pv1, 44));
      if (end) map_location(at(".period.end"), v2_location(pv1, 45));
    }
  }
  // PV1-3 assigned location, PV1-6 prior location (transfers), as display-only references.
  {
    auto place = [&](std::size_t f) {
      std::string out;
      for (std::size_t c : {4, 1, 2, 3}) {
        std::string part = get(pv1, f, c);
        if (part.empty()) continue;
        if (!out.empty()) out += ' ';
        out += part;
      }
      return out;
    };
    std::string current = place(3), prior = place(6);
    if (!current.empty() || !prior.empty()) {
      key("location");
      w_.StartArray();
      int n = 0;
      for (auto [text, f, state] : {std::tuple{current, 3, "active"}, std::tuple{prior, 6, "completed"}}) {
        if (text.empty()) continue;
        w_.StartObject();
        key("location");
        w_.StartObject();
        field("display", text);
        w_.EndObject();
        field("status", state);
        w_.EndObject();
        map_location(at(".location[" + std::to_string(n++) + "]"), v2_location(pv1, static_cast<std::size_t>(f)));
      }
      w_.EndArray();
    }
  }
  end_entry();
}

void Builder::write_report(const Segment& obr, const std::string& uuid, const std::vector<std::string>& obx_uuids, const std::string* patient,
                           const std::string* encounter) {
  begin_entry("DiagnosticReport", uuid);
  map_location(prefix_, v2_location(obr));
  // OBR-2 placer, OBR-3 filler order number (EI.1, EI.2 namespace).
  {
    static const Coding placer{"http://terminology.hl7.org/CodeSystem/v2-0203", "PLAC", "Placer Identifier"};
    static const Coding filler{"http://terminology.hl7.org/CodeSystem/v2-0203", "FILL", "Filler Identifier"};
    bool open = false;
    int n = 0;
    for (auto [f, type] : {std::pair{std::size_t{2}, &placer}, std::pair{std::size_t{3}, &filler}}) {
      std::string value = get(obr, f, 1);
      if (value.empty()) continue;
      if (!open) {
        key("identifier");
        w_.StartArray();
        open = true;
      }
      w_.StartObject();
      std::string uid = get(obr, f, 3), uid_type = get(obr, f, 4);
      if (!uid.empty() && (uid_type.empty() || iequals(uid_type, "ISO")) && is_oid(uid)) field("system", "urn:oid:" + uid);
      field("value", value);
      codeable("type", *type);
      w_.EndObject();
      map_location(at(".identifier[" + std::to_string(n++) + "]"), v2_location(obr, f));
    }
    if (open) w_.EndArray();
  }
  std::string status = "unknown";
  if (get(obr, 25).empty()) {
    warn(v2_location(obr, 25), "hl7v2-status-missing", "OBR-25 result status is empty; DiagnosticReport.status is unknown");
  } else if (auto c = lookup(t_.report_status, obr, 25, "hl7v2-report-status-unmapped", true)) {
    status = c->code;
  }
  field("status", status);
  map_location(at(".status"), v2_location(obr, 25));
  if (cwe_present(obr, 4)) {
    key("code");
    write_cwe(obr, 4, 1);
    map_location(at(".code"), v2_location(obr, 4));
  } else {
    error(v2_location(obr, 4), "required", "hl7v2-required-field",
          "OBR-4 universal service identifier is required to build DiagnosticReport.code");
  }
  if (patient) reference("subject", *patient);
  if (encounter) reference("encounter", *encounter);
  if (auto when = date_field(obr, 7, false)) {
    field("effectiveDateTime", *when);
    map_location(at(".effectiveDateTime"), v2_location(obr, 7));
  }
  if (!obx_uuids.empty()) {
    key("result");
    w_.StartArray();
    for (std::size_t i = 0; i < obx_uuids.size(); ++i) {
      w_.StartObject();
      field("reference", "urn:uuid:" + obx_uuids[i]);
      w_.EndObject();
    }
    w_.EndArray();
  }
  end_entry();
}

// OBX-5 by OBX-2 value type. Returns false when the value type is not mapped.
bool Builder::write_obx_value(const Segment& obx) {
  std::string type = get(obx, 2);
  std::size_t reps = obx.repetition_count(5);
  if (reps == 0 || (reps == 1 && get(obx, 5, 1).empty() && get(obx, 5, 2).empty() && get(obx, 5, 4).empty()))
    return true;
  const std::string loc5 = v2_location(obx, 5);
  const std::string& base = prefix_;
  if (reps > 1 && type != "ST" && type != "TX" && type != "FT" && type != "CE" && type != "CWE")
    warn(loc5, "hl7v2-repeated-value", "OBX-5 repeats; only the first repetition is mapped for this value type");
  if (type == "NM") {
    auto number = fhir_decimal(get(obx, 5, 1));
    if (!number) {
      error(loc5, "value", "hl7v2-nm-not-numeric", "OBX-2 is NM but OBX-5 is not a number");
      return true;
    }
    key("valueQuantity");
    w_.StartObject();
    write_quantity_body(*number, obx, 6);
    w_.EndObject();
    map_location(base + ".valueQuantity", loc5);
    return true;
  }
  if (type == "CE" || type == "CWE" || type == "CNE" || type == "CF") {
    key("valueCodeableConcept");
    write_cwe(obx, 5, 1);
    map_location(base + ".valueCodeableConcept", loc5);
    return true;
  }
  if (type == "ST" || type == "TX" || type == "FT") {
    std::string text;
    for (std::size_t r = 1; r <= reps; ++r) {
      std::string part = obx.value(5, 1, 1, r);  // not trimmed: text keeps its layout
      if (r > 1) text += '\n';
      text += part;
    }
    std::string_view t = trim(text);
    if (t.empty()) return true;
    key("valueString");
    str(t);
    map_location(base + ".valueString", loc5);
    return true;
  }
  if (type == "IS" || type == "ID") {
    std::string code = as_code(get(obx, 5, 1));
    key("valueCodeableConcept");
    w_.StartObject();
    key("coding");
    w_.StartArray();
    coding(Coding{"", code, ""});
    w_.EndArray();
    w_.EndObject();
    map_location(base + ".valueCodeableConcept", loc5);
    return true;
  }
  if (type == "CQ") {
    auto number = fhir_decimal(get(obx, 5, 1));
    if (!number) {
      error(loc5, "value", "hl7v2-nm-not-numeric", "OBX-2 is CQ but OBX-5.1 is not a number");
      return true;
    }
    key("valueQuantity");
    w_.StartObject();
    key("value");
    w_.RawValue(number->data(), number->size(), rapidjson::kNumberType);
    std::string unit = get(obx, 5, 2, 1);
    field("unit", unit.empty() ? get(obx, 6, 1) : unit);
    w_.EndObject();
    map_location(base + ".valueQuantity", loc5);
    return true;
  }
  if (type == "SN") {
    // SN: 1 comparator, 2 first number, 3 separator/suffix, 4 second number.
    std::string comparator = get(obx, 5, 1), n1 = get(obx, 5, 2), separator = get(obx, 5, 3), n2 = get(obx, 5, 4);
    auto a = fhir_decimal(n1);
    auto b = fhir_decimal(n2);
    if (separator.empty() && n2.empty() && a) {
      bool fhir_comparator = comparator == "<" || comparator == ">" || comparator == "<=" || comparator == ">=";
      if (comparator.empty() || comparator == "=" || fhir_comparator) {
        key("valueQuantity");
        w_.StartObject();
        write_quantity_body(*a, obx, 6);
        if (fhir_comparator) field("comparator", comparator);
        w_.EndObject();
        map_location(base + ".valueQuantity", loc5);
        return true;
      }
    }
    if (separator == "-" && a && b && comparator.empty()) {
      key("valueRange");
      w_.StartObject();
      key("low");
      w_.StartObject();
      write_quantity_body(*a, obx, 6);
      w_.EndObject();
      key("high");
      w_.StartObject();
      write_quantity_body(*b, obx, 6);
      w_.EndObject();
      w_.EndObject();
      map_location(base + ".valueRange", loc5);
      return true;
    }
    if ((separator == ":" || separator == "/") && a && b && comparator.empty()) {
      key("valueRatio");
      w_.StartObject();
      key("numerator");
      w_.StartObject();
      key("value");
      w_.RawValue(a->data(), a->size(), rapidjson::kNumberType);
      w_.EndObject();
      key("denominator");
      w_.StartObject();
      key("value");
      w_.RawValue(b->data(), b->size(), rapidjson::kNumberType);
      w_.EndObject();
      w_.EndObject();
      map_location(base + ".valueRatio", loc5);
      return true;
    }
    // Anything else (e.g. "2+", "<>5", a titre written oddly) is kept as text, unchanged.
    std::string text = comparator + n1 + separator + n2;
    if (text.empty()) return true;
    key("valueString");
    str(text);
    map_location(base + ".valueString", loc5);
    return true;
  }
  if (type == "DT" || type == "TS" || type == "DTM") {
    if (auto when = date_field(obx, 5, type == "DT")) {
      key("valueDateTime");
      str(*when);
      map_location(base + ".valueDateTime", loc5);
    }
    return true;
  }
  return false;
}

// OBX-7 "low-high", "<high", ">low", else text.
void Builder::write_reference_range(const Segment& obx) {
  std::string range = get(obx, 7);
  if (range.empty()) return;
  std::optional<std::string> low, high;
  std::string_view r = range;
  if (r.size() > 1 && (r[0] == '<' || r[0] == '>')) {
    bool less = r[0] == '<';
    std::string_view rest = r.substr(1);
    if (!rest.empty() && rest[0] == '=') rest.remove_prefix(1);
    auto v = fhir_decimal(rest);
    if (v) (less ? high : low) = v;
  } else {
    std::size_t dash = r.find('-', 1);  // a leading '-' is a sign
    if (dash != std::string_view::npos) {
      low = fhir_decimal(r.substr(0, dash));
      high = fhir_decimal(r.substr(dash + 1));
      if (!low || !high) low.reset(), high.reset();
    }
  }
  key("referenceRange");
  w_.StartArray();
  w_.StartObject();
  if (low) {
    key("low");
    w_.StartObject();
    write_quantity_body(*low, obx, 6);
    w_.EndObject();
  }
  if (high) {
    key("high");
    w_.StartObject();
    write_quantity_body(*high, obx, 6);
    w_.EndObject();
  }
  if (!low && !high) field("text", range);
  w_.EndObject();
  w_.EndArray();
  map_location(prefix_ + ".referenceRange[0]", v2_location(obx, 7));
}

void Builder::write_observation(const Segment& obx, const std::string& uuid, const Segment* obr,
                                const std::vector<const Segment*>& notes, const std::string* patient,
                                const std::string* encounter) {
  begin_entry("Observation", uuid);
  map_location(prefix_, v2_location(obx));
  // OBX-11 result status; Observation.status is required.
  std::string status = "unknown";
  if (get(obx, 11).empty()) {
    warn(v2_location(obx, 11), "hl7v2-status-missing", "OBX-11 result status is empty; Observation.status is unknown");
  } else if (auto c = lookup(t_.observation_status, obx, 11, "hl7v2-observation-status-unmapped", true)) {
    status = c->code;
  }
  field("status", status);
  map_location(at(".status"), v2_location(obx, 11));
  if (cwe_present(obx, 3)) {
    key("code");
    write_cwe(obx, 3, 1);
    map_location(at(".code"), v2_location(obx, 3));
  } else {
    error(v2_location(obx, 3), "required", "hl7v2-required-field",
          "OBX-3 observation identifier is required to build Observation.code");
  }
  if (patient) reference("subject", *patient);
  if (encounter) reference("encounter", *encounter);
  // OBX-14 observation time, else the report's OBR-7.
  std::optional<std::string> when = date_field(obx, 14, false);
  if (when) {
    map_location(at(".effectiveDateTime"), v2_location(obx, 14));
  } else if (obr) {
    when = date_field(*obr, 7, false);
    if (when) map_location(at(".effectiveDateTime"), v2_location(*obr, 7));
  }
  if (when) field("effectiveDateTime", *when);
  if (!write_obx_value(obx))
    warn(v2_location(obx, 2), "hl7v2-value-type-unmapped", "this OBX-2 value type is not mapped; the value is left out");
  // OBX-8 abnormal flags.
  {
    bool open = false;
    int n = 0;
    for (std::size_t r = 1; r <= obx.repetition_count(8); ++r) {
      std::string flag = as_code(get(obx, 8, 1, 1, r));
      if (flag.empty()) continue;
      if (!open) {
        key("interpretation");
        w_.StartArray();
        open = true;
      }
      auto it = t_.abnormal_flags.find(flag);
      if (it != t_.abnormal_flags.end()) {
        codeable_body(it->second);
      } else {
        w_.StartObject();
        field("text", flag);
        w_.EndObject();
      }
      map_location(at(".interpretation[" + std::to_string(n++) + "]"), v2_location(obx, 8));
    }
    if (open) w_.EndArray();
  }
  write_reference_range(obx);
  // NTE-3 comments after the OBX.
  std::vector<std::pair<std::string, const Segment*>> note_texts;
  for (const Segment* nte : notes) {
    std::string text;
    for (std::size_t r = 1; r <= nte->repetition_count(3); ++r) {
      if (r > 1) text += '\n';
      text += nte->value(3, 1, 1, r);
    }
    std::string_view t = trim(text);
    if (!t.empty()) note_texts.emplace_back(std::string(t), nte);
  }
  if (!note_texts.empty()) {
    key("note");
    w_.StartArray();
    int n = 0;
    for (const auto& [text, nte] : note_texts) {
      w_.StartObject();
      field("text", text);
      w_.EndObject();
      map_location(at(".note[" + std::to_string(n++) + "]"), v2_location(*nte, 3));
    }
    w_.EndArray();
  }
  end_entry();
}

}  // namespace
}  // namespace tellonce::hl7v2

namespace tellonce::hl7v2 {
namespace {

Result<Converted> Builder::run() {
  const Segment& msh = m_.msh();
  std::string message_code = m_.message_code(), trigger = m_.trigger_event();
  auto event = t_.events.find(message_code + "^" + trigger);
  if (message_code.empty() || trigger.empty() || event == t_.events.end())
    return Failure::permanent(
        Errc::unsupported,
        Issue{Severity::error, "not-supported",
              "this message type and trigger event (MSH-9) is not one the converter maps to FHIR; "
              "docs/hl7v2-mapping.md lists those it does",
              "MSH^1^9", "hl7v2-unsupported-event"});
  const EventRule& rule = event->second;
  out_.event = event->first;
  std::string control_id = m_.control_id();
  if (control_id.empty())
    return Failure::permanent(Errc::invalid,
                              Issue{Severity::error, "required",
                                    "MSH-10 message control id is required (it identifies the message and its resends)",
                                    "MSH^1^10", "hl7v2-required-field"});
  {
    std::string key = get(msh, 3) + '|' + get(msh, 4) + '|' + control_id;
    seed_.a = fnv(key, 0xcbf29ce484222325ULL);
    seed_.b = fnv(key, 0x84222325cbf29ce4ULL);
  }
  assume_uk_time_ = iequals(get(msh, 17), "GBR");

  // Segments by role. Z-segments are tolerated silently; other segments the converter does not
  // map are reported once per segment id as information.
  const auto& segments = m_.segments();
  std::unordered_set<std::string_view> mapped{"MSH", "EVN", "PID", "PD1", "PV1", "MRG", "SFT"};
  if (rule.kind == "oru") mapped.insert({"OBR", "OBX", "NTE"});
  std::unordered_set<std::string_view> reported;
  for (const Segment& s : segments) {
    std::string_view id = s.id();
    if (mapped.count(id) || (!id.empty() && id[0] == 'Z')) continue;
    if (reported.insert(id).second)
      out_.warnings.push_back(Issue{Severity::information, "informational",
                                    "this segment is not mapped to FHIR by the converter", v2_location(s),
                                    "hl7v2-segment-not-mapped"});
  }

  std::vector<std::string> focus;
  const Segment* pid = m_.first("PID");
  const Segment* pd1 = m_.first("PD1");
  const Segment* pv1 = m_.first("PV1");
  auto required_segment = [&](std::string_view id) {
    return Failure::permanent(Errc::invalid, Issue{Severity::error, "required",
                                                   "a segment this message needs is missing",
                                                   std::string(id) + "^1", "hl7v2-required-segment"});
  };

  if (rule.kind == "adt" || rule.kind == "patient") {
    if (!pid) return required_segment("PID");
    std::string patient = uuid_of(seed_, "Patient/1");
    write_patient(*pid, patient, pd1, nullptr, nullptr);
    if (rule.kind == "adt" && pv1) {
      std::string encounter = uuid_of(seed_, "Encounter/1");
      write_encounter(*pv1, encounter, rule.encounter_status, &patient);
      focus.push_back(rule.focus == "encounter" ? encounter : patient);
    } else {
      if (rule.kind == "adt")
        warn("PV1^1", "hl7v2-no-visit", "the message has no PV1 segment, so no Encounter was built");
      focus.push_back(patient);
    }
  } else if (rule.kind == "merge") {
    // Each PID is followed (before the next PID) by its MRG, and optionally a PD1.
    std::size_t group = 0;
    for (std::size_t i = 0; i < segments.size(); ++i) {
      if (segments[i].id() != "PID") continue;
      const Segment* mrg = nullptr;
      const Segment* group_pd1 = nullptr;
      for (std::size_t j = i + 1; j < segments.size() && segments[j].id() != "PID"; ++j) {
        if (segments[j].id() == "MRG" && !mrg) mrg = &segments[j];
        if (segments[j].id() == "PD1" && !group_pd1) group_pd1 = &segments[j];
      }
      ++group;
      if (!mrg) return required_segment("MRG");
      if (get(*mrg, 1).empty() && get(*mrg, 4).empty())
        error(v2_location(*mrg, 1), "required", "hl7v2-required-field",
              "MRG-1 prior patient identifier list is required for a merge");
      if (!get(*mrg, 5).empty())
        warn(v2_location(*mrg, 5), "hl7v2-field-not-mapped", "MRG-5 prior visit number is not used by a patient merge");
      std::string survivor = uuid_of(seed_, "Patient/" + std::to_string(group));
      std::string merged = uuid_of(seed_, "Patient/" + std::to_string(group) + "/merged");
      write_patient(segments[i], survivor, group_pd1, &merged, nullptr);
      write_merged_patient(*mrg, merged, survivor);
      focus.push_back(survivor);
    }
    if (group == 0) return required_segment("PID");
  } else {  // oru
    const std::string* patient = nullptr;
    const std::string* encounter = nullptr;
    std::string patient_uuid, encounter_uuid;
    if (pid) {
      patient_uuid = uuid_of(seed_, "Patient/1");
      write_patient(*pid, patient_uuid, pd1, nullptr, nullptr);
      patient = &patient_uuid;
    }
    if (pv1) {
      encounter_uuid = uuid_of(seed_, "Encounter/1");
      write_encounter(*pv1, encounter_uuid, "unknown", patient);
      encounter = &encounter_uuid;
    }
    // OBX (with its NTEs) belongs to the OBR before it; an OBX before any OBR stands alone.
    struct ResultEntry {
      const Segment* obx;
      std::vector<const Segment*> notes;
      std::string uuid;
    };
    struct Report {
      const Segment* obr;
      std::vector<ResultEntry> results;
    };
    std::vector<Report> reports;
    std::vector<ResultEntry> loose;
    ResultEntry* last = nullptr;
    for (const Segment& s : segments) {
      std::string_view id = s.id();
      if (id == "OBR") {
        reports.push_back(Report{&s, {}});
        last = nullptr;
      } else if (id == "OBX") {
        auto& list = reports.empty() ? loose : reports.back().results;
        list.push_back(ResultEntry{&s, {}, uuid_of(seed_, "OBX/" + std::to_string(s.position()))});
        last = &list.back();
      } else if (id == "NTE") {
        if (last) last->notes.push_back(&s);
      } else if (id != "PRT") {
        last = nullptr;
      }
    }
    if (reports.empty() && loose.empty()) return required_segment("OBR");
    for (const auto& r : loose) {
      write_observation(*r.obx, r.uuid, nullptr, r.notes, patient, encounter);
      focus.push_back(r.uuid);
    }
    std::size_t n = 0;
    std::vector<std::string> report_focus;
    for (const auto& report : reports) {
      std::string uuid = uuid_of(seed_, "OBR/" + std::to_string(++n));
      std::vector<std::string> uuids;
      for (const auto& r : report.results) uuids.push_back(r.uuid);
      write_report(*report.obr, uuid, uuids, patient, encounter);
      for (const auto& r : report.results) write_observation(*r.obx, r.uuid, report.obr, r.notes, patient, encounter);
      report_focus.push_back(uuid);
    }
    // The focus is the reports; observations outside any report only when there is none.
    if (!report_focus.empty()) focus = std::move(report_focus);
  }

  if (!errors_.empty()) {
    Failure failure;
    failure.code = Errc::invalid;
    failure.kind = Failure::Kind::permanent;
    failure.issues = std::move(errors_);
    return failure;
  }
  out_.bundle_json = write_header(focus);
  return std::move(out_);
}

std::string Builder::write_header(const std::vector<std::string>& focus) {
  const Segment& msh = m_.msh();
  rapidjson::StringBuffer buffer;
  buffer.Reserve(entries_.GetSize() + 1024);
  JsonWriter w(buffer);
  auto put = [&](std::string_view k, std::string_view v) {
    if (v.empty()) return;
    w.Key(k.data(), static_cast<rapidjson::SizeType>(k.size()));
    w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
  };
  auto obj_key = [&](std::string_view k) { w.Key(k.data(), static_cast<rapidjson::SizeType>(k.size())); };
  const std::string bundle_id = uuid_of(seed_, "Bundle");
  const std::string header_id = uuid_of(seed_, "MessageHeader");

  w.StartObject();
  put("resourceType", "Bundle");
  put("id", bundle_id);
  obj_key("identifier");
  w.StartObject();
  put("value", m_.control_id());
  w.EndObject();
  out_.locations.emplace_back("Bundle.identifier", "MSH^1^10");
  put("type", "message");
  {
    std::string raw = get(msh, 7);
    if (auto d = parse_dtm(raw); d && d->precision >= 6 && (d->has_offset || assume_uk_time_)) {
      put("timestamp", format_datetime(*d, assume_uk_time_, nullptr, true));
      out_.locations.emplace_back("Bundle.timestamp", "MSH^1^7");
    }
  }
  obj_key("entry");
  w.StartArray();
  w.StartObject();
  put("fullUrl", "urn:uuid:" + header_id);
  obj_key("resource");
  w.StartObject();
  put("resourceType", "MessageHeader");
  put("id", header_id);
  obj_key("eventCoding");
  w.StartObject();
  put("system", "http://terminology.hl7.org/CodeSystem/v2-0003");
  put("code", m_.trigger_event());
  w.EndObject();
  out_.locations.emplace_back("Bundle.entry[0].resource.eventCoding", "MSH^1^9");
  // destination: MSH-5 receiving application, MSH-6 receiving facility.
  {
    std::string to_app = get(msh, 5), to_facility = get(msh, 6);
    std::string to = endpoint(msh, 5, "application");
    if (to.empty()) to = endpoint(msh, 6, "facility");
    if (!to.empty()) {
      obj_key("destination");
      w.StartArray();
      w.StartObject();
      put("name", to_app);
      put("endpoint", to);
      if (!to_facility.empty()) {
        obj_key("receiver");
        w.StartObject();
        put("type", "Organization");
        obj_key("identifier");
        w.StartObject();
        put("system", identifier_system("organization", "", get(msh, 6, 2), get(msh, 6, 3), "", to_facility));
        put("value", to_facility);
        w.EndObject();
        w.EndObject();
      }
      w.EndObject();
      w.EndArray();
      out_.locations.emplace_back("Bundle.entry[0].resource.destination[0]", "MSH^1^5");
      out_.locations.emplace_back("Bundle.entry[0].resource.destination[0].receiver", "MSH^1^6");
    }
  }
  // sender: MSH-4 sending facility (an ODS code in NHS feeds).
  {
    std::string facility = get(msh, 4);
    if (!facility.empty()) {
      obj_key("sender");
      w.StartObject();
      put("type", "Organization");
      obj_key("identifier");
      w.StartObject();
      put("system", identifier_system("organization", "", get(msh, 4, 2), get(msh, 4, 3), "", facility));
      put("value", facility);
      w.EndObject();
      w.EndObject();
      out_.locations.emplace_back("Bundle.entry[0].resource.sender", "MSH^1^4");
    }
  }
  // source: MSH-3 sending application (endpoint required by FHIR), SFT-3 software.
  {
    obj_key("source");
    w.StartObject();
    put("name", get(msh, 3));
    if (const Segment* sft = m_.first("SFT")) {
      put("software", get(*sft, 3));
      put("version", get(*sft, 2));
    }
    std::string from = endpoint(msh, 3, "application");
    if (from.empty()) from = endpoint(msh, 4, "facility");
    if (from.empty()) from = "urn:tellonce:hl7v2:application:unknown";
    put("endpoint", from);
    w.EndObject();
    out_.locations.emplace_back("Bundle.entry[0].resource.source", "MSH^1^3");
  }
  if (!focus.empty()) {
    obj_key("focus");
    w.StartArray();
    for (const auto& f : focus) {
      w.StartObject();
      put("reference", "urn:uuid:" + f);
      w.EndObject();
    }
    w.EndArray();
  }
  w.EndObject();  // resource
  w.EndObject();  // entry
  // The resource entries were written by their own writer as "{...},{...}"; RawValue places the
  // whole run after the header entry (the writer adds the one separating comma).
  if (entries_.GetSize() > 0) w.RawValue(entries_.GetString(), entries_.GetSize(), rapidjson::kObjectType);
  w.EndArray();
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

class Converter final : public V2ToFhir {
 public:
  explicit Converter(Tables tables) : tables_(std::move(tables)) {}

  Result<Converted> convert(const Message& message) const override {
    try {
      if (message.segments().empty() || message.segments().front().id() != "MSH")
        return Failure::permanent(Errc::malformed, Issue{Severity::error, "structure", "the message does not start with MSH",
                                                         "MSH^1", "hl7v2-msh"});
      Builder builder(tables_, message);
      return builder.run();
    } catch (...) {
      return Failure::permanent(Errc::internal, Issue{Severity::fatal, "exception",
                                                      "the converter failed unexpectedly on this message", "MSH^1",
                                                      "hl7v2-internal"});
    }
  }

 private:
  Tables tables_;
};

}  // namespace

std::string v2_location_for(const Converted& converted, std::string_view fhir_location) {
  std::size_t best = 0;
  const std::string* found = nullptr;
  for (const auto& [prefix, v2] : converted.locations) {
    if (prefix.size() < best || prefix.size() > fhir_location.size()) continue;
    if (fhir_location.compare(0, prefix.size(), prefix) != 0) continue;
    if (prefix.size() < fhir_location.size()) {
      char next = fhir_location[prefix.size()];
      if (next != '.' && next != '[') continue;
    }
    if (!found || prefix.size() > best) {
      best = prefix.size();
      found = &v2;
    }
  }
  return found ? *found : std::string();
}

std::unique_ptr<V2ToFhir> V2ToFhir::load(const std::filesystem::path& tables_dir) {
  return std::make_unique<Converter>(load_tables(tables_dir));
}

}  // namespace tellonce::hl7v2
