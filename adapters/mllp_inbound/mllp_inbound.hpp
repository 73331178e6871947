// Inbound HL7 v2 over MLLP (type `mllp`): a TCP listener taking framed ER7 messages from a
// trust's PAS or EPR. Each message is parsed, converted to a FHIR message Bundle, handed to the
// pipeline with the original bytes beside it, and acknowledged on the same connection, in the
// order the messages arrived.
//
// Acknowledgements (original mode; enhanced mode maps AA/AE/AR to CA/CE/CR, see acks_for()):
// - AA only once pipeline.accept() has completed, i.e. the record is durably committed; a resend
//   (same sender, MSH-3, MSH-4 and MSH-10) is stored once and answered AA again.
// - AE: the message was read but its content breaks a rule (the converter needs a field that is
//   missing, or the FHIR record fails validation). One ERR per problem: ERR-2 the v2 location,
//   ERR-3 from HL7 table 0357, ERR-8 the rule and the FHIR location, never the message's values.
//   The sender should correct the message; resending it unchanged gets the same AE.
// - AR: the message cannot be processed as sent: unparseable (ERR-3 100/102), a batch (200), an
//   unknown sender (204), an unsupported message type or event (200/201), a frame over
//   max_frame_bytes. AR with ERR-3 207 (application internal error) means the broker cannot take
//   it now (store unavailable, shutting down): resend it unchanged later. HL7 defines AR for
//   "system down" too, which is why this is AR and not AE.
//
// Threading: the acceptor and each connection run on strands of the context's executor, one
// coroutine per connection (no thread per connection). Lifetimes: start() binds (throws when it
// cannot); stop() closes the acceptor and idle connections, a connection busy with a message
// answers it and closes. What connections share lives in a shared state, so a coroutine that
// outlives the adapter (an io_context stopped abruptly) touches nothing the adapter owned.
// Logs name the connection's peer, the partner and MSH-10, never the message's contents.
#pragma once

#include "hl7v2/ack.hpp"
#include "hl7v2/er7.hpp"
#include "hl7v2/tables.hpp"
#include "hl7v2/to_fhir.hpp"
#include "tellonce/pipeline.hpp"
#include "tellonce/registry.hpp"
#include "tellonce/tls.hpp"

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tellonce {

struct MllpInboundSettings {
  std::string listen = "127.0.0.1:2575";
  // The partner every message on this channel comes from; empty: MSH-4.1 (sending facility)
  // names it through the partners' hl7v2_facilities (or their ODS code).
  std::string partner;
  std::size_t max_frame_bytes = 1024 * 1024;
  std::chrono::milliseconds idle_timeout{5 * 60 * 1000};
  // A message must arrive whole within this long of its first byte (slow senders, slow-loris);
  // past it the connection is closed.
  std::chrono::milliseconds message_timeout{60 * 1000};
  std::size_t max_connections = 256;
  std::filesystem::path tables_dir = hl7v2::default_tables_dir();  // the converter's tables (`tables:`)
  // `tls:` MLLP over TLS (tellonce/tls.hpp). A connection that presents a client certificate
  // speaks only for the partner that certificate is listed for: a message whose sender
  // (MSH-4, or `partner`) is another partner is answered AR with ERR-3 204 saying so.
  std::optional<TlsSettings> tls;
};
// Load (tellonce/limits.hpp): a partner over its rate gets AE with ERR-3 207 ("resend later")
// naming the limit. Connections over `limits.max_connections_per_address`, or over the
// max_connections of the partner a client certificate names, are closed (a log line a second
// at most per listener); so are failed TLS handshakes, logged likewise.

InboundAdapterType mllp_inbound_type();

// The adapter with a converter of the caller's (tests use a fake one); create() loads the tables.
std::unique_ptr<InboundAdapter> make_mllp_inbound(const MllpInboundSettings& settings, InboundContext& ctx,
                                                  std::shared_ptr<const hl7v2::V2ToFhir> converter);

// What one message came to, in original-mode terms.
struct MllpVerdict {
  hl7v2::AckCode code = hl7v2::AckCode::AA;
  std::vector<hl7v2::AckError> errors;
};

// The ACK messages (unframed, in the order to send them) for a parsed message and its verdict.
// Original mode (MSH-15 and MSH-16 empty): one ACK with the verdict's code. Enhanced mode: the
// accept ACK (CA, CE for AE, CR for AR) when MSH-15 asks for it (AL; ER on error; SU on
// success; empty or NE: not sent), then on success the application ACK AA when MSH-16 asks for
// it (AL or SU). An error is never left unanswered because MSH-15 did not ask: it then goes as
// the application ACK (AE/AR) when MSH-16 is AL or ER.
std::vector<std::string> acks_for(const hl7v2::Message& message, const MllpVerdict& verdict,
                                  std::string_view control_id, std::string_view timestamp);

// ERR for one of the broker's issues. `converted` maps a FHIR location to its v2 field. The
// diagnostic names the rule and the FHIR location; the issue's own text only when
// `diagnostics_are_safe` (the v2 parser's and converter's never quote values; the validator's may).
hl7v2::AckError ack_error_for(const Issue& issue, const hl7v2::Converted* converted, bool diagnostics_are_safe);

// The verdict for what the pipeline answered.
MllpVerdict verdict_for(const Result<Accepted>& accepted, const hl7v2::Converted& converted);

}  // namespace tellonce
