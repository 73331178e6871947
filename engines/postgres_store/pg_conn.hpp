// Thin RAII wrappers over libpq, used only by the PostgreSQL store. Blocking: call them on the
// store's own threads, never on an event loop.
//
// Errors are sticky, as in the SQLite wrapper: the first failing statement is recorded on the
// connection and later ones do nothing (return an empty result) until clear_error(). Store code
// reads straight through a request and checks failed() once, at the transaction boundary; in
// PostgreSQL a failed statement aborts the transaction anyway.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tellonce::pg {

// Positional parameters ($1, $2 ...), sent as text except those added as bytes (binary bytea).
class Params {
 public:
  Params& text(std::string_view v) { return add(std::string(v), 0); }
  Params& number(std::int64_t v) { return add(std::to_string(v), 0); }
  Params& bytes(std::string_view v) { return add(std::string(v), 1); }
  Params& null() {
    values_.emplace_back();
    nulls_.push_back(true);
    formats_.push_back(0);
    return *this;
  }
  std::size_t size() const { return values_.size(); }

 private:
  friend class Connection;
  Params& add(std::string v, int format) {
    values_.push_back(std::move(v));
    nulls_.push_back(false);
    formats_.push_back(format);
    return *this;
  }
  std::vector<std::string> values_;
  std::vector<bool> nulls_;
  std::vector<int> formats_;
};

// A query's rows, in text format. Empty (no rows) when the statement failed or was skipped.
class Rows {
 public:
  Rows() = default;
  explicit Rows(PGresult* r) : result_(r, &PQclear) {}
  int size() const { return result_ ? PQntuples(result_.get()) : 0; }
  bool empty() const { return size() == 0; }
  std::string text(int row, int col) const;
  std::int64_t int64(int row, int col) const;
  bool is_null(int row, int col) const { return PQgetisnull(result_.get(), row, col) != 0; }
  std::string bytes(int row, int col) const;  // a bytea column (hex text) decoded
  std::int64_t affected() const;              // rows an UPDATE/INSERT/DELETE changed

 private:
  std::shared_ptr<PGresult> result_;
};

class Connection {
 public:
  explicit Connection(std::string conninfo) : conninfo_(std::move(conninfo)) {}
  ~Connection() { disconnect(); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Connects when not connected (or the connection broke). false, with error_message() set,
  // when the server cannot be reached; a server that refuses fails at once, an unreachable one
  // after connect_timeout (part of the conninfo).
  bool ensure_connected();
  void disconnect();
  bool connected() const { return conn_ && PQstatus(conn_) == CONNECTION_OK; }
  PGconn* handle() const { return conn_; }

  Rows exec(const std::string& sql, const Params& params = {});
  // As exec, for a statement run many times: prepared on this connection the first time (parsed
  // and planned once, not on every call), then executed by name. For the writer's per-record
  // statements only: a prepared search could be given a generic plan worse than its custom ones.
  Rows exec_prepared(const std::string& sql, const Params& params);
  // Runs one or more statements without parameters; throws std::runtime_error on error. Start-up only.
  void exec_or_throw(const std::string& sql);

  bool failed() const { return failed_; }
  const std::string& error_message() const { return error_message_; }
  const std::string& sqlstate() const { return sqlstate_; }  // "23505"; empty for a broken connection
  // The connection itself failed (server gone, network): nothing the statement did is known.
  bool connection_lost() const { return failed_ && (!conn_ || PQstatus(conn_) != CONNECTION_OK); }
  void clear_error();

 private:
  void note_error(const std::string& message, PGresult* result);

  Rows result_of(PGresult* r);
  static void wire(const Params& params, std::vector<const char*>& values, std::vector<int>& lengths);

  std::string conninfo_;
  PGconn* conn_ = nullptr;
  std::map<std::string, std::string> prepared_;  // sql -> statement name, on this connection
  bool failed_ = false;
  std::string error_message_;
  std::string sqlstate_;
};

}  // namespace tellonce::pg
