// UCUM (the Unified Code for Units of Measure) unit expressions, checked by a hand-written
// parser of UCUM's grammar: terms joined by '.' and '/', a leading '/', parentheses, exponents
// (m2, s-1, 10*3), integer factors, annotations ({cells}), and atoms with SI prefixes where
// UCUM allows them (mg, uL, mm[Hg]). Atoms come from a built-in table of UCUM's base units and
// the common derived, clinical and customary ones; an atom outside it is reported as unknown.
// Pure functions: thread-safe, no allocation unless something is wrong. Never throws.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace tellonce::ucum {

struct SyntaxProblem {
  std::size_t offset = 0;  // where in the code the problem starts
  std::string what;        // "unknown unit 'mgg'", "unbalanced ')'" (quotes at most 40 characters)
};

// nullopt when `code` is a valid UCUM expression the table knows every atom of.
std::optional<SyntaxProblem> check_unit(std::string_view code);

// An atom of the table, with `metric` telling whether it takes prefixes (g, L: yes; h, %: no).
bool is_atom(std::string_view atom, bool* metric = nullptr);

}  // namespace tellonce::ucum
