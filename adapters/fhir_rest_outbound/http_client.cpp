#include "http_client.hpp"

#include "tellonce/adapter.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <deque>
#include <mutex>
#include <optional>
#include <vector>

namespace tellonce {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using Clock = std::chrono::steady_clock;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

std::string describe_local_resource_error(const error_code& ec) {
  if (ec == asio::error::no_descriptors || ec == boost::system::errc::too_many_files_open_in_system)
    return "out of file descriptors (" + ec.message() + ")";
  return "out of memory for a socket (" + ec.message() + ")";
}

std::string in_ms(std::chrono::milliseconds d) { return std::to_string(d.count()) + " ms"; }

// One keep-alive connection. Used by one exchange at a time; all its I/O runs on `strand`.
struct Connection {
  explicit Connection(const asio::any_io_executor& ex) : strand(asio::make_strand(ex)), socket(strand) {}

  asio::strand<asio::any_io_executor> strand;
  tcp::socket socket;
  std::optional<asio::ssl::stream<tcp::socket&>> tls;  // over `socket`, for https
  beast::flat_buffer buffer;     // bytes read past the last answer (none, normally)
  bool usable = false;           // connected, and the last answer left it open
  // The watchdog's view (strand only): an exchange running on it until `deadline`, and
  // whether the watchdog closed it for running past.
  bool busy = false;
  Clock::time_point deadline{};
  bool timed_out = false;

  void close() {
    error_code ignored;
    socket.close(ignored);
    usable = false;
  }
};

// What a request is given: a connection (connected or not yet), or word that the client stopped.
struct Grant {
  std::shared_ptr<Connection> connection;
  bool stopped = false;
};
using GrantHandler = asio::any_completion_handler<void(Grant)>;

}  // namespace

struct HttpClient::Shared {
  Shared(asio::any_io_executor ex, HttpClientOptions o)
      : executor(std::move(ex)), options(std::move(o)), watchdog(executor) {
    error_code not_ip;
    auto address = asio::ip::make_address(options.host, not_ip);
    host_is_ip = !not_ip;
    if (host_is_ip) endpoint = tcp::endpoint(address, static_cast<unsigned short>(std::stoi(options.port)));
    const bool v6 = options.host.find(':') != std::string::npos;
    host_header = v6 ? "[" + options.host + "]" : options.host;
    if (options.port != (options.tls_context ? "443" : "80")) host_header += ":" + options.port;
  }

  asio::any_io_executor executor;
  HttpClientOptions options;
  std::string host_header;  // host[:port], also how messages name the partner
  bool host_is_ip = false;
  tcp::endpoint endpoint;  // when host_is_ip
  std::atomic<bool> stopping{false};

  struct Waiter {
    GrantHandler handler;
    asio::any_io_executor work;  // the waiter's executor, kept busy while it waits
  };
  std::mutex mu;
  std::vector<std::shared_ptr<Connection>> all;   // every connection, at most max_connections
  // Deadlines are kept by one timer a client, ticking only while exchanges run, instead of a
  // timer armed and cancelled for every read and write (which cost a delivery several more
  // trips through the io threads' queue).
  int running = 0;                                // exchanges between take and release (under mu)
  bool watching = false;                          // the watchdog's timer is armed (under mu)
  asio::steady_timer watchdog;                    // under mu
  std::vector<std::shared_ptr<Connection>> idle;  // those not in use
  std::deque<Waiter> waiters;

  std::chrono::milliseconds tick() const {
    auto t = std::min(options.timeout, options.connect_timeout) / 4;
    return std::clamp(t, std::chrono::milliseconds(10), std::chrono::milliseconds(250));
  }

  // Under mu: arms the watchdog when it is not already.
  void watch_locked(const std::shared_ptr<Shared>& self) {
    if (watching) return;
    watching = true;
    watchdog.expires_after(tick());
    watchdog.async_wait([self](error_code) { self->on_tick(self); });
  }

  // Closes, on its strand, each connection whose exchange has run past its deadline.
  void on_tick(const std::shared_ptr<Shared>& self) {
    std::vector<std::shared_ptr<Connection>> every;
    {
      std::lock_guard lk(mu);
      watching = false;
      if (running == 0 || stopping) return;
      every = all;
      watch_locked(self);
    }
    const auto now = Clock::now();
    for (auto& c : every)
      asio::post(c->strand, [c, now] {
        if (c->busy && now >= c->deadline && !c->timed_out) {
          c->timed_out = true;
          c->close();
        }
      });
  }

  // Under mu. nullopt: every connection is in use and no more may be opened.
  std::optional<Grant> take_locked(const std::shared_ptr<Shared>& self) {
    if (stopping) return Grant{nullptr, true};
    auto granted = [&](std::shared_ptr<Connection> c) {
      ++running;
      watch_locked(self);
      return Grant{std::move(c), false};
    };
    if (!idle.empty()) {
      // A connected one first: a fresh connection costs a handshake.
      auto it = idle.end();
      for (auto i = idle.begin(); i != idle.end(); ++i)
        if ((*i)->usable) it = i;
      if (it == idle.end()) it = idle.end() - 1;
      auto c = std::move(*it);
      idle.erase(it);
      return granted(std::move(c));
    }
    if (static_cast<int>(all.size()) < options.max_connections) {
      all.push_back(std::make_shared<Connection>(executor));
      return granted(all.back());
    }
    return std::nullopt;
  }

  void release(std::shared_ptr<Connection> c) {
    std::unique_lock lk(mu);
    if (!waiters.empty()) {  // handed on: still running
      Waiter w = std::move(waiters.front());
      waiters.pop_front();
      lk.unlock();
      asio::post(w.work, [h = std::move(w.handler), c = std::move(c)]() mutable { std::move(h)(Grant{std::move(c), false}); });
      return;
    }
    --running;
    if (running == 0 && watching) watchdog.cancel();  // nothing to watch: let the io_context rest
    idle.push_back(c);
    if (stopping) {  // stop() has been: it may have missed this one
      lk.unlock();
      asio::post(c->strand, [c] { c->close(); });
    }
  }
};

namespace {

using Shared = HttpClient::Shared;

asio::awaitable<Grant> wait_for_connection(std::shared_ptr<Shared> sh) {
  auto initiation = [sh](auto handler) {
    std::unique_lock lk(sh->mu);
    auto ex = asio::get_associated_executor(handler, sh->executor);
    if (auto g = sh->take_locked(sh)) {  // one came free since the caller looked
      lk.unlock();
      asio::post(ex, [h = std::move(handler), g = std::move(*g)]() mutable { std::move(h)(std::move(g)); });
      return;
    }
    sh->waiters.push_back(Shared::Waiter{GrantHandler(std::move(handler)),
                                         asio::prefer(ex, asio::execution::outstanding_work.tracked)});
  };
  return asio::async_initiate<decltype(asio::use_awaitable), void(Grant)>(std::move(initiation), asio::use_awaitable);
}

void failed(HttpExchange& out, const error_code& ec, const std::string& doing, const Connection& c,
            const HttpClientOptions& o) {
  if (c.timed_out) {
    out.status = HttpExchange::Status::timed_out;
    out.detail = "timeout: no whole answer within " + in_ms(o.timeout);
    return;
  }
  out.status = HttpExchange::Status::failed;
  out.broker_fault = is_broker_resource_error(ec);
  out.detail = out.broker_fault ? describe_local_resource_error(ec) : doing + ": " + ec.message();
}

// On the connection's strand, with c.busy set and c.deadline the exchange's.
asio::awaitable<bool> connect(Shared& sh, Connection& c, HttpExchange& out) {
  const auto& o = sh.options;
  c.close();
  c.tls.reset();
  c.buffer.clear();
  const auto exchange_deadline = c.deadline;
  auto fail = [&](std::string detail, bool broker_fault) {
    c.close();
    out.status = HttpExchange::Status::connect_failed;
    out.detail = std::move(detail);
    out.broker_fault = broker_fault;
  };

  error_code cec;
  if (sh.host_is_ip) {
    c.deadline = std::min(exchange_deadline, Clock::now() + o.connect_timeout);
    std::tie(cec) = co_await c.socket.async_connect(sh.endpoint, use_tuple);
  } else {
    tcp::resolver resolver(c.strand);
    auto [rec, endpoints] = co_await resolver.async_resolve(o.host, o.port, use_tuple);
    if (rec) {
      fail("cannot resolve " + o.host + ": " + rec.message(), false);
      co_return false;
    }
    c.deadline = std::min(exchange_deadline, Clock::now() + o.connect_timeout);
    std::tie(cec, std::ignore) = co_await asio::async_connect(c.socket, endpoints, use_tuple);
  }
  if (cec || c.timed_out) {
    if (c.timed_out) fail("connect to " + sh.host_header + ": timeout, no answer within " + in_ms(o.connect_timeout), false);
    else if (is_broker_resource_error(cec)) fail(describe_local_resource_error(cec), true);
    else fail("connect to " + sh.host_header + ": " + cec.message(), false);
    co_return false;
  }
  error_code ignored;
  c.socket.set_option(tcp::no_delay(true), ignored);
  if (o.tls_context) {
    c.tls.emplace(c.socket, *o.tls_context);
    if (!sh.host_is_ip) SSL_set_tlsext_host_name(c.tls->native_handle(), o.host.c_str());  // SNI: names only
    c.tls->set_verify_callback(asio::ssl::host_name_verification(o.host));
    auto [hec] = co_await c.tls->async_handshake(asio::ssl::stream_base::client, use_tuple);
    if (hec || c.timed_out) {
      fail("TLS handshake with " + sh.host_header + ": " +
               (c.timed_out ? "timeout, not done within " + in_ms(o.connect_timeout) : hec.message()),
           false);
      co_return false;
    }
  }
  c.deadline = exchange_deadline;
  c.usable = true;
  co_return true;
}

bool closed_before_answering(const error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe;
}

// Reads one answer without keeping its header fields: the status, whether the connection
// stays open (the parser's own keep_alive()), and the start of the body.
class AnswerParser final : public http::basic_parser<false> {
 public:
  AnswerParser(std::string& body, std::size_t keep) : body_(body), keep_(keep) { body_limit(boost::none); }
  unsigned status() const { return status_; }

 private:
  void on_request_impl(http::verb, beast::string_view, beast::string_view, int, error_code&) override {}
  void on_response_impl(int code, beast::string_view, int, error_code&) override {
    status_ = static_cast<unsigned>(code);
  }
  void on_field_impl(http::field, beast::string_view, beast::string_view, error_code&) override {}
  void on_header_impl(error_code&) override {}
  void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}
  std::size_t on_body_impl(beast::string_view piece, error_code&) override { return keep(piece); }
  void on_chunk_header_impl(std::uint64_t, beast::string_view, error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, beast::string_view piece, error_code&) override { return keep(piece); }
  void on_finish_impl(error_code&) override {}

  std::size_t keep(beast::string_view piece) {
    if (body_.size() < keep_) body_.append(piece.data(), std::min(piece.size(), keep_ - body_.size()));
    return piece.size();  // the rest is read and dropped
  }

  std::string& body_;
  std::size_t keep_;
  unsigned status_ = 0;
};

// Writes the request and reads the answer. `stale`: the connection was found closed by the
// partner before any of the answer came (the caller may send again on a fresh one).
template <class Stream>
asio::awaitable<void> send_and_read(Stream& stream, Connection& c, const std::string& head, std::string_view body,
                                    const Shared& sh, HttpExchange& out, bool& stale) {
  const auto& o = sh.options;
  const std::array<asio::const_buffer, 2> request{asio::buffer(head), asio::buffer(body.data(), body.size())};
  auto [wec, written] = co_await asio::async_write(stream, request, use_tuple);
  if (wec) {
    stale = !c.timed_out && closed_before_answering(wec);
    failed(out, wec, "send to " + sh.host_header, c, o);
    co_return;
  }
  for (;;) {
    out.body.clear();
    AnswerParser parser(out.body, o.max_body_bytes);
    auto [hec, hn] = co_await http::async_read_header(stream, c.buffer, parser, use_tuple);
    if (hec) {
      stale = !c.timed_out && closed_before_answering(hec) && c.buffer.size() == 0;
      failed(out, hec, "read from " + sh.host_header, c, o);
      co_return;
    }
    if (parser.status() >= 100 && parser.status() < 200) continue;  // interim answers (100 Continue) come first
    if (!parser.is_done()) {
      auto [rec, rn] = co_await http::async_read(stream, c.buffer, parser, use_tuple);
      if (rec) {
        failed(out, rec, "read from " + sh.host_header, c, o);
        co_return;
      }
    }
    out.status = HttpExchange::Status::answered;
    out.code = parser.status();
    // Bytes after the answer would be taken for the next request's: start that one afresh.
    if (!parser.keep_alive() || c.buffer.size() != 0) c.close();
    co_return;
  }
}

HttpExchange broker_fault(std::string detail) {
  HttpExchange out;
  out.status = HttpExchange::Status::failed;
  out.detail = std::move(detail);
  out.broker_fault = true;
  return out;
}

HttpExchange stopped() {
  HttpExchange out;
  out.status = HttpExchange::Status::stopped;
  out.detail = "stopped";
  return out;
}

// Runs on the connection's strand.
asio::awaitable<HttpExchange> exchange_on(std::shared_ptr<Shared> sh, std::shared_ptr<Connection> c,
                                          const std::string& head, std::string_view body, Clock::time_point deadline) {
  c->busy = true;
  c->timed_out = false;
  c->deadline = deadline;
  const bool reused = c->usable;
  HttpExchange out;
  for (int attempt = 0;; ++attempt) {
    out = HttpExchange{};
    if (sh->stopping) {
      c->close();
      out = stopped();
      break;
    }
    if (!c->usable && !co_await connect(*sh, *c, out)) {
      if (sh->stopping) out = stopped();
      break;
    }
    bool stale = false;
    if (c->tls) co_await send_and_read(*c->tls, *c, head, body, *sh, out, stale);
    else co_await send_and_read(c->socket, *c, head, body, *sh, out, stale);
    if (out.status == HttpExchange::Status::answered) break;
    c->close();
    if (sh->stopping) {
      out = stopped();
      break;
    }
    if (!(stale && reused && attempt == 0)) break;
    // A reused connection the partner had closed: once more on a fresh one.
  }
  c->busy = false;
  co_return out;
}

asio::awaitable<HttpExchange> run_exchange(std::shared_ptr<Shared> sh, const OutboundHttpRequest& request) {
  const auto deadline = Clock::now() + sh->options.timeout;
  std::string head;
  head.reserve(request.method.size() + request.target.size() + sh->host_header.size() + request.headers.size() + 64);
  head.append(request.method).append(" ").append(request.target).append(" HTTP/1.1\r\nHost: ");
  head.append(sh->host_header).append("\r\nContent-Length: ").append(std::to_string(request.body.size()));
  head.append("\r\n").append(request.headers).append("\r\n");
  std::optional<Grant> grant;
  {
    std::lock_guard lk(sh->mu);
    grant = sh->take_locked(sh);
  }
  if (!grant) {
    auto wait = wait_for_connection(sh);
    grant = co_await std::move(wait);
  }
  if (grant->stopped) co_return stopped();
  auto c = std::move(grant->connection);
  HttpExchange out;
  try {
    auto task = asio::co_spawn(c->strand, exchange_on(sh, c, head, request.body, deadline), asio::use_awaitable);
    out = co_await std::move(task);
  } catch (const boost::system::system_error& e) {  // e.g. no descriptor for the reactor's first socket
    out = broker_fault(is_broker_resource_error(e.code()) ? describe_local_resource_error(e.code()) : e.what());
    c->usable = false;
  } catch (const std::exception& e) {  // out of memory, or OpenSSL could not make a session
    out = broker_fault(e.what());
    c->usable = false;
  }
  sh->release(std::move(c));
  co_return out;
}

}  // namespace

HttpClient::HttpClient(asio::any_io_executor executor, HttpClientOptions options)
    : shared_(std::make_shared<Shared>(std::move(executor), std::move(options))) {}

HttpClient::~HttpClient() { stop(); }

std::string header_line(std::string_view name, std::string_view value) {
  std::string line;
  line.reserve(name.size() + value.size() + 4);
  line.append(name).append(": ");
  for (char ch : value)
    if (static_cast<unsigned char>(ch) >= 0x20 && ch != 0x7f) line += ch;
  return line.append("\r\n");
}

asio::awaitable<HttpExchange> HttpClient::exchange(const OutboundHttpRequest& request) {
  return run_exchange(shared_, request);  // holds the shared state, not this
}

void HttpClient::stop() {
  std::deque<Shared::Waiter> waiters;
  std::vector<std::shared_ptr<Connection>> all;
  {
    std::lock_guard lk(shared_->mu);
    shared_->stopping = true;
    if (shared_->watching) shared_->watchdog.cancel();
    waiters.swap(shared_->waiters);
    all = shared_->all;
  }
  for (auto& w : waiters)
    asio::post(w.work, [h = std::move(w.handler)]() mutable { std::move(h)(Grant{nullptr, true}); });
  for (auto& c : all) asio::post(c->strand, [c] { c->close(); });
}

}  // namespace tellonce
