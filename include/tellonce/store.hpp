// The Store seam: durable storage of messages, their routing and every delivery attempt.
// Implementations (engines/: sqlite_store) all pass tests/store/store_contract.
//
// Contract for every implementation:
// - Threading: every method may be called from any thread, concurrently. An awaitable
//   completes on the executor of the coroutine that awaited it.
// - Errors are values: Errc::unavailable (retryable: the write or read may pass later; nothing
//   was stored), Errc::not_found, Errc::conflict (permanent: a write the store refuses as it is).
// - A commit or record_attempt that completed successfully is durable.
#pragma once

#include "tellonce/error.hpp"
#include "tellonce/message.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tellonce {

namespace asio = boost::asio;

struct Committed {
  CommitOutcome outcome;
  std::vector<DeliveryJob> jobs;  // one per destination; empty for duplicates and unroutable
};

struct MessageSummary {
  std::string id;
  std::string source;
  std::string resource_type;
  MessageState state = MessageState::accepted;
  std::int64_t received_at_ms = 0;
  std::string channel;
  std::string event;
  // Opaque position of this row in the listing order; a query with it as cursor continues after it.
  std::string cursor;
};

// A search of the stored messages, newest received first (ties: newest accepted first). Every
// field set narrows it (all must match). Paging is by cursor: pass the last row's cursor to get
// the rows after it; rows stored since the first page never shift a later page.
struct MessageQuery {
  std::optional<MessageState> state;     // e.g. unroutable, failed
  std::string source;                    // empty: any
  int limit = 100;
  std::string destination;               // has a delivery to this partner
  std::string route;                     // matched this route id
  std::string resource_type;
  std::string event;                     // NewMessage::event as stored ("system|code", "ADT^A01")
  std::string nhs_number;                // the patient's NHS number (10 digits)
  std::int64_t since_ms = 0;             // received at or after (0: no bound)
  std::int64_t until_ms = 0;             // received before (0: no bound)
  std::string cursor;                    // from MessageSummary::cursor; empty: from the newest
};

// Replay by filter (Store::replay_matching): the dead and expired deliveries of the matching
// messages (only those to query.destination when it is set).
struct ReplayMatch {
  std::size_t matched = 0;               // such deliveries found
  std::vector<DeliveryJob> jobs;         // those put back to pending (empty for a dry run)
};

// An operator's hold on a destination: while paused its deliveries wait, in order.
struct DestinationControl {
  std::string destination;
  bool paused = false;
  std::int64_t changed_at_ms = 0;
  std::string actor;                     // who paused or resumed it last
};

// One step of a destination's own trail (pause, resume).
struct DestinationAction {
  std::int64_t at_ms = 0;
  std::string destination;
  std::string action;                    // "paused" | "resumed"
  std::string actor;
};

// Read access to what partners sent, for outbound adapters that can forward a partner's own
// bytes (an HL7 v2 message to a v2 destination) instead of a rendering of the FHIR form.
// Threading as for Store (below): any thread; resumes on the awaiting coroutine's executor.
class OriginalReader {
 public:
  virtual ~OriginalReader() = default;
  // The bytes as the partner sent them, when an inbound adapter converted them (HL7 v2, CSV);
  // nullopt when the record arrived as it is stored (the body is what was sent). Errc::not_found
  // when there is no such message, Errc::unavailable (retryable) when the store cannot read now.
  virtual asio::awaitable<Result<std::optional<StoredBytes>>> original(std::string message_id) = 0;
};

// A delivery held in a partner's mailbox (DeliveryStatus::held), as the mailbox lists it.
struct HeldRecord {
  std::string message_id;
  std::string source;            // partner id the record came from
  std::string resource_type;
  std::string content_type;      // of the stored (FHIR) body
  std::int64_t seq = 0;          // acceptance order: the listing's order
  std::int64_t held_since_ms = 0;
  std::string body;              // set by held() only; empty in a listing
};

// The mailbox side of the store, for the `mailbox` outbound adapter: a partner without an
// endpoint collects its held deliveries. A delivery becomes held when an attempt is recorded
// with DeliveryOutcome::held (Store::record_attempt).
// Threading as for Store (below): any thread, concurrently; resumes on the awaiting coroutine's
// executor. Errors: Errc::unavailable (retryable: nothing changed), Errc::not_found.
class MailboxStore {
 public:
  virtual ~MailboxStore() = default;
  // The partner's held deliveries, oldest first by acceptance order (seq), at most `limit`
  // (bodies not included). A patient's records are therefore listed in acceptance order.
  virtual asio::awaitable<Result<std::vector<HeldRecord>>> mailbox(std::string partner, int limit) = 0;
  // One held delivery with its body: the held_body of the attempt that held it, if it had one
  // (minimised for this partner), else the stored body. Errc::not_found when that message is not held for that
  // partner (unknown, another partner's, already collected or expired).
  virtual asio::awaitable<Result<HeldRecord>> held(std::string partner, std::string message_id) = 0;
  // The partner acknowledged it: held -> delivered, durable on completion; the trail then shows
  // it delivered (partner code "acknowledged"). Errc::not_found as for held().
  virtual asio::awaitable<Result<void>> collect(std::string partner, std::string message_id) = 0;
  // Every delivery held for the partner since before held_before_ms becomes expired, with an
  // `expired` event on its message's trail; at most max_expire_batch per call (call again while
  // it returns that many). Returns the message ids of those it expired, in acceptance order
  // (the caller audits each one). Durable on completion.
  static constexpr std::size_t max_expire_batch = 500;
  virtual asio::awaitable<Result<std::vector<std::string>>> expire_held(std::string partner,
                                                                         std::int64_t held_before_ms) = 0;
};

// One destination's undelivered work, for metrics and the console: deliveries still pending
// (not delivered, dead, held or expired), and when the oldest of them (in acceptance order)
// was received.
struct DestinationBacklog {
  std::string destination;
  std::uint64_t pending = 0;
  std::int64_t oldest_received_at_ms = 0;  // of the first pending in acceptance order; 0 when none
};

// What the audit log (broker/audit) must show for a stored message: its receipt, or one
// delivery's settled state (delivered, dead, held, expired). For the audit's start-up catch-up.
struct StoredFact {
  std::int64_t at_ms = 0;          // received at; settled at
  std::string message_id, source, channel, resource_type;
  std::string destination;         // empty: the receipt
  DeliveryStatus status = DeliveryStatus::pending;
  int attempts = 0;
  std::string partner_code;
};

inline Failure store_unsupported(std::string_view what) {
  return Failure::permanent(Errc::unsupported,
                            Issue{Severity::error, "not-supported", "this store cannot " + std::string(what), "", ""});
}

class Store : public OriginalReader, public MailboxStore {
 public:
  virtual ~Store() = default;

  // Durably stores a validated, routed message (with the partner's original bytes when it was
  // converted) and its pending deliveries. Completes after the group commit that contains it. A message whose (source, idempotency_key) is already
  // stored is not stored again: the outcome names the existing id with duplicate = true.
  virtual asio::awaitable<Result<Committed>> commit(NewMessage msg) = 0;

  // Appends an attempt to the trail and updates the delivery (pending, delivered, dead, or held
  // for DeliveryOutcome::held) and the message state. Completes once durable.
  virtual asio::awaitable<Result<void>> record_attempt(DeliveryAttempt attempt) = 0;

  virtual asio::awaitable<Result<std::optional<MessageView>>> find(std::string message_id) = 0;
  // The stored body (the FHIR form); Errc::not_found when there is no such message.
  virtual asio::awaitable<Result<std::string>> body(std::string message_id) = 0;
  virtual asio::awaitable<Result<std::vector<MessageSummary>>> list(MessageQuery query) = 0;

  // Replay: dead and expired deliveries of the message go back to pending with their attempt count
  // reset; a "replayed" event is added. Returns the jobs to hand to the queue (empty when
  // nothing was dead). Errc::not_found when the message does not exist.
  virtual asio::awaitable<Result<std::vector<DeliveryJob>>> replay(std::string message_id) = 0;
  // As replay(), with who asked on the "replayed" event. The default ignores the actor.
  virtual asio::awaitable<Result<std::vector<DeliveryJob>>> replay_as(std::string message_id, std::string actor) {
    (void)actor;
    return replay(std::move(message_id));
  }

  // Operations (issue 11). Defaults answer Errc::unsupported for stores that lack them.
  // Replay by filter: with dry_run, counts the dead/expired deliveries of the messages matching
  // `query` (limit and cursor ignored) and changes nothing; otherwise also puts up to
  // max_replay_batch of them back to pending, each message's trail noting who did it.
  static constexpr std::size_t max_replay_batch = 10000;
  virtual asio::awaitable<Result<ReplayMatch>> replay_matching(MessageQuery query, std::string actor, bool dry_run);
  // Durably pauses or resumes a destination and notes it on the destination's trail. Idempotent
  // in state; each call is noted.
  virtual asio::awaitable<Result<void>> set_paused(std::string destination, bool paused, std::string actor);
  // A body view (issue 12): adds a "viewed" event to the message's trail with who and why
  // (`what`: "body" or "original"). Durable on completion; Errc::not_found without the message.
  virtual asio::awaitable<Result<void>> record_view(std::string message_id, std::string what, std::string actor,
                                                    std::string reason);
  // Every destination that was ever paused or resumed, with its current state.
  virtual asio::awaitable<Result<std::vector<DestinationControl>>> destination_controls();
  // The latest actions on a destination's trail, newest first, at most `limit`.
  virtual asio::awaitable<Result<std::vector<DestinationAction>>> destination_trail(std::string destination, int limit);

  // Every destination with at least one pending delivery, ordered by name (destinations with
  // none are not listed). Cheap enough to call every few seconds on a store with a large backlog
  // (an index read, not a table scan); callers that may be called more often cache it.
  // Errc::unavailable (retryable) when the store cannot read now.
  virtual asio::awaitable<Result<std::vector<DestinationBacklog>>> backlog() = 0;

  // Bytes the store takes on disk now (database and its logs); 0 when it cannot tell. Any
  // thread, never blocks for long (a stat or two).
  virtual std::uint64_t size_bytes() const { return 0; }

  // Start-up: every pending delivery in acceptance order (held ones wait in their mailbox). Bodies are included while they add up
  // to at most max_body_bytes; later jobs come with an empty body (read back with body()).
  virtual Result<std::vector<DeliveryJob>> load_pending(std::size_t max_body_bytes) = 0;
  Result<std::vector<DeliveryJob>> load_pending() { return load_pending(static_cast<std::size_t>(-1)); }

  // Whether the store can take records now: ok, or an unavailable Failure saying why (writes
  // are failing: disk full, I/O error, store closed). Cheap while writes succeed; while they
  // fail, an implementation checks again with a small write of its own (at most about once a
  // second), so health comes back without waiting for traffic. /api/health answers from this.
  virtual asio::awaitable<Result<void>> health() = 0;

  // Start-up only, blocking (call before serving): every receipt and every settled delivery at
  // or after since_ms, oldest first. The default: Errc::unsupported (no audit catch-up).
  virtual Result<std::vector<StoredFact>> facts_since(std::int64_t since_ms) {
    (void)since_ms;
    return store_unsupported("list its facts for the audit log");
  }

  // Several nodes on a shared queue (Queue::shared(); broker/queue/reconciled_queue.hpp): which
  // pending deliveries no node has confirmed queueing, so that each is queued again after a
  // crash between its commit and the queue's confirm, or a push the queue refused.
  // track_queueing(grace), called at start-up before any commit, turns it on (false: this store
  // cannot): from then on a commit or a replay gives each new pending delivery a requeue time
  // `grace` ahead. mark_queued clears it (the queue confirmed those jobs); settling a delivery
  // clears it too. claim_unqueued takes up to `limit` pending deliveries whose requeue time has
  // passed, moves it `grace` ahead (a lease: nodes sweeping together take different ones, and a
  // node that dies before pushing them leaves them to a later sweep) and returns them in
  // acceptance order, without bodies. Defaults: Errc::unsupported.
  virtual bool track_queueing(std::chrono::milliseconds grace) {
    (void)grace;
    return false;
  }
  virtual asio::awaitable<Result<void>> mark_queued(std::vector<std::int64_t> delivery_ids);
  virtual asio::awaitable<Result<std::vector<DeliveryJob>>> claim_unqueued(std::size_t limit);

  // Finishes outstanding batches; later calls fail.
  virtual void close() = 0;

  // For the start-up summary and logs: the engine and where it keeps its data ("sqlite data/t.db").
  virtual std::string describe() const { return "store"; }
};

inline asio::awaitable<Result<void>> Store::mark_queued(std::vector<std::int64_t>) {
  co_return store_unsupported("track which deliveries a shared queue holds");
}
inline asio::awaitable<Result<std::vector<DeliveryJob>>> Store::claim_unqueued(std::size_t) {
  co_return store_unsupported("track which deliveries a shared queue holds");
}
inline asio::awaitable<Result<ReplayMatch>> Store::replay_matching(MessageQuery, std::string, bool) {
  co_return store_unsupported("replay by filter");
}
inline asio::awaitable<Result<void>> Store::set_paused(std::string, bool, std::string) {
  co_return store_unsupported("pause destinations");
}
inline asio::awaitable<Result<void>> Store::record_view(std::string, std::string, std::string, std::string) {
  co_return store_unsupported("record who viewed a body");
}
inline asio::awaitable<Result<std::vector<DestinationControl>>> Store::destination_controls() {
  co_return std::vector<DestinationControl>{};
}
inline asio::awaitable<Result<std::vector<DestinationAction>>> Store::destination_trail(std::string, int) {
  co_return std::vector<DestinationAction>{};
}

}  // namespace tellonce
