// Format checks for UK identifiers and codes, shared by the UK rules, tests and the benchmark.
#pragma once

#include "broker/core/uk_identifiers.hpp"

#include <string_view>

namespace tellonce {

// Ten ASCII digits only (no spaces): the shape an NHS number must have before its check digit.
bool nhs_number_well_formed(std::string_view value);

// SNOMED CT concept id: 6-18 digits, no leading zero, concept partition (00 or 10),
// Verhoeff check digit.
bool snomed_concept_id_valid(std::string_view value);

// True for a post-coordinated expression ("123:456=789"), which has no single check digit.
bool snomed_expression_p(std::string_view value);

}  // namespace tellonce
