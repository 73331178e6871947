// The Audit seam (issue 12): who sent what to whom, each delivery, each operator action and
// body view, each configuration reload, in an append-only log whose entries are chained by
// SHA-256 (docs/audit.md). The broker's implementation is broker/audit (an NDJSON file written
// by its own thread); the hooks in the pipeline, the dispatcher and the admin API see only this.
//
// Contract for every implementation:
// - Threading: record() and record_durable() may be called from any thread, concurrently.
//   record() only enqueues: it never blocks on I/O (the event loop calls it on the hot path).
//   record_durable() completes on the awaiting coroutine's executor once the entry is on disk.
// - Order: entries are written in the order their record()/record_durable() calls took the
//   queue; each gets the next seq and the time it was queued (never earlier than the previous).
// - Lifetimes: the Audit outlives every component that was given it (the Broker owns it).
// - Errors: record() cannot fail (an entry that cannot be written now is retried by the writer);
//   record_durable() answers Errc::unavailable when the entry is not on disk (the disk refused
//   it, or the log is closing), so a caller that must not act unaudited (showing a body) refuses.
// - No patient data in an entry: ids, partner ids, resource types, codes and counts only.
#pragma once

#include "tellonce/error.hpp"

#include <boost/asio/awaitable.hpp>

#include <string>
#include <string_view>

namespace tellonce {

enum class AuditKind {
  received,          // a record was stored (acknowledged to its sender)
  duplicate,         // a resubmission of a stored record (acknowledged, not stored again)
  rejected,          // a record was refused (malformed, invalid, not authorised ...)
  delivered,         // a partner took it (or collected it from its mailbox)
  delivery_failed,   // an attempt failed; it will be retried
  dead,              // delivery gave up (permanent refusal, or retried out)
  held,              // placed in a partner's mailbox
  expired,           // not collected from a mailbox in time
  withheld,          // not sent for consent or opt-out (issue 12 consent)
  replayed,          // an operator put a message's dead deliveries back
  replay_requested,  // an operator replayed by filter (detail: the filter, without its values)
  paused,            // an operator paused a destination
  resumed,
  body_viewed,       // an operator read a stored body through the API
  original_viewed,   // an operator read what the partner sent (before conversion)
  config_reloaded,   // the configuration or certificates were reloaded (or the reload failed)
};
std::string_view to_string(AuditKind k);  // "received", "delivery-failed", "body-viewed", ...
bool audit_kind_from(std::string_view s, AuditKind& out);

// One entry. Empty strings are left out of the log. `actor` is who did it: the sending
// partner's id for received/rejected, the collecting partner's for a mailbox collection, the
// signed-in operator with the client's label ("alice via cli:alice") for actions, "tellonce"
// for what the broker did itself (deliveries, expiries, withholdings).
struct AuditEntry {
  AuditKind kind = AuditKind::received;
  std::string actor;
  std::string source;         // partner the record came from
  std::string channel;        // inbound channel
  std::string message_id;
  std::string resource_type;
  std::string destination;    // partner a delivery or an action was for
  std::string outcome;        // "ok", or a short code: "invalid", "HTTP 503", "unavailable"
  std::string detail;         // short, patient-free: a rule code, an attempt number, a count
  std::string reason;         // the operator's reason when given (X-Tellonce-Reason / ?reason=)
};

class Audit {
 public:
  virtual ~Audit() = default;
  // Queues the entry; the writer makes it durable in its next batch. Never blocks on I/O.
  virtual void record(AuditEntry entry) = 0;
  // Queues the entry and completes once it is durable (or Errc::unavailable).
  virtual boost::asio::awaitable<Result<void>> record_durable(AuditEntry entry) = 0;
};

// For a configuration or certificate reload (SIGHUP, the API): one config-reloaded entry.
// `what` says what was reloaded ("tls certificates", "opt-out list"); `failure` empty when it
// worked, else a short reason (no secrets, no paths to keys). A null audit does nothing.
inline void audit_config_reload(Audit* audit, std::string actor, std::string what, std::string failure = {}) {
  if (!audit) return;
  AuditEntry e;
  e.kind = AuditKind::config_reloaded;
  e.actor = std::move(actor);
  e.detail = std::move(what);
  e.outcome = failure.empty() ? "ok" : std::move(failure);
  audit->record(std::move(e));
}

}  // namespace tellonce
