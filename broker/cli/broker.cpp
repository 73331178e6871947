#include "broker/cli/broker.hpp"

#include "broker/config/partner_directory.hpp"
#include "broker/api/api.hpp"
#include "broker/audit/audit_log.hpp"
#include "broker/consent/consent.hpp"
#include "broker/api/operators.hpp"
#include "broker/metrics/broker_metrics.hpp"
#include "broker/console/console_files.hpp"
#include "tellonce/log.hpp"
#include "broker/delivery/delivery.hpp"
#include "broker/queue/reconciled_queue.hpp"
#include "tellonce/http_server.hpp"
#include "tellonce/limits.hpp"
#include "tellonce/tls.hpp"
#include "tellonce/pipeline.hpp"
#include "tellonce/router.hpp"
#include "tellonce/store.hpp"
#include "tellonce/validator.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

namespace tellonce {

namespace {
// After the drain, in-flight deliveries are cut off and recording attempts already handed to
// the store finish: a few seconds at most, even on a slow disk.
constexpr std::chrono::seconds kDeliveryGrace{5};
// Start-up, before the io threads run: the destinations the store says are paused.
std::vector<std::string> paused_destinations(Store& store) {
  asio::io_context once;
  std::optional<Result<std::vector<DestinationControl>>> got;
  asio::co_spawn(once, store.destination_controls(),
                 [&got](std::exception_ptr e, Result<std::vector<DestinationControl>> r) {
                   if (!e) got = std::move(r);
                 });
  once.run();
  if (!got || !*got)
    throw std::runtime_error("cannot read which destinations are paused: " +
                             (got ? got->error().summary() : std::string("the store did not answer")));
  std::vector<std::string> out;
  for (const auto& c : **got)
    if (c.paused) out.push_back(c.destination);
  return out;
}

// Several nodes: an operator pauses or resumes a destination through one node, whose store
// keeps it; the other nodes follow within a poll (a read of one small table).
constexpr std::chrono::seconds kPausePoll{2};
asio::awaitable<void> follow_pauses(Store& store, Dispatcher& dispatcher, const std::atomic<bool>& stopping) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (!stopping) {
    timer.expires_after(kPausePoll);
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    if (stopping) break;
    auto controls = co_await store.destination_controls();
    if (!controls) continue;  // the store is away: the next poll tries again
    for (const auto& c : *controls) {
      if (dispatcher.stats(c.destination).paused == c.paused) continue;
      const std::string done = c.paused ? "paused" : "resumed";
      if (dispatcher.set_paused(c.destination, c.paused))
        log::info("serve", "destination " + c.destination + " " + done + " event=destination." + done +
                               " destination=" + c.destination + " by " + c.actor + " on another node");
    }
  }
}
}  // namespace

// What the shutdown shares between the signal handler, the drain and the watchdog thread.
struct Broker::Shutdown {
  explicit Shutdown(asio::io_context& io) : signals(io, SIGINT, SIGTERM), reload(io, SIGHUP) {}
  asio::signal_set signals;
  asio::signal_set reload;  // SIGHUP: TLS certificates and keys are read again
  std::atomic<bool> requested{false};
  std::mutex mu;
  std::condition_variable changed;
  std::optional<std::chrono::steady_clock::time_point> requested_at;  // under mu
  bool io_done = false;                                              // under mu
};

Broker::Broker(const Config& config, const AdapterRegistry& registry, BrokerOptions options)
    : config_(config),
      options_(options),
      io_threads_(config.io_threads > 0 ? config.io_threads
                                        : std::max(1, static_cast<int>(std::thread::hardware_concurrency()))),
      io_(io_threads_) {
  descriptor_limit_ = raise_open_file_limit();  // before anything opens descriptors
  auto started = std::chrono::steady_clock::now();
  validator_ = make_fhir_validator(ValidatorSettings{
      config.validation.schema_dir.empty() ? std::filesystem::path(TELLONCE_SCHEMA_DIR) : config.validation.schema_dir,
      config.validation.nhs_number_check_digit_is_error});
  compile_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
  router_ = make_router(config);
  store_ = registry.store(config.store.type)
               ->create(config.store.settings, StoreStartup{options.accept_new_store, options.accept_wal_loss});
  std::vector<std::string> destinations;
  for (const auto& p : config.partners)
    if (p.endpoint) destinations.push_back(p.id);
  metrics_ = std::make_unique<BrokerMetrics>(TELLONCE_VERSION, std::move(destinations));
  if (config.audit.enabled) audit_ = open_audit_log(AuditLogSettings{config.audit.path, config.audit.flush_delay});
  queue_ = registry.queue(config.queue.type)
               ->create(config.queue.settings,
                        QueueContext{io_.get_executor(), static_cast<std::size_t>(config.delivery.max_queued_body_bytes)});
  // Several nodes on a shared queue and a shared store: reconciled through the store instead of
  // every pending delivery pushed again at each start-up (broker/queue/reconciled_queue.hpp).
  if (queue_->shared() && store_->track_queueing(config.delivery.requeue_unconfirmed_after)) {
    reconciled_ = new ReconciledQueue(std::move(queue_), *store_, ReconcileSettings{config.delivery.requeue_unconfirmed_after});
    queue_.reset(reconciled_);
  }
  // Before the outbound adapters: a mailbox is served over HTTP to partners that present their key.
  http_ = std::make_unique<HttpServers>(io_, HttpLimits{config.max_body_bytes, config.request_timeout, 16 * 1024,
                                                        config.max_connections_per_listener});
  partners_ = make_partner_directory(config);
  for (const auto& p : config.partners) {
    if (!p.endpoint) continue;
    OutboundContext octx{io_, p.id, *store_, http_.get(), partners_.get(), store_.get(), config.api.listen, audit_.get()};
    outbound_[p.id] = registry.outbound(p.endpoint->type)->create(p.endpoint->settings, octx);
  }
  dispatcher_ = std::make_unique<Dispatcher>(
      io_, *store_, *queue_, config.delivery, outbound_,
      make_minimisers(config, *validator_, *store_, JsonLimits{config.max_body_bytes, config.max_json_depth}),
      metrics_.get(), audit_.get());
  consent_ = std::make_unique<ConsentGate>(config);
  consent_files_ = std::make_unique<ConsentFileWatcher>(*consent_, config.consent);  // first load; throws if unreadable
  pipeline_ = make_pipeline(*validator_, *router_, *store_, *queue_,
                            JsonLimits{config.max_body_bytes, config.max_json_depth}, HeavyRecords{}, metrics_.get(),
                            audit_.get(), consent_.get());

  for (const auto& ch : config.inbound) {
    contexts_.push_back(InboundContext{*partners_, *pipeline_, io_.get_executor(), http_.get(), ch.id});
    inbound_.push_back(registry.inbound(ch.type)->create(ch.settings, contexts_.back()));
  }
  mount_api(http_->at(config.api.listen), *store_, *pipeline_, config, dispatcher_.get(), audit_.get());
  mount_operations(http_->at(config.api.listen), *metrics_, *store_,
                   [&config](HttpHandler h) { return guard_operators(config, std::move(h)); });
  // Message flow does not need the console: a configured folder that cannot be used stops the
  // start (load throws), a default one that is missing (a binary copied alone) only warns.
  auto console_dir = find_console_dir(config.api.console_dir, current_executable(), TELLONCE_CONSOLE_DIR);
  if (config.api.console_dir.empty() && !std::filesystem::exists(console_dir / "index.html"))
    log::warn("serve", "no web console: " + console_dir.string() + " has no index.html (set api.console_dir)");
  else
    mount_console(http_->at(config.api.listen), std::make_shared<const ConsoleFiles>(ConsoleFiles::load(console_dir)));
  for (const auto& l : config.listeners)  // throws naming the file when a certificate or key is bad
    if (l.tls) http_->at(l.listen).use_tls(std::make_shared<TlsServerContext>(*l.tls, l.listen));
  // Load from partners (tellonce/limits.hpp): refusals counted, connection caps per HTTP listener.
  if (auto* limits = partners_->limits()) {
    auto& throttled = metrics_->registry().counter("tellonce_records_throttled_total",
        "Records and mailbox reads refused (429, MLLP AE) because their partner was over its rate.", {"partner", "channel"});
    limits->on_throttled([&throttled](std::string_view partner, std::string_view channel) {
      throttled.with({partner, channel}).inc();
    });
    if (limits->caps_connections())
      for (const auto& [listen, port] : http_->bound())
        http_->at(listen).limit_connections(std::make_shared<ConnectionCaps>(*limits, *partners_));
  }
  shutdown_ = std::make_unique<Shutdown>(io_);
}

Broker::~Broker() = default;

Audit* Broker::audit() const { return audit_.get(); }

void Broker::start(std::ostream& out) {
  out_ = &out;
  // Before anything new is taken: what the store acknowledged but a crash kept out of the audit.
  std::size_t audit_recovered = 0;
  if (audit_) {
    auto caught_up = audit_->catch_up(*store_);
    if (!caught_up) log::warn("audit", "no audit catch-up from the store: " + caught_up.error().summary());
    else audit_recovered = *caught_up;
    if (audit_recovered)
      log::warn("audit", std::to_string(audit_recovered) + " audit entries recovered from the store (the broker "
                         "stopped before writing them)");
  }
  // Resume before accepting anything new, so redelivery keeps acceptance order.
  std::size_t resumed = 0;
  if (reconciled_) {
    // The shared queue holds what other nodes (and this one, before) queued: only what the store
    // says no node confirmed is pushed.
    resumed = reconciled_->sweep_now();
    reconciled_->start(io_.get_executor());
  } else {
    auto pending = store_->load_pending(static_cast<std::size_t>(config_.delivery.max_queued_body_bytes));
    if (!pending) throw std::runtime_error("cannot read pending deliveries: " + pending.error().summary());
    resumed = pending->size();
    resume_pending(*queue_, std::move(*pending));
  }

  // Consents accepted before the restart apply before any new record is routed.
  const std::size_t consents = consent_->rebuild_from_store(*store_);
  consent_files_->start();

  for (auto& a : inbound_) a->start();
  const std::size_t reserved = config_.descriptors_reserved();
  const std::size_t inbound_budget = descriptor_limit_ > reserved + 16 ? descriptor_limit_ - reserved : 16;
  log::info("serve", "open descriptor limit " + std::to_string(descriptor_limit_) + ": " + std::to_string(reserved) +
                         " kept for delivery and the store, " + std::to_string(inbound_budget) +
                         " for client connections");
  http_->start_all(inbound_budget);
  metrics_->set_listening(true);  // start_all throws unless every listener is bound
  // Destinations an operator paused stay paused across a restart (issue 11).
  for (const auto& name : paused_destinations(*store_)) {
    if (dispatcher_->set_paused(name, true))
      log::warn("serve", "destination " + name + " is paused event=destination.paused_at_start destination=" + name +
                             " (resume: tellonce destinations resume " + name + ")");
  }
  dispatcher_->start();
  if (reconciled_) {
    asio::co_spawn(io_, follow_pauses(*store_, *dispatcher_, shutdown_->requested), [](std::exception_ptr e) {
      if (e) log::error("serve", "stopped following pauses made on other nodes");
    });
  }

  out << "tellonce " << TELLONCE_VERSION << " serving (" << io_threads_ << " io threads, schemas compiled in "
      << compile_ms_ << " ms)\n";
  for (auto& a : inbound_) out << "  inbound  " << a->describe() << "\n";
  for (auto& [id, a] : outbound_) out << "  outbound " << id << ": " << a->describe() << "\n";
  out << "  api      http://" << config_.api.listen << "/api/messages/{id}\n";
  out << "  console  http://" << config_.api.listen << "/console/\n";
  for (const auto& [listen, port] : http_->bound())
    out << "  listening " << listen.substr(0, listen.rfind(':')) << ":" << port << "\n";
  out << "  consent  " << consents << " stored Consent(s) applied, " << consent_->opt_out_size()
      << " NHS number(s) on the opt-out list\n";
  out << "  store    " << store_->describe() << " (" << resumed << " pending deliveries resumed)\n"
      << std::flush;
  if (audit_) out << "  audit    " << audit_->describe() << " (" << audit_recovered << " recovered from the store)\n" << std::flush;
}

void Broker::request_stop() {
  if (shutdown_->requested.exchange(true)) {
    // Asked twice: whatever is still running is abandoned (committed records stay pending).
    log::warn("serve", "asked again to stop: stopping now");
    io_.stop();
    return;
  }
  {
    std::lock_guard lk(shutdown_->mu);
    shutdown_->requested_at = std::chrono::steady_clock::now();
  }
  shutdown_->changed.notify_all();
  asio::post(io_, [this] { begin_shutdown(); });
}

void Broker::begin_shutdown() {
  if (out_) *out_ << "tellonce stopping" << std::endl;
  metrics_->set_stopping();
  log::info("serve", "stopping: no new connections; requests in flight finish (up to " +
                         std::to_string(options_.drain_deadline.count()) + " ms)");
  for (auto& a : inbound_) a->stop();
  http_->stop_all();
  // Polled rather than signalled: connections end on their own strands, and a check every
  // 10 ms costs nothing next to a shutdown.
  auto drain = [](Broker* self) -> asio::awaitable<void> {
    auto until = std::chrono::steady_clock::now() + self->options_.drain_deadline;
    asio::steady_timer tick(self->io_);
    while (self->http_->open_connections() > 0 && std::chrono::steady_clock::now() < until) {
      tick.expires_after(std::chrono::milliseconds(10));
      co_await tick.async_wait(asio::use_awaitable);
    }
    if (std::size_t left = self->http_->open_connections())
      log::warn("serve", std::to_string(left) + " connection(s) still busy at the drain deadline; abandoned");
    self->stop_delivery();
  };
  asio::co_spawn(io_, drain(this), [this](std::exception_ptr e) {
    if (e) {
      log::error("serve", "shutdown drain failed; stopping delivery now");
      stop_delivery();
    }
  });
}

void Broker::stop_delivery() {
  dispatcher_->stop();  // also stops the queue and every outbound adapter
  // Nothing is left to wait for a signal: the io_context now runs out of work on its own.
  boost::system::error_code ignored;
  shutdown_->signals.cancel(ignored);
  shutdown_->reload.cancel(ignored);
}

// The last resort: if the io threads have not returned in time, stop the io_context.
void Broker::watch_deadline() {
  std::unique_lock lk(shutdown_->mu);
  shutdown_->changed.wait(lk, [&] { return shutdown_->io_done || shutdown_->requested_at.has_value(); });
  if (shutdown_->io_done) return;
  auto deadline = *shutdown_->requested_at + options_.drain_deadline + kDeliveryGrace;
  if (shutdown_->changed.wait_until(lk, deadline, [&] { return shutdown_->io_done; })) return;
  log::warn("serve", "shutdown deadline passed: stopping the io threads");
  io_.stop();
}

int Broker::run() {
  std::function<void(const boost::system::error_code&, int)> on_signal;
  on_signal = [this, &on_signal](const boost::system::error_code& ec, int sig) {
    if (ec) return;  // cancelled once delivery has stopped
    log::info("serve", "signal " + std::to_string(sig) + ": stopping");
    // Re-armed before the stop is posted, so the cancel in stop_delivery() comes after it.
    shutdown_->signals.async_wait(on_signal);  // a second signal stops at once
    request_stop();
  };
  shutdown_->signals.async_wait(on_signal);
  std::function<void(const boost::system::error_code&, int)> on_reload;
  on_reload = [this, &on_reload](const boost::system::error_code& ec, int) {
    if (ec) return;
    // A few small PEM files read on an io thread, once per SIGHUP: not worth a thread of its own.
    int failed = reload_all_tls_contexts();
    if (out_) *out_ << "tellonce reloaded TLS certificates (" << failed << " failed)" << std::endl;
    audit_config_reload(audit_.get(), "signal:SIGHUP", "tls certificates",
                        failed ? std::to_string(failed) + " failed" : std::string());
    shutdown_->reload.async_wait(on_reload);
  };
  shutdown_->reload.async_wait(on_reload);

  std::thread watchdog([this] { watch_deadline(); });
  std::vector<std::thread> pool;
  for (int i = 1; i < io_threads_; ++i) pool.emplace_back([this] { io_.run(); });
  io_.run();
  for (auto& t : pool) t.join();
  {
    std::lock_guard lk(shutdown_->mu);
    shutdown_->io_done = true;
  }
  shutdown_->changed.notify_all();
  watchdog.join();
  if (audit_) audit_->close();
  store_->close();
  return 0;
}

}  // namespace tellonce
