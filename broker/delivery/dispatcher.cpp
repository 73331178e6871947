#include "broker/delivery/delivery.hpp"
#include "tellonce/audit.hpp"

#include "tellonce/log.hpp"
#include "broker/metrics/broker_metrics.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/system_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <exception>
#include <mutex>
#include <random>
#include <vector>

namespace tellonce {
namespace {

// When the store cannot record an attempt or read a body, the job stays pending and is offered
// again after this; the same pause follows a failure of the broker's own resources.
constexpr std::int64_t store_retry_ms = 1000;
constexpr std::int64_t broker_fault_pause_ms = 1000;

double random01() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

// The partner's code, or without an answer the transport's own error. The partner's reason may
// quote the record, so only its code is logged; the reason is on the trail.
std::string partner_said(const std::string& partner_code, const std::string& detail) {
  if (!partner_code.empty()) return "partner_code=\"" + partner_code + "\"";
  return "transport=\"" + detail + "\"";
}

// What admission tells a worker.
enum Admitted : int { admit_again = -1, admit_stopped = -2, admit_send = 0, admit_probe = 1 };
using AdmitHandler = asio::any_completion_handler<void(int)>;
struct AdmitWaiter {
  asio::any_io_executor executor;
  AdmitHandler handler;
};

void resume_all(std::vector<AdmitWaiter>& waiters, int verdict) {
  for (auto& w : waiters) {
    auto resume = [handler = std::move(w.handler), verdict]() mutable { std::move(handler)(verdict); };
    asio::post(w.executor, std::move(resume));
  }
  waiters.clear();
}

}  // namespace

struct Dispatcher::State : std::enable_shared_from_this<Dispatcher::State> {
  // Everything kept per destination. Created at construction and never erased, so workers and
  // timers may hold a plain pointer while the State lives.
  struct Destination {
    Destination(std::string name, std::shared_ptr<OutboundAdapter> adapter, const RetryPolicy& policy,
                const asio::any_io_executor& ex)
        : name(std::move(name)), adapter(std::move(adapter)), circuit(policy), timer(ex) {}
    const std::string name;
    const std::shared_ptr<OutboundAdapter> adapter;
    std::shared_ptr<const Minimiser> minimiser;  // null: bodies go out as stored; set at construction
    std::atomic<std::uint64_t> delivered{0}, failed_attempts{0}, dead{0}, broker_faults{0};

    // Read without the lock on the hot path: the circuit is closed and nothing is held, and no
    // broker fault is being reported. Written under the mutex whenever either may change.
    std::atomic<bool> flowing{true};
    std::atomic<bool> broker_fault{false};  // the last verdict was the broker's own failure (logged once per spell)

    std::mutex mutex;  // guards everything below
    Circuit circuit;
    bool stopped = false;
    bool paused = false;  // by an operator: no job is taken while set
    std::int64_t last_failure_at_ms = 0, last_success_at_ms = 0;
    std::string last_error;
    bool last_failure_dead = false;
    std::vector<AdmitWaiter> waiters;  // workers waiting for the circuit
    // Circuit times are wall-clock ms, hence a system_timer.
    asio::system_timer timer;
    std::int64_t timer_due = Circuit::never;
  };

  State(asio::io_context& io, Store& store, Queue& queue, DeliverySettings settings,
        std::map<std::string, std::shared_ptr<OutboundAdapter>> adapters,
        std::map<std::string, std::shared_ptr<const Minimiser>> minimisers, BrokerMetrics* metrics, Audit* audit)
      : io(io), store(store), queue(queue), settings(std::move(settings)), metrics(metrics), audit(audit) {
    for (auto& [name, adapter] : adapters)
      destinations.emplace(name, std::make_unique<Destination>(name, std::move(adapter), this->settings.retry,
                                                               io.get_executor()));
    for (auto& [name, m] : minimisers)
      if (auto it = destinations.find(name); it != destinations.end()) it->second->minimiser = std::move(m);
  }

  asio::io_context& io;
  Store& store;
  Queue& queue;
  const DeliverySettings settings;
  BrokerMetrics* const metrics;  // null: not recorded
  Audit* const audit;            // null: not audited
  std::map<std::string, std::unique_ptr<Destination>> destinations;  // keys fixed at construction
  std::atomic<bool> started{false};
  std::atomic<bool> stopping{false};

  // ---- the circuit, as seen by workers ----

  // Under d.mutex: asks the circuit; a worker told to wait is registered with `register_waiter`.
  int try_admit(Destination& d, std::int64_t now, std::int64_t& wait_until) {
    if (d.stopped) return admit_stopped;
    if (d.paused) {  // woken by resume
      d.flowing.store(false, std::memory_order_release);
      wait_until = Circuit::never;
      return admit_again;
    }
    auto a = d.circuit.admit(now);
    d.flowing.store(d.circuit.sending_allowed(now), std::memory_order_release);
    if (a.kind == Circuit::Admission::Kind::send) return admit_send;
    if (a.kind == Circuit::Admission::Kind::probe) {
      log::info("delivery", "circuit probing destination=" + d.name +
                                " event=circuit.probe: sending one record (probe " +
                                std::to_string(d.circuit.probes()) + ")");
      return admit_probe;
    }
    wait_until = a.wait_until_ms;
    return admit_again;
  }

  // Under d.mutex.
  void arm(Destination& d, std::int64_t due) {
    if (due == Circuit::never || due >= d.timer_due) return;
    d.timer_due = due;
    d.timer.expires_at(std::chrono::system_clock::time_point(std::chrono::milliseconds(due)));
    std::weak_ptr<State> weak = weak_from_this();
    Destination* dp = &d;
    d.timer.async_wait([weak, dp](boost::system::error_code ec) {
      if (ec == asio::error::operation_aborted) return;
      if (auto self = weak.lock()) self->wake(*dp, true);
    });
  }

  // Lets every waiting worker ask the circuit again (its state or times changed).
  void wake(Destination& d, bool from_timer = false) {
    std::vector<AdmitWaiter> waiters;
    {
      std::lock_guard lock(d.mutex);
      if (from_timer) d.timer_due = Circuit::never;
      waiters.swap(d.waiters);
    }
    resume_all(waiters, admit_again);
  }

  // Initiation for waiting on the circuit: decides under the lock, so no change is missed.
  struct AwaitAdmission {
    State* self;
    Destination* d;
    template <class Handler>
    void operator()(Handler&& handler) {
      asio::any_io_executor ex = asio::get_associated_executor(handler, self->io.get_executor());
      int verdict = admit_again;
      {
        std::lock_guard lock(d->mutex);
        std::int64_t until = Circuit::never;
        verdict = self->try_admit(*d, now_ms(), until);
        if (verdict == admit_again) {
          d->waiters.push_back(AdmitWaiter{ex, AdmitHandler(std::forward<Handler>(handler))});
          self->arm(*d, until);
          return;
        }
      }
      auto resume = [h = AdmitHandler(std::forward<Handler>(handler)), verdict]() mutable { std::move(h)(verdict); };
      asio::post(ex, std::move(resume));
    }
  };

  // Waits until this worker may take a job: admit_send, admit_probe or admit_stopped. A closed
  // circuit answers without suspending (the hot path).
  asio::awaitable<int> admission(Destination& d) {
    if (d.flowing.load(std::memory_order_acquire) && !stopping.load(std::memory_order_relaxed)) co_return admit_send;
    for (;;) {
      {
        std::lock_guard lock(d.mutex);
        std::int64_t until = Circuit::never;
        int verdict = try_admit(d, now_ms(), until);
        if (verdict != admit_again) co_return verdict;
      }
      int verdict = co_await asio::async_initiate<decltype(asio::use_awaitable), void(int)>(
          AwaitAdmission{this, &d}, asio::use_awaitable);
      if (verdict != admit_again) co_return verdict;
    }
  }

  bool still_sending(Destination& d) {
    if (d.flowing.load(std::memory_order_acquire)) return true;
    std::lock_guard lock(d.mutex);
    return !d.paused && d.circuit.sending_allowed(now_ms());
  }

  // A probe ended without the partner's verdict: another one is due at retry_at.
  void probe_untried(Destination& d, std::int64_t retry_at) {
    {
      std::lock_guard lock(d.mutex);
      d.circuit.probe_untried(retry_at);
      d.flowing.store(false, std::memory_order_release);
    }
    wake(d);
  }

  void on_broker_fault(Destination& d, bool probe, const std::string& detail) {
    d.broker_faults.fetch_add(1, std::memory_order_relaxed);
    const auto until = now_ms() + broker_fault_pause_ms;
    bool first = false;
    {
      std::lock_guard lock(d.mutex);
      first = !d.broker_fault.exchange(true);
      d.circuit.hold(until);
      if (probe) d.circuit.probe_untried(until);
      d.flowing.store(false, std::memory_order_release);
    }
    if (first)
      log::error("delivery", "broker fault destination=" + d.name + " event=delivery.broker_fault detail=\"" + detail +
                                 "\": not the partner's failure; its deliveries pause and are retried, not counted");
    wake(d);
  }

  // The partner's verdict on one record, as the circuit sees it: one log line per change.
  void on_partner_verdict(Destination& d, bool probe, const DeliveryResult& result) {
    // The hot path: an answer while all is well changes nothing.
    if (result.outcome != DeliveryOutcome::retryable && d.flowing.load(std::memory_order_acquire) &&
        !d.broker_fault.load(std::memory_order_acquire))
      return;
    const auto now = now_ms();
    std::optional<Circuit::Change> change;
    bool recovered = false;
    int probes = 0;
    std::int64_t opened_at = 0, next_probe = 0;
    {
      std::lock_guard lock(d.mutex);
      recovered = d.broker_fault.exchange(false);
      opened_at = d.circuit.opened_at();
      probes = d.circuit.probes();
      if (result.outcome == DeliveryOutcome::retryable) change = d.circuit.failed(now, probe, random01());
      else change = d.circuit.answered(now);
      next_probe = d.circuit.next_probe_at();
      d.flowing.store(!d.paused && d.circuit.sending_allowed(now), std::memory_order_release);
    }
    if (recovered)
      log::info("delivery", "broker fault over destination=" + d.name + " event=delivery.broker_fault_over");
    if (!change) return;
    using S = Circuit::State;
    if (change->to == S::open && change->from == S::closed) {
      log::warn("delivery", "circuit open destination=" + d.name + " event=circuit.open " +
                                partner_said(result.partner_code, result.detail) +
                                ": holding its deliveries in order; first probe in " +
                                std::to_string(next_probe - now) + " ms");
    } else if (change->to == S::open) {
      log::info("delivery", "circuit open destination=" + d.name + " event=circuit.probe_failed: probe " +
                                std::to_string(probes) + " failed " + partner_said(result.partner_code, result.detail) +
                                "; next probe in " + std::to_string(next_probe - now) + " ms");
    } else {
      log::info("delivery", "circuit closed destination=" + d.name + " event=circuit.closed: partner answered (" +
                                partner_said(result.partner_code, result.detail) + ") after " +
                                std::to_string(now - opened_at) + " ms and " + std::to_string(probes) +
                                " probe(s); releasing held deliveries");
    }
    wake(d);
  }

  // For the operators' view (GET /api/destinations): the last failure, in words, bounded.
  void note_outcome(Destination& d, const DeliveryAttempt& a) {
    std::lock_guard lock(d.mutex);
    if (a.ok() || a.held()) {
      d.last_success_at_ms = a.at_ms;
      return;
    }
    d.last_failure_at_ms = a.at_ms;
    d.last_failure_dead = a.dead;
    d.last_error = a.partner_code.empty() ? a.detail : a.partner_code + (a.detail.empty() ? "" : ": " + a.detail);
    if (d.last_error.size() > 300) {  // adapters already bound it; keep it so, whole characters only
      std::size_t cut = 300;
      while (cut > 0 && (static_cast<unsigned char>(d.last_error[cut]) & 0xC0) == 0x80) --cut;
      d.last_error.resize(cut);
    }
  }

  // ---- one attempt ----

  // What one delivery result means for the job, and the attempt to put on its trail.
  Settlement judge(DeliveryJob& job, DeliveryResult result, DeliveryAttempt& a) {
    a.delivery_id = job.delivery_id;
    a.message_id = job.message_id;
    a.destination = job.destination;
    a.attempt = job.attempts + 1;
    a.at_ms = now_ms();
    a.outcome = result.outcome;
    a.partner_code = std::move(result.partner_code);
    a.detail = std::move(result.detail);
    // Held (placed in the partner's mailbox) is settled for the queue like a delivery: the
    // patient's next record may follow it into the mailbox, where the listing keeps seq order.
    if (a.ok() || a.held()) return {Settlement::Kind::delivered, 0};
    auto after = after_failure(settings.retry, a.outcome, a.attempt, job.first_failed_at_ms, a.at_ms, random01());
    job.first_failed_at_ms = after.first_failed_at_ms;
    if (!after.dead) {
      a.next_attempt_ms = after.retry_at_ms;
      // Retries are on the trail; the log has the circuit's lines instead of one per attempt.
      log::debug("delivery", "attempt failed destination=" + a.destination + " message=" + a.message_id +
                                 " event=delivery.retry attempt=" + std::to_string(a.attempt) + " " +
                                 partner_said(a.partner_code, a.detail));
      return {Settlement::Kind::retry, after.retry_at_ms};
    }
    a.dead = true;
    const std::string why = a.outcome == DeliveryOutcome::retryable
                                ? "dead(still failing " + std::to_string(a.at_ms - after.first_failed_at_ms) +
                                      " ms after its first failed attempt)"
                                : "dead(permanent)";
    log::error("delivery", "attempt failed destination=" + a.destination + " message=" + a.message_id +
                               " event=delivery.dead attempt=" + std::to_string(a.attempt) + " outcome=" +
                               std::string(to_string(a.outcome)) + " " + why + " " +
                               partner_said(a.partner_code, a.detail));
    return {Settlement::Kind::dead, 0};
  }

  asio::awaitable<void> settle(const Destination& d, DeliveryJob job, Settlement s) {
    const std::int64_t delivery_id = job.delivery_id;
    Result<void> settled = co_await queue.settle(std::move(job), s);
    if (!settled && !stopping)
      log::error("delivery", "queue did not take a settlement destination=" + d.name +
                                 " event=delivery.unsettled delivery=" + std::to_string(delivery_id) + " queue=\"" +
                                 settled.error().summary() + "\"; the delivery stays pending in the store");
  }

  // Makes the attempt durable, then settles the job. Until then the job stays in flight, so
  // the patient's next record for this destination is still held back.
  static asio::awaitable<void> record_and_settle(std::shared_ptr<State> self, Destination* d, DeliveryJob job,
                                                 DeliveryAttempt a, Settlement settlement) {
    const bool ok = a.ok() || a.held();  // held: handed over to the partner's mailbox
    const bool dead = a.dead;
    const int attempt_number = a.attempt;
    const DeliveryOutcome outcome = a.outcome;
    std::string partner_code = self->audit ? a.partner_code : std::string();
    Result<void> recorded = co_await self->store.record_attempt(std::move(a));
    if (!recorded) {
      // Unrecorded means still pending: the attempt is repeated (receivers de-duplicate on X-Request-Id).
      log::error("delivery", "could not record attempt destination=" + job.destination +
                                 " message=" + job.message_id + " event=delivery.store_failed store=\"" +
                                 recorded.error().summary() + "\"; kept pending");
      co_await self->settle(*d, std::move(job), Settlement{Settlement::Kind::retry, now_ms() + store_retry_ms});
      co_return;
    }
    job.attempts = attempt_number;
    if (self->metrics) self->metrics->attempt(d->name, outcome, dead, message_id_time_ms(job.message_id));
    if (self->audit) {
      AuditEntry e;
      e.kind = outcome == DeliveryOutcome::held ? AuditKind::held
               : ok                             ? AuditKind::delivered
               : dead                           ? AuditKind::dead
                                                : AuditKind::delivery_failed;
      e.actor = "tellonce";
      e.message_id = job.message_id;
      e.resource_type = job.resource_type;
      e.destination = job.destination;
      e.outcome = ok ? "ok" : partner_code.empty() ? std::string(to_string(outcome)) : std::move(partner_code);
      e.detail = "attempt " + std::to_string(attempt_number);
      self->audit->record(std::move(e));
    }
    if (ok) {
      d->delivered.fetch_add(1, std::memory_order_relaxed);
    } else {
      d->failed_attempts.fetch_add(1, std::memory_order_relaxed);
      if (dead) d->dead.fetch_add(1, std::memory_order_relaxed);
    }
    co_await self->settle(*d, std::move(job), settlement);
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

  static asio::awaitable<void> work(std::shared_ptr<State> self, Destination* d) {
    const std::string& destination = d->name;
    const std::shared_ptr<OutboundAdapter> adapter = d->adapter;  // held while the worker runs
    for (;;) {
      const int admitted = co_await self->admission(*d);
      if (admitted == admit_stopped) co_return;
      const bool probe = admitted == admit_probe;
      std::optional<DeliveryJob> job = co_await self->queue.next(destination);
      if (!job) {
        if (probe) self->probe_untried(*d, now_ms());
        co_return;
      }
      if (!probe && !self->still_sending(*d)) {
        // The circuit opened while this worker waited for a job: back in its place, untried.
        co_await self->settle(*d, std::move(*job), Settlement{Settlement::Kind::retry, 0});
        continue;
      }
      if (job->body.empty()) {
        // The queue did not carry the body (its memory budget): read it back just before sending.
        Result<std::string> body = co_await self->store.body(job->message_id);
        if (!body) {
          log::error("delivery", "could not read the body destination=" + destination + " message=" +
                                     job->message_id + " event=delivery.store_failed store=\"" +
                                     body.error().summary() + "\"; kept pending");
          const auto retry_at = now_ms() + store_retry_ms;
          if (probe) self->probe_untried(*d, retry_at);
          co_await self->settle(*d, std::move(*job), Settlement{Settlement::Kind::retry, retry_at});
          continue;
        }
        job->body = std::move(*body);
      }
      // Data minimisation (broker/minimise): only destinations with an allow-list parse the body.
      std::optional<DeliveryJob> minimised;  // what the adapter gets instead; the job keeps the stored body
      std::string minimised_note;
      bool refused = false;
      if (d->minimiser) {
        MinimiseOutcome m = co_await d->minimiser->apply(*job);
        if (m.kind == MinimiseOutcome::Kind::retry) {
          log::error("delivery", "could not read the routes of destination=" + destination + " message=" +
                                     job->message_id + " event=delivery.store_failed store=\"" + m.note +
                                     "\"; kept pending");
          const auto retry_at = now_ms() + store_retry_ms;
          if (probe) self->probe_untried(*d, retry_at);
          co_await self->settle(*d, std::move(*job), Settlement{Settlement::Kind::retry, retry_at});
          continue;
        }
        refused = m.kind == MinimiseOutcome::Kind::refused;
        if (m.kind == MinimiseOutcome::Kind::minimised) {
          minimised = *job;
          minimised->body = std::move(m.body);
        }
        minimised_note = std::move(m.note);
      }
      DeliveryResult result;
      bool threw = false;
      try {
        // Never sent when minimising refused it: a permanent failure, its reason on the trail.
        if (refused) result = DeliveryResult{DeliveryOutcome::permanent, std::string(kNotSent), ""};
        else result = co_await adapter->deliver(minimised ? *minimised : *job);
      } catch (const std::exception& e) {
        threw = true;
        log::error("delivery", "attempt threw destination=" + destination + " message=" + job->message_id +
                                   " event=delivery.adapter_failed error=\"" + e.what() + "\"");
      }
      // A failed attempt must not leave the job in flight, or the patient's lane stays blocked.
      if (threw) {
        const auto retry_at = now_ms() + store_retry_ms;
        if (probe) self->probe_untried(*d, retry_at);
        co_await self->settle(*d, std::move(*job), Settlement{Settlement::Kind::retry, retry_at});
        continue;
      }
      if (self->stopping) {  // cut off by shutdown: not a partner failure, stays pending
        co_await self->settle(*d, std::move(*job), Settlement{Settlement::Kind::retry, now_ms()});
        co_return;
      }
      if (result.broker_fault) {
        // Nothing reached the partner: no attempt on the trail, back in its place.
        self->on_broker_fault(*d, probe, result.detail);
        co_await self->settle(*d, std::move(*job), Settlement{Settlement::Kind::retry, 0});
        continue;
      }
      if (!refused) self->on_partner_verdict(*d, probe, result);
      else if (probe) self->probe_untried(*d, now_ms());  // the partner was not asked
      DeliveryAttempt a;
      Settlement settlement = self->judge(*job, std::move(result), a);
      if (!minimised_note.empty()) a.detail = a.detail.empty() ? minimised_note : a.detail + "; " + minimised_note;
      // A mailbox partner later collects what its adapter was given: the minimised body.
      if (a.held() && minimised) a.held_body = std::move(minimised->body);
      self->note_outcome(*d, a);
      // Recording is handed off so this worker carries the next record while the store's group
      // commit makes this attempt durable: workers wait on partners, never on fsync.
      // The log line is built only if recording throws; destination and id are copied for it.
      auto on_done = [destination, message_id = job->message_id](std::exception_ptr e) {
        if (e) log_exit("recording attempt destination=" + destination + " message=" + message_id, e);
      };
      asio::co_spawn(self->io, record_and_settle(self, d, std::move(*job), std::move(a), settlement),
                     std::move(on_done));
    }
  }
};

Dispatcher::Dispatcher(asio::io_context& io, Store& store, Queue& queue, DeliverySettings settings,
                       std::map<std::string, std::shared_ptr<OutboundAdapter>> adapters,
                       std::map<std::string, std::shared_ptr<const Minimiser>> minimisers,
                       BrokerMetrics* metrics, Audit* audit)
    : state_(std::make_shared<State>(io, store, queue, std::move(settings), std::move(adapters),
                                     std::move(minimisers), metrics, audit)) {}

Dispatcher::~Dispatcher() { stop(); }

void Dispatcher::start() {
  if (state_->started.exchange(true)) return;
  const int workers = std::max(1, state_->settings.concurrency_per_destination);
  for (const auto& [name, d] : state_->destinations) {
    if (!d->adapter) continue;
    for (int i = 0; i < workers; ++i) {
      auto on_exit = [name](std::exception_ptr e) { State::log_exit("worker ended destination=" + name, e); };
      asio::co_spawn(state_->io, State::work(state_, d.get()), std::move(on_exit));
    }
  }
}

void Dispatcher::stop() {
  if (state_->stopping.exchange(true)) return;
  state_->queue.stop();
  for (auto& [name, d] : state_->destinations) {
    std::vector<AdmitWaiter> waiters;
    {
      std::lock_guard lock(d->mutex);
      d->stopped = true;
      d->timer.cancel();
      waiters.swap(d->waiters);
    }
    resume_all(waiters, admit_stopped);
    if (d->adapter) d->adapter->stop();
  }
}

DestinationStats Dispatcher::stats(const std::string& destination) const {
  auto it = state_->destinations.find(destination);
  if (it == state_->destinations.end()) return {};
  auto& d = *it->second;
  DestinationStats s;
  s.delivered = d.delivered.load();
  s.failed_attempts = d.failed_attempts.load();
  s.dead = d.dead.load();
  s.broker_faults = d.broker_faults.load();
  std::lock_guard lock(d.mutex);
  s.circuit = d.circuit.state();
  s.circuit_opened_at_ms = d.circuit.opened_at();
  s.paused = d.paused;
  s.last_failure_at_ms = d.last_failure_at_ms;
  s.last_success_at_ms = d.last_success_at_ms;
  s.last_error = d.last_error;
  s.last_failure_dead = d.last_failure_dead;
  return s;
}

bool Dispatcher::set_paused(const std::string& destination, bool paused) {
  auto it = state_->destinations.find(destination);
  if (it == state_->destinations.end()) return false;
  auto& d = *it->second;
  {
    std::lock_guard lock(d.mutex);
    d.paused = paused;
    d.flowing.store(!paused && d.circuit.sending_allowed(now_ms()), std::memory_order_release);
  }
  if (!paused) state_->wake(d);
  return true;
}

}  // namespace tellonce
