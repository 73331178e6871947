#include "tellonce/pipeline.hpp"

#include "tellonce/log.hpp"
#include "broker/consent/consent.hpp"
#include "broker/metrics/broker_metrics.hpp"
#include "tellonce/audit.hpp"
#include "broker/ingest/validation_pool.hpp"
#include "tellonce/queue.hpp"
#include "tellonce/router.hpp"
#include "tellonce/store.hpp"
#include "tellonce/validator.hpp"

#include <atomic>
#include <chrono>
#include <optional>

namespace tellonce {
namespace {

std::string_view str_member(const rapidjson::Value& v, const char* name) {
  return json_string(json_member(v, name));
}

Failure reject(Errc errc, std::string code, std::string diagnostics, std::string location,
               std::string rule) {
  return Failure::permanent(errc, Issue{Severity::error, std::move(code), std::move(diagnostics),
                                          std::move(location), std::move(rule)});
}

// What every record must be before the (costlier) validator, then the endpoint's own rule.
std::optional<Failure> check_envelope(const InboundRecord& rec, const rapidjson::Value& doc) {
  if (!doc.IsObject())
    return reject(Errc::malformed, "structure", "the body must be a JSON object (a FHIR resource)", "(body)", "json");
  auto type = str_member(doc, "resourceType");
  if (type.empty())
    return reject(Errc::malformed, "required", "resourceType is missing: every FHIR resource names its type",
                  "resourceType", "fhir-resource-type");
  if (rec.rule) return rec.rule(doc);
  return std::nullopt;
}

class BrokerPipeline final : public Pipeline {
 public:
  BrokerPipeline(const Validator& v, const Router& r, Store& s, Queue& q, JsonLimits l, HeavyRecords heavy,
                 BrokerMetrics* metrics, Audit* audit, ConsentGate* consent)
      : validator_(v), router_(r), store_(s), queue_(q), limits_(l), heavy_(heavy), metrics_(metrics), audit_(audit),
        consent_(consent) {
    if (heavy_.threads > 0) heavy_work_ = std::make_unique<ValidationPool>(heavy_.threads);
  }

  asio::awaitable<Result<Accepted>> accept(InboundRecord rec) override {
    const auto started = std::chrono::steady_clock::now();
    if (metrics_) metrics_->received(rec.channel, rec.source);
    // RapidJSON's default pool takes 64 KiB chunks, and glibc consolidates its free lists on
    // every free of 64 KiB or more: 32 KiB holds a typical record's DOM in one chunk.
    rapidjson::MemoryPoolAllocator<> pool(32 * 1024);
    rapidjson::Document doc(&pool);
    // A big record is parsed and validated on the validation pool, so it cannot hold this I/O
    // thread (and every connection it serves) for long; a small one stays here, where the hop
    // would cost more than the work.
    const bool heavy = heavy_work_ && rec.body.size() >= heavy_.min_body_bytes;
    Result<void> parsed;
    auto parse = [&] { parsed = parse_json_into(doc, rec.body, limits_); };
    if (heavy) {
      auto on_pool = heavy_work_->run(parse);
      co_await std::move(on_pool);
    } else {
      parse();
    }
    if (!parsed) co_return rejected(rec, parsed.error(), {}, started);
    if (auto f = check_envelope(rec, doc))
      co_return rejected(rec, std::move(*f), doc.IsObject() ? str_member(doc, "resourceType") : std::string_view(), started);

    std::vector<Issue> issues;
    auto validate = [&] { validator_.validate(doc, issues); };
    if (heavy) {
      auto on_pool = heavy_work_->run(validate);
      co_await std::move(on_pool);
    } else {
      validate();
    }
    if (has_errors(issues)) {
      // Well-formed FHIR JSON that breaks the shared schemas; warnings are kept alongside.
      co_return rejected(rec, Failure{Errc::invalid, Failure::Kind::permanent, std::move(issues)},
                         str_member(doc, "resourceType"), started);
    }

    RecordFacts facts = read_record_facts(doc);
    if (auto refused = router_.refusal(rec.source, rec.channel, facts.contained_types, facts.event); !refused.empty())
      co_return rejected(rec, Failure::permanent(Errc::forbidden, Issue{Severity::error, "forbidden", std::move(refused), "", ""}),
                         facts.resource_type, started);
    auto matches = router_.route(RouteInput{rec.source, doc, facts.event});
    std::vector<Withholding> withheld;
    if (consent_) consent_->withhold(facts.patient_key, matches, now_ms(), withheld);

    NewMessage msg;
    msg.id = new_message_id();
    msg.source = rec.source;
    msg.channel = rec.channel;
    msg.idempotency_key = idempotency_key_for(rec, doc);
    msg.resource_type = facts.resource_type;
    msg.event = facts.event;
    msg.patient_key = facts.patient_key;
    msg.content_type = rec.content_type;
    msg.content_hash = sha256_hex(rec.body);
    msg.received_at_ms = now_ms();
    msg.body = std::move(rec.body);
    msg.original_content_type = std::move(rec.original_content_type);
    msg.original_bytes = std::move(rec.original_bytes);
    msg.destinations = destinations_of(matches);
    for (auto& m : matches) msg.route_ids.push_back(m.route_id);
    for (auto& i : issues) msg.warnings.push_back(i.location + ": " + i.diagnostics);
    for (const auto& w : withheld) {
      LifecycleEvent e;
      e.kind = EventKind::withheld;
      e.destination = w.destination;
      e.detail = w.rule;
      msg.withheld.push_back(std::move(e));
    }

    Accepted out;
    out.destinations = msg.destinations;
    auto committed = co_await store_.commit(std::move(msg));
    if (!committed) {
      log::error("ingest", "store commit failed: " + committed.error().summary());
      if (metrics_)
        metrics_->rejected(rec.channel, rec.source, facts.resource_type, to_string(committed.error().code),
                           "store unavailable", seconds_since(started));
      co_return committed.error();
    }
    out.message_id = committed->outcome.message_id;
    out.duplicate = committed->outcome.duplicate;
    out.state = committed->outcome.state;
    out.warnings = std::move(issues);
    // Queued before the sender hears of it (the broker's start-up catch-up covers a crash).
    if (audit_) {
      audit_received(rec, out, facts.resource_type);
      // Stored with this message only: a duplicate's withholdings were the first copy's.
      if (!out.duplicate && !withheld.empty()) audit_withheld(rec, out.message_id, facts.resource_type, withheld);
    }
    if (out.duplicate) {
      duplicates_.fetch_add(1, std::memory_order_relaxed);
      if (metrics_) metrics_->duplicate(rec.channel, rec.source, seconds_since(started));
      co_return out;
    }
    accepted_.fetch_add(1, std::memory_order_relaxed);
    if (consent_) {
      if (metrics_)
        for (const auto& w : withheld) metrics_->withheld(w.destination, w.reason);
      // Applied to records accepted after this one (Consents are facts once stored).
      if (std::find(facts.contained_types.begin(), facts.contained_types.end(), "Consent") != facts.contained_types.end())
        consent_->learn(doc, rec.source);
    }
    if (out.destinations.empty() && !withheld.empty()) {
      log::info("route", "message " + out.message_id + ": every destination withheld by consent message=" +
                             out.message_id + " partner=" + rec.source + " event=record.withheld");
    } else if (out.destinations.empty()) {
      unroutable_.fetch_add(1, std::memory_order_relaxed);
      out.state = MessageState::unroutable;
      log::warn("route", "message " + out.message_id + " from " + rec.source + " (" +
                             facts.resource_type + ") matched no route: held as unroutable message=" + out.message_id +
                             " partner=" + rec.source + " event=record.unroutable");
    }
    if (metrics_)
      metrics_->accepted(rec.channel, rec.source, facts.resource_type, out.destinations.empty() && withheld.empty(),
                         seconds_since(started));
    // Durable already: a job the queue refuses stays pending in the store, queued again at start-up.
    for (auto& job : committed->jobs) {
      Result<void> queued = co_await queue_.push(std::move(job));
      if (!queued) log_refused(queued.error(), out.message_id);
    }
    co_return out;
  }

  asio::awaitable<Result<std::size_t>> replay(std::string message_id) override {
    auto jobs = co_await store_.replay(std::move(message_id));
    if (!jobs) co_return jobs.error();
    std::size_t n = jobs->size();
    for (auto& job : *jobs) {
      Result<void> queued = co_await queue_.push(std::move(job));
      if (!queued) log_refused(queued.error());
    }
    co_return n;
  }

  asio::awaitable<Result<std::size_t>> replay_as(std::string message_id, std::string actor) override {
    auto jobs = co_await store_.replay_as(std::move(message_id), std::move(actor));
    if (!jobs) co_return jobs.error();
    std::size_t n = jobs->size();
    for (auto& job : *jobs) {
      Result<void> queued = co_await queue_.push(std::move(job));
      if (!queued) log_refused(queued.error());
    }
    co_return n;
  }

  asio::awaitable<Result<ReplayCounts>> replay_matching(MessageQuery query, std::string actor, bool dry_run) override {
    auto match = co_await store_.replay_matching(std::move(query), std::move(actor), dry_run);
    if (!match) co_return match.error();
    ReplayCounts counts{match->matched, match->jobs.size()};
    // Durable already: a job the queue refuses stays pending in the store, queued at start-up.
    for (auto& job : match->jobs) {
      Result<void> queued = co_await queue_.push(std::move(job));
      if (!queued) log_refused(queued.error());
    }
    co_return counts;
  }

  PipelineCounters counters() const override {
    return {accepted_.load(), duplicates_.load(), rejected_.load(), unroutable_.load()};
  }

 private:
  static void log_refused(const Failure& f, const std::string& message_id = "") {
    log::error("ingest", "queue refused a delivery" + (message_id.empty() ? std::string() : " message=" + message_id) +
                             " event=delivery.queue_refused queue=\"" + f.summary() +
                             "\"; it stays pending in the store");
  }

  static double seconds_since(std::chrono::steady_clock::time_point started) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  }

  // The rule that fired first (else its issue code): the console's "top rejection reasons".
  static std::string_view first_reason(const Failure& f) {
    for (const auto& i : f.issues)
      if (i.is_error()) return i.rule.empty() ? std::string_view(i.code) : std::string_view(i.rule);
    return {};
  }

  // What every entry about an accepted record says: whose, on which channel, which message.
  static AuditEntry record_entry(AuditKind kind, const InboundRecord& rec, const std::string& message_id,
                                 const std::string& resource_type) {
    AuditEntry e;
    e.kind = kind;
    e.source = rec.source;
    e.channel = rec.channel;
    e.message_id = message_id;
    e.resource_type = resource_type;
    return e;
  }

  void audit_received(const InboundRecord& rec, const Accepted& out, const std::string& resource_type) {
    auto e = record_entry(out.duplicate ? AuditKind::duplicate : AuditKind::received, rec, out.message_id, resource_type);
    e.actor = rec.source;
    e.outcome = "ok";
    if (!out.duplicate) e.detail = std::to_string(out.destinations.size()) + " destination(s)";
    audit_->record(std::move(e));
  }

  // One entry a destination consent withheld; the detail is the rule's words, which name the
  // rule, purpose and route, never the patient.
  void audit_withheld(const InboundRecord& rec, const std::string& message_id, const std::string& resource_type,
                      const std::vector<Withholding>& withheld) {
    for (const auto& w : withheld) {
      auto e = record_entry(AuditKind::withheld, rec, message_id, resource_type);
      e.actor = "tellonce";
      e.destination = w.destination;
      e.outcome = w.reason;  // "opt-out" or "consent"
      e.detail = w.rule;
      audit_->record(std::move(e));
    }
  }

  Failure rejected(const InboundRecord& rec, Failure f, std::string_view resource_type,
                   std::chrono::steady_clock::time_point started) {
    rejected_.fetch_add(1, std::memory_order_relaxed);
    if (audit_) {
      AuditEntry e;
      e.kind = AuditKind::rejected;
      e.actor = rec.source;
      e.source = rec.source;
      e.channel = rec.channel;
      e.resource_type = std::string(resource_type);
      e.outcome = std::string(to_string(f.code));
      e.detail = std::string(first_reason(f));  // a rule id or issue code, never a value
      audit_->record(std::move(e));
    }
    if (metrics_)
      metrics_->rejected(rec.channel, rec.source, resource_type, to_string(f.code), first_reason(f),
                         seconds_since(started));
    std::size_t errors = 0;
    for (auto& i : f.issues) errors += i.is_error();
    log::info("ingest", "rejected record from " + rec.source + " on " + rec.channel + ": " +
                            std::to_string(errors) + " error(s): " + f.summary() + " partner=" + rec.source +
                            " channel=" + rec.channel + " event=record.rejected");
    return f;
  }

  const Validator& validator_;
  const Router& router_;
  Store& store_;
  Queue& queue_;
  JsonLimits limits_;
  HeavyRecords heavy_;
  std::unique_ptr<ValidationPool> heavy_work_;  // null: everything inline
  BrokerMetrics* metrics_;                      // null: not recorded
  Audit* audit_;                                // null: not audited
  ConsentGate* consent_;                        // null: no consent rules
  std::atomic<std::uint64_t> accepted_{0}, duplicates_{0}, rejected_{0}, unroutable_{0};
};

}  // namespace

std::string idempotency_key_for(const InboundRecord& rec, const rapidjson::Value& doc) {
  if (!rec.idempotency_key.empty()) return "key:" + rec.idempotency_key;
  if (str_member(doc, "resourceType") != "Bundle") return {};
  if (str_member(doc, "type") == "message") {
    auto e = doc.FindMember("entry");
    if (e != doc.MemberEnd() && e->value.IsArray() && !e->value.Empty()) {
      const auto& first = e->value[0];
      auto r = first.IsObject() ? first.FindMember("resource") : first.MemberEnd();
      if (first.IsObject() && r != first.MemberEnd()) {
        auto id = str_member(r->value, "id");
        if (!id.empty()) return "message-header:" + std::string(id);
      }
    }
  }
  auto id = str_member(doc, "id");
  return id.empty() ? std::string{} : "bundle:" + std::string(id);
}

std::unique_ptr<Pipeline> make_pipeline(const Validator& validator, const Router& router, Store& store,
                                        Queue& queue, JsonLimits limits, HeavyRecords heavy,
                                        BrokerMetrics* metrics, Audit* audit, ConsentGate* consent) {
  return std::make_unique<BrokerPipeline>(validator, router, store, queue, limits, heavy, metrics, audit, consent);
}

}  // namespace tellonce
