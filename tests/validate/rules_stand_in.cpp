// Stand-in rule sets for validate_engine_test while broker/validate has no rules sources yet.
#include "validate/rules.hpp"

namespace tellonce {
namespace {
class NoRules : public RuleSet {
 public:
  void check(std::string_view, const rapidjson::Value&, const std::string&, std::vector<Issue>&) const override {}
};
}  // namespace

std::unique_ptr<RuleSet> make_fhir_invariants() { return std::make_unique<NoRules>(); }
std::unique_ptr<RuleSet> make_uk_rules(const UkRuleSettings&) { return std::make_unique<NoRules>(); }

}  // namespace tellonce
