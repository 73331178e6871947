// Hand-written checkers for the FHIR R4 primitive types: the spec's regexes, plus the calendar
// (no 2023-02-30) and integer ranges, without std::regex on the hot path.
#pragma once

#include <rapidjson/document.h>

#include <cstddef>
#include <optional>
#include <string_view>

namespace tellonce::fhir {

enum class Primitive : unsigned char {
  boolean, integer, positive_int, unsigned_int, decimal,
  string, markdown, xhtml, code, id, uri, url, canonical, oid, uuid, base64_binary,
  date, date_time, instant, time,
};

// nullopt for a type name that is not a FHIR R4 primitive.
std::optional<Primitive> primitive_from_name(std::string_view name);

enum class PrimitiveFault : unsigned char {
  none,
  json_type,    // e.g. a number where a string belongs
  format,       // lexical form wrong
  date,         // date/time lexical form wrong or impossible calendar date
  range,        // integer out of range for the type
  too_long,     // a string over FHIR's limit of 1 MB (max_string_characters)
};

// FHIR R4 "Strings SHALL NOT exceed 1MB (1024*1024 characters) in size". Applies to every
// string-valued primitive but base64Binary (attachments) and xhtml (narrative).
inline constexpr std::size_t max_string_characters = 1024 * 1024;
// Characters (code points) in valid UTF-8.
std::size_t utf8_characters(std::string_view s);

// Checks one JSON value (never null or array: the caller handles those) against a primitive type.
PrimitiveFault check_primitive(Primitive type, const rapidjson::Value& value);

// A short phrase for error messages: "a JSON string", "a whole number >= 1" ...
std::string_view expected_form(Primitive type);

// Individually testable lexical checks.
bool is_date(std::string_view s);
bool is_date_time(std::string_view s);
bool is_instant(std::string_view s);
bool is_time(std::string_view s);
bool is_id(std::string_view s);
bool is_code(std::string_view s);

}  // namespace tellonce::fhir
