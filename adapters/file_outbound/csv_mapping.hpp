// The `file` outbound adapter's reverse mapping: a FHIR JSON record into one CSV row, and an
// RFC 4180 field writer. Pure functions; safe from any thread.
//
// A path is element names joined by dots, each optionally followed by one selector:
//   birthDate                   the element's value
//   name[1].family              the second item of a repeating element (0-based)
//   identifier[system=https://fhir.nhs.uk/Id/nhs-number].value
//                               the first item whose `system` equals that text
// A repeating element without a selector takes its first item, except at the end of the path,
// where all of its values are joined by spaces (name.given: "Jane Ann"). A path that leads
// nowhere renders an empty cell; one that leads to an element with children is a failure of
// that record (the mapping names a structure, not a value).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace tellonce::file_outbound {

struct PathStep {
  std::string name;
  std::optional<std::size_t> index;
  std::string filter_key, filter_value;  // filter when filter_key is not empty
};
using CsvPath = std::vector<PathStep>;

// The path, or why it is not one (for a config problem).
std::variant<CsvPath, std::string> parse_csv_path(std::string_view text);

struct CompiledColumn {
  std::string header;
  CsvPath path;
};

struct CsvMapping {
  std::string resource_type;
  std::vector<CompiledColumn> columns;
};

// Appends `value` as one RFC 4180 field: quoted (inner quotes doubled) when it holds a comma, a
// quote, CR or LF, or begins or ends with a space; as it is otherwise.
void append_csv_field(std::string& out, std::string_view value);

// The header row, CRLF-terminated.
std::string csv_header(const CsvMapping& mapping);

// The record's row, CRLF-terminated; or no row and why it cannot be rendered (never quoting a value).
struct RenderedRow {
  std::optional<std::string> row;
  std::string why;
};
RenderedRow render_csv_row(const CsvMapping& mapping, std::string_view json);

}  // namespace tellonce::file_outbound
