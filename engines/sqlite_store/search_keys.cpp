#include "search_keys.hpp"

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

// The search_keys table's columns and key, as schema 8 made it in the store and schema 9 in the
// search file.
constexpr const char* search_keys_columns = R"sql( (
  facet          INTEGER NOT NULL,
  value          TEXT NOT NULL,
  received_at_ms INTEGER NOT NULL,
  seq            INTEGER NOT NULL,
  PRIMARY KEY (facet, value, received_at_ms, seq)
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
  if (!prepare) return;
  // page_size takes effect only while the file has no table yet.
  db.exec_or_throw("PRAGMA search.page_size = 4096");
  sqlite::Statement wal(db, "PRAGMA search.journal_mode = WAL");
  if (!wal.step() || wal.text(0) != "wal") throw std::runtime_error("search index " + file + ": cannot switch to WAL mode");
  wal.reset();
  db.exec_or_throw("PRAGMA search.synchronous = NORMAL");
  db.exec_or_throw(std::string("CREATE TABLE IF NOT EXISTS search.search_keys") + search_keys_columns +
                   "CREATE TABLE IF NOT EXISTS search.search_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;");
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

// The order to insert `keys` in: by (facet, value), and within one in the order they came.
// They come in commit order, so within a (facet, value) they are already (nearly) in index
// order; only the distinct (facet, value) pairs, a few hundred a flush, need sorting. Sorting
// all the keys by their strings was a tenth of the search thread's time.
std::vector<std::uint32_t> index_order(const std::vector<SearchKey>& keys) {
  std::unordered_map<GroupKey, std::uint32_t, GroupHash> group_of;
  std::vector<GroupKey> groups;
  std::vector<std::uint32_t> member_group(keys.size()), count;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    auto [it, added] = group_of.try_emplace(GroupKey{keys[i].facet, keys[i].value}, static_cast<std::uint32_t>(groups.size()));
    if (added) {
      groups.push_back(it->first);
      count.push_back(0);
    }
    member_group[i] = it->second;
    ++count[it->second];
  }
  std::vector<std::uint32_t> sorted(groups.size());
  for (std::uint32_t g = 0; g < sorted.size(); ++g) sorted[g] = g;
  std::sort(sorted.begin(), sorted.end(), [&groups](std::uint32_t a, std::uint32_t b) {
    return std::tie(groups[a].facet, groups[a].value) < std::tie(groups[b].facet, groups[b].value);
  });
  std::vector<std::uint32_t> next(groups.size());
  std::uint32_t at = 0;
  for (auto g : sorted) {
    next[g] = at;
    at += count[g];
  }
  std::vector<std::uint32_t> order(keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) order[next[member_group[i]]++] = static_cast<std::uint32_t>(i);
  return order;
}

}  // namespace

void write_search_keys(sqlite::Connection& db, const std::vector<SearchKey>& keys, std::int64_t indexed_upto) {
  // In index order each page is visited once, left to right.
  const auto order = index_order(keys);
  // Many rows a statement: most of an insert's cost is running the statement, not the B-tree.
  constexpr std::size_t rows_per_insert = 64;
  auto insert_sql = [](std::size_t rows) {
    std::string sql = "INSERT OR IGNORE INTO search.search_keys (facet, value, received_at_ms, seq) VALUES ";
    for (std::size_t i = 0; i < rows; ++i) sql += i ? ",(?,?,?,?)" : "(?,?,?,?)";
    return sql;
  };
  sqlite::Statement many(db, insert_sql(rows_per_insert));
  sqlite::Statement one(db, insert_sql(1));
  for (std::size_t at = 0; at < keys.size();) {
    const std::size_t rows = keys.size() - at >= rows_per_insert ? rows_per_insert : 1;
    auto& insert = rows == 1 ? one : many;
    insert.start();
    for (std::size_t i = 0; i < rows; ++i) {
      const auto& k = keys[order[at + i]];
      const int column = static_cast<int>(i) * 4;
      insert.bind(column + 1, std::int64_t{k.facet}).bind(column + 2, std::string_view(k.value))
          .bind(column + 3, k.received_at_ms).bind(column + 4, k.seq);
    }
    insert.run();
    if (db.failed()) return;
    at += rows;
  }
  sqlite::Statement mark(db, "INSERT OR REPLACE INTO search.search_meta (key, value) VALUES ('indexed_upto', ?1)");
  mark.start().bind(1, indexed_upto).run();
}

std::int64_t search_indexed_upto(sqlite::Connection& db, const std::string& store_id, std::int64_t last_seq) {
  auto meta = [&db](const char* key) {
    sqlite::Statement st(db, "SELECT value FROM search.search_meta WHERE key = ?1");
    std::string value = st.start().bind(1, std::string_view(key)).step() ? st.text(0) : std::string();
    st.reset();
    return value;
  };
  if (meta("store_id") != store_id) {
    // New, or left by another store (a file put back from elsewhere, --accept-new-store).
    db.exec_or_throw("BEGIN IMMEDIATE; DELETE FROM search.search_keys; DELETE FROM search.search_meta;");
    sqlite::Statement mark(db, "INSERT INTO search.search_meta (key, value) VALUES ('store_id', ?1)");
    mark.start().bind(1, std::string_view(store_id)).run();
    if (db.failed()) throw std::runtime_error("search index: " + db.error_message());
    db.exec_or_throw("COMMIT");
    return 0;
  }
  const auto text = meta("indexed_upto");
  std::int64_t upto = text.empty() ? 0 : std::stoll(text);
  if (upto > last_seq) {
    // The store was put back to an earlier state: those seqs will name other records.
    sqlite::Statement trim(db, "DELETE FROM search.search_keys WHERE seq > ?1");
    trim.start().bind(1, last_seq).run();
    if (db.failed()) throw std::runtime_error("search index: " + db.error_message());
    upto = last_seq;
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
