// The shared store: PostgreSQL, one writer thread with group commit and a pool of readers.
//
// Schema, version 2 (store_meta.schema_version; README.md; 1 -> 2 adds deliveries.requeue_at_ms). Created at start when absent, under
// an advisory lock so that nodes starting together create it once.
//   messages         one row per accepted record with its body (TOASTed out of line when large)
//                    and, for a converted record, what the partner sent; seq, an identity, is the
//                    acceptance order; (source, idempotency_key) is unique for non-empty keys
//   message_routes   (route, received_at_ms, seq): search by route
//   deliveries       one row per (message, destination) and the facts of its last attempt
//   held_bodies      a held delivery's body when it is not the stored one (minimised)
//   events           the trail that cannot be derived from the rows above (as in SQLite)
//   destination_controls, destination_events   pause/resume and its trail
#include "pg_conn.hpp"
#include "postgres_store.hpp"

#include "engines/common/store_rows.hpp"
#include "engines/common/worker_jobs.hpp"
#include "engines/common/write_health.hpp"

#include "tellonce/json.hpp"
#include "tellonce/log.hpp"

#include <boost/asio/async_result.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <rapidjson/document.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <pthread.h>

namespace tellonce {
namespace {

using namespace store_detail;  // the shared rows, failures and jobs (engines/common)

constexpr int current_schema_version = 2;

constexpr const char* schema_sql = R"sql(
CREATE TABLE store_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE messages (
  seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id              text NOT NULL UNIQUE,
  source          text NOT NULL,
  channel         text NOT NULL,
  idempotency_key text NOT NULL,
  resource_type   text NOT NULL,
  event           text NOT NULL,
  patient_key     text NOT NULL,
  nhs_number      text NOT NULL,
  content_type    text NOT NULL,
  content_hash    text NOT NULL,
  received_at_ms  bigint NOT NULL,
  accepted_at_ms  bigint NOT NULL,
  body_bytes      bigint NOT NULL,
  routes          text NOT NULL,
  destinations    integer NOT NULL,
  warnings        text NOT NULL,
  body            bytea NOT NULL,
  original_content_type text NOT NULL DEFAULT '',
  original_bytes  bigint NOT NULL DEFAULT 0,
  original        bytea
);
CREATE UNIQUE INDEX messages_by_idempotency_key ON messages (source, idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX messages_by_received ON messages (received_at_ms, seq);
CREATE INDEX messages_by_source ON messages (source, received_at_ms, seq);
CREATE INDEX messages_by_resource_type ON messages (resource_type, received_at_ms, seq);
CREATE INDEX messages_by_event ON messages (event, received_at_ms, seq) WHERE event <> '';
CREATE INDEX messages_by_nhs_number ON messages (nhs_number, received_at_ms, seq) WHERE nhs_number <> '';
CREATE INDEX messages_unroutable ON messages (received_at_ms, seq) WHERE destinations = 0;
CREATE TABLE message_routes (
  route          text NOT NULL,
  received_at_ms bigint NOT NULL,
  seq            bigint NOT NULL,
  PRIMARY KEY (route, received_at_ms, seq)
);
CREATE TABLE deliveries (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  message_id      text NOT NULL REFERENCES messages (id),
  destination     text NOT NULL,
  status          text NOT NULL CHECK (status IN ('pending', 'delivered', 'dead', 'held', 'expired')),
  attempts        integer NOT NULL,
  next_attempt_ms bigint NOT NULL,
  seq             bigint NOT NULL,
  received_at_ms  bigint NOT NULL,
  settled_at_ms   bigint NOT NULL DEFAULT 0,
  last_outcome    text NOT NULL DEFAULT '',
  partner_code    text NOT NULL DEFAULT '',
  detail          text NOT NULL DEFAULT '',
  requeue_at_ms   bigint NOT NULL DEFAULT 0,
  UNIQUE (message_id, destination)
);
CREATE INDEX deliveries_pending ON deliveries (destination, seq) WHERE status = 'pending';
CREATE INDEX deliveries_open ON deliveries (seq, id) WHERE status = 'pending';
CREATE INDEX deliveries_held ON deliveries (destination, seq) WHERE status = 'held';
CREATE INDEX deliveries_by_destination ON deliveries (destination, received_at_ms, seq);
CREATE INDEX deliveries_failed ON deliveries (received_at_ms, seq) WHERE status IN ('dead', 'expired');
CREATE INDEX deliveries_waiting ON deliveries (received_at_ms, seq) WHERE status IN ('pending', 'held');
CREATE INDEX deliveries_unqueued ON deliveries (requeue_at_ms) WHERE requeue_at_ms > 0;
CREATE TABLE held_bodies (delivery_id bigint PRIMARY KEY, body bytea NOT NULL);
CREATE TABLE events (
  id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  message_id      text NOT NULL REFERENCES messages (id),
  at_ms           bigint NOT NULL,
  kind            text NOT NULL,
  destination     text NOT NULL DEFAULT '',
  attempt         integer NOT NULL DEFAULT 0,
  outcome         text NOT NULL DEFAULT '',
  partner_code    text NOT NULL DEFAULT '',
  detail          text NOT NULL DEFAULT '',
  next_attempt_ms bigint NOT NULL DEFAULT 0,
  data            text NOT NULL DEFAULT ''
);
CREATE INDEX events_by_message ON events (message_id, id);
CREATE TABLE destination_controls (
  destination   text PRIMARY KEY,
  paused        boolean NOT NULL,
  changed_at_ms bigint NOT NULL,
  actor         text NOT NULL
);
CREATE TABLE destination_events (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  destination text NOT NULL,
  at_ms       bigint NOT NULL,
  action      text NOT NULL,
  actor       text NOT NULL
);
CREATE INDEX destination_events_by_destination ON destination_events (destination, id);
)sql";

// Version 1 -> 2: when a pending delivery no node has confirmed queueing may be queued again
// (Store::track_queueing). Every pending delivery of a version-1 store is due at once: with a
// shared queue, the first sweep pushes each once, as a version-1 start-up did.
constexpr const char* migrate_1_to_2_sql = R"sql(
ALTER TABLE deliveries ADD COLUMN requeue_at_ms bigint NOT NULL DEFAULT 0;
UPDATE deliveries SET requeue_at_ms = 1 WHERE status = 'pending';
CREATE INDEX deliveries_unqueued ON deliveries (requeue_at_ms) WHERE requeue_at_ms > 0;
UPDATE store_meta SET value = '2' WHERE key = 'schema_version';
)sql";

// A message's state, from its deliveries (alias m): held counts as pending, expired as dead.
#define TELLONCE_PG_STATE_SQL                                                                          \
  "CASE WHEN m.destinations = 0 THEN 'unroutable' "                                                     \
  "WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.status IN ('pending', 'held')) " \
  "THEN 'delivering' "                                                                                  \
  "WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.status IN ('dead', 'expired')) " \
  "THEN 'failed' ELSE 'delivered' END"

// Lists travel as one text parameter split on the unit separator (route and partner ids never
// hold control characters).
constexpr char list_separator = '\x1f';

// One round trip stores a new record: the message, its routes and its deliveries. ON CONFLICT
// DO NOTHING on the (source, idempotency_key) index leaves no row for a duplicate (committed on
// any node, or earlier in this batch); a concurrent insert of the same key on another node makes
// this one wait for that transaction and then see it.
constexpr const char* insert_message_sql = R"sql(
WITH m AS (
  INSERT INTO messages (id, source, channel, idempotency_key, resource_type, event, patient_key, nhs_number,
                        content_type, content_hash, received_at_ms, accepted_at_ms, body_bytes, routes,
                        destinations, warnings, body, original_content_type, original_bytes, original)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
  ON CONFLICT (source, idempotency_key) WHERE idempotency_key <> '' DO NOTHING
  RETURNING seq, id, received_at_ms),
r AS (
  INSERT INTO message_routes (route, received_at_ms, seq)
  SELECT DISTINCT t.route, m.received_at_ms, m.seq FROM m, string_to_table($21, chr(31)) AS t(route)
  ON CONFLICT DO NOTHING),
d AS (
  INSERT INTO deliveries (message_id, destination, status, attempts, next_attempt_ms, seq, received_at_ms,
                          requeue_at_ms)
  SELECT m.id, t.destination, 'pending', 0, 0, m.seq, m.received_at_ms, $23
  FROM m, string_to_table($22, chr(31)) WITH ORDINALITY AS t(destination, n) ORDER BY t.n
  RETURNING id, destination)
SELECT m.seq, d.id, d.destination FROM m LEFT JOIN d ON true
)sql";




// A pending delivery's job, without its body, from a row whose first nine columns are d.id,
// d.message_id, d.destination, d.attempts, d.seq, d.next_attempt_ms, m.patient_key,
// m.resource_type, m.content_type (start-up's load and the sweep's claim).
DeliveryJob pending_job(const pg::Rows& rows, int i) {
  DeliveryJob job;
  job.delivery_id = rows.int64(i, 0);
  job.message_id = rows.text(i, 1);
  job.destination = rows.text(i, 2);
  job.attempts = static_cast<int>(rows.int64(i, 3));
  job.seq = rows.int64(i, 4);
  job.not_before_ms = rows.int64(i, 5);
  job.patient_key = rows.text(i, 6);
  job.resource_type = rows.text(i, 7);
  job.content_type = rows.text(i, 8);
  return job;
}

// SQLSTATE class 23: integrity constraint violation, the fault of one write.
bool constraint_violation(const pg::Connection& db) { return db.sqlstate().rfind("23", 0) == 0; }
// Serialization failure or deadlock between nodes: the whole batch may pass when run again.
bool worth_rerunning(const pg::Connection& db) { return db.sqlstate() == "40001" || db.sqlstate() == "40P01"; }

Failure unsaved(const pg::Connection& db) { return store_detail::unsaved(db.error_message(), constraint_violation(db)); }








// ---- search ----



// "FROM messages m WHERE ..." for a query, with its parameters. PostgreSQL's planner picks the
// index (the filters each have one ending in (received_at_ms, seq)).
struct SearchSql {
  std::string from_where;
  pg::Params params;
};

Result<SearchSql> search_sql_for(const MessageQuery& q, bool with_cursor) {
  SearchSql out;
  std::vector<std::string> where;
  auto text = [&](const std::string& value) {
    out.params.text(value);
    return "$" + std::to_string(out.params.size());
  };
  auto number = [&](std::int64_t value) {
    out.params.number(value);
    return "$" + std::to_string(out.params.size()) + "::bigint";
  };
  out.from_where = "FROM messages m";
  if (q.since_ms > 0) where.push_back("m.received_at_ms >= " + number(q.since_ms));
  if (q.until_ms > 0) where.push_back("m.received_at_ms < " + number(q.until_ms));
  if (with_cursor && !q.cursor.empty()) {
    auto c = parse_cursor(q.cursor);
    if (!c)
      return Failure::permanent(Errc::malformed, Issue{Severity::error, "value",
                                                       "cursor is not one this broker gave out", "cursor", ""});
    const auto at = number(c->first);
    const auto seq = number(c->second);
    where.push_back("(m.received_at_ms, m.seq) < (" + at + ", " + seq + ")");
  }
  if (!q.nhs_number.empty()) where.push_back("m.nhs_number = " + text(q.nhs_number));
  if (!q.event.empty()) where.push_back("m.event = " + text(q.event));
  if (!q.source.empty()) where.push_back("m.source = " + text(q.source));
  if (!q.resource_type.empty()) where.push_back("m.resource_type = " + text(q.resource_type));
  if (!q.route.empty())
    where.push_back("EXISTS (SELECT 1 FROM message_routes r WHERE r.route = " + text(q.route) +
                    " AND r.received_at_ms = m.received_at_ms AND r.seq = m.seq)");
  if (!q.destination.empty())
    where.push_back("EXISTS (SELECT 1 FROM deliveries t WHERE t.message_id = m.id AND t.destination = " +
                    text(q.destination) + ")");
  if (q.state) {
    switch (*q.state) {
      case MessageState::accepted: where.push_back("false"); break;  // never stored in this state
      case MessageState::unroutable: where.push_back("m.destinations = 0"); break;
      case MessageState::delivering:
        where.push_back("EXISTS (SELECT 1 FROM deliveries w WHERE w.message_id = m.id AND w.status IN ('pending', 'held'))");
        break;
      case MessageState::failed:
        where.push_back("EXISTS (SELECT 1 FROM deliveries w WHERE w.message_id = m.id AND w.status IN ('dead', 'expired'))");
        where.push_back("NOT EXISTS (SELECT 1 FROM deliveries w WHERE w.message_id = m.id AND w.status IN ('pending', 'held'))");
        break;
      case MessageState::delivered:
        where.push_back("m.destinations > 0 AND NOT EXISTS (SELECT 1 FROM deliveries w "
                        "WHERE w.message_id = m.id AND w.status <> 'delivered')");
        break;
    }
  }
  if (!where.empty()) out.from_where += " WHERE " + join(where, " AND ");
  return out;
}

// The dead and expired deliveries of the messages a search matches (to its destination only,
// when it names one), oldest first.
std::string replayable_sql(SearchSql& search, const MessageQuery& q, bool count_only) {
  std::string sql = count_only ? "SELECT count(*)" : "SELECT dd.id, dd.message_id, dd.destination, dd.seq";
  sql += " FROM deliveries dd WHERE dd.status IN ('dead', 'expired') AND dd.seq IN (SELECT m.seq " +
         search.from_where + ")";
  if (!q.destination.empty()) {
    search.params.text(q.destination);
    sql += " AND dd.destination = $" + std::to_string(search.params.size());
  }
  if (!count_only) sql += " ORDER BY dd.seq, dd.id LIMIT " + std::to_string(Store::max_replay_batch);
  return sql;
}

std::string with_connect_timeout(const PostgresStoreSettings& s) {
  auto info = s.conninfo;
  // A URI takes its options as a query; a key=value string as another pair.
  if (info.rfind("postgresql://", 0) == 0 || info.rfind("postgres://", 0) == 0)
    info += (info.find('?') == std::string::npos ? "?" : "&") + std::string("connect_timeout=") +
            std::to_string(s.connect_timeout.count()) + "&application_name=tellonce";
  else
    info += " connect_timeout=" + std::to_string(s.connect_timeout.count()) + " application_name=tellonce";
  return info;
}

class PostgresStore final : public Store {
 public:
  explicit PostgresStore(const PostgresStoreSettings& settings)
      : settings_(settings),
        conninfo_(with_connect_timeout(settings)),
        max_batch_(static_cast<std::size_t>(std::max(1, settings.max_batch))),
        writer_db_(conninfo_) {
    if (!writer_db_.ensure_connected())
      throw std::runtime_error("message store (postgresql): " + writer_db_.error_message());
    where_ = std::string(PQuser(writer_db_.handle())) + "@" + PQhost(writer_db_.handle()) + ":" +
             PQport(writer_db_.handle()) + "/" + PQdb(writer_db_.handle());
    create_or_check_schema();
    for (int i = 0; i < std::max(1, settings.pool_size); ++i) {
      readers_.emplace_back([this, i] {
        pthread_setname_np(pthread_self(), ("store-read-" + std::to_string(i)).c_str());
        read_loop();
      });
    }
    writer_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "store-writer");
      write_loop();
    });
  }

  ~PostgresStore() override { close(); }

  std::string describe() const override { return "postgresql " + where_; }

  asio::awaitable<Result<Committed>> commit(NewMessage msg) override {
    auto work = [this, msg = std::move(msg)] { return apply_commit(msg); };
    return submit<Committed>(writes_, std::move(work));
  }

  asio::awaitable<Result<void>> record_attempt(DeliveryAttempt attempt) override {
    auto work = [this, attempt = std::move(attempt)] { return apply_attempt(attempt); };
    return submit<void>(writes_, std::move(work));
  }

  asio::awaitable<Result<std::vector<DeliveryJob>>> replay(std::string message_id) override {
    auto work = [this, id = std::move(message_id)] { return apply_replay(id, {}); };
    return submit<std::vector<DeliveryJob>>(writes_, std::move(work));
  }

  asio::awaitable<Result<std::vector<DeliveryJob>>> replay_as(std::string message_id, std::string actor) override {
    auto work = [this, id = std::move(message_id), actor = std::move(actor)] { return apply_replay(id, actor); };
    return submit<std::vector<DeliveryJob>>(writes_, std::move(work));
  }

  asio::awaitable<Result<ReplayMatch>> replay_matching(MessageQuery query, std::string actor, bool dry_run) override {
    if (dry_run) {
      auto work = [this, query = std::move(query)](pg::Connection& db) { return read_replayable_count(db, query); };
      return read<ReplayMatch>(std::move(work));
    }
    auto work = [this, query = std::move(query), actor = std::move(actor)] { return apply_replay_matching(query, actor); };
    return submit<ReplayMatch>(writes_, std::move(work));
  }

  asio::awaitable<Result<void>> set_paused(std::string destination, bool paused, std::string actor) override {
    auto work = [this, destination = std::move(destination), paused, actor = std::move(actor)] {
      return apply_set_paused(destination, paused, actor);
    };
    return submit<void>(writes_, std::move(work));
  }

  asio::awaitable<Result<std::vector<DestinationControl>>> destination_controls() override {
    auto work = [](pg::Connection& db) -> Result<std::vector<DestinationControl>> {
      auto rows = db.exec("SELECT destination, paused, changed_at_ms, actor FROM destination_controls ORDER BY destination");
      if (db.failed()) return unavailable("message store could not read destination controls: " + db.error_message());
      std::vector<DestinationControl> out;
      for (int i = 0; i < rows.size(); ++i)
        out.push_back(DestinationControl{rows.text(i, 0), rows.text(i, 1) == "t", rows.int64(i, 2), rows.text(i, 3)});
      return out;
    };
    return read<std::vector<DestinationControl>>(std::move(work));
  }

  asio::awaitable<Result<std::vector<DestinationAction>>> destination_trail(std::string destination, int limit) override {
    auto work = [destination = std::move(destination), limit](pg::Connection& db) -> Result<std::vector<DestinationAction>> {
      auto rows = db.exec("SELECT at_ms, destination, action, actor FROM destination_events WHERE destination = $1 "
                          "ORDER BY id DESC LIMIT $2::bigint",
                          pg::Params().text(destination).number(limit > 0 ? limit : 20));
      if (db.failed())
        return unavailable("message store could not read the trail of " + destination + ": " + db.error_message());
      std::vector<DestinationAction> out;
      for (int i = 0; i < rows.size(); ++i)
        out.push_back(DestinationAction{rows.int64(i, 0), rows.text(i, 1), rows.text(i, 2), rows.text(i, 3)});
      return out;
    };
    return read<std::vector<DestinationAction>>(std::move(work));
  }

  asio::awaitable<Result<std::optional<MessageView>>> find(std::string message_id) override {
    auto work = [id = std::move(message_id)](pg::Connection& db) { return read_message(db, id); };
    return read<std::optional<MessageView>>(std::move(work));
  }

  asio::awaitable<Result<std::string>> body(std::string message_id) override {
    auto work = [id = std::move(message_id)](pg::Connection& db) -> Result<std::string> {
      auto rows = db.exec("SELECT body FROM messages WHERE id = $1", pg::Params().text(id));
      if (db.failed()) return unavailable("message store could not read the body of " + id + ": " + db.error_message());
      if (rows.empty()) return not_found(id);
      return rows.bytes(0, 0);
    };
    return read<std::string>(std::move(work));
  }

  asio::awaitable<Result<std::optional<StoredBytes>>> original(std::string message_id) override {
    auto work = [id = std::move(message_id)](pg::Connection& db) -> Result<std::optional<StoredBytes>> {
      auto rows = db.exec("SELECT original_content_type, original FROM messages WHERE id = $1", pg::Params().text(id));
      if (db.failed())
        return unavailable("message store could not read what was sent for " + id + ": " + db.error_message());
      if (rows.empty()) return not_found(id);
      if (rows.is_null(0, 1)) return std::optional<StoredBytes>{};
      return std::optional<StoredBytes>(StoredBytes{rows.text(0, 0), rows.bytes(0, 1)});
    };
    return read<std::optional<StoredBytes>>(std::move(work));
  }

  asio::awaitable<Result<std::vector<MessageSummary>>> list(MessageQuery query) override {
    auto work = [query = std::move(query)](pg::Connection& db) { return read_list(db, query); };
    return read<std::vector<MessageSummary>>(std::move(work));
  }

  Result<std::vector<DeliveryJob>> load_pending(std::size_t max_body_bytes) override;
  Result<std::vector<StoredFact>> facts_since(std::int64_t since_ms) override;

  asio::awaitable<Result<std::vector<DestinationBacklog>>> backlog() override {
    auto work = [](pg::Connection& db) -> Result<std::vector<DestinationBacklog>> {
      auto rows = db.exec(
          "SELECT p.destination, p.pending, m.received_at_ms FROM "
          "(SELECT destination, count(*) AS pending, min(seq) AS first_seq FROM deliveries "
          "WHERE status = 'pending' GROUP BY destination) p "
          "JOIN messages m ON m.seq = p.first_seq ORDER BY p.destination");
      if (db.failed()) return unavailable("message store could not count the backlog: " + db.error_message());
      std::vector<DestinationBacklog> out;
      for (int i = 0; i < rows.size(); ++i)
        out.push_back(DestinationBacklog{rows.text(i, 0), static_cast<std::uint64_t>(rows.int64(i, 1)), rows.int64(i, 2)});
      return out;
    };
    return read<std::vector<DestinationBacklog>>(std::move(work));
  }

  // Measured by the writer now and then (at most every 30 s), so this never waits on the server.
  std::uint64_t size_bytes() const override { return size_bytes_.load(); }

  bool track_queueing(std::chrono::milliseconds grace) override {
    requeue_grace_ms_ = std::max<std::int64_t>(1, grace.count());
    return true;
  }

  asio::awaitable<Result<void>> mark_queued(std::vector<std::int64_t> delivery_ids) override {
    std::sort(delivery_ids.begin(), delivery_ids.end());
    auto work = [this, ids = std::move(delivery_ids)]() -> Result<void> {
      // Only rows still waiting: a row already settled or cleared is not rewritten. A row another
      // node has locked (settling it) is skipped rather than waited for: waiting could deadlock
      // with that node's batch, while a skipped mark costs at most a second copy of the job
      // after the grace (a settled delivery is cleared by its settlement anyway).
      writer_db_.exec_prepared("UPDATE deliveries SET requeue_at_ms = 0 WHERE id IN (SELECT id FROM deliveries "
                      "WHERE id = ANY($1::bigint[]) AND requeue_at_ms > 0 ORDER BY id FOR UPDATE SKIP LOCKED)",
                      pg::Params().text(bigint_array(ids)));
      return {};
    };
    return submit<void>(writes_, std::move(work));
  }

  asio::awaitable<Result<std::vector<DeliveryJob>>> claim_unqueued(std::size_t limit) override {
    auto work = [this, limit] { return apply_claim_unqueued(limit); };
    return submit<std::vector<DeliveryJob>>(writes_, std::move(work));
  }

  asio::awaitable<Result<std::vector<HeldRecord>>> mailbox(std::string partner, int limit) override {
    auto work = [partner = std::move(partner), limit](pg::Connection& db) -> Result<std::vector<HeldRecord>> {
      auto rows = db.exec(
          "SELECT m.id, m.source, m.resource_type, m.content_type, d.seq, d.settled_at_ms "
          "FROM deliveries d JOIN messages m ON m.seq = d.seq "
          "WHERE d.destination = $1 AND d.status = 'held' ORDER BY d.seq LIMIT $2::bigint",
          pg::Params().text(partner).number(limit > 0 ? limit : 1));
      if (db.failed())
        return unavailable("message store could not list the mailbox of " + partner + ": " + db.error_message());
      std::vector<HeldRecord> out;
      for (int i = 0; i < rows.size(); ++i)
        out.push_back(HeldRecord{rows.text(i, 0), rows.text(i, 1), rows.text(i, 2), rows.text(i, 3), rows.int64(i, 4),
                                 rows.int64(i, 5), {}});
      return out;
    };
    return read<std::vector<HeldRecord>>(std::move(work));
  }

  asio::awaitable<Result<HeldRecord>> held(std::string partner, std::string message_id) override {
    auto work = [partner = std::move(partner), id = std::move(message_id)](pg::Connection& db) -> Result<HeldRecord> {
      auto rows = db.exec(
          "SELECT m.id, m.source, m.resource_type, m.content_type, d.seq, d.settled_at_ms, coalesce(h.body, m.body) "
          "FROM deliveries d JOIN messages m ON m.seq = d.seq LEFT JOIN held_bodies h ON h.delivery_id = d.id "
          "WHERE d.message_id = $1 AND d.destination = $2 AND d.status = 'held'",
          pg::Params().text(id).text(partner));
      if (db.failed())
        return unavailable("message store could not read " + id + " from the mailbox of " + partner + ": " +
                           db.error_message());
      if (rows.empty()) return not_held(partner, id);
      return HeldRecord{rows.text(0, 0), rows.text(0, 1), rows.text(0, 2), rows.text(0, 3), rows.int64(0, 4),
                        rows.int64(0, 5), rows.bytes(0, 6)};
    };
    return read<HeldRecord>(std::move(work));
  }

  asio::awaitable<Result<void>> collect(std::string partner, std::string message_id) override {
    auto work = [this, partner = std::move(partner), id = std::move(message_id)] { return apply_collect(partner, id); };
    return submit<void>(writes_, std::move(work));
  }

  asio::awaitable<Result<std::vector<std::string>>> expire_held(std::string partner,
                                                                 std::int64_t held_before_ms) override {
    auto work = [this, partner = std::move(partner), held_before_ms] { return apply_expiry(partner, held_before_ms); };
    return submit<std::vector<std::string>>(writes_, std::move(work));
  }

  asio::awaitable<Result<void>> health() override {
    if (closed_flag_.load()) co_return unavailable("the message store is closed");
    if (!write_health_.failing()) co_return Result<void>{};
    if (!write_health_.probe_due(settings_.health_probe_interval)) co_return unavailable(write_health_.failure_text());
    // A write of its own through the writer: it reconnects first when the connection was lost.
    auto probe = [this]() -> Result<void> {
      writer_db_.exec("INSERT INTO store_meta (key, value) VALUES ('health_probe', $1) "
                      "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                      pg::Params().text(std::to_string(now_ms())));
      return {};
    };
    auto probed = co_await submit<void>(writes_, std::move(probe));
    if (!probed) co_return unavailable(write_health_.failure_text());
    co_return probed;
  }

  void close() override {
    {
      std::lock_guard lock(close_mutex_);
      if (closed_) return;
      closed_ = true;
    }
    closed_flag_ = true;
    writes_.close();
    reads_.close();
    if (writer_.joinable()) writer_.join();
    for (auto& reader : readers_)
      if (reader.joinable()) reader.join();
    writer_db_.disconnect();
    log::info("store", "closed postgresql " + where_ + " after " + std::to_string(writes_done_) + " writes in " +
                           std::to_string(batches_) + " batches");
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
    co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(Result<T>)>(initiate,
                                                                                             asio::use_awaitable);
  }

  // A read runs on whichever reader thread takes it, with that thread's connection.
  template <class T, class Work>
  asio::awaitable<Result<T>> read(Work work) {
    auto on_reader = [this, work = std::move(work)]() -> Result<T> {
      auto* db = reader_connection;
      if (!db->ensure_connected()) {
        auto failure = unavailable("message store cannot read: " + db->error_message());
        db->clear_error();
        return failure;
      }
      Result<T> result = work(*db);
      db->clear_error();
      return result;
    };
    return submit<T>(reads_, std::move(on_reader));
  }

  void create_or_check_schema();
  void write_loop();
  void write_batch(std::vector<std::unique_ptr<Job>>& batch);
  void read_loop();
  void measure_size();

  // Writer thread only.
  Result<Committed> apply_commit(const NewMessage& msg);
  Result<void> apply_attempt(const DeliveryAttempt& attempt);
  Result<std::vector<DeliveryJob>> apply_replay(const std::string& message_id, const std::string& actor);
  Result<std::vector<DeliveryJob>> apply_claim_unqueued(std::size_t limit);
  // The requeue time of a delivery made pending at `now`: 0 unless queueing is tracked.
  std::int64_t requeue_at(std::int64_t now) const {
    const auto grace = requeue_grace_ms_.load();
    return grace > 0 ? now + grace : 0;
  }
  static std::string bigint_array(const std::vector<std::int64_t>& ids) {
    std::string out = "{";
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (i) out += ',';
      out += std::to_string(ids[i]);
    }
    out += '}';
    return out;
  }
  Result<ReplayMatch> apply_replay_matching(const MessageQuery& query, const std::string& actor);
  Result<void> apply_set_paused(const std::string& destination, bool paused, const std::string& actor);
  Result<void> apply_collect(const std::string& partner, const std::string& message_id);
  Result<std::vector<std::string>> apply_expiry(const std::string& partner, std::int64_t held_before_ms);
  void add_event(const std::string& message_id, const LifecycleEvent& event, const std::string& data = {});

  // Reader threads (any connection).
  static Result<std::optional<MessageView>> read_message(pg::Connection& db, const std::string& message_id);
  static Result<std::vector<MessageSummary>> read_list(pg::Connection& db, const MessageQuery& query);
  static Result<ReplayMatch> read_replayable_count(pg::Connection& db, const MessageQuery& query);

  static thread_local pg::Connection* reader_connection;

  PostgresStoreSettings settings_;
  std::string conninfo_;
  std::string where_;
  std::size_t max_batch_;
  pg::Connection writer_db_;
  std::uint64_t batches_ = 0, writes_done_ = 0;
  std::atomic<std::uint64_t> size_bytes_{0};
  std::atomic<std::int64_t> requeue_grace_ms_{0};  // track_queueing: 0 until it is called
  std::chrono::steady_clock::time_point size_measured_{};

  JobQueue writes_;
  JobQueue reads_;
  std::thread writer_;
  std::vector<std::thread> readers_;
  std::mutex close_mutex_;
  bool closed_ = false;
  std::atomic<bool> closed_flag_{false};

  store_detail::WriteHealth write_health_;
};

thread_local pg::Connection* PostgresStore::reader_connection = nullptr;

void PostgresStore::create_or_check_schema() {
  auto& db = writer_db_;
  // One node creates the schema; the others wait for the lock and then find it there.
  db.exec_or_throw("BEGIN");
  db.exec_or_throw("SELECT pg_advisory_xact_lock(hashtext('tellonce schema ' || current_schema()))");
  auto rows = db.exec("SELECT to_regclass('store_meta') IS NOT NULL");
  if (db.failed()) throw std::runtime_error("message store (postgresql): " + db.error_message());
  if (rows.text(0, 0) != "t") {
    log::info("store", "creating the schema (version " + std::to_string(current_schema_version) + ") in " + where_);
    db.exec_or_throw(schema_sql);
    db.exec("INSERT INTO store_meta (key, value) VALUES ('schema_version', $1), ('store_id', $2)",
            pg::Params().text(std::to_string(current_schema_version)).text(new_message_id()));
  } else {
    auto version = db.exec("SELECT value FROM store_meta WHERE key = 'schema_version'");
    auto found = version.empty() ? 0 : std::atoi(version.text(0, 0).c_str());
    if (found == 1) {
      log::info("store", "upgrading the schema from version 1 to 2 in " + where_);
      db.exec_or_throw(migrate_1_to_2_sql);
      found = 2;
    }
    if (found != current_schema_version) {
      db.exec("ROLLBACK");
      throw std::runtime_error("message store postgresql " + where_ + " has schema version " + std::to_string(found) +
                               (found > current_schema_version ? ", newer than" : ", not the one") +
                               " this broker understands (" + std::to_string(current_schema_version) + ")");
    }
  }
  if (db.failed()) throw std::runtime_error("message store (postgresql): " + db.error_message());
  db.exec_or_throw("COMMIT");
  measure_size();
}

void PostgresStore::measure_size() {
  auto rows = writer_db_.exec(
      "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
      "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'");
  if (!writer_db_.failed()) size_bytes_ = static_cast<std::uint64_t>(rows.int64(0, 0));
  writer_db_.clear_error();
  size_measured_ = std::chrono::steady_clock::now();
}

void PostgresStore::write_loop() {
  std::vector<std::unique_ptr<Job>> batch;
  for (;;) {
    batch.clear();
    if (!writes_.take_batch(batch, max_batch_, settings_.max_commit_delay)) return;  // closed and drained
    write_batch(batch);
    ++batches_;
    writes_done_ += batch.size();
    if (std::chrono::steady_clock::now() - size_measured_ > std::chrono::seconds(30) && writer_db_.connected())
      measure_size();
  }
}

// The batch as one transaction: one WAL flush for all of it. A constraint violation belongs to
// the write that caused it: that write fails alone and the rest run again. A deadlock or
// serialization failure with another node runs the batch again (twice at most). Anything else
// (connection lost, server shutting down, disk full) fails the whole batch as unavailable; the
// transaction is rolled back by the server, so none of it is stored. A connection lost during
// COMMIT leaves the outcome unknown to us: the writes fail as unavailable and, if the commit
// did land, a resubmission with the same idempotency key is answered as a duplicate.
void PostgresStore::write_batch(std::vector<std::unique_ptr<Job>>& batch) {
  std::vector<Job*> live;
  for (auto& job : batch) live.push_back(job.get());
  bool batch_failed = false;
  std::string batch_error;
  int reruns = 0;
  while (!live.empty()) {
    if (!writer_db_.ensure_connected()) {
      batch_error = writer_db_.error_message();
      writer_db_.clear_error();
      auto failure = unavailable("the message store cannot reach PostgreSQL: " + batch_error +
                                 "; nothing was stored, try again later");
      for (auto* job : live) job->fail(failure);
      batch_failed = true;
      break;
    }
    Job* culprit = nullptr;
    writer_db_.exec("BEGIN");
    for (auto* job : live) {
      job->run();
      if (writer_db_.failed()) {
        culprit = job;
        break;
      }
    }
    writer_db_.exec("COMMIT");
    if (!writer_db_.failed()) break;

    const bool one_write_at_fault = culprit && constraint_violation(writer_db_);
    const bool rerun = !one_write_at_fault && worth_rerunning(writer_db_) && reruns < 2;
    auto failure = unsaved(writer_db_);
    const std::string error = writer_db_.error_message();
    log::error("store", (one_write_at_fault ? "a write failed: " : "a batch of " + std::to_string(live.size()) +
                                                                      " write(s) failed: ") +
                            error + (one_write_at_fault ? "; retrying the rest of its batch" : rerun ? "; running it again" : ""));
    writer_db_.clear_error();
    if (writer_db_.connected()) {
      writer_db_.exec("ROLLBACK");  // a no-op when the server already ended it
      writer_db_.clear_error();
    }
    if (rerun) {
      ++reruns;
      continue;
    }
    if (!one_write_at_fault) {
      for (auto* job : live) job->fail(failure);
      batch_failed = true;
      batch_error = error;
      break;
    }
    culprit->fail(failure);
    live.erase(std::find(live.begin(), live.end(), culprit));
  }
  write_health_.note(!batch_failed, batch_error);
  for (auto& job : batch) job->complete();
}

void PostgresStore::read_loop() {
  pg::Connection db(conninfo_);
  reader_connection = &db;
  for (;;) {
    std::unique_ptr<Job> job;
    {
      std::unique_lock lock(reads_.mutex);
      reads_.ready.wait(lock, [this] { return !reads_.jobs.empty() || reads_.closed; });
      if (reads_.jobs.empty()) break;
      job = std::move(reads_.jobs.front());
      reads_.jobs.pop_front();
    }
    job->run();
    job->complete();
  }
  reader_connection = nullptr;
}

void PostgresStore::add_event(const std::string& message_id, const LifecycleEvent& e, const std::string& data) {
  writer_db_.exec_prepared(
      "INSERT INTO events (message_id, at_ms, kind, destination, attempt, outcome, partner_code, detail, "
      "next_attempt_ms, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
      pg::Params()
          .text(message_id).number(e.at_ms).text(to_string(e.kind)).text(e.destination).number(e.attempt)
          .text(e.destination.empty() ? std::string_view("") : to_string(e.outcome))
          .text(e.partner_code).text(e.detail).number(e.next_attempt_ms).text(data));
}

Result<Committed> PostgresStore::apply_commit(const NewMessage& msg) {
  const auto now = now_ms();
  std::vector<std::string> destinations;
  for (const auto& d : msg.destinations)
    if (std::find(destinations.begin(), destinations.end(), d) == destinations.end()) destinations.push_back(d);

  Committed done;
  done.outcome.message_id = msg.id.empty() ? new_message_id() : msg.id;
  done.outcome.state = destinations.empty() ? MessageState::unroutable : MessageState::delivering;
  const auto& id = done.outcome.message_id;

  std::string warnings = "[";
  for (const auto& w : msg.warnings) {
    if (warnings.size() > 1) warnings += ',';
    append_json_string(warnings, w);
  }
  warnings += ']';
  pg::Params p;
  p.text(id).text(msg.source).text(msg.channel).text(msg.idempotency_key).text(msg.resource_type).text(msg.event)
      .text(msg.patient_key).text(nhs_number_in(msg.patient_key)).text(msg.content_type).text(msg.content_hash)
      .number(msg.received_at_ms).number(now).number(static_cast<std::int64_t>(msg.body.size()))
      .text(join(msg.route_ids, ",")).number(static_cast<std::int64_t>(destinations.size())).text(warnings)
      .bytes(msg.body).text(msg.original_content_type)
      .number(static_cast<std::int64_t>(msg.original_bytes.size()));
  if (msg.original_content_type.empty()) p.null();
  else p.bytes(msg.original_bytes);
  p.text(join(msg.route_ids, std::string_view(&list_separator, 1)))
      .text(join(destinations, std::string_view(&list_separator, 1)))
      .number(requeue_at(now));
  auto rows = writer_db_.exec_prepared(insert_message_sql, p);
  if (writer_db_.failed()) return done;  // the batch fails as a whole (or this write alone)

  if (rows.empty()) {  // (source, idempotency_key) is stored already: a duplicate
    auto existing = writer_db_.exec("SELECT m.id, " TELLONCE_PG_STATE_SQL " FROM messages m "
                                    "WHERE m.source = $1 AND m.idempotency_key = $2",
                                    pg::Params().text(msg.source).text(msg.idempotency_key));
    if (writer_db_.failed()) return done;
    if (existing.empty())
      return unavailable("the message store lost track of the record with this idempotency key; try again");
    Committed dup;
    dup.outcome.message_id = existing.text(0, 0);
    dup.outcome.duplicate = true;
    dup.outcome.state = message_state_from(existing.text(0, 1));
    LifecycleEvent duplicate;
    duplicate.kind = EventKind::duplicate;
    duplicate.at_ms = now;
    std::string data = "{\"source\":";
    append_json_string(data, msg.source);
    data += ",\"idempotencyKey\":";
    append_json_string(data, msg.idempotency_key);
    data += ",\"contentHash\":";
    append_json_string(data, msg.content_hash);
    data += '}';
    add_event(dup.outcome.message_id, duplicate, data);
    return dup;
  }

  const auto seq = rows.int64(0, 0);
  std::map<std::string, std::int64_t> delivery_ids;
  for (int i = 0; i < rows.size(); ++i)
    if (!rows.is_null(i, 1)) delivery_ids[rows.text(i, 2)] = rows.int64(i, 1);
  for (const auto& destination : destinations) {
    DeliveryJob job;
    job.delivery_id = delivery_ids[destination];
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

Result<void> PostgresStore::apply_attempt(const DeliveryAttempt& attempt) {
  const auto status = attempt.ok()     ? DeliveryStatus::delivered
                      : attempt.held() ? DeliveryStatus::held
                      : attempt.dead   ? DeliveryStatus::dead
                                       : DeliveryStatus::pending;
  const auto at = attempt.at_ms ? attempt.at_ms : now_ms();
  const bool settled = status != DeliveryStatus::pending;
  auto updated = writer_db_.exec_prepared(
      "UPDATE deliveries SET status = $2, attempts = $3, next_attempt_ms = $4, settled_at_ms = $5, "
      "last_outcome = $6, partner_code = $7, detail = $8, "
      "requeue_at_ms = CASE WHEN $2 = 'pending' THEN requeue_at_ms ELSE 0 END WHERE id = $1",
      pg::Params()
          .number(attempt.delivery_id).text(to_string(status)).number(attempt.attempt)
          .number(settled ? 0 : attempt.next_attempt_ms).number(settled ? at : 0)
          .text(to_string(attempt.outcome)).text(attempt.partner_code).text(attempt.detail));
  if (writer_db_.failed()) return {};
  if (updated.affected() == 0)
    return Failure::permanent(Errc::not_found, Issue{Severity::error, "not-found",
                                                     "no delivery " + std::to_string(attempt.delivery_id) + " in the store",
                                                     "", ""});
  if (status == DeliveryStatus::delivered) return {};
  if (status == DeliveryStatus::held && !attempt.held_body.empty())
    writer_db_.exec("INSERT INTO held_bodies (delivery_id, body) VALUES ($1, $2) "
                    "ON CONFLICT (delivery_id) DO UPDATE SET body = excluded.body",
                    pg::Params().number(attempt.delivery_id).bytes(attempt.held_body));
  LifecycleEvent event;
  event.kind = status == DeliveryStatus::dead   ? EventKind::dead
               : status == DeliveryStatus::held ? EventKind::held
                                                : EventKind::attempt;
  event.at_ms = at;
  event.destination = attempt.destination;
  event.attempt = attempt.attempt;
  event.outcome = attempt.outcome;
  event.partner_code = attempt.partner_code;
  event.detail = attempt.detail;
  event.next_attempt_ms = settled ? 0 : attempt.next_attempt_ms;
  add_event(attempt.message_id, event);
  return {};
}

Result<std::vector<DeliveryJob>> PostgresStore::apply_replay(const std::string& message_id, const std::string& actor) {
  auto message = writer_db_.exec("SELECT patient_key, resource_type, content_type, body FROM messages WHERE id = $1",
                                 pg::Params().text(message_id));
  if (writer_db_.failed()) return std::vector<DeliveryJob>{};
  if (message.empty()) return not_found(message_id);
  DeliveryJob base;
  base.message_id = message_id;
  base.patient_key = message.text(0, 0);
  base.resource_type = message.text(0, 1);
  base.content_type = message.text(0, 2);
  base.body = message.bytes(0, 3);

  // One statement: of two nodes replaying the same message, only one revives each delivery.
  auto revived = writer_db_.exec(
      "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_ms = 0, settled_at_ms = 0, "
      "requeue_at_ms = $2 WHERE message_id = $1 AND status IN ('dead', 'expired') RETURNING id, destination, seq",
      pg::Params().text(message_id).number(requeue_at(now_ms())));
  std::vector<DeliveryJob> jobs;
  for (int i = 0; i < revived.size(); ++i) {
    DeliveryJob job = base;
    job.delivery_id = revived.int64(i, 0);
    job.destination = revived.text(i, 1);
    job.seq = revived.int64(i, 2);
    jobs.push_back(std::move(job));
  }
  std::sort(jobs.begin(), jobs.end(), [](const auto& a, const auto& b) { return a.delivery_id < b.delivery_id; });
  if (jobs.empty()) return jobs;
  std::vector<std::string> destinations;
  for (const auto& job : jobs) destinations.push_back(job.destination);
  LifecycleEvent replayed;
  replayed.kind = EventKind::replayed;
  replayed.at_ms = now_ms();
  add_event(message_id, replayed, replayed_data(destinations, actor));
  return jobs;
}

Result<std::vector<DeliveryJob>> PostgresStore::apply_claim_unqueued(std::size_t limit) {
  const auto now = now_ms();
  // Locked and moved ahead in one statement, so two nodes sweeping together claim different rows.
  auto rows = writer_db_.exec(
      "WITH due AS (SELECT id FROM deliveries WHERE requeue_at_ms > 0 AND requeue_at_ms <= $1 AND status = 'pending' "
      "ORDER BY requeue_at_ms LIMIT $3::bigint FOR UPDATE SKIP LOCKED), "
      "claimed AS (UPDATE deliveries d SET requeue_at_ms = $2 FROM due WHERE d.id = due.id "
      "RETURNING d.id, d.message_id, d.destination, d.attempts, d.seq, d.next_attempt_ms) "
      "SELECT c.id, c.message_id, c.destination, c.attempts, c.seq, c.next_attempt_ms, m.patient_key, "
      "m.resource_type, m.content_type FROM claimed c JOIN messages m ON m.seq = c.seq ORDER BY c.seq, c.id",
      pg::Params().number(now).number(requeue_at(now)).number(static_cast<std::int64_t>(limit)));
  std::vector<DeliveryJob> jobs;
  if (writer_db_.failed()) return jobs;  // the batch fails as a whole
  for (int i = 0; i < rows.size(); ++i) jobs.push_back(pending_job(rows, i));
  return jobs;
}

Result<ReplayMatch> PostgresStore::apply_replay_matching(const MessageQuery& query, const std::string& actor) {
  auto search = search_sql_for(query, false);
  if (!search) return search.error();
  const auto sql = replayable_sql(*search, query, false);
  auto found = writer_db_.exec(sql, search->params);
  ReplayMatch out;
  if (writer_db_.failed()) return out;
  out.matched = static_cast<std::size_t>(found.size());
  std::map<std::string, std::vector<std::string>> destinations_of;
  std::map<std::string, DeliveryJob> message_of;  // per message: its fields, read once
  for (int i = 0; i < found.size(); ++i) {
    const auto delivery_id = found.int64(i, 0);
    const auto message_id = found.text(i, 1);
    auto revived = writer_db_.exec(
        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_ms = 0, settled_at_ms = 0, "
        "requeue_at_ms = $2 WHERE id = $1 AND status IN ('dead', 'expired')",
        pg::Params().number(delivery_id).number(requeue_at(now_ms())));
    if (writer_db_.failed()) return out;
    if (revived.affected() == 0) continue;  // another node revived it first
    auto base = message_of.find(message_id);
    if (base == message_of.end()) {
      auto m = writer_db_.exec("SELECT patient_key, resource_type, content_type, body FROM messages WHERE id = $1",
                               pg::Params().text(message_id));
      if (writer_db_.failed()) return out;
      DeliveryJob job;
      job.message_id = message_id;
      job.patient_key = m.text(0, 0);
      job.resource_type = m.text(0, 1);
      job.content_type = m.text(0, 2);
      job.body = m.bytes(0, 3);
      base = message_of.emplace(message_id, std::move(job)).first;
    }
    DeliveryJob job = base->second;
    job.delivery_id = delivery_id;
    job.destination = found.text(i, 2);
    job.seq = found.int64(i, 3);
    destinations_of[message_id].push_back(job.destination);
    out.jobs.push_back(std::move(job));
  }
  const auto now = now_ms();
  for (const auto& [message_id, destinations] : destinations_of) {
    LifecycleEvent replayed;
    replayed.kind = EventKind::replayed;
    replayed.at_ms = now;
    add_event(message_id, replayed, replayed_data(destinations, actor));
  }
  return out;
}

Result<void> PostgresStore::apply_set_paused(const std::string& destination, bool paused, const std::string& actor) {
  const auto now = now_ms();
  writer_db_.exec("INSERT INTO destination_controls (destination, paused, changed_at_ms, actor) VALUES ($1, $2, $3, $4) "
                  "ON CONFLICT (destination) DO UPDATE SET paused = excluded.paused, "
                  "changed_at_ms = excluded.changed_at_ms, actor = excluded.actor",
                  pg::Params().text(destination).text(paused ? "true" : "false").number(now).text(actor));
  writer_db_.exec("INSERT INTO destination_events (destination, at_ms, action, actor) VALUES ($1, $2, $3, $4)",
                  pg::Params().text(destination).number(now).text(paused ? "paused" : "resumed").text(actor));
  return {};
}

Result<void> PostgresStore::apply_collect(const std::string& partner, const std::string& message_id) {
  auto updated = writer_db_.exec(
      "UPDATE deliveries SET status = 'delivered', settled_at_ms = $3, last_outcome = 'ok', "
      "partner_code = 'acknowledged', detail = 'collected from the mailbox' "
      "WHERE message_id = $1 AND destination = $2 AND status = 'held'",
      pg::Params().text(message_id).text(partner).number(now_ms()));
  if (writer_db_.failed()) return {};
  if (updated.affected() == 0) return not_held(partner, message_id);
  return {};
}

Result<std::vector<std::string>> PostgresStore::apply_expiry(const std::string& partner, std::int64_t held_before_ms) {
  const auto now = now_ms();
  // Locked and marked in one statement, so two nodes expiring the same mailbox expire each
  // delivery once (a row the other node holds is skipped, and expired by it).
  auto due = writer_db_.exec(
      "WITH due AS (SELECT id, message_id, attempts, settled_at_ms, seq FROM deliveries "
      "WHERE destination = $1 AND status = 'held' AND settled_at_ms < $2 ORDER BY seq LIMIT $4::bigint "
      "FOR UPDATE SKIP LOCKED), "
      "marked AS (UPDATE deliveries d SET status = 'expired', settled_at_ms = $3 FROM due WHERE d.id = due.id "
      "RETURNING d.id) "
      "SELECT due.id, due.message_id, due.attempts, due.settled_at_ms FROM due JOIN marked ON marked.id = due.id "
      "ORDER BY due.seq",
      pg::Params().text(partner).number(held_before_ms).number(now).number(static_cast<std::int64_t>(max_expire_batch)));
  std::vector<std::string> expired_ids;
  if (writer_db_.failed()) return expired_ids;
  for (int i = 0; i < due.size(); ++i) {
    LifecycleEvent expired;
    expired.kind = EventKind::expired;
    expired.at_ms = now;
    expired.destination = partner;
    expired.attempt = static_cast<int>(due.int64(i, 2));
    expired.outcome = DeliveryOutcome::held;
    expired.partner_code = "mailbox";
    expired.detail = "not acknowledged within " + std::to_string((now - due.int64(i, 3)) / 1000) +
                     " s of being placed in the mailbox";
    add_event(due.text(i, 1), expired);
    expired_ids.push_back(due.text(i, 1));
  }
  return expired_ids;
}

Result<std::optional<MessageView>> PostgresStore::read_message(pg::Connection& db, const std::string& message_id) {
  std::optional<MessageView> view;
  db.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");  // one snapshot for the message and its trail
  auto m = db.exec(
      "SELECT id, source, channel, resource_type, event, patient_key, content_hash, received_at_ms, accepted_at_ms, "
      "body_bytes, routes, warnings, content_type, idempotency_key, original_content_type, original_bytes "
      "FROM messages WHERE id = $1",
      pg::Params().text(message_id));
  auto deliveries = db.exec(
      "SELECT id, destination, status, attempts, next_attempt_ms, settled_at_ms, last_outcome, partner_code, detail "
      "FROM deliveries WHERE message_id = $1 ORDER BY id",
      pg::Params().text(message_id));
  auto events = db.exec(
      "SELECT at_ms, kind, destination, attempt, outcome, partner_code, detail, next_attempt_ms, data "
      "FROM events WHERE message_id = $1 ORDER BY id",
      pg::Params().text(message_id));
  db.exec("COMMIT");
  if (db.failed()) {
    auto failure = unavailable("message store could not read message " + message_id + ": " + db.error_message());
    if (db.connected()) {
      db.clear_error();
      db.exec("ROLLBACK");
    }
    return failure;
  }
  if (m.empty()) return view;

  MessageView& v = view.emplace();
  v.id = m.text(0, 0);
  v.source = m.text(0, 1);
  v.channel = m.text(0, 2);
  v.resource_type = m.text(0, 3);
  v.event = m.text(0, 4);
  v.patient_key = m.text(0, 5);
  v.content_hash = m.text(0, 6);
  v.received_at_ms = m.int64(0, 7);
  const auto accepted_at_ms = m.int64(0, 8);
  v.body_bytes = static_cast<std::size_t>(m.int64(0, 9));
  const auto routes = m.text(0, 10);
  const auto warnings_json = m.text(0, 11);
  v.content_type = m.text(0, 12);
  const auto idempotency_key = m.text(0, 13);
  v.original_content_type = m.text(0, 14);
  v.original_bytes = static_cast<std::size_t>(m.int64(0, 15));

  std::vector<LifecycleEvent> settled;
  std::int64_t pending = 0, dead = 0;
  for (int i = 0; i < deliveries.size(); ++i) {
    DeliveryView d;
    d.delivery_id = deliveries.int64(i, 0);
    d.destination = deliveries.text(i, 1);
    d.status = delivery_status_from(deliveries.text(i, 2));
    d.attempts = static_cast<int>(deliveries.int64(i, 3));
    d.next_attempt_ms = deliveries.int64(i, 4);
    d.last_outcome = delivery_outcome_from(deliveries.text(i, 6));
    d.last_partner_code = deliveries.text(i, 7);
    d.last_detail = deliveries.text(i, 8);
    if (d.status == DeliveryStatus::delivered) {
      LifecycleEvent e;
      e.kind = EventKind::delivered;
      e.at_ms = deliveries.int64(i, 5);
      e.destination = d.destination;
      e.attempt = d.attempts;
      e.outcome = DeliveryOutcome::ok;
      e.partner_code = d.last_partner_code;
      e.detail = d.last_detail;
      settled.push_back(std::move(e));
    }
    pending += d.status == DeliveryStatus::pending || d.status == DeliveryStatus::held;
    dead += d.status == DeliveryStatus::dead || d.status == DeliveryStatus::expired;
    v.deliveries.push_back(std::move(d));
  }
  v.state = state_from_counts(static_cast<std::int64_t>(v.deliveries.size()), pending, dead);

  // received, validated and routed (or unroutable), rebuilt from the message row.
  LifecycleEvent received;
  received.kind = EventKind::received;
  received.at_ms = v.received_at_ms;
  received.source = v.source;
  received.channel = v.channel;
  received.content_type = v.content_type;
  received.bytes = v.body_bytes;
  received.content_hash = v.content_hash;
  received.idempotency_key = idempotency_key;
  received.original_content_type = v.original_content_type;
  received.original_bytes = v.original_bytes;
  v.events.push_back(std::move(received));
  LifecycleEvent validated;
  validated.kind = EventKind::validated;
  validated.at_ms = accepted_at_ms;
  {
    rapidjson::Document doc;
    doc.Parse(warnings_json.c_str(), warnings_json.size());
    if (!doc.HasParseError()) validated.warnings = json_strings(&doc);
  }
  v.events.push_back(std::move(validated));
  LifecycleEvent routed;
  routed.at_ms = accepted_at_ms;
  routed.routes = split(routes, ',');
  for (const auto& d : v.deliveries) routed.destinations.push_back(d.destination);
  routed.kind = routed.destinations.empty() ? EventKind::unroutable : EventKind::routed;
  v.events.push_back(std::move(routed));

  for (int i = 0; i < events.size(); ++i) {
    auto kind = event_kind_from(events.text(i, 1));
    if (!kind) continue;
    LifecycleEvent e;
    e.kind = *kind;
    e.at_ms = events.int64(i, 0);
    e.destination = events.text(i, 2);
    e.attempt = static_cast<int>(events.int64(i, 3));
    e.outcome = delivery_outcome_from(events.text(i, 4)).value_or(DeliveryOutcome::retryable);
    e.partner_code = events.text(i, 5);
    e.detail = events.text(i, 6);
    e.next_attempt_ms = events.int64(i, 7);
    const auto data = events.text(i, 8);
    if (!data.empty()) {
      rapidjson::Document doc;
      doc.Parse(data.c_str(), data.size());
      if (!doc.HasParseError() && doc.IsObject()) {
        e.source = json_member_string(doc, "source");
        e.idempotency_key = json_member_string(doc, "idempotencyKey");
        e.content_hash = json_member_string(doc, "contentHash");
        e.same_content = e.content_hash == v.content_hash;
        auto destinations = doc.FindMember("destinations");
        if (destinations != doc.MemberEnd()) e.destinations = json_strings(&destinations->value);
        e.actor = json_member_string(doc, "actor");
      }
    }
    v.events.push_back(std::move(e));
  }
  for (auto& e : settled) v.events.push_back(std::move(e));
  std::stable_sort(v.events.begin(), v.events.end(),
                   [](const LifecycleEvent& a, const LifecycleEvent& b) { return a.at_ms < b.at_ms; });
  return view;
}

Result<std::vector<MessageSummary>> PostgresStore::read_list(pg::Connection& db, const MessageQuery& query) {
  auto search = search_sql_for(query, true);
  if (!search) return search.error();
  search->params.number(query.limit > 0 ? query.limit : 100);
  const std::string sql = "SELECT m.id, m.source, m.resource_type, " TELLONCE_PG_STATE_SQL
                          ", m.received_at_ms, m.channel, m.event, m.seq " + search->from_where +
                          " ORDER BY m.received_at_ms DESC, m.seq DESC LIMIT $" +
                          std::to_string(search->params.size()) + "::bigint";
  auto rows = db.exec(sql, search->params);
  if (db.failed()) return unavailable("message store could not list messages: " + db.error_message());
  std::vector<MessageSummary> out;
  for (int i = 0; i < rows.size(); ++i) {
    MessageSummary m{rows.text(i, 0), rows.text(i, 1), rows.text(i, 2), message_state_from(rows.text(i, 3)),
                     rows.int64(i, 4), rows.text(i, 5), rows.text(i, 6), ""};
    m.cursor = make_cursor(m.received_at_ms, rows.int64(i, 7));
    out.push_back(std::move(m));
  }
  return out;
}

Result<ReplayMatch> PostgresStore::read_replayable_count(pg::Connection& db, const MessageQuery& query) {
  auto search = search_sql_for(query, false);
  if (!search) return search.error();
  const auto sql = replayable_sql(*search, query, true);
  auto rows = db.exec(sql, search->params);
  if (db.failed()) return unavailable("message store could not count replayable deliveries: " + db.error_message());
  ReplayMatch out;
  out.matched = static_cast<std::size_t>(rows.int64(0, 0));
  return out;
}

Result<std::vector<DeliveryJob>> PostgresStore::load_pending(std::size_t max_body_bytes) {
  pg::Connection db(conninfo_);  // start-up only: its own short-lived connection
  if (!db.ensure_connected()) return unavailable("message store could not load pending deliveries: " + db.error_message());
  auto rows = db.exec(
      "SELECT d.id, d.message_id, d.destination, d.attempts, d.seq, d.next_attempt_ms, "
      "m.patient_key, m.resource_type, m.content_type, m.body_bytes FROM deliveries d JOIN messages m ON m.seq = d.seq "
      "WHERE d.status = 'pending' ORDER BY d.seq, d.id");
  if (db.failed()) return unavailable("message store could not load pending deliveries: " + db.error_message());
  std::vector<DeliveryJob> jobs;
  std::vector<bool> with_body;  // whether the job's body fits the budget
  std::size_t body_bytes = 0;
  for (int i = 0; i < rows.size(); ++i) {
    DeliveryJob job = pending_job(rows, i);
    const auto size = static_cast<std::size_t>(rows.int64(i, 9));
    const bool fits = size <= max_body_bytes - body_bytes;  // past the budget the body stays empty
    if (fits) body_bytes += size;
    with_body.push_back(fits);
    jobs.push_back(std::move(job));
  }
  // Bodies within the budget, read one message at a time (start-up only).
  std::map<std::string, std::string> bodies;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    if (!with_body[i]) continue;
    auto& job = jobs[i];
    auto it = bodies.find(job.message_id);
    if (it == bodies.end()) {
      auto b = db.exec("SELECT body FROM messages WHERE id = $1", pg::Params().text(job.message_id));
      if (db.failed()) return unavailable("message store could not load pending deliveries: " + db.error_message());
      it = bodies.emplace(job.message_id, b.bytes(0, 0)).first;
    }
    job.body = it->second;
  }
  return jobs;
}

// The audit's start-up catch-up: receipts and settled deliveries, oldest first.
Result<std::vector<StoredFact>> PostgresStore::facts_since(std::int64_t since_ms) {
  pg::Connection db(conninfo_);  // start-up only: its own short-lived connection
  if (!db.ensure_connected()) return unavailable("message store could not list facts for the audit log: " + db.error_message());
  auto rows = db.exec(
      "SELECT received_at_ms, id, source, channel, resource_type, '', '', 0, '' FROM messages "
      "WHERE received_at_ms >= $1::bigint "
      "UNION ALL "
      "SELECT d.settled_at_ms, m.id, m.source, m.channel, m.resource_type, d.destination, d.status, d.attempts, "
      "d.partner_code FROM deliveries d JOIN messages m ON m.seq = d.seq "
      "WHERE d.status <> 'pending' AND d.settled_at_ms >= $1::bigint ORDER BY 1",
      pg::Params().number(since_ms));
  if (db.failed()) return unavailable("message store could not list facts for the audit log: " + db.error_message());
  std::vector<StoredFact> facts;
  for (int i = 0; i < rows.size(); ++i) {
    StoredFact f;
    f.at_ms = rows.int64(i, 0);
    f.message_id = rows.text(i, 1);
    f.source = rows.text(i, 2);
    f.channel = rows.text(i, 3);
    f.resource_type = rows.text(i, 4);
    f.destination = rows.text(i, 5);
    if (!f.destination.empty()) f.status = delivery_status_from(rows.text(i, 6));
    f.attempts = static_cast<int>(rows.int64(i, 7));
    f.partner_code = rows.text(i, 8);
    facts.push_back(std::move(f));
  }
  return facts;
}

}  // namespace

std::unique_ptr<Store> make_postgres_store(const PostgresStoreSettings& settings) {
  return std::make_unique<PostgresStore>(settings);
}

}  // namespace tellonce
