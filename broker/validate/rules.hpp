// Rules layered on the structural FHIR engine: the FHIR invariants (ele-1, ext-1, bdl-7 ...)
// and the shared UK profile rules plus partner profile files from schemas/. The engine calls
// every RuleSet once per resource and once per complex-typed element, after its own checks.
#pragma once

#include "tellonce/error.hpp"

#include <rapidjson/document.h>

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tellonce {

class RuleSet {
 public:
  virtual ~RuleSet() = default;
  // `type` is the FHIR type code of `value`: a resource type ("Patient", "Bundle") for a
  // resource, a complex datatype ("Period", "Extension", "Identifier") for an element.
  // `path` is the FHIRPath-style location of `value` ("Bundle.entry[0].resource").
  // Thread-safe; must not allocate when nothing is wrong (it runs on every element).
  virtual void check(std::string_view type, const rapidjson::Value& value, const std::string& path,
                     std::vector<Issue>& out) const = 0;
};

// The FHIR R4 invariants the broker enforces.
std::unique_ptr<RuleSet> make_fhir_invariants();

// Conformance resources against core definitions beyond types and extensions (a
// CapabilityStatement's search parameter types); reads schema_dir/fhir-r4/searchparams.json when
// it is there, throws std::runtime_error naming the file when it is not valid.
std::unique_ptr<RuleSet> make_conformance_rules(const std::filesystem::path& schema_dir);

struct UkRuleSettings {
  std::filesystem::path schema_dir;          // reads schema_dir/uk/*.json and schema_dir/profiles/*.json
  bool nhs_number_check_digit_is_error = true;
};
// UK Core rules and partner profiles; throws std::runtime_error naming the file on a bad profile.
std::unique_ptr<RuleSet> make_uk_rules(const UkRuleSettings& settings);

// Modulus-11 NHS number check (10 digits, check digit valid, not 10).
bool nhs_number_valid(std::string_view digits);

}  // namespace tellonce
