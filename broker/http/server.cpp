#include "tellonce/http_server.hpp"

#include "broker/http/session.hpp"

#include "tellonce/error.hpp"
#include "tellonce/json.hpp"
#include "tellonce/limits.hpp"
#include "tellonce/log.hpp"
#include "tellonce/tls.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <sstream>
#include <atomic>
#include <list>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <vector>

namespace tellonce {

namespace beast = boost::beast;
using tcp = asio::ip::tcp;

namespace {

using http_detail::use_tuple;

struct Mount {
  std::string prefix;
  HttpHandler handler;
};

using Connection = http_detail::Session<tcp::socket>;
using TlsConnection = http_detail::Session<asio::ssl::stream<tcp::socket>>;

// What a TLS handshake verified about the client, set on each of its requests.
struct PeerIdentity {
  std::string fingerprint;
  std::string subject;
};

// "/fhir" matches "/fhir", "/fhir/x" and "/fhir?x" but not "/fhirx".
bool prefix_matches(std::string_view prefix, std::string_view target) {
  if (!target.starts_with(prefix)) return false;
  if (target.size() == prefix.size() || prefix.empty() || prefix.back() == '/') return true;
  char next = target[prefix.size()];
  return next == '/' || next == '?';
}

void log_exception(std::string_view what, std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    log::error("http", std::string(what) + ": " + x.what());
  } catch (...) {
    log::error("http", std::string(what) + ": unknown exception");
  }
}

std::string wire_text(const HttpResponse& res) {
  std::ostringstream out;
  out << res;
  return out.str();
}

bool is_parse_error(const boost::system::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_method).category();
}

}  // namespace

namespace http_detail {

HttpResponse bare_outcome(unsigned version, http::status status, const char* code,
                          const std::string& diagnostics, std::string rule) {
  HttpResponse res{status, version};
  res.set(http::field::server, "tellonce");
  res.set(http::field::content_type, "application/fhir+json");
  res.body() = operation_outcome_json({Issue{Severity::error, code, diagnostics, "", std::move(rule)}});
  res.keep_alive(false);
  res.prepare_payload();
  return res;
}

// What to answer when reading a request failed; nothing when the peer just went away.
std::optional<HttpResponse> rejection(const boost::system::error_code& ec,
                                      http::request_parser<http::string_body>& parser,
                                      const HttpLimits& limits) {
  unsigned version = parser.is_header_done() ? parser.get().version() : 11;
  if (ec == http::error::body_limit) {
    // With a Content-Length over the limit Beast stops right after the header. We answer
    // from the header alone: reading (or draining) a body we will refuse anyway would let a
    // client tie up the connection and our bandwidth for as long as it likes.
    std::string why = "body is larger than the limit of " + std::to_string(limits.max_body_bytes) + " bytes";
    // Beast may report the limit before the header is complete; content_length() needs it done.
    if (parser.is_header_done())
      if (auto length = parser.content_length()) why += " (Content-Length: " + std::to_string(*length) + ")";
    return bare_outcome(version, http::status::payload_too_large, "too-long", why);
  }
  if (ec == http::error::header_limit) {
    return bare_outcome(version, http::status::request_header_fields_too_large, "too-long",
                        "request headers are larger than " + std::to_string(limits.max_header_bytes) + " bytes");
  }
  // Framing errors name the header: a request whose length two parties could read differently
  // is how requests are smuggled past a proxy.
  if (ec == http::error::bad_transfer_encoding) {
    return bare_outcome(version, http::status::bad_request, "structure",
                        "Transfer-Encoding is repeated or sent together with Content-Length; send exactly one of them",
                        "http-framing");
  }
  if (ec == http::error::bad_content_length) {
    return bare_outcome(version, http::status::bad_request, "structure",
                        "Content-Length is not a valid length or is sent together with Transfer-Encoding",
                        "http-framing");
  }
  if (ec == http::error::multiple_content_length) {
    return bare_outcome(version, http::status::bad_request, "structure",
                        "Content-Length is sent more than once with different values", "http-framing");
  }
  if (is_parse_error(ec) && ec != http::error::end_of_stream && ec != http::error::partial_message) {
    return bare_outcome(version, http::status::bad_request, "structure", "malformed HTTP request: " + ec.message());
  }
  return std::nullopt;
}

// Beast frames a request whose Transfer-Encoding is not exactly "chunked" (say "chunked,
// identity" or "xchunked") as having no body, so its body would be read as the next request,
// while a proxy in front may frame it otherwise. Only "chunked" alone is accepted, never with
// Content-Length, and only in HTTP/1.1. Runs once per request on the parsed header.
std::optional<HttpResponse> framing_problem(const HttpRequest& req) {
  auto codings = req.equal_range(http::field::transfer_encoding);
  if (codings.first == codings.second) return std::nullopt;
  auto refuse = [&](std::string why) {
    return bare_outcome(req.version(), http::status::bad_request, "structure", why, "http-framing");
  };
  if (std::next(codings.first) != codings.second)
    return refuse("Transfer-Encoding is sent more than once; send it once, as 'chunked'");
  std::string_view value = codings.first->value();
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (!beast::iequals(value, "chunked"))
    return refuse("Transfer-Encoding '" + std::string(value.substr(0, 64)) +
                  "' is not supported: the only transfer coding accepted is 'chunked'");
  if (req.version() < 11) return refuse("Transfer-Encoding is not allowed in an HTTP/1.0 request");
  if (req.find(http::field::content_length) != req.end())
    return refuse("Transfer-Encoding and Content-Length are both sent; send only one of them");
  return std::nullopt;
}

}  // namespace http_detail

struct HttpServer::State : std::enable_shared_from_this<State> {
  State(asio::io_context& io, std::string listen, HttpLimits limits)
      : io(io), listen(std::move(listen)), limits(limits), acceptor(asio::make_strand(io)),
        max_connections(limits.max_connections) {}

  asio::io_context& io;
  std::string listen;
  HttpLimits limits;
  tcp::acceptor acceptor;
  std::vector<Mount> mounts;  // longest prefix first; fixed once started
  std::atomic<bool> started{false};
  std::atomic<bool> stopping{false};
  std::atomic<unsigned short> bound_port{0};
  std::size_t max_connections;            // fixed once started
  std::atomic<std::size_t> open{0};       // connections being served
  bool full = false;                      // acceptor strand only: for one log line per change

  std::mutex connections_mu;
  // Every connection being served; each session erases its own entry when it ends.
  std::list<std::weak_ptr<Connection>> connections;
  std::list<std::weak_ptr<TlsConnection>> tls_connections;
  std::shared_ptr<TlsServerContext> tls;  // null: plain TCP; fixed once started
  std::shared_ptr<ConnectionCaps> caps;   // null: no per-address or per-partner cap; fixed once started
  LogThrottle handshake_log, refused_log; // a line a second at most each
  // TLS connections over a cap being answered (handshake, then 503/429): a few at a time;
  // beyond that they are closed unanswered, so refusing never costs much.
  std::atomic<std::size_t> refusing{0};
  static constexpr std::size_t max_refusing = 32;

  template <class Conn>
  std::list<std::weak_ptr<Conn>>& tracked() {
    if constexpr (std::is_same_v<Conn, Connection>) return connections;
    else return tls_connections;
  }

  const HttpHandler* find(std::string_view target) const {
    for (const auto& m : mounts)
      if (prefix_matches(m.prefix, target)) return &m.handler;
    return nullptr;
  }

  asio::awaitable<void> accept_loop();
  void refuse(tcp::socket socket, const std::string& answer);
  void refuse_tls(tcp::socket socket, HttpResponse answer);
  void log_refused(const std::string& why);
  template <class Conn>
  bool track(const std::shared_ptr<Conn>& conn, typename std::list<std::weak_ptr<Conn>>::iterator& entry);
  asio::awaitable<void> serve(std::shared_ptr<Connection> conn,
                              std::list<std::weak_ptr<Connection>>::iterator entry, ConnectionCaps::Slot slot);
  asio::awaitable<void> serve_tls(std::shared_ptr<TlsConnection> conn, std::shared_ptr<asio::ssl::context> ctx,
                                  std::list<std::weak_ptr<TlsConnection>>::iterator entry, ConnectionCaps::Slot slot);
  asio::awaitable<void> answer_tls(std::shared_ptr<TlsConnection> conn, std::shared_ptr<asio::ssl::context> ctx,
                                   HttpResponse answer);
  asio::awaitable<HttpResponse> dispatch(HttpRequest& req, const PeerIdentity* peer = nullptr);
};

asio::awaitable<void> HttpServer::State::accept_loop() {
  auto self = shared_from_this();
  while (!stopping) {
    auto [ec, socket] = co_await acceptor.async_accept(asio::make_strand(io), use_tuple);
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      // Running out of descriptors must not end the server: back off and try again.
      log::warn("http", "accept on " + listen + " failed: " + ec.message());
      asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(50));
      co_await pause.async_wait(use_tuple);
      continue;
    }
    if (open.load(std::memory_order_relaxed) >= max_connections) {
      if (!full) {
        full = true;
        log::warn("http", listen + ": " + std::to_string(max_connections) +
                              " connections open: refusing new ones (503) until some close");
      }
      static const HttpResponse over_cap = [] {
        auto res = http_detail::bare_outcome(11, http::status::service_unavailable, "transient",
            "too many open connections to this server; retry later or reuse a connection", "http-connection-cap");
        res.set(http::field::retry_after, "1");
        return res;
      }();
      static const std::string over_cap_text = wire_text(over_cap);
      if (tls) refuse_tls(std::move(socket), over_cap);  // a plain-text 503 means nothing to a TLS client
      else refuse(std::move(socket), over_cap_text);
      continue;
    }
    if (full) {
      full = false;
      log::info("http", listen + ": accepting connections again");
    }
    ConnectionCaps::Slot address_slot;
    if (caps) {
      auto remote = socket.remote_endpoint(ec);
      std::string address = ec ? std::string("?") : remote.address().to_string();
      auto slot = caps->for_address(address);
      if (!slot) {
        static const HttpResponse over_address_cap = [] {
          auto res = http_detail::bare_outcome(11, http::status::too_many_requests, "throttled",
              "too many open connections from your address (max_connections_per_address); reuse a connection or "
              "retry later", "http-connection-cap");
          res.set(http::field::retry_after, "1");
          return res;
        }();
        static const std::string over_address_cap_text = wire_text(over_address_cap);
        log_refused(address + ": over max_connections_per_address");
        if (tls) refuse_tls(std::move(socket), over_address_cap);
        else refuse(std::move(socket), over_address_cap_text);
        continue;
      }
      address_slot = std::move(*slot);
    }
    socket.set_option(tcp::no_delay(true), ec);
    if (tls) {
      auto ctx = tls->current();  // this connection keeps it, whatever a reload does later
      auto conn = std::make_shared<TlsConnection>(std::move(socket), *ctx);
      std::list<std::weak_ptr<TlsConnection>>::iterator entry;
      if (!track(conn, entry)) co_return;
      auto executor = conn->stream.get_executor();
      asio::co_spawn(executor, serve_tls(std::move(conn), std::move(ctx), entry, std::move(address_slot)),
                     [](std::exception_ptr e) { log_exception("connection", e); });
      continue;
    }
    auto conn = std::make_shared<Connection>(std::move(socket));
    std::list<std::weak_ptr<Connection>>::iterator entry;
    if (!track(conn, entry)) co_return;
    auto executor = conn->stream.get_executor();
    asio::co_spawn(executor, serve(std::move(conn), entry, std::move(address_slot)),
                   [](std::exception_ptr e) { log_exception("connection", e); });
  }
}

// Adds a connection to the list stop() walks; false (the connection closed) once stopping.
template <class Conn>
bool HttpServer::State::track(const std::shared_ptr<Conn>& conn,
                              typename std::list<std::weak_ptr<Conn>>::iterator& entry) {
  std::lock_guard lk(connections_mu);
  // Checked under the lock stop() takes: a connection accepted as stop() runs is either
  // in the list stop() walks or refused here, never left open and idle.
  if (stopping) {
    http_detail::StreamOps<std::decay_t<decltype(conn->stream)>>::close(conn->stream);
    return false;
  }
  open.fetch_add(1, std::memory_order_relaxed);  // released when its session ends
  auto& list = tracked<Conn>();
  entry = list.insert(list.end(), conn);
  return true;
}

void HttpServer::State::log_refused(const std::string& why) {
  std::uint64_t more = 0;
  if (refused_log.allow(more)) log::warn("http", listen + ": connection refused: " + why + LogThrottle::more(more));
}

// Over a cap: one non-blocking write of a prepared answer (503 or 429) and close. It never
// waits, so a flood of connections costs one descriptor for a moment each.
void HttpServer::State::refuse(tcp::socket socket, const std::string& answer) {
  boost::system::error_code ec;
  socket.non_blocking(true, ec);
  if (!ec) socket.write_some(asio::buffer(answer), ec);
  socket.shutdown(tcp::socket::shutdown_send, ec);
  socket.close(ec);
}

// Over a cap on a TLS listener: the answer needs the handshake first. A few such refusals run
// at once (bounded by the handshake timeout); past max_refusing the connection is just closed.
void HttpServer::State::refuse_tls(tcp::socket socket, HttpResponse answer) {
  boost::system::error_code ec;
  if (refusing.fetch_add(1, std::memory_order_relaxed) >= max_refusing || stopping) {
    refusing.fetch_sub(1, std::memory_order_relaxed);
    socket.close(ec);
    return;
  }
  auto ctx = tls->current();
  auto conn = std::make_shared<TlsConnection>(std::move(socket), *ctx);
  auto executor = conn->stream.get_executor();
  asio::co_spawn(executor, answer_tls(std::move(conn), std::move(ctx), std::move(answer)),
                 [self = shared_from_this()](std::exception_ptr e) {
                   self->refusing.fetch_sub(1, std::memory_order_relaxed);
                   log_exception("refused connection", e);
                 });
}

asio::awaitable<void> HttpServer::State::answer_tls(std::shared_ptr<TlsConnection> conn,
                                                    std::shared_ptr<asio::ssl::context> ctx, HttpResponse answer) {
  conn->arm(tls->settings().handshake_timeout);
  auto [ec] = co_await conn->stream.async_handshake(asio::ssl::stream_base::server, use_tuple);
  conn->disarm();
  if (ec) {
    http_detail::StreamOps<asio::ssl::stream<tcp::socket>>::close(conn->stream);
    co_return;
  }
  co_await http_detail::close_after_reject(*conn, std::move(answer));
}

asio::awaitable<HttpResponse> HttpServer::State::dispatch(HttpRequest& req, const PeerIdentity* peer) {
  // Only the handshake may say who the client is: a client's own copies are dropped.
  req.erase(kClientCertFingerprintHeader);
  req.erase(kClientCertSubjectHeader);
  if (peer && !peer->fingerprint.empty()) {
    req.set(kClientCertFingerprintHeader, peer->fingerprint);
    req.set(kClientCertSubjectHeader, peer->subject);
  }
  const HttpHandler* handler = find(req.target());
  if (!handler) {
    co_return outcome_response(req, http::status::not_found,
        {Issue{Severity::error, "not-found",
               "nothing is served at " + std::string(req.target()), "", ""}});
  }
  // co_await cannot sit in a catch block, so the failure is carried out of it.
  std::string failure;
  try {
    co_return co_await (*handler)(req);
  } catch (const std::exception& e) {
    failure = e.what();
  } catch (...) {
    failure = "unknown exception";
  }
  // The path only: a query string can carry a record's values (?identifier=...).
  std::string_view target = req.target();
  log::error("http", std::string(http::to_string(req.method())) + " " +
                         std::string(target.substr(0, target.find('?'))) + " failed: " + failure);
  co_return outcome_response(req, http::status::internal_server_error,
      {Issue{Severity::error, "exception", "internal error while handling the request", "", ""}});
}

asio::awaitable<void> HttpServer::State::serve(std::shared_ptr<Connection> conn,
                                               std::list<std::weak_ptr<Connection>>::iterator entry,
                                               ConnectionCaps::Slot slot) {
  auto self = shared_from_this();
  ConnectionCaps::Slot address_slot = std::move(slot);  // a local: given back before `self` goes
  struct Release {  // the slot and the list entry are freed however the session ends
    State& st;
    std::list<std::weak_ptr<Connection>>::iterator entry;
    ~Release() {
      std::lock_guard lk(st.connections_mu);
      st.connections.erase(entry);
      st.open.fetch_sub(1, std::memory_order_relaxed);
    }
  } release{*this, entry};
  auto dispatcher = [this](HttpRequest& req) { return dispatch(req); };
  co_await http_detail::serve_session(std::move(conn), limits, dispatcher, stopping);
}

asio::awaitable<void> HttpServer::State::serve_tls(std::shared_ptr<TlsConnection> conn,
                                                   std::shared_ptr<asio::ssl::context> ctx,
                                                   std::list<std::weak_ptr<TlsConnection>>::iterator entry,
                                                   ConnectionCaps::Slot slot) {
  auto self = shared_from_this();
  ConnectionCaps::Slot address_slot = std::move(slot), partner_slot;
  struct Release {
    State& st;
    std::list<std::weak_ptr<TlsConnection>>::iterator entry;
    ~Release() {
      std::lock_guard lk(st.connections_mu);
      st.tls_connections.erase(entry);
      st.open.fetch_sub(1, std::memory_order_relaxed);
    }
  } release{*this, entry};
  // A client that opens a connection and never finishes the handshake holds a slot only this long.
  conn->arm(tls->settings().handshake_timeout);
  auto [ec] = co_await conn->stream.async_handshake(asio::ssl::stream_base::server, use_tuple);
  conn->disarm();
  if (ec || stopping) {
    boost::system::error_code peer_ec;
    auto peer = conn->stream.next_layer().remote_endpoint(peer_ec);
    // One line a second at most: scanners and misconfigured clients retrying must not flood the log.
    std::uint64_t more = 0;
    if (ec && handshake_log.allow(more))
      log::info("http", listen + ": TLS handshake with " + (peer_ec ? std::string("?") : peer.address().to_string()) +
                            (conn->timed_out ? " timed out" : " failed: " + ec.message()) + LogThrottle::more(more));
    http_detail::StreamOps<asio::ssl::stream<tcp::socket>>::close(conn->stream);
    co_return;
  }
  PeerIdentity peer;
  SSL* ssl = conn->stream.native_handle();
  if (X509* cert = SSL_get0_peer_certificate(ssl); cert && SSL_get_verify_result(ssl) == X509_V_OK) {
    peer.fingerprint = certificate_fingerprint(cert);
    peer.subject = certificate_subject(cert);
    if (caps) {
      std::string partner;
      auto taken = caps->for_certificate(peer.fingerprint, peer.subject, partner);
      if (!taken) {
        log_refused("partner '" + partner + "' has its max_connections open");
        auto res = http_detail::bare_outcome(11, http::status::too_many_requests, "throttled",
            "partner '" + partner + "' has as many connections open to this listener as its "
                "limits.max_connections allows; reuse one or retry later",
            "partner-connection-cap");
        res.set(http::field::retry_after, "1");
        co_await http_detail::close_after_reject(*conn, std::move(res));
        co_return;
      }
      partner_slot = std::move(*taken);
    }
  }
  auto dispatcher = [this, peer = std::move(peer)](HttpRequest& req) { return dispatch(req, &peer); };
  co_await http_detail::serve_session(std::move(conn), limits, dispatcher, stopping);
}

HttpServer::HttpServer(asio::io_context& io, std::string listen, HttpLimits limits)
    : state_(std::make_shared<State>(io, std::move(listen), limits)) {}

HttpServer::~HttpServer() { stop(); }

void HttpServer::mount(std::string prefix, HttpHandler handler) {
  if (state_->started) throw std::logic_error("mount(" + prefix + ") after the server started");
  auto& mounts = state_->mounts;
  auto same = std::find_if(mounts.begin(), mounts.end(), [&](const Mount& m) { return m.prefix == prefix; });
  if (same != mounts.end()) throw std::logic_error("two handlers mounted at " + prefix + " on " + state_->listen);
  mounts.push_back(Mount{std::move(prefix), std::move(handler)});
  std::stable_sort(mounts.begin(), mounts.end(),
                   [](const Mount& a, const Mount& b) { return a.prefix.size() > b.prefix.size(); });
}

void HttpServer::cap_connections(std::size_t n) {
  if (state_->started) throw std::logic_error("cap_connections after " + state_->listen + " started");
  state_->max_connections = std::min(n, state_->limits.max_connections);
}

void HttpServer::limit_connections(std::shared_ptr<ConnectionCaps> caps) {
  if (state_->started) throw std::logic_error("limit_connections after " + state_->listen + " started");
  state_->caps = std::move(caps);
}

void HttpServer::use_tls(std::shared_ptr<TlsServerContext> tls) {
  if (state_->started) throw std::logic_error("use_tls after " + state_->listen + " started");
  state_->tls = std::move(tls);
}

std::size_t HttpServer::max_connections() const { return state_->max_connections; }

std::size_t HttpServer::open_connections() const { return state_->open.load(); }

void HttpServer::start() {
  auto& st = *state_;
  if (st.started.exchange(true)) return;
  auto colon = st.listen.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("listen address '" + st.listen + "' has no port");
  std::string host = st.listen.substr(0, colon);
  std::string port = st.listen.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  try {
    tcp::resolver resolver(st.io);
    auto endpoint = resolver.resolve(host, port, tcp::resolver::passive | tcp::resolver::numeric_service)
                        .begin()->endpoint();
    st.acceptor.open(endpoint.protocol());
    st.acceptor.set_option(tcp::acceptor::reuse_address(true));
    st.acceptor.bind(endpoint);
    st.acceptor.listen(asio::socket_base::max_listen_connections);
    st.bound_port = st.acceptor.local_endpoint().port();
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error("cannot listen on " + st.listen + ": " + e.code().message());
  }
  asio::co_spawn(st.acceptor.get_executor(), st.accept_loop(),
                 [listen = st.listen](std::exception_ptr e) { log_exception("acceptor " + listen, e); });
}

void HttpServer::stop() {
  auto st = state_;
  if (!st->started || st->stopping.exchange(true)) return;
  asio::post(st->acceptor.get_executor(), [st] {
    boost::system::error_code ec;
    st->acceptor.close(ec);
  });
  std::lock_guard lk(st->connections_mu);
  for (auto& weak : st->connections) {
    auto conn = weak.lock();
    if (!conn) continue;
    // Busy connections finish their request and then close (keep_alive is turned off).
    asio::post(conn->stream.get_executor(), [conn] {
      if (conn->busy) return;
      http_detail::StreamOps<tcp::socket>::close(conn->stream);
    });
  }
  for (auto& weak : st->tls_connections) {
    auto conn = weak.lock();
    if (!conn) continue;
    asio::post(conn->stream.get_executor(), [conn] {
      if (conn->busy) return;
      http_detail::StreamOps<asio::ssl::stream<tcp::socket>>::close(conn->stream);
    });
  }
}

unsigned short HttpServer::port() const { return state_->bound_port; }

const std::string& HttpServer::listen() const { return state_->listen; }

HttpServers::HttpServers(asio::io_context& io, HttpLimits limits) : io_(io), limits_(limits) {}

HttpServer& HttpServers::at(const std::string& listen) {
  auto& slot = servers_[listen];
  if (!slot) slot = std::make_unique<HttpServer>(io_, listen, limits_);
  return *slot;
}

void HttpServers::start_all(std::size_t connection_budget) {
  if (servers_.empty()) return;
  std::size_t share = std::max<std::size_t>(1, connection_budget / servers_.size());
  for (auto& [listen, server] : servers_) {
    server->cap_connections(share);
    server->start();
    log::info("http", "listening on " + listen + " (at most " + std::to_string(server->max_connections()) +
                          " connections)");
  }
}

std::size_t raise_open_file_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return 1024;
  if (lim.rlim_cur < lim.rlim_max) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  // RLIM_INFINITY is not a count; the kernel's nr_open caps it anyway.
  return lim.rlim_cur == RLIM_INFINITY ? std::size_t(1) << 20 : static_cast<std::size_t>(lim.rlim_cur);
}

void HttpServers::stop_all() {
  for (auto& [listen, server] : servers_) server->stop();
}

std::size_t HttpServers::open_connections() const {
  std::size_t n = 0;
  for (const auto& [listen, server] : servers_) n += server->open_connections();
  return n;
}

std::vector<std::pair<std::string, unsigned short>> HttpServers::bound() const {
  std::vector<std::pair<std::string, unsigned short>> out;
  for (const auto& [listen, server] : servers_) out.emplace_back(listen, server->port());
  return out;
}

http::status http_status_for(Errc code) {
  switch (code) {
    case Errc::malformed: return http::status::bad_request;
    case Errc::invalid: return http::status::unprocessable_entity;
    case Errc::unauthenticated: return http::status::unauthorized;
    case Errc::forbidden: return http::status::forbidden;
    case Errc::not_found: return http::status::not_found;
    case Errc::conflict: return http::status::conflict;
    case Errc::too_large: return http::status::payload_too_large;
    case Errc::unsupported: return http::status::unsupported_media_type;
    case Errc::unavailable: return http::status::service_unavailable;
    case Errc::internal: return http::status::internal_server_error;
  }
  return http::status::internal_server_error;
}

HttpResponse outcome_response(const HttpRequest& req, http::status status,
                              const std::vector<Issue>& issues) {
  return json_response(req, status, operation_outcome_json(issues), "application/fhir+json");
}

HttpResponse json_response(const HttpRequest& req, http::status status, std::string body,
                           std::string content_type) {
  HttpResponse res{status, req.version()};
  res.set(http::field::server, "tellonce");
  res.set(http::field::content_type, content_type);
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

}  // namespace tellonce
