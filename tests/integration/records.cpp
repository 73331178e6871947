#include "records.hpp"

namespace tellonce::itest {

std::string nhs_number(int n) {
  for (int base = n;; ++base) {
    std::string d = std::to_string(900000000 + (base % 99999999));
    d = d.substr(0, 9);
    int sum = 0;
    for (int i = 0; i < 9; ++i) sum += (d[i] - '0') * (10 - i);
    int check = 11 - sum % 11;
    if (check == 11) check = 0;
    if (check == 10) continue;  // no valid number with this stem
    return d + std::to_string(check);
  }
}

std::string patient(const std::string& nhs, const std::string& gp_ods, const std::string& id,
                    const std::string& birth_date) {
  return R"({"resourceType":"Patient","id":")" + id + R"(",
    "identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" + nhs + R"("}],
    "name":[{"use":"official","family":"Example","given":["Alex"]}],
    "gender":"female","birthDate":")" + birth_date + R"(",
    "generalPractitioner":[{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":")" +
         gp_ods + R"("}}]})";
}

std::string observation(const std::string& nhs, const std::string& value) {
  return R"({"resourceType":"Observation","status":"final",
    "code":{"coding":[{"system":"http://snomed.info/sct","code":"364075005","display":"Heart rate"}]},
    "subject":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" + nhs + R"("}},
    "effectiveDateTime":"2026-11-20T09:30:00Z",
    "valueQuantity":{"value":)" + value + R"(,"unit":"beats/minute","system":"http://unitsofmeasure.org","code":"/min"}})";
}

std::string referral_message(const std::string& mh_id, const std::string& nhs, const std::string& gp_ods) {
  return R"({"resourceType":"Bundle","id":"b-)" + mh_id + R"(","type":"message","timestamp":"2026-11-20T09:30:00Z",
  "entry":[
   {"fullUrl":"urn:uuid:)" + mh_id + R"(","resource":{"resourceType":"MessageHeader","id":")" + mh_id + R"(",
     "eventCoding":{"system":"https://fhir.nhs.uk/CodeSystem/message-events-bars","code":"servicerequest-request"},
     "source":{"endpoint":"https://trust.example.nhs.uk/fhir"},
     "focus":[{"reference":"urn:uuid:5e2a4ad1-0000-4000-8000-000000000002"}]}},
   {"fullUrl":"urn:uuid:5e2a4ad1-0000-4000-8000-000000000002","resource":{"resourceType":"ServiceRequest",
     "status":"active","intent":"order",
     "code":{"coding":[{"system":"http://snomed.info/sct","code":"871711000000103","display":"Social prescribing"}]},
     "subject":{"reference":"urn:uuid:5e2a4ad1-0000-4000-8000-000000000003"}}},
   {"fullUrl":"urn:uuid:5e2a4ad1-0000-4000-8000-000000000003","resource":)" + patient(nhs, gp_ods, "pat1") + R"(}
  ]})";
}

}  // namespace tellonce::itest
