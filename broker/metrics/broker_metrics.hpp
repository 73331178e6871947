// The broker's own metrics (Prometheus names and labels below), the console's per-minute flow
// (flow.hpp), and the operations endpoints on the API listener:
//   GET /metrics   Prometheus text format 0.0.4
//   GET /healthz   200 while the process serves HTTP at all (liveness)
//   GET /readyz    200 when the store is writable (check_health), every listener is bound, the
//                  config is loaded and the broker is not stopping; else 503 with the reasons
//   GET /api/flow  FlowRecorder::json
//
// Metric names (labels in braces; every counter ends in _total, times in seconds):
//   tellonce_records_received_total{channel,partner}
//   tellonce_records_accepted_total{channel,partner,resource_type}
//   tellonce_records_rejected_total{channel,partner,resource_type,reason_class}
//   tellonce_records_duplicate_total{channel,partner}
//   tellonce_records_unroutable_total{channel,partner,resource_type}
//   tellonce_accept_latency_seconds{channel}              histogram: arrival in the pipeline to answer
//   tellonce_deliveries_withheld_total{destination,reason}  reason: opt-out, consent (broker/consent)
//   tellonce_delivery_attempts_total{destination,outcome}  outcome: ok, held, retryable, permanent
//   tellonce_delivery_retries_total{destination}           failed attempts that will be retried
//   tellonce_dead_letters_total{destination}
//   tellonce_delivery_latency_seconds{destination}         histogram: received to delivered (end to end)
//   tellonce_destination_queue_depth{destination}          pending deliveries (Store::backlog)
//   tellonce_destination_oldest_undelivered_age_seconds{destination}  0 when none is pending
//   tellonce_store_size_bytes
//   tellonce_build_info{version}                           always 1
// Queue depth, oldest age and store size are read at scrape time; the backlog is cached for
// `backlog_max_age`, so however often /metrics is scraped the store answers at most that often.
//
// Threading: the recording methods are for the hot path (any thread, no lock: registry.hpp);
// scrape() and the endpoints run on the caller's executor. Label values are operator-chosen
// ids (channel, partner, destination) or bounded sets (reason_class: an Errc name); a
// resource type is kept only when it looks like a FHIR type name (letters, at most 64), and
// each family caps its label sets (registry.hpp). No patient data is ever a label.
#pragma once

#include "broker/metrics/flow.hpp"
#include "broker/metrics/registry.hpp"
#include "tellonce/http_server.hpp"
#include "tellonce/message.hpp"

#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <functional>
#include <chrono>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace tellonce {

class HttpServer;
class Store;

class BrokerMetrics {
 public:
  // `destinations`: every configured destination, shown with depth 0 when nothing is pending.
  BrokerMetrics(std::string version, std::vector<std::string> destinations,
                std::chrono::milliseconds backlog_max_age = std::chrono::seconds(5));

  // Ingest: received once per record on arrival, then exactly one of the others.
  void received(std::string_view channel, std::string_view partner);
  void accepted(std::string_view channel, std::string_view partner, std::string_view resource_type, bool unroutable,
                double seconds);
  void duplicate(std::string_view channel, std::string_view partner, double seconds);
  // reason_class: what kind of refusal (an Errc name: malformed, invalid, too_large, unavailable...);
  // reason: the rule that fired (or the issue code), for the console's top reasons.
  void rejected(std::string_view channel, std::string_view partner, std::string_view resource_type,
                std::string_view reason_class, std::string_view reason, double seconds);

  // A delivery consent withheld at routing (reason: opt-out or consent).
  void withheld(std::string_view destination, std::string_view reason);

  // Delivery: one recorded attempt. received_at_ms: when its record was received (0: unknown).
  void attempt(std::string_view destination, DeliveryOutcome outcome, bool dead, std::int64_t received_at_ms);

  // The Prometheus exposition, with the scrape-time gauges refreshed from the store.
  boost::asio::awaitable<std::string> scrape(Store& store);
  std::string flow_json(std::int64_t now_ms) const { return flow_.json(now_ms); }

  // What /readyz reports besides the store: set by the broker as it starts and stops.
  void set_listening(bool on) { listening_.store(on, std::memory_order_relaxed); }
  void set_stopping() { stopping_.store(true, std::memory_order_relaxed); }
  bool listening() const { return listening_.load(std::memory_order_relaxed); }
  bool stopping() const { return stopping_.load(std::memory_order_relaxed); }

  metrics::Registry& registry() { return registry_; }

 private:
  boost::asio::awaitable<void> refresh_backlog(Store& store);

  metrics::Registry registry_;
  metrics::Family<metrics::Counter>& received_;
  metrics::Family<metrics::Counter>& accepted_;
  metrics::Family<metrics::Counter>& rejected_;
  metrics::Family<metrics::Counter>& duplicates_;
  metrics::Family<metrics::Counter>& unroutable_;
  metrics::Family<metrics::Histogram>& accept_latency_;
  metrics::Family<metrics::Counter>& attempts_;
  metrics::Family<metrics::Counter>& retries_;
  metrics::Family<metrics::Counter>& dead_letters_;
  metrics::Family<metrics::Histogram>& delivery_latency_;
  metrics::Family<metrics::Gauge>& queue_depth_;
  metrics::Family<metrics::Gauge>& oldest_age_;
  metrics::Family<metrics::Gauge>& store_size_;
  metrics::Family<metrics::Counter>& withheld_;
  metrics::FlowRecorder flow_;

  std::vector<std::string> destinations_;
  std::chrono::milliseconds backlog_max_age_;
  std::mutex backlog_mu_;                              // guards the fields below
  std::chrono::steady_clock::time_point backlog_read_at_{};
  bool backlog_read_ = false;
  std::vector<std::pair<std::string, std::int64_t>> oldest_received_;  // destination, ms (0: none)

  std::atomic<bool> listening_{false}, stopping_{false};
};

// When the record with this message id (core/message.cpp: new_message_id) was received: its
// first ten characters are the time in ms, base 32. 0 when it is not such an id.
std::int64_t message_id_time_ms(std::string_view message_id);

// Mounts /metrics, /healthz, /readyz and /api/flow. Before the server starts. The Store and
// metrics must outlive the server. `protect` (when set) wraps the /metrics and /api/flow
// handlers (the broker passes guard_operators); /healthz and /readyz stay open for probes.
void mount_operations(HttpServer& server, BrokerMetrics& metrics, Store& store,
                      const std::function<HttpHandler(HttpHandler)>& protect = {});

}  // namespace tellonce
