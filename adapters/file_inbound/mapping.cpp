#include "mapping.hpp"

#include "tellonce/json.hpp"
#include "tellonce/message.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>

namespace tellonce::csvmap {
namespace {

using rapidjson::Value;
using Alloc = rapidjson::Document::AllocatorType;

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool is_name(std::string_view s) {
  if (s.empty() || !std::isalpha(static_cast<unsigned char>(s.front()))) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

// "for.identifier[0].value" -> steps; empty when the path is not one.
std::vector<PathStep> parse_path(std::string_view path) {
  std::vector<PathStep> steps;
  while (!path.empty()) {
    auto dot = path.find('.');
    std::string_view part = path.substr(0, dot);
    PathStep step;
    if (auto open = part.find('['); open != std::string_view::npos) {
      if (!part.ends_with("]")) return {};
      auto digits = part.substr(open + 1, part.size() - open - 2);
      int n = -1;
      auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
      if (ec != std::errc{} || p != digits.data() + digits.size() || n < 0 || n > 99) return {};
      step.index = n;
      part = part.substr(0, open);
    }
    if (!is_name(part)) return {};
    step.name = std::string(part);
    steps.push_back(std::move(step));
    if (dot == std::string_view::npos) break;
    path.remove_prefix(dot + 1);
    if (path.empty()) return {};
  }
  return steps;
}

std::string without_indices(std::string_view path) {
  std::string out;
  bool in_index = false;
  for (char c : path) {
    if (c == '[') in_index = true;
    else if (c == ']') in_index = false;
    else if (!in_index) out += c;
  }
  return out;
}

bool lower_equal(std::string_view a, std::string_view b) { return csv::same_column(a, b); }

const std::vector<std::string> kKnownFormats{"dd/mm/yyyy", "yyyy-mm-dd", "dd-mm-yyyy", "dd.mm.yyyy"};

// Where the mapping writes: the value at `steps` under `root`, made on the way. nullptr when
// the path runs through something that is not an object (two fields disagree).
Value* slot(Value& root, const std::vector<PathStep>& steps, Alloc& a) {
  Value* at = &root;
  for (const auto& step : steps) {
    if (!at->IsObject()) return nullptr;
    auto it = at->FindMember(step.name.c_str());
    if (it == at->MemberEnd()) {
      at->AddMember(Value(step.name.c_str(), a), step.index >= 0 ? Value(rapidjson::kArrayType) : Value(rapidjson::kObjectType), a);
      it = at->FindMember(step.name.c_str());
    }
    at = &it->value;
    if (step.index >= 0) {
      if (!at->IsArray()) return nullptr;
      while (at->Size() <= static_cast<unsigned>(step.index)) at->PushBack(Value(rapidjson::kObjectType), a);
      at = &(*at)[static_cast<unsigned>(step.index)];
    }
  }
  return at;
}

std::string uuid_for(const std::string& identity, std::size_t n) {
  std::string h = sha256_hex(identity + "/" + std::to_string(n));
  h[12] = '5';  // name-based
  h[16] = "89ab"[std::stoi(h.substr(16, 1), nullptr, 16) & 3];
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) + "-" + h.substr(20, 12);
}

Value coding_value(const Code& c, Alloc& a) {
  Value v(rapidjson::kObjectType);
  if (!c.system.empty()) v.AddMember("system", Value(c.system.c_str(), a), a);
  v.AddMember("code", Value(c.code.c_str(), a), a);
  if (!c.display.empty()) v.AddMember("display", Value(c.display.c_str(), a), a);
  return v;
}

std::string list_of_values(const std::vector<Code>& codes) {
  std::string out;
  for (std::size_t i = 0; i < codes.size() && i < 12; ++i) out += (i ? ", " : "") + codes[i].value;
  if (codes.size() > 12) out += ", ...";
  return out;
}

}  // namespace

std::vector<std::string> Mapping::columns() const {
  std::vector<std::string> out;
  for (const auto& r : resources)
    for (const auto& f : r.fields)
      for (const auto* c : {&f.column, &f.if_column})
        if (!c->empty() &&
            std::none_of(out.begin(), out.end(), [&](const std::string& have) { return csv::same_column(have, *c); }))
          out.push_back(*c);
  return out;
}

std::optional<Mapping> parse_mapping(SettingsReader& reader) {
  Mapping m;
  bool ok = true;
  auto bad = [&](SettingsReader& r, const std::string& key, const std::string& msg) {
    r.problem(key, msg);
    ok = false;
  };
  std::string bundle = reader.string("bundle", "none");
  if (bundle == "none") m.bundle = BundleKind::none;
  else if (bundle == "transaction") m.bundle = BundleKind::transaction;
  else if (bundle == "message") m.bundle = BundleKind::message;
  else bad(reader, "bundle", "must be none, transaction or message");
  if (auto ev = reader.child("event")) {
    m.event_system = ev->required_string("system");
    m.event_code = ev->required_string("code");
    ev->finish();
    if (!ev->ok()) ok = false;
  }
  if (m.bundle == BundleKind::message && m.event_code.empty())
    bad(reader, "bundle", "a message Bundle needs `event: {system, code}` (its MessageHeader.eventCoding)");
  if (m.bundle != BundleKind::message && !m.event_code.empty())
    bad(reader, "event", "only a message Bundle (bundle: message) has an event");

  auto resources = reader.sequence("resources");
  if (resources.empty()) bad(reader, "resources", "list at least one resource each row becomes");
  if (m.bundle == BundleKind::none && resources.size() > 1)
    bad(reader, "bundle", "a row becomes " + std::to_string(resources.size()) +
                              " resources: put them in a Bundle (bundle: transaction or message)");
  std::vector<std::pair<SettingsReader, std::string>> references;  // checked once every name is known
  for (auto& rr : resources) {
    Resource res;
    res.type = rr.required_string("type");
    if (!res.type.empty() && (!std::isupper(static_cast<unsigned char>(res.type[0])) || !is_name(res.type)))
      bad(rr, "type", "must be a FHIR resource type such as Task or Observation");
    res.name = rr.string("name", res.type);
    for (const auto& other : m.resources)
      if (other.name == res.name) bad(rr, "name", "two resources are called '" + res.name + "': give one a `name`");
    for (auto& fr : rr.sequence("fields")) {
      Field f;
      f.path = fr.required_string("path");
      f.steps = parse_path(f.path);
      if (!f.path.empty() && f.steps.empty())
        bad(fr, "path", "must be FHIR element names joined by dots, with [n] for a list item: for.identifier.value");
      else if (!f.steps.empty() && (f.steps[0].name == "resourceType"))
        bad(fr, "path", "resourceType comes from the resource's `type`");
      f.column = fr.string("column", "");
      f.value = fr.string("value", "");
      f.reference_to = fr.string("reference_to", "");
      if (!f.reference_to.empty()) references.emplace_back(fr, f.reference_to);
      std::string code = fr.string("code", "");
      std::string system = fr.string("system", "");
      std::string display = fr.string("display", "");
      if (!code.empty()) f.fixed_code = Code{"", code, system, display};
      else if (!system.empty() || !display.empty()) bad(fr, system.empty() ? "display" : "system", "goes with `code:`");
      f.if_column = fr.string("if_column", "");
      if (!f.if_column.empty() && !f.column.empty()) bad(fr, "if_column", "only for a fixed value, code or reference");
      int sources = !f.column.empty() + fr.has("value") + f.fixed_code.has_value() + !f.reference_to.empty();
      if (sources != 1)
        bad(fr, "", "each field takes exactly one of `column`, `value`, `code` or `reference_to`");
      std::string as = fr.string("as", "");
      if (as.empty()) f.kind = FieldKind::text;  // with `codes:`, the code as text
      else if (as == "text") f.kind = FieldKind::text;
      else if (as == "date") f.kind = FieldKind::date;
      else if (as == "nhs-number") f.kind = FieldKind::nhs_number;
      else if (as == "integer") f.kind = FieldKind::integer;
      else if (as == "decimal") f.kind = FieldKind::decimal;
      else if (as == "boolean") f.kind = FieldKind::boolean;
      else if (as == "coding") f.kind = FieldKind::coding;
      else bad(fr, "as", "must be text, date, nhs-number, integer, decimal, boolean or coding");
      if (fr.has("date_formats")) {
        f.date_formats = fr.strings("date_formats");
        for (const auto& fmt : f.date_formats)
          if (std::find(kKnownFormats.begin(), kKnownFormats.end(), fmt) == kKnownFormats.end())
            bad(fr, "date_formats", "'" + fmt + "' is not one of dd/mm/yyyy, yyyy-mm-dd, dd-mm-yyyy, dd.mm.yyyy");
        if (f.kind != FieldKind::date) bad(fr, "date_formats", "only for `as: date`");
      }
      for (auto& cr : fr.sequence("codes")) {
        Code c;
        c.value = cr.required_string("value");
        c.code = cr.required_string("code");
        c.system = cr.string("system", "");
        c.display = cr.string("display", "");
        cr.finish();
        if (!cr.ok()) ok = false;
        f.codes.push_back(std::move(c));
      }
      if (f.kind == FieldKind::coding && f.codes.empty())
        bad(fr, "codes", "`as: coding` needs a `codes:` list (cell value -> code, system, display)");
      if (!f.codes.empty() && f.column.empty()) bad(fr, "codes", "a lookup needs a `column`");
      if (!f.codes.empty() && f.kind != FieldKind::coding && f.kind != FieldKind::text)
        bad(fr, "codes", "a lookup writes a code (as: text) or a Coding (as: coding)");
      f.required = fr.boolean("required", false);
      if (f.required && f.column.empty()) bad(fr, "required", "only a field read from a column can be required");
      fr.finish();
      if (!fr.ok()) ok = false;
      res.fields.push_back(std::move(f));
    }
    if (res.fields.empty()) bad(rr, "fields", "list the fields of " + res.type);
    rr.finish();
    if (!rr.ok()) ok = false;
    m.resources.push_back(std::move(res));
  }
  for (auto& ref : references) {
    const std::string& to = ref.second;
    if (std::none_of(m.resources.begin(), m.resources.end(), [&](const Resource& r) { return r.name == to; }))
      bad(ref.first, "reference_to", "no resource of this mapping is called '" + to + "'");
  }
  reader.finish();
  if (!reader.ok()) ok = false;
  if (!ok) return std::nullopt;
  return m;
}

std::vector<std::string> missing_columns(const Mapping& m, const std::vector<std::string>& header) {
  std::vector<std::string> out;
  for (const auto& c : m.columns())
    if (std::none_of(header.begin(), header.end(), [&](const std::string& h) { return csv::same_column(h, c); }))
      out.push_back(c);
  return out;
}

std::optional<std::string> nhs_number_digits(std::string_view cell) {
  std::string digits;
  for (char c : trim(cell)) {
    if (std::isdigit(static_cast<unsigned char>(c))) digits += c;
    else if (c != ' ' && c != '-') return std::nullopt;
  }
  if (digits.size() != 10) return std::nullopt;
  return digits;
}

std::optional<std::string> parse_date(std::string_view cell, const std::vector<std::string>& formats) {
  cell = trim(cell);
  auto number = [](std::string_view s, int min_len, int max_len) -> int {
    if (static_cast<int>(s.size()) < min_len || static_cast<int>(s.size()) > max_len) return -1;
    int n = 0;
    for (char c : s) {
      if (!std::isdigit(static_cast<unsigned char>(c))) return -1;
      n = n * 10 + (c - '0');
    }
    return n;
  };
  for (const auto& fmt : formats) {
    int y = -1, m = -1, d = -1;
    if (fmt == "yyyy-mm-dd") {
      if (cell.size() != 10 || cell[4] != '-' || cell[7] != '-') continue;
      y = number(cell.substr(0, 4), 4, 4), m = number(cell.substr(5, 2), 2, 2), d = number(cell.substr(8, 2), 2, 2);
    } else {
      char sep = fmt[2];
      auto a = cell.find(sep);
      if (a == std::string_view::npos) continue;
      auto b = cell.find(sep, a + 1);
      if (b == std::string_view::npos) continue;
      d = number(cell.substr(0, a), 1, 2), m = number(cell.substr(a + 1, b - a - 1), 1, 2), y = number(cell.substr(b + 1), 4, 4);
    }
    if (y < 1900 || m < 1 || m > 12 || d < 1) continue;
    static constexpr int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > days[m - 1] + (m == 2 && leap)) continue;
    char out[40];
    std::snprintf(out, sizeof out, "%04d-%02d-%02d", y, m, d);
    return std::string(out);
  }
  return std::nullopt;
}

MappedRow map_row(const Mapping& m, const std::vector<std::string>& header, const csv::Row& row,
                  const std::string& identity) {
  MappedRow out;
  rapidjson::Document doc;
  auto& a = doc.GetAllocator();
  auto cell_of = [&](const std::string& column) -> std::string_view {
    for (std::size_t i = 0; i < header.size(); ++i)
      if (csv::same_column(header[i], column)) return i < row.cells.size() ? trim(row.cells[i]) : std::string_view{};
    return {};
  };
  if (row.cells.size() > header.size()) {
    bool extra = false;
    for (std::size_t i = header.size(); i < row.cells.size(); ++i) extra |= !trim(row.cells[i]).empty();
    if (extra)
      out.problems.push_back({"", "has more cells than the header has columns (a comma too many, or a value that "
                                  "needs \"quotes\" around it)"});
  }
  std::vector<std::string> urls;
  for (std::size_t i = 0; i < m.resources.size(); ++i) urls.push_back("urn:uuid:" + uuid_for(identity, i));

  std::vector<Value> resources;
  for (std::size_t ri = 0; ri < m.resources.size(); ++ri) {
    const auto& res = m.resources[ri];
    Value r(rapidjson::kObjectType);
    r.AddMember("resourceType", Value(res.type.c_str(), a), a);
    const int entry = m.bundle == BundleKind::none ? -1 : static_cast<int>(ri) + (m.bundle == BundleKind::message);
    for (const auto& f : res.fields) {
      Value v;
      if (!f.column.empty()) {
        auto cell = cell_of(f.column);
        if (cell.empty()) {
          if (f.required) out.problems.push_back({f.column, "is empty, but every row needs it"});
          continue;
        }
        switch (f.kind) {
          case FieldKind::text:
            if (!f.codes.empty()) {
              auto it = std::find_if(f.codes.begin(), f.codes.end(), [&](const Code& c) { return lower_equal(c.value, cell); });
              if (it == f.codes.end()) {
                out.problems.push_back({f.column, "is not one of the values this column takes: " + list_of_values(f.codes)});
                continue;
              }
              v.SetString(it->code.c_str(), a);
            } else {
              v.SetString(cell.data(), static_cast<rapidjson::SizeType>(cell.size()), a);
            }
            break;
          case FieldKind::coding: {
            auto it = std::find_if(f.codes.begin(), f.codes.end(), [&](const Code& c) { return lower_equal(c.value, cell); });
            if (it == f.codes.end()) {
              out.problems.push_back({f.column, "is not one of the values this column takes: " + list_of_values(f.codes)});
              continue;
            }
            v = coding_value(*it, a);
            break;
          }
          case FieldKind::date: {
            auto d = parse_date(cell, f.date_formats);
            if (!d) {
              std::string shapes;
              for (const auto& fmt : f.date_formats) shapes += (shapes.empty() ? "" : " or ") + fmt;
              out.problems.push_back({f.column, "is not a date written as " + shapes + " (for example 31/01/2025)"});
              continue;
            }
            v.SetString(d->c_str(), a);
            break;
          }
          case FieldKind::nhs_number: {
            auto d = nhs_number_digits(cell);
            if (!d) {
              out.problems.push_back({f.column, "is not an NHS number: it should be 10 digits (spaces are fine, written like 123 456 7890)"});
              continue;
            }
            v.SetString(d->c_str(), a);
            break;
          }
          case FieldKind::integer: {
            long long n = 0;
            auto [p, ec] = std::from_chars(cell.data(), cell.data() + cell.size(), n);
            if (ec != std::errc{} || p != cell.data() + cell.size() || std::llabs(n) > 2147483647LL) {
              out.problems.push_back({f.column, "is not a whole number"});
              continue;
            }
            v.SetInt64(n);
            break;
          }
          case FieldKind::decimal: {
            double n = 0;
            auto [p, ec] = std::from_chars(cell.data(), cell.data() + cell.size(), n);
            if (ec != std::errc{} || p != cell.data() + cell.size() || !std::isfinite(n)) {
              out.problems.push_back({f.column, "is not a number (use a dot for decimals: 12.5)"});
              continue;
            }
            v.SetDouble(n);
            break;
          }
          case FieldKind::boolean: {
            if (lower_equal(cell, "yes") || lower_equal(cell, "true") || lower_equal(cell, "y")) v.SetBool(true);
            else if (lower_equal(cell, "no") || lower_equal(cell, "false") || lower_equal(cell, "n")) v.SetBool(false);
            else {
              out.problems.push_back({f.column, "should be yes or no"});
              continue;
            }
            break;
          }
        }
        out.placements.push_back({entry, without_indices(f.path), f.column});
      } else if (!f.if_column.empty() && cell_of(f.if_column).empty()) {
        continue;
      } else if (f.fixed_code) {
        v = coding_value(*f.fixed_code, a);
      } else if (!f.reference_to.empty()) {
        for (std::size_t k = 0; k < m.resources.size(); ++k)
          if (m.resources[k].name == f.reference_to) v.SetString(urls[k].c_str(), a);
      } else {
        v.SetString(f.value.c_str(), a);
      }
      Value* at = slot(r, f.steps, a);
      if (!at) {
        out.problems.push_back({f.column, "cannot be placed at " + res.type + "." + f.path +
                                              " (the mapping writes two different things there; tell the broker's team)"});
        continue;
      }
      if (at->IsObject() && v.IsObject()) {  // a Coding into an object another field started
        for (auto& mem : v.GetObject()) at->AddMember(mem.name, mem.value, a);
      } else {
        *at = v;
      }
    }
    resources.push_back(std::move(r));
  }
  if (!out.problems.empty()) return out;

  Value root;
  if (m.bundle == BundleKind::none) {
    root = std::move(resources[0]);
  } else {
    root.SetObject();
    root.AddMember("resourceType", "Bundle", a);
    root.AddMember("id", Value(uuid_for(identity, 1000).c_str(), a), a);
    root.AddMember("type", rapidjson::StringRef(m.bundle == BundleKind::transaction ? "transaction" : "message"), a);
    Value entries(rapidjson::kArrayType);
    if (m.bundle == BundleKind::message) {
      Value header(rapidjson::kObjectType);
      header.AddMember("resourceType", "MessageHeader", a);
      header.AddMember("id", Value(uuid_for(identity, 1001).c_str(), a), a);
      Value event(rapidjson::kObjectType);
      event.AddMember("system", Value(m.event_system.c_str(), a), a);
      event.AddMember("code", Value(m.event_code.c_str(), a), a);
      header.AddMember("eventCoding", event, a);
      Value source(rapidjson::kObjectType);
      source.AddMember("endpoint", "urn:tellonce:file-inbound", a);
      header.AddMember("source", source, a);
      Value focus(rapidjson::kArrayType);
      for (const auto& url : urls) {
        Value ref(rapidjson::kObjectType);
        ref.AddMember("reference", Value(url.c_str(), a), a);
        focus.PushBack(ref, a);
      }
      header.AddMember("focus", focus, a);
      Value e(rapidjson::kObjectType);
      e.AddMember("fullUrl", Value(("urn:uuid:" + uuid_for(identity, 1001)).c_str(), a), a);
      e.AddMember("resource", header, a);
      entries.PushBack(e, a);
    }
    for (std::size_t i = 0; i < resources.size(); ++i) {
      Value e(rapidjson::kObjectType);
      e.AddMember("fullUrl", Value(urls[i].c_str(), a), a);
      e.AddMember("resource", resources[i], a);
      if (m.bundle == BundleKind::transaction) {
        Value req(rapidjson::kObjectType);
        req.AddMember("method", "POST", a);
        req.AddMember("url", Value(m.resources[i].type.c_str(), a), a);
        e.AddMember("request", req, a);
      }
      entries.PushBack(e, a);
    }
    root.AddMember("entry", entries, a);
  }
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  root.Accept(w);
  out.json.assign(buf.GetString(), buf.GetSize());
  return out;
}

std::string column_for(const std::vector<Placement>& placements, const std::string& location) {
  // "Bundle.entry[2].resource.for.identifier[0].value" -> entry 2, "for.identifier.value";
  // "Task.for.identifier.value" -> entry -1, "for.identifier.value".
  int entry = -1;
  std::string_view rest = location;
  if (rest.starts_with("Bundle.entry[")) {
    auto close = rest.find(']');
    if (close == std::string_view::npos) return "";
    std::from_chars(rest.data() + 13, rest.data() + close, entry);
    rest.remove_prefix(close + 1);
    if (!rest.starts_with(".resource.")) return "";
    rest.remove_prefix(10);
  } else if (auto dot = rest.find('.'); dot != std::string_view::npos) {
    rest.remove_prefix(dot + 1);
  } else {
    return "";
  }
  std::string path = without_indices(rest);
  const Placement* best = nullptr;
  for (const auto& p : placements) {
    if (p.entry != entry) continue;
    bool covers = path == p.path || path.starts_with(p.path + ".") || p.path.starts_with(path + ".");
    if (covers && (!best || p.path.size() > best->path.size())) best = &p;
  }
  return best ? best->column : "";
}

std::string words_for(const Issue& issue) {
  // The report is UTF-8 text a partner's tools read: a location that is not (cut short somewhere
  // upstream) is left out rather than written as broken bytes.
  std::string where = issue.location.empty() || !csv::is_utf8(issue.location) ? "" : " (at " + issue.location + ")";
  if (issue.rule.find("nhs-number") != std::string::npos)
    return "is not a valid NHS number: its last digit does not match the others, so there is probably a typing "
           "mistake";
  if (issue.code == "required") return "is missing: the record needs it" + where;
  if (issue.code == "code-invalid") return "is not one of the codes allowed here" + where;
  if (issue.code == "too-long") return "is too long" + where;
  if (issue.code == "duplicate") return "was sent before with different content" + where;
  return "was not accepted by the FHIR check" + where + (issue.rule.empty() ? "" : ", rule " + issue.rule);
}

}  // namespace tellonce::csvmap
