#include "file_reading.hpp"

#include "tellonce/json.hpp"
#include "tellonce/message.hpp"

#include <algorithm>

namespace tellonce {
namespace {

bool ends_with_ci(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && csv::same_column(s.substr(s.size() - suffix.size()), suffix);
}

std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

}  // namespace

void tidy(FileReport& r) {
  std::stable_sort(r.problems.begin(), r.problems.end(), [](const RowReport& a, const RowReport& b) { return a.row < b.row; });
  std::vector<RowReport> once;
  std::size_t row_start = 0;  // where the current row's problems begin in `once`
  for (auto& p : r.problems) {
    if (once.empty() || once.back().row != p.row) row_start = once.size();
    if (std::none_of(once.begin() + static_cast<std::ptrdiff_t>(row_start), once.end(),
                     [&](const RowReport& q) { return q.column == p.column && q.problem == p.problem; }))
      once.push_back(std::move(p));
  }
  r.problems = std::move(once);
}

std::size_t FileReport::bad_rows() const {
  std::vector<int> rows;
  for (const auto& p : problems)
    if (p.row > 0) rows.push_back(p.row);
  std::sort(rows.begin(), rows.end());
  return static_cast<std::size_t>(std::unique(rows.begin(), rows.end()) - rows.begin());
}

std::string report_csv(const FileReport& r) {
  std::string out = "row,column,problem\r\n";
  for (const auto& p : r.problems)
    out += (p.row > 0 ? std::to_string(p.row) : std::string("file")) + "," +
           csv_cell(p.column.empty() ? (p.row > 0 ? "(whole row)" : "") : p.column) + "," + csv_cell(p.problem) + "\r\n";
  return out;
}

std::string report_json(const FileReport& r) {
  std::string out = "{\"file\":";
  append_json_string(out, r.file);
  out += ",\"sha256\":\"" + r.sha256 + "\",\"format\":\"" + r.format + "\",\"outcome\":\"" +
         (r.rejected ? "rejected" : "processed") + "\",\"rows\":" + std::to_string(r.rows) +
         ",\"accepted\":" + std::to_string(r.accepted) + ",\"already_received\":" + std::to_string(r.duplicates) +
         ",\"bad_rows\":" + std::to_string(r.bad_rows()) + ",\"problems\":[";
  bool first = true;
  for (const auto& p : r.problems) {
    out += first ? "{" : ",{";
    first = false;
    out += "\"row\":" + std::to_string(p.row) + ",\"column\":";
    append_json_string(out, p.column);
    out += ",\"problem\":";
    append_json_string(out, p.problem);
    out += "}";
  }
  return out + "]}\n";
}

std::optional<FileFormat> format_of(const FileInboundSettings& s, const std::string& name) {
  if (s.format != FileFormat::by_extension) return s.format;
  if (ends_with_ci(name, ".csv")) return FileFormat::csv;
  if (ends_with_ci(name, ".ndjson") || ends_with_ci(name, ".jsonl")) return FileFormat::ndjson;
  return std::nullopt;
}

PreparedFile prepare_file(const FileInboundSettings& s, const std::string& name, std::string_view bytes) {
  PreparedFile out;
  FileReport& rep = out.report;
  rep.file = name;
  rep.sha256 = sha256_hex(bytes);
  auto reject = [&](std::string why) {
    rep.rejected = true;
    rep.problems.push_back({0, "", std::move(why)});
    return std::move(out);
  };
  auto format = format_of(s, name);
  if (!format) return reject("this channel takes .csv and .ndjson files only");
  rep.format = *format == FileFormat::csv ? "csv" : "ndjson";

  if (*format == FileFormat::csv) {
    if (!s.mapping) return reject("this channel has no mapping for CSV files: send NDJSON, or ask for a mapping");
    auto table = csv::read(bytes);
    if (!table) return reject(table.error().issues.empty() ? "the file cannot be read" : table.error().issues[0].diagnostics);
    auto missing = csvmap::missing_columns(*s.mapping, table->header);
    if (!missing.empty()) {
      std::string names;
      for (const auto& c : missing) names += (names.empty() ? "'" : ", '") + c + "'";
      return reject("the header row lacks column" + std::string(missing.size() > 1 ? "s " : " ") + names +
                    ": check the column names in the first row");
    }
    rep.rows = table->rows.size();
    for (const auto& row : table->rows) {
      std::string identity = rep.sha256 + ":" + std::to_string(row.number);
      auto mapped = csvmap::map_row(*s.mapping, table->header, row, identity);
      if (!mapped.problems.empty()) {
        for (auto& p : mapped.problems) rep.problems.push_back({row.number, std::move(p.column), std::move(p.problem)});
        continue;
      }
      PreparedRecord rec;
      rec.row = row.number;
      rec.body = std::move(mapped.json);
      rec.original_bytes = table->header_raw;
      if (!rec.original_bytes.ends_with('\n')) rec.original_bytes += "\r\n";
      rec.original_bytes += row.raw;
      rec.idempotency_key = std::move(identity);
      rec.placements = std::move(mapped.placements);
      out.records.push_back(std::move(rec));
    }
    return out;
  }

  if (!csv::is_utf8(bytes)) return reject("the file is not saved as UTF-8 text");
  int line = 0;
  std::size_t pos = 0;
  if (bytes.starts_with("\xEF\xBB\xBF")) pos = 3;
  while (pos < bytes.size()) {
    auto nl = bytes.find('\n', pos);
    std::string_view text = bytes.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? bytes.size() : nl + 1;
    ++line;
    if (text.ends_with('\r')) text.remove_suffix(1);
    if (std::all_of(text.begin(), text.end(), [](char c) { return c == ' ' || c == '\t'; })) continue;
    ++rep.rows;
    PreparedRecord rec;
    rec.row = line;
    rec.body = std::string(text);
    rec.idempotency_key = rep.sha256 + ":" + std::to_string(line);
    out.records.push_back(std::move(rec));
  }
  if (rep.rows == 0) return reject("the file holds no records");
  return out;
}

void add_refusal(FileReport& report, const PreparedRecord& record, const std::vector<Issue>& issues) {
  bool any = false;
  for (const auto& issue : issues) {
    if (!issue.is_error()) continue;
    any = true;
    if (report.problems.size() > 10000) break;  // a report a person can still open
    std::string column = csvmap::column_for(record.placements, issue.location);
    std::string words = issue.location == "(body)" ? "is not a FHIR resource written as one line of JSON"
                                                   : csvmap::words_for(issue);
    report.problems.push_back({record.row, std::move(column), std::move(words)});
  }
  if (!any) report.problems.push_back({record.row, "", "was refused by the broker"});
}

}  // namespace tellonce
