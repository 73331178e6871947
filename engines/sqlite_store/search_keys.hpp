// The SQLite store's search index (README "Finding and fixing messages"): one row in the
// search_keys table per way a message can be found (its source, resource type, event, NHS
// number, each route and destination, and "every message"), ordered newest received first
// within each (facet, value).
//
// Why a table written by the store rather than SQLite indexes on the messages table: SQLite
// updates an index inside the insert that changes it, so every index would cost each commit a
// B-tree insert and, per group commit, a rewritten 32 KiB page; with ten of them the store
// took a third off bench/load's throughput. Instead the writer keeps a commit's keys in memory
// and writes them later, many commits at once and in key order, so that each index page is
// written once per flush instead of once per batch. A search first asks the writer to flush,
// so it always sees every record acknowledged before it; after a crash the keys of records
// committed since the last flush are rebuilt from their rows at start-up (search_keys_after).
//
// Threading: none of its own; the writer thread calls these (and start-up, before it runs).
// Errors: recorded on the connection, as for every statement (sqlite_db.hpp).
#pragma once

#include "sqlite_db.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tellonce::store_detail {

// Stored as integers: the values are part of the file format (schema 8).
enum class Facet : int {
  every = 0,  // value '': every message, for a listing without filters
  source = 1,
  resource_type = 2,
  event = 3,        // only messages with one
  nhs_number = 4,   // only patients keyed by an NHS number
  route = 5,        // one per route that matched
  destination = 6,  // one per destination it was routed to
  unroutable = 7,   // value '': messages no route matched
};

struct SearchKey {
  int facet = 0;
  std::string value;
  std::int64_t received_at_ms = 0;
  std::int64_t seq = 0;
};

// What a message is found by, as committed.
struct SearchFacts {
  std::int64_t seq = 0;
  std::int64_t received_at_ms = 0;
  std::string_view source, resource_type, event, nhs_number;
  const std::vector<std::string>* routes = nullptr;
  const std::vector<std::string>* destinations = nullptr;
};

void add_search_keys(std::vector<SearchKey>& out, const SearchFacts& facts);

// Sorts `keys` into index order and inserts them (INSERT OR IGNORE: a key rebuilt after a
// crash may already be there), then records `indexed_upto` (the highest seq whose keys are
// now all written) in store_meta. Inside the caller's transaction.
void write_search_keys(sqlite::Connection& db, std::vector<SearchKey>& keys, std::int64_t indexed_upto);

// store_meta's record of it (0 for a store that has none yet).
std::int64_t search_indexed_upto(sqlite::Connection& db);

// The keys of every message with seq > after, rebuilt from the messages and deliveries tables.
std::vector<SearchKey> search_keys_after(sqlite::Connection& db, std::int64_t after);

// Schema 7 -> 8: search_keys filled from the schema-7 indexes' tables, which it replaces.
std::string migrate_7_to_8_sql();

}  // namespace tellonce::store_detail
