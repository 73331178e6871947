#include "search_keys.hpp"

#include "search_blocks.hpp"

#include "engines/common/store_rows.hpp"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string_view>
#include <tuple>
#include <unordered_map>

namespace tellonce::store_detail {

void add_search_keys(std::vector<SearchKey>& out, const SearchFacts& f) {
  auto add = [&](Facet facet, std::string_view value) {
    out.push_back(SearchKey{static_cast<int>(facet), std::string(value), f.received_at_ms, f.seq});
  };
  add(Facet::every, "");
  add(Facet::source, f.source);
  add(Facet::resource_type, f.resource_type);
  if (!f.event.empty()) add(Facet::event, f.event);
  if (!f.nhs_number.empty()) add(Facet::nhs_number, f.nhs_number);
  if (f.routes)
    for (const auto& route : *f.routes)
      if (!route.empty()) add(Facet::route, route);
  if (f.destinations && !f.destinations->empty()) {
    for (const auto& destination : *f.destinations) add(Facet::destination, destination);
  } else {
    add(Facet::unroutable, "");
  }
}

// The search_keys table's columns and key, as schema 8 made it in the store (its migration
// below; the search file now holds search_blocks instead).
constexpr const char* search_keys_columns = R"sql( (
  facet          INTEGER NOT NULL,
  value          TEXT NOT NULL,
  received_at_ms INTEGER NOT NULL,
  seq            INTEGER NOT NULL,
  PRIMARY KEY (facet, value, received_at_ms, seq)
) WITHOUT ROWID;
)sql";

// search_blocks.hpp: a (facet, value)'s postings, a block a row, keyed by its last posting.
constexpr const char* search_blocks_table = R"sql(
CREATE TABLE IF NOT EXISTS search.search_blocks (
  facet     INTEGER NOT NULL,
  value     TEXT NOT NULL,
  last_at   INTEGER NOT NULL,
  last_seq  INTEGER NOT NULL,
  first_at  INTEGER NOT NULL,
  first_seq INTEGER NOT NULL,
  postings  BLOB NOT NULL,
  PRIMARY KEY (facet, value, last_at, last_seq)
) WITHOUT ROWID;
)sql";

std::filesystem::path search_file_path(const std::filesystem::path& store) {
  return std::filesystem::path(store.string() + "-search");
}

void attach_search_file(sqlite::Connection& db, const std::filesystem::path& store, bool prepare) {
  const auto file = search_file_path(store).string();
  sqlite::Statement attach(db, "ATTACH ?1 AS search");
  attach.start().bind(1, std::string_view(file)).run();
  if (db.failed()) throw std::runtime_error("search index " + file + ": cannot attach it: " + db.error_message());
  register_search_keys_table(db.handle());
  if (!prepare) return;
  // page_size takes effect only while the file has no table yet.
  db.exec_or_throw("PRAGMA search.page_size = 4096");
  sqlite::Statement wal(db, "PRAGMA search.journal_mode = WAL");
  if (!wal.step() || wal.text(0) != "wal") throw std::runtime_error("search index " + file + ": cannot switch to WAL mode");
  wal.reset();
  db.exec_or_throw("PRAGMA search.synchronous = NORMAL");
  db.exec_or_throw("CREATE TABLE IF NOT EXISTS search.search_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;");
  // A file of the row-per-key format (before search_blocks): dropped, and its watermark with it,
  // so that start-up writes every record's keys again, as blocks.
  sqlite::Statement old(db, "SELECT 1 FROM search.sqlite_schema WHERE name = 'search_keys'");
  const bool row_per_key = old.step();
  old.reset();
  if (row_per_key)
    db.exec_or_throw("BEGIN IMMEDIATE; DROP TABLE search.search_keys; DELETE FROM search.search_meta; COMMIT;");
  db.exec_or_throw(search_blocks_table);
}

namespace {

struct GroupKey {
  int facet;
  std::string_view value;
  bool operator==(const GroupKey&) const = default;
};

struct GroupHash {
  std::size_t operator()(const GroupKey& k) const {
    return std::hash<std::string_view>{}(k.value) * 31 + static_cast<std::size_t>(k.facet);
  }
};

// A value of search.search_meta, '' when the key is not there.
std::string search_meta(sqlite::Connection& db, const char* key) {
  sqlite::Statement st(db, "SELECT value FROM search.search_meta WHERE key = ?1");
  std::string value = st.start().bind(1, std::string_view(key)).step() ? st.text(0) : std::string();
  st.reset();
  return value;
}

std::int64_t search_meta_int(sqlite::Connection& db, const char* key) {
  const auto text = search_meta(db, key);
  return text.empty() ? 0 : std::stoll(text);
}

std::string cache_key(int facet, std::string_view value) {
  std::string key(1, static_cast<char>(facet));
  key += value;
  return key;
}

// A block about to be inserted: its postings are a range of a group's sorted postings.
struct NewBlock {
  int facet;
  std::string_view value;
  const Posting* postings;
  std::size_t count;
};

// Inserts blocks many rows a statement: running a statement costs more than its B-tree work.
class BlockInserter {
 public:
  explicit BlockInserter(sqlite::Connection& db) : db_(db), many_(db, sql(rows_per_insert)), one_(db, sql(1)) {}

  void add(const NewBlock& b) {
    pending_.push_back(b);
    if (pending_.size() == rows_per_insert) flush();
  }

  void flush() {
    std::size_t at = 0;
    while (at < pending_.size() && !db_.failed()) {
      const std::size_t rows = pending_.size() - at >= rows_per_insert ? rows_per_insert : 1;
      auto& insert = rows == 1 ? one_ : many_;
      insert.start();
      encoded_.resize(rows);
      for (std::size_t i = 0; i < rows; ++i) {
        const NewBlock& b = pending_[at + i];
        encoded_[i] = encode_postings(b.postings, b.count);
        const int c = static_cast<int>(i) * 7;
        const Posting& first = b.postings[0];
        const Posting& last = b.postings[b.count - 1];
        insert.bind(c + 1, std::int64_t{b.facet}).bind(c + 2, b.value).bind(c + 3, last.at).bind(c + 4, last.seq)
            .bind(c + 5, first.at).bind(c + 6, first.seq).bind_blob(c + 7, encoded_[i]);
      }
      insert.run();
      at += rows;
    }
    pending_.clear();
  }

 private:
  static constexpr std::size_t rows_per_insert = 32;
  static std::string sql(std::size_t rows) {
    std::string out = "INSERT INTO search.search_blocks (facet, value, last_at, last_seq, first_at, first_seq, postings) VALUES ";
    for (std::size_t i = 0; i < rows; ++i) out += i ? ",(?,?,?,?,?,?,?)" : "(?,?,?,?,?,?,?)";
    return out;
  }
  sqlite::Connection& db_;
  sqlite::Statement many_, one_;
  std::vector<NewBlock> pending_;
  std::vector<std::string> encoded_;
};

}  // namespace

void SearchBlockCache::clear() {
  last_.clear();
  newest_ = {};
  newest_known_ = false;
}

void write_search_keys(sqlite::Connection& db, const std::vector<SearchKey>& keys, std::int64_t indexed_upto,
                       SearchBlockCache& cache) {
  // Group the keys by (facet, value).
  std::unordered_map<GroupKey, std::uint32_t, GroupHash> group_of;
  std::vector<GroupKey> groups;
  std::vector<std::vector<Posting>> postings;
  for (const auto& k : keys) {
    auto [it, added] = group_of.try_emplace(GroupKey{k.facet, k.value}, static_cast<std::uint32_t>(groups.size()));
    if (added) {
      groups.push_back(it->first);
      postings.emplace_back();
    }
    postings[it->second].push_back(Posting{k.received_at_ms, k.seq});
  }
  // In index order, so that each page is visited once, left to right.
  std::vector<std::uint32_t> order(groups.size());
  for (std::uint32_t g = 0; g < order.size(); ++g) order[g] = g;
  std::sort(order.begin(), order.end(), [&groups](std::uint32_t a, std::uint32_t b) {
    return std::tie(groups[a].facet, groups[a].value) < std::tie(groups[b].facet, groups[b].value);
  });

  if (!cache.newest_known_) {
    cache.newest_ = Posting{search_meta_int(db, "newest_at"), search_meta_int(db, "newest_seq")};
    cache.newest_known_ = !db.failed();
    if (db.failed()) return;
  }
  sqlite::Statement last_of(db, "SELECT last_at, last_seq FROM search.search_blocks WHERE facet = ?1 AND value = ?2 "
                                "ORDER BY last_at DESC, last_seq DESC LIMIT 1");
  sqlite::Statement overlapped(db, "SELECT first_at, first_seq, postings FROM search.search_blocks WHERE facet = ?1 "
                                   "AND value = ?2 AND (last_at, last_seq) >= (?3, ?4)");
  sqlite::Statement remove(db, "DELETE FROM search.search_blocks WHERE facet = ?1 AND value = ?2 "
                               "AND (last_at, last_seq) >= (?3, ?4)");
  BlockInserter inserter(db);
  Posting newest = cache.newest_;
  auto sort_unique = [](std::vector<Posting>& p) {
    std::sort(p.begin(), p.end());
    p.erase(std::unique(p.begin(), p.end()), p.end());
  };
  for (auto g : order) {
    const GroupKey& group = groups[g];
    auto& p = postings[g];
    sort_unique(p);
    const auto key = cache_key(group.facet, group.value);
    // Blocks must not overlap (search_blocks.hpp). Postings after every one written so far
    // cannot overlap; the others are checked against this (facet, value)'s last block.
    if (p.front() <= cache.newest_) {
      Posting last{};
      bool any = false;
      if (auto it = cache.last_.find(key); it != cache.last_.end()) {
        last = it->second;
        any = true;
      } else {
        last_of.start().bind(1, std::int64_t{group.facet}).bind(2, group.value);
        if (last_of.step()) {
          last = Posting{last_of.int64(0), last_of.int64(1)};
          any = true;
        }
        last_of.reset();
      }
      if (any && p.front() <= last) {
        // Late postings: the blocks they fall in (or after) are read, merged and written again.
        const Posting from = p.front();
        overlapped.start().bind(1, std::int64_t{group.facet}).bind(2, group.value).bind(3, from.at).bind(4, from.seq);
        bool intact = true;
        while (overlapped.step()) {
          const std::string bytes = overlapped.text(2);
          intact = intact && decode_postings(Posting{overlapped.int64(0), overlapped.int64(1)}, bytes, p);
        }
        overlapped.reset();
        if (!intact) {
          db.record_error(SQLITE_CORRUPT);
          return;
        }
        remove.start().bind(1, std::int64_t{group.facet}).bind(2, group.value).bind(3, from.at).bind(4, from.seq).run();
        sort_unique(p);
      }
    }
    if (db.failed()) return;
    for (std::size_t at = 0; at < p.size(); at += postings_per_block)
      inserter.add(NewBlock{group.facet, group.value, p.data() + at, std::min(postings_per_block, p.size() - at)});
    if (cache.last_.size() >= SearchBlockCache::max_entries) cache.last_.clear();  // bounded: misses ask the file
    cache.last_[key] = p.back();
    newest = std::max(newest, p.back());
  }
  inserter.flush();
  if (db.failed()) return;
  sqlite::Statement mark(db, "INSERT OR REPLACE INTO search.search_meta (key, value) VALUES ('indexed_upto', ?1), "
                             "('newest_at', ?2), ('newest_seq', ?3)");
  mark.start().bind(1, indexed_upto).bind(2, newest.at).bind(3, newest.seq).run();
  cache.newest_ = newest;
}

std::int64_t search_indexed_upto(sqlite::Connection& db, const std::string& store_id, std::int64_t last_seq) {
  if (search_meta(db, "store_id") != store_id) {
    // New, or left by another store (a file put back from elsewhere, --accept-new-store).
    db.exec_or_throw("BEGIN IMMEDIATE; DELETE FROM search.search_blocks; DELETE FROM search.search_meta;");
    sqlite::Statement mark(db, "INSERT INTO search.search_meta (key, value) VALUES ('store_id', ?1)");
    mark.start().bind(1, std::string_view(store_id)).run();
    if (db.failed()) throw std::runtime_error("search index: " + db.error_message());
    db.exec_or_throw("COMMIT");
    return 0;
  }
  const std::int64_t upto = search_meta_int(db, "indexed_upto");
  if (upto > last_seq) {
    // The store was put back to an earlier state: those seqs will name other records. Their
    // postings sit in blocks among others', so the whole index is written again.
    db.exec_or_throw("BEGIN IMMEDIATE; DELETE FROM search.search_blocks; "
                     "DELETE FROM search.search_meta WHERE key <> 'store_id'; COMMIT;");
    return 0;
  }
  return upto;
}

std::vector<SearchKey> search_keys_after(sqlite::Connection& db, std::int64_t after) {
  sqlite::Statement messages(db,
                             "SELECT seq, id, received_at_ms, source, resource_type, event, nhs_number, routes "
                             "FROM messages WHERE seq > ?1 ORDER BY seq");
  sqlite::Statement deliveries(db, "SELECT destination FROM deliveries WHERE message_id = ?1 ORDER BY id");
  std::vector<SearchKey> keys;
  messages.start().bind(1, after);
  while (messages.step()) {
    const std::string id = messages.text(1);
    const std::string source = messages.text(3), resource_type = messages.text(4), event = messages.text(5),
                      nhs_number = messages.text(6), route_list = messages.text(7);
    std::vector<std::string> routes = split(route_list, ','), destinations;
    deliveries.start().bind(1, std::string_view(id));
    while (deliveries.step()) destinations.push_back(deliveries.text(0));
    deliveries.reset();
    add_search_keys(keys, SearchFacts{messages.int64(0), messages.int64(2), source, resource_type, event, nhs_number,
                                      &routes, &destinations});
  }
  messages.reset();
  return keys;
}

std::string migrate_7_to_8_sql() {
  // The deliveries that are not delivered, in one index instead of four (open, waiting, failed,
  // pending by destination): a delivery is inserted pending and settled soon after, so each
  // index it passes through costs an insert and a delete. Keyed first by "dead or expired" so
  // that both the failed and the waiting listings walk it newest first without sorting.
  return std::string("CREATE TABLE search_keys") + search_keys_columns + R"sql(
INSERT INTO search_keys SELECT 0, '', received_at_ms, seq FROM messages ORDER BY received_at_ms, seq;
INSERT INTO search_keys SELECT 1, source, received_at_ms, seq FROM messages ORDER BY 2, 3, 4;
INSERT INTO search_keys SELECT 2, resource_type, received_at_ms, seq FROM messages ORDER BY 2, 3, 4;
INSERT INTO search_keys SELECT 3, event, received_at_ms, seq FROM messages WHERE event <> '' ORDER BY 2, 3, 4;
INSERT INTO search_keys SELECT 4, nhs_number, received_at_ms, seq FROM messages WHERE nhs_number <> '' ORDER BY 2, 3, 4;
INSERT INTO search_keys SELECT 5, route, received_at_ms, seq FROM message_routes ORDER BY 2, 3, 4;
INSERT OR IGNORE INTO search_keys SELECT 6, destination, received_at_ms, seq FROM deliveries ORDER BY 2, 3, 4;
INSERT INTO search_keys SELECT 7, '', received_at_ms, seq FROM messages WHERE destinations = 0 ORDER BY 3, 4;
INSERT OR REPLACE INTO store_meta (key, value)
  VALUES ('search_indexed_upto', (SELECT coalesce(max(seq), 0) FROM messages));
DROP TABLE message_routes;
DROP INDEX messages_by_received;
DROP INDEX messages_by_source;
DROP INDEX messages_by_resource_type;
DROP INDEX messages_by_event;
DROP INDEX messages_by_nhs_number;
DROP INDEX messages_unroutable_by_received;
DROP INDEX deliveries_by_destination;
DROP INDEX deliveries_failed;
DROP INDEX deliveries_waiting;
DROP INDEX IF EXISTS deliveries_pending_by_destination;
DROP INDEX deliveries_open;
CREATE INDEX deliveries_unsettled
  ON deliveries(status IN ('dead', 'expired'), received_at_ms, seq, destination, status)
  WHERE status <> 'delivered';
)sql";
}

std::string migrate_8_to_9_sql() {
  return "DROP TABLE search_keys; DELETE FROM store_meta WHERE key = 'search_indexed_upto';";
}

}  // namespace tellonce::store_detail
