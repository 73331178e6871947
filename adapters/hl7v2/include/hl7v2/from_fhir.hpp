// FHIR R4 -> HL7 v2.4 ADT, NHS ITK flavour, for partners whose systems only take v2.
//
// Contract: FhirToV2 is immutable once loaded; render() is safe from any thread and never throws.
// What it renders: a Patient as ADT^A31 (A28 when the settings ask for new-patient events), an
// Encounter by its status (in-progress/arrived A01, finished A03, otherwise A08), and a message
// Bundle by its focus (or its first Patient/Encounter). Anything else is a Failure
// Errc::unsupported (permanent: that record cannot go to that partner as v2).
#pragma once

#include "tellonce/error.hpp"

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace tellonce::hl7v2 {

struct V2Addressing {
  std::string sending_application = "TELLONCE";
  std::string sending_facility;
  std::string receiving_application;   // MSH-5
  std::string receiving_facility;      // MSH-6
  std::string processing_id = "P";     // MSH-11
  bool patient_as_a28 = false;         // new-patient event instead of A31 update
};

struct Rendered {
  std::string er7;          // segments ended by CR, not framed
  std::string control_id;   // the MSH-10 written (an ACK must echo it in MSA-2)
  std::string event;        // "ADT^A31"
};

class FhirToV2 {
 public:
  // Reads tables_dir/out-codes.csv (schemas/hl7v2/); throws std::exception naming the file and
  // line when it is missing or bad. docs/hl7v2-mapping-out.md lists where each element lands.
  static std::unique_ptr<FhirToV2> load(const std::filesystem::path& tables_dir);
  virtual ~FhirToV2() = default;
  // control_id: unique per send (the outbound adapter uses the delivery id and attempt).
  // Bad JSON is the Failure parse_json gives (Errc::malformed); the ER7 is UTF-8 and says so in
  // MSH-18 (UNICODE UTF-8).
  virtual Result<Rendered> render(std::string_view fhir_json, const V2Addressing& to,
                                  std::string_view control_id, std::string_view timestamp) const = 0;
};

}  // namespace tellonce::hl7v2
