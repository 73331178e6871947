// Test support: runs an io_context on a background thread and talks HTTP to 127.0.0.1
// with a blocking Beast client.
#pragma once

#include "http/server.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <string>
#include <thread>

namespace tellonce::testing {

class IoThread {
 public:
  IoThread() = default;
  ~IoThread() { stop(); }
  void start() { thread_ = std::thread([this] { io.run(); }); }
  void stop() {
    if (!thread_.joinable()) return;
    work_.reset();
    io.stop();
    thread_.join();
  }
  asio::io_context io;

 private:
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io);
  std::thread thread_;
};

inline HttpRequest make_request(http::verb verb, std::string target, std::string body = {},
                                std::string content_type = "application/fhir+json") {
  HttpRequest req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  if (!body.empty() || verb == http::verb::post) req.set(http::field::content_type, content_type);
  req.body() = std::move(body);
  req.prepare_payload();
  return req;
}

// One request on a fresh connection.
inline HttpResponse send(unsigned short port, const HttpRequest& req) {
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  s.connect({asio::ip::make_address("127.0.0.1"), port});
  http::write(s, req);
  boost::beast::flat_buffer buf;
  HttpResponse res;
  http::read(s, buf, res);
  return res;
}

}  // namespace tellonce::testing
