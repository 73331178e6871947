// Test support: driving coroutines and io_contexts from a test's thread.
// Everything here runs on the calling thread; nothing is left running when a call returns
// except what the io_context still holds.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>

namespace tellonce::test {

namespace asio = boost::asio;

// Runs one coroutine to completion on `io` (restarted first) and returns its value, rethrowing
// what it threw. Other work on `io` runs too; the call returns once the coroutine has finished
// and `io` has no more ready work, or throws std::runtime_error after `limit`.
template <class T>
T run_async(asio::io_context& io, asio::awaitable<T> task,
            std::chrono::milliseconds limit = std::chrono::seconds(30)) {
  std::exception_ptr error;
  std::optional<T> out;
  bool done = false;
  asio::co_spawn(io, std::move(task), [&](std::exception_ptr e, T value) {
    error = e;
    if (!e) out.emplace(std::move(value));
    done = true;
  });
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_one_for(std::chrono::milliseconds(20));
  }
  if (!done) throw std::runtime_error("run_async: the coroutine did not finish in time");
  if (error) std::rethrow_exception(error);
  return std::move(*out);
}

inline void run_async(asio::io_context& io, asio::awaitable<void> task,
                      std::chrono::milliseconds limit = std::chrono::seconds(30)) {
  auto wrapped = [](asio::awaitable<void> t) -> asio::awaitable<bool> {
    co_await std::move(t);
    co_return true;
  };
  run_async<bool>(io, wrapped(std::move(task)), limit);
}

// The same on a fresh io_context of its own. Returns only once nothing holds work on it any
// more: a store thread may still hold a work guard for a moment after its result arrived, and
// the io_context must outlive that.
template <class T>
T run_async(asio::awaitable<T> task) {
  asio::io_context io;
  std::optional<T> out;
  std::exception_ptr error;
  try {
    out.emplace(run_async<T>(io, std::move(task)));
  } catch (...) {
    error = std::current_exception();
  }
  io.restart();
  io.run();
  if (error) std::rethrow_exception(error);
  return std::move(*out);
}

// An io_context for several run_async calls on one thread (a load test's committer): before it
// goes it runs until nothing holds work on it, since a store thread may still hold a work guard
// for a moment after posting a result, and destroying the context under it is a use after free.
class DrainedIoContext : public asio::io_context {
 public:
  ~DrainedIoContext() {
    restart();
    run();
  }
};

// Runs `io` one handler at a time until `done()` holds or `limit` passes (bounded, so a bug
// fails the test instead of hanging it). Returns done().
inline bool run_until(asio::io_context& io, const std::function<bool()>& done,
                      std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_one_for(std::chrono::milliseconds(20));
  }
  return done();
}

// Runs every handler that is ready now, without waiting for timers or I/O.
inline void run_ready(asio::io_context& io) {
  io.restart();
  io.poll();
}

}  // namespace tellonce::test
