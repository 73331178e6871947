#include "store_contract.hpp"

#include "engines/sqlite_store/sqlite_store.hpp"
#include "support/temp_dir.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <sqlite3.h>
#include <fstream>
#include <set>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace tellonce::test {
namespace {

MessageQuery all_messages() {
  MessageQuery q;
  q.limit = 1000;
  return q;
}

// A store in a temporary folder of its own, removed with the fixture.
class SqliteFixture final : public StoreFixture {
 public:
  std::unique_ptr<Store> open() override {
    SqliteStoreSettings settings;
    settings.path = dir_ / "tellonce.db";
    return make_sqlite_store(settings);
  }

 private:
  TempDir dir_{"tellonce-store"};
};

INSTANTIATE_TEST_SUITE_P(Sqlite, StoreContract,
                         ::testing::Values(StoreKind{"sqlite", [] { return std::make_unique<SqliteFixture>(); }}),
                         [](const auto& info) { return info.param.name; });

std::int64_t pragma_value(const std::filesystem::path& db_path, const char* sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql, -1, &st, nullptr), SQLITE_OK);
  std::int64_t value = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
  sqlite3_finalize(st);
  sqlite3_close(db);
  return value;
}

class SqliteStoreTest : public ::testing::Test {
 protected:
  TempDir temp_{"tellonce-sqlite"};
  std::filesystem::path dir_ = temp_.path();
};

TEST_F(SqliteStoreTest, CreatesVersionedSchemaInWalMode) {
  auto db = dir_ / "t.db";
  make_sqlite_store(SqliteStoreSettings{db})->close();
  EXPECT_EQ(pragma_value(db, "PRAGMA user_version"), 9);
  sqlite3* handle = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &handle), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(handle, "PRAGMA journal_mode", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "wal");
  sqlite3_finalize(st);
  sqlite3_close(handle);
}

TEST_F(SqliteStoreTest, RefusesNewerSchemaVersion) {
  auto db = dir_ / "t.db";
  make_sqlite_store(SqliteStoreSettings{db})->close();
  sqlite3* handle = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &handle), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(handle, "PRAGMA user_version = 99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(handle);
  EXPECT_THROW(make_sqlite_store(SqliteStoreSettings{db}), std::runtime_error);
}

// A store written by schema 1 (body and state inside messages, every step an event) opens
// under schema 2 with nothing lost: bodies, pending deliveries, trail and state carry over.
TEST_F(SqliteStoreTest, UpgradesSchemaOneWithoutLosingAnything) {
  auto db = dir_ / "t.db";
  sqlite3* handle = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &handle), SQLITE_OK);
  const char* v1 = R"sql(
PRAGMA journal_mode = WAL;
CREATE TABLE messages (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, source TEXT NOT NULL,
  channel TEXT NOT NULL, idempotency_key TEXT NOT NULL, resource_type TEXT NOT NULL, event TEXT NOT NULL,
  patient_key TEXT NOT NULL, content_type TEXT NOT NULL, content_hash TEXT NOT NULL,
  received_at_ms INTEGER NOT NULL, state TEXT NOT NULL, body BLOB NOT NULL, warnings TEXT NOT NULL);
CREATE UNIQUE INDEX messages_by_idempotency_key ON messages(source, idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX messages_by_state ON messages(state, seq);
CREATE TABLE deliveries (id INTEGER PRIMARY KEY, message_id TEXT NOT NULL REFERENCES messages(id),
  destination TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
  attempts INTEGER NOT NULL, next_attempt_ms INTEGER NOT NULL, last_error TEXT NOT NULL, seq INTEGER NOT NULL,
  UNIQUE (message_id, destination));
CREATE INDEX deliveries_by_status ON deliveries(status, seq);
CREATE TABLE events (id INTEGER PRIMARY KEY, message_id TEXT NOT NULL REFERENCES messages(id),
  at_ms INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX events_by_message ON events(message_id, id);
INSERT INTO messages VALUES (1, 'M1', 'trust', 'fhir-http', 'key:a', 'Patient', '', '9449306753',
  'application/fhir+json', 'abc', 1000, 'delivering', '{"resourceType":"Patient"}', '["w1"]');
INSERT INTO deliveries VALUES (1, 'M1', 'gp', 'delivered', 1, 0, '', 1);
INSERT INTO deliveries VALUES (2, 'M1', 'vcse', 'pending', 2, 5000, 'http 503', 1);
INSERT INTO events (message_id, at_ms, kind, detail) VALUES
  ('M1', 1000, 'received', 'source=trust'), ('M1', 1001, 'validated', '1 warning(s): w1'),
  ('M1', 1001, 'routed', 'routes=r1,r2 destinations=gp,vcse'),
  ('M1', 1100, 'attempt', 'destination=gp attempt=1 http 201 (ok)'), ('M1', 1100, 'delivered', 'destination=gp'),
  ('M1', 1200, 'attempt', 'destination=vcse attempt=2 http 503 (retryable, will retry at 5000)');
PRAGMA user_version = 1;
)sql";
  ASSERT_EQ(sqlite3_exec(handle, v1, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(handle);
  sqlite3_close(handle);

  auto store = make_sqlite_store(SqliteStoreSettings{db});
  auto view = run(store->find("M1")).value();
  ASSERT_TRUE(view);
  EXPECT_EQ(view->state, MessageState::delivering);
  EXPECT_EQ(view->body_bytes, std::string(R"({"resourceType":"Patient"})").size());
  std::vector<std::string> trail;
  for (const auto& e : view->events) trail.push_back(std::string(to_string(e.kind)) + "@" + std::to_string(e.at_ms));
  EXPECT_EQ(trail, (std::vector<std::string>{"received@1000", "validated@1001", "routed@1001", "delivered@1100",
                                             "attempt@1200"}));
  EXPECT_EQ(view->events[1].warnings, (std::vector<std::string>{"w1"}));
  EXPECT_EQ(view->events[2].routes, (std::vector<std::string>{"r1", "r2"}));
  EXPECT_EQ(view->events[2].destinations, (std::vector<std::string>{"gp", "vcse"}));
  // What schema 1 kept as text stays text; nothing parses it into facts.
  EXPECT_EQ(view->events[3].destination, "gp");
  EXPECT_EQ(view->events[3].legacy_text, "delivered (recorded by schema 1)");
  EXPECT_EQ(view->events[4].legacy_text, "destination=vcse attempt=2 http 503 (retryable, will retry at 5000)");
  EXPECT_EQ(view->deliveries[1].legacy_last_error, "http 503");
  auto pending = store->load_pending().value();
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].destination, "vcse");
  EXPECT_EQ(pending[0].body, R"({"resourceType":"Patient"})");
  EXPECT_EQ(pending[0].attempts, 2);
  EXPECT_TRUE(run(store->commit(sample("key:a", {"gp"}, "trust"))).value().outcome.duplicate);
  // Found by search: the upgrade filled the search keys from the old rows.
  MessageQuery by_patient;
  by_patient.nhs_number = "9449306753";
  by_patient.destination = "vcse";
  auto found = run(store->list(by_patient)).value();
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].id, "M1");
  store->close();
  EXPECT_EQ(pragma_value(db, "PRAGMA user_version"), 9);
}

// Five records found by every filter, newest first; what the search-file tests below start from.
// `n` more of them, their ids put in front of `newest_first`.
void commit_searchable(Store& store, int n, std::vector<std::string>& newest_first) {
  for (int i = 0; i < n; ++i) {
    auto m = sample("", {"gp", "vcse"}, "trust");
    m.patient_key = "9449306753";
    m.event = "ADT^A01";
    m.route_ids = {"admissions"};
    newest_first.insert(newest_first.begin(), run(store.commit(m)).value().outcome.message_id);
  }
}

std::vector<std::string> commit_five_searchable(Store& store) {
  std::vector<std::string> newest_first;
  commit_searchable(store, 5, newest_first);
  return newest_first;
}

// The same five, in a store at `db` that is closed again.
std::vector<std::string> store_five_searchable(const std::filesystem::path& db) {
  auto store = make_sqlite_store(SqliteStoreSettings{db});
  auto newest_first = commit_five_searchable(*store);
  store->close();
  return newest_first;
}

// Every filter of the five, newest first.
void expect_found_by_every_filter(Store& store, const std::vector<std::string>& newest_first) {
  auto ids = [&](MessageQuery q) {
    std::vector<std::string> out;
    for (const auto& m : run(store.list(std::move(q))).value()) out.push_back(m.id);
    return out;
  };
  MessageQuery q;
  EXPECT_EQ(ids(q), newest_first);
  q.nhs_number = "9449306753";
  EXPECT_EQ(ids(q), newest_first);
  q = {};
  q.route = "admissions";
  EXPECT_EQ(ids(q), newest_first);
  q = {};
  q.destination = "vcse";
  EXPECT_EQ(ids(q), newest_first);
  q = {};
  q.event = "ADT^A01";
  q.source = "trust";
  EXPECT_EQ(ids(q), newest_first);
}

void exec_on(const std::filesystem::path& file, const char* sql) {
  sqlite3* handle = nullptr;
  ASSERT_EQ(sqlite3_open(file.c_str(), &handle), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(handle, sql, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(handle);
  sqlite3_close(handle);
}

// The search thread keeps a commit's search keys in memory and writes them later
// (search_keys.hpp). A crash loses those: at start-up they are rebuilt from the rows, and every
// filter finds the records again.
TEST_F(SqliteStoreTest, SearchKeysLostInACrashAreRebuiltAtStartUp) {
  auto db = dir_ / "t.db";
  auto search = dir_ / "t.db-search";
  auto kept = dir_ / "kept-search";
  std::vector<std::string> newest_first;
  {
    auto store = make_sqlite_store(SqliteStoreSettings{db});
    commit_searchable(*store, 2, newest_first);
    store->close();
  }
  // The keys live beside the store, not in it: the two records' postings, a block per
  // (facet, value) (search_blocks.hpp).
  EXPECT_EQ(pragma_value(db, "SELECT count(*) FROM sqlite_master WHERE name LIKE 'search%'"), 0);
  EXPECT_EQ(pragma_value(search, "SELECT count(*) FROM search_blocks WHERE facet = 0"), 1);
  EXPECT_EQ(pragma_value(search, "PRAGMA page_size"), 4096);
  std::filesystem::copy_file(search, kept);
  {
    auto store = make_sqlite_store(SqliteStoreSettings{db});
    commit_searchable(*store, 3, newest_first);
    store->close();
  }
  // What a crash leaves: the last three records' keys were still in memory, so the file is as
  // it was after the first two.
  std::filesystem::copy_file(kept, search, std::filesystem::copy_options::overwrite_existing);
  EXPECT_EQ(pragma_value(search, "SELECT value FROM search_meta WHERE key = 'indexed_upto'"), 2);

  auto store = make_sqlite_store(SqliteStoreSettings{db});
  expect_found_by_every_filter(*store, newest_first);
}

// The search file is derived data: deleted, or replaced by another store's, it is rebuilt
// whole from the store at start-up, and nothing the other store indexed is found.
TEST_F(SqliteStoreTest, AMissingOrForeignSearchFileIsRebuiltAtStartUp) {
  auto db = dir_ / "t.db";
  auto other = dir_ / "other.db";
  const auto newest_first = store_five_searchable(db);
  {
    auto stranger = make_sqlite_store(SqliteStoreSettings{other});
    for (int i = 0; i < 7; ++i) run(stranger->commit(sample("", {"gp"}, "trust")));
    stranger->close();
  }
  for (const char* suffix : {"-search", "-search-wal", "-search-shm"})
    std::filesystem::remove(dir_ / (std::string("t.db") + suffix));
  {
    auto store = make_sqlite_store(SqliteStoreSettings{db});
    expect_found_by_every_filter(*store, newest_first);
    store->close();
  }
  std::filesystem::copy_file(dir_ / "other.db-search", dir_ / "t.db-search",
                             std::filesystem::copy_options::overwrite_existing);
  auto store = make_sqlite_store(SqliteStoreSettings{db});
  expect_found_by_every_filter(*store, newest_first);
}

// A search file that is not a database (damaged, or overwritten) does not keep the broker down:
// it is deleted and built again from the store.
TEST_F(SqliteStoreTest, AnUnreadableSearchFileIsBuiltAgainAtStartUp) {
  auto db = dir_ / "t.db";
  const auto newest_first = store_five_searchable(db);
  {
    std::ofstream garbage(dir_ / "t.db-search", std::ios::binary | std::ios::trunc);
    garbage << std::string(8192, 'x');
  }
  auto store = make_sqlite_store(SqliteStoreSettings{db});
  expect_found_by_every_filter(*store, newest_first);
  EXPECT_EQ(pragma_value(dir_ / "t.db-search", "PRAGMA page_size"), 4096);
}

// A store put back to an earlier state (here: its last three records gone) numbers its next
// records as the lost ones were numbered: the keys of those seqs must not find the new ones
// under the old records' facts.
TEST_F(SqliteStoreTest, KeysPastTheStoresLastRecordAreDroppedAtStartUp) {
  auto db = dir_ / "t.db";
  const auto newest_first = store_five_searchable(db);
  exec_on(db, "DELETE FROM events WHERE message_id IN (SELECT id FROM messages WHERE seq > 2);"
              "DELETE FROM deliveries WHERE seq > 2; DELETE FROM bodies WHERE seq > 2;"
              "DELETE FROM messages WHERE seq > 2;");
  auto store = make_sqlite_store(SqliteStoreSettings{db});
  auto later = sample("", {"gp"}, "gp-practice");
  later.patient_key = "local:another-patient";  // found by the old seq 3's NHS number if its keys stayed
  const auto id = run(store->commit(later)).value().outcome.message_id;
  MessageQuery by_patient;
  by_patient.nhs_number = "9449306753";
  std::vector<std::string> found;
  for (const auto& m : run(store->list(by_patient)).value()) found.push_back(m.id);
  EXPECT_EQ(found, (std::vector<std::string>{newest_first[3], newest_first[4]}));
  MessageQuery everything;
  ASSERT_FALSE(run(store->list(everything)).value().empty());
  EXPECT_EQ(run(store->list(everything)).value().front().id, id);
  EXPECT_EQ(run(store->list(everything)).value().size(), 3u);
}

// A store written by schema 3 (the trail kept as rendered text: events.detail, deliveries'
// last_error and outcome) opens under schema 4: its old words read back as legacy text, and
// the next attempt on one of its deliveries is kept as facts.
TEST_F(SqliteStoreTest, UpgradesSchemaThreeKeepingItsTrailText) {
  auto db = dir_ / "t.db";
  sqlite3* handle = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &handle), SQLITE_OK);
  const char* v3 = R"sql(
PRAGMA page_size = 32768;
PRAGMA journal_mode = WAL;
CREATE TABLE messages (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, source TEXT NOT NULL,
  channel TEXT NOT NULL, idempotency_key TEXT NOT NULL, resource_type TEXT NOT NULL, event TEXT NOT NULL,
  patient_key TEXT NOT NULL, content_type TEXT NOT NULL, content_hash TEXT NOT NULL,
  received_at_ms INTEGER NOT NULL, accepted_at_ms INTEGER NOT NULL, body_bytes INTEGER NOT NULL,
  routes TEXT NOT NULL, destinations INTEGER NOT NULL, warnings TEXT NOT NULL);
CREATE UNIQUE INDEX messages_by_idempotency_key ON messages(source, idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX messages_unroutable ON messages(seq) WHERE destinations = 0;
CREATE TABLE bodies (seq INTEGER PRIMARY KEY REFERENCES messages(seq), body BLOB NOT NULL);
CREATE TABLE deliveries (id INTEGER PRIMARY KEY, message_id TEXT NOT NULL REFERENCES messages(id),
  destination TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
  attempts INTEGER NOT NULL, next_attempt_ms INTEGER NOT NULL, last_error TEXT NOT NULL, seq INTEGER NOT NULL,
  settled_at_ms INTEGER NOT NULL DEFAULT 0, outcome TEXT NOT NULL DEFAULT '', UNIQUE (message_id, destination));
CREATE INDEX deliveries_open ON deliveries(status, seq) WHERE status <> 'delivered';
CREATE TABLE events (id INTEGER PRIMARY KEY, message_id TEXT NOT NULL REFERENCES messages(id),
  at_ms INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX events_by_message ON events(message_id, id);
CREATE TABLE store_meta (key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID;
INSERT INTO store_meta (key, value) VALUES ('store_id', '01STORETHREE0000000000000');
INSERT INTO messages VALUES (1, 'M3', 'trust', 'fhir-http', 'key:b', 'Patient', '', '9449306753',
  'application/fhir+json', 'abc', 1000, 1001, 26, 'r1', 3, '[]');
INSERT INTO bodies VALUES (1, '{"resourceType":"Patient"}');
INSERT INTO deliveries VALUES (1, 'M3', 'gp', 'delivered', 1, 0, '', 1, 1100, 'HTTP 201: created');
INSERT INTO deliveries VALUES (2, 'M3', 'vcse', 'pending', 1, 5000, 'HTTP 503: busy', 1, 0, '');
INSERT INTO deliveries VALUES (3, 'M3', 'care', 'dead', 2, 0, 'no response: timeout', 1, 1300, 'no response: timeout');
INSERT INTO events (message_id, at_ms, kind, detail) VALUES
  ('M3', 1200, 'attempt', 'destination=vcse attempt=1 HTTP 503: busy (retryable, will retry at 5000)'),
  ('M3', 1300, 'dead', 'destination=care attempt=2 no response: timeout (gave up after 2 attempt(s))');
PRAGMA user_version = 3;
)sql";
  ASSERT_EQ(sqlite3_exec(handle, v3, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(handle);
  sqlite3_close(handle);

  auto store = make_sqlite_store(SqliteStoreSettings{db});
  auto view = run(store->find("M3")).value();
  ASSERT_TRUE(view);
  EXPECT_EQ(view->state, MessageState::delivering);
  std::vector<std::string> trail;
  for (const auto& e : view->events) trail.push_back(std::string(to_string(e.kind)) + "@" + std::to_string(e.at_ms));
  EXPECT_EQ(trail, (std::vector<std::string>{"received@1000", "validated@1001", "routed@1001", "delivered@1100",
                                             "attempt@1200", "dead@1300"}));
  EXPECT_EQ(view->events[3].destination, "gp");
  EXPECT_EQ(view->events[3].attempt, 1);
  EXPECT_EQ(view->events[3].legacy_text, "HTTP 201: created");
  EXPECT_EQ(view->events[4].legacy_text, "destination=vcse attempt=1 HTTP 503: busy (retryable, will retry at 5000)");
  EXPECT_EQ(view->events[5].legacy_text, "destination=care attempt=2 no response: timeout (gave up after 2 attempt(s))");
  EXPECT_EQ(view->deliveries[1].legacy_last_error, "HTTP 503: busy");
  EXPECT_FALSE(view->deliveries[1].last_outcome.has_value());

  // The next attempt on the old pending delivery replaces its old words with facts.
  DeliveryAttempt next;
  next.delivery_id = 2;
  next.message_id = "M3";
  next.destination = "vcse";
  next.attempt = 2;
  next.at_ms = 1400;
  next.outcome = DeliveryOutcome::ok;
  next.partner_code = "HTTP 201";
  ASSERT_TRUE(run(store->record_attempt(next)));
  view = run(store->find("M3")).value();
  ASSERT_TRUE(view);
  EXPECT_TRUE(view->deliveries[1].legacy_last_error.empty());
  EXPECT_EQ(view->deliveries[1].last_outcome, DeliveryOutcome::ok);
  const auto& delivered = view->events.back();
  EXPECT_EQ(delivered.kind, EventKind::delivered);
  EXPECT_EQ(delivered.destination, "vcse");
  EXPECT_EQ(delivered.partner_code, "HTTP 201");
  EXPECT_TRUE(delivered.legacy_text.empty());
  EXPECT_TRUE(run(store->commit(sample("key:b", {"gp"}, "trust"))).value().outcome.duplicate);
  store->close();
  EXPECT_EQ(pragma_value(db, "PRAGMA user_version"), 9);
  EXPECT_EQ(pragma_value(db, "SELECT count(*) FROM pragma_foreign_key_check"), 0);
}

// An upgraded file has the same tables and columns as a new one.
TEST_F(SqliteStoreTest, UpgradedSchemaMatchesAFreshOne) {
  auto fresh = dir_ / "fresh.db";
  make_sqlite_store(SqliteStoreSettings{fresh})->close();
  auto columns = [](const std::filesystem::path& db) {
    sqlite3* handle = nullptr;
    EXPECT_EQ(sqlite3_open_v2(db.c_str(), &handle, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(handle,
                                 "SELECT m.name || '.' || p.name || ' ' || p.type || ' ' || p.\"notnull\" || ' ' || "
                                 "coalesce(p.dflt_value, '-') FROM sqlite_schema m, pragma_table_info(m.name) p "
                                 "WHERE m.type = 'table' AND m.name IN ('deliveries', 'events', 'originals') ORDER BY m.name, p.cid",
                                 -1, &st, nullptr),
              SQLITE_OK);
    std::vector<std::string> out;
    while (sqlite3_step(st) == SQLITE_ROW) out.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
    sqlite3_finalize(st);
    sqlite3_close(handle);
    return out;
  };
  auto want = columns(fresh);
  EXPECT_GT(want.size(), 10u);
  // The schema-3 file of the test above, rebuilt small: only what the upgrade touches.
  auto old = dir_ / "old.db";
  sqlite3* handle = nullptr;
  ASSERT_EQ(sqlite3_open(old.c_str(), &handle), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(handle, R"sql(
CREATE TABLE messages (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, source TEXT NOT NULL,
  channel TEXT NOT NULL, idempotency_key TEXT NOT NULL, resource_type TEXT NOT NULL, event TEXT NOT NULL,
  patient_key TEXT NOT NULL, content_type TEXT NOT NULL, content_hash TEXT NOT NULL,
  received_at_ms INTEGER NOT NULL, accepted_at_ms INTEGER NOT NULL, body_bytes INTEGER NOT NULL,
  routes TEXT NOT NULL, destinations INTEGER NOT NULL, warnings TEXT NOT NULL);
CREATE TABLE bodies (seq INTEGER PRIMARY KEY REFERENCES messages(seq), body BLOB NOT NULL);
CREATE TABLE deliveries (id INTEGER PRIMARY KEY, message_id TEXT NOT NULL REFERENCES messages(id),
  destination TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
  attempts INTEGER NOT NULL, next_attempt_ms INTEGER NOT NULL, last_error TEXT NOT NULL, seq INTEGER NOT NULL,
  settled_at_ms INTEGER NOT NULL DEFAULT 0, outcome TEXT NOT NULL DEFAULT '', UNIQUE (message_id, destination));
CREATE TABLE events (id INTEGER PRIMARY KEY, message_id TEXT NOT NULL REFERENCES messages(id),
  at_ms INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE store_meta (key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID;
INSERT INTO store_meta (key, value) VALUES ('store_id', '01STORETHREE0000000000001');
PRAGMA user_version = 3;
)sql", nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(handle);
  sqlite3_close(handle);
  make_sqlite_store(SqliteStoreSettings{old})->close();
  EXPECT_EQ(columns(old), want);
}

// A store written by schema 5 (deliveries could be pending, delivered or dead) opens under
// schema 6 with its deliveries intact, takes held and expired ones, and has the indexes of a new file.
TEST_F(SqliteStoreTest, UpgradesSchemaFiveForMailboxes) {
  auto db = dir_ / "t.db";
  sqlite3* handle = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &handle), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(handle, R"sql(
PRAGMA page_size = 32768;
PRAGMA journal_mode = WAL;
CREATE TABLE messages (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, source TEXT NOT NULL,
  channel TEXT NOT NULL, idempotency_key TEXT NOT NULL, resource_type TEXT NOT NULL, event TEXT NOT NULL,
  patient_key TEXT NOT NULL, content_type TEXT NOT NULL, content_hash TEXT NOT NULL,
  received_at_ms INTEGER NOT NULL, accepted_at_ms INTEGER NOT NULL, body_bytes INTEGER NOT NULL,
  routes TEXT NOT NULL, destinations INTEGER NOT NULL, warnings TEXT NOT NULL);
CREATE UNIQUE INDEX messages_by_idempotency_key ON messages(source, idempotency_key) WHERE idempotency_key <> '';
CREATE INDEX messages_unroutable ON messages(seq) WHERE destinations = 0;
CREATE TABLE bodies (seq INTEGER PRIMARY KEY REFERENCES messages(seq), body BLOB NOT NULL);
CREATE TABLE originals (seq INTEGER PRIMARY KEY REFERENCES messages(seq), content_type TEXT NOT NULL,
  bytes INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE deliveries (id INTEGER PRIMARY KEY, message_id TEXT NOT NULL REFERENCES messages(id),
  destination TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
  attempts INTEGER NOT NULL, next_attempt_ms INTEGER NOT NULL, legacy_last_error TEXT NOT NULL, seq INTEGER NOT NULL,
  settled_at_ms INTEGER NOT NULL DEFAULT 0, legacy_outcome TEXT NOT NULL DEFAULT '',
  last_outcome TEXT NOT NULL DEFAULT '', partner_code TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '',
  UNIQUE (message_id, destination));
CREATE INDEX deliveries_open ON deliveries(status, seq) WHERE status <> 'delivered';
CREATE TABLE events (id INTEGER PRIMARY KEY, message_id TEXT NOT NULL REFERENCES messages(id),
  at_ms INTEGER NOT NULL, kind TEXT NOT NULL, legacy_text TEXT NOT NULL,
  destination TEXT NOT NULL DEFAULT '', attempt INTEGER NOT NULL DEFAULT 0, outcome TEXT NOT NULL DEFAULT '',
  partner_code TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '', next_attempt_ms INTEGER NOT NULL DEFAULT 0,
  data TEXT NOT NULL DEFAULT '');
CREATE INDEX events_by_message ON events(message_id, id);
CREATE TABLE store_meta (key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID;
INSERT INTO store_meta (key, value) VALUES ('store_id', '01STOREFIVE00000000000000');
INSERT INTO messages VALUES (1, 'M5', 'trust', 'fhir-http', '', 'Patient', '', '9449306753',
  'application/fhir+json', 'abc', 1000, 1001, 26, 'r1', 3, '[]');
INSERT INTO bodies VALUES (1, '{"resourceType":"Patient"}');
INSERT INTO deliveries VALUES (1, 'M5', 'gp', 'delivered', 1, 0, '', 1, 1100, '', 'ok', 'HTTP 201', 'created');
INSERT INTO deliveries VALUES (2, 'M5', 'carers', 'pending', 0, 0, '', 1, 0, '', '', '', '');
INSERT INTO deliveries VALUES (3, 'M5', 'care', 'dead', 2, 0, '', 1, 1300, '', 'permanent', 'HTTP 400', 'bad');
INSERT INTO events (message_id, at_ms, kind, legacy_text, destination, attempt, outcome, partner_code, detail)
  VALUES ('M5', 1300, 'dead', '', 'care', 2, 'permanent', 'HTTP 400', 'bad');
PRAGMA user_version = 5;
)sql", nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(handle);
  sqlite3_close(handle);

  auto store = make_sqlite_store(SqliteStoreSettings{db});
  auto view = run(store->find("M5")).value();
  ASSERT_TRUE(view);
  ASSERT_EQ(view->deliveries.size(), 3u);
  EXPECT_EQ(view->deliveries[0].status, DeliveryStatus::delivered);
  EXPECT_EQ(view->deliveries[0].last_partner_code, "HTTP 201");
  EXPECT_EQ(view->deliveries[2].status, DeliveryStatus::dead);
  auto pending = store->load_pending().value();
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].destination, "carers");

  DeliveryAttempt held;
  held.delivery_id = 2;
  held.message_id = "M5";
  held.destination = "carers";
  held.attempt = 1;
  held.at_ms = 2000;
  held.outcome = DeliveryOutcome::held;
  held.partner_code = "mailbox";
  ASSERT_TRUE(run(store->record_attempt(held)));
  ASSERT_EQ(run(store->mailbox("carers", 10)).value().size(), 1u);
  EXPECT_EQ(run(store->expire_held("carers", 3000)).value(), (std::vector<std::string>{"M5"}));
  store->close();
  EXPECT_EQ(pragma_value(db, "PRAGMA user_version"), 9);
  EXPECT_EQ(pragma_value(db, "SELECT count(*) FROM pragma_foreign_key_check"), 0);
  EXPECT_EQ(pragma_value(db, "SELECT count(*) FROM deliveries WHERE status = 'expired'"), 1);

  // The deliveries indexes of a new file (the rebuilt table lost none).
  auto fresh = dir_ / "fresh.db";
  make_sqlite_store(SqliteStoreSettings{fresh})->close();
  auto indexes = [](const std::filesystem::path& file) {
    sqlite3* h = nullptr;
    EXPECT_EQ(sqlite3_open_v2(file.c_str(), &h, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(h, "SELECT name || ': ' || sql FROM sqlite_schema WHERE type = 'index' "
                                    "AND tbl_name = 'deliveries' AND sql IS NOT NULL ORDER BY name", -1, &st, nullptr), SQLITE_OK);
    std::vector<std::string> out;
    while (sqlite3_step(st) == SQLITE_ROW) out.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
    sqlite3_finalize(st);
    sqlite3_close(h);
    return out;
  };
  auto want = indexes(fresh);
  EXPECT_NE(std::find_if(want.begin(), want.end(), [](const auto& s) { return s.rfind("deliveries_held", 0) == 0; }),
            want.end());
  EXPECT_EQ(indexes(db), want);
}

// The writer runs without SQLite's foreign key enforcement (see configure_writer); this checks
// the references the writes leave behind instead.
TEST_F(SqliteStoreTest, WritesLeaveNoDanglingReferences) {
  auto db = dir_ / "t.db";
  auto store = make_sqlite_store(SqliteStoreSettings{db});
  std::vector<Committed> committed;
  for (int i = 0; i < 3; ++i) committed.push_back(run(store->commit(sample("k" + std::to_string(i)))).value());
  ASSERT_TRUE(run(store->commit(sample("k0"))).value().outcome.duplicate);
  int n = 0;
  for (const auto& c : committed)
    for (const auto& job : c.jobs) {
      DeliveryAttempt a;
      a.delivery_id = job.delivery_id;
      a.message_id = job.message_id;
      a.destination = job.destination;
      a.attempt = 1;
      a.outcome = n % 3 == 0 ? DeliveryOutcome::ok : n % 3 == 2 ? DeliveryOutcome::retryable : DeliveryOutcome::permanent;
      a.dead = n % 3 == 1;
      a.partner_code = a.ok() ? "HTTP 201" : "HTTP 503";
      a.next_attempt_ms = a.outcome == DeliveryOutcome::retryable ? now_ms() + 1000 : 0;
      ++n;
      ASSERT_TRUE(run(store->record_attempt(a)));
    }
  for (const auto& c : committed) ASSERT_TRUE(run(store->replay(c.outcome.message_id)));
  store->close();
  EXPECT_EQ(pragma_value(db, "SELECT count(*) FROM pragma_foreign_key_check"), 0);
  EXPECT_EQ(pragma_value(db, "SELECT count(*) FROM messages"), 3);
  EXPECT_EQ(pragma_value(db, "SELECT count(*) FROM bodies"), 3);
  EXPECT_EQ(pragma_value(db, "SELECT count(*) FROM deliveries"), 6);
}

TEST_F(SqliteStoreTest, UnwritablePathThrowsAtStartUp) {
  EXPECT_THROW(make_sqlite_store(SqliteStoreSettings{dir_ / "missing-dir" / "t.db"}), std::runtime_error);
}

// An acknowledged commit is on disk: the process dies right after (no close, no
// destructors) and a new process still finds the message and its pending deliveries.
TEST_F(SqliteStoreTest, AcknowledgedCommitSurvivesProcessDeath) {
  SqliteStoreSettings settings{dir_ / "t.db"};
  auto msg = sample("crash-1");
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto store = make_sqlite_store(settings);
    auto committed = run(store->commit(msg));
    _exit(committed && !committed->outcome.duplicate ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);

  auto store = make_sqlite_store(settings);
  auto view = run(store->find(msg.id)).value();
  ASSERT_TRUE(view.has_value());
  EXPECT_EQ(view->content_hash, msg.content_hash);
  EXPECT_EQ(store->load_pending().value().size(), 2u);
}

// Another process holding the write lock past busy_timeout: the commit fails as retryable
// with a clear reason, and the writer carries on once the lock is gone.
TEST_F(SqliteStoreTest, LockHeldElsewhereFailsCommitAsRetryableThenRecovers) {
  SqliteStoreSettings settings{dir_ / "t.db"};
  settings.busy_timeout = std::chrono::milliseconds(50);
  auto store = make_sqlite_store(settings);

  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(settings.path.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  auto blocked = run(store->commit(sample("k1")));
  ASSERT_FALSE(blocked);
  EXPECT_TRUE(blocked.error().is_retryable());
  EXPECT_EQ(blocked.error().code, Errc::unavailable);
  EXPECT_NE(blocked.error().summary().find("locked"), std::string::npos) << blocked.error().summary();
  ASSERT_EQ(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);

  auto later = run(store->commit(sample("k1")));
  ASSERT_TRUE(later) << later.error().summary();
  EXPECT_FALSE(later->outcome.duplicate);  // the failed attempt left nothing behind
  EXPECT_EQ(later->jobs.size(), 2u);
}

// A write SQLite rejects fails alone; the writes batched with it are stored.
TEST_F(SqliteStoreTest, RejectedWriteDoesNotSinkItsBatch) {
  SqliteStoreSettings settings{dir_ / "t.db"};
  auto store = make_sqlite_store(settings);
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(settings.path.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other,
                         "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.source = 'poison' "
                         "BEGIN SELECT RAISE(ABORT, 'poisoned record'); END",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(other);

  asio::io_context io;
  int stored = 0, rejected = 0;
  for (int i = 0; i < 40; ++i) {
    auto done = [&, poison = i == 20](std::exception_ptr e, Result<Committed> r) {
      if (e) return;
      if (r) ++stored;
      else if (poison && !r.error().is_retryable() &&
               r.error().summary().find("poisoned record") != std::string::npos) ++rejected;
    };
    asio::co_spawn(io, store->commit(sample("", {"trust-a"}, i == 20 ? "poison" : "hospital-1")), done);
  }
  io.run();
  EXPECT_EQ(stored, 39);
  EXPECT_EQ(rejected, 1);
  EXPECT_EQ(run(store->list(all_messages())).value().size(), 39u);
  auto pending = store->load_pending().value();
  ASSERT_EQ(pending.size(), 39u);
  for (std::size_t i = 1; i < pending.size(); ++i) EXPECT_LT(pending[i - 1].seq, pending[i].seq);
}

// Health follows the writes: healthy while they succeed, unavailable with SQLite's reason while
// a batch fails as a whole, and healthy again through its own probe write, with no traffic.
TEST_F(SqliteStoreTest, HealthFollowsFailingWritesAndRecoversWithoutTraffic) {
  SqliteStoreSettings settings{dir_ / "t.db"};
  settings.busy_timeout = std::chrono::milliseconds(50);
  settings.health_probe_interval = std::chrono::milliseconds(0);
  auto store = make_sqlite_store(settings);
  ASSERT_TRUE(run(store->health()));

  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(settings.path.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  ASSERT_FALSE(run(store->commit(sample("k1"))));
  auto sick = run(store->health());
  ASSERT_FALSE(sick);
  EXPECT_EQ(sick.error().code, Errc::unavailable);
  EXPECT_NE(sick.error().issues.at(0).diagnostics.find("locked"), std::string::npos) << sick.error().issues[0].diagnostics;
  EXPECT_FALSE(run(store->health()));  // the probe itself still cannot write

  ASSERT_EQ(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  EXPECT_TRUE(run(store->health()));  // the probe wrote: healthy before any record arrives
  EXPECT_TRUE(run(store->commit(sample("k1"))));
  store->close();
  EXPECT_FALSE(run(store->health()));
}

// A second health check soon after a probe answers from the last failure without probing again
// (this once deadlocked: the answer's text took the lock the check still held).
TEST_F(SqliteStoreTest, HealthSoonAfterAProbeAnswersWithTheLastFailure) {
  SqliteStoreSettings settings{dir_ / "t.db"};
  settings.busy_timeout = std::chrono::milliseconds(50);
  settings.health_probe_interval = std::chrono::hours(1);
  auto store = make_sqlite_store(settings);
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(settings.path.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  ASSERT_FALSE(run(store->commit(sample("k1"))));
  EXPECT_FALSE(run(store->health()));  // probes (and fails: still locked)
  auto again = run(store->health());   // within the interval: no probe, the same reason
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().issues.at(0).diagnostics.find("cannot save records"), std::string::npos);
  ASSERT_EQ(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  store->close();
}

// max_size behaves as a full disk: writes fail as unavailable, health says the disk is full,
// and what was stored before stays readable.
TEST_F(SqliteStoreTest, StoreAtItsSizeLimitFailsWritesAsUnavailableAndSaysSo) {
  SqliteStoreSettings settings{dir_ / "t.db"};
  settings.max_size_bytes = 1024 * 1024;  // 32 pages of 32 KiB
  settings.health_probe_interval = std::chrono::milliseconds(0);
  auto store = make_sqlite_store(settings);
  std::vector<std::string> stored;
  Result<Committed> last = Committed{};
  for (int i = 0; i < 200 && last; ++i) {
    auto msg = sample("big" + std::to_string(i));
    msg.body.append(20000, ' ');
    last = run(store->commit(msg));
    if (last) stored.push_back(last->outcome.message_id);
  }
  ASSERT_FALSE(last) << "the store never filled up";
  EXPECT_TRUE(last.error().is_retryable());
  EXPECT_EQ(last.error().code, Errc::unavailable);
  ASSERT_FALSE(stored.empty());
  auto health = run(store->health());
  ASSERT_FALSE(health);
  EXPECT_NE(health.error().issues.at(0).diagnostics.find("full"), std::string::npos)
      << health.error().issues[0].diagnostics;
  for (const auto& id : stored) EXPECT_TRUE(run(store->find(id)).value().has_value()) << id;
}

// A reader holding one snapshot stops checkpoints from finishing, so the WAL grows past its
// limit during a burst (as during an outage with a backlog); once the snapshot is released the
// log is copied back and the file cut back to the limit, with no restart.
TEST_F(SqliteStoreTest, WalGrownPastItsLimitIsCutBackOnceCheckpointed) {
  SqliteStoreSettings settings{dir_ / "t.db"};
  settings.synchronous_full = false;  // 80 MB of writes; durability is not what is tested here
  auto store = make_sqlite_store(settings);
  ASSERT_TRUE(run(store->commit(sample("first"))));

  sqlite3* reader = nullptr;
  ASSERT_EQ(sqlite3_open(settings.path.c_str(), &reader), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM messages;", nullptr, nullptr, nullptr), SQLITE_OK);
  for (int i = 0; i < 80; ++i) {
    auto msg = sample("burst" + std::to_string(i));
    msg.body.append(1024 * 1024, 'x');
    ASSERT_TRUE(run(store->commit(msg)));
  }
  const auto wal = dir_ / "t.db-wal";
  const std::uintmax_t limit = 64ull * 1024 * 1024;
  ASSERT_GT(std::filesystem::file_size(wal), limit);
  ASSERT_EQ(sqlite3_exec(reader, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(reader);

  ASSERT_TRUE(run(store->commit(sample("after"))));  // wakes the checkpointer
  for (int i = 0; i < 200 && std::filesystem::file_size(wal) > limit; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_LE(std::filesystem::file_size(wal), limit);
  EXPECT_EQ(run(store->list(all_messages())).value().size(), 82u);
}

// The search starts from whichever filter's index looks sparsest in the data (a rare source, or
// the dead deliveries, or one destination's): whichever it picks, the answer must be the same.
// 1300 messages so that two filters each have more rows than the store's probe reads (1000):
// rtx sends all but three; 9 in 10 die at gp-1, the rest wait; of the three from `rare`, two die.
asio::awaitable<void> commit_and_settle(Store& store, NewMessage m, bool dead, std::vector<std::string>& ids) {
  auto committed = (co_await store.commit(std::move(m))).value();
  ids.push_back(committed.outcome.message_id);
  if (!dead) co_return;
  DeliveryAttempt a;
  a.delivery_id = committed.jobs.at(0).delivery_id;
  a.message_id = committed.outcome.message_id;
  a.destination = committed.jobs.at(0).destination;
  a.attempt = 1;
  a.outcome = DeliveryOutcome::permanent;
  a.partner_code = "HTTP 400";
  a.dead = true;
  (co_await store.record_attempt(a)).value();
}

TEST_F(SqliteStoreTest, SearchGivesTheSameAnswerWhicheverFilterItStartsFrom) {
  SqliteStoreSettings settings;
  settings.path = dir_ / "tellonce.db";
  auto store = make_sqlite_store(settings);
  std::vector<std::string> dead_rtx, dead_rare, waiting, rare_all, scratch;  // scratch: the waiting rare one
  {
    asio::io_context io;
    bool failed = false;
    for (int i = 0; i < 1300; ++i) {
      const bool rare = i == 101 || i == 701 || i == 1200;
      const bool dead = i % 10 != 0;
      auto m = sample("", {"gp-1"}, rare ? "rare" : "rtx");
      m.received_at_ms = 1'700'000'000'000 + i * 1000;
      auto& ids = rare ? (dead ? dead_rare : scratch) : dead ? dead_rtx : waiting;
      asio::co_spawn(io, commit_and_settle(*store, std::move(m), dead, ids), [&](std::exception_ptr e) {
        if (e) failed = true;
      });
    }
    io.run();
    ASSERT_FALSE(failed);
  }
  ASSERT_EQ(dead_rare.size(), 2u);
  ASSERT_EQ(scratch.size(), 1u);
  rare_all = dead_rare;
  rare_all.push_back(scratch[0]);
  auto all_pages = [&](MessageQuery q) {  // every match, page after page by cursor
    std::set<std::string> out;
    q.limit = 97;
    for (;;) {
      auto rows = run(store->list(q)).value();
      for (const auto& r : rows) EXPECT_TRUE(out.insert(r.id).second) << "listed twice: " << r.id;
      if (rows.size() < 97u) return out;
      q.cursor = rows.back().cursor;
    }
  };
  using Set = std::set<std::string>;
  MessageQuery q;
  q.source = "rare";
  q.state = MessageState::failed;
  EXPECT_EQ(all_pages(q), Set(dead_rare.begin(), dead_rare.end()));
  q.source = "rtx";
  EXPECT_EQ(all_pages(q), Set(dead_rtx.begin(), dead_rtx.end()));
  q = {};
  q.source = "rare";
  q.destination = "gp-1";
  EXPECT_EQ(all_pages(q), Set(rare_all.begin(), rare_all.end()));
  q.destination = "elsewhere";
  EXPECT_EQ(all_pages(q), Set{});
  q = {};
  q.destination = "gp-1";
  q.state = MessageState::delivering;
  Set expected_waiting(waiting.begin(), waiting.end());
  expected_waiting.insert(scratch[0]);
  EXPECT_EQ(all_pages(q), expected_waiting);
  q.source = "rtx";
  EXPECT_EQ(all_pages(q), Set(waiting.begin(), waiting.end()));
  store->close();
}

}  // namespace
}  // namespace tellonce::test
