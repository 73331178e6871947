// HL7 v2 -> FHIR R4: a parsed v2 message becomes a FHIR message Bundle (MessageHeader first,
// then the resources the message describes), following HL7's V2-to-FHIR implementation guide
// and the NHS England ITK conventions. docs/hl7v2-mapping.md lists where each field lands.
//
// Contract
// - V2ToFhir is loaded once at start-up (its tables, from files: load() throws std::exception
//   with file and line on a bad table) and is then immutable: convert() is safe from any thread
//   at once and never throws for any message.
// - A message the converter cannot map is a Failure: Errc::unsupported for a message type or
//   event it does not convert (issue rule "hl7v2-unsupported-event", location "MSH^1^9"),
//   Errc::invalid when a field the mapping needs is missing or unreadable (location in v2 terms).
//   Issues never quote the message's values.
// - The Bundle is not validated here: it goes through the broker's pipeline like any record.
#pragma once

#include "hl7v2/er7.hpp"
#include "tellonce/error.hpp"

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tellonce::hl7v2 {

struct Converted {
  std::string bundle_json;   // the FHIR message Bundle, compact JSON
  std::string event;         // the v2 event, "ADT^A01" (also MessageHeader.eventCoding's code)
  // Where the v2 fields went, so that a FHIR validator's issue can be reported at its v2 field:
  // pairs (FHIR location prefix, v2 location), e.g. ("Bundle.entry[1].resource.identifier[0]",
  // "PID^1^3^1"). The longest matching prefix wins.
  std::vector<std::pair<std::string, std::string>> locations;
  std::vector<Issue> warnings;  // fields read but not mapped that a reader should know about
};

// The v2 location for a FHIR issue location, from Converted::locations; empty when unknown.
std::string v2_location_for(const Converted& converted, std::string_view fhir_location);

class V2ToFhir {
 public:
  // tables_dir: the mapping tables (schemas/hl7v2/ in the source tree and the install).
  static std::unique_ptr<V2ToFhir> load(const std::filesystem::path& tables_dir);
  virtual ~V2ToFhir() = default;
  virtual Result<Converted> convert(const Message& message) const = 0;
};

}  // namespace tellonce::hl7v2
