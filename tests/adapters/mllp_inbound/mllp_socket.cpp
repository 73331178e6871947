#include "adapters/mllp_inbound/mllp_socket.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>

namespace tellonce::test {

namespace {

sockaddr_in loopback(unsigned short port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

bool wait_readable(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) > 0;
}

void write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    auto n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // the peer went away: the test sees it on its next read
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

// The n-th field of the MSH segment (MSH-1 being the separator).
std::string msh_field(const std::string& message, int n) {
  if (message.size() < 4) return {};
  char sep = message[3];
  auto end = message.find_first_of("\r\n");
  std::string msh = message.substr(0, end);
  std::size_t pos = 3;
  for (int field = 2; field < n; ++field) {  // the separator at [3] precedes MSH-2
    pos = msh.find(sep, pos + 1);
    if (pos == std::string::npos) return {};
  }
  auto next = msh.find(sep, pos + 1);
  return msh.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
}

}  // namespace

MllpSocket::MllpSocket(unsigned short port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  auto addr = loopback(port);
  if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw std::runtime_error("cannot connect to 127.0.0.1:" + std::to_string(port));
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

MllpSocket::~MllpSocket() {
  if (fd_ >= 0) ::close(fd_);
}

void MllpSocket::send_raw(std::string_view bytes) { write_all(fd_, bytes); }

std::optional<std::string> MllpSocket::read_frame(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    while (auto e = frames_.next())
      if (e->kind == hl7v2::FrameEvent::Kind::message) return std::move(e->message);
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || !wait_readable(fd_, left)) return std::nullopt;
    char buf[8192];
    auto n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return std::nullopt;
    frames_.feed(std::string_view(buf, static_cast<std::size_t>(n)));
  }
}

bool MllpSocket::wait_closed(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || !wait_readable(fd_, left)) return false;
    char buf[8192];
    auto n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return true;
  }
}

bool MllpSocket::nothing_to_read() { return !wait_readable(fd_, std::chrono::milliseconds(0)); }

ScriptedReceiver::ScriptedReceiver(Script script) : script_(std::move(script)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  auto addr = loopback(0);
  socklen_t len = sizeof addr;
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 16) != 0 || ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw std::runtime_error("cannot listen on loopback");
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { run(); });
}

ScriptedReceiver::~ScriptedReceiver() {
  stop_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  thread_.join();
  ::close(listen_fd_);
}

std::vector<std::string> ScriptedReceiver::received() const {
  std::lock_guard lk(mu_);
  return received_;
}

void ScriptedReceiver::run() {
  int number = 0;
  while (!stop_) {
    if (!wait_readable(listen_fd_, std::chrono::milliseconds(50))) continue;
    int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) continue;
    ++connections_;
    hl7v2::FrameReader frames(16 * 1024 * 1024);
    bool open = true;
    while (open && !stop_) {
      if (!wait_readable(fd, std::chrono::milliseconds(50))) continue;
      char buf[8192];
      auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      frames.feed(std::string_view(buf, static_cast<std::size_t>(n)));
      while (auto e = frames.next()) {
        if (e->kind != hl7v2::FrameEvent::Kind::message) continue;
        {
          std::lock_guard lk(mu_);
          received_.push_back(e->message);
        }
        auto reply = script_(e->message, ++number);
        for (const auto& ack : reply.acks) write_all(fd, hl7v2::mllp_frame(ack));
        if (reply.close_after) {
          open = false;
          break;
        }
      }
    }
    ::close(fd);
  }
}

std::string control_id_of(const std::string& message) { return msh_field(message, 10); }

std::string ack_for(const std::string& message, const std::string& code, const std::string& text) {
  return "MSH|^~\\&|LEGACY|SITE|TELLONCE||20261130120000||ACK^A31^ACK|ACK" + control_id_of(message) +
         "|P|2.4\rMSA|" + code + "|" + control_id_of(message) + (text.empty() ? "" : "|" + text) + "\r";
}

}  // namespace tellonce::test
