// libFuzzer target: a partner's body through JSON intake, the FHIR validator with the shipped
// schemas, the routing facts and the OperationOutcome answer, as the pipeline runs them.
#include "tellonce/json.hpp"
#include "tellonce/router.hpp"
#include "tellonce/validator.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>
#include <vector>

namespace {

const tellonce::Validator& validator() {
  static auto v = tellonce::make_fhir_validator(
      tellonce::ValidatorSettings{std::filesystem::path(TELLONCE_SOURCE_DIR) / "schemas"});
  return *v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  auto doc = tellonce::parse_json(body);
  if (!doc) {
    (void)tellonce::operation_outcome_json(doc.error().issues);
    return 0;
  }
  std::vector<tellonce::Issue> issues;
  validator().validate(*doc, issues);
  if (issues.size() > tellonce::max_issues_per_record + 1) __builtin_trap();  // the cap is a promise
  (void)tellonce::operation_outcome_json(issues);
  (void)tellonce::read_record_facts(*doc);
  return 0;
}
