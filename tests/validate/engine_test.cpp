// The structural FHIR R4 engine: per check family one record that fails (exact location and
// rule) and one that passes; every shipped sample record passes; the `validate` command.
#include "tellonce/json.hpp"
#include "broker/validate/primitives.hpp"
#include "broker/validate/rules.hpp"
#include "broker/validate/schema.hpp"
#include "broker/validate/validate_command.hpp"
#include "tellonce/validator.hpp"

#include "support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <unistd.h>

namespace tellonce {
namespace {

namespace fs = std::filesystem;

const fs::path shared_data = TELLONCE_SHARED_DATA;
const fs::path schema_dir = fs::path(TELLONCE_SOURCE_DIR) / "schemas";

// Records every rule-set call so tests can see the engine's contract with the rules.
class RecordingRules : public RuleSet {
 public:
  void check(std::string_view type, const rapidjson::Value&, const std::string& path,
             std::vector<Issue>&) const override {
    std::lock_guard lock(mutex_);
    calls_.push_back(std::string(type) + " " + path);
  }
  std::vector<std::string> take() const {
    std::lock_guard lock(mutex_);
    return std::exchange(calls_, {});
  }

 private:
  mutable std::mutex mutex_;
  mutable std::vector<std::string> calls_;
};

RecordingRules* recording = nullptr;

const Validator& engine() {
  static std::unique_ptr<Validator> v = [] {
    std::vector<std::unique_ptr<RuleSet>> rules;
    auto r = std::make_unique<RecordingRules>();
    recording = r.get();
    rules.push_back(std::move(r));
    return make_structural_validator(ValidatorSettings{schema_dir}, std::move(rules));
  }();
  return *v;
}

std::vector<Issue> validate(std::string_view json) {
  auto doc = parse_json(json);
  EXPECT_TRUE(doc.has_value()) << "test JSON is malformed: " << json;
  if (!doc) return {};
  std::vector<Issue> issues;
  engine().validate(*doc, issues);
  return issues;
}

std::string show(const std::vector<Issue>& issues) {
  std::string s;
  for (auto& i : issues) s += i.code + " " + i.location + ": " + i.diagnostics + " [" + i.rule + "]\n";
  return s;
}

void expect_valid(std::string_view json) {
  auto issues = validate(json);
  EXPECT_TRUE(issues.empty()) << json << "\n" << show(issues);
}

// Exactly one issue, at `location`, from `rule`, with issue code `code`.
void expect_one(std::string_view json, std::string_view location, std::string_view rule, std::string_view code) {
  auto issues = validate(json);
  ASSERT_EQ(issues.size(), 1u) << json << "\n" << show(issues);
  EXPECT_EQ(issues[0].location, location) << show(issues);
  EXPECT_EQ(issues[0].rule, rule) << show(issues);
  EXPECT_EQ(issues[0].code, code) << show(issues);
  EXPECT_EQ(issues[0].severity, Severity::error);
}

TEST(Engine, LoadsTheShippedSchemas) {
  EXPECT_NO_THROW(engine());
  EXPECT_THROW(make_structural_validator(ValidatorSettings{"/nonexistent"}, {}), std::runtime_error);
}

TEST(Engine, Cardinality) {
  expect_valid(R"({"resourceType":"Observation","status":"final","code":{"text":"x"}})");
  expect_one(R"({"resourceType":"Observation","code":{"text":"x"}})", "Observation.status",
             "fhir-cardinality", "required");
  // A primitive given only by its extension counts as present.
  expect_valid(R"({"resourceType":"Observation","code":{"text":"x"},
      "_status":{"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/data-absent-reason","valueCode":"unknown"}]}})");
  // ...but under a required binding only the data-absent-reason extension may stand in for the
  // code: any other extension leaves the receiver without one, and without a reason.
  expect_one(R"({"resourceType":"Observation","code":{"text":"x"},
      "_status":{"extension":[{"url":"http://example.org/x","valueString":"y"}]}})",
             "Observation.status", "fhir-binding", "code-invalid");
  expect_one(R"({"resourceType":"AllergyIntolerance","patient":{"reference":"Patient/1"},"category":["food",null],
      "_category":[null,{"extension":[{"url":"http://example.org/x","valueString":"y"}]}]})",
             "AllergyIntolerance.category[1]", "fhir-binding", "code-invalid");
  // A date has no binding to miss: its extensions alone are fine.
  expect_valid(R"({"resourceType":"Patient","_birthDate":{"extension":[{"url":"http://example.org/x","valueString":"y"}]}})");
  expect_one(R"({"resourceType":"Observation","status":"final"})", "Observation.code", "fhir-cardinality",
             "required");
  expect_one(R"({"resourceType":"Patient","birthDate":["2000-01-01"]})", "Patient.birthDate",
             "fhir-cardinality", "structure");
  expect_one(R"({"resourceType":"Patient","name":{"family":"Smith"}})", "Patient.name", "fhir-cardinality",
             "structure");
  expect_one(R"({"resourceType":"Patient","identifier":[]})", "Patient.identifier", "fhir-cardinality",
             "structure");
  expect_one(R"({"resourceType":"Patient","name":[{"given":[]}]})", "Patient.name[0].given",
             "fhir-cardinality", "structure");
  // Required inside a backbone element: Patient.link.other.
  expect_one(R"({"resourceType":"Patient","link":[{"type":"seealso"}]})", "Patient.link[0].other",
             "fhir-cardinality", "required");
}

TEST(Engine, JsonTypes) {
  expect_valid(R"({"resourceType":"Patient","active":true,"multipleBirthInteger":2,
      "maritalStatus":{"text":"married"},"name":[{"family":"Smith","given":["Ann"]}]})");
  expect_one(R"({"resourceType":"Patient","active":"true"})", "Patient.active", "fhir-type", "structure");
  expect_one(R"({"resourceType":"Patient","maritalStatus":"M"})", "Patient.maritalStatus", "fhir-type",
             "structure");
  expect_one(R"({"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":"Patient/1"})",
             "Observation.subject", "fhir-type", "structure");
  expect_one(R"({"resourceType":"Patient","name":[{"given":[7]}]})", "Patient.name[0].given[0]", "fhir-type",
             "structure");
  expect_one(R"({"resourceType":"Patient","multipleBirthInteger":1.5})", "Patient.multipleBirthInteger",
             "fhir-value", "value");
  expect_one(R"({"resourceType":"Patient","multipleBirthInteger":3000000000})", "Patient.multipleBirthInteger",
             "fhir-value", "value");
  expect_one(R"({"resourceType":"Patient","telecom":[{"system":"phone","value":"1","rank":0}]})",
             "Patient.telecom[0].rank", "fhir-value", "value");
  expect_one(R"({"resourceType":"Patient","photo":[{"size":-1}]})", "Patient.photo[0].size", "fhir-value",
             "value");
  expect_one(R"({"resourceType":"Patient","name":[{"family":""}]})", "Patient.name[0].family", "fhir-value",
             "value");
  expect_one(R"({"resourceType":"Patient","active":null})", "Patient.active", "fhir-type", "structure");
}

TEST(Engine, PrimitiveFormats) {
  expect_valid(R"({"resourceType":"Patient","id":"abc-1.2","birthDate":"2024-02-29",
      "meta":{"lastUpdated":"2024-01-01T10:00:00.123+01:00","source":"urn:uuid:9e2b5d8a-5f3c-4a7e-9b1d-0c6f4e2a1b3c"},
      "identifier":[{"system":"urn:oid:2.16.840.1.113883.2.1.4.1","value":"x"}],
      "deceasedDateTime":"2020-05"})");
  expect_one(R"({"resourceType":"Patient","birthDate":"2023-02-30"})", "Patient.birthDate", "fhir-date", "value");
  expect_one(R"({"resourceType":"Patient","birthDate":"2023-13-01"})", "Patient.birthDate", "fhir-date", "value");
  expect_one(R"({"resourceType":"Patient","deceasedDateTime":"2023-01-01T10:00Z"})", "Patient.deceasedDateTime",
             "fhir-date", "value");
  expect_one(R"({"resourceType":"Patient","deceasedDateTime":"2023-01-01T10:00:00"})", "Patient.deceasedDateTime",
             "fhir-date", "value");
  expect_one(R"({"resourceType":"Patient","meta":{"lastUpdated":"2023-01-01"}})", "Patient.meta.lastUpdated",
             "fhir-date", "value");
  expect_one(R"({"resourceType":"Observation","status":"final","code":{"text":"x"},"valueTime":"24:00:00"})",
             "Observation.valueTime", "fhir-date", "value");
  expect_one(R"({"resourceType":"Patient","id":"has space"})", "Patient.id", "fhir-value", "value");
  expect_one(R"({"resourceType":"Patient","identifier":[{"system":"http://x y"}]})", "Patient.identifier[0].system",
             "fhir-value", "value");
  expect_one(R"({"resourceType":"Patient","extension":[{"url":"http://x","valueOid":"urn:oid:1.02"}]})",
             "Patient.extension[0].valueOid", "fhir-value", "value");
  expect_one(R"({"resourceType":"Patient","extension":[{"url":"http://x","valueUuid":"urn:uuid:ABC"}]})",
             "Patient.extension[0].valueUuid", "fhir-value", "value");
  expect_one(R"({"resourceType":"Patient","photo":[{"data":"abc"}]})", "Patient.photo[0].data", "fhir-value",
             "value");
  expect_one(R"({"resourceType":"Patient","language":" en"})", "Patient.language", "fhir-value", "value");
}

TEST(Primitives, LexicalChecks) {
  using namespace fhir;
  EXPECT_TRUE(is_date("2000"));
  EXPECT_TRUE(is_date("2000-02-29"));
  EXPECT_FALSE(is_date("1900-02-29"));
  EXPECT_FALSE(is_date("0000"));
  EXPECT_FALSE(is_date("2000-1-01"));
  EXPECT_TRUE(is_date_time("2015-02-07T13:28:17.239+14:00"));
  EXPECT_FALSE(is_date_time("2015-02-07T13:28:17+14:30"));
  EXPECT_FALSE(is_date_time("2015-02T13:28:17Z"));
  EXPECT_TRUE(is_instant("2015-02-07T13:28:17Z"));
  EXPECT_FALSE(is_instant("2015-02-07"));
  EXPECT_TRUE(is_time("23:59:60.5"));
  EXPECT_FALSE(is_time("23:59"));
  EXPECT_TRUE(is_id(std::string(64, 'a')));
  EXPECT_FALSE(is_id(std::string(65, 'a')));
  EXPECT_TRUE(is_code("a b"));
  EXPECT_FALSE(is_code("a  b"));
  EXPECT_FALSE(is_code("a "));
}

TEST(Engine, UnknownElements) {
  expect_one(R"({"resourceType":"Patient","birthdate":"2000-01-01"})", "Patient.birthdate",
             "fhir-unknown-element", "structure");
  // STU3 Patient.animal is gone in R4.
  expect_one(R"({"resourceType":"Patient","animal":{}})", "Patient.animal", "fhir-unknown-element", "structure");
  expect_one(R"({"resourceType":"Patient","_gender2":{}})", "Patient._gender2", "fhir-unknown-element",
             "structure");
  expect_one(R"({"resourceType":"Patient","_name":[{}]})", "Patient._name", "fhir-unknown-element", "structure");
  expect_one(R"({"resourceType":"Patient","name":[{"famly":"x"}]})", "Patient.name[0].famly",
             "fhir-unknown-element", "structure");
  expect_one(R"({"resourceType":"Observation","status":"final","code":{"text":"x"},"value":1})",
             "Observation.value", "fhir-unknown-element", "structure");
  expect_one(R"({"resourceType":"Patient","fhir_comments":["x"]})", "Patient.fhir_comments",
             "fhir-unknown-element", "structure");
  // Element.id has no "_id" companion, Resource.id has.
  expect_one(R"({"resourceType":"Patient","name":[{"_id":{}}]})", "Patient.name[0]._id", "fhir-unknown-element",
             "structure");
  expect_valid(R"({"resourceType":"Patient","_id":{"extension":[{"url":"http://x","valueBoolean":true}]}})");
  expect_valid(R"({"resourceType":"Patient","name":[{"id":"n1","family":"x"}]})");
}

TEST(Engine, DuplicateProperties) {
  expect_one(R"({"resourceType":"Patient","gender":"male","gender":"female"})", "Patient.gender", "fhir-duplicate",
             "structure");
  expect_valid(R"({"resourceType":"Patient","gender":"male","_gender":{"id":"g"}})");
}

TEST(Engine, PrimitiveArraysWithExtensions) {
  expect_valid(R"({"resourceType":"Patient","name":[{"given":["Ann",null],
      "_given":[null,{"extension":[{"url":"http://x","valueString":"y"}]}]}]})");
  expect_one(R"({"resourceType":"Patient","name":[{"given":["Ann",null]}]})", "Patient.name[0].given[1]",
             "fhir-type", "structure");
  expect_one(R"({"resourceType":"Patient","_birthDate":"x"})", "Patient.birthDate", "fhir-type", "structure");
  expect_one(R"({"resourceType":"Patient","name":[{"given":["Ann","Bo"],"_given":[{"id":"g"}]}]})",
             "Patient.name[0].given", "fhir-cardinality", "structure");
}

TEST(Engine, RequiredBindings) {
  expect_valid(R"({"resourceType":"Patient","gender":"female"})");
  expect_one(R"({"resourceType":"Patient","gender":"woman"})", "Patient.gender", "fhir-binding", "code-invalid");
  const char* cc = R"({"resourceType":"Condition","subject":{"reference":"Patient/1"},"clinicalStatus":%s})";
  auto condition = [&](std::string codings) {
    std::string s = cc;
    return s.replace(s.find("%s"), 2, codings);
  };
  const std::string sys = "http://terminology.hl7.org/CodeSystem/condition-clinical";
  expect_valid(condition(R"({"coding":[{"system":")" + sys + R"(","code":"active"}]})"));
  // One good coding is enough, whatever else is there; a code without a system counts when the
  // set has it.
  expect_valid(condition(R"({"coding":[{"system":")" + sys + R"(","code":"nope"},{"system":")" + sys +
                         R"(","code":"active"}]})"));
  expect_valid(condition(R"({"coding":[{"system":"http://snomed.info/sct","code":"1"},{"code":"active"}]})"));
  // A required binding needs a coding from the set: another system alone, or text alone, fails.
  expect_one(condition(R"({"coding":[{"system":"http://snomed.info/sct","code":"55561003"}]})"),
             "Condition.clinicalStatus.coding[0].system", "fhir-binding", "code-invalid");
  expect_one(condition(R"({"text":"active"})"), "Condition.clinicalStatus", "fhir-binding", "code-invalid");
  expect_one(condition(R"({"coding":[{"code":"current"}]})"), "Condition.clinicalStatus.coding[0].code",
             "fhir-binding", "code-invalid");
  auto issues = validate(condition(R"({"coding":[{"system":"http://snomed.info/sct","code":"1"},{"system":")" +
                                   sys + R"(","code":"nope"}]})"));
  ASSERT_EQ(issues.size(), 2u) << show(issues);
  EXPECT_EQ(issues[0].location, "Condition.clinicalStatus.coding[0].system");
  EXPECT_EQ(issues[1].location, "Condition.clinicalStatus.coding[1].code");
}

TEST(Engine, Choices) {
  expect_valid(R"({"resourceType":"Observation","status":"final","code":{"text":"x"},
      "valueQuantity":{"value":1.5,"unit":"kg"}})");
  expect_one(R"({"resourceType":"Observation","status":"final","code":{"text":"x"},
      "valueString":"a","valueQuantity":{"value":1}})",
             "Observation.valueQuantity", "fhir-choice", "structure");
  // A primitive choice and its own "_" companion are one choice.
  expect_valid(R"({"resourceType":"Observation","status":"final","code":{"text":"x"},
      "valueString":"a","_valueString":{"extension":[{"url":"http://x","valueCode":"b"}]}})");
  // Extension.value[x] with a type R4 does not have.
  expect_one(R"({"resourceType":"Patient","extension":[{"url":"http://x","valueInteger64":"1"}]})",
             "Patient.extension[0].valueInteger64", "fhir-unknown-element", "structure");
}

TEST(Engine, ResourceType) {
  expect_one(R"({"id":"x"})", "resourceType", "fhir-resource-type", "required");
  expect_one(R"({"resourceType":"Patientt"})", "resourceType", "fhir-resource-type", "not-supported");
  expect_one(R"({"resourceType":"HumanName"})", "resourceType", "fhir-resource-type", "structure");
  expect_one(R"({"resourceType":"DomainResource"})", "resourceType", "fhir-resource-type", "structure");
  expect_one(R"({"resourceType":7})", "resourceType", "fhir-resource-type", "structure");
  expect_one(R"([])", "(resource)", "fhir-type", "structure");
  expect_one(R"({"resourceType":"Patient","name":[{"resourceType":"Patient"}]})", "Patient.name[0]", "fhir-type",
             "structure");
}

TEST(Engine, NestedResources) {
  expect_valid(R"({"resourceType":"Bundle","type":"collection","entry":[
      {"resource":{"resourceType":"Patient","id":"p"}},
      {"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"}}}]})");
  expect_one(R"({"resourceType":"Bundle","type":"collection","entry":[
      {"resource":{"resourceType":"Patient","id":"p"}},
      {"resource":{"resourceType":"Patient","identifier":[{"value":7}]}}]})",
             "Bundle.entry[1].resource.identifier[0].value", "fhir-type", "structure");
  expect_one(R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"id":"p"}}]})",
             "Bundle.entry[0].resource.resourceType", "fhir-resource-type", "required");
  expect_one(R"({"resourceType":"Patient","contained":[{"resourceType":"Organization","nme":"x"}]})",
             "Patient.contained[0].nme", "fhir-unknown-element", "structure");
  expect_one(R"({"resourceType":"Parameters","parameter":[{"name":"a",
      "resource":{"resourceType":"Patient","gender":"x"}}]})",
             "Parameters.parameter[0].resource.gender", "fhir-binding", "code-invalid");
  // Recursive backbone (contentReference): Questionnaire.item.item.
  expect_one(R"({"resourceType":"Questionnaire","status":"active","item":[{"linkId":"1","type":"group",
      "item":[{"linkId":"1.1","type":"bogus"}]}]})",
             "Questionnaire.item[0].item[0].type", "fhir-binding", "code-invalid");
}

TEST(Engine, ReportsEveryProblem) {
  auto issues = validate(R"({"resourceType":"Observation","status":"done","valueString":"","foo":1,
      "subject":{"reference":1}})");
  std::vector<std::string> locations;
  for (auto& i : issues) locations.push_back(i.location + " " + i.rule);
  std::vector<std::string> expected = {"Observation.status fhir-binding", "Observation.valueString fhir-value",
                                       "Observation.foo fhir-unknown-element",
                                       "Observation.subject.reference fhir-type",
                                       "Observation.code fhir-cardinality"};
  EXPECT_EQ(locations, expected) << show(issues);
}

// Extensible and preferred bindings: a code from elsewhere is a warning naming the value set
// by its title; text alone, or any coding from the set, is silent.
TEST(Engine, ExtensibleAndPreferredBindingsWarn) {
  const char* patient = R"({"resourceType":"Patient","identifier":[{"type":%s,"value":"1"}]})";
  auto with_type = [&](std::string type) {
    std::string s = patient;
    return s.replace(s.find("%s"), 2, type);
  };
  const std::string v2 = "http://terminology.hl7.org/CodeSystem/v2-0203";
  expect_valid(with_type(R"({"coding":[{"system":")" + v2 + R"(","code":"MR"}]})"));
  expect_valid(with_type(R"({"text":"hospital number"})"));
  expect_valid(with_type(R"({"coding":[{"system":"http://x","code":"a"},{"system":")" + v2 + R"(","code":"MR"}]})"));
  auto issues = validate(with_type(R"({"coding":[{"system":"http://example.org/local","code":"HOSP"}]})"));
  ASSERT_EQ(issues.size(), 1u) << show(issues);
  EXPECT_EQ(issues[0].severity, Severity::warning);
  EXPECT_EQ(issues[0].location, "Patient.identifier[0].type");
  EXPECT_EQ(issues[0].rule, "fhir-binding");
  EXPECT_NE(issues[0].diagnostics.find("extensible value set 'IdentifierType'"), std::string::npos) << show(issues);
  EXPECT_NE(issues[0].diagnostics.find(v2), std::string::npos) << show(issues);  // the expected system
  // A preferred binding on a Coding (Meta.security is extensible; Observation.interpretation too):
  // Patient.communication.language is preferred.
  issues = validate(R"({"resourceType":"Patient","communication":[{"language":{"coding":[{"system":"urn:ietf:bcp:47","code":"xx-YY"}]}}]})");
  ASSERT_EQ(issues.size(), 1u) << show(issues);
  EXPECT_EQ(issues[0].severity, Severity::warning);
  EXPECT_NE(issues[0].diagnostics.find("preferred value set 'Common Languages'"), std::string::npos) << show(issues);
  // Required bindings stay errors.
  expect_one(R"({"resourceType":"Patient","gender":"woman"})", "Patient.gender", "fhir-binding", "code-invalid");
}

// The schema names the Quantity profile each element uses, so rules can check sqty-1 there.
TEST(Engine, QuantityProfilesReachTheRules) {
  engine();
  recording->take();
  expect_valid(R"({"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1},
      "referenceRange":[{"low":{"value":1}}]})");
  std::vector<std::string> expected = {"CodeableConcept Observation.code", "Quantity Observation.valueQuantity",
                                       "SimpleQuantity Observation.referenceRange[0].low",
                                       "BackboneElement Observation.referenceRange[0]", "Observation Observation"};
  EXPECT_EQ(recording->take(), expected);
  // A SimpleQuantity has Quantity's elements.
  expect_one(R"({"resourceType":"Immunization","status":"completed","vaccineCode":{"text":"x"},
      "patient":{"reference":"Patient/1"},"occurrenceString":"x","doseQuantity":{"value":1,"units":"mL"}})",
             "Immunization.doseQuantity.units", "fhir-unknown-element", "structure");
}

TEST(Engine, CallsRuleSetsPerResourceAndComplexElement) {
  engine();
  recording->take();
  expect_valid(R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":
      {"resourceType":"Patient","name":[{"family":"x"}],"contact":[{"gender":"male"}],"birthDate":"2000"}}]})");
  std::vector<std::string> expected = {"HumanName Bundle.entry[0].resource.name[0]",
                                       "BackboneElement Bundle.entry[0].resource.contact[0]",
                                       "Patient Bundle.entry[0].resource", "BackboneElement Bundle.entry[0]",
                                       "Bundle Bundle"};
  EXPECT_EQ(recording->take(), expected);
}

// A hand-written schema directory: covers what R4 core never uses (a required binding on a
// Coding, a finite max above 1) and shows the engine reads only what the files say.
// ---- core extensions against their definitions (schemas/fhir-r4/extensions.json) -----------

constexpr const char* ext_base = "http://hl7.org/fhir/StructureDefinition/";

// {"url":"<core>/name", rest}
std::string ext(std::string_view name, std::string_view rest) {
  return std::string(R"({"url":")") + ext_base + std::string(name) + "\"," + std::string(rest) + "}";
}

void expect_extension_issue(const std::string& json, std::string_view location, std::string_view rule) {
  auto issues = validate(json);
  ASSERT_EQ(issues.size(), 1u) << json << "\n" << show(issues);
  EXPECT_EQ(issues[0].location, location) << show(issues);
  EXPECT_EQ(issues[0].rule, rule) << show(issues);
  EXPECT_EQ(issues[0].code, "extension") << show(issues);
  EXPECT_EQ(issues[0].severity, Severity::error) << show(issues);
  EXPECT_NE(issues[0].diagnostics.find(ext_base), std::string::npos) << "the message names the extension";
}

TEST(Extensions, TheShippedTableHasEveryCoreR4Extension) {
  auto schema = fhir::Schema::load(schema_dir / "fhir-r4");
  EXPECT_EQ(schema.extensions.size(), 393u);
  auto birth_time = schema.extensions_by_url.find(std::string(ext_base) + "patient-birthTime");
  ASSERT_NE(birth_time, fhir::NameTable::npos);
  EXPECT_EQ(schema.extensions[birth_time].contexts, "Patient.birthDate");
  EXPECT_FALSE(schema.extensions[birth_time].modifier);
  auto do_not_perform = schema.extensions_by_url.find(std::string(ext_base) + "request-doNotPerform");
  ASSERT_NE(do_not_perform, fhir::NameTable::npos);
  EXPECT_TRUE(schema.extensions[do_not_perform].modifier);
}

TEST(Extensions, ContextIsAnElementPath) {
  std::string birth_time = ext("patient-birthTime", R"("valueDateTime":"2000-01-01T10:00:00Z")");
  expect_valid(R"({"resourceType":"Patient","birthDate":"2000-01-01","_birthDate":{"extension":[)" + birth_time + "]}}");
  expect_extension_issue(R"({"resourceType":"Patient","extension":[)" + birth_time + "]}", "Patient.extension[0]",
                         "ext-context");
  expect_extension_issue(R"({"resourceType":"Patient","name":[{"family":"A","extension":[)" + birth_time + "]}]}",
                         "Patient.name[0].extension[0]", "ext-context");
  // Inside a Bundle the location runs from the Bundle.
  expect_extension_issue(
      R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","extension":[)" +
          birth_time + "]}}]}",
      "Bundle.entry[0].resource.extension[0]", "ext-context");
}

TEST(Extensions, ContextPathThroughADatatype) {
  std::string own_name = ext("humanname-own-name", R"("valueString":"A")");
  expect_valid(R"({"resourceType":"Patient","name":[{"family":"A-B","_family":{"extension":[)" + own_name + "]}}]}");
  expect_extension_issue(
      R"({"resourceType":"Patient","name":[{"given":["A","B"],"_given":[null,{"extension":[)" + own_name + "]}]}]}",
      "Patient.name[0].given[1].extension[0]", "ext-context");
}

TEST(Extensions, ContextIsATypeOrOneItSpecialises) {
  std::string uncertainty = ext("iso21090-uncertainty", R"("valueDecimal":0.5)");
  expect_valid(R"({"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1,"extension":[)" +
               uncertainty + "]}}");
  // Range.low is a SimpleQuantity, a Quantity; Age is one too.
  expect_valid(R"({"resourceType":"Observation","status":"final","code":{"text":"x"},"valueRange":{"low":{"value":1,"extension":[)" +
               uncertainty + "]}}}");
  expect_valid(R"({"resourceType":"Condition","subject":{"reference":"Patient/1"},"onsetAge":{"value":1,"extension":[)" +
               uncertainty + "]}}");
  expect_extension_issue(
      R"({"resourceType":"Observation","status":"final","code":{"text":"x","extension":[)" + uncertainty + "]}}",
      "Observation.code.extension[0]", "ext-context");
  // "Resource": any resource, but not an element.
  std::string goal = ext("resource-pertainsToGoal", R"("valueReference":{"reference":"Goal/1"})");
  expect_valid(R"({"resourceType":"Observation","status":"final","code":{"text":"x"},"extension":[)" + goal + "]}");
  expect_extension_issue(
      R"({"resourceType":"Observation","status":"final","code":{"text":"x","extension":[)" + goal + "]}}",
      "Observation.code.extension[0]", "ext-context");
  // "Element": anywhere, on a primitive too.
  expect_valid(R"({"resourceType":"Patient","_gender":{"extension":[)" +
               ext("data-absent-reason", R"("valueCode":"unknown")") + "]}}");
}

TEST(Extensions, ContextOnABackboneAlsoCoversItsRepeats) {
  std::string max_value = ext("maxValue", R"("valueInteger":10)");  // context: Questionnaire.item only
  expect_valid(R"({"resourceType":"Questionnaire","status":"draft","item":[{"linkId":"1","type":"group","item":[{"linkId":"1.1","type":"integer","extension":[)" +
               max_value + "]}]}]}");
  expect_extension_issue(R"({"resourceType":"Questionnaire","status":"draft","extension":[)" + max_value + "]}",
                         "Questionnaire.extension[0]", "ext-context");
  std::string related = ext("patient-relatedPerson", R"("valueReference":{"reference":"RelatedPerson/1"})");
  expect_valid(R"({"resourceType":"Patient","contact":[{"name":{"text":"A"},"extension":[)" + related + "]}]}");
  expect_extension_issue(R"({"resourceType":"Patient","extension":[)" + related + "]}", "Patient.extension[0]",
                         "ext-context");
}

TEST(Extensions, ModifierOnlyInModifierExtension) {
  std::string do_not_perform = ext("request-doNotPerform", R"("valueBoolean":true)");
  std::string order = R"({"resourceType":"NutritionOrder","status":"active","intent":"order","patient":{"reference":"Patient/1"},"dateTime":"2024-01-01",)";
  expect_valid(order + R"("modifierExtension":[)" + do_not_perform + "]}");
  expect_extension_issue(order + R"("extension":[)" + do_not_perform + "]}", "NutritionOrder.extension[0]",
                         "ext-modifier");
  std::string importance = ext("patient-importance", R"("valueCodeableConcept":{"text":"VIP"})");
  expect_valid(R"({"resourceType":"Patient","extension":[)" + importance + "]}");
  expect_extension_issue(R"({"resourceType":"Patient","modifierExtension":[)" + importance + "]}",
                         "Patient.modifierExtension[0]", "ext-modifier");
}

TEST(Extensions, ValueTypeFromTheDefinition) {
  auto patient = [](std::string_view extension) {
    return R"({"resourceType":"Patient","birthDate":"2000-01-01","_birthDate":{"extension":[)" + std::string(extension) + "]}}";
  };
  expect_valid(patient(ext("patient-birthTime", R"("valueDateTime":"2000-01-01T10:00:00Z")")));
  expect_extension_issue(patient(ext("patient-birthTime", R"("valueDate":"2000-01-01")")),
                         "Patient.birthDate.extension[0].valueDate", "ext-value-type");
  // A versioned canonical names the same definition.
  expect_extension_issue(patient(R"({"url":"http://hl7.org/fhir/StructureDefinition/patient-birthTime|4.0.1","valueString":"x"})"),
                         "Patient.birthDate.extension[0].valueString", "ext-value-type");
}

TEST(Extensions, ComplexHoldsSubExtensionsSimpleHoldsAValue) {
  auto patient = [](std::string_view extension) {
    return R"({"resourceType":"Patient","extension":[)" + std::string(extension) + "]}";
  };
  expect_valid(patient(ext("patient-nationality", R"("extension":[{"url":"code","valueCodeableConcept":{"text":"UK"}}])")));
  expect_extension_issue(patient(ext("patient-nationality", R"("valueString":"UK")")),
                         "Patient.extension[0].valueString", "ext-complex");
  expect_extension_issue(patient(ext("patient-importance", R"("extension":[{"url":"level","valueString":"VIP"}])")),
                         "Patient.extension[0].extension", "ext-simple");
}

TEST(Extensions, SubExtensionsOfAComplexExtension) {
  auto address = [](std::string_view parts) {
    return R"({"resourceType":"Patient","address":[{"city":"Leeds","extension":[)" +
           ext("geolocation", R"("extension":[)" + std::string(parts) + "]") + "]}]}";
  };
  const std::string latitude = R"({"url":"latitude","valueDecimal":53.8})";
  const std::string longitude = R"({"url":"longitude","valueDecimal":-1.55})";
  expect_valid(address(latitude + "," + longitude));
  // Slicing is open in R4: a sub-extension it does not define is allowed.
  expect_valid(address(latitude + "," + longitude + R"(,{"url":"accuracy","valueDecimal":5})"));
  expect_extension_issue(address(latitude), "Patient.address[0].extension[0]", "ext-part-required");
  expect_extension_issue(address(latitude + "," + longitude + "," + latitude),
                         "Patient.address[0].extension[0].extension[2]", "ext-part-max");
  expect_extension_issue(address(R"({"url":"latitude","valueString":"53.8"},)" + longitude),
                         "Patient.address[0].extension[0].extension[0].valueString", "ext-value-type");
}

TEST(Extensions, UnknownCoreUrlIsAnErrorOthersPass) {
  auto issues = validate(R"({"resourceType":"Patient","extension":[)" +
                         ext("patient-birthtime", R"("valueDateTime":"2000-01-01T10:00:00Z")") + "]}");
  ASSERT_EQ(issues.size(), 1u) << show(issues);
  EXPECT_EQ(issues[0].severity, Severity::error);
  EXPECT_EQ(issues[0].rule, "ext-unknown");
  EXPECT_EQ(issues[0].location, "Patient.extension[0]");
  expect_valid(R"({"resourceType":"Patient","extension":[{"url":"https://fhir.example.org/StructureDefinition/x","valueString":"a"}]})");
}

TEST(Engine, SmallHandWrittenSchema) {
  test::TempDir temp{"tellonce-schema"};
  fs::path dir = temp.path();
  fs::create_directories(dir / "fhir-r4");
  std::ofstream(dir / "fhir-r4/valuesets.json") << R"({"valuesets":{
      "http://example.org/vs":{"systems":{"http://example.org/cs":["a","b"]}}}})";
  std::ofstream(dir / "fhir-r4/types.json") << R"({"types":{
      "string":{"kind":"primitive"}, "uri":{"kind":"primitive"}, "code":{"kind":"primitive"},
      "Element":{"kind":"complex","elements":[{"path":"id","min":0,"max":"1","type":"string"},
        {"path":"extension","min":0,"max":"*","type":"Extension"}]},
      "Extension":{"kind":"complex","elements":[{"path":"url","min":1,"max":"1","type":"uri"},
        {"path":"value[x]","min":0,"max":"1","choices":{"valueString":"string"}}]},
      "Coding":{"kind":"complex","elements":[{"path":"system","min":0,"max":"1","type":"uri"},
        {"path":"code","min":0,"max":"1","type":"code"}]},
      "Resource":{"kind":"resource","abstract":true,"elements":[]},
      "Thing":{"kind":"resource","elements":[
        {"path":"kind","min":0,"max":"1","type":"Coding","binding":"http://example.org/vs"},
        {"path":"tag","min":0,"max":"2","type":"string"}]}}})";
  auto small = make_structural_validator(ValidatorSettings{dir}, {});
  auto check = [&](std::string_view json) {
    auto doc = parse_json(json);
    std::vector<Issue> issues;
    small->validate(*doc, issues);
    return issues;
  };
  EXPECT_TRUE(check(R"({"resourceType":"Thing","kind":{"system":"http://example.org/cs","code":"a"},
      "tag":["x","y"]})").empty());
  auto issues = check(R"({"resourceType":"Thing","kind":{"system":"http://other.org","code":"z"}})");
  ASSERT_EQ(issues.size(), 1u) << show(issues);
  EXPECT_EQ(issues[0].location, "Thing.kind.system");  // a required binding allows its own systems only
  issues = check(R"({"resourceType":"Thing","kind":{"system":"http://example.org/cs","code":"z"},
      "tag":["x","y","z"]})");
  ASSERT_EQ(issues.size(), 2u) << show(issues);
  EXPECT_EQ(issues[0].location, "Thing.kind.code");
  EXPECT_EQ(issues[0].rule, "fhir-binding");
  EXPECT_EQ(issues[1].location, "Thing.tag");
  EXPECT_EQ(issues[1].rule, "fhir-cardinality");
  issues = check(R"({"resourceType":"Patient"})");
  ASSERT_EQ(issues.size(), 1u);
  EXPECT_EQ(issues[0].code, "not-supported");

  std::ofstream(dir / "fhir-r4/types.json") << R"({"types":{"Thing":{"kind":"resource","elements":[
      {"path":"x","min":0,"max":"1","type":"NoSuchType"}]}}})";
  EXPECT_THROW(make_structural_validator(ValidatorSettings{dir}, {}), std::runtime_error);
}

TEST(Engine, DeepNestingIsBoundedNotACrash) {
  // Built by hand: parse_json would refuse this depth, but adapters build documents too.
  rapidjson::Document doc;
  doc.Parse(R"({"resourceType":"Questionnaire","status":"active"})");
  rapidjson::Value* items = &doc;
  for (int i = 0; i < 150; ++i) {
    rapidjson::Value item(rapidjson::kObjectType), list(rapidjson::kArrayType);
    item.AddMember("linkId", "x", doc.GetAllocator());
    item.AddMember("type", "group", doc.GetAllocator());
    list.PushBack(item, doc.GetAllocator());
    items->AddMember("item", list, doc.GetAllocator());
    items = &(*items)["item"][0];
  }
  std::vector<Issue> issues;
  engine().validate(doc, issues);
  ASSERT_EQ(issues.size(), 1u) << show(issues);
  EXPECT_EQ(issues[0].rule, "fhir-depth");
}

TEST(Engine, ConcurrentCallsGiveTheSameAnswers) {
  const std::vector<std::string> records = {
      R"({"resourceType":"Patient","gender":"x","birthDate":"2023-02-30","name":[{"given":[1]}]})",
      R"({"resourceType":"Observation","valueString":"a","valueBoolean":true})",
      R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","x":1}}]})"};
  std::vector<std::string> expected;
  for (auto& r : records) expected.push_back(show(validate(r)));
  std::vector<rapidjson::Document> docs;
  for (auto& r : records) docs.push_back(std::move(*parse_json(r)));
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int round = 0; round < 200; ++round) {
        for (std::size_t i = 0; i < docs.size(); ++i) {
          std::vector<Issue> issues;
          engine().validate(docs[i], issues);
          if (show(issues) != expected[i]) ++mismatches;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_NE(expected[0], "");
}

// Sample records that break FHIR R4 itself, with the one kind of issue each must give.
// bundle-questionnaire.json: generated items without the mandatory Questionnaire.item.linkId (1..1).
// Extension-UKCore-ConditionEpisode-Example.json: one extension carries valueCode and
// valueCodeableConcept (value[x] is 0..1); the upstream XML has both too.
const std::map<std::string, std::string> known_defects = {
    {"bundle-questionnaire.json", "linkId is required but missing"},
    {"Extension-UKCore-ConditionEpisode-Example.json", "value[x] allows one type only"},
};

// Every record in the shared sample folders passes the structural checks (rules are not run here):
// no errors. Warnings (extensible and preferred bindings the examples stray from) are allowed.
TEST(SampleData, EveryExampleValidates) {
  const fs::path folders[] = {shared_data / "fhir-r4-spec-examples", shared_data / "ukcore-examples/json-converted",
                              shared_data / "synthea-r4"};
  std::size_t files = 0, defects_seen = 0;
  std::string failures;
  for (const auto& folder : folders) {
    if (!fs::is_directory(folder)) GTEST_SKIP() << "sample data folder missing: " << folder;
    for (const auto& entry : fs::recursive_directory_iterator(folder)) {
      if (entry.path().extension() != ".json") continue;
      std::ifstream in(entry.path(), std::ios::binary);
      std::stringstream text;
      text << in.rdbuf();
      auto doc = parse_json(text.str());
      if (!doc) {
        failures += entry.path().string() + ": " + doc.error().summary() + "\n";
        continue;
      }
      std::vector<Issue> issues;
      engine().validate(*doc, issues);
      ++files;
      std::erase_if(issues, [](const Issue& i) { return !i.is_error(); });
      auto defect = known_defects.find(entry.path().filename().string());
      if (defect != known_defects.end()) {
        EXPECT_FALSE(issues.empty()) << entry.path() << " no longer has its known defect";
        defects_seen += !issues.empty();
        std::erase_if(issues, [&](const Issue& i) { return i.diagnostics.find(defect->second) != std::string::npos; });
      }
      for (auto& i : issues) failures += entry.path().string() + ": " + i.location + ": " + i.diagnostics + "\n";
    }
  }
  EXPECT_GT(files, 250u);
  EXPECT_EQ(defects_seen, known_defects.size());
  EXPECT_EQ(failures, "");
}

struct TempFile {
  test::TempDir dir{"tellonce-validate-cmd"};
  fs::path path = dir.path() / "record.json";
  explicit TempFile(std::string_view content) { std::ofstream(path) << content; }
};

int run(std::vector<std::string> args, std::string& out) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  testing::internal::CaptureStdout();
  int status = run_validate_command(static_cast<int>(argv.size()), argv.data(), schema_dir);
  out = testing::internal::GetCapturedStdout();
  return status;
}

TEST(ValidateCommand, JsonTextAndNdjson) {
  TempFile good(R"({"resourceType":"Patient","gender":"female"})");
  TempFile bad(R"({"resourceType":"Patient","birthDate":"2023-02-30"})");
  TempFile lines("{\"resourceType\":\"Patient\"}\n\n{\"resourceType\":\"Patient\",\"active\":1}\n");
  std::string out;

  EXPECT_EQ(run({good.path.string()}, out), 0);
  EXPECT_NE(out.find("\"resourceType\":\"OperationOutcome\""), std::string::npos) << out;

  // The UK rules may add their own lines (information about NHS numbers); ours comes first.
  EXPECT_EQ(run({"--text", bad.path.string()}, out), 1);
  EXPECT_EQ(out.substr(0, out.find('\n') + 1),
            bad.path.string() + ": error Patient.birthDate: \"2023-02-30\" is not a valid date: expected " +
                std::string(fhir::expected_form(fhir::Primitive::date)) + " [fhir-date]\n");

  EXPECT_EQ(run({"--ndjson", lines.path.string()}, out), 1);
  auto newline = out.find('\n');
  ASSERT_NE(newline, std::string::npos);
  std::string first = out.substr(0, newline), second = out.substr(newline + 1);
  EXPECT_NE(first.find("line 1: "), std::string::npos) << out;
  EXPECT_EQ(first.find("\"severity\":\"error\""), std::string::npos) << out;
  // The blank line 2 is skipped; the second outcome is line 3's.
  EXPECT_NE(second.find("line 3: 1 is not a valid boolean"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2) << out;

  EXPECT_EQ(run({}, out), 2);
  EXPECT_EQ(run({"--bogus", good.path.string()}, out), 2);
  EXPECT_EQ(run({"/nonexistent/file.json"}, out), 2);
}

}  // namespace
}  // namespace tellonce
