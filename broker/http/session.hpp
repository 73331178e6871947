// One HTTP/1.1 connection's request loop, templated on the stream so that tests can run it over
// Beast's test::stream with injected failures. Private to broker/http and its tests.
//
// Contract: serve_session runs on the session's executor (a strand for sockets) and every
// member of Session is touched only there. It returns when the peer goes away, a deadline
// passes, a request is refused, or the server is stopping; it never throws for the peer's
// behaviour. The caller keeps `limits`, `stopping` and whatever `dispatch` refers to alive until
// it returns. A Session is shared with its deadline handler, so hold it by shared_ptr.
#pragma once

#include "tellonce/http_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/core/string.hpp>

#include <array>
#include <atomic>
#include <memory>
#include <optional>

namespace tellonce::http_detail {

namespace beast = boost::beast;
using tcp = asio::ip::tcp;
inline constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// How the session closes, half-closes and interrupts its stream: one specialisation per stream
// type (tests add one for Beast's test::stream). interrupt() must make a pending read or write
// complete soon with an error.
template <class Stream>
struct StreamOps;

template <>
struct StreamOps<tcp::socket> {
  static void close(tcp::socket& s) {
    boost::system::error_code ec;
    s.close(ec);
  }
  static void shutdown_send(tcp::socket& s) {
    boost::system::error_code ec;
    s.shutdown(tcp::socket::shutdown_send, ec);
  }
  // Cancel, not close: after a read deadline the socket still has to carry the 408.
  static void interrupt(tcp::socket& s) {
    boost::system::error_code ec;
    s.cancel(ec);
  }
};

// TLS: a half-close or close of the TCP connection beneath, without waiting for the peer's
// close_notify (the peer may never send it; the answer's length is framed by HTTP).
template <>
struct StreamOps<asio::ssl::stream<tcp::socket>> {
  static void close(asio::ssl::stream<tcp::socket>& s) { StreamOps<tcp::socket>::close(s.next_layer()); }
  static void shutdown_send(asio::ssl::stream<tcp::socket>& s) { StreamOps<tcp::socket>::shutdown_send(s.next_layer()); }
  static void interrupt(asio::ssl::stream<tcp::socket>& s) { StreamOps<tcp::socket>::interrupt(s.next_layer()); }
};

template <class Stream>
struct Session : std::enable_shared_from_this<Session<Stream>> {
  template <class... Args>
  explicit Session(Args&&... args) : stream(std::forward<Args>(args)...), deadline(stream.get_executor()) {}

  Stream stream;
  asio::steady_timer deadline;   // one per connection, re-armed per phase
  unsigned deadline_generation = 0;
  bool timed_out = false;        // the current phase's deadline passed
  bool busy = false;             // a request is being handled (HttpServer::stop lets it finish)

  // Starts a phase that must end within `d`; on expiry the stream is interrupted.
  void arm(std::chrono::steady_clock::duration d) {
    timed_out = false;
    deadline.expires_after(d);
    deadline.async_wait([self = this->shared_from_this(), generation = ++deadline_generation](
                            const boost::system::error_code& ec) {
      if (ec || generation != self->deadline_generation) return;
      self->timed_out = true;
      StreamOps<Stream>::interrupt(self->stream);
    });
  }
  // Ends the phase: a deadline that already fired but has not run yet is ignored.
  void disarm() {
    ++deadline_generation;
    deadline.cancel();
  }
};

// Responses the session sends on its own, defined in server.cpp.
HttpResponse bare_outcome(unsigned version, http::status status, const char* code,
                          const std::string& diagnostics, std::string rule = {});
std::optional<HttpResponse> rejection(const boost::system::error_code& ec,
                                      http::request_parser<http::string_body>& parser,
                                      const HttpLimits& limits);
std::optional<HttpResponse> framing_problem(const HttpRequest& req);

// The client's IP address, for kPeerHeader; empty for a stream without one (tests' streams).
template <class Stream>
std::string peer_address(Stream& stream) {
  auto& lowest = beast::get_lowest_layer(stream);
  if constexpr (requires(boost::system::error_code& ec) { lowest.remote_endpoint(ec); }) {
    boost::system::error_code ec;
    auto endpoint = lowest.remote_endpoint(ec);
    if (!ec) return endpoint.address().to_string();
  }
  return {};
}

// Answers a request we refuse to read and closes. The peer may still be sending, and closing
// a socket with unread input makes the kernel send a reset that can destroy the answer before
// the client reads it, so we linger briefly, discarding a bounded amount, after half-closing.
template <class Stream>
asio::awaitable<void> close_after_reject(Session<Stream>& s, HttpResponse res) {
  s.arm(std::chrono::seconds(5));
  auto [wec, wn] = co_await http::async_write(s.stream, res, use_tuple);
  if (!wec) {
    StreamOps<Stream>::shutdown_send(s.stream);
    s.arm(std::chrono::seconds(1));
    std::array<char, 16 * 1024> sink;
    std::size_t discarded = 0;
    while (discarded < 256 * 1024) {
      auto [rec, n] = co_await s.stream.async_read_some(asio::buffer(sink), use_tuple);
      if (rec) break;
      discarded += n;
    }
  }
  s.disarm();
  StreamOps<Stream>::close(s.stream);
}

// Serves requests on one connection until it ends. `dispatch` is called as
// `asio::awaitable<HttpResponse> dispatch(HttpRequest&)` and must not throw.
template <class Stream, class Dispatch>
asio::awaitable<void> serve_session(std::shared_ptr<Session<Stream>> session, const HttpLimits& limits,
                                    Dispatch dispatch, const std::atomic<bool>& stopping) {
  Session<Stream>& s = *session;
  beast::flat_buffer buffer;  // reused for every request on the connection
  // Room for a typical record up front: Beast reads at most the free space, and a buffer that
  // grows 512 bytes at a time costs one recvmsg per 512 bytes of body.
  buffer.reserve(64 * 1024);
  // Asked once: a connection's peer does not change, and a getpeername per request showed up
  // in bench/load (one syscall and one address formatted per record).
  const std::string peer = peer_address(s.stream);
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
    parser.body_limit(limits.max_body_bytes);

    // One deadline covers the idle wait, the header and the body.
    s.arm(limits.idle_timeout);
    auto [ec, n] = co_await http::async_read_header(s.stream, buffer, parser, use_tuple);
    // stop() closes an idle connection, but a read that had already completed is still
    // delivered after that. Handling its request would commit a record with no way left to
    // answer it, so the request is dropped unread (the client sees the connection close).
    if (!ec && stopping) break;
    if (!ec) {
      s.busy = true;
      if (auto refused = framing_problem(parser.get())) {
        co_await close_after_reject(s, std::move(*refused));
        break;
      }
      if (beast::iequals(parser.get()[http::field::expect], "100-continue")) {
        http::response<http::empty_body> go_on{http::status::continue_, parser.get().version()};
        std::tie(ec, n) = co_await http::async_write(s.stream, go_on, use_tuple);
      }
    }
    if (!ec && !parser.is_done()) {
      std::tie(ec, n) = co_await http::async_read(s.stream, buffer, parser, use_tuple);
    }
    if (ec) {
      std::optional<HttpResponse> answer;
      if (s.timed_out) {
        // An idle keep-alive connection just closes; a request cut off by the deadline is told.
        if (parser.got_some() || buffer.size() > 0) {
          unsigned version = parser.is_header_done() ? parser.get().version() : 11;
          answer = bare_outcome(version, http::status::request_timeout, "timeout",
                                "the request was not received whole within " +
                                    std::to_string(limits.idle_timeout.count()) + " ms",
                                "http-timeout");
        }
      } else {
        answer = rejection(ec, parser, limits);
      }
      if (answer) co_await close_after_reject(s, std::move(*answer));
      break;  // closed by the peer, timed out, cancelled by stop(), or answered above
    }
    s.disarm();  // the handler may wait on the store; the peer is not idle

    HttpRequest req = parser.release();
    // Who is asking, for handlers that record it (the admin API's actions): set here only, so
    // a client cannot claim another address.
    req.erase(kPeerHeader);
    if (!peer.empty()) req.set(kPeerHeader, peer);
    HttpResponse res = co_await dispatch(req);
    if (!req.keep_alive() || stopping) res.keep_alive(false);
    if (res[http::field::server].empty()) res.set(http::field::server, "tellonce");
    if (!res.has_content_length() && !res.chunked()) res.prepare_payload();

    s.arm(limits.idle_timeout);
    auto [wec, wn] = co_await http::async_write(s.stream, res, use_tuple);
    s.busy = false;
    if (wec) break;
    // stopping is checked again: a stop() that came while this answer was being written left
    // the connection open because it was busy, and nothing else would close it now.
    if (!res.keep_alive() || stopping) {
      StreamOps<Stream>::shutdown_send(s.stream);
      break;
    }
  }
  s.disarm();
  StreamOps<Stream>::close(s.stream);
}

}  // namespace tellonce::http_detail
