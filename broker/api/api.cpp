#include "broker/api/api.hpp"

#include "broker/api/operators.hpp"

#include "broker/config/config.hpp"
#include "broker/core/trail.hpp"
#include "broker/delivery/delivery.hpp"
#include "tellonce/audit.hpp"
#include "tellonce/http_server.hpp"
#include "tellonce/pipeline.hpp"
#include "tellonce/store.hpp"
#include "tellonce/log.hpp"
#include "tellonce/tls.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <charconv>
#include <ctime>

namespace tellonce {
namespace {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;

void write_string(JsonWriter& w, std::string_view s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

void write_time(JsonWriter& w, std::int64_t ms) {
  if (ms == 0) w.Null();
  else write_string(w, iso8601_utc(ms));
}

void write_strings(JsonWriter& w, const char* key, const std::vector<std::string>& items) {
  w.Key(key);
  w.StartArray();
  for (const auto& item : items) write_string(w, item);
  w.EndArray();
}

// The facts each kind carries (message.hpp, LifecycleEvent); an event an older store kept as
// text has its text only.
void write_event_facts(JsonWriter& w, const LifecycleEvent& e) {
  if (!e.legacy_text.empty()) {
    w.Key("legacyText"); write_string(w, e.legacy_text);
    if (!e.destination.empty()) { w.Key("destination"); write_string(w, e.destination); }
    return;
  }
  switch (e.kind) {
    case EventKind::received:
      w.Key("source"); write_string(w, e.source);
      w.Key("channel"); write_string(w, e.channel);
      w.Key("contentType"); write_string(w, e.content_type);
      w.Key("bytes"); w.Uint64(e.bytes);
      if (!e.original_content_type.empty()) {
        w.Key("sentAs"); write_string(w, e.original_content_type);
        w.Key("sentBytes"); w.Uint64(e.original_bytes);
      }
      w.Key("contentHash"); write_string(w, e.content_hash);
      w.Key("idempotencyKey"); write_string(w, e.idempotency_key);
      break;
    case EventKind::validated:
      write_strings(w, "warnings", e.warnings);
      break;
    case EventKind::routed:
    case EventKind::unroutable:
      write_strings(w, "routes", e.routes);
      write_strings(w, "destinations", e.destinations);
      break;
    case EventKind::duplicate:
      w.Key("source"); write_string(w, e.source);
      w.Key("idempotencyKey"); write_string(w, e.idempotency_key);
      w.Key("contentHash"); write_string(w, e.content_hash);
      w.Key("sameContent"); w.Bool(e.same_content);
      break;
    case EventKind::attempt:
    case EventKind::delivered:
    case EventKind::dead:
    case EventKind::held:
    case EventKind::expired:
      w.Key("destination"); write_string(w, e.destination);
      w.Key("attempt"); w.Int(e.attempt);
      w.Key("outcome"); write_string(w, to_string(e.outcome));
      w.Key("partnerCode"); write_string(w, e.partner_code);
      w.Key("reason"); write_string(w, e.detail);
      if (e.kind == EventKind::attempt) { w.Key("nextAttemptAt"); write_time(w, e.next_attempt_ms); }
      break;
    case EventKind::replayed:
      write_strings(w, "destinations", e.destinations);
      w.Key("actor"); write_string(w, e.actor);
      break;
    case EventKind::withheld:  // consent withheld this delivery; rule: which rule, purpose and route
      w.Key("destination"); write_string(w, e.destination);
      w.Key("rule"); write_string(w, e.detail);
      break;
    case EventKind::viewed:
      w.Key("what"); write_string(w, e.detail);
      w.Key("actor"); write_string(w, e.actor);
      w.Key("reason"); write_string(w, e.reason);
      break;
  }
}

// "45 s", "3 min", "2 h": how long something has lasted, for people.
std::string how_long(std::int64_t ms) {
  const std::int64_t seconds = ms / 1000;
  if (seconds < 120) return std::to_string(seconds) + " s";
  if (seconds < 120 * 60) return std::to_string(seconds / 60) + " min";
  return std::to_string(seconds / 3600) + " h";
}

// An answer excerpt: at most this many bytes, cut between characters.
constexpr std::size_t kExcerptBytes = 512;
std::string_view utf8_prefix(std::string_view s, std::size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  std::size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return s.substr(0, cut);
}

std::string message_json(const MessageView& m) {
  rapidjson::StringBuffer out;
  JsonWriter w(out);
  w.StartObject();
  w.Key("id"); write_string(w, m.id);
  w.Key("source"); write_string(w, m.source);
  w.Key("channel"); write_string(w, m.channel);
  w.Key("resourceType"); write_string(w, m.resource_type);
  w.Key("event"); write_string(w, m.event);
  w.Key("patientKey"); write_string(w, m.patient_key);
  w.Key("contentHash"); write_string(w, m.content_hash);
  w.Key("receivedAt"); write_time(w, m.received_at_ms);
  w.Key("state"); write_string(w, to_string(m.state));
  w.Key("contentType"); write_string(w, m.content_type);
  w.Key("bodyBytes"); w.Uint64(m.body_bytes);
  w.Key("original");  // what the partner sent, when it was converted; null: the body is what was sent
  if (m.original_content_type.empty()) {
    w.Null();
  } else {
    w.StartObject();
    w.Key("contentType"); write_string(w, m.original_content_type);
    w.Key("bytes"); w.Uint64(m.original_bytes);
    w.EndObject();
  }
  w.Key("deliveries");
  w.StartArray();
  for (const auto& d : m.deliveries) {
    w.StartObject();
    w.Key("destination"); write_string(w, d.destination);
    w.Key("status"); write_string(w, to_string(d.status));
    w.Key("attempts"); w.Int(d.attempts);
    w.Key("nextAttemptAt"); write_time(w, d.next_attempt_ms);
    w.Key("lastOutcome");
    if (d.last_outcome) write_string(w, to_string(*d.last_outcome));
    else w.Null();
    w.Key("lastPartnerCode"); write_string(w, d.last_partner_code);
    w.Key("lastReason"); write_string(w, d.last_detail);
    w.Key("lastError"); write_string(w, last_error_text(d));  // in words, from core/trail
    w.EndObject();
  }
  w.EndArray();
  // Every delivery attempt, oldest first, with a bounded excerpt of the partner's answer.
  w.Key("attempts");
  w.StartArray();
  for (const auto& e : m.events) {
    if (e.kind != EventKind::attempt && e.kind != EventKind::delivered && e.kind != EventKind::dead &&
        e.kind != EventKind::held)
      continue;
    w.StartObject();
    w.Key("at"); write_time(w, e.at_ms);
    w.Key("destination"); write_string(w, e.destination);
    w.Key("attempt"); w.Int(e.attempt);
    w.Key("outcome"); write_string(w, e.legacy_text.empty() ? to_string(e.outcome) : std::string_view("unknown"));
    w.Key("partnerCode"); write_string(w, e.partner_code);
    w.Key("excerpt"); write_string(w, utf8_prefix(e.legacy_text.empty() ? e.detail : e.legacy_text, kExcerptBytes));
    w.EndObject();
  }
  w.EndArray();
  w.Key("events");
  w.StartArray();
  for (const auto& e : m.events) {
    w.StartObject();
    w.Key("at"); write_time(w, e.at_ms);
    w.Key("kind"); write_string(w, to_string(e.kind));
    write_event_facts(w, e);
    w.Key("detail"); write_string(w, trail_text(e));  // in words, for people (`tellonce message` shows it)
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::string(out.GetString(), out.GetSize());
}

std::string summaries_json(const std::vector<MessageSummary>& list, const std::string& next) {
  rapidjson::StringBuffer out;
  JsonWriter w(out);
  w.StartObject();
  w.Key("count"); w.Uint64(list.size());
  if (!next.empty()) { w.Key("next"); write_string(w, next); }
  w.Key("messages");
  w.StartArray();
  for (const auto& m : list) {
    w.StartObject();
    w.Key("id"); write_string(w, m.id);
    w.Key("source"); write_string(w, m.source);
    w.Key("channel"); write_string(w, m.channel);
    w.Key("resourceType"); write_string(w, m.resource_type);
    w.Key("event"); write_string(w, m.event);
    w.Key("state"); write_string(w, to_string(m.state));
    w.Key("receivedAt"); write_time(w, m.received_at_ms);
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::string(out.GetString(), out.GetSize());
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string url_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out.push_back(' ');
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

Issue bad_request(std::string diagnostics, std::string location) {
  return Issue{Severity::error, "value", std::move(diagnostics), std::move(location), ""};
}

// "2026-11-30T10:00:00Z", "2026-11-30T10:00:00.250Z" or ms since the epoch; 0 when neither.
std::int64_t parse_time(const std::string& v) {
  std::int64_t ms = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), ms);
  if (ec == std::errc() && end == v.data() + v.size()) return ms > 0 ? ms : 0;
  std::tm tm{};
  const char* rest = strptime(v.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!rest) return 0;
  int frac = 0;
  if (*rest == '.') {
    int digits = 0;
    for (++rest; *rest >= '0' && *rest <= '9'; ++rest)
      if (digits++ < 3) frac = frac * 10 + (*rest - '0');
    while (digits++ < 3) frac *= 10;
  }
  if (std::string_view(rest) != "Z") return 0;
  return static_cast<std::int64_t>(timegm(&tm)) * 1000 + frac;
}

// Builds the store query from the search parameters (and, for POST /api/replay, dryRun), or
// says what is wrong. `filters` counts the parameters that narrow the search.
std::optional<Issue> read_query(std::string_view query, MessageQuery& q, int* filters = nullptr,
                                bool* dry_run = nullptr) {
  int narrowing = 0;
  while (!query.empty()) {
    auto amp = query.find('&');
    auto pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    auto eq = pair.find('=');
    auto name = pair.substr(0, eq);
    std::string value = eq == std::string_view::npos ? std::string() : url_decode(pair.substr(eq + 1));
    if (name.empty() || name == "reason") continue;  // reason: why an operator acts (reason_of)
    if (name != "limit" && name != "cursor" && name != "dryRun" && !value.empty()) ++narrowing;
    if (name == "state") {
      if (value != "accepted" && value != "unroutable" && value != "delivering" && value != "delivered" &&
          value != "failed")
        return bad_request("state must be accepted, unroutable, delivering, delivered or failed", "state");
      q.state = message_state_from(value);
    } else if (name == "source") {
      q.source = value;
    } else if (name == "destination") {
      q.destination = value;
    } else if (name == "route") {
      q.route = value;
    } else if (name == "resourceType") {
      q.resource_type = value;
    } else if (name == "event") {
      q.event = value;
    } else if (name == "nhsNumber") {
      if (value.size() != 10 || value.find_first_not_of("0123456789") != std::string::npos)
        return bad_request("nhsNumber must be 10 digits", "nhsNumber");
      q.nhs_number = value;
    } else if (name == "since" || name == "until") {
      auto ms = parse_time(value);
      if (ms == 0)
        return bad_request(std::string(name) + " must be a UTC time such as 2026-11-30T09:00:00Z, or ms since 1970",
                           std::string(name));
      (name == "since" ? q.since_ms : q.until_ms) = ms;
    } else if (name == "cursor") {
      q.cursor = value;
    } else if (name == "dryRun" && dry_run) {
      if (value != "true" && value != "false") return bad_request("dryRun must be true or false", "dryRun");
      *dry_run = value == "true";
    } else if (name == "limit") {
      int limit = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), limit);
      if (ec != std::errc() || end != value.data() + value.size() || limit < 1 || limit > 1000)
        return bad_request("limit must be a whole number from 1 to 1000", "limit");
      q.limit = limit;
    } else {
      return bad_request("unknown parameter '" + std::string(name) +
                             "'; use state, source, destination, route, resourceType, event, since, until, "
                             "nhsNumber, limit or cursor" + (dry_run ? ", dryRun" : ""),
                         std::string(name));
    }
  }
  if (filters) *filters = narrowing;
  return std::nullopt;
}

// Who asked for an action: the operator guard_operators authenticated, with the client's own
// label (X-Tellonce-Actor: the CLI sends "cli:$USER", the console "console") after "via".
// Bounded and printable, as it goes on trails.
std::string actor_of(const HttpRequest& req) {
  std::string actor(req[kOperatorHeader]);
  std::string label(req["X-Tellonce-Actor"]);
  if (actor.empty()) actor = "api@" + std::string(req[kPeerHeader].empty() ? "unknown" : req[kPeerHeader]);
  if (!label.empty()) actor += " via " + label;
  if (actor.size() > 100) actor = std::string(utf8_prefix(actor, 100));
  for (auto& c : actor)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return actor;
}

// Why an operator looks at a body: X-Tellonce-Reason, else ?reason=. Bounded and printable like
// the actor; free text the operator wrote (the README asks for no patient data in it).
std::string reason_of(const HttpRequest& req, std::string_view query) {
  std::string reason(req["X-Tellonce-Reason"]);
  while (reason.empty() && !query.empty()) {
    auto amp = query.find('&');
    auto pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.starts_with("reason=")) reason = url_decode(pair.substr(7));
  }
  if (reason.size() > 200) reason = std::string(utf8_prefix(reason, 200));
  for (auto& c : reason)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return reason;
}

// A replay filter for the audit log: which fields narrowed it, with their values except the
// patient's (an NHS number is named, never written).
std::string filter_summary(const MessageQuery& q) {
  std::string out;
  auto add = [&out](std::string_view key, const std::string& value) {
    if (value.empty()) return;
    out += out.empty() ? "" : " ";
    out += key;
    out += "=";
    out += value;
  };
  if (q.state) add("state", std::string(to_string(*q.state)));
  add("source", q.source);
  add("destination", q.destination);
  add("route", q.route);
  add("resourceType", q.resource_type);
  add("event", q.event);
  if (!q.nhs_number.empty()) add("nhsNumber", "(given)");
  if (q.since_ms) add("since", std::to_string(q.since_ms));
  if (q.until_ms) add("until", std::to_string(q.until_ms));
  return out;
}

// Every request has passed guard_operators (mount_api): an operator with the role it needs.
class AdminApi {
 public:
  AdminApi(Store& store, Pipeline& pipeline, const Config& config, Dispatcher* dispatcher, Audit* audit)
      : store_(store), pipeline_(pipeline), config_(config), dispatcher_(dispatcher), audit_(audit) {}

  // An operator's action or view, on disk in the audit log before it is answered (or shown).
  asio::awaitable<Result<void>> audited(const HttpRequest& req, std::string_view query, AuditEntry e) {
    if (!audit_) co_return Result<void>{};
    e.actor = actor_of(req);
    e.reason = reason_of(req, query);
    auto durable = audit_->record_durable(std::move(e));
    co_return co_await std::move(durable);
  }

  asio::awaitable<HttpResponse> handle(HttpRequest& req) {
    std::string_view target = req.target();
    auto qmark = target.find('?');
    std::string_view path = target.substr(0, qmark);
    std::string_view query = qmark == std::string_view::npos ? std::string_view() : target.substr(qmark + 1);
    if (path.size() > 1 && path.back() == '/') path.remove_suffix(1);

    if (path == "/api/health") {
      if (req.method() != http::verb::get) co_return not_allowed(req, "GET");
      auto health = co_await check_health(store_);
      co_return json_response(req, health.ok ? http::status::ok : http::status::service_unavailable,
                              health_json(health));
    }
    if (path == "/api/whoami") {  // the console shows only what the signed-in role may use
      if (req.method() != http::verb::get) co_return not_allowed(req, "GET");
      std::string name(req[kOperatorHeader]), role = "viewer";
      for (const auto& o : config_.operators)
        if (o.name == name) role = std::string(to_string(o.role));
      rapidjson::StringBuffer out;
      JsonWriter w(out);
      w.StartObject();
      w.Key("name"); write_string(w, name);
      w.Key("role"); write_string(w, role);
      w.EndObject();
      co_return json_response(req, http::status::ok, std::string(out.GetString(), out.GetSize()));
    }
    if (path == "/api/config/reload") {  // admin only (role_needed)
      if (req.method() != http::verb::post) co_return not_allowed(req, "POST");
      // The reloadable configuration today: the listeners' TLS certificates and keys (as SIGHUP).
      // A few small PEM files read on this io thread: not worth a thread of its own.
      const int failed = reload_all_tls_contexts();
      log::info("api", "TLS certificates reloaded by " + actor_of(req) + " (" + std::to_string(failed) + " failed)");
      audit_config_reload(audit_, actor_of(req), "tls certificates",
                          failed ? std::to_string(failed) + " listener(s) failed" : std::string());
      co_return json_response(req, failed ? http::status::internal_server_error : http::status::ok,
                              R"({"reloaded":"tls certificates","failed":)" + std::to_string(failed) + "}");
    }
    if (path == "/api/messages") {
      if (req.method() != http::verb::get) co_return not_allowed(req, "GET");
      MessageQuery q;
      q.limit = 50;
      if (auto problem = read_query(query, q)) co_return outcome_response(req, http::status::bad_request, {*problem});
      const auto limit = static_cast<std::size_t>(q.limit);
      ++q.limit;  // one more: whether there is a next page
      auto listed = co_await store_.list(std::move(q));
      if (!listed) co_return failure_response(req, listed.error());
      std::string next;
      if (listed->size() > limit) {
        listed->resize(limit);
        next = listed->back().cursor;
      }
      co_return json_response(req, http::status::ok, summaries_json(*listed, next));
    }
    if (path == "/api/replay") {
      if (req.method() != http::verb::post) co_return not_allowed(req, "POST");
      MessageQuery q;
      int filters = 0;
      bool dry_run = false;
      if (auto problem = read_query(query, q, &filters, &dry_run))
        co_return outcome_response(req, http::status::bad_request, {*problem});
      if (filters == 0)
        co_return outcome_response(req, http::status::bad_request,
                                   {bad_request("give at least one filter (state, source, destination, ...): "
                                                "replaying every dead delivery at once is refused", "")});
      const std::string filter = filter_summary(q);
      auto counts = co_await pipeline_.replay_matching(std::move(q), actor_of(req), dry_run);
      if (!counts) co_return failure_response(req, counts.error());
      if (!dry_run) {
        AuditEntry e;
        e.kind = AuditKind::replay_requested;
        e.outcome = "ok";
        e.detail = filter + ": matched " + std::to_string(counts->matched) + ", replayed " + std::to_string(counts->replayed);
        auto noted = co_await audited(req, query, std::move(e));
        if (!noted) co_return failure_response(req, noted.error());
        log::info("api", "replay by filter event=message.replayed_by_filter: matched " +
                             std::to_string(counts->matched) + ", replayed " + std::to_string(counts->replayed) + " (" +
                             filter + ") by " + actor_of(req));
      }
      co_return json_response(req, http::status::ok,
                              R"({"matched":)" + std::to_string(counts->matched) + R"(,"replayed":)" +
                                  std::to_string(counts->replayed) + R"(,"dryRun":)" + (dry_run ? "true" : "false") + "}");
    }
    if (path == "/api/destinations") {
      if (req.method() != http::verb::get) co_return not_allowed(req, "GET");
      auto listed = co_await destinations_json("");
      if (!listed) co_return failure_response(req, listed.error());
      co_return json_response(req, http::status::ok, std::move(*listed));
    }
    constexpr std::string_view destinations = "/api/destinations/";
    if (path.starts_with(destinations)) {
      auto rest = path.substr(destinations.size());
      auto slash = rest.find('/');
      std::string name = url_decode(rest.substr(0, slash));
      auto action = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
      if (!is_destination(name)) co_return not_found(req, "no destination named " + name);
      if (action.empty()) {
        if (req.method() != http::verb::get) co_return not_allowed(req, "GET");
        auto one = co_await destinations_json(name);
        if (!one) co_return failure_response(req, one.error());
        co_return json_response(req, http::status::ok, std::move(*one));
      }
      if (action == "pause" || action == "resume") {
        if (req.method() != http::verb::post) co_return not_allowed(req, "POST");
        const bool pause = action == "pause";
        // Durable first: once answered, a restart keeps it.
        auto saved = co_await store_.set_paused(name, pause, actor_of(req));
        if (!saved) co_return failure_response(req, saved.error());
        if (dispatcher_) dispatcher_->set_paused(name, pause);
        AuditEntry e;
        e.kind = pause ? AuditKind::paused : AuditKind::resumed;
        e.destination = name;
        e.outcome = "ok";
        auto noted = co_await audited(req, query, std::move(e));
        if (!noted) co_return failure_response(req, noted.error());
        const std::string done = pause ? "paused" : "resumed";
        log::info("api", "destination " + name + " " + done + " event=destination." + done + " destination=" + name +
                             " by " + actor_of(req));
        auto one = co_await destinations_json(name);
        if (!one) co_return failure_response(req, one.error());
        co_return json_response(req, http::status::ok, std::move(*one));
      }
    }
    constexpr std::string_view messages = "/api/messages/";
    if (path.starts_with(messages)) {
      auto rest = path.substr(messages.size());
      auto slash = rest.find('/');
      std::string id(rest.substr(0, slash));
      auto action = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
      if (!id.empty() && action.empty()) {
        if (req.method() != http::verb::get) co_return not_allowed(req, "GET");
        auto found = co_await store_.find(id);
        if (!found) co_return failure_response(req, found.error());
        if (!*found) co_return not_found(req, "no message with id " + id);
        co_return json_response(req, http::status::ok, message_json(**found));
      }
      // The record as stored (its FHIR form), and what the partner sent: the same bytes unless an
      // inbound adapter converted them (HL7 v2, CSV).
      if (!id.empty() && (action == "body" || action == "original")) {
        if (req.method() != http::verb::get) co_return not_allowed(req, "GET");
        std::string reason = reason_of(req, query);
        if (reason.empty())
          co_return outcome_response(req, http::status::bad_request,
                                     {bad_request("say why you are viewing this record: ?reason=... or an "
                                                  "X-Tellonce-Reason header (it is recorded with your name)", "reason")});
        auto found = co_await store_.find(id);
        if (!found) co_return failure_response(req, found.error());
        if (!*found) co_return not_found(req, "no message with id " + id);
        // Shown only once the view is in the audit log (issue 12: every disclosure is accounted for).
        AuditEntry e;
        e.kind = action == "original" ? AuditKind::original_viewed : AuditKind::body_viewed;
        e.message_id = id;
        e.source = (*found)->source;
        e.resource_type = (*found)->resource_type;
        e.outcome = "ok";
        auto noted = co_await record_body_view(req, query, id, std::string(action), std::move(reason), std::move(e));
        if (!noted) co_return failure_response(req, noted.error());
        if (action == "original") {
          auto original = co_await store_.original(id);
          if (!original) co_return failure_response(req, original.error());
          if (*original)
            co_return json_response(req, http::status::ok, std::move((*original)->bytes),
                                    std::move((*original)->content_type));
        }
        auto body = co_await store_.body(id);
        if (!body) co_return failure_response(req, body.error());
        co_return json_response(req, http::status::ok, std::move(*body), (*found)->content_type);
      }
      if (!id.empty() && action == "replay") {
        if (req.method() != http::verb::post) co_return not_allowed(req, "POST");
        auto replayed = co_await pipeline_.replay_as(id, actor_of(req));
        if (!replayed) co_return failure_response(req, replayed.error());
        AuditEntry e;
        e.kind = AuditKind::replayed;
        e.message_id = id;
        e.outcome = "ok";
        e.detail = std::to_string(*replayed) + " deliveries replayed";
        auto noted = co_await audited(req, query, std::move(e));
        if (!noted) co_return failure_response(req, noted.error());
        log::info("api", "message " + id + " replayed event=message.replayed message=" + id + ": " +
                             std::to_string(*replayed) + " dead delivery(ies) queued again by " + actor_of(req));
        co_return json_response(req, http::status::ok, R"({"replayed":)" + std::to_string(*replayed) + "}");
      }
    }
    co_return not_found(req, "no API at " + std::string(path) +
                                 "; see GET /api/health, GET /api/messages, GET /api/messages/{id}, "
                                 "GET /api/messages/{id}/body, GET /api/messages/{id}/original, "
                                 "POST /api/messages/{id}/replay, POST /api/replay, GET /api/destinations, "
                                 "POST /api/destinations/{name}/pause|resume, POST /api/config/reload");
  }

 private:
  // THE one place a body view is recorded, before anything is shown: on the message's trail
  // (who, why, which form) and in the audit log (durable). A view that cannot be recorded is
  // refused (the store's error: 404 for no such message, 503 when it cannot write).
  asio::awaitable<Result<void>> record_body_view(const HttpRequest& req, std::string_view query, std::string id,
                                                 std::string what, std::string reason, AuditEntry audit_entry) {
    auto on_trail = store_.record_view(std::move(id), std::move(what), actor_of(req), std::move(reason));
    auto noted = co_await std::move(on_trail);
    if (!noted) co_return noted;
    auto audited_view = audited(req, query, std::move(audit_entry));
    co_return co_await std::move(audited_view);
  }

  static HttpResponse failure_response(const HttpRequest& req, const Failure& f) {
    return outcome_response(req, http_status_for(f.code), f.issues);
  }
  static HttpResponse not_found(const HttpRequest& req, std::string why) {
    return outcome_response(req, http::status::not_found, {Issue{Severity::error, "not-found", std::move(why), "", ""}});
  }
  static HttpResponse not_allowed(const HttpRequest& req, const char* allow) {
    auto res = outcome_response(req, http::status::method_not_allowed,
        {Issue{Severity::error, "not-supported", "use " + std::string(allow) + " here", "", ""}});
    res.set(http::field::allow, allow);
    return res;
  }

  bool is_destination(const std::string& name) const {
    for (const auto& p : config_.partners)
      if (p.id == name && p.endpoint) return true;
    return false;
  }

  // GET /api/destinations (name empty: every destination, as an array) or one destination with
  // its own trail (pause, resume).
  asio::awaitable<Result<std::string>> destinations_json(std::string name) {
    auto controls = co_await store_.destination_controls();
    if (!controls) co_return controls.error();
    auto backlog = co_await store_.backlog();
    if (!backlog) co_return backlog.error();
    std::vector<DestinationAction> trail;
    if (!name.empty()) {
      auto t = co_await store_.destination_trail(name, 20);
      if (!t) co_return t.error();
      trail = std::move(*t);
    }
    const auto now = now_ms();
    rapidjson::StringBuffer out;
    JsonWriter w(out);
    if (name.empty()) w.StartArray();
    for (const auto& p : config_.partners) {
      if (!p.endpoint || (!name.empty() && p.id != name)) continue;
      DestinationStats stats = dispatcher_ ? dispatcher_->stats(p.id) : DestinationStats{};
      const DestinationControl* control = nullptr;
      for (const auto& c : *controls)
        if (c.destination == p.id) control = &c;
      std::uint64_t depth = 0;
      std::int64_t oldest = 0;
      for (const auto& b : *backlog)
        if (b.destination == p.id) {
          depth = b.pending;
          oldest = b.oldest_received_at_ms;
        }
      const bool paused = control ? control->paused : stats.paused;
      std::string status, text;
      const bool failing_now = stats.last_failure_at_ms > stats.last_success_at_ms;
      const std::string last = stats.last_error.empty() ? std::string() : " (last: " + stats.last_error + ")";
      // An open circuit is "retrying" at first and "failing" once it has stayed open for
      // delivery.failing_after, probing or not: the word must not flicker with each probe.
      const std::int64_t held_for = std::max<std::int64_t>(0, now - stats.circuit_opened_at_ms);
      if (paused) {
        status = "paused";
        text = "paused by " + (control ? control->actor : std::string("an operator")) +
               (control ? " at " + iso8601_utc(control->changed_at_ms) : std::string()) + "; " +
               std::to_string(depth) + " record(s) waiting in order";
      } else if (stats.circuit != Circuit::State::closed && held_for >= config_.delivery.failing_after.count()) {
        status = "failing";
        text = "the partner has taken no record for " + how_long(held_for) +
               "; sending is held and probed now and then" + last;
      } else if (stats.circuit != Circuit::State::closed || (failing_now && !stats.last_failure_dead)) {
        status = "retrying";
        text = "the partner did not take the last record; it is tried again, the others wait in order" + last;
      } else {
        // A record refused for good is a dead letter, not the destination's health: the partner answers.
        status = "ok";
        text = depth == 0 ? "delivering; nothing waiting" : "delivering; " + std::to_string(depth) + " record(s) on their way";
        if (failing_now) text += "; the last record it was sent was refused for good, a dead letter" + last;
      }
      w.StartObject();
      w.Key("name"); write_string(w, p.id);
      w.Key("type"); write_string(w, p.endpoint->type);
      w.Key("status"); write_string(w, status);
      w.Key("statusText"); write_string(w, text);
      w.Key("paused"); w.Bool(paused);
      if (control) {
        w.Key("changedBy"); write_string(w, control->actor);
        w.Key("changedAt"); write_time(w, control->changed_at_ms);
      }
      w.Key("depth"); w.Uint64(depth);
      w.Key("oldestAgeSeconds");
      if (oldest > 0) w.Double(static_cast<double>(std::max<std::int64_t>(0, now - oldest)) / 1000.0);
      else w.Null();
      w.Key("delivered"); w.Uint64(stats.delivered);  // since the broker started
      w.Key("dead"); w.Uint64(stats.dead);
      w.Key("lastError"); write_string(w, stats.last_error);
      w.Key("lastErrorAt"); write_time(w, stats.last_failure_at_ms);
      if (!name.empty()) {
        w.Key("trail");
        w.StartArray();
        for (const auto& a : trail) {
          w.StartObject();
          w.Key("at"); write_time(w, a.at_ms);
          w.Key("action"); write_string(w, a.action);
          w.Key("actor"); write_string(w, a.actor);
          w.EndObject();
        }
        w.EndArray();
      }
      w.EndObject();
    }
    if (name.empty()) w.EndArray();
    co_return std::string(out.GetString(), out.GetSize());
  }

  Store& store_;
  Pipeline& pipeline_;
  const Config& config_;
  Dispatcher* dispatcher_;
  Audit* audit_;  // null: not audited
};

}  // namespace

asio::awaitable<Health> check_health(Store& store) {
  Health health;
  auto stored = co_await store.health();
  if (!stored) {
    health.ok = false;
    for (const auto& issue : stored.error().issues) health.problems.push_back(issue.diagnostics);
  }
  co_return health;
}

std::string health_json(const Health& health) {
  rapidjson::StringBuffer out;
  JsonWriter w(out);
  w.StartObject();
  w.Key("status");
  write_string(w, health.ok ? "ok" : "unavailable");
  if (!health.ok) {
    w.Key("problems");
    w.StartArray();
    for (const auto& p : health.problems) write_string(w, p);
    w.EndArray();
  }
  w.EndObject();
  return std::string(out.GetString(), out.GetSize());
}

void mount_api(HttpServer& server, Store& store, Pipeline& pipeline, const Config& config, Dispatcher* dispatcher,
               Audit* audit) {
  auto api = std::make_shared<AdminApi>(store, pipeline, config, dispatcher, audit);
  server.mount("/api", guard_operators(config, [api](HttpRequest& req) { return api->handle(req); }));
}

}  // namespace tellonce
