#include "mllp_client.hpp"

#include "hl7v2/mllp.hpp"
#include "tellonce/adapter.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <vector>

namespace tellonce {

namespace {
using tcp = asio::ip::tcp;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
}  // namespace

bool split_host_port(const std::string& address, std::string& host, std::string& port) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) return false;
  host = address.substr(0, colon);
  port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return !host.empty();
}

// Everything below runs on `strand` only (close() posts there).
struct MllpConnection::State : std::enable_shared_from_this<State> {
  State(asio::any_io_executor ex, MllpClientOptions o)
      : strand(asio::make_strand(ex)), socket(strand), resolver(strand), deadline(strand), options(std::move(o)),
        frames(options.max_frame_bytes), buffer(16 * 1024) {}

  asio::strand<asio::any_io_executor> strand;
  tcp::socket socket;
  tcp::resolver resolver;
  asio::steady_timer deadline;
  MllpClientOptions options;
  hl7v2::FrameReader frames;
  std::vector<char> buffer;
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls;  // over `socket`, when options.tls is set
  bool connected = false;
  unsigned generation = 0;
  bool timed_out = false;

  std::string target() const { return options.host + ":" + options.port; }

  void arm(std::chrono::milliseconds d) {
    timed_out = false;
    deadline.expires_after(d);
    deadline.async_wait([self = shared_from_this(), generation = ++generation](boost::system::error_code ec) {
      if (ec || generation != self->generation) return;
      self->timed_out = true;
      self->resolver.cancel();
      boost::system::error_code ignored;
      self->socket.close(ignored);  // close, not cancel: a range connect would go on to the next address
    });
  }
  void disarm() {
    ++generation;
    deadline.cancel();
  }

  void drop() {
    boost::system::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
    tls.reset();
    connected = false;
    frames = hl7v2::FrameReader(options.max_frame_bytes);
  }

  asio::awaitable<bool> connect(MllpExchange& out) {
    drop();
    arm(options.connect_timeout);
    auto [rec, endpoints] = co_await resolver.async_resolve(options.host, options.port, use_tuple);
    if (rec || timed_out) {
      disarm();
      out.status = MllpExchange::Status::connect_failed;
      out.detail = "cannot resolve " + target() + ": " + (timed_out ? std::string("timed out") : rec.message());
      co_return false;
    }
    auto [cec, endpoint] = co_await asio::async_connect(socket, endpoints, use_tuple);
    disarm();
    if (cec || timed_out) {
      drop();
      out.status = MllpExchange::Status::connect_failed;
      out.broker_fault = !timed_out && is_broker_resource_error(cec);
      out.detail = "connect to " + target() + ": " +
                   (timed_out ? "no answer within " + std::to_string(options.connect_timeout.count()) + " ms"
                              : cec.message());
      co_return false;
    }
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    if (options.tls) {
      tls = std::make_unique<asio::ssl::stream<tcp::socket&>>(socket, *options.tls);
      SSL_set_tlsext_host_name(tls->native_handle(), options.host.c_str());  // SNI
      tls->set_verify_callback(asio::ssl::host_name_verification(options.host));
      arm(options.connect_timeout);
      auto [hec] = co_await tls->async_handshake(asio::ssl::stream_base::client, use_tuple);
      disarm();
      if (hec || timed_out) {
        bool was_timeout = timed_out;
        drop();
        out.status = MllpExchange::Status::connect_failed;
        out.detail = "TLS handshake with " + target() + ": " +
                     (was_timeout ? "not done within " + std::to_string(options.connect_timeout.count()) + " ms"
                                  : hec.message());
        co_return false;
      }
    }
    connected = true;
    co_return true;
  }

  asio::awaitable<MllpExchange> run(std::string framed, std::string control_id) {
    MllpExchange out;
    bool reused = connected;
    if (!reused && !co_await connect(out)) co_return out;
    for (int attempt = 0;; ++attempt) {
      const bool may_resend = reused && attempt == 0;
      arm(options.ack_timeout);
      boost::system::error_code wec;
      if (tls) std::tie(wec, std::ignore) = co_await asio::async_write(*tls, asio::buffer(framed), use_tuple);
      else std::tie(wec, std::ignore) = co_await asio::async_write(socket, asio::buffer(framed), use_tuple);
      if (wec) {
        disarm();
        bool was_timeout = timed_out;
        drop();
        if (may_resend && !was_timeout) {
          if (!co_await connect(out)) co_return out;
          continue;
        }
        out.status = was_timeout ? MllpExchange::Status::timed_out : MllpExchange::Status::send_failed;
        out.detail = was_timeout ? "the receiver took nothing within " + std::to_string(options.ack_timeout.count()) + " ms"
                                 : "send to " + target() + ": " + wec.message();
        co_return out;
      }
      // Read until the matching ACK; the deadline armed above covers the write and all of this.
      bool read_anything = false;
      for (;;) {
        while (auto event = frames.next()) {
          read_anything = true;
          if (event->kind != hl7v2::FrameEvent::Kind::message) {
            ++out.discarded;
            continue;
          }
          auto ack = hl7v2::read_ack(event->message);
          if (!ack || ack->acked_control_id != control_id) {
            ++out.discarded;
            continue;
          }
          disarm();
          out.status = MllpExchange::Status::acked;
          out.ack = std::move(*ack);
          out.ack_er7 = std::move(event->message);
          co_return out;
        }
        boost::system::error_code rec;
        std::size_t n = 0;
        if (tls) std::tie(rec, n) = co_await tls->async_read_some(asio::buffer(buffer), use_tuple);
        else std::tie(rec, n) = co_await socket.async_read_some(asio::buffer(buffer), use_tuple);
        if (rec) {
          disarm();
          bool was_timeout = timed_out;
          drop();
          if (was_timeout) {
            out.status = MllpExchange::Status::timed_out;
            out.detail = "no ACK within " + std::to_string(options.ack_timeout.count()) + " ms";
          } else if (may_resend && !read_anything &&
                     (rec == asio::error::eof || rec == asio::error::connection_reset)) {
            break;  // an idle connection the receiver had closed: send again on a fresh one
          } else {
            out.status = MllpExchange::Status::closed;
            out.detail = rec == asio::error::eof ? "the receiver closed the connection without an ACK"
                                                 : "read from " + target() + ": " + rec.message();
          }
          if (out.discarded)
            out.detail += " (" + std::to_string(out.discarded) + " frame(s) that did not answer this message discarded)";
          co_return out;
        }
        if (n) read_anything = true;
        frames.feed(std::string_view(buffer.data(), n));
      }
      if (!co_await connect(out)) co_return out;
    }
  }
};

MllpConnection::MllpConnection(asio::any_io_executor executor, MllpClientOptions options)
    : state_(std::make_shared<State>(std::move(executor), std::move(options))) {}

MllpConnection::~MllpConnection() { close(); }

asio::awaitable<MllpExchange> MllpConnection::exchange(std::string er7, std::string control_id) {
  auto st = state_;
  auto framed = hl7v2::mllp_frame(er7);
  // Built first and awaited after (g++ 12 and lambdas inside co_await).
  auto task = asio::co_spawn(st->strand, st->run(std::move(framed), std::move(control_id)), asio::use_awaitable);
  co_return co_await std::move(task);
}

void MllpConnection::close() {
  auto st = state_;
  asio::post(st->strand, [st] {
    st->disarm();
    st->drop();
  });
}

}  // namespace tellonce
