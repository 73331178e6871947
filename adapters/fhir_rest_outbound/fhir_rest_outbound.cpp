#include "fhir_rest_outbound.hpp"
#include "http_client.hpp"
#include "tellonce/tls.hpp"

#include <boost/asio/ssl/context.hpp>

#include <openssl/evp.h>
#include <rapidjson/document.h>
#include <rapidjson/reader.h>

#include <cctype>
#include <string_view>

namespace tellonce {
namespace {

// Keep enough of an error response to read an OperationOutcome; the rest is discarded.
constexpr std::size_t max_response_bytes = 16 * 1024;
constexpr std::size_t max_detail_chars = 300;

// Finds a Bundle's top-level "type" without building a DOM: stops at the first match.
struct BundleTypeScan : rapidjson::BaseReaderHandler<rapidjson::UTF8<>, BundleTypeScan> {
  int depth = 0;
  bool at_type = false;
  std::string type;

  bool Default() {
    at_type = false;
    return true;
  }
  bool String(const char* s, rapidjson::SizeType n, bool) {
    if (!at_type) return true;
    type.assign(s, n);
    return false;  // found: stop reading
  }
  bool Key(const char* s, rapidjson::SizeType n, bool) {
    at_type = depth == 1 && std::string_view(s, n) == "type";
    return true;
  }
  bool StartObject() { return ++depth, Default(); }
  bool EndObject(rapidjson::SizeType) { return --depth, Default(); }
  bool StartArray() { return ++depth, Default(); }
  bool EndArray(rapidjson::SizeType) { return --depth, Default(); }
};

std::string bundle_type(const std::string& body) {
  BundleTypeScan scan;
  rapidjson::Reader reader;
  rapidjson::StringStream in(body.c_str());
  reader.Parse(in, scan);
  return scan.type;
}

// Cuts to at most max_detail_chars without splitting a UTF-8 sequence; control characters become spaces.
std::string clip(std::string_view text) {
  std::string out;
  out.reserve(std::min(text.size(), max_detail_chars));
  for (char c : text) {
    out += static_cast<unsigned char>(c) < 0x20 ? ' ' : c;
  }
  if (out.size() > max_detail_chars) {
    std::size_t cut = max_detail_chars;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
    out.resize(cut);
  }
  return out;
}

// The partner's reason: an OperationOutcome's first diagnostics, else the start of the body.
std::string response_summary(const std::string& body) {
  rapidjson::Document doc;
  doc.Parse(body.c_str(), body.size());
  if (!doc.HasParseError() && doc.IsObject()) {
    auto rt = doc.FindMember("resourceType");
    auto issues = doc.FindMember("issue");
    if (rt != doc.MemberEnd() && rt->value.IsString() && std::string_view(rt->value.GetString()) == "OperationOutcome" &&
        issues != doc.MemberEnd() && issues->value.IsArray() && !issues->value.Empty() && issues->value[0].IsObject()) {
      const auto& issue = issues->value[0];
      auto diagnostics = issue.FindMember("diagnostics");
      if (diagnostics != issue.MemberEnd() && diagnostics->value.IsString()) return clip(diagnostics->value.GetString());
      auto details = issue.FindMember("details");
      if (details != issue.MemberEnd() && details->value.IsObject()) {
        auto text = details->value.FindMember("text");
        if (text != details->value.MemberEnd() && text->value.IsString()) return clip(text->value.GetString());
      }
      auto code = issue.FindMember("code");
      if (code != issue.MemberEnd() && code->value.IsString()) return clip(code->value.GetString());
    }
  }
  return clip(body);
}

DeliveryResult classify(long status, const std::string& body) {
  DeliveryResult r;
  r.partner_code = "HTTP " + std::to_string(status);
  // 4xx means this record will never be accepted as it is, except the "try later" ones.
  const bool rejected = status >= 400 && status < 500 && status != 408 && status != 425 && status != 429;
  if (status >= 200 && status < 300) {
    r.outcome = DeliveryOutcome::ok;
  } else {
    r.outcome = rejected ? DeliveryOutcome::permanent : DeliveryOutcome::retryable;
    r.detail = response_summary(body);
  }
  return r;
}

DeliveryResult transport_failure(std::string detail) {
  DeliveryResult r;
  r.outcome = DeliveryOutcome::retryable;
  r.detail = std::move(detail);
  return r;
}

// The broker's own failure (its descriptors or memory ran out): nothing reached the partner.
DeliveryResult broker_failure(std::string detail) {
  DeliveryResult r = transport_failure("broker: " + std::move(detail));
  r.broker_fault = true;
  return r;
}

// The partner's base URL, already checked by check_http_url: the default port filled in and
// the path without a trailing '/'.
HttpUrl partner_url(const std::string& url) {
  std::string unused;
  HttpUrl u = split_http_url(url, unused).value_or(HttpUrl{});
  if (u.port.empty()) u.port = u.https ? "443" : "80";
  while (!u.rest.empty() && u.rest.back() == '/') u.rest.pop_back();
  return u;
}

// "user:password" from a URL, percent-decoded, as HTTP Basic credentials.
std::string basic_authorization(std::string_view userinfo) {
  std::string plain;
  for (std::size_t i = 0; i < userinfo.size(); ++i) {
    auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
    if (userinfo[i] == '%' && i + 2 < userinfo.size() && hex(userinfo[i + 1]) && hex(userinfo[i + 2])) {
      plain += static_cast<char>(std::stoi(std::string(userinfo.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      plain += userinfo[i];
    }
  }
  std::string encoded(4 * ((plain.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(encoded.data()),
                                reinterpret_cast<const unsigned char*>(plain.data()), static_cast<int>(plain.size()));
  encoded.resize(static_cast<std::size_t>(n));
  return "Basic " + encoded;
}

HttpClientOptions client_options(const FhirRestOutboundSettings& s, const HttpUrl& url) {
  HttpClientOptions o;
  o.host = url.host;
  o.port = url.port;
  o.timeout = s.timeout;
  o.connect_timeout = s.connect_timeout;
  o.max_connections = s.max_connections;
  o.max_body_bytes = max_response_bytes;
  if (url.https) {
    o.tls_context = make_tls_client_context(s.ca_file, s.client_cert, s.client_key);
    if (!s.verify_tls) o.tls_context->set_verify_mode(asio::ssl::verify_none);
  }
  return o;
}

// POSTs records over a pool of keep-alive connections (http_client.hpp) on the broker's io
// threads: each delivery is a coroutine, no thread of the adapter's own.
class FhirRestOutbound final : public OutboundAdapter {
 public:
  FhirRestOutbound(FhirRestOutboundSettings settings, asio::any_io_executor executor)
      : settings_(std::move(settings)), url_(partner_url(settings_.url)),
        client_(std::move(executor), client_options(settings_, url_)) {
    fixed_headers_ = header_line("User-Agent", "tellonce/0.1") + header_line("Content-Type", "application/fhir+json") +
                     header_line("Accept", "application/fhir+json");
    if (!settings_.bearer_token.empty()) fixed_headers_ += header_line("Authorization", "Bearer " + settings_.bearer_token);
    else if (!url_.userinfo.empty()) fixed_headers_ += header_line("Authorization", basic_authorization(url_.userinfo));
    base_ = settings_.url;
    while (!base_.empty() && base_.back() == '/') base_.pop_back();
  }

  ~FhirRestOutbound() override { stop(); }

  asio::awaitable<DeliveryResult> deliver(const DeliveryJob& job) override {
    OutboundHttpRequest request;
    request.target = target(job);
    request.headers.reserve(fixed_headers_.size() + 2 * job.message_id.size() + job.destination.size() + 48);
    request.headers = fixed_headers_;
    request.headers += header_line("X-Tellonce-Message-Id", job.message_id);
    request.headers += header_line("X-Request-Id", job.message_id + "-" + job.destination);
    request.body = job.body;  // not copied: the job outlives the delivery
    HttpExchange answer = co_await client_.exchange(request);
    if (answer.status == HttpExchange::Status::answered) co_return classify(answer.code, answer.body);
    if (answer.status == HttpExchange::Status::stopped) co_return transport_failure("adapter stopped");
    if (answer.broker_fault) co_return broker_failure(answer.detail);
    co_return transport_failure(clip(answer.detail));
  }

  std::string describe() const override { return "fhir-rest to " + base_; }

  void stop() override { client_.stop(); }

 private:
  std::string target(const DeliveryJob& job) const {
    const std::string& path = url_.rest;
    if (job.resource_type == "Bundle") {
      auto type = bundle_type(job.body);
      if (type == "transaction" || type == "batch" || type == "message") return path.empty() ? "/" : path;
    }
    return path + "/" + job.resource_type;
  }

  FhirRestOutboundSettings settings_;
  HttpUrl url_;
  HttpClient client_;
  std::string base_;
  std::string fixed_headers_;  // the same on every request
};

AdapterSettings parse_settings(SettingsReader& reader) {
  auto s = std::make_shared<FhirRestOutboundSettings>();
  s->url = reader.required_string("url");
  if (!s->url.empty()) {
    if (auto why = check_http_url(s->url); !why.empty()) reader.problem("url", why);
  }
  s->timeout = reader.duration("timeout", s->timeout);
  s->connect_timeout = reader.duration("connect_timeout", s->connect_timeout);
  if (s->timeout.count() <= 0) reader.problem("timeout", "must be more than 0");
  if (s->connect_timeout.count() <= 0) reader.problem("connect_timeout", "must be more than 0");
  s->verify_tls = reader.boolean("verify_tls", s->verify_tls);
  s->ca_file = reader.file_path("ca_file", "");
  s->client_cert = reader.file_path("client_cert", "");
  s->client_key = reader.file_path("client_key", "");
  if (s->client_cert.empty() != s->client_key.empty()) {
    reader.problem(s->client_cert.empty() ? "client_cert" : "client_key",
                   "a client certificate needs both client_cert and client_key");
  } else if (!s->client_cert.empty()) {
    TlsSettings files;
    files.cert = s->client_cert;
    files.key = s->client_key;
    for (auto& why : check_tls_files(files)) reader.problem("client_cert", why);
  }
  s->bearer_token = reader.string("bearer_token", "");
  for (char ch : s->bearer_token)
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) {
      reader.problem("bearer_token", "must not contain control characters (it is sent as a header)");
      break;
    }
  s->max_connections = static_cast<int>(reader.integer("max_connections", s->max_connections, 1, 256));
  reader.finish();
  return s;
}

}  // namespace

std::shared_ptr<OutboundAdapter> make_fhir_rest_outbound(const FhirRestOutboundSettings& settings,
                                                         asio::any_io_executor executor) {
  return std::make_shared<FhirRestOutbound>(settings, std::move(executor));
}

AdapterSettings parse_fhir_rest_outbound_settings(SettingsReader& reader) { return parse_settings(reader); }

OutboundAdapterType fhir_rest_outbound_type() {
  OutboundAdapterType type;
  type.name = "fhir-rest";
  type.summary = "POSTs each record to the partner's FHIR R4 base URL over HTTP(S)";
  type.parse = &parse_settings;
  type.create = [](const AdapterSettings& settings, OutboundContext& ctx) -> std::unique_ptr<OutboundAdapter> {
    return std::make_unique<FhirRestOutbound>(settings_as<FhirRestOutboundSettings>(settings), ctx.io.get_executor());
  };
  return type;
}

}  // namespace tellonce
