// The embedded store: SQLite in WAL mode, one writer thread with group commit, one reader.
//
// Schema, version 1 (PRAGMA user_version; see README.md):
//   messages   one row per accepted record; id is the public key, seq the acceptance order
//              (the rowid, so it costs no index of its own); state is derived from its
//              deliveries (unroutable, delivering, delivered, failed)
//   deliveries one row per (message, destination): pending, delivered or dead
//   events     the lifecycle trail, in insertion order
#include "store/sqlite_db.hpp"
#include "store/store.hpp"
#include "store/worker_jobs.hpp"

#include "core/json.hpp"
#include "core/log.hpp"

#include <boost/asio/async_result.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <pthread.h>

namespace tellonce {
namespace {

using store_detail::Job;
using store_detail::JobFor;
using store_detail::JobQueue;

constexpr int current_schema_version = 1;

// WAL size, in pages, that triggers a background checkpoint (SQLite's own default), and the
// size at which the writer stops to checkpoint itself because the background one fell behind.
constexpr int checkpoint_pages = 1000;
constexpr int runaway_wal_pages = 16 * checkpoint_pages;  // 512 MB of 32 KiB pages

constexpr const char* schema_sql = R"sql(
CREATE TABLE IF NOT EXISTS messages (
  seq             INTEGER PRIMARY KEY,
  id              TEXT NOT NULL UNIQUE,
  source          TEXT NOT NULL,
  channel         TEXT NOT NULL,
  idempotency_key TEXT NOT NULL,
  resource_type   TEXT NOT NULL,
  event           TEXT NOT NULL,
  patient_key     TEXT NOT NULL,
  content_type    TEXT NOT NULL,
  content_hash    TEXT NOT NULL,
  received_at_ms  INTEGER NOT NULL,
  state           TEXT NOT NULL,
  body            BLOB NOT NULL,
  warnings        TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_idempotency_key
  ON messages(source, idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX IF NOT EXISTS messages_by_state ON messages(state, seq);
CREATE TABLE IF NOT EXISTS deliveries (
  id              INTEGER PRIMARY KEY,
  message_id      TEXT NOT NULL REFERENCES messages(id),
  destination     TEXT NOT NULL,
  status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
  attempts        INTEGER NOT NULL,
  next_attempt_ms INTEGER NOT NULL,
  last_error      TEXT NOT NULL,
  seq             INTEGER NOT NULL,
  UNIQUE (message_id, destination)
);
CREATE INDEX IF NOT EXISTS deliveries_by_status ON deliveries(status, seq);
CREATE TABLE IF NOT EXISTS events (
  id         INTEGER PRIMARY KEY,
  message_id TEXT NOT NULL REFERENCES messages(id),
  at_ms      INTEGER NOT NULL,
  kind       TEXT NOT NULL,
  detail     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_message ON events(message_id, id);
)sql";

Failure unavailable(std::string diagnostics) {
  return Failure::retryable(503, Issue{Severity::error, "transient", std::move(diagnostics), "", ""});
}

Failure not_found(const std::string& message_id) {
  return Failure::permanent(
      404, Issue{Severity::error, "not-found", "no message with id " + message_id + " in the store", "", ""});
}

// Failure for a write that SQLite refused. Constraint violations will fail again unchanged;
// anything else (disk full, I/O error, lock timeout) may pass later.
Failure unsaved(const sqlite::Connection& db) {
  std::string diagnostics = "the message store could not save the record: " + db.error_message();
  if ((db.error_code() & 0xff) == SQLITE_CONSTRAINT)
    return Failure::permanent(409, Issue{Severity::error, "conflict", std::move(diagnostics), "", ""});
  return unavailable(diagnostics + "; nothing was stored, try again later");
}

std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += separator;
    out += item;
  }
  return out;
}

MessageState state_from_counts(std::int64_t total, std::int64_t pending, std::int64_t dead) {
  if (total == 0) return MessageState::unroutable;
  if (pending > 0) return MessageState::delivering;
  if (dead > 0) return MessageState::failed;
  return MessageState::delivered;
}

struct WriteStatements {
  explicit WriteStatements(sqlite::Connection& db)
      : begin(db, "BEGIN IMMEDIATE"),
        commit(db, "COMMIT"),
        rollback(db, "ROLLBACK"),
        find_by_key(db,
                    "SELECT id, state, content_hash FROM messages "
                    "WHERE source = ?1 AND idempotency_key = ?2 AND idempotency_key <> ''"),
        insert_message(db,
                       "INSERT INTO messages (id, seq, source, channel, idempotency_key, resource_type, "
                       "event, patient_key, content_type, content_hash, received_at_ms, state, body, "
                       "warnings) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"),
        insert_delivery(db,
                        "INSERT INTO deliveries (message_id, destination, status, attempts, "
                        "next_attempt_ms, last_error, seq) VALUES (?1, ?2, 'pending', 0, 0, '', ?3)"),
        insert_event(db, "INSERT INTO events (message_id, at_ms, kind, detail) VALUES (?1, ?2, ?3, ?4)"),
        find_delivery(db, "SELECT message_id, destination FROM deliveries WHERE id = ?1"),
        update_delivery(db,
                        "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_ms = ?4, "
                        "last_error = ?5 WHERE id = ?1"),
        count_deliveries(db,
                         "SELECT count(*), coalesce(sum(status = 'pending'), 0), "
                         "coalesce(sum(status = 'dead'), 0) FROM deliveries WHERE message_id = ?1"),
        set_state(db, "UPDATE messages SET state = ?2 WHERE id = ?1"),
        message_for_replay(db,
                           "SELECT patient_key, resource_type, content_type, body FROM messages "
                           "WHERE id = ?1"),
        dead_deliveries(db,
                        "SELECT id, destination, seq FROM deliveries "
                        "WHERE message_id = ?1 AND status = 'dead' ORDER BY id"),
        revive_dead(db,
                    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_ms = 0 "
                    "WHERE message_id = ?1 AND status = 'dead'") {}

  sqlite::Statement begin, commit, rollback;
  sqlite::Statement find_by_key, insert_message, insert_delivery, insert_event;
  sqlite::Statement find_delivery, update_delivery, count_deliveries, set_state;
  sqlite::Statement message_for_replay, dead_deliveries, revive_dead;
};

struct ReadStatements {
  explicit ReadStatements(sqlite::Connection& db)
      : begin(db, "BEGIN"),
        end(db, "COMMIT"),
        message(db,
                "SELECT id, source, channel, resource_type, event, patient_key, content_hash, "
                "received_at_ms, state, length(body) FROM messages WHERE id = ?1"),
        deliveries(db,
                   "SELECT id, destination, status, attempts, next_attempt_ms, last_error "
                   "FROM deliveries WHERE message_id = ?1 ORDER BY id"),
        events(db, "SELECT at_ms, kind, detail FROM events WHERE message_id = ?1 ORDER BY id") {}

  sqlite::Statement begin, end, message, deliveries, events;
  std::map<std::string, std::unique_ptr<sqlite::Statement>> lists;  // by SQL text
};

void configure(sqlite::Connection& db, const SqliteStoreSettings& settings) {
  sqlite3_busy_timeout(db.handle(), static_cast<int>(settings.busy_timeout.count()));
  db.exec_or_throw(settings.synchronous_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
  db.exec_or_throw("PRAGMA foreign_keys = ON");
}

std::int64_t single_int(sqlite::Connection& db, std::string_view sql) {
  sqlite::Statement st(db, sql);
  std::int64_t value = st.step() ? st.int64(0) : 0;
  st.reset();
  if (db.failed()) throw std::runtime_error("message store: " + db.error_message());
  return value;
}

class SqliteStore final : public Store {
 public:
  explicit SqliteStore(const SqliteStoreSettings& settings)
      : settings_(settings), max_batch_(static_cast<std::size_t>(std::max(1, settings.max_batch))),
        writer_db_(settings.path, false) {
    // Large pages mean fewer WAL frames per batch, and on a VM every frame is two pwrite
    // syscalls: 32 KiB pages measured 8% less CPU per record than 8 KiB (bench/load), 64 KiB
    // no better. Takes effect only when the file is created.
    writer_db_.exec_or_throw("PRAGMA page_size = 32768");
    sqlite::Statement wal(writer_db_, "PRAGMA journal_mode = WAL");
    if (!wal.step() || wal.text(0) != "wal")
      throw std::runtime_error("message store " + settings.path.string() +
                               ": cannot switch to WAL mode (is the file system local?)");
    wal.reset();
    configure(writer_db_, settings);
    migrate();
    write_ = std::make_unique<WriteStatements>(writer_db_);
    next_seq_ = single_int(writer_db_, "SELECT coalesce(max(seq), 0) + 1 FROM messages");

    checkpoint_db_ = std::make_unique<sqlite::Connection>(settings.path, false);
    configure(*checkpoint_db_, settings);
    sqlite3_wal_hook(writer_db_.handle(), &SqliteStore::on_wal_commit, this);

    reader_db_ = std::make_unique<sqlite::Connection>(settings.path, true);
    configure(*reader_db_, settings);
    read_ = std::make_unique<ReadStatements>(*reader_db_);

    writer_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "store-writer");
      write_loop();
    });
    reader_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "store-reader");
      read_loop();
    });
    checkpointer_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "store-checkpoint");
      checkpoint_loop();
    });
  }

  ~SqliteStore() override { close(); }

  asio::awaitable<Result<Committed>> commit(NewMessage msg) override {
    auto work = [this, msg = std::move(msg)] { return apply_commit(msg); };
    return submit<Committed>(writes_, std::move(work));
  }

  asio::awaitable<Result<void>> record_attempt(DeliveryAttempt attempt) override {
    auto work = [this, attempt = std::move(attempt)] { return apply_attempt(attempt); };
    return submit<void>(writes_, std::move(work));
  }

  asio::awaitable<Result<std::vector<DeliveryJob>>> replay(std::string message_id) override {
    auto work = [this, id = std::move(message_id)] { return apply_replay(id); };
    return submit<std::vector<DeliveryJob>>(writes_, std::move(work));
  }

  asio::awaitable<Result<std::optional<MessageView>>> find(std::string message_id) override {
    auto work = [this, id = std::move(message_id)] { return read_message(id); };
    return submit<std::optional<MessageView>>(reads_, std::move(work));
  }

  asio::awaitable<Result<std::vector<MessageSummary>>> list(MessageQuery query) override {
    auto work = [this, query = std::move(query)] { return read_list(query); };
    return submit<std::vector<MessageSummary>>(reads_, std::move(work));
  }

  Result<std::vector<DeliveryJob>> load_pending() override;

  void close() override {
    {
      std::lock_guard lock(close_mutex_);
      if (closed_) return;
      closed_ = true;
    }
    writes_.close();
    reads_.close();
    if (writer_.joinable()) writer_.join();
    if (reader_.joinable()) reader_.join();
    {
      std::lock_guard lock(checkpoint_mutex_);
      checkpoint_stop_ = true;
    }
    checkpoint_due_.notify_one();
    if (checkpointer_.joinable()) checkpointer_.join();
    log::info("store", "closed " + settings_.path.string() + " after " + std::to_string(writes_done_) +
                           " writes in " + std::to_string(batches_) + " batches");
  }

 private:
  template <class T, class Work>
  asio::awaitable<Result<T>> submit(JobQueue& queue, Work work) {
    auto initiate = [this, &queue, &work](auto handler) {
      using Handler = decltype(handler);
      std::unique_ptr<Job> job = std::make_unique<JobFor<T, Work, Handler>>(std::move(work), std::move(handler));
      if (!queue.push(job, max_batch_)) {
        job->fail(unavailable("message store is closed"));
        job->complete();
      }
    };
    co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(Result<T>)>(
        initiate, asio::use_awaitable);
  }

  void migrate();
  void write_loop();
  void gather_more(std::unique_lock<std::mutex>& lock);
  void write_batch(std::vector<std::unique_ptr<Job>>& batch);
  void read_loop();
  void checkpoint_loop();
  static int on_wal_commit(void* self, sqlite3* db, const char* name, int pages);

  // Writer thread only.
  Result<Committed> apply_commit(const NewMessage& msg);
  Result<void> apply_attempt(const DeliveryAttempt& attempt);
  Result<std::vector<DeliveryJob>> apply_replay(const std::string& message_id);
  void add_event(const std::string& message_id, std::int64_t at_ms, std::string_view kind,
                 const std::string& detail);
  MessageState refresh_state(const std::string& message_id);

  // Reader thread only.
  Result<std::optional<MessageView>> read_message(const std::string& message_id);
  Result<std::vector<MessageSummary>> read_list(const MessageQuery& query);
  sqlite::Statement& list_statement(const MessageQuery& query);

  SqliteStoreSettings settings_;
  std::size_t max_batch_;
  sqlite::Connection writer_db_;
  std::unique_ptr<WriteStatements> write_;
  std::int64_t next_seq_ = 1;
  std::uint64_t batches_ = 0, writes_done_ = 0;  // for the closing log line
  std::unique_ptr<sqlite::Connection> reader_db_;
  std::unique_ptr<ReadStatements> read_;

  JobQueue writes_;
  JobQueue reads_;
  std::thread writer_;
  std::thread reader_;

  // Copying the WAL back into the database runs here, so commits never wait for that copy
  // and its fsync (SQLite's default runs it inside whichever commit crosses the limit).
  std::unique_ptr<sqlite::Connection> checkpoint_db_;
  std::thread checkpointer_;
  std::mutex checkpoint_mutex_;
  std::condition_variable checkpoint_due_;
  bool checkpoint_wanted_ = false;
  bool checkpoint_stop_ = false;
  std::mutex close_mutex_;
  bool closed_ = false;
};

void SqliteStore::migrate() {
  auto version = single_int(writer_db_, "PRAGMA user_version");
  if (version > current_schema_version)
    throw std::runtime_error("message store " + settings_.path.string() + " has schema version " +
                             std::to_string(version) + ", newer than this broker understands (" +
                             std::to_string(current_schema_version) + ")");
  if (version == current_schema_version) return;
  writer_db_.exec_or_throw(std::string("BEGIN IMMEDIATE;") + schema_sql + "PRAGMA user_version = " +
                           std::to_string(current_schema_version) + "; COMMIT;");
}

void SqliteStore::write_loop() {
  std::vector<std::unique_ptr<Job>> batch;
  for (;;) {
    batch.clear();
    {
      std::unique_lock lock(writes_.mutex);
      // Requests that queued up while the last batch was written mean load. Only then is a
      // short wait worth it, to let one fsync cover more commits; when idle, write at once.
      bool under_load = !writes_.jobs.empty();
      writes_.ready.wait(lock, [this] { return !writes_.jobs.empty() || writes_.closed; });
      if (writes_.jobs.empty()) return;  // closed and drained
      if (under_load) gather_more(lock);
      while (!writes_.jobs.empty() && batch.size() < max_batch_) {
        batch.push_back(std::move(writes_.jobs.front()));
        writes_.jobs.pop_front();
      }
    }
    write_batch(batch);
    ++batches_;
    writes_done_ += batch.size();
  }
}

void SqliteStore::gather_more(std::unique_lock<std::mutex>& lock) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + settings_.max_commit_delay;
  const auto quiet = settings_.max_commit_delay / 8;
  while (writes_.jobs.size() < max_batch_ && !writes_.closed && clock::now() < deadline) {
    auto seen = writes_.arrivals;
    writes_.ready.wait_for(lock, quiet);
    if (writes_.arrivals == seen) return;  // arrivals stopped: waiting longer only adds latency
  }
}

// Runs the batch as one transaction. A constraint failure belongs to the write that caused
// it: that write fails alone and the rest run again. Anything else (disk full, I/O error,
// lock timeout) would hit every write alike, so the whole batch fails at once as retryable.
void SqliteStore::write_batch(std::vector<std::unique_ptr<Job>>& batch) {
  std::vector<Job*> live;
  for (auto& job : batch) live.push_back(job.get());
  while (!live.empty()) {
    const auto seq_before = next_seq_;
    Job* culprit = nullptr;
    write_->begin.run();
    for (auto* job : live) {
      job->run();
      if (writer_db_.failed()) {
        culprit = job;
        break;
      }
    }
    write_->commit.run();
    if (!writer_db_.failed()) break;

    next_seq_ = seq_before;  // those numbers were rolled back with the rows
    const bool one_write_at_fault = culprit && (writer_db_.error_code() & 0xff) == SQLITE_CONSTRAINT;
    auto failure = unsaved(writer_db_);
    log::error("store", (one_write_at_fault ? "a write failed: " : "a batch of " + std::to_string(live.size()) +
                                                                      " write(s) failed: ") +
                            writer_db_.error_message() +
                            (one_write_at_fault ? "; retrying the rest of its batch" : ""));
    writer_db_.clear_error();
    write_->rollback.run();  // may fail when SQLite already rolled back; that is fine
    writer_db_.clear_error();
    if (!one_write_at_fault) {
      for (auto* job : live) job->fail(failure);
      break;
    }
    culprit->fail(failure);
    live.erase(std::find(live.begin(), live.end(), culprit));
  }
  for (auto& job : batch) job->complete();
}

void SqliteStore::add_event(const std::string& message_id, std::int64_t at_ms, std::string_view kind,
                            const std::string& detail) {
  write_->insert_event.start().bind(1, message_id).bind(2, at_ms).bind(3, kind).bind(4, detail).run();
}

MessageState SqliteStore::refresh_state(const std::string& message_id) {
  auto& count = write_->count_deliveries;
  count.start().bind(1, message_id);
  auto state = count.step() ? state_from_counts(count.int64(0), count.int64(1), count.int64(2))
                            : MessageState::unroutable;
  count.reset();
  write_->set_state.start().bind(1, message_id).bind(2, to_string(state)).run();
  return state;
}

Result<Committed> SqliteStore::apply_commit(const NewMessage& msg) {
  const auto now = now_ms();
  if (!msg.idempotency_key.empty()) {
    auto& find = write_->find_by_key;
    find.start().bind(1, msg.source).bind(2, msg.idempotency_key);
    if (find.step()) {
      Committed existing;
      existing.outcome.message_id = find.text(0);
      existing.outcome.duplicate = true;
      existing.outcome.state = message_state_from(find.text(1));
      bool same_content = find.text(2) == msg.content_hash;
      find.reset();
      add_event(existing.outcome.message_id, now, "duplicate",
                "idempotency_key=" + msg.idempotency_key + " from " + msg.source +
                    " submitted again" + (same_content ? "" : " with different content sha256=" + msg.content_hash) +
                    "; answered with this message");
      return existing;
    }
    find.reset();
  }

  // Repeated destinations would be delivered twice; keep the first of each.
  std::vector<std::string> destinations;
  for (const auto& d : msg.destinations)
    if (std::find(destinations.begin(), destinations.end(), d) == destinations.end()) destinations.push_back(d);

  Committed done;
  done.outcome.message_id = msg.id.empty() ? new_message_id() : msg.id;
  done.outcome.state = destinations.empty() ? MessageState::unroutable : MessageState::delivering;
  const auto& id = done.outcome.message_id;
  const auto seq = next_seq_++;

  std::string warnings = "[";
  for (const auto& w : msg.warnings) {
    if (warnings.size() > 1) warnings += ',';
    append_json_string(warnings, w);
  }
  warnings += ']';
  write_->insert_message.start()
      .bind(1, id).bind(2, seq).bind(3, msg.source).bind(4, msg.channel).bind(5, msg.idempotency_key)
      .bind(6, msg.resource_type).bind(7, msg.event).bind(8, msg.patient_key).bind(9, msg.content_type)
      .bind(10, msg.content_hash).bind(11, msg.received_at_ms).bind(12, to_string(done.outcome.state))
      .bind_blob(13, msg.body).bind(14, warnings)
      .run();

  add_event(id, msg.received_at_ms, "received",
            "source=" + msg.source + " channel=" + msg.channel + " content_type=" + msg.content_type +
                " bytes=" + std::to_string(msg.body.size()) + " sha256=" + msg.content_hash +
                (msg.idempotency_key.empty() ? "" : " idempotency_key=" + msg.idempotency_key));
  add_event(id, now, "validated",
            msg.warnings.empty() ? std::string("no warnings")
                                 : std::to_string(msg.warnings.size()) + " warning(s): " + join(msg.warnings, "; "));
  if (destinations.empty()) {
    add_event(id, now, "unroutable",
              msg.route_ids.empty() ? "no route matched"
                                    : "routes " + join(msg.route_ids, ",") + " matched but named no destination");
    return done;
  }
  add_event(id, now, "routed", "routes=" + join(msg.route_ids, ",") + " destinations=" + join(destinations, ","));

  for (const auto& destination : destinations) {
    write_->insert_delivery.start().bind(1, id).bind(2, destination).bind(3, seq).run();
    DeliveryJob job;
    job.delivery_id = sqlite3_last_insert_rowid(writer_db_.handle());
    job.message_id = id;
    job.destination = destination;
    job.patient_key = msg.patient_key;
    job.resource_type = msg.resource_type;
    job.content_type = msg.content_type;
    job.body = msg.body;
    job.seq = seq;
    done.jobs.push_back(std::move(job));
  }
  return done;
}

Result<void> SqliteStore::apply_attempt(const DeliveryAttempt& attempt) {
  auto& find = write_->find_delivery;
  find.start().bind(1, attempt.delivery_id);
  if (!find.step()) {
    find.reset();
    return Failure::permanent(404, Issue{Severity::error, "not-found",
                                         "no delivery " + std::to_string(attempt.delivery_id) + " in the store",
                                         "", ""});
  }
  const auto message_id = find.text(0);
  const auto destination = find.text(1);
  find.reset();

  const auto status = attempt.ok ? DeliveryStatus::delivered
                                 : attempt.dead ? DeliveryStatus::dead : DeliveryStatus::pending;
  std::string outcome = attempt.http_status ? "http " + std::to_string(attempt.http_status) : "no response";
  if (!attempt.detail.empty()) outcome += ": " + attempt.detail;
  write_->update_delivery.start()
      .bind(1, attempt.delivery_id).bind(2, to_string(status)).bind(3, std::int64_t{attempt.attempt})
      .bind(4, status == DeliveryStatus::pending ? attempt.next_attempt_ms : std::int64_t{0})
      .bind(5, attempt.ok ? std::string() : outcome)
      .run();

  std::string verdict = attempt.ok ? "ok"
                        : attempt.dead ? "gave up"
                        : "will retry at " + std::to_string(attempt.next_attempt_ms);
  if (!attempt.ok && !attempt.dead) verdict = (attempt.retryable ? "retryable, " : "") + verdict;
  const auto at = attempt.at_ms ? attempt.at_ms : now_ms();
  add_event(message_id, at, "attempt",
            "destination=" + destination + " attempt=" + std::to_string(attempt.attempt) + " " + outcome +
                " (" + verdict + ")");
  if (status == DeliveryStatus::delivered) add_event(message_id, at, "delivered", "destination=" + destination);
  if (status == DeliveryStatus::dead)
    add_event(message_id, at, "dead",
              "destination=" + destination + " after " + std::to_string(attempt.attempt) +
                  " attempt(s); last: " + outcome);
  refresh_state(message_id);
  return {};
}

Result<std::vector<DeliveryJob>> SqliteStore::apply_replay(const std::string& message_id) {
  auto& message = write_->message_for_replay;
  message.start().bind(1, message_id);
  if (!message.step()) {
    message.reset();
    if (writer_db_.failed()) return std::vector<DeliveryJob>{};  // the batch fails as a whole
    return not_found(message_id);
  }
  DeliveryJob base;
  base.message_id = message_id;
  base.patient_key = message.text(0);
  base.resource_type = message.text(1);
  base.content_type = message.text(2);
  base.body = message.text(3);
  message.reset();

  std::vector<DeliveryJob> jobs;
  std::vector<std::string> destinations;
  auto& dead = write_->dead_deliveries;
  dead.start().bind(1, message_id);
  while (dead.step()) {
    DeliveryJob job = base;
    job.delivery_id = dead.int64(0);
    job.destination = dead.text(1);
    job.seq = dead.int64(2);
    destinations.push_back(job.destination);
    jobs.push_back(std::move(job));
  }
  dead.reset();
  if (jobs.empty()) return jobs;

  write_->revive_dead.start().bind(1, message_id).run();
  add_event(message_id, now_ms(), "replayed", "destinations=" + join(destinations, ","));
  refresh_state(message_id);
  return jobs;
}

void SqliteStore::read_loop() {
  for (;;) {
    std::unique_ptr<Job> job;
    {
      std::unique_lock lock(reads_.mutex);
      reads_.ready.wait(lock, [this] { return !reads_.jobs.empty() || reads_.closed; });
      if (reads_.jobs.empty()) return;
      job = std::move(reads_.jobs.front());
      reads_.jobs.pop_front();
    }
    job->run();
    job->complete();
  }
}

int SqliteStore::on_wal_commit(void* self, sqlite3* db, const char*, int pages) {
  auto* store = static_cast<SqliteStore*>(self);
  if (pages >= runaway_wal_pages) {
    log::warn("store", "WAL has " + std::to_string(pages) + " pages; checkpointing in the writer");
    sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_RESTART, nullptr, nullptr);
  } else if (pages >= checkpoint_pages) {
    {
      std::lock_guard lock(store->checkpoint_mutex_);
      store->checkpoint_wanted_ = true;
    }
    store->checkpoint_due_.notify_one();
  }
  return SQLITE_OK;
}

void SqliteStore::checkpoint_loop() {
  for (;;) {
    {
      std::unique_lock lock(checkpoint_mutex_);
      checkpoint_due_.wait(lock, [this] { return checkpoint_wanted_ || checkpoint_stop_; });
      if (checkpoint_stop_) return;
      checkpoint_wanted_ = false;
    }
    // PASSIVE never blocks the writer; frames a reader still needs wait for the next round.
    int rc = sqlite3_wal_checkpoint_v2(checkpoint_db_->handle(), nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                       nullptr, nullptr);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
      log::warn("store", std::string("background checkpoint failed: ") + sqlite3_errmsg(checkpoint_db_->handle()));
  }
}

Result<std::optional<MessageView>> SqliteStore::read_message(const std::string& message_id) {
  auto& db = *reader_db_;
  auto& r = *read_;
  std::optional<MessageView> view;
  r.begin.run();  // one snapshot for the message, its deliveries and its events
  r.message.start().bind(1, message_id);
  if (r.message.step()) {
    MessageView& v = view.emplace();
    v.id = r.message.text(0);
    v.source = r.message.text(1);
    v.channel = r.message.text(2);
    v.resource_type = r.message.text(3);
    v.event = r.message.text(4);
    v.patient_key = r.message.text(5);
    v.content_hash = r.message.text(6);
    v.received_at_ms = r.message.int64(7);
    v.state = message_state_from(r.message.text(8));
    v.body_bytes = static_cast<std::size_t>(r.message.int64(9));
    r.message.reset();

    r.deliveries.start().bind(1, message_id);
    while (r.deliveries.step()) {
      DeliveryView d;
      d.delivery_id = r.deliveries.int64(0);
      d.destination = r.deliveries.text(1);
      d.status = delivery_status_from(r.deliveries.text(2));
      d.attempts = static_cast<int>(r.deliveries.int64(3));
      d.next_attempt_ms = r.deliveries.int64(4);
      d.last_error = r.deliveries.text(5);
      v.deliveries.push_back(std::move(d));
    }
    r.deliveries.reset();

    r.events.start().bind(1, message_id);
    while (r.events.step())
      v.events.push_back(LifecycleEvent{r.events.int64(0), r.events.text(1), r.events.text(2)});
    r.events.reset();
  }
  r.message.reset();
  r.end.run();
  if (db.failed()) {
    auto failure = unavailable("message store could not read message " + message_id + ": " + db.error_message());
    db.clear_error();
    r.end.run();
    db.clear_error();
    return failure;
  }
  return view;
}

sqlite::Statement& SqliteStore::list_statement(const MessageQuery& query) {
  std::string sql = "SELECT id, source, resource_type, state, received_at_ms FROM messages";
  if (query.state && !query.source.empty()) sql += " WHERE state = ?1 AND source = ?2";
  else if (query.state) sql += " WHERE state = ?1";
  else if (!query.source.empty()) sql += " WHERE source = ?2";
  sql += " ORDER BY seq DESC LIMIT ?3";
  auto& slot = read_->lists[sql];
  if (!slot) slot = std::make_unique<sqlite::Statement>(*reader_db_, sql);
  return *slot;
}

Result<std::vector<MessageSummary>> SqliteStore::read_list(const MessageQuery& query) {
  auto& db = *reader_db_;
  auto& st = list_statement(query);
  st.start();
  if (query.state) st.bind(1, to_string(*query.state));
  if (!query.source.empty()) st.bind(2, query.source);
  st.bind(3, std::int64_t{query.limit > 0 ? query.limit : 100});
  std::vector<MessageSummary> out;
  while (st.step())
    out.push_back(MessageSummary{st.text(0), st.text(1), st.text(2), message_state_from(st.text(3)), st.int64(4)});
  st.reset();
  if (db.failed()) {
    auto failure = unavailable("message store could not list messages: " + db.error_message());
    db.clear_error();
    return failure;
  }
  return out;
}

Result<std::vector<DeliveryJob>> SqliteStore::load_pending() {
  sqlite::Connection db(settings_.path, true);  // start-up only: its own short-lived connection
  sqlite::Statement st(db,
                       "SELECT d.id, d.message_id, d.destination, d.attempts, d.seq, d.next_attempt_ms, "
                       "m.patient_key, m.resource_type, m.content_type, m.body "
                       "FROM deliveries d JOIN messages m ON m.id = d.message_id "
                       "WHERE d.status = 'pending' ORDER BY d.seq, d.id");
  std::vector<DeliveryJob> jobs;
  st.start();
  while (st.step()) {
    DeliveryJob job;
    job.delivery_id = st.int64(0);
    job.message_id = st.text(1);
    job.destination = st.text(2);
    job.attempts = static_cast<int>(st.int64(3));
    job.seq = st.int64(4);
    job.not_before_ms = st.int64(5);
    job.patient_key = st.text(6);
    job.resource_type = st.text(7);
    job.content_type = st.text(8);
    job.body = st.text(9);
    jobs.push_back(std::move(job));
  }
  st.reset();
  if (db.failed()) return unavailable("message store could not load pending deliveries: " + db.error_message());
  return jobs;
}

}  // namespace

std::unique_ptr<Store> make_sqlite_store(const SqliteStoreSettings& settings) {
  // SQLite's allocation statistics take a global mutex on every malloc and the broker never
  // reads them. Only possible before SQLite initialises; afterwards the call is refused.
  static std::once_flag quiet_allocator;
  std::call_once(quiet_allocator, [] { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
  return std::make_unique<SqliteStore>(settings);
}

}  // namespace tellonce
