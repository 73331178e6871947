// Small, valid FHIR R4 / UK Core records for integration tests.
#pragma once

#include <string>

namespace tellonce::itest {

// A 10-digit NHS number with a valid modulus-11 check digit, derived from n.
std::string nhs_number(int n);

std::string patient(const std::string& nhs, const std::string& gp_ods, const std::string& id = "p1",
                    const std::string& birth_date = "1980-04-12");
std::string observation(const std::string& nhs, const std::string& value = "72");
// A BaRS-style message Bundle: MessageHeader first, then a ServiceRequest and its Patient.
std::string referral_message(const std::string& message_header_id, const std::string& nhs, const std::string& gp_ods);

}  // namespace tellonce::itest
