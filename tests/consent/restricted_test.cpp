// Restricted records: locating details removed for partners not entitled, counted, never quoted.
#include "broker/minimise/restricted.hpp"
#include "tellonce/json.hpp"

#include <gtest/gtest.h>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace tellonce {
namespace {

const std::string kRestrictedPatient = R"({"resourceType":"Patient","id":"p1",
 "meta":{"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}]},
 "identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9434765919"}],
 "name":[{"family":"Example"}],
 "telecom":[{"system":"phone","value":"01632 960000"},{"system":"email","value":"a@example.org"}],
 "address":[{"postalCode":"LS1 1AA"}],
 "contact":[{"telecom":[{"system":"phone","value":"01632 960001"}]},
            {"name":{"family":"Kin"},"address":{"postalCode":"LS2 2BB"}}],
 "extension":[{"url":"https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NominatedPharmacy",
               "valueReference":{"identifier":{"value":"FA123"}}}],
 "generalPractitioner":[{"identifier":{"value":"A81001"}}]})";

std::string text(const rapidjson::Value& v) {
  rapidjson::StringBuffer b;
  rapidjson::Writer<rapidjson::StringBuffer> w(b);
  v.Accept(w);
  return b.GetString();
}

TEST(Restricted, RecognisesTheTagAndOnlyIt) {
  auto doc = parse_json(kRestrictedPatient);
  ASSERT_TRUE(doc);
  EXPECT_TRUE(may_be_restricted(kRestrictedPatient));
  EXPECT_TRUE(is_restricted(*doc));
  std::string normal = kRestrictedPatient;
  normal.replace(normal.find("\"code\":\"R\""), 10, "\"code\":\"N\"");
  auto n = parse_json(normal);
  EXPECT_FALSE(is_restricted(*n));
  EXPECT_FALSE(may_be_restricted(R"({"resourceType":"Patient"})"));
}

// The cheap pre-check looks for the code system's name, not any "Confidentiality".
TEST(Restricted, PreCheckWantsTheWholeSystemName) {
  EXPECT_TRUE(may_be_restricted("v3-Confidentiality"));
  EXPECT_FALSE(may_be_restricted("Confidentiality"));
  EXPECT_FALSE(may_be_restricted("x-Confidentiality and v3-Confidentialit"));
  EXPECT_TRUE(may_be_restricted(R"({"text":"Confidentiality","meta":{"security":[{"system":)"
                                R"("http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}]}})"));
  EXPECT_FALSE(may_be_restricted(""));
}

TEST(Restricted, StripsAddressTelecomContactsPracticeAndPharmacy) {
  auto doc = parse_json(kRestrictedPatient);
  auto removed = strip_locating_details(*doc);
  EXPECT_EQ(removed.addresses, 2);   // the patient's and the named contact's
  EXPECT_EQ(removed.telecoms, 3);    // two of the patient's, one of the first contact's
  EXPECT_EQ(removed.practices, 1);
  EXPECT_EQ(removed.contacts, 1);    // the first contact had nothing left
  EXPECT_EQ(removed.extensions, 1);
  const auto out = text(*doc);
  for (const char* gone : {"LS1 1AA", "LS2 2BB", "01632", "a@example.org", "A81001", "FA123"})
    EXPECT_EQ(out.find(gone), std::string::npos) << gone << " in " << out;
  EXPECT_NE(out.find("9434765919"), std::string::npos);  // identifies, does not locate
  EXPECT_NE(out.find("\"Kin\""), std::string::npos);
  EXPECT_EQ(removed.describe().find("LS1"), std::string::npos);
}

TEST(Restricted, EveryPatientAndRelatedPersonOfABundle) {
  const std::string bundle = R"({"resourceType":"Bundle","type":"collection","entry":[
    {"resource":)" + kRestrictedPatient + R"(},
    {"resource":{"resourceType":"RelatedPerson","patient":{"reference":"Patient/p1"},
      "telecom":[{"system":"phone","value":"01632 960002"}],"address":[{"city":"Leeds"}]}},
    {"resource":{"resourceType":"Patient","telecom":[{"system":"phone","value":"01632 960003"}]}}]})";
  auto doc = parse_json(bundle);
  ASSERT_TRUE(doc);
  EXPECT_TRUE(is_restricted(*doc));
  auto removed = strip_locating_details(*doc);
  EXPECT_EQ(removed.telecoms, 5);
  EXPECT_EQ(removed.addresses, 3);
  EXPECT_EQ(text(*doc).find("01632"), std::string::npos);
}

}  // namespace
}  // namespace tellonce
