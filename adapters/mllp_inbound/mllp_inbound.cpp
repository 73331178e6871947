#include "mllp_inbound.hpp"

#include "hl7v2/mllp.hpp"
#include "tellonce/limits.hpp"
#include "tellonce/log.hpp"
#include "tellonce/tls.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <atomic>
#include <list>
#include <mutex>

namespace tellonce {
namespace {

using tcp = asio::ip::tcp;
using hl7v2::AckCode;
using hl7v2::AckError;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
constexpr std::string_view kComponent = "mllp";
// Enough ERR segments for every problem the pipeline reports (it keeps at most 101 per record).
constexpr std::size_t kMaxErrSegments = 101;

void log_exception(const std::string& what, std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log::error(kComponent, what + " ended by an exception: " + ex.what());
  } catch (...) {
    log::error(kComponent, what + " ended by an unknown exception");
  }
}

// A control id for the ACKs this process writes: unique per process and time-ordered, 18
// characters (MSH-10 is 20 at most in v2.4).
std::string next_ack_control_id() {
  static std::atomic<std::uint32_t> counter{0};
  std::string n = std::to_string(counter.fetch_add(1) % 10000);
  return "A" + std::to_string(now_ms()) + std::string(4 - n.size(), '0') + n;
}

AckError err(std::string location, std::string hl7_code, std::string diagnostic) {
  return AckError{std::move(location), std::move(hl7_code), 'E', std::move(diagnostic)};
}

// What a transient refusal says: the sender should resend the same message later.
AckError transient_error(std::string why) {
  return err("", "207", std::move(why) + "; resend the message later");
}

// Batches start with FHS or BHS (after a BOM or blank lines); their MSH segments come later.
bool is_batch(std::string_view raw) {
  if (raw.starts_with("\xEF\xBB\xBF")) raw.remove_prefix(3);
  while (!raw.empty() && (raw.front() == '\r' || raw.front() == '\n' || raw.front() == ' ')) raw.remove_prefix(1);
  return raw.starts_with("FHS") || raw.starts_with("BHS");
}

// HL7 table 0357 for a FHIR issue type.
std::string hl7_code_for(const Issue& issue) {
  if (issue.code == "required") return "101";
  if (issue.code == "code-invalid") return "103";
  if (issue.code == "structure") return "100";
  if (issue.code == "not-supported") return "200";
  if (issue.code == "duplicate") return "205";
  if (issue.code == "exception" || issue.code == "transient") return "207";
  return "102";
}

// A location that is already in v2 terms ("PID^1^3^1"), as the parser and converter give.
bool is_v2_location(std::string_view loc) {
  return loc.size() >= 5 && loc[3] == '^' && std::isupper(static_cast<unsigned char>(loc[0]));
}

}  // namespace


AckError ack_error_for(const Issue& issue, const hl7v2::Converted* converted, bool diagnostics_are_safe) {
  AckError e;
  e.hl7_code = hl7_code_for(issue);
  e.severity = issue.is_error() ? 'E' : issue.severity == Severity::warning ? 'W' : 'I';
  std::string text;
  if (is_v2_location(issue.location)) {
    e.location = issue.location;
  } else {
    if (converted && !issue.location.empty()) e.location = hl7v2::v2_location_for(*converted, issue.location);
    if (!issue.location.empty()) text = "FHIR " + issue.location;
  }
  if (!issue.rule.empty()) text += (text.empty() ? "rule " : ": rule ") + issue.rule;
  if (!issue.code.empty()) text += (text.empty() ? "" : " ") + std::string("(") + issue.code + ")";
  if (diagnostics_are_safe && !issue.diagnostics.empty()) text += (text.empty() ? "" : ": ") + issue.diagnostics;
  e.diagnostic = std::move(text);
  return e;
}

MllpVerdict verdict_for(const Result<Accepted>& accepted, const hl7v2::Converted& converted) {
  if (accepted) return {AckCode::AA, {}};
  const Failure& f = accepted.error();
  MllpVerdict v;
  switch (f.code) {
    case Errc::invalid:
    case Errc::conflict:
      v.code = AckCode::AE;
      for (const auto& issue : f.issues) {
        if (v.errors.size() == kMaxErrSegments) break;
        v.errors.push_back(ack_error_for(issue, &converted, false));
        if (f.code == Errc::conflict) v.errors.back().hl7_code = "205";
      }
      if (v.errors.empty()) v.errors.push_back(err("", "207", "the record was refused without a reason"));
      return v;
    case Errc::unavailable:
      v.code = AckCode::AR;
      v.errors.push_back(transient_error("the broker cannot store messages at the moment"));
      return v;
    case Errc::unauthenticated:
      v.code = AckCode::AR;
      v.errors.push_back(err("MSH^1^4^1", "204", "the sender may not send on this channel"));
      return v;
    case Errc::forbidden:  // partners[].may: the refusal names what the partner may not send
      v.code = AckCode::AR;
      v.errors.push_back(err("MSH^1^4^1", "204", f.issues.empty() ? std::string("the sender may not send this")
                                                                    : f.issues.front().diagnostics));
      return v;
    case Errc::unsupported:
      v.code = AckCode::AR;
      v.errors.push_back(err("MSH^1^9", "200", "the converted record is of a kind the broker does not take"));
      return v;
    case Errc::too_large:
      v.code = AckCode::AR;
      v.errors.push_back(err("", "207", "the converted record is over the broker's size limit"));
      return v;
    case Errc::malformed:
    case Errc::not_found:
    case Errc::internal:
      break;
  }
  v.code = AckCode::AR;
  v.errors.push_back(transient_error("internal error while storing the message"));
  return v;
}

std::vector<std::string> acks_for(const hl7v2::Message& message, const MllpVerdict& verdict,
                                  std::string_view control_id, std::string_view timestamp) {
  const hl7v2::AckSender sender{"TELLONCE", message.msh().value(6)};
  auto accept_type = message.accept_ack_type();
  auto app_type = message.app_ack_type();
  if (accept_type.empty() && app_type.empty())
    return {hl7v2::build_ack(message, verdict.code, verdict.errors, sender, control_id, timestamp)};

  const bool ok = verdict.code == AckCode::AA || verdict.code == AckCode::CA;
  auto wants = [ok](const std::string& type) {
    return type == "AL" || (type == "ER" && !ok) || (type == "SU" && ok);
  };
  std::vector<std::string> out;
  const bool commit_sent = wants(accept_type);
  if (commit_sent) {
    AckCode commit = ok ? AckCode::CA : verdict.code == AckCode::AE ? AckCode::CE : AckCode::CR;
    out.push_back(hl7v2::build_ack(message, commit, ok ? std::vector<AckError>{} : verdict.errors, sender,
                                   control_id, timestamp));
  }
  // The application ACK is a message of its own, with a control id of its own.
  if ((ok && wants(app_type)) || (!ok && !commit_sent && wants(app_type)))
    out.push_back(hl7v2::build_ack(message, ok ? AckCode::AA : verdict.code, ok ? std::vector<AckError>{} : verdict.errors,
                                   sender, commit_sent ? next_ack_control_id() : std::string(control_id), timestamp));
  return out;
}

namespace {

// One client connection. Every member is touched only on the connection's strand.
struct Connection {
  explicit Connection(tcp::socket s) : socket(std::move(s)), deadline(socket.get_executor()) {}
  tcp::socket socket;
  asio::steady_timer deadline;
  unsigned generation = 0;
  bool timed_out = false;
  bool busy = false;  // answering a message: stop() lets it finish
  std::string peer;
  // TLS listeners: the session over `socket` (cancelling the socket interrupts it too).
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls;
  std::shared_ptr<asio::ssl::context> tls_context;  // the one its handshake started with
  bool presented_certificate = false;  // a client certificate the handshake verified
  std::string certificate_partner;     // the partner that certificate is listed for; empty: none
};

// What the acceptor, the connections and stop() share; outlives the adapter when it must.
struct Shared {
  std::atomic<bool> stopping{false};
  std::atomic<std::size_t> open{0};
  std::mutex mu;
  std::list<std::weak_ptr<Connection>> connections;  // under mu
  std::unique_ptr<ConnectionCaps> caps;  // null: no per-address or per-partner cap
  LogThrottle refused_log, handshake_log;  // at most a line a second each
};

// Closes the connection's socket when the deadline passes (a read or write then fails).
void arm(const std::shared_ptr<Connection>& c, std::chrono::milliseconds d) {
  c->deadline.expires_after(d);
  c->deadline.async_wait([c, generation = ++c->generation](boost::system::error_code ec) {
    if (ec || generation != c->generation) return;
    c->timed_out = true;
    boost::system::error_code ignored;
    c->socket.cancel(ignored);
  });
}

void disarm(const std::shared_ptr<Connection>& c) {
  ++c->generation;
  c->deadline.cancel();
}

class MllpInbound final : public InboundAdapter {
 public:
  MllpInbound(const MllpInboundSettings& settings, InboundContext& ctx,
              std::shared_ptr<const hl7v2::V2ToFhir> converter)
      : settings_(settings), pipeline_(ctx.pipeline), partners_(ctx.partners), executor_(ctx.executor),
        channel_(ctx.channel_id), converter_(std::move(converter)), acceptor_(asio::make_strand(ctx.executor)),
        shared_(std::make_shared<Shared>()) {
    if (!converter_) throw std::logic_error("mllp inbound '" + channel_ + "' without a converter");
    if (settings_.tls) tls_ = std::make_shared<TlsServerContext>(*settings_.tls, settings_.listen);  // throws on bad files
    if (auto* limits = partners_.limits(); limits && limits->caps_connections())
      shared_->caps = std::make_unique<ConnectionCaps>(*limits, partners_);
    if (!settings_.partner.empty()) {
      fixed_partner_ = std::string(partners_.by_id(settings_.partner));
      if (fixed_partner_.empty())
        throw std::runtime_error("mllp inbound '" + channel_ + "': partner '" + settings_.partner + "' is not known");
    }
  }

  ~MllpInbound() override {
    boost::system::error_code ec;
    acceptor_.close(ec);
  }

  void start() override {
    auto colon = settings_.listen.rfind(':');
    if (colon == std::string::npos) throw std::runtime_error("listen address '" + settings_.listen + "' has no port");
    std::string host = settings_.listen.substr(0, colon);
    std::string port = settings_.listen.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    try {
      tcp::resolver resolver(executor_);
      auto endpoint =
          resolver.resolve(host, port, tcp::resolver::passive | tcp::resolver::numeric_service).begin()->endpoint();
      acceptor_.open(endpoint.protocol());
      acceptor_.set_option(tcp::acceptor::reuse_address(true));
      acceptor_.bind(endpoint);
      acceptor_.listen(asio::socket_base::max_listen_connections);
      bound_ = host + ":" + std::to_string(acceptor_.local_endpoint().port());
    } catch (const boost::system::system_error& e) {
      throw std::runtime_error("mllp inbound '" + channel_ + "' cannot listen on " + settings_.listen + ": " +
                               e.code().message());
    }
    asio::co_spawn(acceptor_.get_executor(), accept_loop(),
                   [what = "mllp acceptor " + bound_](std::exception_ptr e) { log_exception(what, e); });
  }

  void stop() override {
    auto shared = shared_;
    if (shared->stopping.exchange(true)) return;
    asio::post(acceptor_.get_executor(), [this] {
      boost::system::error_code ec;
      acceptor_.close(ec);
    });
    std::lock_guard lk(shared->mu);
    for (auto& weak : shared->connections) {
      auto c = weak.lock();
      if (!c) continue;
      asio::post(c->socket.get_executor(), [c] {
        if (c->busy) return;  // answers its message, then closes
        boost::system::error_code ec;
        c->socket.cancel(ec);
      });
    }
  }

  std::string describe() const override {
    return "mllp on " + (bound_.empty() ? settings_.listen : bound_) +
           (settings_.partner.empty() ? ", sender by MSH-4" : ", partner " + settings_.partner) + " (accepted " +
           std::to_string(accepted_.load()) + ", rejected " + std::to_string(rejected_.load()) + ")";
  }

 private:
  asio::awaitable<void> accept_loop() {
    bool full = false;  // for one log line per change
    for (;;) {
      auto [ec, socket] = co_await acceptor_.async_accept(asio::make_strand(executor_), use_tuple);
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor_.is_open() || shared_->stopping) co_return;
        log::warn(kComponent, "accept on " + bound_ + " failed: " + ec.message());
        asio::steady_timer pause(acceptor_.get_executor(), std::chrono::milliseconds(50));
        co_await pause.async_wait(use_tuple);
        continue;
      }
      boost::system::error_code ignored;
      if (shared_->open.load() >= settings_.max_connections) {
        if (!full) {
          full = true;
          log::warn(kComponent, bound_ + ": " + std::to_string(settings_.max_connections) +
                                    " connections open (max_connections): closing new ones until some end");
        }
        socket.close(ignored);
        continue;
      }
      if (full) {
        full = false;
        log::info(kComponent, bound_ + ": accepting connections again");
      }
      socket.set_option(tcp::no_delay(true), ignored);
      auto conn = std::make_shared<Connection>(tcp::socket(std::move(socket)));
      if (tls_) {
        conn->tls_context = tls_->current();  // kept: a reload (SIGHUP) affects later connections only
        conn->tls = std::make_unique<asio::ssl::stream<tcp::socket&>>(conn->socket, *conn->tls_context);
      }
      auto remote = conn->socket.remote_endpoint(ignored);
      conn->peer = ignored ? std::string("?") : remote.address().to_string() + ":" + std::to_string(remote.port());
      ConnectionCaps::Slot address_slot;
      if (shared_->caps) {
        auto slot = shared_->caps->for_address(ignored ? std::string("?") : remote.address().to_string());
        if (!slot) {
          refused(*shared_, conn->peer, "its address has max_connections_per_address connections open");
          conn->socket.close(ignored);
          continue;
        }
        address_slot = std::move(*slot);
      }
      std::list<std::weak_ptr<Connection>>::iterator entry;
      {
        std::lock_guard lk(shared_->mu);
        if (shared_->stopping) {
          conn->socket.close(ignored);
          co_return;
        }
        shared_->open.fetch_add(1);
        entry = shared_->connections.insert(shared_->connections.end(), conn);
      }
      auto ex = conn->socket.get_executor();
      asio::co_spawn(ex, serve(conn, shared_, entry, std::move(address_slot)),
                     [peer = conn->peer](std::exception_ptr e) { log_exception("mllp connection " + peer, e); });
    }
  }

  // Logs that a connection was closed unserved, at most once a second per listener.
  void refused(Shared& shared, const std::string& peer, const std::string& why) {
    std::uint64_t more = 0;
    if (shared.refused_log.allow(more))
      log::warn(kComponent, bound_ + ": connection " + peer + " closed: " + why + LogThrottle::more(more));
  }

  asio::awaitable<void> serve(std::shared_ptr<Connection> c, std::shared_ptr<Shared> shared,
                              std::list<std::weak_ptr<Connection>>::iterator entry,
                              ConnectionCaps::Slot address_slot_given) {
    // Locals end before the parameters (shared among them), so the places go back first.
    ConnectionCaps::Slot address_slot = std::move(address_slot_given);
    ConnectionCaps::Slot partner_slot;
    struct Release {  // the slot and the list entry are freed however the connection ends
      Shared& shared;
      std::list<std::weak_ptr<Connection>>::iterator entry;
      ~Release() {
        std::lock_guard lk(shared.mu);
        shared.connections.erase(entry);
        shared.open.fetch_sub(1);
      }
    } release{*shared, entry};
    log::debug(kComponent, "connection from " + c->peer + " on " + bound_);
    if (c->tls && !co_await handshake(c, partner_slot)) {
      boost::system::error_code ignored;
      c->socket.close(ignored);
      c->deadline.cancel();
      co_return;
    }

    hl7v2::FrameReader frames(settings_.max_frame_bytes);
    std::vector<char> buffer(16 * 1024);  // per connection: 256 of them hold 4 MiB
    std::string closed_because;
    std::optional<std::chrono::steady_clock::time_point> frame_started;  // of the message being read
    for (;;) {
      bool write_failed = false;
      while (auto event = frames.next()) {
        std::vector<std::string> acks;
        if (event->kind == hl7v2::FrameEvent::Kind::stray_bytes) {
          log::warn(kComponent, "connection " + c->peer + ": " + std::to_string(event->skipped) +
                                    " bytes outside an MLLP frame skipped");
          continue;
        }
        c->busy = true;
        if (event->kind == hl7v2::FrameEvent::Kind::too_large) {
          ++rejected_;
          log::warn(kComponent, "connection " + c->peer + ": frame over max_frame_bytes (" +
                                    std::to_string(settings_.max_frame_bytes) + "): AR, its bytes skipped");
          acks.push_back(hl7v2::build_ack_for_unparsed(
              "", AckCode::AR,
              {err("", "207", "the message is longer than this channel's limit of " +
                                  std::to_string(settings_.max_frame_bytes) + " bytes")},
              hl7v2::AckSender{}, next_ack_control_id(), hl7v2::hl7_timestamp_now()));
        } else {
          acks = co_await answer(std::move(event->message), *c);
        }
        for (const auto& ack : acks) {
          auto framed = hl7v2::mllp_frame(ack);
          arm(c, settings_.idle_timeout);  // a peer that stops reading must not hold the connection
          boost::system::error_code ec;
          if (c->tls) std::tie(ec, std::ignore) = co_await asio::async_write(*c->tls, asio::buffer(framed), use_tuple);
          else std::tie(ec, std::ignore) = co_await asio::async_write(c->socket, asio::buffer(framed), use_tuple);
          disarm(c);
          if (ec) {
            closed_because = c->timed_out ? "the peer did not read its ACK within idle_timeout" : "write: " + ec.message();
            write_failed = true;
            break;
          }
        }
        c->busy = false;
        if (write_failed) break;
      }
      if (write_failed) break;
      if (shared->stopping) {
        closed_because = "the broker is stopping";
        break;
      }
      // A message must arrive whole within message_timeout of its first byte, however the
      // bytes trickle in: a sender dripping a byte a second cannot hold the connection.
      auto now = std::chrono::steady_clock::now();
      if (!frames.inside_frame()) frame_started.reset();
      else if (!frame_started) frame_started = now;
      std::chrono::milliseconds wait = settings_.idle_timeout;
      bool message_deadline = false;
      if (frame_started) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*frame_started + settings_.message_timeout - now);
        if (left < wait) {
          wait = std::max(left, std::chrono::milliseconds(0));
          message_deadline = true;
        }
      }
      arm(c, wait);
      boost::system::error_code ec;
      std::size_t n = 0;
      if (c->tls) std::tie(ec, n) = co_await c->tls->async_read_some(asio::buffer(buffer), use_tuple);
      else std::tie(ec, n) = co_await c->socket.async_read_some(asio::buffer(buffer), use_tuple);
      disarm(c);
      if (ec) {
        if (c->timed_out && message_deadline)
          closed_because = "a message was not received whole within message_timeout (" +
                           std::to_string(settings_.message_timeout.count()) + " ms)";
        else if (c->timed_out) closed_because = "idle for " + std::to_string(settings_.idle_timeout.count()) + " ms";
        else if (shared->stopping) closed_because = "the broker is stopping";
        else if (ec == asio::error::eof) closed_because = frames.inside_frame() ? "peer closed inside a message" : "";
        else closed_because = "read: " + ec.message();
        break;
      }
      frames.feed(std::string_view(buffer.data(), n));
    }
    boost::system::error_code ignored;
    c->socket.shutdown(tcp::socket::shutdown_both, ignored);
    c->socket.close(ignored);
    c->deadline.cancel();
    if (closed_because.empty()) log::debug(kComponent, "connection " + c->peer + " closed by the peer");
    else log::info(kComponent, "connection " + c->peer + " closed: " + closed_because);
  }

  // Everything that happens to one message; returns the ACKs to send, in order.
  // The TLS handshake within handshake_timeout, then who the client certificate names.
  // The partner's connection cap is taken into `partner_slot`; false: close the connection.
  asio::awaitable<bool> handshake(std::shared_ptr<Connection> c, ConnectionCaps::Slot& partner_slot) {
    arm(c, tls_->settings().handshake_timeout);
    auto [ec] = co_await c->tls->async_handshake(asio::ssl::stream_base::server, use_tuple);
    disarm(c);
    if (ec) {
      // One line a second at most: a scanner or a misconfigured client retrying must not flood the log.
      std::uint64_t more = 0;
      if (shared_->handshake_log.allow(more))
        log::info(kComponent, "connection " + c->peer + ": TLS handshake " +
                                  (c->timed_out ? std::string("timed out") : "failed: " + ec.message()) +
                                  LogThrottle::more(more));
      co_return false;
    }
    SSL* ssl = c->tls->native_handle();
    if (X509* cert = SSL_get0_peer_certificate(ssl); cert && SSL_get_verify_result(ssl) == X509_V_OK) {
      c->presented_certificate = true;
      auto fingerprint = certificate_fingerprint(cert);
      auto subject = certificate_subject(cert);
      if (shared_->caps) {
        auto slot = shared_->caps->for_certificate(fingerprint, subject, c->certificate_partner);
        if (!slot) {
          refused(*shared_, c->peer, "partner '" + c->certificate_partner + "' has its max_connections open");
          co_return false;
        }
        partner_slot = std::move(*slot);
      } else {
        c->certificate_partner = std::string(partners_.by_certificate(fingerprint, subject));
      }
    }
    co_return true;
  }

  asio::awaitable<std::vector<std::string>> answer(std::string raw, const Connection& conn) {
    const std::string& peer = conn.peer;
    const auto timestamp = hl7v2::hl7_timestamp_now();
    const auto ack_id = next_ack_control_id();
    auto refuse_unparsed = [&](std::vector<AckError> errors, const std::string& why) {
      ++rejected_;
      log::info(kComponent, "connection " + peer + ": AR channel=" + channel_ + " event=mllp.refused, " + why);
      return std::vector<std::string>{
          hl7v2::build_ack_for_unparsed(raw, AckCode::AR, errors, hl7v2::AckSender{}, ack_id, timestamp)};
    };
    if (is_batch(raw))
      co_return refuse_unparsed({err("", "200", "batches (FHS/BHS) are not taken: send each message in an MLLP "
                                                "frame of its own")},
                                "a batch (FHS/BHS)");
    auto parsed = hl7v2::parse(raw);
    if (!parsed) {
      std::vector<AckError> errors;
      for (const auto& issue : parsed.error().issues) {
        if (errors.size() == kMaxErrSegments) break;
        errors.push_back(ack_error_for(issue, nullptr, true));
      }
      if (errors.empty()) errors.push_back(err("", "100", "the message cannot be read as HL7 v2 ER7"));
      co_return refuse_unparsed(std::move(errors), "unreadable message: " + parsed.error().summary());
    }
    const hl7v2::Message& message = *parsed;
    const std::string control_id = message.control_id();
    auto finish = [&](const MllpVerdict& verdict, const std::string& partner, const std::string& why) {
      if (verdict.code == AckCode::AA) {
        ++accepted_;
        if (log::enabled(log::Level::debug))  // each accepted message: not built unless asked for
          log::debug(kComponent, "connection " + peer + ": AA for MSH-10 '" + control_id + "'" +
                                     (partner.empty() ? "" : " from " + partner) + (why.empty() ? "" : ", " + why));
      } else {
        ++rejected_;
        // The pairs before MSH-10: the sender writes that.
        log::info(kComponent, "connection " + peer + ": " + std::string(hl7v2::to_string(verdict.code)) +
                                  (partner.empty() ? "" : " partner=" + partner) + " channel=" + channel_ +
                                  " event=mllp.refused for MSH-10 '" + control_id + "', " + why);
      }
      return acks_for(message, verdict, ack_id, timestamp);
    };

    if (shared_->stopping)
      co_return finish({AckCode::AR, {transient_error("the broker is shutting down")}}, "", "shutting down");

    std::string partner = fixed_partner_;
    if (partner.empty()) {
      std::string facility = message.msh().value(4, 1);
      partner = std::string(partners_.by_hl7v2_facility(facility));
      if (partner.empty())
        co_return finish({AckCode::AR, {err("MSH^1^4^1", "204",
                                            facility.empty() ? "MSH-4 (sending facility) is empty: no partner to take it from"
                                                             : "sending facility '" + facility +
                                                                   "' (MSH-4.1) is not a partner's")}},
                         "", "unknown sending facility '" + facility + "'");
    }
    // A sender that authenticated with a certificate speaks only for its own partner.
    if (conn.presented_certificate && conn.certificate_partner != partner) {
      std::string why = conn.certificate_partner.empty()
          ? "the connection's client certificate is not listed for any partner"
          : "MSH-4 names partner '" + partner + "' but the connection's client certificate is partner '" +
                conn.certificate_partner + "''s";
      co_return finish({AckCode::AR, {err("MSH^1^4^1", "204", why)}}, partner, why);
    }

    // Over its rate: AE, resend later. Table 0357 has no code for a rate; 207 is what this
    // adapter says for every "cannot take it now, resend it unchanged" condition. Logged at
    // most once a second: a flood must not flood the log too.
    if (auto* limits = partners_.limits())
      if (auto throttle = limits->admit(partner, channel_)) {
        ++rejected_;
        std::uint64_t more = 0;
        if (throttled_log_.allow(more))
          log::info(kComponent, "connection " + peer + ": AE partner=" + partner + " channel=" + channel_ +
                                    " event=mllp.refused for MSH-10 '" + control_id + "', over its rate limit" +
                                    LogThrottle::more(more));
        MllpVerdict verdict{AckCode::AE, {err("", "207", "rate limit: " + throttle->limit + "; resend the message after " +
                                                             std::to_string(throttle->retry_after_seconds) + " s")}};
        co_return acks_for(message, verdict, ack_id, timestamp);
      }

    auto converted = converter_->convert(message);
    if (!converted) {
      const Failure& f = converted.error();
      MllpVerdict v{f.code == Errc::invalid ? AckCode::AE : AckCode::AR, {}};
      for (const auto& issue : f.issues) {
        if (v.errors.size() == kMaxErrSegments) break;
        v.errors.push_back(ack_error_for(issue, nullptr, true));
        if (f.code == Errc::unsupported) v.errors.back().hl7_code = message.message_code() == "ADT" ||
                                                                         message.message_code() == "ORU"
                                                                     ? "201"
                                                                     : "200";
      }
      if (v.errors.empty())
        v.errors.push_back(err("MSH^1^9", f.code == Errc::unsupported ? "201" : "207", "the message cannot be converted"));
      co_return finish(v, partner, "not converted: " + f.summary());
    }

    InboundRecord record;
    record.source = partner;
    record.channel = channel_;
    record.content_type = "application/fhir+json";
    record.body = std::move(converted->bundle_json);
    record.original_content_type = "x-application/hl7-v2+er7";
    record.original_bytes = std::move(raw);
    // The same control id from another application or facility of the same partner is another message.
    if (!control_id.empty())
      record.idempotency_key = message.msh().value(3) + "|" + message.msh().value(4) + "|" + control_id;
    auto accepted = co_await pipeline_.accept(std::move(record));
    auto verdict = verdict_for(accepted, *converted);
    std::string why;
    if (accepted) why = accepted->duplicate ? "duplicate of " + accepted->message_id : "stored as " + accepted->message_id;
    else why = accepted.error().summary();
    co_return finish(verdict, partner, why);
  }

  MllpInboundSettings settings_;
  Pipeline& pipeline_;
  const PartnerDirectory& partners_;
  asio::any_io_executor executor_;
  std::string channel_;
  std::string fixed_partner_;
  std::shared_ptr<const hl7v2::V2ToFhir> converter_;
  tcp::acceptor acceptor_;
  std::string bound_;
  std::shared_ptr<TlsServerContext> tls_;  // null: plain TCP
  std::shared_ptr<Shared> shared_;
  std::atomic<std::uint64_t> accepted_{0}, rejected_{0};
  LogThrottle throttled_log_;
};

}  // namespace

std::unique_ptr<InboundAdapter> make_mllp_inbound(const MllpInboundSettings& settings, InboundContext& ctx,
                                                  std::shared_ptr<const hl7v2::V2ToFhir> converter) {
  return std::make_unique<MllpInbound>(settings, ctx, std::move(converter));
}

InboundAdapterType mllp_inbound_type() {
  InboundAdapterType t;
  t.name = "mllp";
  t.summary = "HL7 v2 over MLLP: ER7 messages converted to FHIR, acknowledged after the durable commit";
  t.parse = [](SettingsReader& r) -> AdapterSettings {
    auto s = std::make_shared<MllpInboundSettings>();
    s->listen = r.string("listen", s->listen);
    if (auto why = check_listen_address(s->listen); !why.empty()) r.problem("listen", why);
    else r.declare_listener("listen", s->listen, "mllp");
    s->partner = r.string("partner", "");
    if (!s->partner.empty()) r.declare_partner_reference("partner", s->partner);
    s->max_frame_bytes = static_cast<std::size_t>(
        r.byte_size("max_frame_bytes", s->max_frame_bytes, 1024, std::uint64_t{256} * 1024 * 1024));
    s->idle_timeout = r.duration("idle_timeout", s->idle_timeout);
    if (s->idle_timeout.count() <= 0) r.problem("idle_timeout", "must be more than 0, e.g. 5m");
    s->message_timeout = r.duration("message_timeout", s->message_timeout);
    if (s->message_timeout.count() <= 0) r.problem("message_timeout", "must be more than 0, e.g. 60s");
    s->max_connections = static_cast<std::size_t>(r.integer("max_connections", 256, 1, 100000));
    s->tables_dir = hl7v2::read_tables_setting(r);
    s->tls = read_tls_settings(r, "tls");
    // Without a client certificate the sender is whoever MSH-4 (or `partner`) says: a claim anyone
    // who reaches the port can make. So beyond loopback the listener must authenticate senders.
    if (!loopback_listen_address(s->listen) &&
        !(s->tls && s->tls->client_certificates == ClientCertificates::required))
      r.problem("listen", "an MLLP listener beyond loopback (" + s->listen +
                              ") must know who is sending: add tls: with client_certificates: required and each "
                              "sending partner's certificate under partners[].certificates, or listen on 127.0.0.1");
    return s;
  };
  t.create = [](const AdapterSettings& p, InboundContext& ctx) -> std::unique_ptr<InboundAdapter> {
    const auto& s = settings_as<MllpInboundSettings>(p);
    std::shared_ptr<const hl7v2::V2ToFhir> converter =
        hl7v2::V2ToFhir::load(s.tables_dir);
    return make_mllp_inbound(s, ctx, std::move(converter));
  };
  return t;
}

}  // namespace tellonce
