// The embedded store: SQLite in WAL mode, one writer thread with group commit, one reader.
//
// Schema, version 6 (PRAGMA user_version; see README.md). Rows are written once where possible:
// on a VM every dirtied page is a 32 KiB WAL frame, then copied again by the checkpoint.
//   messages   one row per accepted record, never updated; id is the public key, seq the
//              acceptance order (the rowid, so it costs no index of its own)
//   bodies     the raw bytes, apart so that nothing rewrites the pages that hold them
//   originals  for a record an inbound adapter converted (HL7 v2, CSV): what the partner sent,
//              beside the FHIR form in bodies; no row when the body is what was sent
//   deliveries one row per (message, destination): pending, delivered, dead, held (in the
//              partner's mailbox) or expired, and the facts of its last attempt; a successful
//              attempt is recorded here alone
//   events     the trail that cannot be derived from the rows above: failed attempts, dead
//              letters, duplicates, replays, as facts (columns, plus a small JSON object for the
//              rarer kinds). received/validated/routed/delivered are read from the rows themselves.
// The store returns the trail as LifecycleEvents; the words are made above it (core/trail.hpp).
// A message's state is derived from its deliveries, never stored.
#include "search_keys.hpp"
#include "sqlite_db.hpp"
#include "sqlite_files.hpp"
#include "sqlite_store.hpp"
#include "engines/common/store_rows.hpp"
#include "engines/common/worker_jobs.hpp"
#include "engines/common/write_health.hpp"

#include "tellonce/json.hpp"
#include "tellonce/log.hpp"

#include <boost/asio/async_result.hpp>
#include <rapidjson/document.h>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <limits>
#include <atomic>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <pthread.h>

namespace tellonce {
namespace {

using namespace store_detail;  // the shared rows, failures and jobs (engines/common)

constexpr int current_schema_version = 9;

// The WAL bound (README "WAL bound"). A background checkpoint starts at checkpoint_pages (SQLite's
// own default); if it falls behind, the writer checkpoints itself at runaway_wal_pages (with
// 32 KiB pages: 32 MB and 128 MB). Whenever the log has been copied back whole, the file is cut
// back to wal_size_limit bytes: by SQLite when the writer restarts the log (journal_size_limit),
// or by the checkpointer when nothing is writing. Without the limit a WAL keeps the largest size
// it ever reached (530 MB after an outage) and takes disk space straight back once freed.
constexpr int checkpoint_pages = 1000;
constexpr int runaway_wal_pages = 4 * 1024;
constexpr std::int64_t wal_size_limit = 64ll * 1024 * 1024;

// Search keys wait in the search thread's queue until this many have gathered (about 5,000
// records) or the oldest has waited this long; a search does not wait for either
// (search_keys.hpp). A flush writes a block per (facet, value) it touches (search_blocks.hpp),
// so the larger the flush, the fewer rows and rewritten pages a record costs: in bench/load the
// search thread took 6-7 µs a record at 4,096 keys a flush and 1 µs at 32,768, with accept p99
// unchanged (about 20 ms). With a row per key (before blocks) 16,384 had cost accept p99 27 ->
// 40 ms, the larger flushes' checkpoints syncing the disk the commits use.
constexpr std::size_t search_flush_keys = 32768;
constexpr auto search_flush_interval = std::chrono::seconds(1);

// The messages and bodies tables, shared by a fresh schema and the upgrade from schema 1 so
// that an upgraded file ends up exactly like a new one.
std::string messages_table(std::string_view name) {
  return "CREATE TABLE " + std::string(name) + R"sql( (
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
  accepted_at_ms  INTEGER NOT NULL,
  body_bytes      INTEGER NOT NULL,
  routes          TEXT NOT NULL,
  destinations    INTEGER NOT NULL,
  warnings        TEXT NOT NULL
);
)sql";
}

constexpr const char* messages_indexes_and_bodies_sql = R"sql(
CREATE UNIQUE INDEX messages_by_idempotency_key
  ON messages(source, idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX messages_unroutable ON messages(seq) WHERE destinations = 0;
CREATE TABLE bodies (
  seq  INTEGER PRIMARY KEY REFERENCES messages(seq),
  body BLOB NOT NULL
);
)sql";

constexpr const char* deliveries_open_index_sql =
    "CREATE INDEX deliveries_open ON deliveries(status, seq) WHERE status <> 'delivered';\n";

// The columns schema 4 added, shared by a fresh schema and the upgrade from schema 3 so that an
// upgraded file ends up like a new one. Rows an older broker wrote keep their text in the
// legacy_* columns; nothing parses it.
using Columns = std::vector<std::string_view>;

// deliveries: the last attempt's outcome ('' none yet, ok, retryable, permanent), the partner's
// own code and its detail.
const Columns delivery_fact_columns = {"last_outcome TEXT NOT NULL DEFAULT ''",
                                       "partner_code TEXT NOT NULL DEFAULT ''", "detail TEXT NOT NULL DEFAULT ''"};

// events: one attempt's facts; data is a JSON object for the rarer kinds (duplicate: source,
// idempotencyKey, contentHash; replayed: destinations), '' otherwise.
const Columns event_fact_columns = {
    "destination TEXT NOT NULL DEFAULT ''", "attempt INTEGER NOT NULL DEFAULT 0",  "outcome TEXT NOT NULL DEFAULT ''",
    "partner_code TEXT NOT NULL DEFAULT ''", "detail TEXT NOT NULL DEFAULT ''",
    "next_attempt_ms INTEGER NOT NULL DEFAULT 0", "data TEXT NOT NULL DEFAULT ''"};

std::string each(const Columns& columns, std::string_view before, std::string_view after) {
  std::string out;
  for (auto column : columns) out.append(before).append(column).append(after);
  return out;
}

// The deliveries table, shared by a fresh schema and the upgrade from schema 5 (which rebuilds
// it: SQLite cannot change a CHECK in place). settled_at_ms is when it was delivered, went dead
// or expired, or, while held, when it was placed in the mailbox.
std::string deliveries_table(std::string_view name) {
  return "CREATE TABLE " + std::string(name) + R"sql( (
  id              INTEGER PRIMARY KEY,
  message_id      TEXT NOT NULL REFERENCES messages(id),
  destination     TEXT NOT NULL,
  status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead', 'held', 'expired')),
  attempts        INTEGER NOT NULL,
  next_attempt_ms INTEGER NOT NULL,
  legacy_last_error TEXT NOT NULL,
  seq             INTEGER NOT NULL,
  settled_at_ms   INTEGER NOT NULL DEFAULT 0,
  legacy_outcome  TEXT NOT NULL DEFAULT '')sql" + each(delivery_fact_columns, ",\n  ", "") + R"sql(,
  UNIQUE (message_id, destination)
);
)sql";
}

// Schema 6: a partner's mailbox, listed in acceptance order, and the body a held delivery is
// collected with when it is not the stored one (minimised for that partner).
constexpr const char* mailbox_sql =
    "CREATE INDEX deliveries_held ON deliveries(destination, seq) WHERE status = 'held';\n"
    "CREATE TABLE held_bodies (delivery_id INTEGER PRIMARY KEY, body BLOB NOT NULL);\n";

// Schema 5 -> 6: deliveries rebuilt with the held and expired statuses (foreign keys are off on
// the writer; migrate() checks them afterwards). Columns are those of schema 4 and later.
std::string migrate_5_to_6_sql() {
  const std::string columns =
      "id, message_id, destination, status, attempts, next_attempt_ms, legacy_last_error, seq, settled_at_ms, "
      "legacy_outcome, last_outcome, partner_code, detail";
  return deliveries_table("deliveries_6") + "INSERT INTO deliveries_6 (" + columns + ") SELECT " + columns +
         " FROM deliveries;\nDROP TABLE deliveries;\nALTER TABLE deliveries_6 RENAME TO deliveries;\n" +
         deliveries_open_index_sql + mailbox_sql;
}

// Schema 5: the partner's own bytes of a converted record.
constexpr const char* originals_sql = R"sql(
CREATE TABLE originals (
  seq          INTEGER PRIMARY KEY REFERENCES messages(seq),
  content_type TEXT NOT NULL,
  bytes        INTEGER NOT NULL,
  body         BLOB NOT NULL
);
)sql";

std::string schema_sql() {
  return messages_table("messages") + messages_indexes_and_bodies_sql + originals_sql + R"sql(
)sql" + deliveries_table("deliveries") + deliveries_open_index_sql + mailbox_sql + R"sql(
CREATE TABLE events (
  id         INTEGER PRIMARY KEY,
  message_id TEXT NOT NULL REFERENCES messages(id),
  at_ms      INTEGER NOT NULL,
  kind       TEXT NOT NULL,
  legacy_text TEXT NOT NULL)sql" + each(event_fact_columns, ",\n  ", "") + R"sql(
);
CREATE INDEX events_by_message ON events(message_id, id);
)sql";
}

// Schema 7: search (issue 11), as it was: schema 8 replaces its indexes and message_routes with
// the search_keys table (search_keys.hpp) and keeps its columns. Every listing is newest
// received first, so each filter had an index that ends in (received_at_ms, seq): deliveries and routes carry the message's
// received_at_ms to be searched in that order too. nhs_number is the patient key when that is an
// NHS number (10 digits). Destinations an operator paused, and their own trail. Applied to a
// fresh schema and to an upgrade alike; the UPDATEs fill the new columns of an older store.
constexpr const char* search_sql = R"sql(
ALTER TABLE messages ADD COLUMN nhs_number TEXT NOT NULL DEFAULT '';
UPDATE messages SET nhs_number = patient_key
  WHERE length(patient_key) = 10 AND patient_key NOT GLOB '*[^0-9]*';
ALTER TABLE deliveries ADD COLUMN received_at_ms INTEGER NOT NULL DEFAULT 0;
UPDATE deliveries SET received_at_ms = (SELECT m.received_at_ms FROM messages m WHERE m.seq = deliveries.seq);
CREATE TABLE message_routes (
  route          TEXT NOT NULL,
  received_at_ms INTEGER NOT NULL,
  seq            INTEGER NOT NULL,
  PRIMARY KEY (route, received_at_ms, seq)
) WITHOUT ROWID;
INSERT OR IGNORE INTO message_routes (route, received_at_ms, seq)
  WITH RECURSIVE split(seq, at, route, rest) AS (
    SELECT seq, received_at_ms, '', routes || ',' FROM messages WHERE routes <> ''
    UNION ALL
    SELECT seq, at, substr(rest, 1, instr(rest, ',') - 1), substr(rest, instr(rest, ',') + 1) FROM split WHERE rest <> '')
  SELECT route, at, seq FROM split WHERE route <> '';
CREATE INDEX messages_by_received ON messages(received_at_ms);
CREATE INDEX messages_by_source ON messages(source, received_at_ms);
CREATE INDEX messages_by_resource_type ON messages(resource_type, received_at_ms);
CREATE INDEX messages_by_event ON messages(event, received_at_ms) WHERE event <> '';
CREATE INDEX messages_by_nhs_number ON messages(nhs_number, received_at_ms) WHERE nhs_number <> '';
CREATE INDEX messages_unroutable_by_received ON messages(received_at_ms) WHERE destinations = 0;
CREATE INDEX deliveries_by_destination ON deliveries(destination, received_at_ms, seq);
CREATE INDEX deliveries_failed ON deliveries(received_at_ms, seq) WHERE status IN ('dead', 'expired');
CREATE INDEX deliveries_waiting ON deliveries(received_at_ms, seq) WHERE status IN ('pending', 'held');
CREATE TABLE destination_controls (
  destination   TEXT PRIMARY KEY,
  paused        INTEGER NOT NULL,
  changed_at_ms INTEGER NOT NULL,
  actor         TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE destination_events (
  id          INTEGER PRIMARY KEY,
  destination TEXT NOT NULL,
  at_ms       INTEGER NOT NULL,
  action      TEXT NOT NULL,
  actor       TEXT NOT NULL
);
CREATE INDEX destination_events_by_destination ON destination_events(destination, id);
)sql";

// Schema 3 added store_meta: the store's id (also in the marker beside the file) and the room
// the health probe writes into.
std::string store_meta_sql(const std::string& store_id) {
  return "CREATE TABLE store_meta (key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID;\n"
         "INSERT INTO store_meta (key, value) VALUES ('store_id', '" + store_id + "');\n";
}

// Schema 1 kept the body and a stored state in messages and wrote every lifecycle step as an
// event. Runs with foreign keys off (see migrate()).
std::string migrate_1_to_2_sql() {
  return messages_table("messages_2") + R"sql(
INSERT INTO messages_2
SELECT m.seq, m.id, m.source, m.channel, m.idempotency_key, m.resource_type, m.event, m.patient_key,
       m.content_type, m.content_hash, m.received_at_ms,
       coalesce((SELECT min(e.at_ms) FROM events e WHERE e.message_id = m.id AND e.kind = 'validated'),
                m.received_at_ms),
       length(m.body),
       coalesce((SELECT substr(e.detail, 8, instr(e.detail, ' destinations=') - 8) FROM events e
                 WHERE e.message_id = m.id AND e.kind = 'routed' AND instr(e.detail, ' destinations=') > 0), ''),
       (SELECT count(*) FROM deliveries d WHERE d.message_id = m.id),
       m.warnings
FROM messages m;
CREATE TABLE bodies_2 (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
INSERT INTO bodies_2 (seq, body) SELECT seq, body FROM messages;
DROP TABLE messages;
ALTER TABLE messages_2 RENAME TO messages;
)sql" + messages_indexes_and_bodies_sql + R"sql(
INSERT INTO bodies (seq, body) SELECT seq, body FROM bodies_2;
DROP TABLE bodies_2;
ALTER TABLE deliveries ADD COLUMN settled_at_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN outcome TEXT NOT NULL DEFAULT '';
UPDATE deliveries SET
  settled_at_ms = coalesce((SELECT max(e.at_ms) FROM events e WHERE e.message_id = deliveries.message_id
                            AND e.kind = 'delivered' AND e.detail = 'destination=' || deliveries.destination), 0),
  outcome = 'delivered (recorded by schema 1)'
WHERE status = 'delivered';
DROP INDEX deliveries_by_status;
)sql" + deliveries_open_index_sql + R"sql(
DELETE FROM events WHERE kind IN ('received', 'validated', 'routed', 'unroutable', 'delivered')
   OR (kind = 'attempt' AND detail LIKE '%(ok)');
)sql";
}

// Schema 4 keeps the trail as facts. What schemas 1-3 stored as text stays as it was, in the
// legacy_* columns (events.detail, deliveries.last_error and outcome), and is shown as is.
std::string migrate_3_to_4_sql() {
  return "ALTER TABLE events RENAME COLUMN detail TO legacy_text;\n"
         "ALTER TABLE deliveries RENAME COLUMN last_error TO legacy_last_error;\n"
         "ALTER TABLE deliveries RENAME COLUMN outcome TO legacy_outcome;\n" +
         each(delivery_fact_columns, "ALTER TABLE deliveries ADD COLUMN ", ";\n") +
         each(event_fact_columns, "ALTER TABLE events ADD COLUMN ", ";\n");
}



Failure unsaved(const sqlite::Connection& db) {
  return store_detail::unsaved(db.error_message(), (db.error_code() & 0xff) == SQLITE_CONSTRAINT);
}








// The message row, as much of it as the accept events need.
struct AcceptedRow {
  std::int64_t accepted_at_ms = 0;
  std::string routes;         // comma-separated route ids
  std::string warnings_json;  // JSON array of strings
  std::string content_type;
  std::string idempotency_key;
};

// received, validated and routed (or unroutable), rebuilt from the message row: they were
// facts of the one transaction that stored it, so they are not written twice.
std::vector<LifecycleEvent> accept_events(const MessageView& v, const AcceptedRow& row) {
  std::vector<LifecycleEvent> events(3);
  auto& received = events[0];
  received.kind = EventKind::received;
  received.at_ms = v.received_at_ms;
  received.source = v.source;
  received.channel = v.channel;
  received.content_type = row.content_type;
  received.bytes = v.body_bytes;
  received.content_hash = v.content_hash;
  received.idempotency_key = row.idempotency_key;
  received.original_content_type = v.original_content_type;
  received.original_bytes = v.original_bytes;

  auto& validated = events[1];
  validated.kind = EventKind::validated;
  validated.at_ms = row.accepted_at_ms;
  rapidjson::Document doc;
  doc.Parse(row.warnings_json.c_str(), row.warnings_json.size());
  if (!doc.HasParseError()) validated.warnings = json_strings(&doc);

  auto& routed = events[2];
  routed.at_ms = row.accepted_at_ms;
  routed.routes = split(row.routes, ',');
  for (const auto& d : v.deliveries) routed.destinations.push_back(d.destination);
  routed.kind = routed.destinations.empty() ? EventKind::unroutable : EventKind::routed;
  return events;
}

// The unsettled deliveries' index (deliveries_unsettled) is keyed by "dead or expired" first; a
// query uses it only when it repeats that expression, and the index's own WHERE, word for word.
#define TELLONCE_UNSETTLED(t) t "status <> 'delivered' AND (" t "status IN ('dead', 'expired')) = "

// A message's state, from its deliveries (alias m for messages): held counts as pending (on
// its way), expired as dead.
#define TELLONCE_STATE_SQL                                                                            \
  "CASE WHEN m.destinations = 0 THEN 'unroutable' "                                                   \
  "WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.status IN ('pending', 'held')) " \
  "THEN 'delivering' "                                                                                \
  "WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id AND d.status IN ('dead', 'expired')) " \
  "THEN 'failed' ELSE 'delivered' END"

struct WriteStatements {
  explicit WriteStatements(sqlite::Connection& db)
      : begin(db, "BEGIN IMMEDIATE"),
        commit(db, "COMMIT"),
        rollback(db, "ROLLBACK"),
        find_by_key(db,
                    "SELECT m.id, " TELLONCE_STATE_SQL " FROM messages m "
                    "WHERE m.source = ?1 AND m.idempotency_key = ?2 AND m.idempotency_key <> ''"),
        insert_message(db,
                       "INSERT OR FAIL INTO messages (id, seq, source, channel, idempotency_key, resource_type, "
                       "event, patient_key, content_type, content_hash, received_at_ms, accepted_at_ms, "
                       "body_bytes, routes, destinations, warnings, nhs_number) "
                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"),
        insert_body(db, "INSERT OR FAIL INTO bodies (seq, body) VALUES (?1, ?2)"),
        insert_original(db, "INSERT OR FAIL INTO originals (seq, content_type, bytes, body) VALUES (?1, ?2, ?3, ?4)"),
        insert_delivery(db,
                        "INSERT OR FAIL INTO deliveries (message_id, destination, status, attempts, "
                        "next_attempt_ms, legacy_last_error, seq, received_at_ms) "
                        "VALUES (?1, ?2, 'pending', 0, 0, '', ?3, ?4)"),
        insert_event(db,
                     "INSERT OR FAIL INTO events (message_id, at_ms, kind, legacy_text, destination, attempt, "
                     "outcome, partner_code, detail, next_attempt_ms, data) "
                     "VALUES (?1, ?2, ?3, '', ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        // Also clears what an older broker wrote as text: this attempt's facts replace it.
        settle_delivery(db,
                        "UPDATE OR FAIL deliveries SET status = ?2, attempts = ?3, next_attempt_ms = ?4, "
                        "settled_at_ms = ?5, last_outcome = ?6, partner_code = ?7, detail = ?8, "
                        "legacy_last_error = '', legacy_outcome = '' WHERE id = ?1"),
        message_for_replay(db,
                           "SELECT m.patient_key, m.resource_type, m.content_type, b.body "
                           "FROM messages m JOIN bodies b ON b.seq = m.seq WHERE m.id = ?1"),
        dead_deliveries(db,
                        "SELECT id, destination, seq FROM deliveries "
                        "WHERE message_id = ?1 AND status IN ('dead', 'expired') ORDER BY id"),
        revive_dead(db,
                    "UPDATE OR FAIL deliveries SET status = 'pending', attempts = 0, next_attempt_ms = 0, "
                    "settled_at_ms = 0 WHERE message_id = ?1 AND status IN ('dead', 'expired')"),
        collect_held(db,
                     "UPDATE OR FAIL deliveries SET status = 'delivered', settled_at_ms = ?3, last_outcome = 'ok', "
                     "partner_code = 'acknowledged', detail = 'collected from the mailbox' "
                     "WHERE message_id = ?1 AND destination = ?2 AND status = 'held'"),
        held_before(db,
                    "SELECT id, message_id, attempts, settled_at_ms FROM deliveries "
                    "WHERE destination = ?1 AND status = 'held' AND settled_at_ms < ?2 ORDER BY seq LIMIT ?3"),
        insert_held_body(db, "INSERT OR REPLACE INTO held_bodies (delivery_id, body) VALUES (?1, ?2)"),
        expire_delivery(db,
                        "UPDATE OR FAIL deliveries SET status = 'expired', settled_at_ms = ?2 "
                        "WHERE id = ?1 AND status = 'held'"),
        set_control(db,
                    "INSERT OR REPLACE INTO destination_controls (destination, paused, changed_at_ms, actor) "
                    "VALUES (?1, ?2, ?3, ?4)"),
        insert_destination_event(db,
                                 "INSERT INTO destination_events (destination, at_ms, action, actor) "
                                 "VALUES (?1, ?2, ?3, ?4)"),
        revive_one(db,
                   "UPDATE OR FAIL deliveries SET status = 'pending', attempts = 0, next_attempt_ms = 0, "
                   "settled_at_ms = 0 WHERE id = ?1 AND status IN ('dead', 'expired')"),
        probe_fill(db, "INSERT OR REPLACE INTO store_meta (key, value) VALUES ('health_probe', zeroblob(65536))"),
        probe_clear(db, "DELETE FROM store_meta WHERE key = 'health_probe'") {}

  sqlite::Statement begin, commit, rollback;
  sqlite::Statement find_by_key, insert_message, insert_body, insert_original, insert_delivery,
      insert_event;
  sqlite::Statement settle_delivery, message_for_replay, dead_deliveries, revive_dead;
  sqlite::Statement collect_held, held_before, insert_held_body, expire_delivery;  // the mailbox
  sqlite::Statement set_control, insert_destination_event, revive_one;  // operations (issue 11)
  // The health probe: a record-sized row (two 32 KiB pages) written and removed in one commit,
  // so it needs new pages and WAL frames as a record would.
  sqlite::Statement probe_fill, probe_clear;
};

struct ReadStatements {
  explicit ReadStatements(sqlite::Connection& db)
      : begin(db, "BEGIN"),
        end(db, "COMMIT"),
        message(db,
                "SELECT id, source, channel, resource_type, event, patient_key, content_hash, "
                "received_at_ms, accepted_at_ms, body_bytes, routes, warnings, content_type, "
                "idempotency_key, seq FROM messages WHERE id = ?1"),
        original_size(db, "SELECT content_type, bytes FROM originals WHERE seq = ?1"),
        deliveries(db,
                   "SELECT id, destination, status, attempts, next_attempt_ms, settled_at_ms, last_outcome, "
                   "partner_code, detail, legacy_last_error, legacy_outcome "
                   "FROM deliveries WHERE message_id = ?1 ORDER BY id"),
        events(db,
               "SELECT at_ms, kind, legacy_text, destination, attempt, outcome, partner_code, detail, "
               "next_attempt_ms, data FROM events WHERE message_id = ?1 ORDER BY id"),
        body(db, "SELECT b.body FROM messages m JOIN bodies b ON b.seq = m.seq WHERE m.id = ?1"),
        original(db,
                 "SELECT o.content_type, o.body, m.seq FROM messages m LEFT JOIN originals o ON o.seq = m.seq "
                 "WHERE m.id = ?1"),
        mailbox(db,
                "SELECT m.id, m.source, m.resource_type, m.content_type, d.seq, d.settled_at_ms "
                "FROM deliveries d JOIN messages m ON m.seq = d.seq "
                "WHERE d.destination = ?1 AND d.status = 'held' ORDER BY d.seq LIMIT ?2"),
        held(db,
             "SELECT m.id, m.source, m.resource_type, m.content_type, d.seq, d.settled_at_ms, "
             "coalesce(h.body, b.body) FROM deliveries d JOIN messages m ON m.seq = d.seq "
             "JOIN bodies b ON b.seq = d.seq LEFT JOIN held_bodies h ON h.delivery_id = d.id "
             "WHERE d.message_id = ?1 AND d.destination = ?2 AND d.status = 'held'"),
        // The unsettled deliveries' index alone: it carries destination and status.
        backlog(db,
                "SELECT destination, count(*), min(received_at_ms) FROM deliveries INDEXED BY deliveries_unsettled "
                "WHERE " TELLONCE_UNSETTLED("") "0 AND status = 'pending' "
                "GROUP BY destination ORDER BY destination") {}

  sqlite::Statement begin, end, message, original_size, deliveries, events, body, original, mailbox, held, backlog;
  std::map<std::string, std::unique_ptr<sqlite::Statement>> lists;  // by SQL text
};

void configure(sqlite::Connection& db, const SqliteStoreSettings& settings) {
  sqlite3_busy_timeout(db.handle(), static_cast<int>(settings.busy_timeout.count()));
  db.exec_or_throw(settings.synchronous_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
  db.exec_or_throw("PRAGMA journal_size_limit = " + std::to_string(wal_size_limit));
}

// The writer's statements are single-row, so a failing one has changed nothing, and a failed
// batch is rolled back whole (write_batch). Declaring that (OR FAIL, and foreign keys checked by
// the tests instead of on every insert) spares SQLite a statement journal per statement: with
// 32 KiB pages that journal copied every touched page to a temp file, three quarters of the
// writer's pwrite calls in bench/load.
void configure_writer(sqlite::Connection& db) { db.exec_or_throw("PRAGMA foreign_keys = OFF"); }

std::string single_text(sqlite::Connection& db, std::string_view sql) {
  sqlite::Statement st(db, sql);
  std::string value = st.step() ? st.text(0) : std::string();
  st.reset();
  if (db.failed()) throw std::runtime_error("message store: " + db.error_message());
  return value;
}

namespace fs = std::filesystem;

// How an operator gets out of each refusal; named in every refusal message.
std::string recovery_advice(const fs::path& db) {
  return "To recover: restore " + db.string() + " (with its -wal file, if the backup has one) from a backup "
         "and start again; or, to give up what it held and start with a new, empty store, run "
         "`tellonce serve --accept-new-store` once (the old files are renamed aside, nothing is deleted). "
         "See engines/sqlite_store/README.md, \"Refusing a lost store\".";
}

// SQLite's own check, on a read-only connection so that nothing (no checkpoint, no new WAL)
// writes to a damaged file. quick_check skips the index-to-table cross-checks; the measured
// costs are in the README. Returns the problems found, empty when the file is sound.
std::string integrity_problems(const SqliteStoreSettings& settings) {
  using Check = SqliteStoreSettings::IntegrityCheck;
  const bool full = settings.integrity_check == Check::full;
  const auto started = std::chrono::steady_clock::now();
  std::string problems;
  try {
    sqlite::Connection db(settings.path, true);
    sqlite::Statement st(db, full ? "PRAGMA integrity_check(20)" : "PRAGMA quick_check(20)");
    while (st.step()) {
      auto line = st.text(0);
      if (line != "ok") problems += (problems.empty() ? "" : "; ") + line;
    }
    st.reset();
    if (db.failed()) problems = db.error_message();
  } catch (const std::exception& e) {
    problems = e.what();  // not a database at all, or unreadable
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
  log::info("store", std::string(full ? "integrity_check" : "quick_check") + " of " + settings.path.string() +
                         (problems.empty() ? " passed" : " FAILED") + " in " + std::to_string(ms) + " ms");
  return problems;
}

void move_store_aside(const fs::path& db) {
  for (const auto& file : {db, store_detail::wal_path(db), fs::path(db.string() + "-shm"), store_detail::marker_path(db)}) {
    auto moved = store_detail::move_aside(file, "replaced");
    if (!moved.empty()) log::warn("store", "--accept-new-store: moved " + file.string() + " aside to " + moved.string());
  }
}

// What start-up found before SQLite opened the file.
struct Opening {
  bool existed = false;                  // a non-empty database file was there
  std::optional<std::string> marker_id;  // the id in <db>.id, if any
};

// Runs before any SQLite connection exists: a missing or empty database under a marker, and
// a WAL that would drop committed transactions, must be seen before SQLite creates a new file
// or rewrites the WAL.
Opening check_files_before_open(const SqliteStoreSettings& settings) {
  const fs::path& db = settings.path;
  const auto marker = store_detail::marker_path(db);
  Opening o;
  std::error_code ec;
  const bool db_exists = fs::exists(db, ec);
  const auto db_bytes = db_exists ? fs::file_size(db, ec) : 0;
  o.marker_id = store_detail::read_marker(marker);
  if (o.marker_id && db_bytes == 0) {
    std::string what = db_exists ? "is empty (0 bytes)" : "is missing";
    if (!settings.accept_new_store)
      throw std::runtime_error("message store " + db.string() + " " + what + ", but its marker " + marker.string() +
                               " says store " + *o.marker_id + " was created there. Starting would begin a new, "
                               "empty store and forget every message the old one held, so the broker refuses. " +
                               recovery_advice(db));
    move_store_aside(db);
    log::warn("store", "--accept-new-store: store " + *o.marker_id + " at " + db.string() + " " + what +
                           "; starting a new, empty store");
    o.marker_id.reset();
    return o;
  }
  o.existed = db_bytes > 0;
  if (!o.existed) return o;

  const auto wal = store_detail::wal_path(db);
  const auto scan_started = std::chrono::steady_clock::now();
  const auto scan = store_detail::scan_wal(wal);
  const auto scan_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                             scan_started).count();
  if (scan.loses_commits()) {
    if (!settings.accept_wal_loss)
      throw std::runtime_error("message store " + db.string() + ": its write-ahead log " + wal.string() +
                               " is damaged: " + scan.describe() + ". Starting would drop those acknowledged "
                               "records silently, so the broker refuses. To recover: keep a copy of both files "
                               "for investigation, then restore from a backup; or start with "
                               "`tellonce serve --accept-wal-loss` to keep what SQLite recovers (a copy of the "
                               "damaged log is kept aside). See engines/sqlite_store/README.md, \"Refusing a lost store\".");
    auto kept = fs::path(wal.string() + ".damaged-" + std::to_string(now_ms()));
    fs::copy_file(wal, kept, ec);
    log::error("store", "--accept-wal-loss: starting on a damaged write-ahead log: " + scan.describe() +
                            (ec ? "; could not keep a copy: " + ec.message() : "; a copy is kept at " + kept.string()));
  } else if (scan.present) {
    log::info("store", "recovering the write-ahead log: " + scan.describe() + " (read in " +
                           std::to_string(scan_ms) + " ms)");
  }

  if (settings.integrity_check == SqliteStoreSettings::IntegrityCheck::off) return o;
  auto problems = integrity_problems(settings);
  if (problems.empty()) return o;
  const char* check = settings.integrity_check == SqliteStoreSettings::IntegrityCheck::full ? "integrity_check"
                                                                                           : "quick_check";
  if (!settings.accept_new_store)
    throw std::runtime_error("message store " + db.string() + " fails SQLite's " + check + ": " + problems +
                             ". The broker refuses to accept records into a damaged store. " + recovery_advice(db) +
                             " `sqlite3 " + db.string() + " .recover` can salvage rows from a copy of it.");
  move_store_aside(db);
  log::warn("store", "--accept-new-store: " + db.string() + " failed " + check + "; starting a new, empty store");
  return Opening{};
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
        opening_(check_files_before_open(settings)), writer_db_(settings.path, false) {
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
    configure_writer(writer_db_);
    // SQLite's default cache is 2 MB, 64 of these pages: the writer then re-reads index pages
    // from the WAL on every batch. 32 MB keeps the hot pages (bench/load: ~0.5 fewer preads
    // per record). It is a ceiling, not an allocation.
    writer_db_.exec_or_throw("PRAGMA cache_size = -32768");
    migrate();
    check_identity();
    // Nothing else has the file open yet: copy whatever a crash left in the WAL back into the
    // database and cut the log to nothing, so a restart also gives back an oversized WAL.
    if (sqlite3_wal_checkpoint_v2(writer_db_.handle(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr) != SQLITE_OK)
      log::warn("store", "start-up checkpoint failed: " + std::string(sqlite3_errmsg(writer_db_.handle())));
    if (settings.max_size_bytes > 0) {
      const auto page_size = static_cast<std::uint64_t>(single_int(writer_db_, "PRAGMA page_size"));
      writer_db_.exec_or_throw("PRAGMA max_page_count = " + std::to_string(std::max<std::uint64_t>(1, settings.max_size_bytes / page_size)));
    }
    write_ = std::make_unique<WriteStatements>(writer_db_);
    next_seq_ = single_int(writer_db_, "SELECT coalesce(max(seq), 0) + 1 FROM messages");

    open_search_file();
    store_detail::attach_search_file(writer_db_, settings.path, false);  // replay by filter reads it

    checkpoint_db_ = std::make_unique<sqlite::Connection>(settings.path, false);
    configure(*checkpoint_db_, settings);
    sqlite3_wal_hook(writer_db_.handle(), &SqliteStore::on_wal_commit, this);

    reader_db_ = std::make_unique<sqlite::Connection>(settings.path, true);
    configure(*reader_db_, settings);
    store_detail::attach_search_file(*reader_db_, settings.path, false);
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
      pthread_setname_np(pthread_self(), "store-ckpt");
      checkpoint_loop();
    });
    searcher_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "store-search");
      search_loop();
    });
  }

  ~SqliteStore() override { close(); }

  std::string describe() const override { return "sqlite " + settings_.path.string(); }

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

  asio::awaitable<Result<std::vector<DeliveryJob>>> replay_as(std::string message_id, std::string actor) override {
    auto work = [this, id = std::move(message_id), actor = std::move(actor)] { return apply_replay(id, actor); };
    return submit<std::vector<DeliveryJob>>(writes_, std::move(work));
  }

  asio::awaitable<Result<ReplayMatch>> replay_matching(MessageQuery query, std::string actor, bool dry_run) override {
    auto written = co_await search_keys_written();
    if (!written) co_return written.error();
    if (dry_run) {
      auto work = [this, query = std::move(query)] { return read_replayable_count(query); };
      co_return co_await submit<ReplayMatch>(reads_, std::move(work));
    }
    auto work = [this, query = std::move(query), actor = std::move(actor)] { return apply_replay_matching(query, actor); };
    co_return co_await submit<ReplayMatch>(writes_, std::move(work));
  }

  asio::awaitable<Result<void>> set_paused(std::string destination, bool paused, std::string actor) override {
    auto work = [this, destination = std::move(destination), paused, actor = std::move(actor)] {
      return apply_set_paused(destination, paused, actor);
    };
    return submit<void>(writes_, std::move(work));
  }

  asio::awaitable<Result<void>> record_view(std::string message_id, std::string what, std::string actor,
                                            std::string reason) override {
    auto work = [this, id = std::move(message_id), what = std::move(what), actor = std::move(actor),
                 reason = std::move(reason)] { return apply_record_view(id, what, actor, reason); };
    return submit<void>(writes_, std::move(work));
  }

  asio::awaitable<Result<std::vector<DestinationControl>>> destination_controls() override {
    auto work = [this] { return read_controls(); };
    return submit<std::vector<DestinationControl>>(reads_, std::move(work));
  }

  asio::awaitable<Result<std::vector<DestinationAction>>> destination_trail(std::string destination, int limit) override {
    auto work = [this, destination = std::move(destination), limit] { return read_destination_trail(destination, limit); };
    return submit<std::vector<DestinationAction>>(reads_, std::move(work));
  }

  asio::awaitable<Result<std::optional<MessageView>>> find(std::string message_id) override {
    auto work = [this, id = std::move(message_id)] { return read_message(id); };
    return submit<std::optional<MessageView>>(reads_, std::move(work));
  }

  asio::awaitable<Result<std::string>> body(std::string message_id) override {
    auto work = [this, id = std::move(message_id)] { return read_body(id); };
    return submit<std::string>(reads_, std::move(work));
  }

  asio::awaitable<Result<std::optional<StoredBytes>>> original(std::string message_id) override {
    auto work = [this, id = std::move(message_id)] { return read_original(id); };
    return submit<std::optional<StoredBytes>>(reads_, std::move(work));
  }

  asio::awaitable<Result<std::vector<MessageSummary>>> list(MessageQuery query) override {
    auto written = co_await search_keys_written();
    if (!written) co_return written.error();
    auto work = [this, query = std::move(query)] { return read_list(query); };
    co_return co_await submit<std::vector<MessageSummary>>(reads_, std::move(work));
  }

  Result<std::vector<DeliveryJob>> load_pending(std::size_t max_body_bytes) override;
  Result<std::vector<StoredFact>> facts_since(std::int64_t since_ms) override;

  asio::awaitable<Result<std::vector<DestinationBacklog>>> backlog() override {
    auto work = [this] { return read_backlog(); };
    return submit<std::vector<DestinationBacklog>>(reads_, std::move(work));
  }

  std::uint64_t size_bytes() const override {
    std::uint64_t total = 0;
    const auto search = store_detail::search_file_path(settings_.path);
    for (const auto& file : {settings_.path, store_detail::wal_path(settings_.path), search,
                             store_detail::wal_path(search)}) {
      std::error_code ec;
      auto size = fs::file_size(file, ec);
      if (!ec) total += size;
    }
    return total;
  }

  asio::awaitable<Result<std::vector<HeldRecord>>> mailbox(std::string partner, int limit) override {
    auto work = [this, partner = std::move(partner), limit] { return read_mailbox(partner, limit); };
    return submit<std::vector<HeldRecord>>(reads_, std::move(work));
  }

  asio::awaitable<Result<HeldRecord>> held(std::string partner, std::string message_id) override {
    auto work = [this, partner = std::move(partner), id = std::move(message_id)] { return read_held(partner, id); };
    return submit<HeldRecord>(reads_, std::move(work));
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
    auto probe = [this]() -> Result<void> {
      write_->probe_fill.run();
      write_->probe_clear.run();
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
    if (reader_.joinable()) reader_.join();
    searches_.close();  // after the writer: it has handed over the keys of its last commits
    if (searcher_.joinable()) searcher_.join();
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
  void check_identity();
  void write_loop();
  void write_batch(std::vector<std::unique_ptr<Job>>& batch);
  void open_search_file();
  void catch_up_search_keys();
  void search_loop();
  void hand_over_search_keys();
  asio::awaitable<Result<void>> search_keys_written();
  void read_loop();
  void checkpoint_loop();
  static int on_wal_commit(void* self, sqlite3* db, const char* name, int pages);

  // Writer thread only.
  Result<Committed> apply_commit(const NewMessage& msg);
  Result<void> apply_attempt(const DeliveryAttempt& attempt);
  Result<std::vector<DeliveryJob>> apply_replay(const std::string& message_id, const std::string& actor = {});
  Result<ReplayMatch> apply_replay_matching(const MessageQuery& query, const std::string& actor);
  Result<void> apply_set_paused(const std::string& destination, bool paused, const std::string& actor);
  Result<void> apply_record_view(const std::string& message_id, const std::string& what, const std::string& actor,
                                 const std::string& reason);
  Result<void> apply_collect(const std::string& partner, const std::string& message_id);
  Result<std::vector<std::string>> apply_expiry(const std::string& partner, std::int64_t held_before_ms);
  // Stores the event's attempt facts as columns; data carries the rarer kinds' fields (JSON).
  void add_event(const std::string& message_id, const LifecycleEvent& event, const std::string& data = {});

  // Reader thread only.
  Result<std::optional<MessageView>> read_message(const std::string& message_id);
  Result<std::string> read_body(const std::string& message_id);
  Result<std::optional<StoredBytes>> read_original(const std::string& message_id);
  Result<std::vector<MessageSummary>> read_list(const MessageQuery& query);
  Result<std::vector<HeldRecord>> read_mailbox(const std::string& partner, int limit);
  Result<HeldRecord> read_held(const std::string& partner, const std::string& message_id);
  Result<ReplayMatch> read_replayable_count(const MessageQuery& query);
  Result<std::vector<DestinationControl>> read_controls();
  Result<std::vector<DestinationAction>> read_destination_trail(const std::string& destination, int limit);
  Result<std::vector<DestinationBacklog>> read_backlog();

  SqliteStoreSettings settings_;
  std::size_t max_batch_;
  Opening opening_;
  sqlite::Connection writer_db_;
  std::unique_ptr<WriteStatements> write_;
  std::int64_t next_seq_ = 1;
  // Search keys (search_keys.hpp). staged_keys_: the writer's, of the batch being written.
  // handed_keys_ (under searches_.mutex): committed, for the search thread to write, which
  // keeps in unwritten_keys_ (its own) those a failed flush left behind.
  std::vector<store_detail::SearchKey> staged_keys_, handed_keys_, unwritten_keys_;
  std::unique_ptr<sqlite::Connection> search_db_;
  store_detail::SearchBlockCache search_cache_;  // search thread (and start-up before it runs)
  JobQueue searches_;  // jobs: searches waiting for the keys to be written
  std::thread searcher_;
  bool search_write_failed_ = false;  // search thread only
  // The highest seq committed, and the highest whose keys are written: equal means a search
  // need not wait. Set by the writer and the search thread, read by any thread.
  std::atomic<std::int64_t> committed_upto_{0};
  std::atomic<std::int64_t> indexed_upto_{0};
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
  std::atomic<bool> closed_flag_{false};

  // The last write's outcome, for health(): set by the writer, read from any thread.
  store_detail::WriteHealth write_health_;
};

void SqliteStore::migrate() {
  auto version = single_int(writer_db_, "PRAGMA user_version");
  if (version > current_schema_version)
    throw std::runtime_error("message store " + settings_.path.string() + " has schema version " +
                             std::to_string(version) + ", newer than this broker understands (" +
                             std::to_string(current_schema_version) + ")");
  if (version == current_schema_version) return;
  const std::string set_version = "PRAGMA user_version = " + std::to_string(current_schema_version) + ";";
  const std::string meta = store_meta_sql(new_message_id());
  if (version == 0) {
    writer_db_.exec_or_throw("BEGIN IMMEDIATE;" + schema_sql() + search_sql + meta + store_detail::migrate_7_to_8_sql() +
                             store_detail::migrate_8_to_9_sql() + set_version + "COMMIT;");
    return;
  }
  // 1 -> 2 rebuilds messages, which deliveries and events reference: SQLite's own recipe for
  // that is foreign keys off (as they are on the writer: configure_writer), rebuild, check.
  // 2 -> 3 adds store_meta; 3 -> 4 the trail's fact columns; 4 -> 5 the originals table;
  // 5 -> 6 rebuilds deliveries for the mailbox statuses (held, expired); 6 -> 7 adds search;
  // 7 -> 8 moves search from SQLite indexes into the search_keys table (search_keys.hpp);
  // 8 -> 9 moves that table into the search file, where start-up rebuilds it.
  log::info("store", "upgrading " + settings_.path.string() + " from schema " + std::to_string(version) + " to " +
                         std::to_string(current_schema_version));
  try {
    writer_db_.exec_or_throw("BEGIN IMMEDIATE;" + (version == 1 ? migrate_1_to_2_sql() : std::string()) +
                             (version < 3 ? meta : std::string()) +
                             (version < 4 ? migrate_3_to_4_sql() : std::string()) +
                             (version < 5 ? originals_sql : std::string()) +
                             (version < 6 ? migrate_5_to_6_sql() : std::string()) +
                             (version < 7 ? std::string(search_sql) : std::string()) +
                             (version < 8 ? store_detail::migrate_7_to_8_sql() : std::string()) +
                             store_detail::migrate_8_to_9_sql());
    if (single_int(writer_db_, "SELECT count(*) FROM pragma_foreign_key_check") != 0)
      throw std::runtime_error("foreign keys broken after the upgrade");
    writer_db_.exec_or_throw(set_version + "COMMIT;");
  } catch (const std::exception& e) {
    sqlite3_exec(writer_db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);  // none open is fine
    throw std::runtime_error("message store " + settings_.path.string() + ": upgrade from schema " +
                             std::to_string(version) + " failed, nothing was changed: " + e.what());
  }
}

// The database names its own id; the marker beside it must name the same one. A store put in
// place from elsewhere (another broker's file, a wrong restore) is refused, not adopted.
void SqliteStore::check_identity() {
  const auto id = single_text(writer_db_, "SELECT value FROM store_meta WHERE key = 'store_id'");
  if (id.empty()) throw std::runtime_error("message store " + settings_.path.string() + " has no store id");
  const auto marker = store_detail::marker_path(settings_.path);
  if (opening_.marker_id == id) return;
  if (opening_.marker_id && !settings_.accept_new_store)
    throw std::runtime_error("message store " + settings_.path.string() + " is store " + id + ", but its marker " +
                             marker.string() + " says store " + *opening_.marker_id +
                             " was created there: the file was replaced by another store's. The broker refuses "
                             "to continue on it. " + recovery_advice(settings_.path));
  store_detail::write_marker(marker, id);
  log::info("store", (opening_.marker_id ? "--accept-new-store: marker " : "marker ") + marker.string() +
                         " now names store " + id);
}

void SqliteStore::write_loop() {
  std::vector<std::unique_ptr<Job>> batch;
  for (;;) {
    batch.clear();
    if (!writes_.take_batch(batch, max_batch_, settings_.max_commit_delay)) break;  // closed and drained
    write_batch(batch);
    ++batches_;
    writes_done_ += batch.size();
  }
}

// Start-up. The search file holds nothing the store does not: one that cannot be opened or read
// (damaged, not a database) is deleted and built again rather than keeping the broker down.
// A second failure (a full disk, a folder it may not write) stops the start-up as any other.
void SqliteStore::open_search_file() {
  for (int attempt = 0;; ++attempt) {
    try {
      search_db_ = std::make_unique<sqlite::Connection>(settings_.path, false);
      sqlite3_busy_timeout(search_db_->handle(), static_cast<int>(settings_.busy_timeout.count()));
      store_detail::attach_search_file(*search_db_, settings_.path, true);
      search_db_->exec_or_throw("PRAGMA search.journal_size_limit = " + std::to_string(wal_size_limit));
      catch_up_search_keys();
      return;
    } catch (const std::exception& e) {
      search_db_.reset();
      search_cache_.clear();
      if (attempt > 0) throw;
      const auto file = store_detail::search_file_path(settings_.path);
      log::warn("store", "search index " + file.string() + " is unusable (" + e.what() +
                             "); deleting it and building it again from the store");
      for (const auto& f : {file, store_detail::wal_path(file), fs::path(file.string() + "-shm")}) {
        std::error_code ec;
        fs::remove(f, ec);
      }
    }
  }
}

// Start-up: the keys of records committed after the search file's watermark (a crash lost
// them from memory, or the file is new) are rebuilt from their rows.
void SqliteStore::catch_up_search_keys() {
  auto& db = *search_db_;
  const auto last = next_seq_ - 1;
  const auto indexed = store_detail::search_indexed_upto(
      db, single_text(writer_db_, "SELECT value FROM store_meta WHERE key = 'store_id'"), last);
  if (indexed < last) {
    auto keys = store_detail::search_keys_after(db, indexed);
    db.exec_or_throw("BEGIN IMMEDIATE");
    store_detail::write_search_keys(db, keys, last, search_cache_);
    if (db.failed()) {
      const auto error = db.error_message();
      sqlite3_exec(db.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
      throw std::runtime_error("message store " + settings_.path.string() +
                               ": could not rebuild its search index: " + error);
    }
    db.exec_or_throw("COMMIT");
    log::info("store", "search index: wrote the keys of the " + std::to_string(last - indexed) +
                           " record(s) committed after its last flush");
  }
  committed_upto_ = last;
  indexed_upto_ = last;
}

// Writer thread, after a commit: the batch's keys go to the search thread, woken only when a
// flush's worth has gathered (its interval wakes it otherwise).
void SqliteStore::hand_over_search_keys() {
  bool full = false;
  {
    std::lock_guard lock(searches_.mutex);
    handed_keys_.insert(handed_keys_.end(), std::make_move_iterator(staged_keys_.begin()),
                        std::make_move_iterator(staged_keys_.end()));
    full = handed_keys_.size() >= search_flush_keys;
    committed_upto_ = next_seq_ - 1;  // under the lock: the keys up to it are handed over
  }
  staged_keys_.clear();
  if (full) searches_.ready.notify_one();
}

// The search thread: writes the handed-over keys when enough have gathered, every interval,
// when a search waits (then answers it) and when the store closes.
void SqliteStore::search_loop() {
  auto& db = *search_db_;
  std::vector<std::unique_ptr<Job>> waiting;
  for (;;) {
    std::int64_t upto = 0;
    bool closing = false;
    {
      std::unique_lock lock(searches_.mutex);
      searches_.ready.wait_for(lock, search_flush_interval, [this] {
        return searches_.closed || !searches_.jobs.empty() || handed_keys_.size() >= search_flush_keys;
      });
      while (!searches_.jobs.empty()) {
        waiting.push_back(std::move(searches_.jobs.front()));
        searches_.jobs.pop_front();
      }
      if (unwritten_keys_.empty()) {
        unwritten_keys_.swap(handed_keys_);
      } else {
        unwritten_keys_.insert(unwritten_keys_.end(), std::make_move_iterator(handed_keys_.begin()),
                               std::make_move_iterator(handed_keys_.end()));
        handed_keys_.clear();
      }
      upto = committed_upto_.load();
      closing = searches_.closed;
    }
    if (!unwritten_keys_.empty()) {
      std::string error;
      if (sqlite3_exec(db.handle(), "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
        error = sqlite3_errmsg(db.handle());
      } else {
        store_detail::write_search_keys(db, unwritten_keys_, upto, search_cache_);
        if (db.failed()) error = db.error_message();
        else if (sqlite3_exec(db.handle(), "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) error = sqlite3_errmsg(db.handle());
        if (!error.empty() && sqlite3_get_autocommit(db.handle()) == 0)
          sqlite3_exec(db.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
      }
      if (!error.empty()) {
        search_cache_.clear();  // it may describe writes that were rolled back
        // Kept for the next round; searches fail as unavailable meanwhile.
        if (!search_write_failed_) log::warn("store", "could not write the search index, will try again: " + error);
        search_write_failed_ = true;
        db.clear_error();
      } else {
        search_write_failed_ = false;
        unwritten_keys_.clear();
        indexed_upto_ = upto;
      }
    }
    for (auto& job : waiting) {
      job->run();
      job->complete();
    }
    waiting.clear();
    if (closing && unwritten_keys_.empty()) return;
    if (closing && search_write_failed_) return;  // start-up rebuilds what is left
  }
}

// A search sees every record acknowledged before it: the search thread first writes their keys.
asio::awaitable<Result<void>> SqliteStore::search_keys_written() {
  if (indexed_upto_.load() >= committed_upto_.load()) co_return Result<void>{};
  auto work = [this]() -> Result<void> {
    if (search_write_failed_) return unavailable("message store could not write its search index");
    return {};
  };
  co_return co_await submit<void>(searches_, std::move(work));
}

// Runs the batch as one transaction. A constraint failure belongs to the write that caused
// it: that write fails alone and the rest run again. Anything else (disk full, I/O error,
// lock timeout) would hit every write alike, so the whole batch fails at once as retryable.
void SqliteStore::write_batch(std::vector<std::unique_ptr<Job>>& batch) {
  std::vector<Job*> live;
  for (auto& job : batch) live.push_back(job.get());
  bool batch_failed = false;
  std::string batch_error;
  while (!live.empty()) {
    const auto seq_before = next_seq_;
    staged_keys_.clear();
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
    if (!writer_db_.failed()) {
      hand_over_search_keys();
      break;
    }

    next_seq_ = seq_before;  // those numbers were rolled back with the rows, and their keys too
    staged_keys_.clear();
    const bool one_write_at_fault = culprit && (writer_db_.error_code() & 0xff) == SQLITE_CONSTRAINT;
    auto failure = unsaved(writer_db_);
    const std::string sqlite_error = writer_db_.error_message();
    log::error("store", (one_write_at_fault ? "a write failed: " : "a batch of " + std::to_string(live.size()) +
                                                                      " write(s) failed: ") +
                            writer_db_.error_message() +
                            (one_write_at_fault ? "; retrying the rest of its batch" : ""));
    writer_db_.clear_error();
    write_->rollback.run();  // may fail when SQLite already rolled back; that is fine
    writer_db_.clear_error();
    if (!one_write_at_fault) {
      for (auto* job : live) job->fail(failure);
      batch_failed = true;
      batch_error = sqlite_error;
      break;
    }
    culprit->fail(failure);
    live.erase(std::find(live.begin(), live.end(), culprit));
  }
  write_health_.note(!batch_failed, batch_error);
  for (auto& job : batch) job->complete();
}

void SqliteStore::add_event(const std::string& message_id, const LifecycleEvent& e, const std::string& data) {
  // Binding leaves nothing behind that outlives the step: the outcome name is a static string.
  write_->insert_event.start()
      .bind(1, message_id).bind(2, e.at_ms).bind(3, to_string(e.kind)).bind(4, e.destination)
      .bind(5, std::int64_t{e.attempt})
      .bind(6, e.destination.empty() ? std::string_view("") : to_string(e.outcome))
      .bind(7, e.partner_code).bind(8, e.detail).bind(9, e.next_attempt_ms).bind(10, data)
      .run();
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
      find.reset();
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
      add_event(existing.outcome.message_id, duplicate, data);
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
      .bind(10, msg.content_hash).bind(11, msg.received_at_ms).bind(12, now)
      .bind(13, static_cast<std::int64_t>(msg.body.size())).bind(14, join(msg.route_ids, ","))
      .bind(15, static_cast<std::int64_t>(destinations.size())).bind(16, warnings)
      .bind(17, nhs_number_in(msg.patient_key))
      .run();
  store_detail::add_search_keys(staged_keys_, store_detail::SearchFacts{seq, msg.received_at_ms, msg.source,
                                                                       msg.resource_type, msg.event,
                                                                       nhs_number_in(msg.patient_key), &msg.route_ids,
                                                                       &destinations});
  write_->insert_body.start().bind(1, seq).bind_blob(2, msg.body).run();
  if (!msg.original_content_type.empty())
    write_->insert_original.start()
        .bind(1, seq).bind(2, msg.original_content_type)
        .bind(3, static_cast<std::int64_t>(msg.original_bytes.size())).bind_blob(4, msg.original_bytes)
        .run();

  // Deliveries consent withheld: trail events only, no delivery row (README "Consent").
  for (auto withheld : msg.withheld) {
    withheld.kind = EventKind::withheld;
    withheld.at_ms = now;
    add_event(id, withheld, "");
  }
  for (const auto& destination : destinations) {
    write_->insert_delivery.start().bind(1, id).bind(2, destination).bind(3, seq).bind(4, msg.received_at_ms).run();
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

// The hot path is a first-time success: one UPDATE, no event row (the delivery row is the
// record of that attempt). Failed attempts and dead letters also get an event each.
Result<void> SqliteStore::apply_attempt(const DeliveryAttempt& attempt) {
  const auto status = attempt.ok()     ? DeliveryStatus::delivered
                      : attempt.held() ? DeliveryStatus::held
                      : attempt.dead   ? DeliveryStatus::dead
                                       : DeliveryStatus::pending;
  const auto at = attempt.at_ms ? attempt.at_ms : now_ms();

  // Bound text is not copied (SQLITE_STATIC): everything bound lives until the step below.
  const bool settled = status != DeliveryStatus::pending;
  auto& settle = write_->settle_delivery;
  settle.start()
      .bind(1, attempt.delivery_id).bind(2, to_string(status)).bind(3, std::int64_t{attempt.attempt})
      .bind(4, settled ? std::int64_t{0} : attempt.next_attempt_ms)
      .bind(5, settled ? at : std::int64_t{0})
      .bind(6, to_string(attempt.outcome)).bind(7, attempt.partner_code).bind(8, attempt.detail)
      .run();
  if (writer_db_.failed()) return {};  // the batch fails as a whole
  if (sqlite3_changes(writer_db_.handle()) == 0)
    return Failure::permanent(Errc::not_found, Issue{Severity::error, "not-found",
                                         "no delivery " + std::to_string(attempt.delivery_id) + " in the store",
                                         "", ""});
  if (status == DeliveryStatus::delivered) return {};
  if (status == DeliveryStatus::held && !attempt.held_body.empty())
    write_->insert_held_body.start().bind(1, attempt.delivery_id).bind_blob(2, attempt.held_body).run();

  // The dispatcher's job names the message and destination of the delivery it settles.
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

Result<std::vector<DeliveryJob>> SqliteStore::apply_replay(const std::string& message_id, const std::string& actor) {
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
  LifecycleEvent replayed;
  replayed.kind = EventKind::replayed;
  replayed.at_ms = now_ms();
  add_event(message_id, replayed, replayed_data(destinations, actor));
  return jobs;
}


// A collected delivery is recorded on its row alone, as a first-time success is: the trail
// shows it delivered, attempt number unchanged, partner code "acknowledged".
Result<void> SqliteStore::apply_collect(const std::string& partner, const std::string& message_id) {
  write_->collect_held.start().bind(1, message_id).bind(2, partner).bind(3, now_ms()).run();
  if (writer_db_.failed()) return {};  // the batch fails as a whole
  if (sqlite3_changes(writer_db_.handle()) == 0) return not_held(partner, message_id);
  return {};
}

Result<std::vector<std::string>> SqliteStore::apply_expiry(const std::string& partner, std::int64_t held_before_ms) {
  struct Due {
    std::int64_t delivery_id;
    std::string message_id;
    int attempt;
    std::int64_t held_since_ms;
  };
  std::vector<Due> due;
  auto& find = write_->held_before;
  find.start().bind(1, partner).bind(2, held_before_ms).bind(3, static_cast<std::int64_t>(max_expire_batch));
  while (find.step())
    due.push_back(Due{find.int64(0), find.text(1), static_cast<int>(find.int64(2)), find.int64(3)});
  find.reset();
  std::vector<std::string> expired_ids;
  if (writer_db_.failed()) return expired_ids;  // the batch fails as a whole
  const auto now = now_ms();
  for (const auto& d : due) {
    write_->expire_delivery.start().bind(1, d.delivery_id).bind(2, now).run();
    LifecycleEvent expired;
    expired.kind = EventKind::expired;
    expired.at_ms = now;
    expired.destination = partner;
    expired.attempt = d.attempt;
    expired.outcome = DeliveryOutcome::held;
    expired.partner_code = "mailbox";
    expired.detail = "not acknowledged within " + std::to_string((now - d.held_since_ms) / 1000) +
                     " s of being placed in the mailbox";
    add_event(d.message_id, expired);
    if (writer_db_.failed()) return std::vector<std::string>{};
    expired_ids.push_back(d.message_id);
  }
  return expired_ids;
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
      // Also every few seconds: a store that went quiet after a burst has nothing left to wake
      // this thread, and its WAL would keep its size until the next burst.
      checkpoint_due_.wait_for(lock, std::chrono::seconds(5), [this] { return checkpoint_wanted_ || checkpoint_stop_; });
      if (checkpoint_stop_) return;
      checkpoint_wanted_ = false;
    }
    // PASSIVE never blocks the writer; frames a reader still needs wait for the next round.
    int log_frames = 0, copied = 0;
    int rc = sqlite3_wal_checkpoint_v2(checkpoint_db_->handle(), nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                       &log_frames, &copied);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
      log::warn("store", std::string("background checkpoint failed: ") + sqlite3_errmsg(checkpoint_db_->handle()));
      continue;
    }
    // Copied back whole, yet the file is over the limit (after a burst or an outage, with no
    // write since to restart the log): TRUNCATE takes the write lock only for the truncation,
    // as there is nothing left to copy.
    std::error_code ec;
    auto wal_bytes = std::filesystem::file_size(store_detail::wal_path(settings_.path), ec);
    if (rc == SQLITE_OK && copied == log_frames && !ec && wal_bytes > static_cast<std::uintmax_t>(wal_size_limit)) {
      rc = sqlite3_wal_checkpoint_v2(checkpoint_db_->handle(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
      log::info("store", "write-ahead log of " + std::to_string(wal_bytes / (1024 * 1024)) + " MB " +
                             (rc == SQLITE_OK ? "truncated" : std::string("not truncated: ") +
                                                                  sqlite3_errmsg(checkpoint_db_->handle())));
    }
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
    AcceptedRow row;
    row.accepted_at_ms = r.message.int64(8);
    v.body_bytes = static_cast<std::size_t>(r.message.int64(9));
    row.routes = r.message.text(10);
    row.warnings_json = r.message.text(11);
    row.content_type = r.message.text(12);
    row.idempotency_key = r.message.text(13);
    const auto seq = r.message.int64(14);
    r.message.reset();
    v.content_type = row.content_type;
    r.original_size.start().bind(1, seq);
    if (r.original_size.step()) {
      v.original_content_type = r.original_size.text(0);
      v.original_bytes = static_cast<std::size_t>(r.original_size.int64(1));
    }
    r.original_size.reset();

    std::vector<LifecycleEvent> settled;  // deliveries' own record of their successful attempt
    std::int64_t pending = 0, dead = 0;
    r.deliveries.start().bind(1, message_id);
    while (r.deliveries.step()) {
      DeliveryView d;
      d.delivery_id = r.deliveries.int64(0);
      d.destination = r.deliveries.text(1);
      d.status = delivery_status_from(r.deliveries.text(2));
      d.attempts = static_cast<int>(r.deliveries.int64(3));
      d.next_attempt_ms = r.deliveries.int64(4);
      d.last_outcome = delivery_outcome_from(r.deliveries.text(6));
      d.last_partner_code = r.deliveries.text(7);
      d.last_detail = r.deliveries.text(8);
      d.legacy_last_error = r.deliveries.text(9);
      if (d.status == DeliveryStatus::delivered) {
        LifecycleEvent e;
        e.kind = EventKind::delivered;
        e.at_ms = r.deliveries.int64(5);
        e.destination = d.destination;
        e.attempt = d.attempts;
        e.outcome = DeliveryOutcome::ok;
        e.partner_code = d.last_partner_code;
        e.detail = d.last_detail;
        e.legacy_text = r.deliveries.text(10);  // delivered before schema 4: its outcome as text
        settled.push_back(std::move(e));
      }
      pending += d.status == DeliveryStatus::pending || d.status == DeliveryStatus::held;
      dead += d.status == DeliveryStatus::dead || d.status == DeliveryStatus::expired;
      v.deliveries.push_back(std::move(d));
    }
    r.deliveries.reset();
    v.state = state_from_counts(static_cast<std::int64_t>(v.deliveries.size()), pending, dead);

    v.events = accept_events(v, row);
    r.events.start().bind(1, message_id);
    while (r.events.step()) {
      auto kind = event_kind_from(r.events.text(1));
      if (!kind) continue;  // only this code writes kinds, and a newer schema is refused at start-up
      LifecycleEvent e;
      e.kind = *kind;
      e.at_ms = r.events.int64(0);
      e.legacy_text = r.events.text(2);
      e.destination = r.events.text(3);
      e.attempt = static_cast<int>(r.events.int64(4));
      e.outcome = delivery_outcome_from(r.events.text(5)).value_or(DeliveryOutcome::retryable);
      e.partner_code = r.events.text(6);
      e.detail = r.events.text(7);
      e.next_attempt_ms = r.events.int64(8);
      const auto data = r.events.text(9);
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
          e.reason = json_member_string(doc, "reason");
        }
      }
      v.events.push_back(std::move(e));
    }
    r.events.reset();
    // Every destination withheld by consent: the unroutable event says so, naming them.
    if (v.deliveries.empty())
      for (const auto& e : v.events)
        if (e.kind == EventKind::withheld) v.events[2].destinations.push_back(e.destination);
    // The derived "delivered" events join the stored ones; the trail reads in time order, ties
    // kept in the order above (received, validated, routed first).
    for (auto& e : settled) v.events.push_back(std::move(e));
    std::stable_sort(v.events.begin(), v.events.end(),
                     [](const LifecycleEvent& a, const LifecycleEvent& b) { return a.at_ms < b.at_ms; });
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

Result<std::string> SqliteStore::read_body(const std::string& message_id) {
  auto& db = *reader_db_;
  auto& st = read_->body;
  st.start().bind(1, message_id);
  std::optional<std::string> body;
  if (st.step()) body = st.text(0);
  st.reset();
  if (db.failed()) {
    auto failure = unavailable("message store could not read the body of " + message_id + ": " + db.error_message());
    db.clear_error();
    return failure;
  }
  if (!body) return not_found(message_id);
  return std::move(*body);
}

Result<std::optional<StoredBytes>> SqliteStore::read_original(const std::string& message_id) {
  auto& db = *reader_db_;
  auto& st = read_->original;
  st.start().bind(1, message_id);
  bool found = false;
  std::optional<StoredBytes> original;
  if (st.step()) {
    found = true;
    if (!st.is_null(0)) original = StoredBytes{st.text(0), st.text(1)};
  }
  st.reset();
  if (db.failed()) {
    auto failure = unavailable("message store could not read what was sent for " + message_id + ": " +
                               db.error_message());
    db.clear_error();
    return failure;
  }
  if (!found) return not_found(message_id);
  return original;
}

// The search as SQL (see search_sql for the indexes). One table drives it, walked newest received
// first through an index that serves its most selective filter; the other filters are checked
// on each row it yields. Values are bound in the order the builder added them.
struct SearchSql {
  std::string from_where;               // "FROM ... WHERE ..." with x the driving row, m the message
  std::vector<std::string> texts;       // kept here so bound text outlives the step (SQLITE_STATIC)
  struct Bind { bool is_text; std::size_t text; std::int64_t number; };
  std::vector<Bind> binds;
};



// Where a search starts: the index it walks newest first. by_* walk an index of messages; the
// others a table keyed by received time (routes, deliveries).
enum class Driver { messages, by_source, by_resource_type, by_event, by_nhs_number, unroutable, route, destination,
                    failed, waiting };

constexpr const char* failed_deliveries = TELLONCE_UNSETTLED("x.") "1";
constexpr const char* waiting_deliveries = TELLONCE_UNSETTLED("x.") "0";
constexpr const char* failed_probe = "deliveries INDEXED BY deliveries_unsettled WHERE " TELLONCE_UNSETTLED("") "1";
constexpr const char* waiting_probe = "deliveries INDEXED BY deliveries_unsettled WHERE " TELLONCE_UNSETTLED("") "0";

// The driver the filters alone suggest, without looking at the data (replay by filter uses it).
Driver fixed_driver(const MessageQuery& q) {
  if (!q.nhs_number.empty() || !q.event.empty()) return Driver::messages;
  if (!q.route.empty()) return Driver::route;
  if (!q.destination.empty()) return Driver::destination;
  if (q.state == MessageState::failed) return Driver::failed;
  if (q.state == MessageState::delivering) return Driver::waiting;
  return Driver::messages;
}

Result<SearchSql> search_sql_for(const MessageQuery& q, bool with_cursor, Driver driver) {
  SearchSql out;
  std::vector<std::string> where;
  auto text = [&](const std::string& value) {
    out.texts.push_back(value);
    out.binds.push_back({true, out.texts.size() - 1, 0});
    return std::string("?");
  };
  auto number = [&](std::int64_t value) {
    out.binds.push_back({false, 0, value});
    return std::string("?");
  };
  // The driving table is x, newest received first; CROSS JOIN keeps it first (SQLite would
  // otherwise often walk messages).
  auto by_key = [&](Facet facet, const std::string* value) {
    out.from_where = "FROM search_keys x CROSS JOIN messages m ON m.seq = x.seq";
    where.push_back("x.facet = " + std::to_string(static_cast<int>(facet)) + " AND x.value = " +
                    (value ? text(*value) : std::string("''")));
  };
  switch (driver) {
    case Driver::messages: by_key(Facet::every, nullptr); break;
    case Driver::by_source: by_key(Facet::source, &q.source); break;
    case Driver::by_resource_type: by_key(Facet::resource_type, &q.resource_type); break;
    case Driver::by_event: by_key(Facet::event, &q.event); break;
    case Driver::by_nhs_number: by_key(Facet::nhs_number, &q.nhs_number); break;
    case Driver::unroutable: by_key(Facet::unroutable, nullptr); break;
    case Driver::route: by_key(Facet::route, &q.route); break;
    case Driver::destination: by_key(Facet::destination, &q.destination); break;
    case Driver::failed:
      out.from_where = "FROM deliveries x INDEXED BY deliveries_unsettled CROSS JOIN messages m ON m.seq = x.seq";
      where.push_back(failed_deliveries);
      // one row per message: its first dead delivery
      where.push_back("NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.message_id = x.message_id "
                      "AND e.status IN ('dead', 'expired') AND e.id < x.id)");
      break;
    case Driver::waiting:
      out.from_where = "FROM deliveries x INDEXED BY deliveries_unsettled CROSS JOIN messages m ON m.seq = x.seq";
      where.push_back(waiting_deliveries);
      where.push_back("NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.message_id = x.message_id "
                      "AND e.status IN ('pending', 'held') AND e.id < x.id)");
      break;
  }
  const std::string x = "x";
  if (q.since_ms > 0) where.push_back(x + ".received_at_ms >= " + number(q.since_ms));
  if (q.until_ms > 0) where.push_back(x + ".received_at_ms < " + number(q.until_ms));
  if (with_cursor && !q.cursor.empty()) {
    auto c = parse_cursor(q.cursor);
    if (!c)
      return Failure::permanent(Errc::malformed, Issue{Severity::error, "value",
                                                       "cursor is not one this broker gave out", "cursor", ""});
    // Bound one at a time: the operands of one expression are evaluated in no set order.
    const auto at = number(c->first);
    const auto seq = number(c->second);
    where.push_back("(" + x + ".received_at_ms, " + x + ".seq) < (" + at + ", " + seq + ")");
    // The same bound on its own: the search_keys table (search_blocks.hpp) seeks by it.
    where.push_back(x + ".received_at_ms <= " + number(c->first));
  }
  // The "<> ''" terms repeat the partial indexes' own conditions: SQLite uses a partial index only
  // when the query implies its WHERE, and it cannot see that a bound value is not ''.
  if (!q.nhs_number.empty()) where.push_back("m.nhs_number = " + text(q.nhs_number) + " AND m.nhs_number <> ''");
  if (!q.event.empty()) where.push_back("m.event = " + text(q.event) + " AND m.event <> ''");
  if (!q.source.empty()) where.push_back("m.source = " + text(q.source));
  if (!q.resource_type.empty()) where.push_back("m.resource_type = " + text(q.resource_type));
  if (!q.route.empty() && driver != Driver::route)
    where.push_back("EXISTS (SELECT 1 FROM search_keys r WHERE r.facet = " +
                    std::to_string(static_cast<int>(Facet::route)) + " AND r.value = " + text(q.route) +
                    " AND r.received_at_ms = m.received_at_ms AND r.seq = m.seq)");
  if (!q.destination.empty() && driver != Driver::destination)
    where.push_back("EXISTS (SELECT 1 FROM deliveries t WHERE t.message_id = m.id AND t.destination = " +
                    text(q.destination) + ")");
  if (q.state) {
    switch (*q.state) {
      case MessageState::accepted: where.push_back("0"); break;  // never stored in this state
      case MessageState::unroutable: where.push_back("m.destinations = 0"); break;  // as the partial index says
      case MessageState::delivering:
        if (driver != Driver::waiting)
          where.push_back("EXISTS (SELECT 1 FROM deliveries w WHERE w.message_id = m.id AND w.status IN ('pending', 'held'))");
        break;
      case MessageState::failed:
        if (driver != Driver::failed)
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

// The driver for a listing, chosen from the data. Each filter that has an index of its own is
// probed: its newest search_probe_rows rows in the searched time range (before the cursor). The
// search walks the sparsest: a filter with fewer rows than that in the range (the fewest wins),
// else the one whose newest rows reach furthest back in time (fewest rows per hour where the
// listing starts). A probe reads at most search_probe_rows index entries (well under a
// millisecond). So a rare filter drives even when it is not the one fixed_driver() would pick
// (a rare source with state=failed: its 500 messages, not every dead delivery), and few waiting
// deliveries drive rather than every delivery to one destination. Ties keep the fixed order.
constexpr int search_probe_rows = 1000;
using StatementCache = std::map<std::string, std::unique_ptr<sqlite::Statement>>;

Driver choose_driver(sqlite::Connection& db, StatementCache& cache, const MessageQuery& q) {
  struct Candidate {
    Driver driver;
    const char* from_where;  // ?1 the value (if any); the received-time range is appended
    const std::string* value;
  };
  std::vector<Candidate> candidates;
  // The facet numbers are those of store_detail::Facet.
  if (!q.nhs_number.empty())
    candidates.push_back({Driver::by_nhs_number, "search_keys WHERE facet = 4 AND value = ?1", &q.nhs_number});
  if (!q.event.empty()) candidates.push_back({Driver::by_event, "search_keys WHERE facet = 3 AND value = ?1", &q.event});
  if (!q.route.empty()) candidates.push_back({Driver::route, "search_keys WHERE facet = 5 AND value = ?1", &q.route});
  if (!q.destination.empty())
    candidates.push_back({Driver::destination, "search_keys WHERE facet = 6 AND value = ?1", &q.destination});
  if (q.state == MessageState::failed) candidates.push_back({Driver::failed, failed_probe, nullptr});
  if (q.state == MessageState::delivering) candidates.push_back({Driver::waiting, waiting_probe, nullptr});
  if (q.state == MessageState::unroutable)
    candidates.push_back({Driver::unroutable, "search_keys WHERE facet = 7 AND value = ''", nullptr});
  if (!q.source.empty())
    candidates.push_back({Driver::by_source, "search_keys WHERE facet = 1 AND value = ?1", &q.source});
  if (!q.resource_type.empty())
    candidates.push_back({Driver::by_resource_type, "search_keys WHERE facet = 2 AND value = ?1", &q.resource_type});
  if (candidates.empty()) return Driver::messages;
  if (candidates.size() == 1) return candidates.front().driver;

  // Only rows before the cursor remain to be listed.
  std::int64_t until = q.until_ms > 0 ? q.until_ms : std::numeric_limits<std::int64_t>::max();
  if (auto c = parse_cursor(q.cursor)) until = std::min(until, c->first + 1);
  Driver best = fixed_driver(q);
  bool best_capped = true;
  std::int64_t best_rows = std::numeric_limits<std::int64_t>::max();
  std::int64_t best_reach = std::numeric_limits<std::int64_t>::max();  // oldest of the newest rows
  for (const auto& c : candidates) {
    const std::string sql = std::string("SELECT count(*), min(received_at_ms) FROM (SELECT received_at_ms FROM ") +
                            c.from_where + " AND received_at_ms >= ?2 AND received_at_ms < ?3 "
                            "ORDER BY received_at_ms DESC LIMIT " + std::to_string(search_probe_rows) + ")";
    auto& slot = cache[sql];
    try {
      if (!slot) slot = std::make_unique<sqlite::Statement>(db, sql);
    } catch (const std::exception&) {
      return fixed_driver(q);
    }
    auto& st = *slot;
    st.start();
    if (c.value) st.bind(1, std::string_view(*c.value));
    st.bind(2, q.since_ms).bind(3, until);
    std::int64_t rows = search_probe_rows, reach = 0;
    if (st.step()) {
      rows = st.int64(0);
      reach = st.int64(1);
    }
    st.reset();
    if (db.failed()) {
      db.clear_error();  // the listing itself reports a store that cannot read
      return fixed_driver(q);
    }
    const bool capped = rows >= search_probe_rows;
    const bool sparser = capped ? best_capped && reach < best_reach : best_capped || rows < best_rows;
    if (sparser) {
      best = c.driver;
      best_capped = capped;
      best_rows = rows;
      best_reach = reach;
    }
  }
  return best;
}

void bind_search(sqlite::Statement& st, const SearchSql& s, int first = 1) {
  int at = first;
  for (const auto& b : s.binds) {
    if (b.is_text) st.bind(at++, std::string_view(s.texts[b.text]));
    else st.bind(at++, b.number);
  }
}

Result<std::vector<MessageSummary>> SqliteStore::read_list(const MessageQuery& query) {
  auto& db = *reader_db_;
  auto search = search_sql_for(query, true, choose_driver(db, read_->lists, query));
  if (!search) return search.error();
  const std::string sql = "SELECT m.id, m.source, m.resource_type, " TELLONCE_STATE_SQL
                          ", m.received_at_ms, m.channel, m.event, m.seq " + search->from_where +
                          " ORDER BY x.received_at_ms DESC, x.seq DESC LIMIT ?";
  auto& slot = read_->lists[sql];
  if (!slot) {
    try {
      slot = std::make_unique<sqlite::Statement>(db, sql);
    } catch (const std::exception& e) {
      return unavailable(std::string("message store could not search: ") + e.what());
    }
  }
  auto& st = *slot;
  st.start();
  bind_search(st, *search);
  st.bind(static_cast<int>(search->binds.size()) + 1, std::int64_t{query.limit > 0 ? query.limit : 100});
  std::vector<MessageSummary> out;
  while (st.step()) {
    MessageSummary m{st.text(0), st.text(1), st.text(2), message_state_from(st.text(3)), st.int64(4), st.text(5),
                     st.text(6), ""};
    m.cursor = make_cursor(m.received_at_ms, st.int64(7));
    out.push_back(std::move(m));
  }
  st.reset();
  if (db.failed()) {
    auto failure = unavailable("message store could not list messages: " + db.error_message());
    db.clear_error();
    return failure;
  }
  return out;
}

// The dead and expired deliveries of the messages a search matches (to its destination only,
// when it names one), oldest first.
std::string replayable_sql(const SearchSql& search, const MessageQuery& q, bool count_only) {
  std::string sql = count_only ? "SELECT count(*)" : "SELECT dd.id, dd.message_id, dd.destination, dd.seq";
  sql += " FROM deliveries dd INDEXED BY deliveries_unsettled WHERE " TELLONCE_UNSETTLED("dd.")
         "1 AND dd.seq IN (SELECT m.seq " + search.from_where + ")";
  if (!q.destination.empty()) sql += " AND dd.destination = ?";
  if (!count_only) sql += " ORDER BY dd.seq, dd.id LIMIT " + std::to_string(Store::max_replay_batch);
  return sql;
}

Result<ReplayMatch> SqliteStore::read_replayable_count(const MessageQuery& query) {
  auto& db = *reader_db_;
  auto search = search_sql_for(query, false, fixed_driver(query));
  if (!search) return search.error();
  ReplayMatch out;
  try {
    sqlite::Statement st(db, replayable_sql(*search, query, true));
    st.start();
    bind_search(st, *search);
    if (!query.destination.empty()) st.bind(static_cast<int>(search->binds.size()) + 1, query.destination);
    if (st.step()) out.matched = static_cast<std::size_t>(st.int64(0));
    st.reset();
  } catch (const std::exception& e) {
    return unavailable(std::string("message store could not count replayable deliveries: ") + e.what());
  }
  if (db.failed()) {
    auto failure = unavailable("message store could not count replayable deliveries: " + db.error_message());
    db.clear_error();
    return failure;
  }
  return out;
}

// Writer thread: puts the matching dead deliveries back to pending, one "replayed" event per
// message naming its destinations and who asked.
Result<ReplayMatch> SqliteStore::apply_replay_matching(const MessageQuery& query, const std::string& actor) {
  auto search = search_sql_for(query, false, fixed_driver(query));
  if (!search) return search.error();
  struct Found { std::int64_t id; std::string message_id, destination; std::int64_t seq; };
  std::vector<Found> found;
  {
    sqlite::Statement st(writer_db_, replayable_sql(*search, query, false));
    st.start();
    bind_search(st, *search);
    if (!query.destination.empty()) st.bind(static_cast<int>(search->binds.size()) + 1, query.destination);
    while (st.step()) found.push_back(Found{st.int64(0), st.text(1), st.text(2), st.int64(3)});
    st.reset();
  }
  ReplayMatch out;
  if (writer_db_.failed()) return out;  // the batch fails as a whole
  out.matched = found.size();
  std::map<std::string, std::vector<std::string>> destinations_of;  // per message, for its event
  for (const auto& f : found) {
    auto& message = write_->message_for_replay;
    message.start().bind(1, f.message_id);
    if (!message.step()) {
      message.reset();
      continue;
    }
    DeliveryJob job;
    job.message_id = f.message_id;
    job.patient_key = message.text(0);
    job.resource_type = message.text(1);
    job.content_type = message.text(2);
    job.body = message.text(3);
    message.reset();
    job.delivery_id = f.id;
    job.destination = f.destination;
    job.seq = f.seq;
    write_->revive_one.start().bind(1, f.id).run();
    destinations_of[f.message_id].push_back(f.destination);
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

Result<void> SqliteStore::apply_set_paused(const std::string& destination, bool paused, const std::string& actor) {
  const auto now = now_ms();
  write_->set_control.start().bind(1, destination).bind(2, std::int64_t{paused ? 1 : 0}).bind(3, now).bind(4, actor).run();
  write_->insert_destination_event.start()
      .bind(1, destination).bind(2, now).bind(3, std::string_view(paused ? "paused" : "resumed")).bind(4, actor)
      .run();
  return {};
}

// A view is rare (an operator's click): its statement is prepared per call.
Result<void> SqliteStore::apply_record_view(const std::string& message_id, const std::string& what,
                                            const std::string& actor, const std::string& reason) {
  sqlite::Statement exists(writer_db_, "SELECT 1 FROM messages WHERE id = ?1");
  exists.start().bind(1, message_id);
  const bool found = exists.step();
  exists.reset();
  if (writer_db_.failed()) return {};  // the batch fails as a whole
  if (!found) return not_found(message_id);
  LifecycleEvent viewed;
  viewed.kind = EventKind::viewed;
  viewed.at_ms = now_ms();
  viewed.detail = what;
  std::string data = "{\"actor\":";
  append_json_string(data, actor);
  data += ",\"reason\":";
  append_json_string(data, reason);
  data += '}';
  add_event(message_id, viewed, data);
  return {};
}

Result<std::vector<DestinationControl>> SqliteStore::read_controls() {
  auto& db = *reader_db_;
  std::vector<DestinationControl> out;
  sqlite::Statement st(db, "SELECT destination, paused, changed_at_ms, actor FROM destination_controls ORDER BY destination");
  st.start();
  while (st.step()) out.push_back(DestinationControl{st.text(0), st.int64(1) != 0, st.int64(2), st.text(3)});
  st.reset();
  if (db.failed()) {
    auto failure = unavailable("message store could not read destination controls: " + db.error_message());
    db.clear_error();
    return failure;
  }
  return out;
}

Result<std::vector<DestinationAction>> SqliteStore::read_destination_trail(const std::string& destination, int limit) {
  auto& db = *reader_db_;
  std::vector<DestinationAction> out;
  sqlite::Statement st(db, "SELECT at_ms, destination, action, actor FROM destination_events "
                           "WHERE destination = ?1 ORDER BY id DESC LIMIT ?2");
  st.start().bind(1, destination).bind(2, std::int64_t{limit > 0 ? limit : 20});
  while (st.step()) out.push_back(DestinationAction{st.int64(0), st.text(1), st.text(2), st.text(3)});
  st.reset();
  if (db.failed()) {
    auto failure = unavailable("message store could not read the trail of " + destination + ": " + db.error_message());
    db.clear_error();
    return failure;
  }
  return out;
}

Result<std::vector<HeldRecord>> SqliteStore::read_mailbox(const std::string& partner, int limit) {
  auto& db = *reader_db_;
  auto& st = read_->mailbox;
  st.start().bind(1, partner).bind(2, std::int64_t{limit > 0 ? limit : 1});
  std::vector<HeldRecord> out;
  while (st.step())
    out.push_back(HeldRecord{st.text(0), st.text(1), st.text(2), st.text(3), st.int64(4), st.int64(5), {}});
  st.reset();
  if (db.failed()) {
    auto failure = unavailable("message store could not list the mailbox of " + partner + ": " + db.error_message());
    db.clear_error();
    return failure;
  }
  return out;
}

Result<HeldRecord> SqliteStore::read_held(const std::string& partner, const std::string& message_id) {
  auto& db = *reader_db_;
  auto& st = read_->held;
  st.start().bind(1, message_id).bind(2, partner);
  std::optional<HeldRecord> record;
  if (st.step())
    record = HeldRecord{st.text(0), st.text(1), st.text(2), st.text(3), st.int64(4), st.int64(5), st.text(6)};
  st.reset();
  if (db.failed()) {
    auto failure = unavailable("message store could not read " + message_id + " from the mailbox of " + partner +
                               ": " + db.error_message());
    db.clear_error();
    return failure;
  }
  if (!record) return not_held(partner, message_id);
  return std::move(*record);
}

Result<std::vector<DestinationBacklog>> SqliteStore::read_backlog() {
  auto& db = *reader_db_;
  auto& st = read_->backlog;
  st.start();
  std::vector<DestinationBacklog> out;
  while (st.step())
    out.push_back(DestinationBacklog{st.text(0), static_cast<std::uint64_t>(st.int64(1)), st.int64(2)});
  st.reset();
  if (db.failed()) {
    auto failure = unavailable("message store could not count the backlog: " + db.error_message());
    db.clear_error();
    return failure;
  }
  return out;
}

// The audit's start-up catch-up (broker/audit): receipts by the search keys, and those not yet
// flushed there by seq; settled deliveries by a scan of deliveries (start-up only, bounded by
// the table's size).
Result<std::vector<StoredFact>> SqliteStore::facts_since(std::int64_t since_ms) {
  sqlite::Connection db(settings_.path, true);  // start-up only: its own short-lived connection
  store_detail::attach_search_file(db, settings_.path, false);
  sqlite::Statement st(db,
                       "SELECT k.received_at_ms, m.id, m.source, m.channel, m.resource_type, '', '', 0, '' "
                       "FROM search_keys k CROSS JOIN messages m ON m.seq = k.seq "
                       "WHERE k.facet = 0 AND k.value = '' AND k.received_at_ms >= ?1 "
                       "UNION ALL "
                       "SELECT received_at_ms, id, source, channel, resource_type, '', '', 0, '' FROM messages "
                       "WHERE seq > coalesce((SELECT value FROM search.search_meta WHERE key = 'indexed_upto'), 0) "
                       "AND received_at_ms >= ?1 "
                       "UNION ALL "
                       "SELECT d.settled_at_ms, m.id, m.source, m.channel, m.resource_type, d.destination, d.status, "
                       "d.attempts, d.partner_code FROM deliveries d JOIN messages m ON m.seq = d.seq "
                       "WHERE d.status <> 'pending' AND d.settled_at_ms >= ?1 ORDER BY 1");
  std::vector<StoredFact> facts;
  st.start().bind(1, since_ms);
  while (st.step()) {
    StoredFact f;
    f.at_ms = st.int64(0);
    f.message_id = st.text(1);
    f.source = st.text(2);
    f.channel = st.text(3);
    f.resource_type = st.text(4);
    f.destination = st.text(5);
    if (!f.destination.empty()) f.status = delivery_status_from(st.text(6));
    f.attempts = static_cast<int>(st.int64(7));
    f.partner_code = st.text(8);
    facts.push_back(std::move(f));
  }
  st.reset();
  if (db.failed()) return unavailable("message store could not list facts for the audit log: " + db.error_message());
  return facts;
}

Result<std::vector<DeliveryJob>> SqliteStore::load_pending(std::size_t max_body_bytes) {
  sqlite::Connection db(settings_.path, true);  // start-up only: its own short-lived connection
  sqlite::Statement st(db,
                       "SELECT d.id, d.message_id, d.destination, d.attempts, d.seq, d.next_attempt_ms, "
                       "m.patient_key, m.resource_type, m.content_type, length(b.body), b.body "
                       "FROM deliveries d JOIN messages m ON m.id = d.message_id JOIN bodies b ON b.seq = m.seq "
                       "WHERE " TELLONCE_UNSETTLED("d.") "0 AND d.status = 'pending' ORDER BY d.seq, d.id");
  std::vector<DeliveryJob> jobs;
  std::size_t body_bytes = 0;
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
    // A body left unread here is never loaded: SQLite reads a column only when asked for it.
    const auto size = static_cast<std::size_t>(st.int64(9));
    if (size <= max_body_bytes - body_bytes) {  // past the budget the body stays empty (not carried)
      job.body = st.text(10);
      body_bytes += size;
    }
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
