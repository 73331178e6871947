#include "sqlite_db.hpp"

#include <stdexcept>

namespace tellonce::sqlite {

Connection::Connection(const std::filesystem::path& path, bool read_only) {
  int flags = SQLITE_OPEN_NOMUTEX;  // each connection belongs to one thread
  flags |= read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string why = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw std::runtime_error("cannot open message store " + path.string() + ": " + why +
                             " (does the directory exist and is it writable?)");
  }
  sqlite3_extended_result_codes(db_, 1);
}

Connection::~Connection() { sqlite3_close_v2(db_); }

void Connection::exec_or_throw(const std::string& sql) {
  char* msg = nullptr;
  int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &msg);
  if (rc != SQLITE_OK) {
    std::string why = msg ? msg : sqlite3_errstr(rc);
    sqlite3_free(msg);
    throw std::runtime_error("message store: " + why + " in: " + sql.substr(0, 80));
  }
}

void Connection::record_error(int code) {
  if (failed()) return;  // keep the first: later ones are usually consequences
  error_code_ = code;
  std::string message = sqlite3_errmsg(db_);
  std::string generic = sqlite3_errstr(code);
  error_message_ = message + (message == generic ? "" : " (" + generic + ")") + " [SQLite code " +
                   std::to_string(code) + "]";
}

void Connection::clear_error() {
  error_code_ = SQLITE_OK;
  error_message_.clear();
}

Statement::Statement(Connection& db, std::string_view sql) : db_(db) {
  int rc = sqlite3_prepare_v3(db.handle(), sql.data(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr);
  if (rc != SQLITE_OK)
    throw std::runtime_error("message store: cannot prepare \"" + std::string(sql) +
                             "\": " + sqlite3_errmsg(db.handle()));
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement& Statement::start() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  return *this;
}

Statement& Statement::bind(int index, std::int64_t value) {
  sqlite3_bind_int64(stmt_, index, value);
  return *this;
}

Statement& Statement::bind(int index, std::string_view text) {
  sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
  return *this;
}

Statement& Statement::bind_blob(int index, std::string_view bytes) {
  sqlite3_bind_blob(stmt_, index, bytes.data(), static_cast<int>(bytes.size()), SQLITE_STATIC);
  return *this;
}

Statement& Statement::bind_null(int index) {
  sqlite3_bind_null(stmt_, index);
  return *this;
}

bool Statement::step() {
  if (db_.failed()) return false;
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc != SQLITE_DONE) db_.record_error(rc);
  return false;
}

void Statement::run() {
  while (step()) {
  }
  reset();
}

void Statement::reset() { sqlite3_reset(stmt_); }

std::int64_t Statement::int64(int column) const { return sqlite3_column_int64(stmt_, column); }

std::string Statement::text(int column) const {
  auto* bytes = static_cast<const char*>(sqlite3_column_blob(stmt_, column));
  int n = sqlite3_column_bytes(stmt_, column);
  return bytes ? std::string(bytes, static_cast<std::size_t>(n)) : std::string();
}

bool Statement::is_null(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

}  // namespace tellonce::sqlite
