// Thin RAII wrappers over the SQLite C API, used only by the store.
//
// Errors are sticky, like iostream state: the first failing step is recorded on the
// connection and later steps on it do nothing until clear_error(). Store code can then
// read straight through a request and check failed() once, at the transaction boundary.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace tellonce::sqlite {

class Connection {
 public:
  // Throws std::runtime_error: opening happens at start-up only.
  Connection(const std::filesystem::path& path, bool read_only);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  sqlite3* handle() const { return db_; }

  // Runs one or more statements; throws on error. For start-up (schema, pragmas).
  void exec_or_throw(const std::string& sql);

  bool failed() const { return error_code_ != SQLITE_OK; }
  int error_code() const { return error_code_; }
  // SQLite's message, its generic text for the code when different, and the code.
  const std::string& error_message() const { return error_message_; }
  void record_error(int code);
  void clear_error();

 private:
  sqlite3* db_ = nullptr;
  int error_code_ = SQLITE_OK;
  std::string error_message_;
};

// A prepared statement, prepared once and reused: start() resets it and clears bindings.
class Statement {
 public:
  Statement(Connection& db, std::string_view sql);  // throws on a bad statement
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& start();
  // Bound bytes are not copied: they must stay alive until the statement is stepped.
  Statement& bind(int index, std::int64_t value);
  Statement& bind(int index, std::string_view text);
  Statement& bind_blob(int index, std::string_view bytes);
  Statement& bind_null(int index);

  // True while a row is available. False when done, or on error (recorded on the connection).
  bool step();
  // Steps to completion, then resets so no read snapshot or lock is held.
  void run();
  void reset();

  std::int64_t int64(int column) const;
  std::string text(int column) const;  // TEXT or BLOB bytes
  bool is_null(int column) const;

 private:
  Connection& db_;
  sqlite3_stmt* stmt_ = nullptr;
};

}  // namespace tellonce::sqlite
