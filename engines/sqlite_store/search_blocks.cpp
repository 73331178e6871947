#include "search_blocks.hpp"

#include <algorithm>
#include <limits>
#include <new>

namespace tellonce::store_detail {
namespace {

constexpr std::int64_t lowest = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t highest = std::numeric_limits<std::int64_t>::max();

void put_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

bool get_varint(std::string_view& in, std::uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (in.empty()) return false;
    const auto byte = static_cast<unsigned char>(in.front());
    in.remove_prefix(1);
    v |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
    if (byte < 0x80) return true;
  }
  return false;
}

std::uint64_t zigzag(std::int64_t d) {
  return (static_cast<std::uint64_t>(d) << 1) ^ static_cast<std::uint64_t>(d >> 63);
}
std::int64_t unzigzag(std::uint64_t v) {
  return static_cast<std::int64_t>(v >> 1) ^ -static_cast<std::int64_t>(v & 1);
}

// ---- the virtual table ----------------------------------------------------------------------

// Columns, in declaration order.
enum Column : int { facet_column = 0, value_column = 1, at_column = 2, seq_column = 3 };

// idxNum bits: which constraints xFilter receives, in this order of argv.
enum Plan : int {
  has_upper = 1,     // received_at_ms <  or <= (bit upper_inclusive)
  upper_inclusive = 2,
  has_lower = 4,     // received_at_ms >  or >= (bit lower_inclusive)
  lower_inclusive = 8,
  has_at_equal = 16,  // received_at_ms =
  has_seq_equal = 32,  // seq =
};

struct Table {
  sqlite3_vtab base{};
  sqlite3* db = nullptr;
};

struct Cursor {
  sqlite3_vtab_cursor base{};
  sqlite3_stmt* straddling = nullptr;  // the first block ending at or after the upper bound
  sqlite3_stmt* below = nullptr;       // the blocks ending before it, newest first
  bool below_started = false;
  std::int64_t facet = 0;
  std::string value;
  Posting upper{highest, highest}, lower{lowest, lowest};
  std::int64_t seq_equal = 0;
  bool want_seq = false;
  std::vector<Posting> block;  // the current block's postings, ascending
  std::size_t next = 0;        // postings left to give from `block` (block[next - 1] is current)
  bool eof = true;
  Posting current;
};

int connect(sqlite3* db, void*, int, const char* const*, sqlite3_vtab** out, char**) {
  int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(facet INTEGER, value TEXT, received_at_ms INTEGER, seq INTEGER)");
  if (rc != SQLITE_OK) return rc;
  auto* t = new (std::nothrow) Table;
  if (!t) return SQLITE_NOMEM;
  t->db = db;
  sqlite3_vtab_config(db, SQLITE_VTAB_INNOCUOUS);
  *out = &t->base;
  return SQLITE_OK;
}

int disconnect(sqlite3_vtab* vtab) {
  delete reinterpret_cast<Table*>(vtab);
  return SQLITE_OK;
}

int best_index(sqlite3_vtab*, sqlite3_index_info* info) {
  int facet = -1, value = -1, upper = -1, lower = -1, at_equal = -1, seq_equal = -1;
  int plan = 0;
  for (int i = 0; i < info->nConstraint; ++i) {
    const auto& c = info->aConstraint[i];
    if (!c.usable) continue;
    const bool eq = c.op == SQLITE_INDEX_CONSTRAINT_EQ;
    if (c.iColumn == facet_column && eq) facet = i;
    else if (c.iColumn == value_column && eq) value = i;
    else if (c.iColumn == seq_column && eq) seq_equal = i;
    else if (c.iColumn == at_column) {
      if (eq) at_equal = i;
      else if ((c.op == SQLITE_INDEX_CONSTRAINT_LT || c.op == SQLITE_INDEX_CONSTRAINT_LE) && upper < 0) {
        upper = i;
        plan |= has_upper | (c.op == SQLITE_INDEX_CONSTRAINT_LE ? upper_inclusive : 0);
      } else if ((c.op == SQLITE_INDEX_CONSTRAINT_GT || c.op == SQLITE_INDEX_CONSTRAINT_GE) && lower < 0) {
        lower = i;
        plan |= has_lower | (c.op == SQLITE_INDEX_CONSTRAINT_GE ? lower_inclusive : 0);
      }
    }
  }
  // Every query names a (facet, value). A plan without one is priced out of reach and, should
  // SQLite still take it (as it does when the WHERE is constant-false), gives no rows: refusing
  // it instead leaves such a query with no plan at all.
  if (facet < 0 || value < 0) {
    info->idxNum = 0;
    info->estimatedCost = 1e18;
    info->estimatedRows = 1;
    return SQLITE_OK;
  }
  int argv = 0;
  auto use = [&](int i, bool exact) {
    info->aConstraintUsage[i].argvIndex = ++argv;
    info->aConstraintUsage[i].omit = exact ? 1 : 0;  // bounds are checked again by SQLite
  };
  use(facet, true);
  use(value, true);
  if (upper >= 0) use(upper, false);
  if (lower >= 0) use(lower, false);
  if (at_equal >= 0) {
    use(at_equal, false);
    plan |= has_at_equal;
  }
  if (seq_equal >= 0) {
    use(seq_equal, false);
    plan |= has_seq_equal;
  }
  info->idxNum = plan;
  // Rows come newest first: ORDER BY received_at_ms DESC[, seq DESC] needs no sort.
  bool ordered = info->nOrderBy >= 1 && info->nOrderBy <= 2;
  for (int i = 0; ordered && i < info->nOrderBy; ++i)
    ordered = info->aOrderBy[i].iColumn == (i == 0 ? at_column : seq_column) && info->aOrderBy[i].desc;
  info->orderByConsumed = ordered ? 1 : 0;
  const bool point = (plan & has_at_equal) && (plan & has_seq_equal);
  info->estimatedCost = point ? 2.0 : (plan & (has_upper | has_lower | has_at_equal)) ? 1000.0 : 100000.0;
  info->estimatedRows = point ? 1 : 10000;
  if (point) info->idxFlags = SQLITE_INDEX_SCAN_UNIQUE;
  return SQLITE_OK;
}

int prepare(sqlite3* db, const char* sql, sqlite3_stmt** out) {
  return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, nullptr);
}

int open(sqlite3_vtab* vtab, sqlite3_vtab_cursor** out) {
  auto* t = reinterpret_cast<Table*>(vtab);
  auto* c = new (std::nothrow) Cursor;
  if (!c) return SQLITE_NOMEM;
  int rc = prepare(t->db,
                   "SELECT first_at, first_seq, postings FROM search.search_blocks WHERE facet = ?1 AND value = ?2 "
                   "AND (last_at, last_seq) >= (?3, ?4) ORDER BY last_at, last_seq LIMIT 1",
                   &c->straddling);
  if (rc == SQLITE_OK)
    rc = prepare(t->db,
                 "SELECT first_at, first_seq, postings FROM search.search_blocks WHERE facet = ?1 AND value = ?2 "
                 "AND (last_at, last_seq) < (?3, ?4) AND last_at >= ?5 ORDER BY last_at DESC, last_seq DESC",
                 &c->below);
  if (rc != SQLITE_OK) {
    sqlite3_free(vtab->zErrMsg);
    vtab->zErrMsg = sqlite3_mprintf("search index: %s", sqlite3_errmsg(t->db));
    sqlite3_finalize(c->straddling);
    sqlite3_finalize(c->below);
    delete c;
    return rc;
  }
  *out = &c->base;
  return SQLITE_OK;
}

int close(sqlite3_vtab_cursor* cur) {
  auto* c = reinterpret_cast<Cursor*>(cur);
  sqlite3_finalize(c->straddling);
  sqlite3_finalize(c->below);
  delete c;
  return SQLITE_OK;
}

// Decodes the block `st` is on into c->block; SQLITE_CORRUPT when it does not decode.
int load_block(Cursor* c, sqlite3_stmt* st) {
  c->block.clear();
  const Posting first{sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1)};
  const void* bytes = sqlite3_column_blob(st, 2);
  std::string_view encoded(static_cast<const char*>(bytes), static_cast<std::size_t>(sqlite3_column_bytes(st, 2)));
  if (!decode_postings(first, encoded, c->block)) return SQLITE_CORRUPT;
  c->next = c->block.size();
  return SQLITE_OK;
}

// Moves to the next posting (newest first) within [lower, upper], or to eof.
int advance(Cursor* c) {
  for (;;) {
    while (c->next > 0) {
      const Posting p = c->block[--c->next];
      if (p > c->upper) continue;
      if (p < c->lower) {
        c->eof = true;
        return SQLITE_OK;
      }
      if (c->want_seq && p.seq != c->seq_equal) continue;
      c->current = p;
      c->eof = false;
      return SQLITE_OK;
    }
    // The next block down: first the one that may straddle the upper bound, then the rest.
    sqlite3_stmt* st = c->below_started ? c->below : c->straddling;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      if ((rc = load_block(c, st)) != SQLITE_OK) return rc;
      continue;
    }
    if (rc != SQLITE_DONE) return rc;
    if (c->below_started) {  // set from the start when there is no upper bound (filter)
      c->eof = true;
      return SQLITE_OK;
    }
    c->below_started = true;
  }
}

int filter(sqlite3_vtab_cursor* cur, int plan, const char*, int argc, sqlite3_value** argv) {
  auto* c = reinterpret_cast<Cursor*>(cur);
  sqlite3_reset(c->straddling);
  sqlite3_reset(c->below);
  c->eof = true;
  c->block.clear();
  c->next = 0;
  if (argc < 2) return SQLITE_OK;
  int at = 0;
  c->facet = sqlite3_value_int64(argv[at++]);
  const auto* text = sqlite3_value_text(argv[at]);
  c->value.assign(text ? reinterpret_cast<const char*>(text) : "",
                  static_cast<std::size_t>(sqlite3_value_bytes(argv[at])));
  ++at;
  c->upper = {highest, highest};
  c->lower = {lowest, lowest};
  c->want_seq = false;
  // A bound that is not an integer (NULL, text) matches nothing, as in SQL.
  auto integer = [](sqlite3_value* v, std::int64_t& out) {
    if (sqlite3_value_numeric_type(v) != SQLITE_INTEGER) return false;
    out = sqlite3_value_int64(v);
    return true;
  };
  std::int64_t n = 0;
  if (plan & has_upper) {
    if (!integer(argv[at++], n)) return SQLITE_OK;
    if (plan & upper_inclusive) c->upper = {n, highest};
    else if (n == lowest) return SQLITE_OK;
    else c->upper = {n - 1, highest};
  }
  if (plan & has_lower) {
    if (!integer(argv[at++], n)) return SQLITE_OK;
    if (plan & lower_inclusive) c->lower = {n, lowest};
    else if (n == highest) return SQLITE_OK;
    else c->lower = {n + 1, lowest};
  }
  if (plan & has_at_equal) {
    if (!integer(argv[at++], n)) return SQLITE_OK;
    c->upper = std::min(c->upper, Posting{n, highest});
    c->lower = std::max(c->lower, Posting{n, lowest});
  }
  if (plan & has_seq_equal) {
    if (!integer(argv[at++], c->seq_equal)) return SQLITE_OK;
    c->want_seq = true;
    if (plan & has_at_equal) {  // one posting: the block holding it is the only one to read
      c->upper = std::min(c->upper, Posting{c->upper.at, c->seq_equal});
      c->lower = std::max(c->lower, Posting{c->lower.at, c->seq_equal});
    }
  }
  if (c->upper < c->lower) return SQLITE_OK;
  for (sqlite3_stmt* st : {c->straddling, c->below}) {
    sqlite3_bind_int64(st, 1, c->facet);
    sqlite3_bind_text(st, 2, c->value.data(), static_cast<int>(c->value.size()), SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, c->upper.at);
    sqlite3_bind_int64(st, 4, c->upper.seq);
  }
  sqlite3_bind_int64(c->below, 5, c->lower.at);
  // Without an upper bound every block ends before it: the straddling step is skipped.
  c->below_started = c->upper.at == highest;
  return advance(c);
}

int next(sqlite3_vtab_cursor* cur) { return advance(reinterpret_cast<Cursor*>(cur)); }

int eof(sqlite3_vtab_cursor* cur) { return reinterpret_cast<Cursor*>(cur)->eof ? 1 : 0; }

int column(sqlite3_vtab_cursor* cur, sqlite3_context* ctx, int i) {
  auto* c = reinterpret_cast<Cursor*>(cur);
  switch (i) {
    case facet_column: sqlite3_result_int64(ctx, c->facet); break;
    case value_column:
      sqlite3_result_text(ctx, c->value.data(), static_cast<int>(c->value.size()), SQLITE_TRANSIENT);
      break;
    case at_column: sqlite3_result_int64(ctx, c->current.at); break;
    default: sqlite3_result_int64(ctx, c->current.seq); break;
  }
  return SQLITE_OK;
}

int rowid(sqlite3_vtab_cursor* cur, sqlite3_int64* out) {
  *out = reinterpret_cast<Cursor*>(cur)->current.seq;
  return SQLITE_OK;
}

sqlite3_module make_module() {
  sqlite3_module m{};
  m.iVersion = 0;
  m.xCreate = nullptr;  // eponymous only: it exists in every schema that registers it, never created
  m.xConnect = connect;
  m.xBestIndex = best_index;
  m.xDisconnect = disconnect;
  m.xDestroy = disconnect;
  m.xOpen = open;
  m.xClose = close;
  m.xFilter = filter;
  m.xNext = next;
  m.xEof = eof;
  m.xColumn = column;
  m.xRowid = rowid;
  return m;
}

const sqlite3_module search_keys_module = make_module();

}  // namespace

std::string encode_postings(const Posting* p, std::size_t n) {
  std::string out;
  out.reserve(n * 3);
  for (std::size_t i = 1; i < n; ++i) {
    put_varint(out, zigzag(p[i].at - p[i - 1].at));
    put_varint(out, zigzag(p[i].seq - p[i - 1].seq));
  }
  return out;
}

bool decode_postings(Posting first, std::string_view bytes, std::vector<Posting>& out) {
  out.push_back(first);
  Posting p = first;
  while (!bytes.empty()) {
    std::uint64_t da = 0, ds = 0;
    if (!get_varint(bytes, da) || !get_varint(bytes, ds)) return false;
    p.at += unzigzag(da);
    p.seq += unzigzag(ds);
    out.push_back(p);
  }
  return true;
}

void register_search_keys_table(sqlite3* db) {
  sqlite3_create_module_v2(db, "search_keys", &search_keys_module, nullptr, nullptr);
}

}  // namespace tellonce::store_detail
