// Where a record gets validated: FHIR R4 structure, bindings and invariants from the shipped
// definitions, then the shared UK profile rules. The pipeline calls it before acknowledging a
// record; adapters that build FHIR from other formats call it too.
#pragma once

#include "tellonce/error.hpp"

#include <rapidjson/document.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace tellonce {

// Issues one validate() call lists; the rest are counted in one closing issue.
inline constexpr std::size_t max_issues_per_record = 100;

class Validator {
 public:
  virtual ~Validator() = default;
  // Appends the problems found in `resource` (any resource type, Bundles with all their
  // entries and contained resources). Locations start with the resource type, e.g.
  // "Bundle.entry[2].resource.identifier[0].value". At most max_issues_per_record are listed;
  // past that one more issue (rule "issue-limit", an error when any unlisted one is) says how
  // many were left out. Work is linear in the size of `resource`. Thread-safe: called from many
  // threads.
  virtual void validate(const rapidjson::Value& resource, std::vector<Issue>& out) const = 0;
};

struct ValidatorSettings {
  std::filesystem::path schema_dir;      // holds fhir-r4 definitions and profiles/*.json
  bool nhs_number_check_digit_is_error = true;  // else a warning
};

// Compiles the shipped definitions once; throws std::runtime_error on unreadable schemas
// (a start-up error).
std::unique_ptr<Validator> make_fhir_validator(const ValidatorSettings& settings);

class RuleSet;
// The structural engine with the caller's rule sets instead of the shipped ones (tests, tools).
// Reads settings.schema_dir/fhir-r4; throws std::runtime_error like make_fhir_validator.
std::unique_ptr<Validator> make_structural_validator(const ValidatorSettings& settings,
                                                     std::vector<std::unique_ptr<RuleSet>> rules);

}  // namespace tellonce
