#include "fhir_rest_inbound.hpp"

#include "tellonce/json.hpp"
#include "tellonce/log.hpp"
#include "tellonce/http_server.hpp"
#include "tellonce/limits.hpp"
#include "tellonce/pipeline.hpp"

#include <boost/beast/core/string.hpp>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <atomic>
#include <cctype>
#include <ctime>

namespace tellonce {
namespace {

namespace beast = boost::beast;

constexpr std::string_view accepted_types = "application/fhir+json or application/json";

// The resource types the CapabilityStatement names. The pipeline takes any type the
// validator knows; listing all 140-odd would say nothing more useful to a partner.
constexpr const char* common_types[] = {
    "AllergyIntolerance", "Appointment", "Bundle", "CarePlan", "Communication", "Composition",
    "Condition", "Consent", "DiagnosticReport", "DocumentReference", "Encounter", "Flag",
    "Immunization", "MedicationRequest", "MedicationStatement", "Observation", "Organization",
    "Patient", "Practitioner", "Procedure", "QuestionnaireResponse", "ServiceRequest", "Task"};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

Issue error_issue(std::string code, std::string diagnostics, std::string location = {}) {
  return Issue{Severity::error, std::move(code), std::move(diagnostics), std::move(location), ""};
}

// Empty when acceptable; otherwise why not.
std::string content_type_problem(std::string_view header) {
  auto semi = header.find(';');
  auto media = trim(header.substr(0, semi));
  if (!beast::iequals(media, "application/fhir+json") && !beast::iequals(media, "application/json")) {
    return media.empty() ? "Content-Type is missing; send " + std::string(accepted_types)
                         : "Content-Type '" + std::string(media) + "' is not supported; send " +
                               std::string(accepted_types);
  }
  while (semi != std::string_view::npos) {
    header.remove_prefix(semi + 1);
    semi = header.find(';');
    auto param = trim(header.substr(0, semi));
    auto eq = param.find('=');
    if (eq == std::string_view::npos || !beast::iequals(trim(param.substr(0, eq)), "charset")) continue;
    auto value = trim(param.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
    if (!beast::iequals(value, "utf-8") && !beast::iequals(value, "utf8"))
      return "charset '" + std::string(value) + "' is not supported; FHIR JSON is UTF-8";
  }
  return {};
}

bool looks_like_resource_type(std::string_view s) {
  if (s.empty() || !std::isupper(static_cast<unsigned char>(s.front()))) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) return false;
  return true;
}

// FHIR dateTime of now, to the second, in UTC.
std::string utc_now_datetime() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

class FhirRestInbound final : public InboundAdapter {
 public:
  FhirRestInbound(const FhirRestInboundSettings& settings, InboundContext& ctx)
      : settings_(settings), pipeline_(ctx.pipeline), partners_(ctx.partners), http_(ctx.http),
        channel_(ctx.channel_id), started_at_(utc_now_datetime()) {
    if (settings_.base_path.size() > 1 && settings_.base_path.back() == '/') settings_.base_path.pop_back();
    if (!http_) throw std::logic_error("fhir-rest inbound '" + channel_ + "' needs an HTTP listener facility");
  }

  // Mounts on the shared server for its address; the servers start once every adapter has.
  void start() override {
    http_->mount(settings_.listen, settings_.base_path, [this](HttpRequest& req) { return handle(req); });
  }
  // The shared server stops accepting; a request in flight still completes.
  void stop() override {}

  std::string describe() const override {
    return "fhir-rest on " + settings_.listen + settings_.base_path + " (accepted " +
           std::to_string(accepted_.load()) + ", duplicates " + std::to_string(duplicates_.load()) +
           ", rejected " + std::to_string(rejected_.load()) + ")";
  }

 private:
  asio::awaitable<HttpResponse> handle(HttpRequest& req) {
    std::string_view path = req.target();
    path = path.substr(0, path.find('?'));
    std::string_view rest = path.substr(std::min(path.size(), settings_.base_path == "/" ? 0 : settings_.base_path.size()));
    if (!rest.empty() && rest.front() == '/') rest.remove_prefix(1);
    if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);

    if (rest == "metadata") {
      if (req.method() != http::verb::get) co_return not_allowed(req, "GET");
      co_return json_response(req, http::status::ok, capability_statement(), "application/fhir+json");
    }
    FhirRestEndpoint endpoint;
    if (rest.empty()) {
      endpoint.kind = FhirRestEndpoint::Kind::base;
    } else if (rest == "$process-message") {
      endpoint.kind = FhirRestEndpoint::Kind::process_message;
    } else if (looks_like_resource_type(rest)) {
      endpoint.resource_type = std::string(rest);
    } else {
      co_return outcome_response(req, http::status::not_found, {error_issue("not-supported",
          "nothing is served at " + std::string(path) + "; this endpoint supports POST " + base() +
              "/{resourceType}, POST " + base() + " (Bundle), POST " + base() + "/$process-message and GET " +
              base() + "/metadata")});
    }
    if (req.method() != http::verb::post) co_return not_allowed(req, "POST");

    InboundRecord record;
    record.rule = [endpoint = std::move(endpoint)](const rapidjson::Value& doc) {
      return check_fhir_rest_endpoint(endpoint, doc);
    };
    auto answer = co_await create(req, std::move(record));
    co_return answer;
  }

  asio::awaitable<HttpResponse> create(HttpRequest& req, InboundRecord record) {
    std::string_view partner;
    if (auto rejection = identify(req, partner)) {
      ++rejected_;
      co_return std::move(*rejection);
    }
    if (auto* limits = partners_.limits())
      if (auto throttle = limits->admit(partner, channel_)) {
        ++rejected_;
        co_return throttled_response(req, *throttle);
      }
    auto content_type = req[http::field::content_type];
    if (auto why = content_type_problem(content_type); !why.empty()) {
      ++rejected_;
      co_return outcome_response(req, http::status::unsupported_media_type, {error_issue("not-supported", why)});
    }
    record.source = std::string(partner);
    record.channel = channel_;
    record.content_type = std::string(content_type);
    record.body = std::move(req.body());
    auto key = req["Idempotency-Key"];
    if (key.empty()) key = req["X-Request-Id"];
    record.idempotency_key = std::string(key);

    auto result = co_await pipeline_.accept(std::move(record));
    if (!result) {
      ++rejected_;
      const Failure& f = result.error();
      co_return outcome_response(req, http_status_for(f.code), f.issues);
    }
    co_return accepted_response(req, *result);
  }

  // Finds the sending partner's id, or answers 401.
  std::optional<HttpResponse> identify(const HttpRequest& req, std::string_view& partner) const {
    auto auth = trim(req[http::field::authorization]);
    // A verified client certificate (set by the TLS listener) names the partner; a key or a
    // header sent as well must then name the same one.
    auto by_cert = partners_.by_certificate(req[kClientCertFingerprintHeader], req[kClientCertSubjectHeader]);
    if (!by_cert.empty()) {
      std::string_view other;
      if (auth.size() > 7 && beast::iequals(auth.substr(0, 7), "Bearer ")) other = partners_.by_api_key(trim(auth.substr(7)));
      else if (settings_.allow_partner_header) other = partners_.by_id(trim(req["X-Tellonce-Partner"]));
      if (!other.empty() && other != by_cert)
        return unauthorized(req, "the client certificate is partner '" + std::string(by_cert) +
                                     "''s but the request names another partner");
      partner = by_cert;
      return std::nullopt;
    }
    if (!auth.empty()) {
      if (auth.size() > 7 && beast::iequals(auth.substr(0, 7), "Bearer ")) {
        partner = partners_.by_api_key(trim(auth.substr(7)));
        if (!partner.empty()) return std::nullopt;
        return unauthorized(req, "the bearer token is not an API key of any partner");
      }
      return unauthorized(req, "Authorization must be 'Bearer <api key>'");
    }
    if (settings_.allow_partner_header) {
      auto named = trim(req["X-Tellonce-Partner"]);
      if (!named.empty()) {
        partner = partners_.by_id(named);
        if (!partner.empty()) return std::nullopt;
        return unauthorized(req, "X-Tellonce-Partner names '" + std::string(named) + "', which is not a known partner");
      }
    }
    return unauthorized(req, settings_.allow_partner_header
        ? "send 'Authorization: Bearer <api key>' or 'X-Tellonce-Partner: <partner id>'"
        : "send 'Authorization: Bearer <api key>' with the API key you were given");
  }

  static HttpResponse unauthorized(const HttpRequest& req, std::string why) {
    auto res = outcome_response(req, http::status::unauthorized, {error_issue("security", std::move(why))});
    res.set(http::field::www_authenticate, "Bearer");
    return res;
  }

  static HttpResponse not_allowed(const HttpRequest& req, const char* allow) {
    auto res = outcome_response(req, http::status::method_not_allowed, {error_issue("not-supported",
        std::string(req.method_string()) + " is not supported here; use " + allow)});
    res.set(http::field::allow, allow);
    return res;
  }

  // New records answer 202: they are stored and will be delivered, not yet processed by the
  // partners. A duplicate answers 200, as HAPI does for a conditional create that finds its
  // match: nothing new was created, and the client can stop retrying.
  HttpResponse accepted_response(const HttpRequest& req, const Accepted& a) {
    std::vector<Issue> issues;
    issues.reserve(1 + a.warnings.size());
    std::string note;
    if (a.duplicate) {
      ++duplicates_;
      note = "duplicate of message " + a.message_id + ", not stored again";
    } else if (a.state == MessageState::unroutable || a.destinations.empty()) {
      ++accepted_;
      note = "accepted as " + a.message_id + " but no route matched: held as unroutable";
    } else {
      ++accepted_;
      note = "accepted as message " + a.message_id + "; routed to ";
      for (std::size_t i = 0; i < a.destinations.size(); ++i) {
        if (i) note += ", ";
        note += a.destinations[i];
      }
    }
    issues.push_back(Issue{Severity::information, "informational", std::move(note), "", ""});
    for (const auto& w : a.warnings) issues.push_back(w);

    auto res = outcome_response(req, a.duplicate ? http::status::ok : http::status::accepted, issues);
    // Relative: the client's Host header is not ours to repeat (it may name any host), and the
    // client resolves a relative reference against the address it used.
    res.set(http::field::location, "/api/messages/" + a.message_id);
    res.set("X-Tellonce-Message-Id", a.message_id);
    if (a.duplicate) res.set("X-Tellonce-Duplicate", "true");
    return res;
  }

  std::string base() const { return settings_.base_path == "/" ? "" : settings_.base_path; }

  std::string capability_statement() const {
    rapidjson::StringBuffer out;
    rapidjson::Writer<rapidjson::StringBuffer> w(out);
    w.StartObject();
    w.Key("resourceType"); w.String("CapabilityStatement");
    w.Key("status"); w.String("active");
    w.Key("date"); w.String(started_at_.c_str());  // an instance's capabilities are fixed when it starts
    w.Key("kind"); w.String("instance");
    w.Key("software");
    w.StartObject();
    w.Key("name"); w.String("tellonce");
    w.Key("version"); w.String(TELLONCE_VERSION);
    w.EndObject();
    // No implementation.url: the only source for it would be the client's Host header.
    w.Key("implementation");
    w.StartObject();
    w.Key("description"); w.String("Tellonce message broker: inbound FHIR REST channel " + channel_);
    w.EndObject();
    w.Key("fhirVersion"); w.String("4.0.1");
    w.Key("format"); w.StartArray(); w.String("json"); w.EndArray();
    w.Key("rest");
    w.StartArray();
    w.StartObject();
    w.Key("mode"); w.String("server");
    w.Key("documentation");
    w.String("Records are accepted (202), stored durably and delivered to partners by route. Create is "
             "accepted for every resource type the validator knows; the types below are the common ones. "
             "POST to the base takes a message, transaction or batch Bundle as one record: it is routed "
             "as a whole, not processed entry by entry.");
    w.Key("security");
    w.StartObject();
    w.Key("description");
    w.String(settings_.allow_partner_header ? "Authorization: Bearer <api key>, or X-Tellonce-Partner: <partner id>"
                                            : "Authorization: Bearer <api key>");
    w.EndObject();
    w.Key("resource");
    w.StartArray();
    for (const char* type : common_types) {
      w.StartObject();
      w.Key("type"); w.String(type);
      w.Key("interaction");
      w.StartArray(); w.StartObject(); w.Key("code"); w.String("create"); w.EndObject(); w.EndArray();
      w.EndObject();
    }
    w.EndArray();
    w.Key("operation");
    w.StartArray();
    w.StartObject();
    w.Key("name"); w.String("process-message");
    w.Key("definition"); w.String("http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message");
    w.EndObject();
    w.EndArray();
    w.EndObject();
    w.EndArray();
    w.EndObject();
    return std::string(out.GetString(), out.GetSize());
  }

  FhirRestInboundSettings settings_;
  Pipeline& pipeline_;
  const PartnerDirectory& partners_;
  HttpMounts* http_;
  std::string channel_;
  std::string started_at_;
  std::atomic<std::uint64_t> accepted_{0}, duplicates_{0}, rejected_{0};
};

}  // namespace

std::optional<Failure> check_fhir_rest_endpoint(const FhirRestEndpoint& endpoint, const rapidjson::Value& doc) {
  auto refuse = [](std::string diagnostics, std::string location, std::string rule) {
    return Failure::permanent(Errc::malformed, Issue{Severity::error, "invariant", std::move(diagnostics),
                                                      std::move(location), std::move(rule)});
  };
  auto type = json_string(json_member(doc, "resourceType"));
  auto bundle_type = json_string(json_member(doc, "type"));
  switch (endpoint.kind) {
    case FhirRestEndpoint::Kind::resource_type:
      if (type != endpoint.resource_type)
        return refuse("this endpoint takes " + endpoint.resource_type + " resources but the body is a " +
                          std::string(type),
                      "resourceType", "endpoint-type");
      return std::nullopt;
    case FhirRestEndpoint::Kind::base:
      if (type != "Bundle")
        return refuse("this endpoint takes Bundle resources but the body is a " + std::string(type),
                      "resourceType", "endpoint-type");
      // A searchset or history is a response someone posted by mistake; a document or
      // collection is a resource in its own right and goes to /Bundle.
      if (bundle_type != "message" && bundle_type != "transaction" && bundle_type != "batch")
        return refuse("POST to the base takes a Bundle of type message, transaction or batch; this one is " +
                          (bundle_type.empty() ? std::string("untyped") : "'" + std::string(bundle_type) + "'") +
                          " (a document or collection Bundle can be posted to /Bundle)",
                      "Bundle.type", "bundle-type");
      return std::nullopt;
    case FhirRestEndpoint::Kind::process_message:
      if (type != "Bundle" || bundle_type != "message")
        return refuse("$process-message takes a Bundle of type 'message' whose first entry is a MessageHeader",
                      type == "Bundle" ? "Bundle.type" : "resourceType", "process-message");
      return std::nullopt;
  }
  return std::nullopt;
}

InboundAdapterType fhir_rest_inbound_type() {
  InboundAdapterType t;
  t.name = "fhir-rest";
  t.summary = "FHIR R4 REST endpoint: POST resources, Bundles and $process-message";
  t.parse = [](SettingsReader& r) -> AdapterSettings {
    auto s = std::make_shared<FhirRestInboundSettings>();
    s->listen = r.string("listen", s->listen);
    s->base_path = r.string("base_path", s->base_path);
    if (s->base_path.empty() || s->base_path.front() != '/')
      r.problem("base_path", "must start with '/', e.g. /fhir");
    if (s->base_path.size() > 1 && s->base_path.back() == '/') s->base_path.pop_back();
    if (auto why = check_listen_address(s->listen); !why.empty()) r.problem("listen", why);
    else r.declare_listener("listen", s->listen, "http", s->base_path);
    s->allow_partner_header = r.boolean("allow_partner_header", s->allow_partner_header);
    // The header is a claim anyone can make: only where nothing beyond this machine connects.
    if (s->allow_partner_header && !loopback_listen_address(s->listen))
      r.problem("allow_partner_header",
                "lets whoever reaches " + s->listen +
                    " name any partner with X-Tellonce-Partner; it is allowed only on a loopback listen address "
                    "(127.0.0.1, [::1], localhost). Beyond loopback, give partners api_keys or client certificates");
    return s;
  };
  t.create = [](const AdapterSettings& p, InboundContext& ctx) -> std::unique_ptr<InboundAdapter> {
    return std::make_unique<FhirRestInbound>(settings_as<FhirRestInboundSettings>(p), ctx);
  };
  return t;
}

}  // namespace tellonce
