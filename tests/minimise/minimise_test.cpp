// The allow-list filter (nested elements, arrays, choice types, extensions, Bundles, contained
// resources), its compile-time checks against the FHIR definitions, and the Minimiser's refusals.
#include "broker/minimise/minimise.hpp"
#include "broker/validate/schema.hpp"

#include "support/fake_store.hpp"
#include "support/run_async.hpp"

#include <gtest/gtest.h>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace tellonce {
namespace {

const std::filesystem::path schema_dir = std::filesystem::path(TELLONCE_SOURCE_DIR) / "schemas";

const fhir::Schema& schema() {
  static const fhir::Schema s = fhir::Schema::load(schema_dir / "fhir-r4");
  return s;
}

Config config_with(const std::vector<std::string>& paths, const std::string& id = "test-list") {
  Config c;
  c.file = "test.yaml";
  MinimisationList list;
  list.id = id;
  list.line = 1;
  int line = 2;
  for (const auto& p : paths) list.allow.push_back(AllowedPath{p, "minimisation[0].allow[" + std::to_string(line - 2) + "]", line++});
  c.minimisation.push_back(list);
  return c;
}

std::shared_ptr<const AllowList> compiled(const std::vector<std::string>& paths) {
  auto out = compile_minimisation(config_with(paths), schema());
  EXPECT_TRUE(out.problems.empty()) << (out.problems.empty() ? "" : out.problems.front().to_string());
  return out.lists.at("test-list");
}

struct Filtered {
  long removed = 0;
  bool modifier_removed = false;
  rapidjson::Document doc;
  std::string json() const {
    rapidjson::StringBuffer b;
    rapidjson::Writer<rapidjson::StringBuffer> w(b);
    doc.Accept(w);
    return b.GetString();
  }
};

Filtered filter(const AllowList& list, const std::string& json) {
  Filtered f;
  f.doc.Parse(json.c_str());
  EXPECT_FALSE(f.doc.HasParseError()) << json;
  f.removed = list.filter(f.doc, f.doc.GetAllocator(), f.modifier_removed);
  return f;
}

TEST(AllowListFilter, KeepsListedElementsWholeAndPartsOfNestedOnes) {
  auto list = compiled({"Patient.name", "Patient.contact.name"});
  auto f = filter(*list, R"({"resourceType":"Patient","id":"p1","meta":{"profile":["x"]},
    "name":[{"family":"Example","given":["Alex"]}],"birthDate":"1980-04-12","gender":"female",
    "contact":[{"name":{"family":"Kin"},"telecom":[{"system":"phone","value":"0"}]},{"telecom":[{"system":"phone","value":"1"}]}]})");
  EXPECT_EQ(f.json(), R"({"resourceType":"Patient","id":"p1","meta":{"profile":["x"]},"name":[{"family":"Example","given":["Alex"]}],)"
                      R"("contact":[{"name":{"family":"Kin"}}]})");
  // birthDate, gender, the first contact's telecom (1 item), the second contact (left empty).
  EXPECT_EQ(f.removed, 4);
}

TEST(AllowListFilter, ChoiceElementByBaseNameKeepsEveryTypeAndByTypeOnlyThatOne) {
  const std::string obs = R"({"resourceType":"Observation","status":"final","code":{"text":"x"},"valueString":"high"})";
  auto any = filter(*compiled({"Observation.status", "Observation.code", "Observation.value[x]"}), obs);
  EXPECT_EQ(any.json(), obs);
  EXPECT_EQ(any.removed, 0);
  auto base = filter(*compiled({"Observation.status", "Observation.code", "Observation.value"}), obs);
  EXPECT_EQ(base.json(), obs);
  auto quantity_only = filter(*compiled({"Observation.status", "Observation.code", "Observation.valueQuantity"}), obs);
  EXPECT_EQ(quantity_only.json(), R"({"resourceType":"Observation","status":"final","code":{"text":"x"}})");
  EXPECT_EQ(quantity_only.removed, 1);
}

TEST(AllowListFilter, ExtensionsOnlyWhereListedAndPrimitiveCompanionsWithTheirValue) {
  const std::string patient = R"({"resourceType":"Patient","extension":[{"url":"http://e/1","valueString":"a"}],)"
                              R"("birthDate":"1980-04-12","_birthDate":{"extension":[{"url":"http://e/2","valueString":"b"}]},)"
                              R"("gender":"female","_gender":{"id":"g"}})";
  auto without = filter(*compiled({"Patient.birthDate"}), patient);
  EXPECT_EQ(without.json(), R"({"resourceType":"Patient","birthDate":"1980-04-12","_birthDate":{"extension":[{"url":"http://e/2","valueString":"b"}]}})");
  EXPECT_EQ(without.removed, 2);  // the extension, gender (with its companion: one element)
  auto with = filter(*compiled({"Patient.birthDate", "Patient.extension"}), patient);
  EXPECT_NE(with.json().find("http://e/1"), std::string::npos);
  EXPECT_EQ(with.removed, 1);
}

TEST(AllowListFilter, ModifierExtensionRemovedFromKeptElementIsFlagged) {
  auto f = filter(*compiled({"Patient.name"}), R"({"resourceType":"Patient","modifierExtension":[{"url":"http://m","valueBoolean":true}],"name":[{"family":"X"}]})");
  EXPECT_TRUE(f.modifier_removed);
}

TEST(AllowListFilter, BundleEntriesAreFilteredByTheirOwnTypeAndUnlistedTypesGoWithTheirFocus) {
  auto list = compiled({"Patient.name", "ServiceRequest.status", "ServiceRequest.intent", "ServiceRequest.subject"});
  auto f = filter(*list, R"({"resourceType":"Bundle","type":"message","entry":[
    {"fullUrl":"urn:uuid:mh","resource":{"resourceType":"MessageHeader","eventCoding":{"code":"e"},"source":{"endpoint":"x"},
      "focus":[{"reference":"urn:uuid:sr"},{"reference":"urn:uuid:c"}]}},
    {"fullUrl":"urn:uuid:sr","resource":{"resourceType":"ServiceRequest","status":"active","intent":"order","subject":{"reference":"urn:uuid:p"},"note":[{"text":"t"}]}},
    {"fullUrl":"urn:uuid:p","resource":{"resourceType":"Patient","name":[{"family":"X"}],"birthDate":"1980-01-01"}},
    {"fullUrl":"urn:uuid:c","resource":{"resourceType":"Condition","subject":{"reference":"urn:uuid:p"}}},
    {"fullUrl":"urn:uuid:m","resource":{"resourceType":"MedicationStatement","status":"active"}}]})");
  EXPECT_EQ(f.json(), R"({"resourceType":"Bundle","type":"message","entry":[)"
                      R"({"fullUrl":"urn:uuid:mh","resource":{"resourceType":"MessageHeader","eventCoding":{"code":"e"},"source":{"endpoint":"x"},"focus":[{"reference":"urn:uuid:sr"}]}},)"
                      R"({"fullUrl":"urn:uuid:sr","resource":{"resourceType":"ServiceRequest","status":"active","intent":"order","subject":{"reference":"urn:uuid:p"}}},)"
                      R"({"fullUrl":"urn:uuid:p","resource":{"resourceType":"Patient","name":[{"family":"X"}]}}]})");
  // note, birthDate, the Condition and MedicationStatement entries, the focus on the Condition.
  EXPECT_EQ(f.removed, 5);
}

TEST(AllowListFilter, ContainedResourcesOnlyWhenListedEachByItsOwnType) {
  const std::string sr = R"({"resourceType":"ServiceRequest","status":"active","intent":"order","subject":{"reference":"#p"},)"
                         R"("contained":[{"resourceType":"Patient","id":"p","name":[{"family":"X"}],"gender":"male"},)"
                         R"({"resourceType":"Condition","id":"c","subject":{"reference":"#p"}}]})";
  auto with = filter(*compiled({"ServiceRequest.status", "ServiceRequest.intent", "ServiceRequest.subject",
                                "ServiceRequest.contained", "Patient.name"}),
                     sr);
  EXPECT_EQ(with.json(), R"({"resourceType":"ServiceRequest","status":"active","intent":"order","subject":{"reference":"#p"},)"
                         R"("contained":[{"resourceType":"Patient","id":"p","name":[{"family":"X"}]}]})");
  EXPECT_EQ(with.removed, 2);  // gender, the Condition
  auto without = filter(*compiled({"ServiceRequest.status", "ServiceRequest.intent", "ServiceRequest.subject", "Patient.name"}), sr);
  EXPECT_EQ(without.json().find("contained"), std::string::npos);
  EXPECT_EQ(without.removed, 2);  // both contained resources
}

TEST(AllowListFilter, RecordOfAnUnlistedTypeIsNotSendable) {
  auto f = filter(*compiled({"Patient.name"}), R"({"resourceType":"Condition","subject":{"reference":"Patient/1"}})");
  EXPECT_EQ(f.removed, -1);
}

std::vector<ConfigProblem> problems_of(const std::vector<std::string>& paths) {
  return compile_minimisation(config_with(paths), schema()).problems;
}

TEST(AllowListCompile, PathNotInFhirIsReportedAtItsLine) {
  auto p = problems_of({"Patient.name", "Patient.shoeSize", "Fish.name"});
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].line, 3);
  EXPECT_EQ(p[0].path, "minimisation[0].allow[1]");
  EXPECT_NE(p[0].message.find("Patient has no element 'shoeSize'"), std::string::npos);
  EXPECT_EQ(p[1].line, 4);
  EXPECT_NE(p[1].message.find("'Fish' is not a FHIR R4 resource type"), std::string::npos);
}

TEST(AllowListCompile, ListRemovingARequiredElementIsRefused) {
  auto p = problems_of({"Patient.name", "Observation.code", "Observation.subject"});
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].line, 3);  // where the list first names Observation
  EXPECT_EQ(p[0].message, "allow-list 'test-list' would remove Observation.status, which FHIR requires: add Observation.status");
  auto task = problems_of({"Task.status"});
  ASSERT_EQ(task.size(), 1u);
  EXPECT_NE(task[0].message.find("Task.intent"), std::string::npos);
  // Inside a partly kept element, its own required parts: Observation.component.code.
  auto component = problems_of({"Observation.status", "Observation.code", "Observation.component.valueQuantity"});
  ASSERT_EQ(component.size(), 1u);
  EXPECT_NE(component[0].message.find("Observation.component.code"), std::string::npos);
}

TEST(AllowListCompile, ChoiceOfSeveralTypesCannotBeEnteredWithoutNamingOne) {
  auto p = problems_of({"Observation.status", "Observation.code", "Observation.value.value"});
  ASSERT_EQ(p.size(), 1u);
  EXPECT_NE(p[0].message.find("several types"), std::string::npos);
  EXPECT_TRUE(problems_of({"Observation.status", "Observation.code", "Observation.valueQuantity.value"}).empty());
}

class MinimiserTest : public ::testing::Test {
 protected:
  std::unique_ptr<Validator> validator = make_fhir_validator(ValidatorSettings{schema_dir});
  test::FakeStore store;
};

TEST_F(MinimiserTest, MinimisedRecordIsValidatedAndTheNoteCountsWithoutValues) {
  auto list = compiled({"Patient.name", "Patient.identifier"});
  Minimiser m(list, {}, *validator, store);
  auto out = m.apply_lists(R"({"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9000000009"}],)"
                           R"("name":[{"family":"Example"}],"birthDate":"1980-04-12","gender":"female"})",
                           {list.get()});
  ASSERT_EQ(out.kind, MinimiseOutcome::Kind::minimised) << out.note;
  EXPECT_EQ(out.note, "minimised by allow-list test-list: 2 elements removed");
  EXPECT_EQ(out.body.find("birthDate"), std::string::npos);
  EXPECT_NE(out.body.find("9000000009"), std::string::npos);
}

TEST_F(MinimiserTest, InvalidResultIsRefusedNamingTheLocationNotTheValue) {
  // pat-1: a contact needs details or an organization. The list keeps only its gender.
  auto list = compiled({"Patient.contact.gender"});
  Minimiser m(list, {}, *validator, store);
  auto out = m.apply_lists(R"({"resourceType":"Patient","contact":[{"name":{"family":"Kinsman"},"gender":"male"}]})",
                           {list.get()});
  ASSERT_EQ(out.kind, MinimiseOutcome::Kind::refused) << out.body;
  EXPECT_NE(out.note.find("is not valid FHIR (Patient.contact[0] pat-1)"), std::string::npos) << out.note;
  EXPECT_EQ(out.note.find("Kinsman"), std::string::npos);
}

TEST_F(MinimiserTest, UnlistedTypeAndRemovedModifierExtensionAreRefused) {
  auto list = compiled({"Patient.name"});
  Minimiser m(list, {}, *validator, store);
  auto condition = m.apply_lists(R"({"resourceType":"Condition","subject":{"reference":"Patient/1"}})", {list.get()});
  EXPECT_EQ(condition.kind, MinimiseOutcome::Kind::refused);
  EXPECT_EQ(condition.note, "allow-list test-list keeps nothing of a Condition");
  auto modifier = m.apply_lists(R"({"resourceType":"Patient","modifierExtension":[{"url":"http://m","valueBoolean":true}],"name":[{"family":"X"}]})",
                                {list.get()});
  EXPECT_EQ(modifier.kind, MinimiseOutcome::Kind::refused);
}

TEST_F(MinimiserTest, RouteListsApplyOnlyToDeliveriesThoseRoutesMadeAndIntersectWithThePartners) {
  auto partner = compiled({"Patient.name", "Patient.gender"});
  auto route = compiled({"Patient.name", "Patient.birthDate"});
  Minimiser m(partner, {{"route-b", route}}, *validator, store);
  MessageView view;
  LifecycleEvent routed;
  routed.kind = EventKind::routed;
  routed.routes = {"route-a"};
  view.events.push_back(routed);
  store.messages["m1"] = view;
  DeliveryJob job;
  job.message_id = "m1";
  job.body = R"({"resourceType":"Patient","name":[{"family":"X"}],"gender":"male","birthDate":"1980-01-01"})";
  auto by_a = test::run_async(m.apply(job));
  EXPECT_EQ(by_a.note, "minimised by allow-list test-list: 1 element removed");
  EXPECT_NE(by_a.body.find("gender"), std::string::npos);

  store.messages["m1"].events[0].routes = {"route-a", "route-b"};
  auto by_both = test::run_async(m.apply(job));
  EXPECT_EQ(by_both.body, R"({"resourceType":"Patient","name":[{"family":"X"}]})");
  EXPECT_EQ(by_both.note, "minimised by allow-lists test-list, test-list: 2 elements removed");
}

}  // namespace
}  // namespace tellonce
