#include "broker/metrics/broker_metrics.hpp"

#include "broker/api/api.hpp"
#include "tellonce/http_server.hpp"
#include "tellonce/log.hpp"
#include "tellonce/store.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>

namespace tellonce {
namespace {

// Accepting a record: parse, validate and a group commit (fsync), so milliseconds.
const std::vector<double> accept_buckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                            0.1,    0.25,  0.5,    1,     2.5,  5,     10};
// End to end: from the partner's request to the destination taking it, retries included.
const std::vector<double> delivery_buckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,    2.5,   5,
                                              10,    30,   60,    300,  900, 3600, 21600, 86400};

double seconds_since(std::int64_t ms, std::int64_t now) { return ms > 0 && now > ms ? (now - ms) / 1000.0 : 0.0; }

// A resource type as a label: a FHIR type name is letters only; anything else a partner sent
// is one label value, so it cannot add series.
std::string_view resource_type_label(std::string_view type) {
  if (type.empty()) return "unknown";
  if (type.size() > 64) return "invalid";
  for (char c : type)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))) return "invalid";
  return type;
}

std::string_view outcome_label(DeliveryOutcome o) {
  switch (o) {
    case DeliveryOutcome::ok: return "ok";
    case DeliveryOutcome::held: return "held";
    case DeliveryOutcome::retryable: return "retryable";
    case DeliveryOutcome::permanent: return "permanent";
  }
  return "unknown";
}

}  // namespace

std::int64_t message_id_time_ms(std::string_view id) {
  static constexpr std::string_view alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  if (id.size() < 10) return 0;
  std::int64_t t = 0;
  for (std::size_t i = 0; i < 10; ++i) {
    auto digit = alphabet.find(id[i]);
    if (digit == std::string_view::npos) return 0;
    t = t * 32 + static_cast<std::int64_t>(digit);
  }
  return t;
}

BrokerMetrics::BrokerMetrics(std::string version, std::vector<std::string> destinations,
                             std::chrono::milliseconds backlog_max_age)
    : received_(registry_.counter("tellonce_records_received_total", "Records that arrived on an inbound channel.",
                                  {"channel", "partner"})),
      accepted_(registry_.counter("tellonce_records_accepted_total", "Records validated, routed and stored.",
                                  {"channel", "partner", "resource_type"})),
      rejected_(registry_.counter("tellonce_records_rejected_total",
                                  "Records refused, by the kind of refusal (malformed, invalid, too_large, unavailable...).",
                                  {"channel", "partner", "resource_type", "reason_class"})),
      duplicates_(registry_.counter("tellonce_records_duplicate_total",
                                    "Resubmissions of a record already stored (answered with the first id).",
                                    {"channel", "partner"})),
      unroutable_(registry_.counter("tellonce_records_unroutable_total",
                                    "Accepted records that matched no route (kept as unroutable).",
                                    {"channel", "partner", "resource_type"})),
      accept_latency_(registry_.histogram("tellonce_accept_latency_seconds",
                                          "Time from a record entering the pipeline to its answer.", {"channel"},
                                          accept_buckets)),
      attempts_(registry_.counter("tellonce_delivery_attempts_total",
                                  "Delivery attempts recorded, by outcome (ok, held, retryable, permanent).",
                                  {"destination", "outcome"})),
      retries_(registry_.counter("tellonce_delivery_retries_total", "Failed delivery attempts that will be retried.",
                                 {"destination"})),
      dead_letters_(registry_.counter("tellonce_dead_letters_total",
                                      "Deliveries given up (dead-lettered); replay sends them again.", {"destination"})),
      delivery_latency_(registry_.histogram("tellonce_delivery_latency_seconds",
                                            "Time from a record being received to a destination taking it.",
                                            {"destination"}, delivery_buckets)),
      queue_depth_(registry_.gauge("tellonce_destination_queue_depth",
                                   "Deliveries pending for the destination (not delivered, dead, held or expired).",
                                   {"destination"})),
      oldest_age_(registry_.gauge("tellonce_destination_oldest_undelivered_age_seconds",
                                  "Age of the oldest record still pending for the destination; 0 when none is.",
                                  {"destination"})),
      store_size_(registry_.gauge("tellonce_store_size_bytes", "Bytes the message store takes on disk.", {})),
      withheld_(registry_.counter("tellonce_deliveries_withheld_total",
                                  "Deliveries a route named but consent withheld (reason: opt-out, consent).",
                                  {"destination", "reason"})),
      destinations_(std::move(destinations)),
      backlog_max_age_(backlog_max_age) {
  registry_.gauge("tellonce_build_info", "The running build; always 1.", {"version"}).with({version}).set(1);
  // Series that exist from the start, so rate() and absent() behave before the first record.
  for (const auto& d : destinations_) {
    queue_depth_.with({d}).set(0);
    oldest_age_.with({d}).set(0);
    dead_letters_.with({d});
    retries_.with({d});
    oldest_received_.emplace_back(d, 0);
  }
}

void BrokerMetrics::received(std::string_view channel, std::string_view partner) {
  received_.with({channel, partner}).inc();
}

void BrokerMetrics::accepted(std::string_view channel, std::string_view partner, std::string_view resource_type,
                             bool unroutable, double seconds) {
  const auto type = resource_type_label(resource_type);
  accepted_.with({channel, partner, type}).inc();
  if (unroutable) unroutable_.with({channel, partner, type}).inc();
  accept_latency_.with({channel}).observe(seconds);
  flow_.record_in(channel, true, now_ms());
}

void BrokerMetrics::withheld(std::string_view destination, std::string_view reason) {
  withheld_.with({destination, reason}).inc();
}

void BrokerMetrics::duplicate(std::string_view channel, std::string_view partner, double seconds) {
  duplicates_.with({channel, partner}).inc();
  accept_latency_.with({channel}).observe(seconds);
}

void BrokerMetrics::rejected(std::string_view channel, std::string_view partner, std::string_view resource_type,
                             std::string_view reason_class, std::string_view reason, double seconds) {
  rejected_.with({channel, partner, resource_type_label(resource_type), reason_class}).inc();
  accept_latency_.with({channel}).observe(seconds);
  const auto now = now_ms();
  flow_.record_in(channel, false, now);
  flow_.record_rejection_reason(reason.empty() ? reason_class : reason, now);
}

void BrokerMetrics::attempt(std::string_view destination, DeliveryOutcome outcome, bool dead,
                            std::int64_t received_at_ms) {
  attempts_.with({destination, outcome_label(outcome)}).inc();
  const auto now = now_ms();
  const bool taken = outcome == DeliveryOutcome::ok || outcome == DeliveryOutcome::held;
  if (taken) {
    if (received_at_ms > 0) delivery_latency_.with({destination}).observe(seconds_since(received_at_ms, now));
  } else if (dead) {
    dead_letters_.with({destination}).inc();
  } else {
    retries_.with({destination}).inc();
  }
  flow_.record_out(destination, taken, now);
}

boost::asio::awaitable<void> BrokerMetrics::refresh_backlog(Store& store) {
  {
    std::lock_guard lock(backlog_mu_);
    const auto now = std::chrono::steady_clock::now();
    if (backlog_read_ && now - backlog_read_at_ < backlog_max_age_) co_return;
    // Claimed before reading, so scrapes arriving meanwhile use the values they have.
    backlog_read_ = true;
    backlog_read_at_ = now;
  }
  auto backlog = co_await store.backlog();
  if (!backlog) {
    // The gauges keep their last values; /readyz says what is wrong with the store.
    log::warn("metrics", "could not read the delivery backlog: " + backlog.error().summary());
    co_return;
  }
  std::lock_guard lock(backlog_mu_);
  for (auto& [destination, oldest] : oldest_received_) oldest = 0;
  for (const auto& b : *backlog) {
    queue_depth_.with({b.destination}).set(static_cast<double>(b.pending));
    auto it = std::find_if(oldest_received_.begin(), oldest_received_.end(),
                           [&](const auto& entry) { return entry.first == b.destination; });
    if (it == oldest_received_.end()) it = oldest_received_.insert(oldest_received_.end(), {b.destination, 0});
    it->second = b.oldest_received_at_ms;
  }
  for (const auto& [destination, oldest] : oldest_received_)
    if (oldest == 0) queue_depth_.with({destination}).set(0);
}

boost::asio::awaitable<std::string> BrokerMetrics::scrape(Store& store) {
  co_await refresh_backlog(store);
  {
    // Ages grow between backlog reads: computed from the oldest record's time at every scrape.
    std::lock_guard lock(backlog_mu_);
    const auto now = now_ms();
    for (const auto& [destination, oldest] : oldest_received_)
      oldest_age_.with({destination}).set(seconds_since(oldest, now));
  }
  store_size_.with({}).set(static_cast<double>(store.size_bytes()));
  co_return registry_.render();
}

namespace {

HttpResponse text_response(const HttpRequest& req, http::status status, std::string body, const char* content_type) {
  HttpResponse res{status, req.version()};
  res.set(http::field::content_type, content_type);
  res.set(http::field::cache_control, "no-store");
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

HttpResponse get_only(const HttpRequest& req) {
  auto res = text_response(req, http::status::method_not_allowed, "use GET here\n", "text/plain; charset=utf-8");
  res.set(http::field::allow, "GET");
  return res;
}

std::string readiness_json(bool ready, const std::vector<std::string>& problems) {
  rapidjson::StringBuffer out;
  rapidjson::Writer<rapidjson::StringBuffer> w(out);
  w.StartObject();
  w.Key("status");
  w.String(ready ? "ready" : "not ready");
  w.Key("problems");
  w.StartArray();
  for (const auto& p : problems) w.String(p.data(), static_cast<rapidjson::SizeType>(p.size()));
  w.EndArray();
  w.EndObject();
  return std::string(out.GetString(), out.GetSize());
}

}  // namespace

void mount_operations(HttpServer& server, BrokerMetrics& metrics, Store& store,
                      const std::function<HttpHandler(HttpHandler)>& protect) {
  auto guarded = [&protect](HttpHandler h) { return protect ? protect(std::move(h)) : h; };
  server.mount("/metrics", guarded([&metrics, &store](HttpRequest& req) -> asio::awaitable<HttpResponse> {
    if (req.method() != http::verb::get) co_return get_only(req);
    auto body = co_await metrics.scrape(store);
    co_return text_response(req, http::status::ok, std::move(body), "text/plain; version=0.0.4; charset=utf-8");
  }));
  server.mount("/healthz", [](HttpRequest& req) -> asio::awaitable<HttpResponse> {
    if (req.method() != http::verb::get) co_return get_only(req);
    co_return text_response(req, http::status::ok, R"({"status":"alive"})", "application/json");
  });
  server.mount("/readyz", [&metrics, &store](HttpRequest& req) -> asio::awaitable<HttpResponse> {
    if (req.method() != http::verb::get) co_return get_only(req);
    // The config is loaded by the time anything is mounted (the broker is built from it).
    std::vector<std::string> problems;
    auto health = co_await check_health(store);
    for (auto& p : health.problems) problems.push_back("store: " + p);
    if (!metrics.listening()) problems.emplace_back("listeners: not every listener is bound yet");
    if (metrics.stopping()) problems.emplace_back("broker: stopping, not taking new records");
    const bool ready = problems.empty();
    co_return text_response(req, ready ? http::status::ok : http::status::service_unavailable,
                            readiness_json(ready, problems), "application/json");
  });
  server.mount("/api/flow", guarded([&metrics](HttpRequest& req) -> asio::awaitable<HttpResponse> {
    if (req.method() != http::verb::get) co_return get_only(req);
    co_return text_response(req, http::status::ok, metrics.flow_json(now_ms()), "application/json");
  }));
}

}  // namespace tellonce
