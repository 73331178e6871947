// The SQLite store's start-up checks: a lost, damaged or foreign store is refused with a message
// that names the files and the way out, and the way out works.
#include "store_contract.hpp"

#include "engines/sqlite_store/sqlite_files.hpp"
#include "engines/sqlite_store/sqlite_store.hpp"
#include "support/temp_dir.hpp"

#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

namespace tellonce::test {
namespace {

namespace fs = std::filesystem;

class SqliteStartupTest : public ::testing::Test {
 protected:
  void SetUp() override { settings_.path = dir_ / "t.db"; }

  // Stores n records and closes the store cleanly; returns their ids.
  std::vector<std::string> fill(int n) {
    auto store = make_sqlite_store(settings_);
    std::vector<std::string> ids;
    for (int i = 0; i < n; ++i) ids.push_back(run(store->commit(sample("k" + std::to_string(i)))).value().outcome.message_id);
    store->close();
    return ids;
  }

  // The message make_sqlite_store refuses with, or "" when it opens.
  std::string refusal() {
    try {
      make_sqlite_store(settings_)->close();
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  }

  std::int64_t count(const char* sql) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(settings_.path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql, -1, &st, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    std::int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
  }

  std::vector<fs::path> files_named(const std::string& part) {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.path().filename().string().find(part) != std::string::npos) out.push_back(e.path());
    return out;
  }

  TempDir temp_{"tellonce-startup"};
  fs::path dir_ = temp_.path();
  SqliteStoreSettings settings_;
};

void overwrite(const fs::path& file, std::uintmax_t offset, std::size_t n, char byte) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good());
  f.seekp(static_cast<std::streamoff>(offset));
  std::string junk(n, byte);
  f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
}

TEST_F(SqliteStartupTest, MarkerBesideTheStoreNamesTheIdInside) {
  fill(1);
  auto marker = store_detail::read_marker(store_detail::marker_path(settings_.path));
  ASSERT_TRUE(marker);
  EXPECT_EQ(marker->size(), 26u);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(settings_.path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT value FROM store_meta WHERE key = 'store_id'", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))), *marker);
  sqlite3_finalize(st);
  sqlite3_close(db);
  // Reopening keeps the same id.
  fill(0);
  EXPECT_EQ(store_detail::read_marker(store_detail::marker_path(settings_.path)), marker);
}

TEST_F(SqliteStartupTest, StoreTruncatedToZeroBytesIsRefusedNotStartedEmpty) {
  fill(3);
  fs::resize_file(settings_.path, 0);
  auto why = refusal();
  EXPECT_NE(why.find("is empty (0 bytes)"), std::string::npos) << why;
  EXPECT_NE(why.find(store_detail::marker_path(settings_.path).string()), std::string::npos) << why;
  EXPECT_NE(why.find("--accept-new-store"), std::string::npos) << why;
  EXPECT_EQ(fs::file_size(settings_.path), 0u);  // refused before SQLite wrote anything
  EXPECT_NE(refusal(), "");                       // and again: refusing changed nothing
}

TEST_F(SqliteStartupTest, MissingStoreUnderItsMarkerIsRefused) {
  fill(1);
  fs::remove(settings_.path);
  auto why = refusal();
  EXPECT_NE(why.find("is missing"), std::string::npos) << why;
  EXPECT_FALSE(fs::exists(settings_.path));
}

TEST_F(SqliteStartupTest, AcceptNewStoreStartsEmptyAndKeepsTheOldFilesAside) {
  const auto old_id = *(fill(2), store_detail::read_marker(store_detail::marker_path(settings_.path)));
  fs::resize_file(settings_.path, 0);
  settings_.accept_new_store = true;
  auto store = make_sqlite_store(settings_);
  EXPECT_TRUE(run(store->list(MessageQuery{})).value().empty());
  store->close();
  auto new_id = store_detail::read_marker(store_detail::marker_path(settings_.path));
  ASSERT_TRUE(new_id);
  EXPECT_NE(*new_id, old_id);
  EXPECT_EQ(files_named("t.db.replaced-").size(), 1u);
  EXPECT_EQ(files_named("t.db.id.replaced-").size(), 1u);
  settings_.accept_new_store = false;
  EXPECT_EQ(refusal(), "");  // the new store is now the one the marker names
}

TEST_F(SqliteStartupTest, AnotherStoresFileInPlaceIsRefused) {
  fill(1);
  SqliteStoreSettings other = settings_;
  other.path = dir_ / "other.db";
  make_sqlite_store(other)->close();
  fs::copy_file(other.path, settings_.path, fs::copy_options::overwrite_existing);
  auto why = refusal();
  EXPECT_NE(why.find("another store's"), std::string::npos) << why;
}

TEST_F(SqliteStartupTest, StoreFailingTheIntegrityCheckIsRefused) {
  fill(40);
  ASSERT_FALSE(fs::exists(store_detail::wal_path(settings_.path)));  // closed cleanly: all in the main file
  // Pages 2 and 3 (32 KiB each) hold table b-trees: fill them with junk.
  overwrite(settings_.path, 32768, 2 * 32768, '\xa5');
  auto why = refusal();
  EXPECT_NE(why.find("quick_check"), std::string::npos) << why;
  EXPECT_NE(why.find("--accept-new-store"), std::string::npos) << why;

  settings_.accept_new_store = true;  // the way out: a new store, the damaged one kept aside
  auto store = make_sqlite_store(settings_);
  EXPECT_TRUE(run(store->commit(sample("after"))));
  store->close();
  EXPECT_EQ(files_named("t.db.replaced-").size(), 1u);
}

TEST_F(SqliteStartupTest, FileThatIsNotADatabaseIsRefused) {
  fill(1);
  fs::resize_file(settings_.path, 0);
  fs::resize_file(settings_.path, 65536);  // 64 KiB of zeros: not SQLite's header
  auto why = refusal();
  EXPECT_NE(why.find("fails SQLite's quick_check"), std::string::npos) << why;
}

// A process commits records and dies before any checkpoint; one frame of its WAL is then
// damaged. SQLite's recovery would stop there and drop the later, acknowledged, commits.
TEST_F(SqliteStartupTest, DamagedWalAfterACrashIsDetectedNotSilentlyTruncated) {
  constexpr int records = 20;
  fill(1);  // a store with a history: its schema is in the main file, not in the WAL
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto store = make_sqlite_store(settings_);
    for (int i = 0; i < records; ++i)
      if (!run(store->commit(sample("w" + std::to_string(i))))) _exit(1);
    _exit(0);  // like kill -9: no close, no checkpoint
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  const auto wal = store_detail::wal_path(settings_.path);
  auto intact = store_detail::scan_wal(wal);
  ASSERT_TRUE(intact.present);
  EXPECT_FALSE(intact.loses_commits()) << intact.describe();
  ASSERT_GE(intact.recoverable_commits, static_cast<std::uint64_t>(records));
  ASSERT_GT(intact.recoverable_frames, 8u);

  // One byte inside the page of frame 4, long before the last commit.
  const std::uintmax_t frame = 24 + intact.page_size;
  overwrite(wal, 32 + 3 * frame + 24 + 100, 1, '\x5a');
  auto damaged = store_detail::scan_wal(wal);
  EXPECT_EQ(damaged.first_bad_frame, 4u);
  EXPECT_GE(damaged.lost_commits, static_cast<std::uint64_t>(records - 3)) << damaged.describe();

  auto why = refusal();
  EXPECT_NE(why.find("write-ahead log"), std::string::npos) << why;
  EXPECT_NE(why.find("--accept-wal-loss"), std::string::npos) << why;

  settings_.accept_wal_loss = true;  // the way out keeps what SQLite recovers, and a copy of the log
  auto store = make_sqlite_store(settings_);
  auto kept = run(store->list([] { MessageQuery q; q.limit = 1000; return q; }())).value().size();
  store->close();
  EXPECT_GE(kept, 1u);  // the record from before the crash
  EXPECT_LT(kept, static_cast<std::size_t>(records));
  EXPECT_EQ(files_named("t.db-wal.damaged-").size(), 1u);
}

// The normal case after kill -9: an intact WAL is recovered whole, with nothing reported lost.
TEST_F(SqliteStartupTest, IntactWalAfterACrashOpensWithEverything) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto store = make_sqlite_store(settings_);
    for (int i = 0; i < 10; ++i)
      if (!run(store->commit(sample("w" + std::to_string(i))))) _exit(1);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(refusal(), "");
  EXPECT_EQ(count("SELECT count(*) FROM messages"), 10);
}

}  // namespace
}  // namespace tellonce::test
