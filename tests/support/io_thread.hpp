// Test support: an io_context run by one background thread until stop() or destruction.
// Post work to `io` from any thread; stop() joins the thread (pending handlers are dropped).
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <thread>

namespace tellonce::test {

class IoThread {
 public:
  IoThread() = default;
  ~IoThread() { stop(); }
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  void start() { thread_ = std::thread([this] { io.run(); }); }
  void stop() {
    if (!thread_.joinable()) return;
    work_.reset();
    io.stop();
    thread_.join();
  }
  boost::asio::io_context io;

 private:
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_ =
      boost::asio::make_work_guard(io);
  std::thread thread_;
};

}  // namespace tellonce::test
