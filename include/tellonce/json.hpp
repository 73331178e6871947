// Strict JSON intake for FHIR bodies and the OperationOutcome that answers bad ones.
#pragma once

#include "tellonce/error.hpp"

#include <rapidjson/document.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace tellonce {

struct JsonLimits {
  std::size_t max_bytes = 10 * 1024 * 1024;
  unsigned max_depth = 64;
};

// Parses UTF-8 JSON, rejecting invalid UTF-8, NUL bytes, trailing garbage and nesting deeper
// than the limit. Errors carry line and column in the diagnostics and "(body)" as location.
// The Document's strings point into a copy of the body held by its own allocator: a value
// copied into another Document shares them (RapidJSON's constant strings), so copy with
// SetString(..., allocator) where the copy must outlive this Document.
Result<rapidjson::Document> parse_json(std::string_view body, const JsonLimits& limits = {});
// The same into a caller's document, so the hot path can give it an allocator of its own
// (see Pipeline::accept). On failure doc holds nothing useful.
Result<void> parse_json_into(rapidjson::Document& doc, std::string_view body, const JsonLimits& limits = {});

namespace outcome_limits {
// Each text of an issue (diagnostics, location, code, rule) is cut to this many bytes.
inline constexpr std::size_t max_text_bytes = 2048;
// No answer is longer: whatever issues do not fit are counted in one closing issue.
inline constexpr std::size_t max_answer_bytes = 1024 * 1024;
}  // namespace outcome_limits

// FHIR OperationOutcome JSON for a list of issues (one issue entry per problem, in order),
// at most outcome_limits::max_answer_bytes long whatever the issues hold.
std::string operation_outcome_json(const std::vector<Issue>& issues);

// Appends s as a JSON string literal (with quotes) to out.
void append_json_string(std::string& out, std::string_view s);

namespace json_detail {
// The first and the last sizeof(Word) of n >= sizeof(Word) bytes, compared as two words each.
template <class Word>
inline bool ends_match(const char* a, const char* b, std::size_t n) {
  Word x, y, u, v;
  std::memcpy(&x, a, sizeof x);
  std::memcpy(&y, b, sizeof y);
  std::memcpy(&u, a + n - sizeof u, sizeof u);
  std::memcpy(&v, b + n - sizeof v, sizeof v);
  return x == y && u == v;
}
}  // namespace json_detail

// Whether n bytes at a and at b are the same. Names and codes are mostly short: these are
// compared in two or four word loads, not by a call into memcmp (the validator compares
// member names for every member it reads).
inline bool same_bytes(const char* a, const char* b, std::size_t n) {
  if (n >= 8)
    return json_detail::ends_match<std::uint64_t>(a, b, n) && (n <= 16 || std::memcmp(a + 8, b + 8, n - 16) == 0);
  if (n >= 4) return json_detail::ends_match<std::uint32_t>(a, b, n);
  for (std::size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return false;
  return true;
}

// Member lookup without allocation: nullptr when v is not an object or has no such member.
const rapidjson::Value* json_member(const rapidjson::Value& v, std::string_view name);
// The string's text; empty unless v is a string.
std::string_view json_string(const rapidjson::Value* v);

// "1:17" style position of a byte offset in text.
std::string line_column(std::string_view text, std::size_t offset);

}  // namespace tellonce
