// The PostgreSQL store: the Store contract suite, unchanged, plus what only a shared server
// has: two stores ("nodes") on one database, and a PostgreSQL restart under load. Runs against
// the server scripts/postgres.sh started for this ctest run (TELLONCE_PG_STATE names its state
// folder); each test gets a schema of its own, dropped afterwards.
#include "store_contract.hpp"

#include "engines/postgres_store/postgres_store.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <libpq-fe.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <thread>

namespace tellonce::test {
namespace {

std::string state_dir() {
  const char* dir = std::getenv("TELLONCE_PG_STATE");
  return dir ? dir : "";
}

// The server's conninfo, or empty when scripts/postgres.sh did not start one (binaries absent).
std::string server_conninfo() {
  std::ifstream in(state_dir() + "/conninfo");
  std::string line;
  std::getline(in, line);
  return line;
}

const char* const no_server =
    "no test PostgreSQL: scripts/postgres.sh did not start one (PostgreSQL 15 binaries absent from "
    "/usr/lib/postgresql/15/bin? install postgresql-15 with scripts/install-deps.sh; run through ctest)";

void admin(const std::string& sql) {
  PGconn* c = PQconnectdb(server_conninfo().c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
  PGresult* r = PQexec(c, sql.c_str());
  EXPECT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQresultErrorMessage(r);
  PQclear(r);
  PQfinish(c);
}

// A schema of its own on the shared server, found through search_path; dropped with the fixture.
class PostgresFixture final : public StoreFixture {
 public:
  PostgresFixture() {
    std::random_device rd;
    schema_ = "t_" + std::to_string(rd()) + std::to_string(rd());
    admin("CREATE SCHEMA " + schema_);
  }
  ~PostgresFixture() override { admin("DROP SCHEMA " + schema_ + " CASCADE"); }

  PostgresStoreSettings settings() const {
    PostgresStoreSettings s;
    s.conninfo = server_conninfo() + " options='-csearch_path=" + schema_ + "'";
    return s;
  }
  std::unique_ptr<Store> open() override { return make_postgres_store(settings()); }

 private:
  std::string schema_;
};

class NoServer final : public StoreFixture {
 public:
  std::unique_ptr<Store> open() override { return nullptr; }
};

void skip_without_server() {
  if (server_conninfo().empty()) GTEST_SKIP() << no_server;
}

std::unique_ptr<StoreFixture> make_fixture() {
  skip_without_server();
  if (server_conninfo().empty()) return std::make_unique<NoServer>();
  return std::make_unique<PostgresFixture>();
}

INSTANTIATE_TEST_SUITE_P(Postgres, StoreContract, ::testing::Values(StoreKind{"postgresql", make_fixture}),
                         [](const auto& info) { return info.param.name; });

class PostgresStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    skip_without_server();
    if (server_conninfo().empty()) return;
    fixture_ = std::make_unique<PostgresFixture>();
  }
  std::unique_ptr<PostgresFixture> fixture_;
};

// Two nodes on one database: one unique constraint decides duplicates between them, and a
// record committed after another was acknowledged (on either node) has the larger seq.
TEST_F(PostgresStoreTest, TwoNodesShareDuplicatesAndAcceptanceOrder) {
  auto node_a = fixture_->open();
  auto node_b = fixture_->open();
  asio::io_context io;
  std::vector<Committed> results;
  for (int i = 0; i < 40; ++i) {
    auto& node = i % 2 ? *node_b : *node_a;
    asio::co_spawn(io, node.commit(sample("same-key")), [&](std::exception_ptr e, Result<Committed> r) {
      ASSERT_FALSE(e);
      ASSERT_TRUE(r) << r.error().summary();
      results.push_back(*r);
    });
  }
  io.run();
  ASSERT_EQ(results.size(), 40u);
  EXPECT_EQ(std::count_if(results.begin(), results.end(), [](const auto& c) { return !c.outcome.duplicate; }), 1);
  for (const auto& c : results) EXPECT_EQ(c.outcome.message_id, results.front().outcome.message_id);

  std::int64_t last_seq = 0;
  for (int i = 0; i < 10; ++i) {
    auto& node = i % 2 ? *node_b : *node_a;
    auto committed = run(node.commit(sample("", {"gp-b"}))).value();
    EXPECT_GT(committed.jobs[0].seq, last_seq);
    last_seq = committed.jobs[0].seq;
  }
  // Either node reads what the other wrote.
  EXPECT_EQ(run(node_a->list(MessageQuery{})).value().size(), 11u);
  EXPECT_EQ(node_b->load_pending().value().size(), 2u + 10u);
}

TEST_F(PostgresStoreTest, CreatesTheSchemaOnceWithItsVersionAndRefusesANewerOne) {
  auto first = fixture_->open();
  auto second = fixture_->open();  // finds the schema there
  EXPECT_NE(first->describe().find("postgresql "), std::string::npos);
  ASSERT_TRUE(run(second->commit(sample("k"))));
  first->close();
  second->close();
  PGconn* c = PQconnectdb(fixture_->settings().conninfo.c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK);
  PGresult* r = PQexec(c, "SELECT value FROM store_meta WHERE key = 'schema_version'");
  ASSERT_EQ(PQntuples(r), 1);
  EXPECT_STREQ(PQgetvalue(r, 0, 0), "2");
  PQclear(r);
  PQclear(PQexec(c, "UPDATE store_meta SET value = '99' WHERE key = 'schema_version'"));
  PQfinish(c);
  EXPECT_THROW(fixture_->open(), std::runtime_error);
}

std::set<std::int64_t> ids_of(const std::vector<DeliveryJob>& jobs) {
  std::set<std::int64_t> ids;
  for (const auto& j : jobs) ids.insert(j.delivery_id);
  return ids;
}

void wait_past(std::chrono::milliseconds d) { std::this_thread::sleep_for(d + std::chrono::milliseconds(50)); }

// With a shared queue (broker/queue/reconciled_queue.hpp): a pending delivery nobody marked
// queued becomes due after the grace; a claim leases it to one node; marked and settled ones are
// never claimed; a lease that ran out (the claiming node died before pushing) is claimed again.
TEST_F(PostgresStoreTest, UnqueuedDeliveriesAreClaimedOnceByOneNodeAfterTheGrace) {
  using namespace std::chrono_literals;
  auto node_a = fixture_->open();
  auto node_b = fixture_->open();
  ASSERT_TRUE(node_a->track_queueing(400ms));
  ASSERT_TRUE(node_b->track_queueing(400ms));
  std::vector<DeliveryJob> jobs;
  for (int i = 0; i < 4; ++i)
    for (auto& j : run(node_a->commit(sample(""))).value().jobs) jobs.push_back(j);  // 2 deliveries each
  ASSERT_EQ(jobs.size(), 8u);
  EXPECT_TRUE(run(node_a->claim_unqueued(100)).value().empty()) << "claimed before the grace";

  ASSERT_TRUE(run(node_a->mark_queued({jobs[0].delivery_id, jobs[1].delivery_id})));  // the queue confirmed them
  ASSERT_TRUE(run(node_b->record_attempt(attempt_on(jobs[2], 1, true))));             // delivered
  ASSERT_TRUE(run(node_b->record_attempt(attempt_on(jobs[3], 1, false, true))));      // dead
  ASSERT_TRUE(run(node_b->record_attempt(attempt_on(jobs[4], 1, false))));            // retrying: still due
  wait_past(400ms);

  // Two nodes sweep at once: each due delivery goes to exactly one of them.
  std::vector<DeliveryJob> by_a, by_b;
  std::thread other([&] { by_b = run(node_b->claim_unqueued(100)).value(); });
  by_a = run(node_a->claim_unqueued(100)).value();
  other.join();
  std::set<std::int64_t> claimed = ids_of(by_a);
  for (auto id : ids_of(by_b)) EXPECT_TRUE(claimed.insert(id).second) << "delivery " << id << " claimed twice";
  EXPECT_EQ(claimed, (std::set<std::int64_t>{jobs[4].delivery_id, jobs[5].delivery_id, jobs[6].delivery_id,
                                             jobs[7].delivery_id}));
  for (const auto* side : {&by_a, &by_b}) {
    for (std::size_t i = 1; i < side->size(); ++i)  // acceptance order
      EXPECT_LT(std::pair((*side)[i - 1].seq, (*side)[i - 1].delivery_id), std::pair((*side)[i].seq, (*side)[i].delivery_id));
    for (const auto& j : *side) {
      EXPECT_FALSE(j.message_id.empty());
      EXPECT_FALSE(j.destination.empty());
      EXPECT_TRUE(j.body.empty());  // read back from the store when its turn comes
    }
  }
  // Leased: not claimed again until the grace has passed once more.
  EXPECT_TRUE(run(node_a->claim_unqueued(100)).value().empty());
  ASSERT_TRUE(run(node_a->mark_queued({jobs[4].delivery_id, jobs[5].delivery_id})));  // pushed, confirmed
  wait_past(400ms);
  // The other two were never confirmed (their node died after claiming them): claimed again.
  EXPECT_EQ(ids_of(run(node_b->claim_unqueued(100)).value()),
            (std::set<std::int64_t>{jobs[6].delivery_id, jobs[7].delivery_id}));

  // A replayed delivery is due again after the grace unless its push is confirmed.
  ASSERT_EQ(run(node_a->replay(jobs[3].message_id)).value().size(), 1u);
  EXPECT_TRUE(run(node_a->claim_unqueued(100)).value().empty());
  wait_past(400ms);
  EXPECT_EQ(ids_of(run(node_a->claim_unqueued(100)).value()).count(jobs[3].delivery_id), 1u);
}

// Without track_queueing (a queue that is not shared) nothing is ever due.
TEST_F(PostgresStoreTest, UntrackedStoreHasNothingToClaim) {
  auto store = fixture_->open();
  ASSERT_TRUE(run(store->commit(sample(""))));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(run(store->claim_unqueued(100)).value().empty());
}

// A version-1 schema is upgraded in place; its pending deliveries are due at once, so that the
// first sweep queues each of them once, as a version-1 start-up pushed them.
TEST_F(PostgresStoreTest, Version1SchemaIsUpgradedAndItsPendingDeliveriesAreDue) {
  DeliveryJob pending;
  {
    auto store = fixture_->open();
    auto jobs = run(store->commit(sample(""))).value().jobs;
    ASSERT_TRUE(run(store->record_attempt(attempt_on(jobs[0], 1, true))));
    pending = jobs[1];
    store->close();
  }
  PGconn* c = PQconnectdb(fixture_->settings().conninfo.c_str());
  ASSERT_EQ(PQstatus(c), CONNECTION_OK);
  PQclear(PQexec(c, "ALTER TABLE deliveries DROP COLUMN requeue_at_ms; "
                    "UPDATE store_meta SET value = '1' WHERE key = 'schema_version'"));
  PQfinish(c);
  auto store = fixture_->open();
  ASSERT_TRUE(store->track_queueing(std::chrono::seconds(30)));
  EXPECT_EQ(ids_of(run(store->claim_unqueued(100)).value()), std::set<std::int64_t>{pending.delivery_id});
}

TEST_F(PostgresStoreTest, UnreachableServerAtStartUpIsAnError) {
  PostgresStoreSettings s;
  s.conninfo = "host=127.0.0.1 port=1 dbname=tellonce user=tellonce";
  s.connect_timeout = std::chrono::seconds(1);
  EXPECT_THROW(make_postgres_store(s), std::runtime_error);
}

void server(const char* action) {
  const std::string command = std::string(TELLONCE_SOURCE_DIR) + "/scripts/postgres.sh " + action + " " + state_dir();
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
}

// PostgreSQL restarts while records are being committed: every commit either succeeds (and is
// then found after the restart) or fails as retryable unavailable; none is half-stored; health
// says unavailable while the server is away; the store reconnects by itself.
TEST_F(PostgresStoreTest, RestartingPostgresFailsCommitsAsUnavailableAndTheStoreRecovers) {
  auto store = fixture_->open();
  std::mutex mutex;
  std::vector<std::string> acknowledged;
  std::vector<std::string> refused;
  std::vector<std::string> wrong_failures;
  std::atomic<bool> stop{false};
  std::atomic<int> attempts{0};
  auto committer = [&](int n) {
    DrainedIoContext io;
    for (int i = 0; !stop.load(); ++i) {
      auto msg = sample("load-" + std::to_string(n) + "-" + std::to_string(i), {"gp-b", "trust-a"});
      auto result = run_async(io, store->commit(msg));
      ++attempts;
      std::lock_guard lock(mutex);
      if (result) acknowledged.push_back(result->outcome.message_id);
      else if (result.error().code == Errc::unavailable && result.error().is_retryable()) refused.push_back(msg.id);
      else wrong_failures.push_back(result.error().summary());
      if (!result) std::this_thread::sleep_for(std::chrono::milliseconds(10));  // as a client would back off
    }
  };
  std::vector<std::thread> threads;
  for (int n = 0; n < 4; ++n) threads.emplace_back(committer, n);
  while (attempts.load() < 50) std::this_thread::sleep_for(std::chrono::milliseconds(5));

  server("halt");
  // While the server is away: commits fail as unavailable, and health says so.
  auto while_away = run(store->commit(sample("while-away")));
  ASSERT_FALSE(while_away);
  EXPECT_EQ(while_away.error().code, Errc::unavailable);
  EXPECT_TRUE(while_away.error().is_retryable());
  auto health = run(store->health());
  ASSERT_FALSE(health);
  EXPECT_EQ(health.error().code, Errc::unavailable);
  auto listed = run(store->list(MessageQuery{}));
  ASSERT_FALSE(listed);
  EXPECT_EQ(listed.error().code, Errc::unavailable);

  server("resume");
  // The store comes back by itself: health probes reconnect (at most once a second).
  bool healthy = false;
  for (int i = 0; i < 300 && !healthy; ++i) {
    healthy = static_cast<bool>(run(store->health()));
    if (!healthy) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(healthy);
  const auto acknowledged_at_resume = [&] {
    std::lock_guard lock(mutex);
    return acknowledged.size();
  }();
  // Records are taken again: 50 more acknowledged (bounded, so a store that never comes back fails).
  bool taking_again = false;
  for (int i = 0; i < 3000 && !taking_again; ++i) {
    {
      std::lock_guard lock(mutex);
      taking_again = acknowledged.size() >= acknowledged_at_resume + 50;
    }
    if (!taking_again) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(taking_again);
  stop = true;
  for (auto& t : threads) t.join();

  EXPECT_TRUE(wrong_failures.empty()) << wrong_failures.front();
  EXPECT_FALSE(refused.empty());
  // Every acknowledged record is there, whole: its deliveries with it.
  for (const auto& id : acknowledged) {
    auto view = run(store->find(id)).value();
    ASSERT_TRUE(view) << "acknowledged record " << id << " lost";
    EXPECT_EQ(view->deliveries.size(), 2u);
  }
  // Nothing half-stored: a refused record is either absent or whole (a commit whose answer was
  // lost with the connection may have landed; its resubmission is then a duplicate).
  std::size_t landed_anyway = 0;
  for (const auto& id : refused) {
    auto view = run(store->find(id)).value();
    if (!view) continue;
    ++landed_anyway;
    EXPECT_EQ(view->deliveries.size(), 2u);
  }
  EXPECT_LE(landed_anyway, 4u);  // at most the batch in flight when the server went
  MessageQuery everything;
  everything.limit = 100000;
  auto listed_after = run(store->list(everything)).value();
  EXPECT_EQ(listed_after.size(), acknowledged.size() + landed_anyway);
  std::cout << "restart: " << acknowledged.size() << " acknowledged (all found), " << refused.size()
            << " refused as unavailable, " << landed_anyway << " of those stored anyway\n";
}

}  // namespace
}  // namespace tellonce::test
