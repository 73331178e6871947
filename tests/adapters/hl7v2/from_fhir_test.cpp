#include "hl7v2/er7.hpp"
#include "hl7v2/from_fhir.hpp"

#include "support/temp_dir.hpp"
#include "tellonce/json.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace tellonce::hl7v2 {
namespace {

namespace fs = std::filesystem;

const fs::path kTables = fs::path(TELLONCE_SOURCE_DIR) / "schemas" / "hl7v2";

const std::string kPatient = R"({
  "resourceType": "Patient", "id": "p1",
  "identifier": [
    {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9000000009",
     "extension": [{"url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus",
                    "valueCodeableConcept": {"coding": [{"system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland", "code": "01"}]}}]},
    {"system": "https://trust.example/mrn", "value": "RX1-77", "assigner": {"display": "RX1"},
     "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}
  ],
  "name": [{"use": "official", "family": "O'Brien|Smith", "given": ["Ann", "Marie", "Jo"], "prefix": ["Mrs"]},
           {"use": "maiden", "family": "Jones"}],
  "gender": "female",
  "birthDate": "1980-02-29",
  "address": [{"use": "home", "line": ["1 High Street", "Flat 2^3"], "city": "Leeds", "district": "West Yorkshire",
               "postalCode": "LS1 1AA", "country": "GBR"}],
  "telecom": [{"system": "phone", "value": "0113 000 0000", "use": "home"},
              {"system": "phone", "value": "07700 900000", "use": "mobile"},
              {"system": "email", "value": "ann@example.org"},
              {"system": "phone", "value": "0113 111 1111", "use": "work"}],
  "generalPractitioner": [
    {"type": "Organization", "identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "Y06601"},
     "display": "Malton GP Practice"},
    {"type": "Practitioner", "identifier": {"system": "https://fhir.hl7.org.uk/Id/gmp-number", "value": "G5612908"}}
  ]
})";

std::string encounter(std::string_view status, std::string_view cls = "IMP") {
  return std::string(R"({"resourceType": "Encounter", "id": "e1", "status": ")") + std::string(status) +
         R"(", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": ")" + std::string(cls) +
         R"("}, "subject": {"identifier": {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9000000009"}},
  "identifier": [{"value": "V123"}],
  "participant": [{"individual": {"identifier": {"system": "https://fhir.hl7.org.uk/Id/gmc-number", "value": "C3456789"}}}],
  "period": {"start": "2024-01-01T12:30:00+01:00", "end": "2024-01-05T09:00:00.25Z"}})";
}

V2Addressing gp_system() {
  V2Addressing a;
  a.sending_application = "TELLONCE";
  a.sending_facility = "X26";
  a.receiving_application = "GPSYS";
  a.receiving_facility = "A81001";
  return a;
}

class FhirToV2Test : public testing::Test {
 protected:
  Message render_and_parse(std::string_view json, const V2Addressing& to = gp_system()) {
    auto r = converter_->render(json, to, "D-17-1", "20240101120000+0000");
    EXPECT_TRUE(r.has_value()) << (r.has_value() ? "" : r.error().issues.front().diagnostics);
    if (!r.has_value()) return Message{};
    last_ = r.value();
    auto m = parse(r->er7);
    EXPECT_TRUE(m.has_value()) << r->er7;
    return m.has_value() ? std::move(m.value()) : Message{};
  }
  std::unique_ptr<FhirToV2> converter_ = FhirToV2::load(kTables);
  Rendered last_;
};

TEST_F(FhirToV2Test, PatientBecomesAnA31WithTheItkHeader) {
  const Message m = render_and_parse(kPatient);
  EXPECT_EQ(last_.event, "ADT^A31");
  EXPECT_EQ(last_.control_id, "D-17-1");
  EXPECT_EQ(m.message_code(), "ADT");
  EXPECT_EQ(m.trigger_event(), "A31");
  EXPECT_EQ(m.structure(), "ADT_A05");
  EXPECT_EQ(m.control_id(), "D-17-1");
  EXPECT_EQ(m.version(), "2.4");
  EXPECT_EQ(m.processing_id(), "P");
  EXPECT_EQ(m.msh().value(3), "TELLONCE");
  EXPECT_EQ(m.msh().value(4), "X26");
  EXPECT_EQ(m.msh().value(5), "GPSYS");
  EXPECT_EQ(m.msh().value(6), "A81001");
  EXPECT_EQ(m.msh().value(7), "20240101120000+0000");
  EXPECT_EQ(m.charset(), "UNICODE UTF-8");
  EXPECT_EQ(m.msh().value(21), "iTKv1.0");
  ASSERT_NE(m.first("EVN"), nullptr);
  EXPECT_EQ(m.first("EVN")->value(2), "20240101120000+0000");
  ASSERT_NE(m.first("PV1"), nullptr);
  EXPECT_EQ(m.first("PV1")->value(2), "N");
  // Segment order of ADT_A05.
  ASSERT_EQ(m.segments().size(), 5u);
  EXPECT_EQ(m.segments()[1].id(), "EVN");
  EXPECT_EQ(m.segments()[2].id(), "PID");
  EXPECT_EQ(m.segments()[3].id(), "PD1");
  EXPECT_EQ(m.segments()[4].id(), "PV1");
}

TEST_F(FhirToV2Test, NewPatientEventWhenTheDestinationAsksForA28) {
  V2Addressing to = gp_system();
  to.patient_as_a28 = true;
  to.processing_id = "T";
  const Message m = render_and_parse(kPatient, to);
  EXPECT_EQ(m.trigger_event(), "A28");
  EXPECT_EQ(m.structure(), "ADT_A05");
  EXPECT_EQ(m.processing_id(), "T");
  EXPECT_EQ(last_.event, "ADT^A28");
}

TEST_F(FhirToV2Test, NhsNumberAndVerificationStatusLandWhereItkPutsThem) {
  const Message m = render_and_parse(kPatient);
  const Segment* pid = m.first("PID");
  ASSERT_NE(pid, nullptr);
  EXPECT_EQ(pid->value(3, 1, 1, 1), "9000000009");
  EXPECT_EQ(pid->value(3, 4, 1, 1), "NHS");
  EXPECT_EQ(pid->value(3, 5, 1, 1), "NH");
  EXPECT_EQ(pid->value(3, 1, 1, 2), "RX1-77");
  EXPECT_EQ(pid->value(3, 4, 1, 2), "RX1");
  EXPECT_EQ(pid->value(3, 5, 1, 2), "MR");
  EXPECT_EQ(pid->value(32), "NSTS01");
}

TEST_F(FhirToV2Test, NamesGenderBirthDateAddressAndTelecomAreEscaped) {
  const Message m = render_and_parse(kPatient);
  const Segment* pid = m.first("PID");
  ASSERT_NE(pid, nullptr);
  EXPECT_EQ(pid->value(5, 1, 1, 1), "O'Brien|Smith");
  EXPECT_EQ(pid->value(5, 2, 1, 1), "Ann");
  EXPECT_EQ(pid->value(5, 3, 1, 1), "Marie Jo");
  EXPECT_EQ(pid->value(5, 5, 1, 1), "Mrs");
  EXPECT_EQ(pid->value(5, 7, 1, 1), "L");
  EXPECT_EQ(pid->value(5, 1, 1, 2), "Jones");
  EXPECT_EQ(pid->value(5, 7, 1, 2), "M");
  EXPECT_EQ(pid->value(7), "19800229");
  EXPECT_EQ(pid->value(8), "F");
  EXPECT_EQ(pid->value(11, 1), "1 High Street");
  EXPECT_EQ(pid->value(11, 2), "Flat 2^3");
  EXPECT_EQ(pid->value(11, 3), "Leeds");
  EXPECT_EQ(pid->value(11, 4), "West Yorkshire");
  EXPECT_EQ(pid->value(11, 5), "LS1 1AA");
  EXPECT_EQ(pid->value(11, 6), "GBR");
  EXPECT_EQ(pid->value(11, 7), "H");
  EXPECT_EQ(pid->repetition_count(13), 3u);
  EXPECT_EQ(pid->value(13, 1, 1, 1), "0113 000 0000");
  EXPECT_EQ(pid->value(13, 2, 1, 1), "PRN");
  EXPECT_EQ(pid->value(13, 3, 1, 1), "PH");
  EXPECT_EQ(pid->value(13, 3, 1, 2), "CP");
  EXPECT_EQ(pid->value(13, 2, 1, 3), "NET");
  EXPECT_EQ(pid->value(13, 4, 1, 3), "ann@example.org");
  EXPECT_EQ(pid->value(14, 1), "0113 111 1111");
  EXPECT_EQ(pid->value(14, 2), "WPN");
}

TEST_F(FhirToV2Test, GenderCodesFollowHl7Table0001) {
  for (const auto& [fhir, v2] : {std::pair{"male", "M"}, {"female", "F"}, {"other", "O"}, {"unknown", "U"}}) {
    const std::string json = std::string(R"({"resourceType":"Patient","gender":")") + fhir + R"("})";
    const Message m = render_and_parse(json);
    EXPECT_EQ(m.first("PID")->value(8), v2) << fhir;
  }
}

TEST_F(FhirToV2Test, GpPracticeOdsCodeToPd13AndGpCodeToPd14) {
  const Message m = render_and_parse(kPatient);
  const Segment* pd1 = m.first("PD1");
  ASSERT_NE(pd1, nullptr);
  EXPECT_EQ(pd1->value(3, 1), "Malton GP Practice");
  EXPECT_EQ(pd1->value(3, 3), "Y06601");
  EXPECT_EQ(pd1->value(4, 1), "G5612908");
}

TEST_F(FhirToV2Test, EncounterStatusChoosesTheEvent) {
  struct Case {
    const char* status;
    const char* event;
    const char* structure;
  };
  for (const Case& c : {Case{"in-progress", "A01", "ADT_A01"}, Case{"arrived", "A01", "ADT_A01"},
                        Case{"finished", "A03", "ADT_A03"}, Case{"planned", "A08", "ADT_A01"},
                        Case{"cancelled", "A08", "ADT_A01"}}) {
    const Message m = render_and_parse(encounter(c.status));
    EXPECT_EQ(m.trigger_event(), c.event) << c.status;
    EXPECT_EQ(m.structure(), c.structure) << c.status;
    EXPECT_EQ(last_.event, std::string("ADT^") + c.event);
  }
}

TEST_F(FhirToV2Test, EncounterClassPeriodVisitAndConsultantGoToPv1) {
  const Message m = render_and_parse(encounter("finished"));
  const Segment* pv1 = m.first("PV1");
  ASSERT_NE(pv1, nullptr);
  EXPECT_EQ(pv1->value(2), "I");
  EXPECT_EQ(pv1->value(7, 1), "C3456789");
  EXPECT_EQ(pv1->value(7, 9), "GMC");
  EXPECT_EQ(pv1->value(19, 1), "V123");
  EXPECT_EQ(pv1->value(44), "20240101123000+0100");
  EXPECT_EQ(pv1->value(45), "20240105090000.25+0000");
  EXPECT_EQ(m.first("EVN")->value(6), "20240105090000.25+0000");  // A03: when the discharge happened
  // Without its Patient, PID carries the subject's NHS number.
  EXPECT_EQ(m.first("PID")->value(3, 1), "9000000009");
  EXPECT_EQ(m.first("PID")->value(3, 4), "NHS");
  EXPECT_EQ(m.first("PD1"), nullptr);
  for (const auto& [cls, v2] : {std::pair{"AMB", "O"}, {"EMER", "E"}, {"PRENC", "P"}, {"XYZ", "U"}}) {
    const Message each = render_and_parse(encounter("in-progress", cls));
    EXPECT_EQ(each.first("PV1")->value(2), v2) << cls;
  }
}

TEST_F(FhirToV2Test, MessageBundleIsRenderedByItsFocusWithTheReferencedPatient) {
  const std::string bundle = R"({"resourceType": "Bundle", "type": "message", "entry": [
    {"fullUrl": "urn:uuid:h", "resource": {"resourceType": "MessageHeader", "focus": [{"reference": "urn:uuid:e"}]}},
    {"fullUrl": "urn:uuid:p", "resource": )" + kPatient + R"(},
    {"fullUrl": "urn:uuid:e", "resource": {"resourceType": "Encounter", "status": "in-progress",
      "class": {"code": "EMER"}, "subject": {"reference": "urn:uuid:p"}, "period": {"start": "2024-03-01T08:00:00Z"}}}
  ]})";
  const Message m = render_and_parse(bundle);
  EXPECT_EQ(m.trigger_event(), "A01");
  EXPECT_EQ(m.first("PID")->value(5, 1), "O'Brien|Smith");
  EXPECT_EQ(m.first("PID")->value(32), "NSTS01");
  ASSERT_NE(m.first("PD1"), nullptr);
  EXPECT_EQ(m.first("PD1")->value(3, 3), "Y06601");
  EXPECT_EQ(m.first("PV1")->value(2), "E");
  EXPECT_EQ(m.first("PV1")->value(44), "20240301080000+0000");
  EXPECT_EQ(m.first("EVN")->value(6), "20240301080000+0000");
}

TEST_F(FhirToV2Test, BundleWithPatientFocusAndGpResolvedFromEntries) {
  const std::string bundle = R"({"resourceType": "Bundle", "type": "message", "entry": [
    {"fullUrl": "urn:uuid:h", "resource": {"resourceType": "MessageHeader", "focus": [{"reference": "Patient/p9"}]}},
    {"fullUrl": "https://x.example/Organization/o1", "resource": {"resourceType": "Organization", "id": "o1",
      "name": "Leeds Practice", "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "B86001"}]}},
    {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "id": "p9", "gender": "male",
      "generalPractitioner": [{"reference": "Organization/o1"}]}}
  ]})";
  const Message m = render_and_parse(bundle);
  EXPECT_EQ(m.trigger_event(), "A31");
  EXPECT_EQ(m.first("PID")->value(8), "M");
  EXPECT_EQ(m.first("PID")->value(3, 1), "p9");  // no identifier: the resource id, as the sender's
  ASSERT_NE(m.first("PD1"), nullptr);
  EXPECT_EQ(m.first("PD1")->value(3, 1), "Leeds Practice");
  EXPECT_EQ(m.first("PD1")->value(3, 3), "B86001");
}

TEST_F(FhirToV2Test, OtherResourcesAreUnsupportedAndBadJsonMalformed) {
  for (std::string_view json : {R"({"resourceType":"Observation","status":"final"})",
                                R"({"resourceType":"Bundle","type":"message","entry":[]})", R"([1,2])"}) {
    const auto r = converter_->render(json, gp_system(), "C", "20240101");
    ASSERT_FALSE(r.has_value()) << json;
    EXPECT_EQ(r.error().code, Errc::unsupported) << json;
    EXPECT_FALSE(r.error().is_retryable());
  }
  const auto bad = converter_->render("{\"resourceType\":", gp_system(), "C", "20240101");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, Errc::malformed);
}

TEST_F(FhirToV2Test, DatesThatAreNotFhirDatesAreLeftOut) {
  const Message m = render_and_parse(R"({"resourceType":"Patient","birthDate":"01/02/1980"})");
  EXPECT_EQ(m.first("PID")->value(7), "");
  const Message partial = render_and_parse(R"({"resourceType":"Patient","birthDate":"1980-02"})");
  EXPECT_EQ(partial.first("PID")->value(7), "198002");
}

TEST(FhirToV2Tables, ABadTableIsRefusedWithFileAndLine) {
  test::TempDir dir;
  {
    std::ofstream(dir.path() / "out-codes.csv") << "table,fhir_code,v2_code\ngender,male,M\ngender,male,F\n";
  }
  try {
    FhirToV2::load(dir.path());
    FAIL() << "a table with a code listed twice loaded";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("out-codes.csv:3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(FhirToV2::load(dir.path() / "missing"), std::exception);
}

// Every UK Core example Patient (the Patient examples and the Patient-based extension examples)
// renders to an A31 that parses and keeps its NHS number and family name.
TEST(FhirToV2Samples, EveryUkCorePatientRenders) {
  const char* env = std::getenv("TELLONCE_SHARED_DATA");
  const fs::path dir = fs::path(env != nullptr ? env : TELLONCE_SHARED_DATA) / "ukcore-examples" / "json-converted";
  if (!fs::exists(dir)) GTEST_SKIP() << "shared sample data not found at " << dir << " (expected beside the checkout)";
  const auto converter = FhirToV2::load(kTables);
  std::size_t patients = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::ifstream in(e.path(), std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    const std::string json = s.str();
    if (json.find("\"resourceType\": \"Patient\"") == std::string::npos &&
        json.find("\"resourceType\":\"Patient\"") == std::string::npos)
      continue;
    const auto r = converter->render(json, gp_system(), "C1", "20240101120000");
    ASSERT_TRUE(r.has_value()) << e.path();
    const auto m = parse(r->er7);
    ASSERT_TRUE(m.has_value()) << e.path() << "\n" << r->er7;
    EXPECT_EQ(m->trigger_event(), "A31") << e.path();
    const Segment* pid = m->first("PID");
    ASSERT_NE(pid, nullptr) << e.path();
    // What the source says, read independently of the converter.
    const auto doc = parse_json(json);
    ASSERT_TRUE(doc.has_value()) << e.path();
    std::string nhs_number, family;
    if (const auto* ids = json_member(doc.value(), "identifier"); ids != nullptr && ids->IsArray()) {
      for (const auto& id : ids->GetArray())
        if (json_string(json_member(id, "system")) == "https://fhir.nhs.uk/Id/nhs-number" && nhs_number.empty())
          nhs_number = json_string(json_member(id, "value"));
    }
    if (const auto* names = json_member(doc.value(), "name"); names != nullptr && names->IsArray() && !names->Empty())
      family = json_string(json_member((*names)[0], "family"));
    if (!nhs_number.empty()) {
      EXPECT_EQ(pid->value(3, 1), nhs_number) << e.path();
      EXPECT_EQ(pid->value(3, 4), "NHS") << e.path();
    }
    EXPECT_EQ(pid->value(5, 1), family) << e.path();
    ++patients;
  }
  EXPECT_GE(patients, 24u);
}

}  // namespace
}  // namespace tellonce::hl7v2
