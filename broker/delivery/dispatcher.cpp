#include "delivery/delivery.hpp"

#include "core/log.hpp"

#include <boost/asio/co_spawn.hpp>

#include <atomic>
#include <exception>
#include <random>

namespace tellonce {
namespace {

// When the store cannot record an attempt the job stays pending and is offered again after this.
constexpr std::int64_t store_retry_ms = 1000;

struct Counters {
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> failed_attempts{0};
  std::atomic<std::uint64_t> dead{0};
};

double random01() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

std::string describe_failure(const DeliveryAttempt& a) {
  std::string line = "attempt failed destination=" + a.destination + " message=" + a.message_id +
                     " attempt=" + std::to_string(a.attempt) + " status=" + std::to_string(a.http_status);
  if (a.dead)
    line += a.retryable ? " outcome=dead(attempts exhausted)" : " outcome=dead(permanent)";
  else
    line += " retry_in_ms=" + std::to_string(a.next_attempt_ms - a.at_ms);
  line += " detail=\"" + a.detail + "\"";
  return line;
}

}  // namespace

struct Dispatcher::State {
  State(asio::io_context& io, Store& store, Queue& queue, DeliverySettings settings,
        std::map<std::string, std::shared_ptr<OutboundAdapter>> adapters)
      : io(io), store(store), queue(queue), settings(std::move(settings)), adapters(std::move(adapters)) {
    for (const auto& [destination, adapter] : this->adapters) counters.try_emplace(destination);
  }

  asio::io_context& io;
  Store& store;
  Queue& queue;
  DeliverySettings settings;
  std::map<std::string, std::shared_ptr<OutboundAdapter>> adapters;
  std::map<std::string, Counters> counters;  // keys fixed at construction, so read without a lock
  std::atomic<bool> started{false};
  std::atomic<bool> stopping{false};

  // One attempt: deliver, record, and say how the queue should settle the job.
  asio::awaitable<Settlement> attempt(OutboundAdapter& adapter, DeliveryJob& job, Counters& counters) {
    DeliveryResult result = co_await adapter.deliver(job);
    if (stopping) co_return Settlement{Settlement::Kind::retry, now_ms()};  // not a partner failure

    DeliveryAttempt a;
    a.delivery_id = job.delivery_id;
    a.message_id = job.message_id;
    a.destination = job.destination;
    a.attempt = job.attempts + 1;
    a.at_ms = now_ms();
    a.ok = result.ok;
    a.retryable = !result.ok && result.retryable;
    a.http_status = result.http_status;
    a.detail = std::move(result.detail);

    Settlement settlement{Settlement::Kind::delivered, 0};
    if (!a.ok) {
      std::optional<std::int64_t> next;
      if (a.retryable) next = next_attempt_at(settings.retry, a.attempt, a.at_ms, random01());
      if (next) {
        a.next_attempt_ms = *next;
        settlement = {Settlement::Kind::retry, *next};
      } else {
        a.dead = true;
        settlement = {Settlement::Kind::dead, 0};
      }
      if (a.dead)
        log::error("delivery", describe_failure(a));
      else
        log::warn("delivery", describe_failure(a));
    }

    const bool ok = a.ok;
    const bool dead = a.dead;
    const int attempt_number = a.attempt;
    Result<void> recorded = co_await store.record_attempt(std::move(a));
    if (!recorded) {
      // Unrecorded means still pending: the attempt is repeated (receivers de-duplicate on X-Request-Id).
      log::error("delivery", "could not record attempt destination=" + job.destination +
                                 " message=" + job.message_id + " store=\"" + recorded.error().summary() +
                                 "\"; kept pending");
      co_return Settlement{Settlement::Kind::retry, now_ms() + store_retry_ms};
    }
    job.attempts = attempt_number;
    if (ok) {
      counters.delivered.fetch_add(1, std::memory_order_relaxed);
    } else {
      counters.failed_attempts.fetch_add(1, std::memory_order_relaxed);
      if (dead) counters.dead.fetch_add(1, std::memory_order_relaxed);
    }
    co_return settlement;
  }

  static asio::awaitable<void> work(std::shared_ptr<State> self, std::string destination,
                                    std::shared_ptr<OutboundAdapter> adapter) {
    Counters& counters = self->counters.at(destination);
    for (;;) {
      std::optional<DeliveryJob> job = co_await self->queue.next(destination);
      if (!job) co_return;
      // A failed attempt must not leave the job in flight, or the patient's lane stays blocked.
      Settlement settlement{Settlement::Kind::retry, 0};
      bool threw = false;
      try {
        settlement = co_await self->attempt(*adapter, *job, counters);
      } catch (const std::exception& e) {
        threw = true;
        log::error("delivery", "attempt threw destination=" + destination + " message=" + job->message_id +
                                   " error=\"" + e.what() + "\"");
      }
      if (threw) settlement = {Settlement::Kind::retry, now_ms() + store_retry_ms};
      self->queue.settle(*job, settlement);
      if (self->stopping) co_return;
    }
  }
};

Dispatcher::Dispatcher(asio::io_context& io, Store& store, Queue& queue, DeliverySettings settings,
                       std::map<std::string, std::shared_ptr<OutboundAdapter>> adapters)
    : state_(std::make_shared<State>(io, store, queue, std::move(settings), std::move(adapters))) {}

Dispatcher::~Dispatcher() { stop(); }

void Dispatcher::start() {
  if (state_->started.exchange(true)) return;
  const int workers = std::max(1, state_->settings.concurrency_per_destination);
  for (const auto& [destination, adapter] : state_->adapters) {
    if (!adapter) continue;
    for (int i = 0; i < workers; ++i) {
      auto on_exit = [destination](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          log::error("delivery", "worker ended destination=" + destination + " error=\"" + x.what() + "\"");
        } catch (...) {
          log::error("delivery", "worker ended destination=" + destination + " error=unknown");
        }
      };
      asio::co_spawn(state_->io, State::work(state_, destination, adapter), std::move(on_exit));
    }
  }
}

void Dispatcher::stop() {
  if (state_->stopping.exchange(true)) return;
  state_->queue.stop();
  for (auto& [destination, adapter] : state_->adapters)
    if (adapter) adapter->stop();
}

DestinationStats Dispatcher::stats(const std::string& destination) const {
  auto it = state_->counters.find(destination);
  if (it == state_->counters.end()) return {};
  return {it->second.delivered.load(), it->second.failed_attempts.load(), it->second.dead.load()};
}

}  // namespace tellonce
