#include "csv_mapping.hpp"

#include "tellonce/json.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <charconv>

namespace tellonce::file_outbound {
namespace {

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

std::string primitive_text(const rapidjson::Value& v) {
  if (v.IsString()) return std::string(v.GetString(), v.GetStringLength());
  if (v.IsBool()) return v.GetBool() ? "true" : "false";
  if (v.IsNumber()) {  // as JSON writes it, so 1.50 stays a decimal and integers stay integers
    rapidjson::StringBuffer buffer;
    rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
    v.Accept(writer);
    return buffer.GetString();
  }
  return "";
}

bool matches(const rapidjson::Value& item, const PathStep& step) {
  auto* member = json_member(item, step.filter_key);
  return member && member->IsString() && json_string(member) == step.filter_value;
}

}  // namespace

std::variant<CsvPath, std::string> parse_csv_path(std::string_view text) {
  CsvPath path;
  std::size_t i = 0;
  if (text.empty()) return std::string("the path is empty");
  while (true) {
    PathStep step;
    const std::size_t start = i;
    while (i < text.size() && is_name_char(text[i])) ++i;
    if (i == start) return "expected an element name at character " + std::to_string(start + 1);
    step.name = std::string(text.substr(start, i - start));
    if (i < text.size() && text[i] == '[') {
      const auto close = text.find(']', i);
      if (close == std::string_view::npos) return std::string("a '[' without its ']'");
      const auto inside = text.substr(i + 1, close - i - 1);
      const auto eq = inside.find('=');
      if (eq == std::string_view::npos) {
        std::size_t n = 0;
        auto [end, ec] = std::from_chars(inside.data(), inside.data() + inside.size(), n);
        if (ec != std::errc() || end != inside.data() + inside.size() || inside.empty())
          return "'[" + std::string(inside) + "]' is neither an index such as [0] nor a filter such as [system=...]";
        step.index = n;
      } else {
        step.filter_key = std::string(inside.substr(0, eq));
        step.filter_value = std::string(inside.substr(eq + 1));
        bool key_ok = !step.filter_key.empty();
        for (char c : step.filter_key) key_ok = key_ok && is_name_char(c);
        if (!key_ok) return "'[" + std::string(inside) + "]': a filter is [element=text]";
      }
      i = close + 1;
    }
    path.push_back(std::move(step));
    if (i == text.size()) return path;
    if (text[i] != '.') return "unexpected '" + std::string(1, text[i]) + "' at character " + std::to_string(i + 1);
    ++i;
  }
}

void append_csv_field(std::string& out, std::string_view value) {
  const bool quote = value.find_first_of(",\"\r\n") != std::string_view::npos ||
                     (!value.empty() && (value.front() == ' ' || value.back() == ' '));
  if (!quote) {
    out += value;
    return;
  }
  out += '"';
  for (char c : value) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
}

std::string csv_header(const CsvMapping& mapping) {
  std::string out;
  for (std::size_t i = 0; i < mapping.columns.size(); ++i) {
    if (i) out += ',';
    append_csv_field(out, mapping.columns[i].header);
  }
  out += "\r\n";
  return out;
}

RenderedRow render_csv_row(const CsvMapping& mapping, std::string_view json) {
  RenderedRow out;
  auto doc = parse_json(json);
  if (!doc) {
    out.why = "the record is not JSON, so the CSV mapping cannot render it";
    return out;
  }
  const auto type = json_string(json_member(*doc, "resourceType"));
  if (type != mapping.resource_type) {
    out.why = "the CSV mapping renders " + mapping.resource_type + " records, not " +
              (type.empty() ? std::string("this record") : std::string(type));
    return out;
  }
  std::string row;
  for (std::size_t c = 0; c < mapping.columns.size(); ++c) {
    const auto& column = mapping.columns[c];
    const rapidjson::Value* at = &*doc;
    std::string cell;
    for (std::size_t s = 0; at && s < column.path.size(); ++s) {
      const auto& step = column.path[s];
      const bool last = s + 1 == column.path.size();
      at = json_member(*at, step.name);
      if (!at) break;
      if (!at->IsArray()) {
        // A single item answers [0] and a filter it matches.
        if ((step.index && *step.index != 0) || (!step.filter_key.empty() && !matches(*at, step))) at = nullptr;
        continue;
      }
      const auto& items = *at;
      at = nullptr;
      if (step.index) {
        if (*step.index < items.Size()) at = &items[static_cast<rapidjson::SizeType>(*step.index)];
      } else if (!step.filter_key.empty()) {
        for (const auto& item : items.GetArray())
          if (matches(item, step)) {
            at = &item;
            break;
          }
      } else if (last) {
        for (const auto& item : items.GetArray()) {
          if (item.IsObject() || item.IsArray()) {
            out.why = "column '" + column.header + "': its path names an element with children, not a value";
            return out;
          }
          if (!cell.empty()) cell += ' ';
          cell += primitive_text(item);
        }
      } else if (!items.Empty()) {
        at = &items[0];
      }
      if (last && !step.index && step.filter_key.empty()) {
        at = nullptr;  // the joined values are the cell
      }
    }
    if (at) {
      if (at->IsObject() || at->IsArray()) {
        out.why = "column '" + column.header + "': its path names an element with children, not a value";
        return out;
      }
      cell = primitive_text(*at);
    }
    if (c) row += ',';
    append_csv_field(row, cell);
  }
  row += "\r\n";
  out.row = std::move(row);
  return out;
}

}  // namespace tellonce::file_outbound
