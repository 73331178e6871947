// The broker's record of a message, from acceptance to the last delivery attempt.
#pragma once

#include "tellonce/error.hpp"

#include <rapidjson/fwd.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace tellonce {

std::int64_t now_ms();                 // wall clock, ms since epoch
std::string new_message_id();          // time-ordered, unique: "01JD3...": 26 chars Crockford base32
std::string sha256_hex(std::string_view data);

// The items with `separator` between them: the text form of a list in the trail and the stores.
std::string join(const std::vector<std::string>& items, std::string_view separator);

// A rule an inbound adapter's endpoint adds about the record (POST /fhir/Patient takes only a
// Patient), run by the pipeline on the parsed record before validation. Returns the refusal,
// or nothing. Called once, on the caller's thread, while accept() runs; must not keep `record`.
using RecordRule = std::function<std::optional<Failure>(const rapidjson::Value& record)>;

// What an inbound adapter hands to the pipeline, whatever its transport: who sent it, on which
// channel, the FHIR record to process and, when the adapter converted the partner's message
// (HL7 v2, a CSV row), what actually arrived.
struct InboundRecord {
  std::string source;           // partner id the record came from
  std::string channel;          // inbound adapter id (config `inbound[].id`)
  std::string content_type;     // of body
  std::string body;             // the FHIR JSON record to process, as received when not converted
  // Set only when body was converted from what the partner sent: its content type and bytes.
  std::string original_content_type;
  std::string original_bytes;
  std::string idempotency_key;  // the transport's resubmission key (Idempotency-Key...); may be empty
  RecordRule rule;              // the endpoint's own rule; may be empty
};

// Derived from the deliveries: a held one (in a mailbox) counts as delivering, an expired one
// as failed.
enum class MessageState { accepted, unroutable, delivering, delivered, failed };
std::string_view to_string(MessageState s);
MessageState message_state_from(std::string_view s);

// held: placed in the partner's mailbox, waiting to be collected (DeliveryOutcome::held); it
// then ends delivered (collected and acknowledged) or expired (not acknowledged in time; like
// dead, a replay sends it again).
enum class DeliveryStatus { pending, delivered, dead, held, expired };
std::string_view to_string(DeliveryStatus s);
DeliveryStatus delivery_status_from(std::string_view s);

struct LifecycleEvent;

// A message ready to be committed: validated and routed.
struct NewMessage {
  std::string id;
  std::string source;
  std::string channel;
  std::string idempotency_key;   // may be empty: then no duplicate detection
  std::string resource_type;     // top-level resourceType
  std::string event;             // MessageHeader.eventCoding "system|code", or empty
  std::string patient_key;       // NHS number, else subject reference; orders deliveries
  std::string content_type;
  std::string content_hash;      // sha256 of body
  std::int64_t received_at_ms = 0;
  std::string body;
  // What the partner sent, when an inbound adapter converted it into body (else both empty).
  std::string original_content_type;
  std::string original_bytes;
  std::vector<std::string> route_ids;     // routes that matched
  std::vector<std::string> destinations;  // partner ids; empty = unroutable
  std::vector<std::string> warnings;      // validator warnings, kept on the trail
  // Deliveries consent withheld (EventKind::withheld, destination and detail set): written to
  // the trail with the message. Their destinations are not in `destinations`.
  std::vector<LifecycleEvent> withheld;
};

struct DeliveryJob;

// Bytes a store returns with their content type.
struct StoredBytes {
  std::string content_type;
  std::string bytes;
};

struct CommitOutcome {
  std::string message_id;  // the existing id when duplicate
  bool duplicate = false;
  MessageState state = MessageState::accepted;  // of the existing message when duplicate
};

// One unit of delivery work: a message to one destination.
struct DeliveryJob {
  std::int64_t delivery_id = 0;  // store key for (message, destination)
  std::string message_id;
  std::string destination;       // partner id
  std::string patient_key;
  std::string resource_type;
  std::string content_type;
  std::string body;              // empty: not carried (see Queue::next); read it from the Store
  int attempts = 0;               // attempts made so far
  std::int64_t seq = 0;           // acceptance order (see queue/queue.hpp)
  std::int64_t not_before_ms = 0; // earliest next attempt
  // When its first attempt failed (0: none has): the start of its retry period
  // (RetryPolicy::keep_trying_for). Kept in memory only: a restart starts it again.
  std::int64_t first_failed_at_ms = 0;
};

inline constexpr std::string_view kNotSent = "not sent";

// How one delivery attempt ended, whatever the transport: the partner took it; it may take
// it later (down, busy, timed out); it refused this record for good; or it was placed in the
// partner's mailbox (held), where the partner collects it later (Store::collect).
enum class DeliveryOutcome { ok, retryable, permanent, held };
std::string_view to_string(DeliveryOutcome o);
std::optional<DeliveryOutcome> delivery_outcome_from(std::string_view s);  // empty: not a name

// The outcome of one attempt, as recorded on the trail.
struct DeliveryAttempt {
  std::int64_t delivery_id = 0;
  std::string message_id;
  std::string destination;
  int attempt = 0;                // 1-based
  std::int64_t at_ms = 0;
  DeliveryOutcome outcome = DeliveryOutcome::retryable;
  // The partner's own answer in its own vocabulary ("HTTP 503", "ACK AE", "mailbox full");
  // empty when no answer came (connect failure, timeout); kNotSent when the broker itself would
  // not send the record (an allow-list refused it), so the partner was never asked.
  std::string partner_code;
  std::string detail;             // the partner's reason, or the transport error
  bool ok() const { return outcome == DeliveryOutcome::ok; }
  bool held() const { return outcome == DeliveryOutcome::held; }
  std::int64_t next_attempt_ms = 0;  // when a retry is due (0: none)
  bool dead = false;              // gave up: dead-lettered
  // held: what the partner collects from its mailbox when it is not the stored body (the body
  // minimised for this destination); empty: the stored body.
  std::string held_body;
};

// One step of a message's trail, as facts. The store keeps and returns these; the words a
// person reads are made from them in one place, core/trail.hpp.
// held: placed in a mailbox; expired: held and not acknowledged in time. withheld: a route
// named the destination but consent withheld the delivery (no delivery row; destination and
// detail, the rule that applied, are set).
enum class EventKind { received, validated, routed, unroutable, duplicate, attempt, delivered, dead, replayed,
                       held, expired, withheld, viewed };
std::string_view to_string(EventKind k);
std::optional<EventKind> event_kind_from(std::string_view s);

// Which fields are set depends on the kind; the others are left empty or zero.
struct LifecycleEvent {
  EventKind kind = EventKind::received;
  std::int64_t at_ms = 0;

  // received: the record as it came in. duplicate: the resubmission's source, idempotency key and
  // sha256 (content_hash), and whether that matched the stored message's (same_content).
  std::string source;
  std::string channel;
  std::string content_type;
  std::string content_hash;
  std::string idempotency_key;
  std::size_t bytes = 0;
  bool same_content = true;
  // received, for a converted record: what the partner sent (content_type and bytes are then
  // the FHIR form's). Empty and 0 when the record arrived as it is stored.
  std::string original_content_type;
  std::size_t original_bytes = 0;

  std::vector<std::string> warnings;      // validated: the validator's warnings (none: empty)
  std::vector<std::string> routes;        // routed, unroutable: the routes that matched
  std::vector<std::string> destinations;  // routed, replayed: partner ids
  std::string actor;                      // replayed: who asked ("demo-operator via cli:alice"); may be empty
                                          // viewed: the operator who read the body (detail: "body" or "original")
  std::string reason;                     // viewed: why, as the operator gave it

  // attempt (failed, will be retried), delivered, dead, held, expired: one delivery attempt
  // (expired: the attempt that placed it; detail says how long it waited).
  std::string destination;
  int attempt = 0;                        // 1-based
  DeliveryOutcome outcome = DeliveryOutcome::ok;
  std::string partner_code;               // the partner's own code ("HTTP 503"); empty: no answer
  std::string detail;                     // the partner's reason, or the transport error
  std::int64_t next_attempt_ms = 0;       // attempt: when the retry is due

  // Written by a store before the trail was kept as facts (SQLite schema 3 and older): the text
  // as it was rendered then. When set, the facts above are unknown except kind, at_ms and, for a
  // delivered event read from an old delivery row, destination and attempt (the text is then the
  // outcome only, "HTTP 200: accepted").
  std::string legacy_text;
};

// A delivery and the outcome of its last attempt (none yet: last_outcome empty).
struct DeliveryView {
  std::int64_t delivery_id = 0;
  std::string destination;
  DeliveryStatus status = DeliveryStatus::pending;
  int attempts = 0;
  std::int64_t next_attempt_ms = 0;
  std::optional<DeliveryOutcome> last_outcome;
  std::string last_partner_code;
  std::string last_detail;
  std::string legacy_last_error;  // a failure recorded as text by an older store (see legacy_text)
};

// Everything the API and `tellonce message ID` show about a message.
struct MessageView {
  std::string id;
  std::string source;
  std::string channel;
  std::string resource_type;
  std::string event;
  std::string patient_key;
  std::string content_hash;
  std::int64_t received_at_ms = 0;
  MessageState state = MessageState::accepted;
  std::string content_type;                 // of the stored (FHIR) body
  std::size_t body_bytes = 0;
  std::string original_content_type;        // set when converted: what the partner sent
  std::size_t original_bytes = 0;
  std::vector<DeliveryView> deliveries;
  std::vector<LifecycleEvent> events;
};

}  // namespace tellonce
