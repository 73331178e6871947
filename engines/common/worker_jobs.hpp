// Work handed from coroutines to a store's own threads (writer, reader). The awaiting
// coroutine is resumed on its own executor once the worker has a result.
#pragma once

#include "tellonce/error.hpp"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace tellonce::store_detail {

namespace asio = boost::asio;

// Work for the writer or reader thread. run() computes the result there; complete() hands it
// to the awaiting coroutine on that coroutine's own executor.
class Job {
 public:
  virtual ~Job() = default;
  virtual void run() = 0;
  virtual void fail(Failure f) = 0;
  virtual void complete() = 0;  // once, after run() or fail()
};

template <class T, class Work, class Handler>
class JobFor final : public Job {
 public:
  JobFor(Work work, Handler handler)
      : work_(std::move(work)),
        handler_(std::move(handler)),
        work_guard_(asio::get_associated_executor(handler_)) {}

  void run() override { result_.emplace(work_()); }
  void fail(Failure f) override { result_.emplace(std::move(f)); }

  void complete() override {
    auto deliver = [handler = std::move(handler_), result = std::move(*result_)]() mutable {
      std::move(handler)(std::move(result));
    };
    asio::post(work_guard_.get_executor(), std::move(deliver));
    // Released only after post() has returned: until then the caller's io_context must not
    // run out of work, finish run() and be destroyed under this thread's feet.
    work_guard_.reset();
  }

 private:
  Work work_;
  Handler handler_;
  asio::executor_work_guard<asio::associated_executor_t<Handler>> work_guard_;
  std::optional<Result<T>> result_;
};

struct JobQueue {
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<std::unique_ptr<Job>> jobs;
  std::uint64_t arrivals = 0;
  bool closed = false;

  // Takes the job unless closed. The consumer only sleeps on an empty queue or while it
  // waits for a full batch, so only those two moments need a wake-up.
  bool push(std::unique_ptr<Job>& job, std::size_t full) {
    {
      std::lock_guard lock(mutex);
      if (closed) return false;
      jobs.push_back(std::move(job));
      ++arrivals;
      if (jobs.size() != 1 && jobs.size() != full) return true;
    }
    ready.notify_one();
    return true;
  }

  void close() {
    {
      std::lock_guard lock(mutex);
      closed = true;
    }
    ready.notify_all();
  }

  // The writer's next group commit, at most `max` jobs: waits for work. Jobs that queued up
  // while the last batch was written mean load, and only then is waiting worth it, to let one
  // flush cover more commits: up to `max_delay`, and no longer once arrivals pause for an
  // eighth of it (waiting longer would only add latency). When idle, a job goes at once.
  // False once closed and drained.
  bool take_batch(std::vector<std::unique_ptr<Job>>& batch, std::size_t max, std::chrono::microseconds max_delay) {
    using clock = std::chrono::steady_clock;
    std::unique_lock lock(mutex);
    const bool under_load = !jobs.empty();
    ready.wait(lock, [this] { return !jobs.empty() || closed; });
    if (jobs.empty()) return false;
    if (under_load) {
      const auto deadline = clock::now() + max_delay;
      while (jobs.size() < max && !closed && clock::now() < deadline) {
        const auto seen = arrivals;
        ready.wait_for(lock, max_delay / 8);
        if (arrivals == seen) break;
      }
    }
    while (!jobs.empty() && batch.size() < max) {
      batch.push_back(std::move(jobs.front()));
      jobs.pop_front();
    }
    return true;
  }
};

}  // namespace tellonce::store_detail
