// One MLLP client connection to an HL7 v2 receiver: sends a message and waits for the ACK that
// answers it. Used by the `mllp` outbound adapter (a pool of these per destination) and by
// `tellonce mllp-send`.
//
// Contract
// - exchange() connects when not connected (the connection is kept for the next message),
//   writes one framed message and reads frames until an ACK whose MSA-2 equals the control id
//   sent. Any other frame (a late ACK for an older message, something unreadable) is discarded
//   and counted, never taken for this message's answer. Its deadline covers all the reading.
// - After a timeout, a failed write or read, or a closed connection, the connection is closed,
//   so a later exchange starts on a fresh one (and no late ACK can reach it).
// - A connection that was reused and turns out to have been closed by the peer before anything
//   was read back is reconnected and the message sent once more (receivers close idle
//   connections; the send was then never seen).
// - Threading: one exchange at a time per MllpConnection (callers serialise; the pool does).
//   Its I/O runs on a strand of its own; exchange() resumes the caller on the caller's executor.
//   close() may be called from any thread. Never throws for network failures: they are results.
#pragma once

#include "hl7v2/ack.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

namespace boost::asio::ssl { class context; }

namespace tellonce {

namespace asio = boost::asio;

struct MllpExchange {
  enum class Status {
    acked,           // `ack` holds the matching ACK
    connect_failed,  // nothing was sent
    send_failed,     // the connection broke while sending
    timed_out,       // no matching ACK before the deadline
    closed,          // the receiver closed the connection before a matching ACK came
  };
  Status status = Status::connect_failed;
  hl7v2::ReceivedAck ack;
  std::string ack_er7;         // the matching ACK as received
  std::string detail;          // what went wrong, for people (no message contents)
  std::size_t discarded = 0;   // frames read and dropped: other MSA-2s, unreadable ones
  bool broker_fault = false;   // this process ran out of descriptors or memory: not the receiver's fault
  bool ok() const { return status == Status::acked; }
};

struct MllpClientOptions {
  std::string host;
  std::string port;
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds ack_timeout{10000};
  std::size_t max_frame_bytes = 1024 * 1024;  // an ACK longer than this is discarded
  // MLLP over TLS when set (make_tls_client_context, tellonce/tls.hpp): the receiver's certificate
  // is verified and must name `host`; the handshake counts against connect_timeout.
  std::shared_ptr<asio::ssl::context> tls;
};

class MllpConnection {
 public:
  MllpConnection(asio::any_io_executor executor, MllpClientOptions options);
  ~MllpConnection();
  MllpConnection(const MllpConnection&) = delete;
  MllpConnection& operator=(const MllpConnection&) = delete;

  // `er7` unframed (segments ended by CR); `control_id` its MSH-10.
  asio::awaitable<MllpExchange> exchange(std::string er7, std::string control_id);
  void close();

  struct State;

 private:
  std::shared_ptr<State> state_;
};

// "host:port" (or "[v6]:port") split; false when it has no port.
bool split_host_port(const std::string& address, std::string& host, std::string& port);

}  // namespace tellonce
