#include "store_contract.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

namespace tellonce::testing {
namespace {

std::unique_ptr<Store> open_sqlite(const std::filesystem::path& dir) {
  SqliteStoreSettings settings;
  settings.path = dir / "tellonce.db";
  return make_sqlite_store(settings);
}

INSTANTIATE_TEST_SUITE_P(Sqlite, StoreContract, ::testing::Values(StoreKind{"sqlite", open_sqlite}),
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
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "tellonce-sqlite-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  std::filesystem::path dir_;
};

TEST_F(SqliteStoreTest, CreatesVersionedSchemaInWalMode) {
  auto db = dir_ / "t.db";
  make_sqlite_store(SqliteStoreSettings{db})->close();
  EXPECT_EQ(pragma_value(db, "PRAGMA user_version"), 1);
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
  EXPECT_TRUE(blocked.error().retryable_p());
  EXPECT_EQ(blocked.error().http_status, 503);
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
      else if (poison && !r.error().retryable_p() &&
               r.error().summary().find("poisoned record") != std::string::npos) ++rejected;
    };
    asio::co_spawn(io, store->commit(sample("", {"trust-a"}, i == 20 ? "poison" : "hospital-1")), done);
  }
  io.run();
  EXPECT_EQ(stored, 39);
  EXPECT_EQ(rejected, 1);
  EXPECT_EQ(run(store->list(MessageQuery{std::nullopt, "", 1000})).value().size(), 39u);
  auto pending = store->load_pending().value();
  ASSERT_EQ(pending.size(), 39u);
  for (std::size_t i = 1; i < pending.size(); ++i) EXPECT_LT(pending[i - 1].seq, pending[i].seq);
}

}  // namespace
}  // namespace tellonce::testing
