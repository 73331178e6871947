#include "csv.hpp"

#include <algorithm>
#include <cctype>

namespace tellonce::csv {
namespace {

Failure unreadable(std::string words) {
  return Failure::permanent(Errc::malformed, Issue{Severity::error, "structure", std::move(words), "", "csv"});
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool blank(const std::vector<std::string>& cells) {
  return std::all_of(cells.begin(), cells.end(), [](const std::string& c) { return trim(c).empty(); });
}

}  // namespace

bool is_utf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  while (p < end) {
    unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int extra;
    std::uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) extra = 1, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) extra = 2, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) extra = 3, cp = c & 0x07;
    else return false;
    if (end - p <= extra) return false;
    for (int i = 1; i <= extra; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    p += extra + 1;
  }
  return true;
}

bool same_column(std::string_view a, std::string_view b) {
  a = trim(a);
  b = trim(b);
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

Result<Table> read(std::string_view text, const Limits& limits) {
  if (!is_utf8(text))
    return unreadable("the file is not saved as UTF-8 text: save it again as \"CSV UTF-8\" and send it again");
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);

  Table table;
  std::size_t pos = 0;
  int row_number = 0;
  bool have_header = false;
  while (pos < text.size()) {
    const std::size_t start = pos;
    std::vector<std::string> cells;
    std::string cell;
    bool quoted = false;      // inside a quoted field
    bool at_field_start = true;
    bool row_done = false;
    while (pos < text.size() && !row_done) {
      char c = text[pos];
      if (quoted) {
        if (c == '"') {
          if (pos + 1 < text.size() && text[pos + 1] == '"') {
            cell += '"';
            pos += 2;
            continue;
          }
          quoted = false;
          ++pos;
          continue;
        }
        cell += c;
        ++pos;
        continue;
      }
      if (c == '"' && at_field_start) {
        quoted = true;
        at_field_start = false;
        ++pos;
        continue;
      }
      if (c == ',') {
        cells.push_back(std::move(cell));
        cell.clear();
        at_field_start = true;
        if (cells.size() > limits.max_columns)
          return unreadable("a row has more than " + std::to_string(limits.max_columns) + " columns");
        ++pos;
        continue;
      }
      if (c == '\r' || c == '\n') {
        ++pos;
        if (c == '\r' && pos < text.size() && text[pos] == '\n') ++pos;
        row_done = true;
        continue;
      }
      cell += c;
      at_field_start = false;
      ++pos;
    }
    if (quoted)
      return unreadable("row " + std::to_string(row_number + 1) +
                        " opens a quote (\") that is never closed, so the rest of the file cannot be read");
    cells.push_back(std::move(cell));
    ++row_number;
    std::string raw(text.substr(start, pos - start));
    if (!have_header) {
      if (blank(cells)) continue;  // blank lines before the header
      for (auto& name : cells) {
        std::string trimmed(trim(name));
        if (trimmed.empty()) return unreadable("the header row (row " + std::to_string(row_number) + ") has a column without a name");
        for (const auto& seen : table.header)
          if (same_column(seen, trimmed))
            return unreadable("the header row names the column '" + trimmed + "' twice");
        table.header.push_back(std::move(trimmed));
      }
      table.header_raw = std::move(raw);
      have_header = true;
      continue;
    }
    if (blank(cells)) continue;
    if (table.rows.size() == limits.max_rows)
      return unreadable("the file has more than " + std::to_string(limits.max_rows) + " rows: split it into smaller files");
    table.rows.push_back(Row{row_number, std::move(raw), std::move(cells)});
  }
  if (!have_header) return unreadable("the file is empty: it needs a header row naming the columns, then one row per record");
  return table;
}

}  // namespace tellonce::csv
