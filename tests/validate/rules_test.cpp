// The FHIR invariants and UK rules, driven directly: a small walker below stands in for the
// structural engine and calls the RuleSets per resource and per complex element, the way the
// engine does (types come from element names, enough for these fixtures).
#include "broker/validate/bundle_rules.hpp"
#include "broker/validate/rules.hpp"
#include "broker/validate/rules_formats.hpp"
#include "tellonce/validator.hpp"

#include "support/temp_dir.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace tellonce {
namespace {

namespace fs = std::filesystem;
using rapidjson::Value;

const fs::path shared_data = TELLONCE_SHARED_DATA;

// The sample data sits beside the checkout; without it these tests have nothing to read.
#define SKIP_WITHOUT_SHARED_DATA()                                                             \
  if (!fs::exists(shared_data))                                                                \
  GTEST_SKIP() << "shared sample data not found at " << shared_data << " (expected beside the checkout)"
const fs::path schema_dir = fs::path(TELLONCE_SOURCE_DIR) / "schemas";

// Complex datatype of an element by its name; choice elements by their type suffix.
std::string element_type(std::string_view name) {
  static const std::map<std::string_view, std::string_view> by_name = {
      {"identifier", "Identifier"}, {"period", "Period"},         {"extension", "Extension"},
      {"modifierExtension", "Extension"}, {"coding", "Coding"},   {"telecom", "ContactPoint"},
      {"attachment", "Attachment"}, {"photo", "Attachment"},      {"content", "BackboneElement"},
      {"quantity", "Quantity"},     {"low", "Quantity"},          {"high", "Quantity"},
      {"eventCoding", "Coding"},    {"class", "Coding"},          {"security", "Coding"},
      {"tag", "Coding"}};
  if (auto it = by_name.find(name); it != by_name.end()) return std::string(it->second);
  for (std::string_view suffix : {"Quantity", "Period", "Coding", "Identifier", "Attachment",
                                  "Age", "Duration", "ContactPoint"})
    if (name.size() > suffix.size() && name.ends_with(suffix) &&
        name[name.size() - suffix.size() - 1] >= 'a')
      return std::string(suffix);
  return "BackboneElement";
}

void walk(const RuleSet& rules, std::string_view type, const Value& v, const std::string& path,
          std::vector<Issue>& out) {
  rules.check(type, v, path, out);
  for (auto& m : v.GetObject()) {
    std::string name = m.name.GetString();
    auto visit = [&](const Value& child, const std::string& child_path) {
      if (!child.IsObject()) return;
      if (child.HasMember("resourceType"))
        walk(rules, child["resourceType"].GetString(), child, child_path, out);
      else
        walk(rules, name.starts_with("_") ? "Element" : element_type(name), child, child_path, out);
    };
    if (m.value.IsArray()) {
      for (rapidjson::SizeType i = 0; i < m.value.Size(); ++i)
        visit(m.value[i], path + "." + name + "[" + std::to_string(i) + "]");
    } else {
      visit(m.value, path + "." + name);
    }
  }
}

std::vector<Issue> check_resource(const RuleSet& rules, const Value& resource) {
  std::vector<Issue> out;
  std::string type = resource["resourceType"].GetString();
  walk(rules, type, resource, type, out);
  return out;
}

rapidjson::Document parse(std::string_view text) {
  rapidjson::Document doc;
  doc.Parse(text.data(), text.size());
  EXPECT_FALSE(doc.HasParseError()) << text;
  return doc;
}

std::vector<Issue> check_text(const RuleSet& rules, std::string_view text) {
  auto doc = parse(text);
  return check_resource(rules, doc);
}

std::string describe(const std::vector<Issue>& issues) {
  std::string s;
  for (auto& i : issues)
    s += std::string(to_string(i.severity)) + " " + i.rule + " @ " + i.location + ": " +
         i.diagnostics + "\n";
  return s;
}

// The single issue with this rule, or a failure listing what was found.
const Issue* only(const std::vector<Issue>& issues, std::string_view rule) {
  const Issue* found = nullptr;
  int count = 0;
  for (auto& i : issues)
    if (i.rule == rule) {
      found = &i;
      ++count;
    }
  EXPECT_EQ(count, 1) << "rule " << rule << " in:\n" << describe(issues);
  return count == 1 ? found : nullptr;
}

std::size_t errors(const std::vector<Issue>& issues) {
  std::size_t n = 0;
  for (auto& i : issues) n += i.is_error();
  return n;
}

const RuleSet& invariants() {
  static auto rules = make_fhir_invariants();
  return *rules;
}
const RuleSet& conformance() {
  static auto rules = make_conformance_rules(schema_dir);
  return *rules;
}
const RuleSet& uk() {
  static auto rules = make_uk_rules({schema_dir, true});
  return *rules;
}

// ---- formats ------------------------------------------------------------------------------

TEST(NhsNumber, ModulusElevenCheckDigit) {
  for (auto good : {"9000000009", "9449307539", "9476719931", "9693893123", "9912003888"})
    EXPECT_TRUE(nhs_number_valid(good)) << good;
  for (auto bad : {"9000000015", "9912003890", "7778521234", "3478526985", "9000000001"})
    EXPECT_FALSE(nhs_number_valid(bad)) << bad;
  // Weighted sum 10 -> check digit 1; weighted sum 12 -> check digit 10, which no number can have.
  EXPECT_TRUE(nhs_number_valid("1000000001"));
  EXPECT_FALSE(nhs_number_valid("0000000060"));
  for (auto shape : {"", "$nhs-number", "900000000", "90000000090", "900 000 0009", "900000000a"})
    EXPECT_FALSE(nhs_number_valid(shape)) << shape;
}

TEST(OdsCode, Format) {
  for (auto good : {"RR8", "RR813", "A81001", "X254", "Y12345", "GP8D7", "8HK47"})
    EXPECT_TRUE(ods_code_valid(good)) << good;
  for (auto bad : {"", "R8", "rr8", "$ods-code", "RR8 13", "ABCDEFGHIJK"})
    EXPECT_FALSE(ods_code_valid(bad)) << bad;
}

TEST(Snomed, ConceptIdFormat) {
  for (auto good : {"22298006", "38341003", "306206005", "3457005", "999000011000230102", "404684003"})
    EXPECT_TRUE(snomed_concept_id_valid(good)) << good;
  EXPECT_FALSE(snomed_concept_id_valid("22298007"));   // check digit
  EXPECT_FALSE(snomed_concept_id_valid("22298016"));   // description partition
  EXPECT_FALSE(snomed_concept_id_valid("12345"));      // too short
  EXPECT_FALSE(snomed_concept_id_valid("022298006"));  // leading zero
  EXPECT_FALSE(snomed_concept_id_valid("2229800x"));
  EXPECT_TRUE(snomed_expression_p("71388002:405813007=15497006"));
}

TEST(BundleRules, UrnUuidSyntax) {
  EXPECT_TRUE(fhir::urn_uuid_valid("urn:uuid:0c8e3d5a-1b2f-4c6d-8e9f-a0b1c2d3e4f5"));
  EXPECT_TRUE(fhir::urn_uuid_valid("urn:uuid:0C8E3D5A-1B2F-4C6D-8E9F-A0B1C2D3E4F5"));
  EXPECT_FALSE(fhir::urn_uuid_valid("urn:uuid:"));
  EXPECT_FALSE(fhir::urn_uuid_valid("urn:uuid:1"));
  EXPECT_FALSE(fhir::urn_uuid_valid("urn:uuid:0c8e3d5a1b2f-4c6d-8e9f-a0b1c2d3e4f5a"));  // dash moved
  EXPECT_FALSE(fhir::urn_uuid_valid("urn:uuid:33a33b58-648a-4453-b981-e21ea9ggb4hj"));  // not hex
  EXPECT_FALSE(fhir::urn_uuid_valid("0c8e3d5a-1b2f-4c6d-8e9f-a0b1c2d3e4f5"));
}

// ---- invariants ---------------------------------------------------------------------------

struct Case {
  const char* rule;
  const char* failing;
  const char* location;
  const char* passing;
};

class Invariant : public testing::TestWithParam<Case> {};

// The Quantity profiles are told apart by the type name the engine passes (from the schema:
// Range.low is a SimpleQuantity); the walker here cannot know, so the rule set is called directly.
TEST(QuantityProfiles, SimpleQuantityHasNoComparator) {
  auto doc = parse(R"({"value":1,"comparator":"<","unit":"mg"})");
  std::vector<Issue> out;
  invariants().check("SimpleQuantity", doc, "Range.low", out);
  if (const Issue* issue = only(out, "sqty-1")) {
    EXPECT_EQ(issue->location, "Range.low.comparator");
    EXPECT_TRUE(issue->is_error());
  }
  out.clear();
  invariants().check("Quantity", doc, "Observation.valueQuantity", out);  // plain Quantity allows it
  EXPECT_TRUE(out.empty()) << describe(out);
}

// A CapabilityStatement's searchParam must state the type of the core SearchParameter it names.
TEST(ConformanceRules, SearchParamTypeMatchesItsCoreDefinition) {
  auto rules = make_conformance_rules(schema_dir);
  auto bad = check_text(*rules, R"({"resourceType":"CapabilityStatement","rest":[{"mode":"server","resource":[
      {"type":"AllergyIntolerance","searchParam":[
        {"name":"code","definition":"http://hl7.org/fhir/SearchParameter/clinical-code","type":"token"},
        {"name":"clinical-status","definition":"http://hl7.org/fhir/SearchParameter/AllergyIntolerance-clinical-status|4.0.1","type":"date"}]}]}]})");
  if (const Issue* issue = only(bad, "cps-search-type")) {
    EXPECT_EQ(issue->location, "CapabilityStatement.rest[0].resource[0].searchParam[1].type");
    EXPECT_TRUE(issue->is_error());
    EXPECT_NE(issue->diagnostics.find("'token'"), std::string::npos) << issue->diagnostics;
  }
  // The right type, a partner's own definition, and no definition at all pass.
  auto good = check_text(*rules, R"({"resourceType":"CapabilityStatement","rest":[{"mode":"server","resource":[
      {"type":"AllergyIntolerance","searchParam":[
        {"name":"clinical-status","definition":"http://hl7.org/fhir/SearchParameter/AllergyIntolerance-clinical-status","type":"token"},
        {"name":"site","definition":"https://example.org/fhir/SearchParameter/site","type":"date"},
        {"name":"onset","type":"string"}]}]}]})");
  EXPECT_TRUE(good.empty()) << describe(good);
}

// A SearchParameter derived from a core one keeps its type and narrows its base.
TEST(ConformanceRules, DerivedSearchParameterKeepsTypeAndBase) {
  auto rules = make_conformance_rules(schema_dir);
  auto type = check_text(*rules, R"({"resourceType":"SearchParameter","url":"https://example.org/fhir/SearchParameter/p-birthdate",
      "derivedFrom":"http://hl7.org/fhir/SearchParameter/individual-birthdate","name":"birthdate","status":"active",
      "code":"birthdate","base":["Patient"],"type":"string","description":"x","expression":"Patient.birthDate"})");
  if (const Issue* issue = only(type, "spd-derived")) EXPECT_EQ(issue->location, "SearchParameter.type");
  auto base = check_text(*rules, R"({"resourceType":"SearchParameter","url":"https://example.org/fhir/SearchParameter/p-birthdate",
      "derivedFrom":"http://hl7.org/fhir/SearchParameter/individual-birthdate|4.0.1","name":"birthdate","status":"active",
      "code":"birthdate","base":["Patient","Observation"],"type":"date","description":"x","expression":"Patient.birthDate"})");
  if (const Issue* issue = only(base, "spd-derived")) EXPECT_EQ(issue->location, "SearchParameter.base[1]");
  // Narrowing the base, keeping the type, or a base under DomainResource pass.
  auto good = check_text(*rules, R"({"resourceType":"SearchParameter","url":"https://example.org/fhir/SearchParameter/p-birthdate",
      "derivedFrom":"http://hl7.org/fhir/SearchParameter/individual-birthdate","name":"birthdate","status":"active",
      "code":"birthdate","base":["Patient"],"type":"date","description":"x","expression":"Patient.birthDate"})");
  auto text = check_text(*rules, R"({"resourceType":"SearchParameter","url":"https://example.org/fhir/SearchParameter/p-text",
      "derivedFrom":"http://hl7.org/fhir/SearchParameter/DomainResource-text","name":"text","status":"active",
      "code":"text","base":["Patient"],"type":"string","description":"x"})");
  good.insert(good.end(), text.begin(), text.end());
  EXPECT_TRUE(good.empty()) << describe(good);
}

// A Coding's system in the core namespace must name a code system R4 defines.
TEST(ConformanceRules, CoreNamespaceCodingSystemMustExist) {
  std::vector<Issue> out;
  conformance().check("Coding", parse(R"({"system":"http://hl7.org/fhir/v2/0203","code":"MR"})"), "X.coding[0]", out);
  if (const Issue* issue = only(out, "coding-core-system")) {
    EXPECT_EQ(issue->location, "X.coding[0].system");
    EXPECT_TRUE(issue->is_error());
    EXPECT_NE(issue->diagnostics.find("http://terminology.hl7.org/CodeSystem/v2-0203"), std::string::npos)
        << issue->diagnostics;
  }
  out.clear();
  conformance().check("Coding", parse(R"({"system":"http://hl7.org/fhir/ValueSet/service-type","code":"57"})"), "X",
                      out);
  if (const Issue* issue = only(out, "coding-core-system"))
    EXPECT_NE(issue->diagnostics.find("value set"), std::string::npos) << issue->diagnostics;
  out.clear();
  // R4 code systems (core and terminology.hl7.org), HL7's urls for external systems, an
  // implementation guide's, a cross-version one, a versioned one and other namespaces pass.
  for (const char* system : {"http://hl7.org/fhir/administrative-gender", "http://hl7.org/fhir/sid/icd-10",
                             "http://hl7.org/fhir/sid/cvx", "http://hl7.org/fhir/us/core/CodeSystem/condition-category",
                             "http://hl7.org/fhir/5.0/CodeSystem/x", "http://hl7.org/fhir/administrative-gender|4.0.1",
                             "http://terminology.hl7.org/CodeSystem/v2-0203", "http://snomed.info/sct",
                             "https://fhir.hl7.org.uk/CodeSystem/UKCore-SourceOfServiceEngland"}) {
    std::string coding = std::string(R"({"code":"a","system":")") + system + "\"}";
    conformance().check("Coding", parse(coding), "X", out);
  }
  EXPECT_TRUE(out.empty()) << describe(out);
}

TEST(ConformanceRules, SchemasWithoutTheTableCheckNothingAndABadTableIsRefused) {
  test::TempDir none{"tellonce-rules"};
  auto rules = make_conformance_rules(none.path());
  auto out = check_text(*rules, R"({"resourceType":"CapabilityStatement","rest":[{"resource":[{"type":"Patient",
      "searchParam":[{"name":"birthdate","definition":"http://hl7.org/fhir/SearchParameter/individual-birthdate","type":"string"}]}]}]})");
  rules->check("Coding", parse(R"({"system":"http://hl7.org/fhir/v2/0203","code":"MR"})"), "X", out);
  EXPECT_TRUE(out.empty()) << describe(out);
  test::TempDir bad{"tellonce-rules"};
  fs::create_directories(bad / "fhir-r4");
  std::ofstream(bad / "fhir-r4" / "searchparams.json") << R"({"searchParameters": [)";
  EXPECT_THROW(make_conformance_rules(bad.path()), std::runtime_error);
}

TEST(QuantityProfiles, MoneyQuantityNeedsACurrency) {
  std::vector<Issue> out;
  invariants().check("MoneyQuantity", parse(R"({"value":12.5})"), "X.amount", out);
  if (const Issue* issue = only(out, "mqty-1")) EXPECT_EQ(issue->location, "X.amount");
  out.clear();
  invariants().check("MoneyQuantity", parse(R"({"value":12.5,"code":"GBP","system":"http://unitsofmeasure.org"})"),
                     "X.amount", out);
  if (const Issue* issue = only(out, "mqty-1")) EXPECT_EQ(issue->location, "X.amount.system");
  out.clear();
  invariants().check("MoneyQuantity", parse(R"({"value":12.5,"code":"GBP","system":"urn:iso:std:iso:4217"})"),
                     "X.amount", out);
  invariants().check("Quantity", parse(R"({"value":12.5})"), "X.amount", out);
  EXPECT_TRUE(out.empty()) << describe(out);
}

TEST_P(Invariant, FailsAndPasses) {
  const Case& c = GetParam();
  auto bad = check_text(invariants(), c.failing);
  if (const Issue* issue = only(bad, c.rule)) {
    EXPECT_EQ(issue->location, c.location);
    EXPECT_EQ(issue->code, "invariant");
    EXPECT_TRUE(issue->is_error());
    EXPECT_FALSE(issue->diagnostics.empty());
  }
  auto good = check_text(invariants(), c.passing);
  EXPECT_TRUE(good.empty()) << describe(good);
}

INSTANTIATE_TEST_SUITE_P(
    R4, Invariant,
    testing::Values(
        Case{"ele-1", R"({"resourceType":"Patient","identifier":[{}]})", "Patient.identifier[0]",
             R"({"resourceType":"Patient","identifier":[{"value":"1"}]})"},
        Case{"ele-1", R"({"resourceType":"Patient","maritalStatus":{"id":"a"}})",
             "Patient.maritalStatus",
             R"({"resourceType":"Patient","maritalStatus":{"id":"a","text":"single"}})"},
        Case{"ext-1",
             R"({"resourceType":"Patient","extension":[{"url":"http://x","valueString":"a","extension":[{"url":"b","valueCode":"c"}]}]})",
             "Patient.extension[0]",
             R"({"resourceType":"Patient","extension":[{"url":"http://x","extension":[{"url":"b","valueCode":"c"}]}]})"},
        Case{"ext-1", R"({"resourceType":"Patient","extension":[{"url":"http://x"}]})",
             "Patient.extension[0]",
             R"({"resourceType":"Patient","extension":[{"url":"http://x","valueBoolean":false}]})"},
        Case{"per-1",
             R"({"resourceType":"Encounter","period":{"start":"2024-06-01T10:00:00Z","end":"2024-06-01T09:59:59Z"}})",
             "Encounter.period",
             R"({"resourceType":"Encounter","period":{"start":"2024-06-01T10:00:00+01:00","end":"2024-06-01T09:30:00Z"}})"},
        Case{"per-1", R"({"resourceType":"Encounter","period":{"start":"2024-06","end":"2024-05-31"}})",
             "Encounter.period",
             R"({"resourceType":"Encounter","period":{"start":"2024-05","end":"2024-06-03T08:00:00Z"}})"},
        // Different precisions that agree as far as both go: FHIRPath cannot order them.
        Case{"per-1", R"({"resourceType":"Encounter","period":{"start":"2024-05-03","end":"2024-05-03T08:00:00Z"}})",
             "Encounter.period",
             R"({"resourceType":"Encounter","period":{"start":"2024-05-03","end":"2024-05-04"}})"},
        Case{"per-1", R"({"resourceType":"Encounter","period":{"start":"2024-05-03T08:00:00Z","end":"2024"}})",
             "Encounter.period",
             R"({"resourceType":"Encounter","period":{"start":"2024-05-03T08:00:00Z","end":"2025"}})"},
        Case{"sdf-20",
             R"({"resourceType":"StructureDefinition","differential":{"element":[{"path":"Patient","slicing":{"rules":"open"}}]}})",
             "StructureDefinition.differential.element[0].slicing",
             R"({"resourceType":"StructureDefinition","differential":{"element":[{"path":"Patient"},{"path":"Patient.identifier","slicing":{"rules":"open"}}]}})"},
        Case{"sdf-23",
             R"({"resourceType":"StructureDefinition","snapshot":{"element":[{"path":"Patient","sliceName":"x"}]}})",
             "StructureDefinition.snapshot.element[0].sliceName",
             R"({"resourceType":"StructureDefinition","snapshot":{"element":[{"path":"Patient"},{"path":"Patient.identifier","sliceName":"nhs"}]}})"},
        Case{"qty-3",
             R"({"resourceType":"Observation","valueQuantity":{"value":1,"code":"kg"}})",
             "Observation.valueQuantity",
             R"({"resourceType":"Observation","valueQuantity":{"value":1,"code":"kg","system":"http://unitsofmeasure.org"}})"},
        Case{"ucum-syntax",
             R"({"resourceType":"Observation","valueQuantity":{"value":1,"code":"mgg","system":"http://unitsofmeasure.org"}})",
             "Observation.valueQuantity.code",
             R"({"resourceType":"Observation","valueQuantity":{"value":1,"code":"mg/dL","system":"http://unitsofmeasure.org"}})"},
        Case{"ucum-syntax",
             R"({"resourceType":"Observation","valueQuantity":{"value":1,"code":"mmol/(L","system":"http://unitsofmeasure.org"}})",
             "Observation.valueQuantity.code",
             R"({"resourceType":"Observation","valueQuantity":{"value":1,"code":"mmol/L","system":"http://snomed.info/sct"}})"},
        Case{"cpt-2", R"({"resourceType":"Patient","telecom":[{"value":"01234"}]})",
             "Patient.telecom[0]",
             R"({"resourceType":"Patient","telecom":[{"system":"phone","value":"01234"}]})"},
        Case{"att-1",
             R"({"resourceType":"DocumentReference","content":[{"attachment":{"data":"aGk="}}]})",
             "DocumentReference.content[0].attachment",
             R"({"resourceType":"DocumentReference","content":[{"attachment":{"data":"aGk=","contentType":"text/plain"}}]})"},
        Case{"bdl-1", R"({"resourceType":"Bundle","type":"collection","total":1})", "Bundle.total",
             R"({"resourceType":"Bundle","type":"searchset","total":1})"},
        Case{"bdl-2",
             R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Basic"},"search":{"mode":"match"}}]})",
             "Bundle.entry[0].search",
             R"({"resourceType":"Bundle","type":"searchset","entry":[{"fullUrl":"https://x/Basic/1","resource":{"resourceType":"Basic","id":"1"},"search":{"mode":"match"}}]})"},
        Case{"bdl-3",
             R"({"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Basic"}}]})",
             "Bundle.entry[0]",
             R"({"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Basic"},"request":{"method":"POST","url":"Basic"}}]})"},
        Case{"bdl-4",
             R"({"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Basic"},"response":{"status":"200"}}]})",
             "Bundle.entry[0]",
             R"({"resourceType":"Bundle","type":"batch-response","entry":[{"response":{"status":"200"}}]})"},
        Case{"bdl-5", R"({"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:0c8e3d5a-1b2f-4c6d-8e9f-a0b1c2d3e4f5"}]})",
             "Bundle.entry[0]",
             R"({"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:0c8e3d5a-1b2f-4c6d-8e9f-a0b1c2d3e4f5","resource":{"resourceType":"Basic"}}]})"},
        Case{"bdl-7",
             R"({"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:0c8e3d5a-1b2f-4c6d-8e9f-a0b1c2d3e4f5","resource":{"resourceType":"Basic"}},{"fullUrl":"urn:uuid:0c8e3d5a-1b2f-4c6d-8e9f-a0b1c2d3e4f5","resource":{"resourceType":"Basic"}}]})",
             "Bundle.entry[1].fullUrl",
             R"({"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:0c8e3d5a-1b2f-4c6d-8e9f-a0b1c2d3e4f5","resource":{"resourceType":"Basic","meta":{"versionId":"1"}}},{"fullUrl":"urn:uuid:0c8e3d5a-1b2f-4c6d-8e9f-a0b1c2d3e4f5","resource":{"resourceType":"Basic","meta":{"versionId":"2"}}}]})"},
        Case{"bdl-8",
             R"({"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"https://x/Basic/1/_history/2","resource":{"resourceType":"Basic"}}]})",
             "Bundle.entry[0].fullUrl",
             R"({"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"https://x/Basic/1","resource":{"resourceType":"Basic"}}]})"},
        Case{"bdl-9",
             R"({"resourceType":"Bundle","type":"document","timestamp":"2024-01-01T00:00:00Z","identifier":{"value":"1"},"entry":[{"fullUrl":"urn:uuid:0c8e3d5a-1b2f-4c6d-8e9f-a0b1c2d3e4f5","resource":{"resourceType":"Composition"}}]})",
             "Bundle",
             R"({"resourceType":"Bundle","type":"document","timestamp":"2024-01-01T00:00:00Z","identifier":{"system":"urn:ietf:rfc:3986","value":"urn:uuid:1"},"entry":[{"fullUrl":"urn:uuid:0c8e3d5a-1b2f-4c6d-8e9f-a0b1c2d3e4f5","resource":{"resourceType":"Composition"}}]})"},
        Case{"bdl-10",
             R"({"resourceType":"Bundle","type":"document","identifier":{"system":"urn:ietf:rfc:3986","value":"urn:uuid:1"},"entry":[{"fullUrl":"urn:uuid:0c8e3d5a-1b2f-4c6d-8e9f-a0b1c2d3e4f5","resource":{"resourceType":"Composition"}}]})",
             "Bundle",
             R"({"resourceType":"Bundle","type":"document","timestamp":"2024-01-01T00:00:00Z","identifier":{"system":"urn:ietf:rfc:3986","value":"urn:uuid:1"},"entry":[{"fullUrl":"urn:uuid:0c8e3d5a-1b2f-4c6d-8e9f-a0b1c2d3e4f5","resource":{"resourceType":"Composition"}}]})"},
        Case{"bdl-11",
             R"({"resourceType":"Bundle","type":"document","timestamp":"2024-01-01T00:00:00Z","identifier":{"system":"urn:ietf:rfc:3986","value":"urn:uuid:1"},"entry":[{"fullUrl":"urn:uuid:0c8e3d5a-1b2f-4c6d-8e9f-a0b1c2d3e4f5","resource":{"resourceType":"Basic"}}]})",
             "Bundle.entry[0].resource",
             R"({"resourceType":"Bundle","type":"document","timestamp":"2024-01-01T00:00:00Z","identifier":{"system":"urn:ietf:rfc:3986","value":"urn:uuid:1"},"entry":[{"fullUrl":"urn:uuid:0c8e3d5a-1b2f-4c6d-8e9f-a0b1c2d3e4f5","resource":{"resourceType":"Composition"}}]})"},
        Case{"bdl-12",
             R"({"resourceType":"Bundle","type":"message","entry":[{"fullUrl":"urn:uuid:1d9f4e6b-2c3a-4d7e-9fa0-b1c2d3e4f5a6","resource":{"resourceType":"Basic"}},{"fullUrl":"urn:uuid:0c8e3d5a-1b2f-4c6d-8e9f-a0b1c2d3e4f5","resource":{"resourceType":"MessageHeader"}}]})",
             "Bundle.entry[0].resource",
             R"({"resourceType":"Bundle","type":"message","entry":[{"fullUrl":"urn:uuid:0c8e3d5a-1b2f-4c6d-8e9f-a0b1c2d3e4f5","resource":{"resourceType":"MessageHeader"}},{"fullUrl":"urn:uuid:1d9f4e6b-2c3a-4d7e-9fa0-b1c2d3e4f5a6","resource":{"resourceType":"Basic"}}]})"},
        Case{"obs-6",
             R"({"resourceType":"Observation","valueString":"x","dataAbsentReason":{"text":"unknown"}})",
             "Observation.dataAbsentReason",
             R"({"resourceType":"Observation","dataAbsentReason":{"text":"unknown"}})"},
        Case{"obs-7",
             R"({"resourceType":"Observation","code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"valueString":"x","component":[{"code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"valueString":"y"}]})",
             "Observation.component[0]",
             R"({"resourceType":"Observation","code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"component":[{"code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"valueString":"y"}]})"},
        Case{"ppc-1", R"({"resourceType":"Consent","patient":{"reference":"Patient/1"}})", "Consent",
             R"({"resourceType":"Consent","patient":{"reference":"Patient/1"},"policyRule":{"text":"x"}})"},
        Case{"pat-1", R"({"resourceType":"Patient","contact":[{"gender":"female"}]})",
             "Patient.contact[0]",
             R"({"resourceType":"Patient","contact":[{"gender":"female","name":{"text":"A B"}}]})"},
        Case{"dom-2",
             R"({"resourceType":"Observation","subject":{"reference":"#p"},"contained":[{"resourceType":"Patient","id":"p","contained":[{"resourceType":"Basic"}]}]})",
             "Observation.contained[0].contained",
             R"({"resourceType":"Observation","subject":{"reference":"#p"},"contained":[{"resourceType":"Patient","id":"p"}]})"},
        Case{"dom-3",
             R"({"resourceType":"Observation","subject":{"reference":"#q"},"contained":[{"resourceType":"Patient","id":"p"}]})",
             "Observation.contained[0]",
             R"({"resourceType":"Observation","contained":[{"resourceType":"Patient","id":"p","link":[{"other":{"reference":"#"},"type":"seealso"}]}]})"},
        Case{"dom-4",
             R"({"resourceType":"Observation","subject":{"reference":"#p"},"contained":[{"resourceType":"Patient","id":"p","meta":{"versionId":"1"}}]})",
             "Observation.contained[0].meta",
             R"({"resourceType":"Observation","subject":{"reference":"#p"},"contained":[{"resourceType":"Patient","id":"p","meta":{"profile":["http://x"]}}]})"},
        Case{"dom-5",
             R"({"resourceType":"Observation","subject":{"reference":"#p"},"contained":[{"resourceType":"Patient","id":"p","meta":{"security":[{"code":"R"}]}}]})",
             "Observation.contained[0].meta.security",
             R"({"resourceType":"Observation","subject":{"reference":"#p"},"meta":{"security":[{"code":"R"}]},"contained":[{"resourceType":"Patient","id":"p"}]})"}),
    [](const testing::TestParamInfo<Case>& info) {
      std::string name = info.param.rule;
      std::erase(name, '-');
      return name + "_" + std::to_string(info.index);
    });

// R4's ppc-2..5 test a placeholder system and never fire; we check the real one, as a warning only.
TEST(Invariants, ConsentScopeWithoutPatientIsAWarning) {
  auto issues = check_text(invariants(),
      R"({"resourceType":"Consent","policyRule":{"text":"x"},"scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"treatment"}]}})");
  const Issue* issue = only(issues, "ppc-5");
  ASSERT_NE(issue, nullptr);
  EXPECT_EQ(issue->severity, Severity::warning);
  EXPECT_EQ(issue->location, "Consent");
  EXPECT_TRUE(check_text(invariants(),
      R"({"resourceType":"Consent","policyRule":{"text":"x"},"patient":{"reference":"Patient/1"},"scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"treatment"}]}})").empty());
}

// ---- QuestionnaireResponse against its contained Questionnaire -----------------------------

// A social prescribing referral form: a group with a choice from a contained ValueSet, a choice
// from answerOptions, a boolean with a follow-up question under its answer.
std::string referral_form(std::string_view answers) {
  std::string s = R"({"resourceType":"QuestionnaireResponse","status":"completed","questionnaire":"#form",
    "contained":[
      {"resourceType":"Questionnaire","id":"form","status":"active","item":[
        {"linkId":"about","type":"group","item":[
          {"linkId":"lonely","type":"choice","answerValueSet":"#often"},
          {"linkId":"contact","type":"choice","answerOption":[{"valueString":"phone"},{"valueString":"letter"},
             {"valueCoding":{"system":"https://example.org/contact","code":"visit"}}]},
          {"linkId":"carer","type":"boolean","item":[{"linkId":"carer-hours","type":"integer"}]},
          {"linkId":"note","type":"display"}]}]},
      {"resourceType":"ValueSet","id":"often","status":"active","compose":{"include":[
        {"system":"https://example.org/often","concept":[{"code":"never"},{"code":"sometimes"},{"code":"often"}]}]}}],
    "item":[{"linkId":"about","item":[)";
  s += answers;
  s += "]}]}";
  return s;
}

TEST(QuestionnaireResponse, AnswersFitTheirContainedQuestionnaire) {
  auto good = check_text(invariants(), referral_form(R"(
      {"linkId":"lonely","answer":[{"valueCoding":{"system":"https://example.org/often","code":"sometimes"}}]},
      {"linkId":"contact","answer":[{"valueString":"letter"}]},
      {"linkId":"carer","answer":[{"valueBoolean":true,"item":[{"linkId":"carer-hours","answer":[{"valueInteger":20}]}]}]})"));
  EXPECT_EQ(errors(good), 0u) << describe(good);
  auto visit = check_text(invariants(), referral_form(R"(
      {"linkId":"contact","answer":[{"valueCoding":{"system":"https://example.org/contact","code":"visit","display":"Home visit"}}]})"));
  EXPECT_EQ(errors(visit), 0u) << describe(visit);
}

TEST(QuestionnaireResponse, ChoiceAnswersMustBeOptions) {
  // The reference validator's nested-questionnaire case: a code without its system.
  auto no_system = check_text(invariants(), referral_form(R"(
      {"linkId":"lonely","answer":[{"valueCoding":{"code":"often"}}]})"));
  const Issue* issue = only(no_system, "qr-answer-option");
  ASSERT_NE(issue, nullptr);
  EXPECT_EQ(issue->location, "QuestionnaireResponse.item[0].item[0].answer[0]");
  EXPECT_NE(issue->diagnostics.find("no system"), std::string::npos) << issue->diagnostics;
  auto not_listed = check_text(invariants(), referral_form(R"(
      {"linkId":"lonely","answer":[{"valueCoding":{"system":"https://example.org/often","code":"always"}}]})"));
  EXPECT_NE(only(not_listed, "qr-answer-option"), nullptr);
  auto not_an_option = check_text(invariants(), referral_form(R"(
      {"linkId":"contact","answer":[{"valueString":"email"}]})"));
  issue = only(not_an_option, "qr-answer-option");
  ASSERT_NE(issue, nullptr);
  EXPECT_EQ(issue->location, "QuestionnaireResponse.item[0].item[0].answer[0]");
}

TEST(QuestionnaireResponse, AnswerTypesFollowTheItemType) {
  auto wrong = check_text(invariants(), referral_form(R"(
      {"linkId":"carer","answer":[{"valueString":"yes"}]})"));
  const Issue* issue = only(wrong, "qr-answer-type");
  ASSERT_NE(issue, nullptr);
  EXPECT_NE(issue->diagnostics.find("valueBoolean"), std::string::npos) << issue->diagnostics;
  auto display = check_text(invariants(), referral_form(R"(
      {"linkId":"note","answer":[{"valueString":"read"}]})"));
  issue = only(display, "qr-answer-type");
  ASSERT_NE(issue, nullptr);
  EXPECT_EQ(issue->location, "QuestionnaireResponse.item[0].item[0].answer");
  // A choice answered with a type none of its options has.
  EXPECT_NE(only(check_text(invariants(), referral_form(R"({"linkId":"contact","answer":[{"valueInteger":1}]})")),
                 "qr-answer-type"),
            nullptr);
}

TEST(QuestionnaireResponse, LinkIdsMustBeTheQuestionnairesInTheirPlace) {
  auto unknown = check_text(invariants(), referral_form(R"({"linkId":"housing","answer":[{"valueString":"x"}]})"));
  const Issue* issue = only(unknown, "qr-linkid");
  ASSERT_NE(issue, nullptr);
  EXPECT_EQ(issue->location, "QuestionnaireResponse.item[0].item[0].linkId");
  // carer-hours belongs under carer's answer, not beside it.
  auto misplaced = check_text(invariants(), referral_form(R"({"linkId":"carer-hours","answer":[{"valueInteger":3}]})"));
  issue = only(misplaced, "qr-linkid");
  ASSERT_NE(issue, nullptr);
  EXPECT_NE(issue->diagnostics.find("under item 'carer'"), std::string::npos) << issue->diagnostics;
}

TEST(QuestionnaireResponse, OnlyAContainedQuestionnaireIsChecked) {
  // A canonical Questionnaire would need fetching: nothing is said about the answers.
  std::string external = referral_form(R"({"linkId":"housing","answer":[{"valueString":"x"}]})");
  external.replace(external.find("\"#form\""), 7, "\"https://example.org/Questionnaire/referral\"");
  auto outside = check_text(invariants(), external);
  EXPECT_EQ(std::count_if(outside.begin(), outside.end(), [](const Issue& i) { return i.rule.starts_with("qr-"); }), 0)
      << describe(outside);
  // A value set that does not spell out its codes (a filter) is not guessed at.
  std::string filtered = referral_form(R"({"linkId":"lonely","answer":[{"valueCoding":{"code":"x"}}]})");
  filtered.replace(filtered.find(R"("concept")"), 9, R"("filter":[{"property":"a","op":"=","value":"b"}],"x")");
  auto issues = check_text(invariants(), filtered);
  EXPECT_EQ(std::count_if(issues.begin(), issues.end(), [](const Issue& i) { return i.rule == "qr-answer-option"; }), 0)
      << describe(issues);
}

// ---- UK rules -----------------------------------------------------------------------------

constexpr const char* nhs_patient = R"({"resourceType":"Patient","identifier":[
  {"system":"https://fhir.nhs.uk/Id/nhs-number","value":"%s"}]})";

std::vector<Issue> patient_with_nhs_number(const RuleSet& rules, std::string_view number) {
  std::string text = nhs_patient;
  text.replace(text.find("%s"), 2, number);
  return check_text(rules, text);
}

TEST(UkRules, NhsNumberCheckDigitIsAnErrorByDefault) {
  EXPECT_EQ(errors(patient_with_nhs_number(uk(), "9000000009")), 0u);
  auto issues = patient_with_nhs_number(uk(), "9000000015");
  if (const Issue* i = only(issues, "uk-nhs-number")) {
    EXPECT_EQ(i->severity, Severity::error);
    EXPECT_EQ(i->location, "Patient.identifier[0].value");
    EXPECT_NE(i->diagnostics.find("9000000015"), std::string::npos);
  }
}

TEST(UkRules, NhsNumberCheckDigitCanBeAWarning) {
  auto lenient = make_uk_rules({schema_dir, false});
  auto issues = patient_with_nhs_number(*lenient, "9000000015");
  if (const Issue* i = only(issues, "uk-nhs-number")) {
    EXPECT_EQ(i->severity, Severity::warning);
  }
  // A placeholder is not a number at all: still an error.
  issues = patient_with_nhs_number(*lenient, "$nhs-number");
  if (const Issue* i = only(issues, "uk-nhs-number")) {
    EXPECT_EQ(i->severity, Severity::error);
  }
}

TEST(UkRules, OdsCodeOnIdentifiersAndReferences) {
  auto issues = check_text(uk(), R"({"resourceType":"ServiceRequest",
    "requester":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"$ods-code"}},
    "performer":[{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-site-code","value":"RR813"}}]})");
  if (const Issue* i = only(issues, "uk-ods-code")) {
    EXPECT_EQ(i->location, "ServiceRequest.requester.identifier.value");
  }
  issues = check_text(uk(), R"({"resourceType":"Organization","identifier":[
    {"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"rr8"}]})");
  only(issues, "uk-ods-code");
  issues = check_text(uk(), R"({"resourceType":"Organization","identifier":[
    {"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"RR8"}]})");
  EXPECT_TRUE(issues.empty()) << describe(issues);
}

TEST(UkRules, SnomedConceptIdsAndConditionCodeSystem) {
  auto issues = check_text(uk(), R"({"resourceType":"Condition","code":{"coding":[
    {"system":"http://snomed.info/sct","code":"22298007"}]}})");
  if (const Issue* i = only(issues, "uk-snomed")) {
    EXPECT_EQ(i->location, "Condition.code.coding[0].code");
    EXPECT_TRUE(i->is_error());
  }
  issues = check_text(uk(), R"({"resourceType":"Condition","code":{"coding":[
    {"system":"http://hl7.org/fhir/sid/icd-10","code":"I21"}]}})");
  if (const Issue* i = only(issues, "uk-snomed")) {
    EXPECT_EQ(i->severity, Severity::warning);
    EXPECT_EQ(i->location, "Condition.code");
  }
  issues = check_text(uk(), R"({"resourceType":"Condition","code":{"coding":[
    {"system":"http://snomed.info/sct","code":"22298006"}]}})");
  EXPECT_TRUE(issues.empty()) << describe(issues);
}

TEST(UkRules, LegacyExtensionUrlsNameTheReplacement) {
  auto issues = check_text(uk(), R"({"resourceType":"Patient","extension":[
    {"url":"https://fhir.nhs.uk/STU3/StructureDefinition/Extension-CareConnect-EthnicCategory-1",
     "valueCodeableConcept":{"text":"x"}}]})");
  if (const Issue* i = only(issues, "uk-legacy-extension")) {
    EXPECT_EQ(i->code, "not-supported");
    EXPECT_EQ(i->location, "Patient.extension[0].url");
    EXPECT_NE(i->diagnostics.find(
                  "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory"),
              std::string::npos)
        << i->diagnostics;
  }
  issues = check_text(uk(), R"({"resourceType":"Patient","extension":[
    {"url":"https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory",
     "valueCodeableConcept":{"text":"x"}}]})");
  EXPECT_EQ(errors(issues), 0u) << describe(issues);
}

constexpr const char* vcse_referral = R"({"resourceType":"ServiceRequest",
  "meta":{"profile":["https://example.org/fhir/StructureDefinition/VcseReferral"]},
  "contained":[{"resourceType":"Patient","id":"p","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9000000009"}]}],
  "subject":{"reference":"#p"},"intent":"order","status":"active",
  "category":[{"coding":[{"system":"http://snomed.info/sct","code":"306206005"}]}],
  "requester":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"A81001"}},
  "reasonCode":[{"text":"loneliness"}]})";

TEST(PartnerProfile, ExampleProfileAcceptsAConformingReferral) {
  auto issues = check_text(uk(), vcse_referral);
  EXPECT_EQ(errors(issues), 0u) << describe(issues);
}

TEST(PartnerProfile, EachCheckKindRejects) {
  auto doc = parse(vcse_referral);
  doc["intent"].SetString("plan");
  doc["category"][0]["coding"][0]["code"].SetString("3457005");  // allowed
  doc["contained"][0]["identifier"][0]["system"].SetString("https://example.org/mrn");
  doc.RemoveMember("reasonCode");
  doc["requester"].RemoveMember("identifier");
  doc["requester"].AddMember("reference", "Organization/1", doc.GetAllocator());
  auto issues = check_resource(uk(), doc);
  if (auto i = only(issues, "vcse-referral-intent")) {
    EXPECT_EQ(i->location, "ServiceRequest.intent");
  }
  if (auto i = only(issues, "vcse-referral-reason")) {
    EXPECT_EQ(i->code, "required");
  }
  only(issues, "vcse-referral-requester");
  if (auto i = only(issues, "vcse-referral-patient-nhs-number")) {
    EXPECT_EQ(i->location, "ServiceRequest.contained.identifier");
  }
  EXPECT_EQ(errors(issues), 4u) << describe(issues);

  doc["category"][0]["coding"][0]["code"].SetString("183444007");
  issues = check_resource(uk(), doc);
  if (auto i = only(issues, "vcse-referral-category")) {
    EXPECT_EQ(i->location, "ServiceRequest.category[0]");
  }
}

TEST(PartnerProfile, DoesNotApplyWithoutItsMetaProfile) {
  auto doc = parse(vcse_referral);
  doc.RemoveMember("meta");
  doc["intent"].SetString("plan");
  doc.RemoveMember("reasonCode");
  auto issues = check_resource(uk(), doc);
  EXPECT_TRUE(issues.empty()) << describe(issues);
}

struct TempDir {
  test::TempDir temp{"tellonce-rules"};
  fs::path path = temp.path();
  TempDir() { fs::create_directories(path / "profiles"); }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(path / "profiles" / name) << text;
  }
};

TEST(PartnerProfile, LoadedFromTheDirectoryAtStartUp) {
  TempDir dir;
  dir.write("always.json", R"({"name":"p","applies_to":"always","resources":{"Patient":[
    {"rule":"p-gender","check":"code-in","path":"gender","codes":["female","male"]}]}})");
  auto rules = make_uk_rules({dir.path, true});
  auto issues = check_text(*rules, R"({"resourceType":"Patient","gender":"unknown"})");
  if (auto i = only(issues, "p-gender")) {
    EXPECT_EQ(i->location, "Patient.gender");
  }
  EXPECT_TRUE(check_text(*rules, R"({"resourceType":"Patient","gender":"male"})").empty());
}

TEST(PartnerProfile, BadFileIsAStartUpErrorNamingTheFile) {
  TempDir dir;
  dir.write("broken.json", R"({"name":"b","applies_to":"always","resources":{"Patient":[
    {"rule":"x","check":"sometimes","path":"gender"}]}})");
  try {
    make_uk_rules({dir.path, true});
    FAIL() << "expected a start-up error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("broken.json"), std::string::npos) << e.what();
  }
  TempDir other;
  other.write("scoped.json", R"({"name":"s","applies_to":{"meta_profile":"http://x"},
    "identifiers":[{"system":"http://y","format":"ods-code","rule":"y"}]})");
  EXPECT_THROW(make_uk_rules({other.path, true}), std::runtime_error);
  TempDir third;
  third.write("bad.json", "{ not json");
  EXPECT_THROW(make_uk_rules({third.path, true}), std::runtime_error);
}

// ---- the shared sample data ----------------------------------------------------------------

rapidjson::Document load(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  rapidjson::Document doc;
  doc.Parse(text.str().c_str());
  return doc;
}

std::vector<Issue> check_file(const fs::path& file) {
  auto doc = load(file);
  EXPECT_FALSE(doc.HasParseError()) << file;
  if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("resourceType")) return {};
  auto issues = check_resource(invariants(), doc);
  auto more = check_resource(uk(), doc);
  issues.insert(issues.end(), more.begin(), more.end());
  return issues;
}

TEST(RulesSampleData, UkCoreExamplesPassExceptTheKnownDefect) {
  SKIP_WITHOUT_SHARED_DATA();
  const fs::path dir = shared_data / "ukcore-examples/json-converted";
  int files = 0;
  for (auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".json") continue;
    ++files;
    auto issues = check_file(e.path());
    std::vector<Issue> errs;
    for (auto& i : issues)
      if (i.is_error()) errs.push_back(i);
    if (e.path().filename() == "UKCore-Patient-BabyPatient-Example.json") {
      ASSERT_EQ(errs.size(), 1u) << describe(errs);
      EXPECT_EQ(errs[0].rule, "uk-nhs-number");
      EXPECT_EQ(errs[0].location, "Patient.identifier[0].value");
      EXPECT_NE(errs[0].diagnostics.find("9912003890"), std::string::npos);
    } else {
      EXPECT_TRUE(errs.empty()) << e.path().filename() << "\n" << describe(errs);
    }
  }
  EXPECT_EQ(files, 215);
}

// Everything else in the shared data: spec examples, PDS mocks, BaRS, converter output. Errors
// other than NHS numbers are real defects in the upstream files, listed here with one location.
TEST(RulesSampleData, OtherExamplesHaveOnlyTheirKnownDefects) {
  SKIP_WITHOUT_SHARED_DATA();
  // Each file's known defects: a rule and one location it must be reported at.
  const std::map<std::string, std::vector<std::pair<std::string, std::string>>> known = {
      {"pds-examples/sandbox-mocks/Personal_Details_RelatedPersonBundle.json",
       {{"ele-1", "Bundle.entry[0].resource.patient"}}},  // "patient": {}
      {"bars-api-examples/current/service_request/GET-success.json",
       {{"bdl-5", "Bundle.entry[0]"}}},  // the entry is the resource itself, not {"resource": ...}
      {"bars-api-examples/v1.4.0/service_request/GET-success.json", {{"bdl-5", "Bundle.entry[0]"}}},
      // Search results whose entries have no fullUrl (R4 requires one outside transactions and batches).
      {"bars-api-examples/current/document_reference/GET-success.json",
       {{"bundle-fullurl-required", "Bundle.entry[0]"}}},
      {"bars-api-examples/current/message_definition/MessageDefinition_ServiceRequest-request_CaseTransfer.json",
       {{"bundle-fullurl-required", "Bundle.entry[0]"}}},
      {"bars-api-examples/v1.4.0/message_definition/MessageDefinition_ServiceRequest-request_CaseTransfer.json",
       {{"bundle-fullurl-required", "Bundle.entry[0]"}}},
      // A message whose urn:uuid references name no entry (one is not even a uuid: "...e21ea9ggb4hj").
      // ... and a value set url given as a Coding's system.
      {"bars-api-examples/current/process_message/response/ValidationRequest (HTTP Response) .json",
       {{"bundle-reference-unresolved", "Bundle.entry[2].resource.episodeOfCare[0].reference"},
        {"bundle-reference-unresolved", "Bundle.entry[9].resource.organization.reference"},
        {"coding-core-system",
         "Bundle.entry[3].resource.contact[0].extension[0].extension[0].valueCodeableConcept.coding[0].system"}}},
      {"bars-api-examples/v1.4.0/process_message/response/ValidationRequest (HTTP Response) .json",
       {{"bundle-reference-unresolved", "Bundle.entry[2].resource.episodeOfCare[0].reference"},
        {"bundle-reference-unresolved", "Bundle.entry[9].resource.organization.reference"},
        {"coding-core-system",
         "Bundle.entry[3].resource.contact[0].extension[0].extension[0].valueCodeableConcept.coding[0].system"}}},
      // Value set urls given as a Coding's system (coding-core-system).
      {"bars-api-examples/current/invalid-base64.json",
       {{"coding-core-system", "OperationOutcome.issue[0].details.coding[0].system"}}},
      {"bars-api-examples/v1.4.0/invalid-base64.json",
       {{"coding-core-system", "OperationOutcome.issue[0].details.coding[0].system"}}},
      {"bars-api-examples/current/malformed-target-identifier.json",
       {{"coding-core-system", "OperationOutcome.issue[0].details.coding[0].system"}}},
      {"bars-api-examples/v1.4.0/malformed-target-identifier.json",
       {{"coding-core-system", "OperationOutcome.issue[0].details.coding[0].system"}}},
      {"bars-api-examples/current/slots/GET-success.json",
       {{"coding-core-system", "Bundle.entry[3].resource.serviceType[0].coding[0].system"}}},
      {"bars-api-examples/v1.4.0/slots/GET-success.json",
       {{"coding-core-system", "Bundle.entry[3].resource.serviceType[0].coding[0].system"}}},
      {"bars-api-examples/v1.4.0/document_reference/id/GET-success.json",
       {{"uk-ods-code", "DocumentReference.custodian.identifier.value"}}},  // "$ods-code"
      // PATCH bodies: a booked Appointment without start and end (app-3) read as a whole resource.
      {"bars-api-examples/v1.4.0/appointment/PATCH-body.json", {{"app-3", "Appointment"}}},
      {"bars-api-examples/current/appointment/PATCH-body.json", {{"app-3", "Appointment"}}},
      {"hl7v2-ms-fhir-converter/expected-fhir-r4/ADT01-23-expected.json",
       {{"cpt-2", "Bundle.entry[3].resource.telecom[0]"},  // telecom without system
        {"bundle-fullurl", "Bundle.entry[5].fullUrl"}}},    // "urn:uuid:" with no uuid
      {"hl7v2-ms-fhir-converter/expected-fhir-r4/ADT01-28-expected.json",
       {{"cpt-2", "Bundle.entry[3].resource.telecom[0]"}}},
      {"hl7v2-ms-fhir-converter/expected-fhir-r4/LAB-ORU-1-expected.json",
       {{"cpt-2", "Bundle.entry[2].resource.telecom[0]"}}},
      {"hl7v2-ms-fhir-converter/expected-fhir-r4/ADT04-23-expected.json",
       {{"cpt-2", "Bundle.entry[4].resource.contact[0].telecom[0]"},
        {"org-1", "Bundle.entry[16].resource"}}},  // an Organization with neither name nor identifier
      {"hl7v2-ms-fhir-converter/expected-fhir-r4/ADT04-28-expected.json",
       {{"cpt-2", "Bundle.entry[3].resource.telecom[0]"}}},
      {"hl7v2-ms-fhir-converter/expected-fhir-r4/LAB-ORU-2-expected.json",
       {{"cpt-2", "Bundle.entry[2].resource.telecom[0]"}}},
      {"hl7v2-ms-fhir-converter/expected-fhir-r4/ORU-R01-RMGEAD-expected.json",
       {{"cpt-2", "Bundle.entry[4].resource.telecom[0]"}}},
  };
  int files = 0, defects = 0;
  for (auto folder : {"fhir-r4-spec-examples", "pds-examples", "bars-api-examples",
                      "hl7v2-ms-fhir-converter/expected-fhir-r4"}) {
    for (auto& e : fs::recursive_directory_iterator(shared_data / folder)) {
      if (e.path().extension() != ".json") continue;
      auto doc = load(e.path());
      if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("resourceType")) continue;
      ++files;
      auto issues = check_resource(invariants(), doc);
      auto more = check_resource(uk(), doc);
      issues.insert(issues.end(), more.begin(), more.end());
      more = check_resource(conformance(), doc);
      issues.insert(issues.end(), more.begin(), more.end());
      auto it = known.find(fs::relative(e.path(), shared_data).generic_string());
      std::vector<Issue> unexpected;
      std::set<std::pair<std::string, std::string>> found;
      for (auto& i : issues) {
        if (!i.is_error() || i.rule == "uk-nhs-number") continue;
        bool expected_rule = false;
        if (it != known.end())
          for (auto& [rule, location] : it->second)
            if (i.rule == rule) {
              expected_rule = true;
              if (i.location == location) found.insert({rule, location});
            }
        if (!expected_rule) unexpected.push_back(i);
      }
      if (it != known.end()) {
        for (auto& defect : it->second) {
          EXPECT_TRUE(found.count(defect)) << e.path() << " should report " << defect.first << " at "
                                           << defect.second;
          defects += found.count(defect);
        }
      }
      EXPECT_TRUE(unexpected.empty()) << e.path() << "\n" << describe(unexpected);
    }
  }
  EXPECT_GT(files, 100);
  EXPECT_GE(defects, 29);
}

TEST(RulesSampleData, PdsCompoundNameHasABadNhsNumber) {
  SKIP_WITHOUT_SHARED_DATA();
  auto issues = check_file(shared_data / "pds-examples/sandbox-mocks/PatientCompoundName.json");
  auto i = only(issues, "uk-nhs-number");
  ASSERT_TRUE(i);
  EXPECT_TRUE(i->is_error());
  EXPECT_NE(i->diagnostics.find("9000000015"), std::string::npos);
  EXPECT_EQ(i->location, "Bundle.entry[0].resource.identifier[0].value");  // a searchset
}

TEST(RulesSampleData, BarsExamplesReportBadNhsNumbersWithLocation) {
  SKIP_WITHOUT_SHARED_DATA();
  std::map<std::string, int> found;  // offending value -> times reported
  for (auto& e : fs::recursive_directory_iterator(shared_data / "bars-api-examples")) {
    if (e.path().extension() != ".json") continue;
    auto doc = load(e.path());
    if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("resourceType")) continue;
    for (auto& i : check_resource(uk(), doc)) {
      if (i.rule != "uk-nhs-number") continue;
      EXPECT_TRUE(i.location.ends_with(".value")) << i.location;
      EXPECT_NE(i.location.find(".identifier"), std::string::npos) << i.location;
      for (auto number : {"3478526985", "$nhs-number"})
        if (i.diagnostics.find(number) != std::string::npos) ++found[number];
    }
  }
  // SOURCES.md also names 7778521234, but no file in bars-api-examples contains it.
  EXPECT_GT(found["3478526985"], 0);
  EXPECT_GT(found["$nhs-number"], 0);
}

// The same through the broker's validator (structural engine + these rule sets).
const Validator& full_validator() {
  static auto v = make_fhir_validator({schema_dir, true});
  return *v;
}

TEST(FullValidator, ReportsTheKnownNhsNumberDefectsWithLocation) {
  SKIP_WITHOUT_SHARED_DATA();
  struct Known {
    const char* file;
    const char* location;
    const char* number;
  };
  for (auto k : {Known{"ukcore-examples/json-converted/UKCore-Patient-BabyPatient-Example.json",
                       "Patient.identifier[0].value", "9912003890"},
                 Known{"pds-examples/sandbox-mocks/PatientCompoundName.json",
                       "Bundle.entry[0].resource.identifier[0].value", "9000000015"},
                 Known{"bars-api-examples/v1.4.0/document_reference/id/GET-success.json",
                       "DocumentReference.subject.identifier.value", "$nhs-number"}}) {
    auto doc = load(shared_data / k.file);
    ASSERT_FALSE(doc.HasParseError()) << k.file;
    std::vector<Issue> issues;
    full_validator().validate(doc, issues);
    if (const Issue* i = only(issues, "uk-nhs-number")) {
      EXPECT_EQ(i->location, k.location) << k.file;
      EXPECT_NE(i->diagnostics.find(k.number), std::string::npos) << i->diagnostics;
      EXPECT_TRUE(i->is_error());
    }
  }
}

TEST(FullValidator, UkCoreExamplesHaveNoRuleErrorsButTheKnownDefect) {
  SKIP_WITHOUT_SHARED_DATA();
  int files = 0;
  for (auto& e : fs::directory_iterator(shared_data / "ukcore-examples/json-converted")) {
    auto doc = load(e.path());
    ASSERT_FALSE(doc.HasParseError()) << e.path();
    ++files;
    std::vector<Issue> issues, errs;
    full_validator().validate(doc, issues);
    for (auto& i : issues)
      if (i.is_error()) errs.push_back(i);
    if (e.path().filename() == "UKCore-Patient-BabyPatient-Example.json") {
      EXPECT_EQ(errs.size(), 1u) << describe(errs);
    } else if (e.path().filename() == "Extension-UKCore-ConditionEpisode-Example.json") {
      // Not in SOURCES.md: the extension carries both valueCode and valueCodeableConcept.
      ASSERT_EQ(errs.size(), 1u) << describe(errs);
      EXPECT_EQ(errs[0].location, "Condition.extension[0].valueCodeableConcept");
    } else
      EXPECT_TRUE(errs.empty()) << e.path().filename() << "\n" << describe(errs);
  }
  EXPECT_EQ(files, 215);
}

}  // namespace
}  // namespace tellonce
