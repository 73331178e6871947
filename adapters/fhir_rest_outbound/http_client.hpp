// An HTTP/1.1 client for one partner's origin (scheme, host, port) on Boost.Beast: a pool of
// keep-alive connections driven by the broker's own io threads, no thread of its own.
//
// Contract
// - exchange() sends one request and reads its answer: the status and at most max_body_bytes of
//   the body (the rest is read and dropped, so the connection stays usable).
// - At most max_connections are open; a request beyond that waits for one to come free.
// - Deadlines: connect_timeout covers connecting and the TLS handshake of a new connection;
//   timeout covers the whole exchange, connecting included, and waiting for a connection.
//   They are kept by one watchdog timer a client that ticks (a quarter of the shorter timeout,
//   10-250 ms) while exchanges run, so an exchange ends up to one tick after its deadline.
//   Name resolution is the system's and is not cut short (an IP address resolves at once).
// - A connection that was reused and turns out to have been closed by the partner before any
//   of the answer came back (a write that fails, or the end of the stream before a status
//   line) is replaced by a fresh one and the request sent once more: servers close idle
//   connections, and the request was then never read. Anything else is a result, not a retry.
// - TLS: the partner's certificate is verified and must name the URL's host, unless the
//   caller's context says otherwise; SNI is sent.
// - Threading: exchange() from any io thread, any number at once; each connection does its I/O
//   on a strand of its own and the caller resumes on its own executor. stop() from any thread:
//   waiting requests end at once and those in flight as soon as their sockets close, both as
//   Status::stopped. The client's state lives as long as the last exchange that uses it.
// - Never throws for network failures: they are results.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

namespace boost::asio::ssl { class context; }

namespace tellonce {

namespace asio = boost::asio;

// The request as the caller builds it. The client adds the request line, Host and
// Content-Length. `headers` are whole lines ("Name: value\r\n"); header_line() makes one.
// Nothing is copied: `body` must stay alive until exchange() completes.
struct OutboundHttpRequest {
  std::string_view method = "POST";
  std::string target;   // origin-form: "/fhir/Patient"
  std::string headers;
  std::string_view body;
};

// "Name: value\r\n", with any control character in the value dropped (no header splitting).
std::string header_line(std::string_view name, std::string_view value);

struct HttpExchange {
  enum class Status {
    answered,        // `code` and `body` hold the answer
    connect_failed,  // nothing was sent
    failed,          // the connection broke before a whole answer came
    timed_out,       // no whole answer before the deadline
    stopped,         // the client was stopped
  };
  Status status = Status::connect_failed;
  unsigned code = 0;
  std::string body;            // at most max_body_bytes of the answer's body
  std::string detail;          // what went wrong, for people (never the request's contents)
  bool broker_fault = false;   // this process ran out of descriptors or memory: not the partner's fault
};

struct HttpClientOptions {
  std::string host;            // without brackets for IPv6
  std::string port;
  std::chrono::milliseconds timeout{10000};
  std::chrono::milliseconds connect_timeout{3000};
  int max_connections = 16;
  std::size_t max_body_bytes = 16 * 1024;
  std::shared_ptr<asio::ssl::context> tls_context;  // set: https (make_tls_client_context); null: http
};

class HttpClient {
 public:
  HttpClient(asio::any_io_executor executor, HttpClientOptions options);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // `request` stays owned by the caller and alive until this completes.
  asio::awaitable<HttpExchange> exchange(const OutboundHttpRequest& request);
  void stop();

  struct Shared;

 private:
  std::shared_ptr<Shared> shared_;
};

}  // namespace tellonce
