// Durable storage of messages, their routing and every delivery attempt. The embedded
// implementation is SQLite in WAL mode; a PostgreSQL one comes later behind the same seam,
// and every implementation passes tests/store/store_contract.
#pragma once

#include "core/error.hpp"
#include "core/message.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <filesystem>
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
};

struct MessageQuery {
  std::optional<MessageState> state;     // e.g. unroutable, failed
  std::string source;                    // empty: any
  int limit = 100;
};

class Store {
 public:
  virtual ~Store() = default;

  // Durably stores a validated, routed message and its pending deliveries. Completes after
  // the group commit that contains it. A message whose (source, idempotency_key) is already
  // stored is not stored again: the outcome names the existing id with duplicate = true.
  virtual asio::awaitable<Result<Committed>> commit(NewMessage msg) = 0;

  // Appends an attempt to the trail and updates the delivery (pending, delivered, dead) and
  // the message state. Batched like commits; completes once durable.
  virtual asio::awaitable<Result<void>> record_attempt(DeliveryAttempt attempt) = 0;

  virtual asio::awaitable<Result<std::optional<MessageView>>> find(std::string message_id) = 0;
  // The raw body as received; not-found Failure (404) when there is no such message.
  virtual asio::awaitable<Result<std::string>> body(std::string message_id) = 0;
  virtual asio::awaitable<Result<std::vector<MessageSummary>>> list(MessageQuery query) = 0;

  // Replay: dead deliveries of the message go back to pending with their attempt count
  // reset; a "replayed" event is added. Returns the jobs to hand to the queue (empty when
  // nothing was dead). not-found Failure (404) when the message does not exist.
  virtual asio::awaitable<Result<std::vector<DeliveryJob>>> replay(std::string message_id) = 0;

  // Start-up: every pending delivery in acceptance order. Bodies are included while they add up
  // to at most max_body_bytes; later jobs come with body_in_store (see DeliveryJob).
  virtual Result<std::vector<DeliveryJob>> load_pending(std::size_t max_body_bytes) = 0;
  Result<std::vector<DeliveryJob>> load_pending() { return load_pending(static_cast<std::size_t>(-1)); }

  // Whether the store can take records now: ok, or an unavailable Failure saying why (writes
  // are failing: disk full, I/O error, store closed). Cheap while writes succeed; while they
  // fail, an implementation checks again with a small write of its own (at most about once a
  // second), so health comes back without waiting for traffic. /api/health answers from this.
  virtual asio::awaitable<Result<void>> health() = 0;

  // Finishes outstanding batches; later calls fail.
  virtual void close() = 0;
};

struct SqliteStoreSettings {
  std::filesystem::path path;
  std::chrono::microseconds max_commit_delay{2000};
  int max_batch = 512;
  // FULL: an acknowledged record survives power loss. NORMAL (false) only survives a crash
  // of the process, for test rigs and throwaway environments.
  bool synchronous_full = true;
  // How long a write waits for a lock held by another process (a backup, the CLI) before
  // failing as retryable.
  std::chrono::milliseconds busy_timeout{5000};
  // 0: no limit. Past it, writes fail as unavailable exactly as on a full disk (SQLite's
  // max_page_count): a quota for a shared disk, and how the tests fill the "disk".
  std::uint64_t max_size_bytes = 0;
  // While writes fail, health() tries a probe write at most this often.
  std::chrono::milliseconds health_probe_interval{1000};

  // Start-up checks (broker/store/README.md, "Refusing a lost store"). By default the store
  // refuses to start when its marker (<path>.id) says a store existed but the file is missing,
  // empty, damaged or another store's, and when its WAL holds committed transactions that
  // SQLite's recovery would drop.
  enum class IntegrityCheck { off, quick, full };  // PRAGMA quick_check / integrity_check
  IntegrityCheck integrity_check = IntegrityCheck::quick;
  // Start a new, empty store in place of a missing, empty, damaged or foreign one; the old
  // files are renamed aside ("<file>.replaced-<ms>"), never deleted.
  bool accept_new_store = false;
  // Start on a WAL that would lose committed transactions: a copy of it is kept aside
  // ("<path>-wal.damaged-<ms>") and SQLite recovers what it can.
  bool accept_wal_loss = false;
};

// Opens (creating if needed) the database. Throws std::runtime_error on start-up errors
// (unwritable path, a store refused by the checks above), with a message naming the files and
// how to recover.
std::unique_ptr<Store> make_sqlite_store(const SqliteStoreSettings& settings);

}  // namespace tellonce
