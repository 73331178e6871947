#include "broker/config/config.hpp"
#include "tellonce/router.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace tellonce {
namespace {

rapidjson::Document json(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.c_str(), text.size());
  EXPECT_FALSE(d.HasParseError()) << text;
  return d;
}

Route route(std::string id, std::vector<std::string> to) {
  Route r;
  r.id = std::move(id);
  r.to = std::move(to);
  return r;
}

std::vector<std::string> matched_ids(const Router& router, const rapidjson::Value& record, std::string_view source = "rtx",
                                     std::string_view event = "") {
  std::vector<std::string> ids;
  for (const auto& m : router.route(RouteInput{source, record, event})) ids.push_back(m.route_id);
  return ids;
}

const std::string patient_a81001 = R"({
  "resourceType": "Patient",
  "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9449306753"}],
  "generalPractitioner": [{"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A81001"}}],
  "multipleBirthInteger": 2
})";

// A Bundle whose Patient sits in the second entry, with GP identifiers in an array of references.
const std::string bundle_with_patient = R"({
  "resourceType": "Bundle", "type": "collection",
  "entry": [
    {"resource": {"resourceType": "Encounter", "status": "finished", "subject": {"reference": "Patient/p1"}}},
    {"resource": {"resourceType": "Patient", "id": "p1",
      "generalPractitioner": [{"identifier": {"value": "B00001"}}, {"identifier": {"value": "A81002"}}]}}
  ]
})";

const std::string bars_event = "https://fhir.nhs.uk/CodeSystem/message-events-bars|servicerequest-request";

TEST(Router, NoConditionsMatchesEverything) {
  Config c;
  c.routes.push_back(route("all", {"gp"}));
  auto router = make_router(c);
  auto doc = json(patient_a81001);
  EXPECT_EQ(matched_ids(*router, doc), std::vector<std::string>{"all"});
}

TEST(Router, ResourceTypeIncludingBundleEntries) {
  Config c;
  auto r = route("enc", {"gp"});
  r.resource_types = {"Encounter", "Condition"};
  c.routes.push_back(r);
  auto b = route("bundle", {"gp"});
  b.resource_types = {"Bundle"};
  c.routes.push_back(b);
  auto router = make_router(c);
  auto patient = json(patient_a81001);
  auto bundle = json(bundle_with_patient);
  EXPECT_TRUE(matched_ids(*router, patient).empty());
  EXPECT_EQ(matched_ids(*router, bundle), (std::vector<std::string>{"enc", "bundle"}));
}

TEST(Router, SourceCondition) {
  Config c;
  auto r = route("from-rtx", {"gp"});
  r.sources = {"rtx", "rxx"};
  c.routes.push_back(r);
  auto router = make_router(c);
  auto doc = json(patient_a81001);
  EXPECT_EQ(matched_ids(*router, doc, "rxx"), std::vector<std::string>{"from-rtx"});
  EXPECT_TRUE(matched_ids(*router, doc, "gp-a81001").empty());
}

TEST(Router, EventFullSystemOrBareCode) {
  Config c;
  auto full = route("full", {"vcse"});
  full.events = {bars_event};
  auto bare = route("bare", {"vcse"});
  bare.events = {"servicerequest-request"};
  auto other_system = route("other-system", {"vcse"});
  other_system.events = {"https://example.org/events|servicerequest-request"};
  c.routes = {full, bare, other_system};
  auto router = make_router(c);
  auto doc = json(R"({"resourceType": "Bundle", "type": "message"})");
  EXPECT_EQ(matched_ids(*router, doc, "rtx", bars_event), (std::vector<std::string>{"full", "bare"}));
  EXPECT_EQ(matched_ids(*router, doc, "rtx", "servicerequest-request"), std::vector<std::string>{"bare"});
  EXPECT_TRUE(matched_ids(*router, doc, "rtx", bars_event + "-cancel").empty());
  EXPECT_TRUE(matched_ids(*router, doc, "rtx", "").empty());
}

TEST(Router, WherePredicateOnTopLevelResource) {
  Config c;
  auto r = route("gp", {"gp-a81001"});
  r.where = {FieldPredicate{"Patient.generalPractitioner.identifier.value", {"A81001"}}};
  c.routes.push_back(r);
  auto n = route("births", {"x"});
  n.where = {FieldPredicate{"Patient.multipleBirthInteger", {"2.0"}}};
  c.routes.push_back(n);
  auto router = make_router(c);
  auto doc = json(patient_a81001);
  EXPECT_EQ(matched_ids(*router, doc), (std::vector<std::string>{"gp", "births"}));
  auto other = json(R"({"resourceType": "Patient", "generalPractitioner": [{"identifier": {"value": "A81002"}}]})");
  EXPECT_TRUE(matched_ids(*router, other).empty());
}

TEST(Router, WherePredicateThroughBundleEntriesAndArrays) {
  Config c;
  auto r = route("gp2", {"gp-a81002"});
  r.where = {FieldPredicate{"Patient.generalPractitioner.identifier.value", {"A81001", "A81002"}}};
  c.routes.push_back(r);
  auto wrong_type = route("encounter-gp", {"gp-a81002"});
  wrong_type.where = {FieldPredicate{"Encounter.generalPractitioner.identifier.value", {"A81002"}}};
  c.routes.push_back(wrong_type);
  auto router = make_router(c);
  auto doc = json(bundle_with_patient);
  EXPECT_EQ(matched_ids(*router, doc), std::vector<std::string>{"gp2"});
}

TEST(Router, AllConditionsMustHold) {
  Config c;
  auto r = route("strict", {"gp"});
  r.resource_types = {"Patient"};
  r.sources = {"rtx"};
  r.where = {FieldPredicate{"Patient.generalPractitioner.identifier.value", {"A81001"}},
             FieldPredicate{"Patient.identifier.value", {"9449306753"}}};
  c.routes.push_back(r);
  auto router = make_router(c);
  auto doc = json(patient_a81001);
  EXPECT_EQ(matched_ids(*router, doc), std::vector<std::string>{"strict"});
  EXPECT_TRUE(matched_ids(*router, doc, "other").empty());
  c.routes[0].where[1].any_of = {"0000000000"};
  EXPECT_TRUE(matched_ids(*make_router(c), doc).empty());
}

TEST(Router, DestinationsAreDeduplicatedInFirstOccurrenceOrder) {
  std::vector<RouteMatch> matches = {{"a", {"gp-1", "vcse"}}, {"b", {"vcse", "gp-2", "gp-1"}}};
  EXPECT_EQ(destinations_of(matches), (std::vector<std::string>{"gp-1", "vcse", "gp-2"}));
  EXPECT_TRUE(destinations_of({}).empty());
}

TEST(RecordFacts, Patient) {
  auto doc = json(patient_a81001);
  auto f = read_record_facts(doc);
  EXPECT_EQ(f.resource_type, "Patient");
  EXPECT_EQ(f.event, "");
  EXPECT_EQ(f.patient_key, "9449306753");
  EXPECT_EQ(f.contained_types, std::vector<std::string>{"Patient"});
}

TEST(RecordFacts, ObservationWithSubject) {
  auto ref = json(R"({"resourceType": "Observation", "subject": {"reference": "Patient/abc"}})");
  EXPECT_EQ(read_record_facts(ref).patient_key, "Patient/abc");
  auto ident = json(R"({"resourceType": "Observation", "subject": {"identifier": {"value": "9449306753"}}})");
  EXPECT_EQ(read_record_facts(ident).patient_key, "9449306753");
  auto none = json(R"({"resourceType": "Observation", "status": "final"})");
  EXPECT_EQ(read_record_facts(none).patient_key, "");
  auto immunization = json(R"({"resourceType": "Immunization", "patient": {"reference": "Patient/p9"}})");
  EXPECT_EQ(read_record_facts(immunization).patient_key, "Patient/p9");
}

TEST(RecordFacts, BundleWithoutNhsNumberUsesEntrySubject) {
  auto doc = json(bundle_with_patient);
  auto f = read_record_facts(doc);
  EXPECT_EQ(f.resource_type, "Bundle");
  EXPECT_EQ(f.patient_key, "Patient/p1");
  EXPECT_EQ(f.contained_types, (std::vector<std::string>{"Bundle", "Encounter", "Patient"}));
}

TEST(RecordFacts, BarsBookingRequestMessage) {
  auto path = std::filesystem::path(TELLONCE_SHARED_DATA) / "bars-api-examples/current/process_message/request/Booking (POST).json";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no BaRS examples at " << path;
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  auto doc = json(text.str());
  auto f = read_record_facts(doc);
  EXPECT_EQ(f.resource_type, "Bundle");
  EXPECT_EQ(f.event, "https://fhir.nhs.uk/CodeSystem/message-events-bars|booking-request");
  EXPECT_EQ(f.patient_key, "9476719931");
  ASSERT_GE(f.contained_types.size(), 4u);
  EXPECT_EQ(f.contained_types[0], "Bundle");
  EXPECT_EQ(f.contained_types[1], "MessageHeader");
  EXPECT_EQ(f.contained_types[2], "Appointment");
  EXPECT_EQ(std::count(f.contained_types.begin(), f.contained_types.end(), "Organization"), 1);

  // The facts feed the router: a bare-code event route and an entry-type route both match.
  Config c;
  auto by_event = route("bookings", {"vcse"});
  by_event.events = {"booking-request"};
  auto by_type = route("appointments", {"gp"});
  by_type.resource_types = {"Appointment"};
  by_type.where = {FieldPredicate{"Patient.identifier.value", {"9476719931"}}};
  c.routes = {by_event, by_type};
  auto matches = make_router(c)->route(RouteInput{"rtx", doc, f.event});
  EXPECT_EQ(destinations_of(matches), (std::vector<std::string>{"vcse", "gp"}));
}

// partners[].may: channel, resource types (each of a Bundle's) and events, each checked only when
// listed; a partner without `may` is refused nothing.
TEST(Router, RefusalFollowsEachPartnersMay) {
  Config c;
  Partner rtx;
  rtx.id = "rtx";
  rtx.may = Partner::Permissions{};
  rtx.may->channels = std::vector<std::string>{"mllp"};
  rtx.may->resource_types = std::vector<std::string>{"Bundle", "MessageHeader", "Patient", "Encounter"};
  rtx.may->events = std::vector<std::string>{"http://terminology.hl7.org/CodeSystem/v2-0003|A01", "A03"};
  Partner open;
  open.id = "open";
  c.partners = {rtx, open};
  auto router = make_router(c);
  const std::string a01 = "http://terminology.hl7.org/CodeSystem/v2-0003|A01";
  const std::vector<std::string> adt = {"Bundle", "MessageHeader", "Patient", "Encounter"};

  EXPECT_EQ(router->refusal("rtx", "mllp", adt, a01), "");
  EXPECT_EQ(router->refusal("rtx", "mllp", adt, "http://terminology.hl7.org/CodeSystem/v2-0003|A03"), "");  // bare code
  EXPECT_EQ(router->refusal("rtx", "fhir", adt, a01),
            "partner rtx may not send on channel fhir (partners[].may.channels)");
  EXPECT_EQ(router->refusal("rtx", "mllp", {"Bundle", "MessageHeader", "Observation"}, a01),
            "partner rtx may not send Observation resources (partners[].may.resource_types)");
  EXPECT_EQ(router->refusal("rtx", "mllp", adt, "http://terminology.hl7.org/CodeSystem/v2-0003|A08"),
            "partner rtx may not send event http://terminology.hl7.org/CodeSystem/v2-0003|A08 (partners[].may.events)");
  EXPECT_EQ(router->refusal("rtx", "mllp", {"Patient"}, ""), "");  // no event: the types decide
  EXPECT_EQ(router->refusal("open", "anything", {"Observation"}, "x|y"), "");
}

}  // namespace
}  // namespace tellonce
