// The broker process: one object that owns every component of `tellonce serve`, builds them
// in dependency order and takes them down in the reverse order.
//
// Construction order (each may use the ones before it): validator, router, store, io_context,
// queue, outbound adapters, dispatcher, pipeline, HTTP servers, inbound adapters, API.
// Members are declared in that order, so destruction runs backwards.
//
// Shutdown (request_stop(), SIGINT or SIGTERM), all on the io threads:
//  1. stop accepting: inbound adapters stop, every listener closes, idle connections close;
//  2. drain: a connection busy with a request finishes it (a committed record gets its 202,
//     sent with Connection: close) and closes; waited for up to `drain_deadline`;
//  3. stop the dispatchers: waiting workers end, in-flight deliveries end and stay pending
//     in the store (delivered again after the next start; receivers de-duplicate);
//  4. the io threads run out of work and return; the store is closed (outstanding batches
//     finish). If they have not returned `drain_deadline + kDeliveryGrace` after the request,
//     the io_context is stopped and what is left is abandoned (a record committed by then is
//     still in the store and is delivered after the next start).
// A second request (or signal) stops the io threads at once. The constructor and start()
// throw std::runtime_error on start-up errors (schemas, store, a listen address in use).
#pragma once

#include "tellonce/adapter.hpp"
#include "tellonce/registry.hpp"
#include "broker/config/config.hpp"

#include <boost/asio/io_context.hpp>

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

namespace tellonce {

class Validator;
class Router;
class Store;
class Queue;
class ReconciledQueue;
class Dispatcher;
class Pipeline;
class HttpServers;
class BrokerMetrics;
class Audit;
class AuditLog;
class ConsentGate;
class ConsentFileWatcher;

struct BrokerOptions {
  // How long in-flight requests may take to finish after a stop is requested.
  std::chrono::milliseconds drain_deadline{10000};
  // Store recovery choices from `tellonce serve` (engines/sqlite_store/README.md, "Refusing a lost store").
  bool accept_new_store = false;
  bool accept_wal_loss = false;
};

class Broker {
 public:
  // Builds every component from `config` (which must outlive the Broker); binds nothing yet.
  Broker(const Config& config, const AdapterRegistry& registry, BrokerOptions options = {});
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // Queues the pending deliveries, binds every listener, starts the dispatchers and writes
  // the banner (with one `  listening HOST:PORT` line per bound listener) to `out`.
  void start(std::ostream& out);
  // Runs the io threads (the calling thread is one of them) until shutdown completes; installs
  // the SIGINT/SIGTERM handlers. Returns the process exit code.
  int run();
  // Begins the shutdown described above. Any thread; a second call stops at once.
  void request_stop();
  // The audit log (null when `audit.enabled: false`), for callers that reload configuration or
  // certificates: audit_config_reload(broker.audit(), ...) (tellonce/audit.hpp). Lives as long
  // as the Broker.
  Audit* audit() const;

 private:
  void begin_shutdown();
  void stop_delivery();
  void watch_deadline();

  const Config& config_;
  BrokerOptions options_;
  int io_threads_;
  long long compile_ms_ = 0;
  std::size_t descriptor_limit_ = 0;  // RLIMIT_NOFILE once raised to the hard limit
  std::ostream* out_ = nullptr;  // where start() wrote the banner; shutdown lines go there too

  std::unique_ptr<Validator> validator_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<BrokerMetrics> metrics_;  // outlives everything that records into it
  std::unique_ptr<AuditLog> audit_;         // likewise; null when disabled
  asio::io_context io_;
  std::unique_ptr<Queue> queue_;
  ReconciledQueue* reconciled_ = nullptr;  // queue_ itself, when it reconciles a shared queue with the store
  std::map<std::string, std::shared_ptr<OutboundAdapter>> outbound_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<ConsentGate> consent_;                 // outlives the pipeline that consults it
  std::unique_ptr<ConsentFileWatcher> consent_files_;    // polls consent.opt_out_file / consents_file
  std::unique_ptr<Pipeline> pipeline_;
  std::unique_ptr<HttpServers> http_;
  std::unique_ptr<PartnerDirectory> partners_;
  std::deque<InboundContext> contexts_;  // adapters may keep a reference for their lifetime
  std::vector<std::unique_ptr<InboundAdapter>> inbound_;

  struct Shutdown;
  std::unique_ptr<Shutdown> shutdown_;
};

}  // namespace tellonce
