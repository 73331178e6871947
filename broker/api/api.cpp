#include "broker/api/api.hpp"

#include "broker/config/config.hpp"
#include "broker/core/trail.hpp"
#include "tellonce/http_server.hpp"
#include "tellonce/pipeline.hpp"
#include "tellonce/store.hpp"

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
      break;
  }
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

std::string summaries_json(const std::vector<MessageSummary>& list) {
  rapidjson::StringBuffer out;
  JsonWriter w(out);
  w.StartObject();
  w.Key("count"); w.Uint64(list.size());
  w.Key("messages");
  w.StartArray();
  for (const auto& m : list) {
    w.StartObject();
    w.Key("id"); write_string(w, m.id);
    w.Key("source"); write_string(w, m.source);
    w.Key("resourceType"); write_string(w, m.resource_type);
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

// Builds the store query from ?state=&source=&limit=, or says what is wrong.
std::optional<Issue> read_query(std::string_view query, MessageQuery& q) {
  while (!query.empty()) {
    auto amp = query.find('&');
    auto pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    auto eq = pair.find('=');
    auto name = pair.substr(0, eq);
    std::string value = eq == std::string_view::npos ? std::string() : url_decode(pair.substr(eq + 1));
    if (name == "state") {
      if (value != "accepted" && value != "unroutable" && value != "delivering" && value != "delivered" &&
          value != "failed")
        return bad_request("state must be accepted, unroutable, delivering, delivered or failed", "state");
      q.state = message_state_from(value);
    } else if (name == "source") {
      q.source = value;
    } else if (name == "limit") {
      int limit = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), limit);
      if (ec != std::errc() || end != value.data() + value.size() || limit < 1 || limit > 1000)
        return bad_request("limit must be a whole number from 1 to 1000", "limit");
      q.limit = limit;
    } else if (!name.empty()) {
      return bad_request("unknown parameter '" + std::string(name) + "'; use state, source or limit",
                         std::string(name));
    }
  }
  return std::nullopt;
}

// No authentication yet: the API binds to 127.0.0.1 by default (api.listen), so only local
// operators reach it. Anything listening wider needs a token check here first.
class AdminApi {
 public:
  AdminApi(Store& store, Pipeline& pipeline) : store_(store), pipeline_(pipeline) {}

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
    if (path == "/api/messages") {
      if (req.method() != http::verb::get) co_return not_allowed(req, "GET");
      MessageQuery q;
      q.limit = 50;
      if (auto problem = read_query(query, q)) co_return outcome_response(req, http::status::bad_request, {*problem});
      auto listed = co_await store_.list(std::move(q));
      if (!listed) co_return failure_response(req, listed.error());
      co_return json_response(req, http::status::ok, summaries_json(*listed));
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
        if (action == "original") {
          auto original = co_await store_.original(id);
          if (!original) co_return failure_response(req, original.error());
          if (*original)
            co_return json_response(req, http::status::ok, std::move((*original)->bytes),
                                    std::move((*original)->content_type));
        }
        auto found = co_await store_.find(id);
        if (!found) co_return failure_response(req, found.error());
        if (!*found) co_return not_found(req, "no message with id " + id);
        auto body = co_await store_.body(id);
        if (!body) co_return failure_response(req, body.error());
        co_return json_response(req, http::status::ok, std::move(*body), (*found)->content_type);
      }
      if (!id.empty() && action == "replay") {
        if (req.method() != http::verb::post) co_return not_allowed(req, "POST");
        auto replayed = co_await pipeline_.replay(id);
        if (!replayed) co_return failure_response(req, replayed.error());
        co_return json_response(req, http::status::ok, R"({"replayed":)" + std::to_string(*replayed) + "}");
      }
    }
    co_return not_found(req, "no API at " + std::string(path) +
                                 "; see GET /api/health, GET /api/messages, GET /api/messages/{id}, "
                                 "GET /api/messages/{id}/body, GET /api/messages/{id}/original, "
                                 "POST /api/messages/{id}/replay");
  }

 private:
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

  Store& store_;
  Pipeline& pipeline_;
};

}  // namespace

std::string iso8601_utc(std::int64_t ms) {
  std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[40];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms % 1000));
  return buf;
}

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

void mount_api(HttpServer& server, Store& store, Pipeline& pipeline, const Config&) {
  auto api = std::make_shared<AdminApi>(store, pipeline);
  server.mount("/api", [api](HttpRequest& req) { return api->handle(req); });
}

}  // namespace tellonce
