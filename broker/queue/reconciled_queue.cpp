#include "broker/queue/reconciled_queue.hpp"

#include "tellonce/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <mutex>
#include <random>
#include <stdexcept>
#include <vector>

namespace tellonce {

struct ReconciledQueue::State {
  std::unique_ptr<Queue> queue;
  Store& store;
  ReconcileSettings settings;
  std::atomic<bool> stopped{false};
  std::mutex mutex;
  std::vector<std::int64_t> confirmed;  // under mutex: pushes the queue confirmed, not yet marked

  State(std::unique_ptr<Queue> q, Store& s, ReconcileSettings r) : queue(std::move(q)), store(s), settings(r) {}

  void note(std::int64_t delivery_id) {
    std::lock_guard lock(mutex);
    confirmed.push_back(delivery_id);
  }

  asio::awaitable<void> write_marks() {
    std::vector<std::int64_t> ids;
    {
      std::lock_guard lock(mutex);
      ids.swap(confirmed);
    }
    if (ids.empty()) co_return;
    auto marked = co_await store.mark_queued(ids);
    if (marked) co_return;
    log::warn("queue", "could not note " + std::to_string(ids.size()) + " queued deliveries in the store (tried "
                       "again): " + marked.error().summary());
    std::lock_guard lock(mutex);
    confirmed.insert(confirmed.end(), ids.begin(), ids.end());
  }

  // Claims and pushes what is due, batch after batch; how many were pushed.
  asio::awaitable<std::size_t> sweep() {
    std::size_t pushed = 0, refused = 0;
    while (!stopped) {
      auto claimed = co_await store.claim_unqueued(settings.claim_batch);
      if (!claimed) {
        log::warn("queue", "could not look for deliveries to queue again: " + claimed.error().summary());
        break;
      }
      for (auto& job : *claimed) {
        const auto id = job.delivery_id;
        auto queued = co_await queue->push(std::move(job));
        if (queued) {
          note(id);
          ++pushed;
        } else {
          ++refused;  // still pending and due again after the lease: a later sweep tries it
        }
      }
      if (claimed->size() < settings.claim_batch) break;
    }
    if (pushed || refused)
      log::warn("queue", std::to_string(pushed) + " pending deliveries no node had confirmed queueing were queued" +
                             (refused ? " (" + std::to_string(refused) + " refused, tried again later)" : std::string()));
    co_return pushed;
  }

  static asio::awaitable<void> run(std::shared_ptr<State> self) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    std::minstd_rand jitter(std::random_device{}());
    auto sweep_gap = [&] {
      const auto base = std::max<std::int64_t>(self->settings.grace.count() / 3, 1);
      return std::chrono::milliseconds(base * 8 / 10 + static_cast<std::int64_t>(jitter() % (base * 4 / 10 + 1)));
    };
    auto next_sweep = std::chrono::steady_clock::now() + sweep_gap();
    while (!self->stopped) {
      timer.expires_after(self->settings.mark_every);
      co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
      co_await self->write_marks();
      if (std::chrono::steady_clock::now() < next_sweep || self->stopped) continue;
      co_await self->sweep();
      co_await self->write_marks();
      next_sweep = std::chrono::steady_clock::now() + sweep_gap();
    }
    co_await self->write_marks();  // stopping: what the queue confirmed last, while the store is open
  }
};

ReconciledQueue::ReconciledQueue(std::unique_ptr<Queue> shared, Store& store, ReconcileSettings settings)
    : state_(std::make_shared<State>(std::move(shared), store, settings)) {}

ReconciledQueue::~ReconciledQueue() { stop(); }

std::size_t ReconciledQueue::sweep_now() {
  asio::io_context io;
  std::size_t pushed = 0;
  std::exception_ptr failed;
  auto work = [](std::shared_ptr<State> self) -> asio::awaitable<std::size_t> {
    auto n = co_await self->sweep();
    co_await self->write_marks();
    co_return n;
  };
  asio::co_spawn(io, work(state_), [&](std::exception_ptr e, std::size_t n) {
    failed = e;
    pushed = n;
  });
  io.run();
  if (failed) std::rethrow_exception(failed);  // start-up: an exception is the way out
  return pushed;
}

void ReconciledQueue::start(asio::any_io_executor executor) {
  asio::co_spawn(executor, State::run(state_), [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log::error("queue", std::string("the queue's reconciliation with the store stopped: ") + ex.what());
    }
  });
}

asio::awaitable<Result<void>> ReconciledQueue::push(DeliveryJob job) {
  const auto id = job.delivery_id;
  auto queued = co_await state_->queue->push(std::move(job));
  if (queued) state_->note(id);
  co_return queued;
}

asio::awaitable<std::optional<DeliveryJob>> ReconciledQueue::next(std::string destination) {
  return state_->queue->next(std::move(destination));
}

asio::awaitable<Result<void>> ReconciledQueue::settle(DeliveryJob job, Settlement s) {
  return state_->queue->settle(std::move(job), s);
}

QueueStats ReconciledQueue::stats(const std::string& destination) const { return state_->queue->stats(destination); }

void ReconciledQueue::stop() {
  state_->stopped = true;
  state_->queue->stop();
}

}  // namespace tellonce
