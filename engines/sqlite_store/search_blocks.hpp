// How the search file stores its keys (search_keys.hpp says what they are and why they live
// there): the keys of one (facet, value) are postings (received_at_ms, seq), kept in blocks of
// up to postings_per_block, one row of search.search_blocks each, instead of a row per key.
// A row per key cost the search thread a B-tree insert per key, six or seven a record (bench/load:
// about 10 µs of CPU a record, 8 % of its throughput); a flush now writes one row per (facet,
// value) it touches, plus one per NHS number.
//
// Blocks of one (facet, value) never overlap: ordered by their last posting, each one's first
// posting comes after the block before it ends. The writer keeps that true by merging a flush's
// late postings (a record committed after others received later) into the blocks they belong
// to. Readers see the blocks through the virtual table `search_keys`, a row per posting, so the
// search SQL reads as if each key had its row.
//
// Threading: the functions are pure or act on the connection given. The virtual table's cursors
// run on the thread of the statement that opened them. Errors: a malformed block (damage)
// fails the statement that reads it with SQLITE_CORRUPT, which the store reports as
// unavailable and start-up answers by rebuilding the file (sqlite_store.cpp).
#pragma once

#include <sqlite3.h>

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tellonce::store_detail {

// One key of a (facet, value): a message, in listing order (newest is greatest).
struct Posting {
  std::int64_t at = 0;   // received_at_ms
  std::int64_t seq = 0;
  auto operator<=>(const Posting&) const = default;
};

constexpr std::size_t postings_per_block = 256;

// The postings after the first of `p[0..n)` (ascending), each as the zigzag varint differences
// from the one before; the first is stored in the block's columns.
std::string encode_postings(const Posting* p, std::size_t n);

// Appends `first` and the postings `bytes` encodes after it to `out`; false when the bytes are
// not a whole encoding.
bool decode_postings(Posting first, std::string_view bytes, std::vector<Posting>& out);

// Registers the eponymous virtual table `search_keys` (facet, value, received_at_ms, seq) on
// `db`, over search.search_blocks of the attached search file. A query must give facet and
// value by equality; it may bound received_at_ms (=, <, <=, >, >=) and give seq by equality;
// rows come newest first, which satisfies ORDER BY received_at_ms DESC, seq DESC.
void register_search_keys_table(sqlite3* db);

}  // namespace tellonce::store_detail
