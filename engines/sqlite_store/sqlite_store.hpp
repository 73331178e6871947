// The embedded Store: SQLite in WAL mode, one writer thread with group commit, one reader and
// one checkpointer thread (engines/sqlite_store/README.md). Its settings are its own: the broker
// reaches it through the registry (`store.type: sqlite`); only its own tests include this header.
#pragma once

#include "tellonce/store.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>

namespace tellonce {

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

  // Start-up checks (engines/sqlite_store/README.md, "Refusing a lost store"). By default the store
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

struct StoreEngineType;
StoreEngineType sqlite_store_engine();  // for the registry: `store.type: sqlite`

}  // namespace tellonce
