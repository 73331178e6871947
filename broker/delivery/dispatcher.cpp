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
                     " attempt=" + std::to_string(a.attempt) + " outcome=" + std::string(to_string(a.outcome));
  if (a.dead)
    line += a.outcome == DeliveryOutcome::retryable ? " dead(attempts exhausted)" : " dead(permanent)";
  else
    line += " retry_in_ms=" + std::to_string(a.next_attempt_ms - a.at_ms);
  // The partner's reason may quote the record, so only its code is logged; the reason is on
  // the trail. Without an answer, the detail is the transport's own error.
  if (!a.partner_code.empty())
    line += " partner_code=\"" + a.partner_code + "\"";
  else
    line += " transport=\"" + a.detail + "\"";
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

  // What one delivery result means for the job, and the attempt to put on its trail.
  Settlement judge(const DeliveryJob& job, DeliveryResult result, DeliveryAttempt& a) {
    a.delivery_id = job.delivery_id;
    a.message_id = job.message_id;
    a.destination = job.destination;
    a.attempt = job.attempts + 1;
    a.at_ms = now_ms();
    a.outcome = result.outcome;
    a.partner_code = std::move(result.partner_code);
    a.detail = std::move(result.detail);
    if (a.ok()) return {Settlement::Kind::delivered, 0};
    std::optional<std::int64_t> next;
    if (a.outcome == DeliveryOutcome::retryable) next = next_attempt_at(settings.retry, a.attempt, a.at_ms, random01());
    Settlement settlement{Settlement::Kind::dead, 0};
    if (next) {
      a.next_attempt_ms = *next;
      settlement = {Settlement::Kind::retry, *next};
    } else {
      a.dead = true;
    }
    if (a.dead)
      log::error("delivery", describe_failure(a));
    else
      log::warn("delivery", describe_failure(a));
    return settlement;
  }

  // Makes the attempt durable, then settles the job. Until then the job stays in flight, so
  // the patient's next record for this destination is still held back.
  static asio::awaitable<void> record_and_settle(std::shared_ptr<State> self, DeliveryJob job,
                                                 DeliveryAttempt a, Settlement settlement) {
    Counters& counters = self->counters.at(job.destination);
    const bool ok = a.ok();
    const bool dead = a.dead;
    const int attempt_number = a.attempt;
    Result<void> recorded = co_await self->store.record_attempt(std::move(a));
    if (!recorded) {
      // Unrecorded means still pending: the attempt is repeated (receivers de-duplicate on X-Request-Id).
      log::error("delivery", "could not record attempt destination=" + job.destination +
                                 " message=" + job.message_id + " store=\"" + recorded.error().summary() +
                                 "\"; kept pending");
      self->queue.settle(job, Settlement{Settlement::Kind::retry, now_ms() + store_retry_ms});
      co_return;
    }
    job.attempts = attempt_number;
    if (ok) {
      counters.delivered.fetch_add(1, std::memory_order_relaxed);
    } else {
      counters.failed_attempts.fetch_add(1, std::memory_order_relaxed);
      if (dead) counters.dead.fetch_add(1, std::memory_order_relaxed);
    }
    self->queue.settle(job, settlement);
  }

  static void log_exit(const std::string& what, std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      log::error("delivery", what + " error=\"" + x.what() + "\"");
    } catch (...) {
      log::error("delivery", what + " error=unknown");
    }
  }

  static asio::awaitable<void> work(std::shared_ptr<State> self, std::string destination,
                                    std::shared_ptr<OutboundAdapter> adapter) {
    for (;;) {
      std::optional<DeliveryJob> job = co_await self->queue.next(destination);
      if (!job) co_return;
      if (job->body_in_store) {
        // Queued past the queue's memory budget: the body is read back just before sending.
        Result<std::string> body = co_await self->store.body(job->message_id);
        if (!body) {
          log::error("delivery", "could not read the body destination=" + destination + " message=" +
                                     job->message_id + " store=\"" + body.error().summary() + "\"; kept pending");
          self->queue.settle(*job, Settlement{Settlement::Kind::retry, now_ms() + store_retry_ms});
          continue;
        }
        job->body = std::move(*body);
        job->body_in_store = false;
      }
      DeliveryResult result;
      bool threw = false;
      try {
        result = co_await adapter->deliver(*job);
      } catch (const std::exception& e) {
        threw = true;
        log::error("delivery", "attempt threw destination=" + destination + " message=" + job->message_id +
                                   " error=\"" + e.what() + "\"");
      }
      // A failed attempt must not leave the job in flight, or the patient's lane stays blocked.
      if (threw) {
        self->queue.settle(*job, Settlement{Settlement::Kind::retry, now_ms() + store_retry_ms});
        continue;
      }
      if (self->stopping) {  // cut off by shutdown: not a partner failure, stays pending
        self->queue.settle(*job, Settlement{Settlement::Kind::retry, now_ms()});
        co_return;
      }
      DeliveryAttempt a;
      Settlement settlement = self->judge(*job, std::move(result), a);
      // Recording is handed off so this worker carries the next record while the store's group
      // commit makes this attempt durable: workers wait on partners, never on fsync.
      // The log line is built only if recording throws; destination and id are copied for it.
      auto on_done = [destination, message_id = job->message_id](std::exception_ptr e) {
        if (e) log_exit("recording attempt destination=" + destination + " message=" + message_id, e);
      };
      asio::co_spawn(self->io, record_and_settle(self, std::move(*job), std::move(a), settlement), std::move(on_done));
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
      auto on_exit = [destination](std::exception_ptr e) { State::log_exit("worker ended destination=" + destination, e); };
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
