// The declarative CSV mapping of a `file` inbound channel (config `mapping:`; the language is
// documented in config/README.md, "file inbound"): which FHIR resource(s) each row becomes, and
// for each resource a list of fields, each a FHIR path filled from a column (as text, a date, an
// NHS number, a number, a yes/no, or a code through a lookup table), from a fixed value, a fixed
// code, or a reference to another resource of the same row.
//
// parse_mapping() reads the section and reports every bad key or value at its config path.
// map_row() is pure and thread-safe; its problems name the column and say what is wrong in words
// a volunteer understands, never quoting the cell.
#pragma once

#include "csv.hpp"
#include "tellonce/error.hpp"
#include "tellonce/settings_reader.hpp"

#include <optional>
#include <string>
#include <vector>

namespace tellonce::csvmap {

struct Code {
  std::string value;  // the cell as the partner writes it (compared trimmed, ignoring case)
  std::string code, system, display;
};

enum class FieldKind { text, date, nhs_number, integer, decimal, boolean, coding };

struct PathStep {
  std::string name;
  int index = -1;  // [n]: an array element; -1: a plain member
};

struct Field {
  std::string path;                  // within the resource, as written: "for.identifier.value"
  std::vector<PathStep> steps;
  std::string column;                // empty: a fixed value, code or reference
  std::string value;                 // fixed value (no column)
  FieldKind kind = FieldKind::text;
  std::vector<std::string> date_formats{"dd/mm/yyyy", "yyyy-mm-dd"};
  std::vector<Code> codes;           // lookup: the cell must be one of these
  std::optional<Code> fixed_code;    // `code:` (+ `system:`, `display:`) without a column
  std::string reference_to;          // the name of another resource of the row
  std::string if_column;             // a fixed value, code or reference only when this column has a value
  bool required = false;             // an empty cell is a problem (else the element is left out)
};

struct Resource {
  std::string name;  // for reference_to; defaults to the type
  std::string type;  // resourceType
  std::vector<Field> fields;
};

enum class BundleKind { none, transaction, message };

struct Mapping {
  BundleKind bundle = BundleKind::none;
  std::string event_system, event_code;  // message Bundles: MessageHeader.eventCoding
  std::vector<Resource> resources;
  std::vector<std::string> columns() const;  // every column the mapping reads, once each
};

// Reads `mapping:`; every problem is recorded on the reader (at its path). Returns nullopt when
// there was any.
std::optional<Mapping> parse_mapping(SettingsReader& reader);

// Where in the FHIR record a column went: the Bundle entry (-1: the record itself) and the path
// with its indices left out ("for.identifier.value"), so a validator issue can name the column.
struct Placement {
  int entry = -1;
  std::string path;
  std::string column;
};

struct RowProblem {
  std::string column;   // empty: the row as a whole
  std::string problem;  // words for people; never the cell's value
};

struct MappedRow {
  std::string json;                  // the FHIR record (empty when problems)
  std::vector<Placement> placements;
  std::vector<RowProblem> problems;
};

// Columns the mapping needs that the header lacks.
std::vector<std::string> missing_columns(const Mapping& m, const std::vector<std::string>& header);

// One row as FHIR. `identity` seeds the record's fullUrls and ids (the same row always gives the
// same record): "<sha256 of the file>:<row number>".
MappedRow map_row(const Mapping& m, const std::vector<std::string>& header, const csv::Row& row,
                  const std::string& identity);

// The column a validator issue at `location` (Bundle.entry[1].resource.code... or Task.for...)
// concerns, or "" when no column filled it.
std::string column_for(const std::vector<Placement>& placements, const std::string& location);

// A validator or pipeline issue in a volunteer's words, naming no value.
std::string words_for(const Issue& issue);

// "943 476 5919" -> "9434765919"; nullopt unless 10 digits (spaces and hyphens allowed).
std::optional<std::string> nhs_number_digits(std::string_view cell);
// A date in one of the formats ("dd/mm/yyyy", "d/m/yyyy" is accepted by it too, "yyyy-mm-dd",
// "dd-mm-yyyy", "dd.mm.yyyy") as FHIR yyyy-mm-dd; nullopt when it is none of them or no real date.
std::optional<std::string> parse_date(std::string_view cell, const std::vector<std::string>& formats);

}  // namespace tellonce::csvmap
