// HL7 v2 acknowledgements: building the ACK a receiver owes, and reading the ACK a partner sent.
//
// Contract: pure functions, safe from any thread, never throw for any input.
// Errors are never described with the message's values (no names, NHS numbers, dates): ERR-8
// names the rule and both locations (v2 and FHIR), which is what an integration engineer needs.
#pragma once

#include "hl7v2/er7.hpp"
#include "tellonce/error.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tellonce::hl7v2 {

// MSA-1. Original mode: AA accepted, AE error (the sender may correct and resend), AR rejected
// (the receiver cannot process it at all: unparseable, unknown sender, unsupported event,
// shutting down). Enhanced mode commit ACKs: CA, CE, CR.
enum class AckCode { AA, AE, AR, CA, CE, CR };
std::string_view to_string(AckCode c);
std::optional<AckCode> ack_code_from(std::string_view s);

// One ERR segment (v2.5 layout, which v2.4 receivers read as ERR-1 is left empty).
struct AckError {
  std::string location;     // ERR-2: "PID^1^3^1" (segment^occurrence^field^component), may be empty
  std::string hl7_code;     // ERR-3 from HL7 table 0357: 100 segment sequence, 101 required field
                            // missing, 102 data type, 103 table value not found, 200 unsupported
                            // message type, 201 unsupported event, 202 unsupported processing id,
                            // 203 unsupported version, 204 unknown key, 205 duplicate key,
                            // 206 application record locked, 207 application internal error
  char severity = 'E';      // ERR-4: E error, W warning, I information
  std::string diagnostic;   // ERR-8: for people; rule, FHIR location, what is wrong
};

// Who acknowledges: MSH-3/MSH-4 of the ACK (the receiver of the original message).
struct AckSender {
  std::string application = "TELLONCE";
  std::string facility;
};

// The ACK for a parsed message: MSH (sender and receiver swapped, MSH-9 ACK^<event>^ACK, the
// message's version and processing id, a new control id), MSA (code, MSH-10 of the original,
// MSA-3 text for older receivers), then one ERR per error. Segments end with CR; not framed.
// Written in the original's own delimiters, so echoed fields are copied exactly as received.
// MSA-3 is the first error's diagnostic cut to 80 bytes (v2.4's length); an AckError without
// hl7_code gets 207 (application internal error).
std::string build_ack(const Message& original, AckCode code, const std::vector<AckError>& errors,
                      const AckSender& sender, std::string_view control_id, std::string_view timestamp);

// The ACK for bytes that could not be parsed as a message: MSH fields are taken from whatever
// of the MSH segment could be read (control id, sender, version), else left empty. Always AR
// unless the caller says otherwise.
std::string build_ack_for_unparsed(std::string_view raw, AckCode code, const std::vector<AckError>& errors,
                                   const AckSender& sender, std::string_view control_id,
                                   std::string_view timestamp);

// An ACK as received from a partner.
struct ReceivedAck {
  AckCode code = AckCode::AA;
  std::string acked_control_id;     // MSA-2: must match the MSH-10 that was sent
  std::string text;                 // MSA-3 and each ERR's ERR-8 (else ERR-7, else ERR-3.2; in v2.4
                                    // ERR-1.4.2), joined by "; ", each distinct text once
  std::vector<std::string> error_codes;  // ERR-3.1 values (v2.4: ERR-1.4.1)
};
Result<ReceivedAck> read_ack(std::string_view er7);

// The HL7 DTM timestamp for now, to the second, with offset ("20261130182700+0000").
std::string hl7_timestamp_now();

}  // namespace tellonce::hl7v2
