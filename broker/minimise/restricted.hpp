// Restricted records (PDS "sensitive" patients): a record tagged restricted has its locating
// details removed before delivery to a partner not marked `restricted_records: entitled`.
//
// Restricted: any resource of the record (the top one, a Bundle entry, a contained resource)
// has meta.security with code R in http://terminology.hl7.org/CodeSystem/v3-Confidentiality.
// Then, in every Patient and RelatedPerson of the record (Bundle entries, nested Bundles and
// contained resources included), these are removed:
//   Patient: address, telecom, generalPractitioner (the registered practice locates the
//            patient; PDS withholds it for sensitive patients too), contact[].address and
//            contact[].telecom (a contact left with no name and no organization goes whole,
//            so FHIR's pat-1 still holds), and the UK Core nominated pharmacy / preferred
//            dispenser / appliance supplier extensions;
//   RelatedPerson: address, telecom.
// Identifiers (the NHS number), names and birth dates stay: they identify, they do not locate.
//
// Pure functions over a parsed record: thread-safe, no I/O. Counts only, never values.
#pragma once

#include <rapidjson/document.h>

#include <string>
#include <string_view>

namespace tellonce {

// Cheap pre-check on the raw body: false means the record cannot be restricted (no parse needed).
bool may_be_restricted(std::string_view body);

// Whether a parsed record is tagged restricted (see above).
bool is_restricted(const rapidjson::Value& record);

// What strip_locating_details removed, by kind.
struct LocatingRemoved {
  long addresses = 0, telecoms = 0, practices = 0, contacts = 0, extensions = 0;
  long total() const { return addresses + telecoms + practices + contacts + extensions; }
  std::string describe() const;  // "2 address(es), 3 telecom(s), 1 generalPractitioner reference(s)"
};

// Removes the locating details from every Patient and RelatedPerson of `record`, in place.
LocatingRemoved strip_locating_details(rapidjson::Value& record);

}  // namespace tellonce
