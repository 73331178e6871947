// The SQLite store's search index (README "Finding and fixing messages"): one key per way a
// message can be found (its source, resource type, event, NHS number, each route and
// destination, and "every message"), ordered newest received first within each (facet, value),
// and read as rows of the search_keys table. On disk the keys are blocks (search_blocks.hpp).
//
// Why a table written behind the commits rather than SQLite indexes on the messages table:
// SQLite updates an index inside the insert that changes it, so every index would cost each
// commit a B-tree insert and, per group commit, a rewritten page; with ten of them the store
// took a third off bench/load's throughput. Instead the keys of committed records are handed
// to the store's search thread, which writes many commits' keys at once, in key order.
//
// Why in a file of its own (`<store>-search`, attached as schema `search`): the keys are
// derived data, rebuilt from the messages, so that file needs neither the store's fsync per
// commit (synchronous=NORMAL: consistent after a crash, perhaps missing its last flushes) nor
// its 32 KiB pages. An NHS-number key lands on a page of its own among millions of patients,
// and each flush rewrites every page it touched: 4 KiB there instead of 32 KiB. The writer
// never waits for it. A search first asks the search thread to write what it holds, so it
// sees every record acknowledged before it. At start-up the keys of records after the file's
// watermark are rebuilt from their rows (a crash, a deleted or foreign file: all of them).
//
// Threading: none of its own; the store's search thread calls these (and start-up, before it
// runs). Errors: recorded on the connection, as for every statement (sqlite_db.hpp).
#pragma once

#include "search_blocks.hpp"
#include "sqlite_db.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
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

// The file beside the store that holds them.
std::filesystem::path search_file_path(const std::filesystem::path& store);

// Attaches the search file to `db` as schema `search`. With `prepare`, creates it if missing
// (4 KiB pages, WAL, synchronous=NORMAL) with its tables; readers attach it without.
void attach_search_file(sqlite::Connection& db, const std::filesystem::path& store, bool prepare);

// What the search thread remembers between flushes so that most of a flush's postings need no
// look-up: the newest posting written, and each (facet, value)'s last one (at most max_entries;
// the others are asked of the file). Cleared when a flush fails, as its writes were rolled back.
class SearchBlockCache {
 public:
  static constexpr std::size_t max_entries = 65536;
  void clear();

 private:
  friend void write_search_keys(sqlite::Connection&, const std::vector<SearchKey>&, std::int64_t, SearchBlockCache&);
  std::unordered_map<std::string, Posting> last_;
  Posting newest_;
  bool newest_known_ = false;
};

// Writes `keys` as blocks (search_blocks.hpp), grouped by (facet, value) in index order; a key
// already there (rebuilt after a crash) is kept once. Then records `indexed_upto` (the highest
// seq whose keys are now all written) in the search file. Inside the caller's transaction.
void write_search_keys(sqlite::Connection& db, const std::vector<SearchKey>& keys, std::int64_t indexed_upto,
                       SearchBlockCache& cache);

// The search file's watermark for store `store_id` whose last seq is `last_seq`: 0 (and the
// file emptied) when it was written for another store or is new; at most last_seq (keys of
// seqs past it, which a restored store will number again, are removed).
std::int64_t search_indexed_upto(sqlite::Connection& db, const std::string& store_id, std::int64_t last_seq);

// The keys of every message with seq > after, rebuilt from the messages and deliveries tables.
std::vector<SearchKey> search_keys_after(sqlite::Connection& db, std::int64_t after);

// Schema 7 -> 8: search_keys filled from the schema-7 indexes' tables, which it replaces.
std::string migrate_7_to_8_sql();

// Schema 8 -> 9: search_keys leaves the store for the search file (rebuilt there at start-up).
std::string migrate_8_to_9_sql();

}  // namespace tellonce::store_detail
