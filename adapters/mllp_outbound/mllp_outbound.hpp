// Outbound HL7 v2 over MLLP (type `mllp`): delivers records to a partner whose system only takes
// HL7 v2, as ADT v2.4 (NHS ITK flavour) rendered from the FHIR record by hl7v2::FhirToV2.
//
// What an attempt comes to (DeliveryResult, partner_code "ACK AA" / "ACK AE" / "ACK AR", detail
// the ACK's MSA-3 and ERR-8 text):
// - AA (or CA): ok. AE (CE): retryable, with the destination's backoff. AR (CR): permanent, the
//   record is dead-lettered at once.
// - No ACK whose MSA-2 is the MSH-10 sent within ack_timeout, a refused or broken connection:
//   retryable, partner_code empty (nothing answered). An ACK for another control id (a late ACK
//   for an earlier message) is discarded, never taken for this one.
// - A record FhirToV2 cannot render (not a Patient, Encounter or message Bundle): permanent.
// Each attempt sends a new control id, "<delivery id>-<attempt>".
//
// Threading: up to `connections` persistent connections per destination (default 1: most v2
// receivers take one at a time), each used by one delivery at a time; further deliveries wait
// for a free one. deliver() resumes its caller on the caller's executor; stop() closes the
// connections and ends waiting deliveries as retryable.
#pragma once

#include "hl7v2/from_fhir.hpp"
#include "hl7v2/tables.hpp"
#include "tellonce/registry.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

namespace tellonce {

struct MllpOutboundSettings {
  std::string address;                      // the receiver, host:port
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds ack_timeout{10000};
  std::string receiving_application;        // MSH-5
  std::string receiving_facility;           // MSH-6
  std::string sending_application = "TELLONCE";  // MSH-3
  std::string sending_facility;             // MSH-4
  std::string processing_id = "P";          // MSH-11
  bool patient_as_a28 = false;              // a Patient as ADT^A28 (new) rather than A31 (update)
  // converted: render every record from its FHIR form. original: a record that came in as HL7 v2
  // is sent as the partner sent it, byte for byte but for MSH-5/MSH-6 when the settings name a
  // receiver (its MSH-10 is the sender's, so the ACK must echo that); other records are rendered.
  enum class Send { converted, original } send = Send::converted;
  int connections = 1;
  std::size_t max_ack_bytes = 1024 * 1024;
  std::filesystem::path tables_dir = hl7v2::default_tables_dir();  // FhirToV2's tables (`tables:`)
  // `tls: { ca_file, client_cert, client_key }`: MLLP over TLS, the receiver verified against
  // ca_file (default: the system's CAs) and named by the address's host; a client certificate
  // when both are given.
  bool tls = false;
  std::string ca_file, client_cert, client_key;
};

OutboundAdapterType mllp_outbound_type();

// The adapter with a renderer of the caller's (tests may use a fake one). `originals` (may be
// null when send is converted) must outlive the adapter.
std::unique_ptr<OutboundAdapter> make_mllp_outbound(const MllpOutboundSettings& settings,
                                                    asio::any_io_executor executor,
                                                    std::shared_ptr<const hl7v2::FhirToV2> renderer,
                                                    OriginalReader* originals);

// The content type inbound `mllp` stores a partner's v2 message under.
inline constexpr std::string_view kHl7v2ContentType = "x-application/hl7-v2+er7";

// A partner's original v2 message readdressed: MSH-5 and MSH-6 replaced by the given values
// when they are not empty (escaped with the message's own delimiters), every other byte kept.
// Its MSH-10 goes in `control_id`. Errc::malformed when the bytes do not start with an MSH.
Result<std::string> readdress_original(std::string_view er7, const std::string& receiving_application,
                                       const std::string& receiving_facility, std::string& control_id);

}  // namespace tellonce
