// Test support for the mllp adapters: a blocking MLLP client socket on loopback, and a scripted
// HL7 v2 receiver. Both are plain POSIX sockets run from the test's own threads, so they share
// nothing with the adapter's io_context. Every wait is bounded; none asserts a duration.
#pragma once

#include "hl7v2/mllp.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace tellonce::test {

class MllpSocket {
 public:
  explicit MllpSocket(unsigned short port);
  ~MllpSocket();
  MllpSocket(const MllpSocket&) = delete;
  MllpSocket& operator=(const MllpSocket&) = delete;

  void send_raw(std::string_view bytes);
  void send(std::string_view er7) { send_raw(hl7v2::mllp_frame(er7)); }
  // The next whole frame; nullopt when the peer closed or nothing came within `timeout`.
  std::optional<std::string> read_frame(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // True once the peer has closed the connection (EOF or reset) within `timeout`.
  bool wait_closed(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // True when no byte is waiting to be read right now.
  bool nothing_to_read();

 private:
  int fd_ = -1;
  hl7v2::FrameReader frames_{16 * 1024 * 1024};
};

// An HL7 v2 receiver on 127.0.0.1:port(): accepts connections one after another and answers each
// frame with what `script` returns (ACKs, unframed; none: no answer). `close_after` ends the
// connection once the answers are written.
class ScriptedReceiver {
 public:
  struct Reply {
    std::vector<std::string> acks;
    bool close_after = false;
  };
  using Script = std::function<Reply(const std::string& message, int message_number)>;

  explicit ScriptedReceiver(Script script);
  ~ScriptedReceiver();
  unsigned short port() const { return port_; }
  int connections() const { return connections_.load(); }
  std::vector<std::string> received() const;

 private:
  void run();
  Script script_;
  int listen_fd_ = -1;
  unsigned short port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  mutable std::mutex mu_;
  std::vector<std::string> received_;
  std::thread thread_;
};

// An ACK for `message` (its MSH-10 in MSA-2) with `code` and optional text.
std::string ack_for(const std::string& message, const std::string& code, const std::string& text = "");
// MSH-10 of an ER7 message, read by hand.
std::string control_id_of(const std::string& message);

}  // namespace tellonce::test
