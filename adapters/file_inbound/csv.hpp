// A CSV reader for partners' spreadsheet exports (RFC 4180 as spreadsheets write it): a header
// row, commas, fields in double quotes that may hold commas, quotes ("") and line breaks, CRLF
// or LF line endings, an optional UTF-8 byte order mark. Lenient where spreadsheets are: a quote
// inside an unquoted field is kept as it is, and text after a closing quote is kept too.
//
// Row numbers are the ones a spreadsheet shows: the header is row 1, the first data row is row 2,
// and a line break inside a quoted field does not start a new row. Blank rows are skipped (but
// counted, so later numbers still match the spreadsheet).
//
// Pure functions: no I/O, no logging, safe from any thread. Errors are values; their words never
// quote the file's contents.
#pragma once

#include "tellonce/error.hpp"

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tellonce::csv {

struct Row {
  int number = 0;                  // spreadsheet row number (header = 1)
  std::string raw;                 // the row's bytes as they were in the file, with its line ending
  std::vector<std::string> cells;  // unquoted
};

struct Table {
  std::vector<std::string> header;  // column names, trimmed
  std::string header_raw;           // the header's bytes (without the byte order mark), with its line ending
  std::vector<Row> rows;            // data rows, blank ones left out
};

struct Limits {
  std::size_t max_columns = 1000;
  std::size_t max_rows = 1000000;
};

// Whether `text` is well-formed UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF).
bool is_utf8(std::string_view text);

// Reads a whole file. Fails (Errc::malformed, one issue in words for people) when the text is not
// UTF-8, has no header row, has a header with an empty or repeated column name, ends inside a
// quoted field, or is over the limits.
Result<Table> read(std::string_view text, const Limits& limits = {});

// Column names compare trimmed and ignoring ASCII case ("NHS Number" is "nhs number").
bool same_column(std::string_view a, std::string_view b);

}  // namespace tellonce::csv
