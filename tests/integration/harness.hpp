// Integration harness: runs the real `tellonce` binary (broker and demo sinks) on 127.0.0.1
// and talks to it with libcurl, as a partner would.
#pragma once

#include "support/temp_dir.hpp"

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tellonce::itest {

std::filesystem::path tellonce_binary();
std::filesystem::path source_dir();
std::filesystem::path shared_data_dir();  // ../shared/data beside the checkout
std::string read_file(const std::filesystem::path& p);
void write_file(const std::filesystem::path& p, const std::string& text);

// A loopback port the test holds for its whole life: bound (SO_REUSEADDR) but not listening,
// so no other process gets it and a connection to it is refused, like a partner that is down.
// A demo-sink started on it binds it too (HttpServer also sets SO_REUSEADDR) and serves there.
class ReservedPort {
 public:
  ReservedPort();  // throws std::runtime_error when no port can be bound
  ~ReservedPort();
  ReservedPort(const ReservedPort&) = delete;
  ReservedPort& operator=(const ReservedPort&) = delete;
  unsigned short port() const { return port_; }
  operator unsigned short() const { return port_; }

 private:
  int fd_ = -1;
  unsigned short port_ = 0;
};

// A child process with its stdout captured line by line.
class Process {
 public:
  Process(std::vector<std::string> args, std::filesystem::path log_file);
  ~Process();  // SIGKILL if still running
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // Waits until a stdout line contains `needle`; returns that line.
  std::optional<std::string> wait_for_line(const std::string& needle, std::chrono::milliseconds timeout);
  int terminate();  // SIGTERM, wait, exit status
  void signal(int sig);
  // Waits for the process to end by itself; its exit status, or -1 on timeout (still running).
  int wait_exit(std::chrono::milliseconds timeout);
  void kill();      // SIGKILL, wait: a crash
  bool running();
  std::string output() const;  // all stdout+stderr so far (from the log file)

 private:
  int pid_ = -1;
  int exit_status_ = -1;  // once reaped
  int out_fd_ = -1;
  std::string buffered_;
  std::filesystem::path log_file_;
};

// A blocking loopback connection for writing a request in pieces (a header now, its body after
// something else has happened). Reads give up after 20 s, so a broken server fails the test
// instead of hanging it.
class RawConnection {
 public:
  explicit RawConnection(unsigned short port);  // throws std::runtime_error when it cannot connect
  ~RawConnection();
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;
  bool send_all(const std::string& bytes);
  // Reads until `needle` has arrived (or the peer closes or times out); returns what came.
  std::string read_until(const std::string& needle);
  std::string read_to_end() { return read_until(std::string(1, '\0') + "never"); }

 private:
  int fd_ = -1;
};

struct HttpReply {
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
  long new_connections = 0;                     // 0 when the connection was reused
};

// Operators every test broker has (Broker appends kTestOperatorsYaml to a config without an
// `operators:` section): one per role, signing in with these tokens (issue 12).
inline constexpr const char* kViewerToken = "itest-viewer-token-5f1c9a7e3b2d4c6a";
inline constexpr const char* kOperatorToken = "itest-operator-token-5f1c9a7e3b2d4c6a";
inline constexpr const char* kAdminToken = "itest-admin-token-5f1c9a7e3b2d4c6a";
inline constexpr const char* kMetricsToken = "itest-metrics-token-5f1c9a7e3b2d4c6a";
extern const char* const kTestOperatorsYaml;  // "operators:\n  - { name: itest-viewer, role: viewer, ... }"
// The "inbound:" section most tests' configs share: the FHIR REST endpoint "fhir-http" on a port
// of its own (127.0.0.1:0, read back by the harness), that takes X-Tellonce-Partner.
extern const char* const kFhirHttpInboundYaml;
std::string bearer(const std::string& token);  // "Authorization: Bearer <token>"
// Writes `token` to dir/token and returns the path, for the CLI's --token-file.
std::string token_file(const std::filesystem::path& dir, const std::string& token = kOperatorToken);

// A keep-alive HTTP client (one reused connection, like a partner's integration engine). On
// /api/ and /metrics URLs it signs in as the test admin (kAdminToken) unless the request has its
// own Authorization header; operator_token("") turns that off (to test refusals).
class Client {
 public:
  void operator_token(std::string token) { operator_token_ = std::move(token); }
  Client();
  ~Client();
  HttpReply request(const std::string& method, const std::string& url, const std::string& body = "",
                    std::vector<std::string> headers = {});
  HttpReply post_fhir(const std::string& url, const std::string& body, const std::string& partner,
                      std::vector<std::string> extra_headers = {});

 private:
  void* handle_;
  std::string operator_token_ = kAdminToken;
};

// A demo partner endpoint (tellonce demo-sink) recording what it receives. With port 0 the
// sink binds a port of its own and port() is the one it reports.
class Sink {
 public:
  Sink(const std::filesystem::path& dir, std::string name, unsigned short port,
       std::vector<std::string> extra_args = {});
  ~Sink() { stop(); }
  unsigned short port() const { return port_; }
  std::vector<std::string> received_message_ids() const;  // X-Tellonce-Message-Id, arrival order
  std::vector<std::string> received_bodies() const;
  // Waits until `n` requests have been recorded.
  bool wait_for(std::size_t n, std::chrono::milliseconds timeout) const;
  void stop();  // SIGTERM; a sanitizer report in its output fails the test

 private:
  std::filesystem::path record_;
  unsigned short port_;
  std::unique_ptr<Process> proc_;
};

// A broker with its own data directory and config. Its listen addresses should use port 0:
// the broker binds them and reports the ports (`  listening 127.0.0.1:N` lines), and base() is
// the first one reported by the latest start(). `port` is used only when it is not 0.
class Broker {
 public:
  Broker(const std::filesystem::path& dir, const std::string& config_yaml, unsigned short port = 0);
  ~Broker();
  void start();
  int stop();   // SIGTERM, wait, exit status
  void crash(); // SIGKILL
  Process& process() { return *proc_; }  // while started
  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const std::filesystem::path& config_path() const { return config_; }
  std::string output() const;

 private:
  std::filesystem::path dir_, config_;
  unsigned short configured_port_, port_;
  std::unique_ptr<Process> proc_;
  int starts_ = 0;
};

// A fresh temporary directory removed at the end of the test (tests/support).
using TempDir = test::TempDir;

// The config most integration tests start from: the API and one fhir-rest channel (base /fhir,
// X-Tellonce-Partner allowed) on 127.0.0.1:`port` (0: the broker binds one and reports it), the
// sending trust `rtx`, the practice `gp-a` with a fhir-rest endpoint on 127.0.0.1:`sink`, and one
// route sending every record to gp-a. `delivery` and `store_extra` are YAML lines (two-space
// indented) added to those sections.
std::string one_route_config(unsigned short sink, const std::string& delivery = "",
                             const std::string& store_extra = "", unsigned short port = 0);

// JSON helpers for assertions.
std::string json_string_at(const std::string& json, const std::string& pointer);  // RFC 6901
std::vector<std::string> outcome_locations(const std::string& operation_outcome);
std::vector<std::string> outcome_rules(const std::string& operation_outcome);

// The ids of every stored message (GET /api/messages?limit=1000), newest first.
std::vector<std::string> stored_message_ids(Client& c, const std::string& base);

// Polls GET /api/messages/{id} until `state` or the timeout; returns the last body.
std::string wait_for_state(Client& c, const std::string& base, const std::string& id, const std::string& state,
                           std::chrono::milliseconds timeout);

}  // namespace tellonce::itest
