// The shared Store: PostgreSQL through libpq, for several broker nodes on one database
// (engines/postgres_store/README.md). libpq blocks, so it runs on the store's own threads: one
// writer with group commit (many records in one transaction) and a pool of readers, each with
// its own connection. Awaitables resume on the awaiting coroutine's executor.
//
// Errors: a lost or refused connection fails the operation as Errc::unavailable (retryable;
// the transaction was rolled back, nothing of it is stored) and the store reconnects by itself
// on the next operation or health() probe. A constraint violation fails only the write that
// caused it, as Errc::conflict.
#pragma once

#include "tellonce/store.hpp"

#include <chrono>
#include <memory>
#include <string>

namespace tellonce {

struct PostgresStoreSettings {
  // A libpq connection string ("host=... port=... dbname=... user=..." or a postgresql:// URI);
  // passwords belong in ~/.pgpass or PGPASSFILE, not here.
  std::string conninfo = "host=127.0.0.1 port=5432 dbname=tellonce user=tellonce";
  int pool_size = 2;  // reader connections (and threads); the writer has one more
  std::chrono::microseconds max_commit_delay{2000};
  int max_batch = 512;
  std::chrono::seconds connect_timeout{5};
  // While writes fail, health() tries a probe write at most this often.
  std::chrono::milliseconds health_probe_interval{1000};
};

// Connects and creates the schema when absent (or checks its version). Throws
// std::runtime_error when PostgreSQL cannot be reached at start-up or holds a newer schema.
std::unique_ptr<Store> make_postgres_store(const PostgresStoreSettings& settings);

struct StoreEngineType;
StoreEngineType postgres_store_engine();  // for the registry: `store.type: postgresql`

}  // namespace tellonce
