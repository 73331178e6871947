// `tellonce message ID` and `tellonce replay ID`: clients of the running broker's API, so
// they see exactly what the console and the status URL see.
#include "broker/cli/commands.hpp"

#include "broker/config/config.hpp"

#include <curl/curl.h>
#include <rapidjson/document.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

#include <iostream>
#include <optional>

#include <unistd.h>

namespace tellonce {
namespace {

struct ClientArgs {
  std::string id;
  std::string api;  // http://host:port
  bool json = false;
  std::string show;  // "body" or "original": print those bytes instead of the trail
};

std::optional<ClientArgs> parse_client_args(const char* cmd, int argc, char** argv,
                                            const AdapterRegistry& registry) {
  ClientArgs a;
  std::filesystem::path config;
  for (int i = 0; i < argc; ++i) {
    std::string_view s = argv[i];
    if (s == "--config" && i + 1 < argc) config = argv[++i];
    else if (s == "--api" && i + 1 < argc) a.api = argv[++i];
    else if (s == "--json") a.json = true;
    else if ((s == "--body" || s == "--original") && std::string_view(cmd) == "message") a.show = s.substr(2);
    else if (!s.starts_with("--") && a.id.empty()) a.id = s;
    else {
      std::cerr << "tellonce " << cmd << ": unexpected argument '" << s << "'\n";
      return std::nullopt;
    }
  }
  if (a.id.empty()) {
    std::cerr << "usage: tellonce " << cmd << " ID [--config FILE | --api http://HOST:PORT] [--json"
              << (std::string_view(cmd) == "message" ? " | --body | --original" : "") << "]\n";
    return std::nullopt;
  }
  if (a.api.empty()) {
    if (config.empty()) config = "config/tellonce.yaml";
    auto load = load_config(config, registry);
    if (!load.config) {
      for (const auto& p : load.problems) std::cerr << p.to_string() << "\n";
      return std::nullopt;
    }
    a.api = "http://" + load.config->api.listen;
  }
  return a;
}

size_t collect(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

// Blocking is fine here: this is a one-shot command, not the broker's event loop.
std::optional<std::pair<long, std::string>> call(const std::string& method, const std::string& url) {
  CURL* h = curl_easy_init();
  if (!h) return std::nullopt;
  std::string body;
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (method == "POST") curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
  CURLcode rc = curl_easy_perform(h);
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(h);
  if (rc != CURLE_OK) {
    std::cerr << "cannot reach the broker API at " << url << ": " << curl_easy_strerror(rc)
              << " (is `tellonce serve` running?)\n";
    return std::nullopt;
  }
  return std::make_pair(status, std::move(body));
}

std::string str(const rapidjson::Value& v, const char* k) {
  if (!v.IsObject()) return {};
  auto it = v.FindMember(k);
  if (it == v.MemberEnd()) return {};
  if (it->value.IsString()) return it->value.GetString();
  if (it->value.IsInt64()) return std::to_string(it->value.GetInt64());
  return {};
}

void print_outcome_or_body(const std::string& body) {
  rapidjson::Document d;
  d.Parse(body.c_str());
  if (!d.HasParseError() && d.IsObject() && d.HasMember("issue") && d["issue"].IsArray()) {
    for (auto& i : d["issue"].GetArray()) std::cerr << str(i, "severity") << ": " << str(i, "diagnostics") << "\n";
  } else {
    std::cerr << body << "\n";
  }
}

void print_message(const rapidjson::Document& d) {
  std::cout << "message " << str(d, "id") << "  " << str(d, "state") << "\n"
            << "  from " << str(d, "source") << " via " << str(d, "channel") << ", " << str(d, "resourceType");
  if (!str(d, "event").empty()) std::cout << " (event " << str(d, "event") << ")";
  std::cout << "\n  received " << str(d, "receivedAt") << ", " << str(d, "bodyBytes") << " bytes, sha256 "
            << str(d, "contentHash") << "\n";
  if (d.HasMember("original") && d["original"].IsObject())
    std::cout << "  sent as " << str(d["original"], "contentType") << ", " << str(d["original"], "bytes")
              << " bytes (--original shows them; --body the FHIR form)\n";
  if (!str(d, "patientKey").empty()) std::cout << "  patient " << str(d, "patientKey") << "\n";
  if (d.HasMember("deliveries") && d["deliveries"].IsArray()) {
    std::cout << "  deliveries:\n";
    for (auto& x : d["deliveries"].GetArray()) {
      std::cout << "    " << str(x, "destination") << "  " << str(x, "status") << "  attempts "
                << str(x, "attempts");
      if (!str(x, "lastError").empty()) std::cout << "  last error: " << str(x, "lastError");
      std::cout << "\n";
    }
  }
  if (d.HasMember("events") && d["events"].IsArray()) {
    std::cout << "  trail:\n";
    for (auto& e : d["events"].GetArray())
      std::cout << "    " << str(e, "at") << "  " << str(e, "kind") << "  " << str(e, "detail") << "\n";
  }
}

// The body of a 200 answer; otherwise says why on stderr and sets the exit status.
std::optional<std::string> call_ok(const std::string& method, const std::string& url, int& status) {
  auto r = call(method, url);
  if (!r) {
    status = 2;
    return std::nullopt;
  }
  if (r->first != 200) {
    print_outcome_or_body(r->second);
    status = 1;
    return std::nullopt;
  }
  return std::move(r->second);
}

}  // namespace

int run_message_command(int argc, char** argv, const AdapterRegistry& registry) {
  auto a = parse_client_args("message", argc, argv, registry);
  if (!a) return 2;
  int status = 0;
  if (!a->show.empty()) {  // the stored FHIR form, or the bytes the partner sent, exactly
    auto bytes = call_ok("GET", a->api + "/api/messages/" + a->id + "/" + a->show, status);
    if (!bytes) return status;
    // HL7 v2 ends segments with CR alone, which a terminal draws over one line: one per line there.
    if (isatty(STDOUT_FILENO))
      for (std::size_t i = 0; i < bytes->size(); ++i)
        if ((*bytes)[i] == '\r' && (i + 1 == bytes->size() || (*bytes)[i + 1] != '\n')) (*bytes)[i] = '\n';
    std::cout << *bytes;
    if (!bytes->empty() && bytes->back() != '\n' && bytes->back() != '\r') std::cout << "\n";
    return 0;
  }
  auto body = call_ok("GET", a->api + "/api/messages/" + a->id, status);
  if (!body) return status;
  rapidjson::Document d;
  d.Parse(body->c_str());
  if (a->json || d.HasParseError()) {
    std::cout << *body << "\n";
  } else {
    print_message(d);
  }
  return 0;
}

int run_replay_command(int argc, char** argv, const AdapterRegistry& registry) {
  auto a = parse_client_args("replay", argc, argv, registry);
  if (!a) return 2;
  int status = 0;
  auto body = call_ok("POST", a->api + "/api/messages/" + a->id + "/replay", status);
  if (!body) return status;
  rapidjson::Document d;
  d.Parse(body->c_str());
  std::cout << "message " << a->id << ": " << (d.IsObject() ? str(d, "replayed") : *body)
            << " dead delivery(ies) queued again\n";
  return 0;
}

}  // namespace tellonce
