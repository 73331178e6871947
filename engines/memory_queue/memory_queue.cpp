#include "memory_queue.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/system_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tellonce {
namespace {

using JobHandler = asio::any_completion_handler<void(std::optional<DeliveryJob>)>;
// seq orders jobs; delivery_id only breaks ties (a message has one job per destination).
// A suspended next(): its handler and the executor it resumes on.
struct Waiter {
  asio::any_io_executor executor;
  JobHandler handler;
};
using JobKey = std::pair<std::int64_t, std::int64_t>;
constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();

JobKey key_of(const DeliveryJob& j) { return {j.seq, j.delivery_id}; }

Failure stopped_failure() {
  return Failure::retryable(Errc::unavailable,
                            Issue{Severity::error, "transient", "delivery queue is stopped", "", ""});
}

// One patient's jobs at one destination that wait for the patient's current job to end.
struct Lane {
  std::map<JobKey, DeliveryJob> backlog;
  bool busy = false;  // a job of this patient is ready, in flight or backing off
};

struct Destination {
  explicit Destination(const asio::any_io_executor& ex) : timer(ex) {}
  std::map<JobKey, DeliveryJob> ready;
  std::multimap<std::int64_t, DeliveryJob> delayed;  // by due time, ms since epoch
  std::unordered_map<std::string, Lane> lanes;
  std::size_t held = 0;  // jobs sitting in lane backlogs
  std::size_t in_flight = 0;
  std::deque<Waiter> waiters;
  // Due times are wall-clock ms (they come from the store), hence a system_timer.
  asio::system_timer timer;
  std::int64_t timer_due = never;
};

struct Handoff {
  Waiter waiter;
  std::optional<DeliveryJob> job;
};

struct QueueState : std::enable_shared_from_this<QueueState> {
  QueueState(asio::any_io_executor ex, std::size_t max_body_bytes)
      : executor(std::move(ex)), max_body_bytes(max_body_bytes) {}

  asio::any_io_executor executor;
  mutable std::mutex mutex;
  bool stopped = false;
  const std::size_t max_body_bytes;
  std::size_t body_bytes = 0;   // bodies of queued jobs, all destinations

  // A job enters the queue: its body stays in memory while the budget allows. An empty body
  // means "not carried": the dispatcher reads it from the store when the job's turn comes.
  void keep_or_drop_body(DeliveryJob& job) {
    if (job.body.empty()) return;
    if (body_bytes + job.body.size() > max_body_bytes) {
      std::string().swap(job.body);  // frees it
    } else {
      body_bytes += job.body.size();
    }
  }
  // A job leaves the queue for a worker.
  void forget_body(const DeliveryJob& job) { body_bytes -= job.body.size(); }
  // Destinations are never erased, so references stay valid while the mutex is held.
  std::unordered_map<std::string, std::unique_ptr<Destination>> destinations;

  Destination& destination(const std::string& name) {
    auto& d = destinations[name];
    if (!d) d = std::make_unique<Destination>(executor);
    return *d;
  }

  void hand_over(std::vector<Handoff>& out) {
    // Resume each waiter on its own executor, outside the lock.
    for (auto& h : out) {
      auto resume = [handler = std::move(h.waiter.handler), job = std::move(h.job)]() mutable {
        std::move(handler)(std::move(job));
      };
      asio::post(h.waiter.executor, std::move(resume));
    }
  }

  void arm(const std::string& name, Destination& d, std::int64_t due) {
    if (due >= d.timer_due) return;
    d.timer_due = due;
    d.timer.expires_at(std::chrono::system_clock::time_point(std::chrono::milliseconds(due)));
    std::weak_ptr<QueueState> weak = weak_from_this();
    d.timer.async_wait([weak, name](boost::system::error_code ec) {
      if (ec == asio::error::operation_aborted) return;
      if (auto self = weak.lock()) self->on_timer(name);
    });
  }

  // Makes a job eligible once its not_before time has come.
  void release(const std::string& name, Destination& d, DeliveryJob job, std::int64_t now) {
    if (job.not_before_ms > now) {
      auto due = job.not_before_ms;
      d.delayed.emplace(due, std::move(job));
      arm(name, d, due);
    } else {
      auto key = key_of(job);
      d.ready.emplace(key, std::move(job));
    }
  }

  void feed_waiters(Destination& d, std::vector<Handoff>& out) {
    while (!d.waiters.empty() && !d.ready.empty()) {
      auto node = d.ready.extract(d.ready.begin());
      forget_body(node.mapped());
      ++d.in_flight;
      out.push_back({std::move(d.waiters.front()), std::move(node.mapped())});
      d.waiters.pop_front();
    }
  }

  void on_timer(const std::string& name) {
    std::vector<Handoff> out;
    {
      std::lock_guard lock(mutex);
      if (stopped) return;
      auto& d = destination(name);
      d.timer_due = never;
      auto now = now_ms();
      while (!d.delayed.empty() && d.delayed.begin()->first <= now) {
        auto node = d.delayed.extract(d.delayed.begin());
        auto key = key_of(node.mapped());
        d.ready.emplace(key, std::move(node.mapped()));
      }
      if (!d.delayed.empty()) arm(name, d, d.delayed.begin()->first);
      feed_waiters(d, out);
    }
    hand_over(out);
  }

  Result<void> push(DeliveryJob job) {
    std::vector<Handoff> out;
    {
      std::lock_guard lock(mutex);
      if (stopped) return stopped_failure();
      auto name = job.destination;
      auto& d = destination(name);
      keep_or_drop_body(job);
      if (!job.patient_key.empty()) {
        auto& lane = d.lanes[job.patient_key];
        if (lane.busy) {
          auto key = key_of(job);
          lane.backlog.emplace(key, std::move(job));
          ++d.held;
          return {};
        }
        lane.busy = true;
      }
      release(name, d, std::move(job), now_ms());
      feed_waiters(d, out);
    }
    hand_over(out);
    return {};
  }

  void take(const std::string& name, Waiter waiter) {
    std::vector<Handoff> out;
    {
      std::lock_guard lock(mutex);
      if (stopped) {
        out.push_back({std::move(waiter), std::nullopt});
      } else {
        auto& d = destination(name);
        d.waiters.push_back(std::move(waiter));
        feed_waiters(d, out);
      }
    }
    hand_over(out);
  }

  Result<void> settle(DeliveryJob job, Settlement s) {
    std::vector<Handoff> out;
    {
      std::lock_guard lock(mutex);
      if (stopped) return stopped_failure();
      auto& d = destination(job.destination);
      if (d.in_flight > 0) --d.in_flight;
      auto now = now_ms();
      if (s.kind == Settlement::Kind::retry) {
        // The patient's lane stays busy: later records wait behind this one.
        job.not_before_ms = s.retry_at_ms;
        keep_or_drop_body(job);
        auto name = job.destination;
        release(name, d, std::move(job), now);
      } else if (!job.patient_key.empty()) {
        auto it = d.lanes.find(job.patient_key);
        if (it != d.lanes.end()) {
          auto& lane = it->second;
          if (lane.backlog.empty()) {
            d.lanes.erase(it);
          } else {
            auto node = lane.backlog.extract(lane.backlog.begin());
            --d.held;
            release(job.destination, d, std::move(node.mapped()), now);
          }
        }
      }
      feed_waiters(d, out);
    }
    hand_over(out);
    return {};
  }

  QueueStats stats(const std::string& name) const {
    std::lock_guard lock(mutex);
    auto it = destinations.find(name);
    if (it == destinations.end()) return {};
    const auto& d = *it->second;
    return {d.ready.size(), d.delayed.size() + d.held, d.in_flight};
  }

  void stop() {
    std::vector<Handoff> out;
    {
      std::lock_guard lock(mutex);
      if (stopped) return;
      stopped = true;
      for (auto& [name, d] : destinations) {
        d->timer.cancel();
        for (auto& w : d->waiters) out.push_back({std::move(w), std::nullopt});
        d->waiters.clear();
      }
    }
    hand_over(out);
  }
};

// Initiation for next(): registers the coroutine's handler as a waiter.
struct TakeJob {
  std::shared_ptr<QueueState> state;
  std::string destination;
  template <class Handler>
  void operator()(Handler&& handler) {
    asio::any_io_executor ex = asio::get_associated_executor(handler, state->executor);
    state->take(destination, Waiter{std::move(ex), JobHandler(std::forward<Handler>(handler))});
  }
};

class MemoryQueue final : public Queue {
 public:
  MemoryQueue(asio::any_io_executor ex, std::size_t max_body_bytes)
      : state_(std::make_shared<QueueState>(std::move(ex), max_body_bytes)) {}
  ~MemoryQueue() override { state_->stop(); }

  asio::awaitable<Result<void>> push(DeliveryJob job) override { co_return state_->push(std::move(job)); }

  asio::awaitable<std::optional<DeliveryJob>> next(std::string destination) override {
    TakeJob take{state_, std::move(destination)};
    co_return co_await asio::async_initiate<decltype(asio::use_awaitable),
                                           void(std::optional<DeliveryJob>)>(std::move(take),
                                                                             asio::use_awaitable);
  }

  asio::awaitable<Result<void>> settle(DeliveryJob job, Settlement s) override {
    co_return state_->settle(std::move(job), s);
  }
  QueueStats stats(const std::string& destination) const override { return state_->stats(destination); }
  void stop() override { state_->stop(); }

 private:
  std::shared_ptr<QueueState> state_;
};

}  // namespace

std::unique_ptr<Queue> make_memory_queue(asio::any_io_executor timer_executor, std::size_t max_body_bytes) {
  return std::make_unique<MemoryQueue>(std::move(timer_executor), max_body_bytes);
}

}  // namespace tellonce
