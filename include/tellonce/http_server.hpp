// Asynchronous HTTP/1.1 server on Asio + Beast with C++20 coroutines: keep-alive, one strand
// per connection, no thread per connection. Handlers are mounted by path prefix; several
// adapters and the API can share one listen address.
#pragma once

#include "tellonce/error.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tellonce {

namespace asio = boost::asio;
namespace http = boost::beast::http;

using HttpRequest = http::request<http::string_body>;
using HttpResponse = http::response<http::string_body>;
// Set by the server on every request it hands to a handler: the client's IP address (any value
// the client sent under this name is removed first).
inline constexpr std::string_view kPeerHeader = "X-Tellonce-Peer";
// Runs on the connection's strand. Must not block.
using HttpHandler = std::function<asio::awaitable<HttpResponse>(HttpRequest&)>;

class TlsServerContext;  // tellonce/tls.hpp
class ConnectionCaps;    // tellonce/limits.hpp

// On a TLS listener the server sets these request headers from the client certificate the
// handshake verified (absent when the client sent none); on every listener it first removes
// any a client sent, so a handler may trust them. Values: certificate_fingerprint() and
// certificate_subject() of tellonce/tls.hpp.
inline constexpr const char* kClientCertFingerprintHeader = "X-Tellonce-Client-Cert-Sha256";
inline constexpr const char* kClientCertSubjectHeader = "X-Tellonce-Client-Cert-Subject";

struct HttpLimits {
  std::size_t max_body_bytes = 10 * 1024 * 1024;
  // A request must arrive whole within this long of the previous answer (or of connecting);
  // one cut off by it is answered 408, an idle keep-alive connection is just closed.
  std::chrono::milliseconds idle_timeout{60'000};
  std::size_t max_header_bytes = 16 * 1024;
  // Open connections one server keeps at most. When it is full, a new connection is accepted,
  // answered 503 with an OperationOutcome (best effort, never waiting) and closed at once, so
  // idle clients cannot take the descriptors outbound delivery and the store need.
  std::size_t max_connections = 10'000;
};

class HttpServer {
 public:
  HttpServer(asio::io_context& io, std::string listen, HttpLimits limits);
  ~HttpServer();
  // Longest matching prefix wins. "/fhir" matches "/fhir", "/fhir/..." and "/fhir?...".
  void mount(std::string prefix, HttpHandler handler);
  void start();          // binds; throws std::runtime_error with the address on failure
  // Lowers this server's connection cap below HttpLimits::max_connections; before start().
  void cap_connections(std::size_t n);
  // Serves this address over TLS with `tls`'s current context (before start()). A handshake not
  // done within its handshake_timeout is dropped; a reload affects only later connections.
  void use_tls(std::shared_ptr<TlsServerContext> tls);
  // Caps connections per remote address and per partner (its client certificate) on this
  // server (before start()). Over a cap: 429 with Retry-After and close (on TLS after the
  // handshake, a few at a time; beyond that just closed), logged at most once a second.
  void limit_connections(std::shared_ptr<ConnectionCaps> caps);
  std::size_t max_connections() const;
  // Stops accepting and closes idle connections; a connection busy with a request finishes
  // it, answers with Connection: close and then closes. Any thread; returns at once.
  void stop();
  unsigned short port() const;  // bound port (useful with port 0)
  // Connections not yet closed; after stop() it falls to 0 as busy ones finish. Any thread.
  std::size_t open_connections() const;
  const std::string& listen() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

// The listener facility an adapter that serves HTTP gets: mount a handler under a path prefix
// on the server for a listen address (servers are shared per address). Only before the
// servers start; throws std::logic_error for a prefix already mounted there.
class HttpMounts {
 public:
  virtual ~HttpMounts() = default;
  virtual void mount(const std::string& listen, std::string prefix, HttpHandler handler) = 0;
};

// All servers of the process, one per listen address.
class HttpServers final : public HttpMounts {
 public:
  HttpServers(asio::io_context& io, HttpLimits limits);
  HttpServer& at(const std::string& listen);
  void mount(const std::string& listen, std::string prefix, HttpHandler handler) override {
    at(listen).mount(std::move(prefix), std::move(handler));
  }
  // Starts every server, sharing `connection_budget` (descriptors all inbound connections
  // together may use) equally among them; each keeps at most its HttpLimits::max_connections.
  void start_all(std::size_t connection_budget = static_cast<std::size_t>(-1));
  void stop_all();
  std::size_t open_connections() const;  // over every server
  // Each server's configured listen address and the port it is bound to (after start_all).
  std::vector<std::pair<std::string, unsigned short>> bound() const;

 private:
  asio::io_context& io_;
  HttpLimits limits_;
  std::map<std::string, std::unique_ptr<HttpServer>> servers_;
};

// Raises this process's soft limit on open descriptors to its hard limit (a default soft
// limit of 1,024 is a few hundred idle clients). Returns the limit now in force. Call once at
// start-up, before any thread is started.
std::size_t raise_open_file_limit();

// A response with an OperationOutcome body (application/fhir+json) for the given issues.
struct Issue;
// The HTTP status a broker error code is answered with, for every HTTP front end.
http::status http_status_for(Errc code);

HttpResponse outcome_response(const HttpRequest& req, http::status status,
                              const std::vector<Issue>& issues);
HttpResponse json_response(const HttpRequest& req, http::status status, std::string body,
                           std::string content_type = "application/json");
// 429 with Retry-After and an OperationOutcome (issue type `throttled`) naming the limit
// (tellonce/limits.hpp Throttle), for every HTTP front end.
struct Throttle;
HttpResponse throttled_response(const HttpRequest& req, const Throttle& throttle);

}  // namespace tellonce
