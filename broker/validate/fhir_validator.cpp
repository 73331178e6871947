// The broker's validator: the structural engine plus the FHIR invariants, conformance rules and UK rules.
// Kept apart from engine.cpp so tools and tests can use the engine without the rule sets.
#include "broker/validate/rules.hpp"
#include "tellonce/validator.hpp"

namespace tellonce {

std::unique_ptr<Validator> make_fhir_validator(const ValidatorSettings& settings) {
  std::vector<std::unique_ptr<RuleSet>> rules;
  rules.push_back(make_fhir_invariants());
  rules.push_back(make_conformance_rules(settings.schema_dir));
  rules.push_back(make_uk_rules(UkRuleSettings{settings.schema_dir, settings.nhs_number_check_digit_is_error}));
  return make_structural_validator(settings, std::move(rules));
}

}  // namespace tellonce
