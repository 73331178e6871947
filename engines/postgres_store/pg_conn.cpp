#include "pg_conn.hpp"

#include <cstdlib>
#include <stdexcept>

namespace tellonce::pg {

std::string Rows::text(int row, int col) const {
  if (!result_ || PQgetisnull(result_.get(), row, col)) return {};
  return std::string(PQgetvalue(result_.get(), row, col), static_cast<std::size_t>(PQgetlength(result_.get(), row, col)));
}

std::int64_t Rows::int64(int row, int col) const {
  if (!result_ || PQgetisnull(result_.get(), row, col)) return 0;
  return std::strtoll(PQgetvalue(result_.get(), row, col), nullptr, 10);
}

std::string Rows::bytes(int row, int col) const {
  if (!result_ || PQgetisnull(result_.get(), row, col)) return {};
  std::size_t length = 0;
  auto* raw = PQunescapeBytea(reinterpret_cast<const unsigned char*>(PQgetvalue(result_.get(), row, col)), &length);
  if (!raw) return {};
  std::string out(reinterpret_cast<const char*>(raw), length);
  PQfreemem(raw);
  return out;
}

std::int64_t Rows::affected() const {
  if (!result_) return 0;
  const char* n = PQcmdTuples(result_.get());
  return n && *n ? std::strtoll(n, nullptr, 10) : 0;
}

bool Connection::ensure_connected() {
  if (connected()) return true;
  disconnect();
  conn_ = PQconnectdb(conninfo_.c_str());
  if (PQstatus(conn_) == CONNECTION_OK) return true;
  note_error(std::string("cannot connect to PostgreSQL: ") + PQerrorMessage(conn_), nullptr);
  disconnect();
  return false;
}

void Connection::disconnect() {
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
  prepared_.clear();  // prepared statements live and die with their session
}

void Connection::note_error(const std::string& message, PGresult* result) {
  if (failed_) return;
  failed_ = true;
  error_message_ = message;
  while (!error_message_.empty() && (error_message_.back() == '\n' || error_message_.back() == ' '))
    error_message_.pop_back();
  const char* state = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  sqlstate_ = state ? state : "";
}

void Connection::clear_error() {
  failed_ = false;
  error_message_.clear();
  sqlstate_.clear();
}

void Connection::wire(const Params& params, std::vector<const char*>& values, std::vector<int>& lengths) {
  for (std::size_t i = 0; i < params.values_.size(); ++i) {
    values.push_back(params.nulls_[i] ? nullptr : params.values_[i].data());
    lengths.push_back(static_cast<int>(params.values_[i].size()));
  }
}

Rows Connection::exec(const std::string& sql, const Params& params) {
  if (failed_) return Rows();
  if (!conn_) {
    note_error("not connected to PostgreSQL", nullptr);
    return Rows();
  }
  std::vector<const char*> values;
  std::vector<int> lengths;
  wire(params, values, lengths);
  return result_of(PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(),
                                lengths.data(), params.formats_.data(), 0));
}

Rows Connection::exec_prepared(const std::string& sql, const Params& params) {
  if (failed_) return Rows();
  if (!conn_) {
    note_error("not connected to PostgreSQL", nullptr);
    return Rows();
  }
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    const std::string name = "tellonce_" + std::to_string(prepared_.size() + 1);
    PGresult* r = PQprepare(conn_, name.c_str(), sql.c_str(), static_cast<int>(params.values_.size()), nullptr);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) return result_of(r);  // records the error
    PQclear(r);
    it = prepared_.emplace(sql, name).first;
  }
  std::vector<const char*> values;
  std::vector<int> lengths;
  wire(params, values, lengths);
  return result_of(PQexecPrepared(conn_, it->second.c_str(), static_cast<int>(values.size()), values.data(),
                                  lengths.data(), params.formats_.data(), 0));
}

Rows Connection::result_of(PGresult* r) {
  const auto status = PQresultStatus(r);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return Rows(r);
  note_error(r ? PQresultErrorMessage(r) : PQerrorMessage(conn_), r);
  if (error_message_.empty()) error_message_ = PQerrorMessage(conn_);
  PQclear(r);
  return Rows();
}

void Connection::exec_or_throw(const std::string& sql) {
  PGresult* r = PQexec(conn_, sql.c_str());
  const auto status = PQresultStatus(r);
  std::string error = status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK ? "" : PQresultErrorMessage(r);
  PQclear(r);
  if (!error.empty()) throw std::runtime_error("PostgreSQL: " + error);
}

}  // namespace tellonce::pg
