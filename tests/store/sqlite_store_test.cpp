#include "store_contract.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <sqlite3.h>

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

}  // namespace
}  // namespace tellonce::testing
