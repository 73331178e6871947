// A few threads ("validate") for the parse and validation of big records, so a record that takes
// long to check does not hold an I/O thread, and with it every connection that thread serves.
//
// Threading: run() may be called from any coroutine on any executor; the work runs on one of the
// pool's threads and the awaiting coroutine resumes on its own executor (a work guard keeps that
// executor's context alive until the resumption is posted). Work passed to run() must stay valid
// until run() completes: the awaiting coroutine is suspended meanwhile, so references to its
// locals are safe. An exception from the work is rethrown in the awaiting coroutine.
// Lifetime: the destructor finishes the work already queued, then joins the threads; nothing may
// call run() once destruction has begun.
#pragma once

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <exception>
#include <thread>
#include <utility>
#include <vector>

namespace tellonce {

namespace asio = boost::asio;

class ValidationPool {
 public:
  explicit ValidationPool(unsigned threads);
  ~ValidationPool();
  ValidationPool(const ValidationPool&) = delete;
  ValidationPool& operator=(const ValidationPool&) = delete;

  // Runs work() (void()) on a pool thread; completes on the caller's executor once it returned.
  template <class Work>
  asio::awaitable<void> run(Work work) {
    auto initiate = [this, &work](auto handler) {
      auto resume_on = asio::make_work_guard(asio::get_associated_executor(handler));
      auto job = [work = std::move(work), handler = std::move(handler),
                  resume_on = std::move(resume_on)]() mutable {
        std::exception_ptr error;
        try {
          work();
        } catch (...) {
          error = std::current_exception();
        }
        auto deliver = [handler = std::move(handler), error]() mutable { std::move(handler)(error); };
        asio::post(resume_on.get_executor(), std::move(deliver));
        // Released only after post() returned: the caller's context must not run out of work
        // (and be torn down) before the resumption is queued.
        resume_on.reset();
      };
      asio::post(context_, std::move(job));
    };
    co_await asio::async_initiate<decltype(asio::use_awaitable), void(std::exception_ptr)>(
        initiate, asio::use_awaitable);
  }

 private:
  asio::io_context context_;
  asio::executor_work_guard<asio::io_context::executor_type> keep_running_;
  std::vector<std::thread> threads_;
};

}  // namespace tellonce
