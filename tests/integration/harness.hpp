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
unsigned short free_port();

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
  void kill();      // SIGKILL, wait: a crash
  bool running();
  std::string output() const;  // all stdout+stderr so far (from the log file)

 private:
  int pid_ = -1;
  int out_fd_ = -1;
  std::string buffered_;
  std::filesystem::path log_file_;
};

struct HttpReply {
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
  long new_connections = 0;                     // 0 when the connection was reused
};

// A keep-alive HTTP client (one reused connection, like a partner's integration engine).
class Client {
 public:
  Client();
  ~Client();
  HttpReply request(const std::string& method, const std::string& url, const std::string& body = "",
                    std::vector<std::string> headers = {});
  HttpReply post_fhir(const std::string& url, const std::string& body, const std::string& partner,
                      std::vector<std::string> extra_headers = {});

 private:
  void* handle_;
};

// A demo partner endpoint (tellonce demo-sink) recording what it receives.
class Sink {
 public:
  Sink(const std::filesystem::path& dir, std::string name, unsigned short port,
       std::vector<std::string> extra_args = {});
  unsigned short port() const { return port_; }
  std::vector<std::string> received_message_ids() const;  // X-Tellonce-Message-Id, arrival order
  std::vector<std::string> received_bodies() const;
  // Waits until `n` requests have been recorded.
  bool wait_for(std::size_t n, std::chrono::milliseconds timeout) const;
  void stop();

 private:
  std::filesystem::path record_;
  unsigned short port_;
  std::unique_ptr<Process> proc_;
};

// A broker with its own data directory and config; the config text has {{PORT}},
// {{SINK_A}}... placeholders filled by the test.
class Broker {
 public:
  Broker(const std::filesystem::path& dir, const std::string& config_yaml, unsigned short port);
  ~Broker();
  void start();
  int stop();   // SIGTERM
  void crash(); // SIGKILL
  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const std::filesystem::path& config_path() const { return config_; }
  std::string output() const;

 private:
  std::filesystem::path dir_, config_;
  unsigned short port_;
  std::unique_ptr<Process> proc_;
  int starts_ = 0;
};

// A fresh temporary directory removed at the end of the test (tests/support).
using TempDir = test::TempDir;

// JSON helpers for assertions.
std::string json_string_at(const std::string& json, const std::string& pointer);  // RFC 6901
std::vector<std::string> outcome_locations(const std::string& operation_outcome);
std::vector<std::string> outcome_rules(const std::string& operation_outcome);

// Polls GET /api/messages/{id} until `state` or the timeout; returns the last body.
std::string wait_for_state(Client& c, const std::string& base, const std::string& id, const std::string& state,
                           std::chrono::milliseconds timeout);

}  // namespace tellonce::itest
