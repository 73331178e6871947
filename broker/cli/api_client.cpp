// `tellonce message ID` and `tellonce replay ID`: clients of the running broker's API, so
// they see exactly what the console and the status URL see.
#include "broker/cli/commands.hpp"

#include "broker/config/config.hpp"

#include <curl/curl.h>
#include <rapidjson/document.h>
#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>

#include <unistd.h>

namespace tellonce {
namespace {

// How this one-shot command signs in and why it reads a body: set while the arguments are read,
// sent with every call.
struct Credentials {
  std::string token;   // --token-file, else TELLONCE_TOKEN
  std::string reason;  // --reason, for --body and --original
};
Credentials& credentials() {
  static Credentials c;
  return c;
}

// --token-file FILE: the token is the file's first line (a file keeps it out of `ps` and shell history).
bool read_token_file(const char* cmd, const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) {
    std::cerr << "tellonce " << cmd << ": cannot read a token from " << path << "\n";
    return false;
  }
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  credentials().token = line;
  return true;
}

struct ClientArgs {
  std::string id;
  std::string api;  // http://host:port
  bool json = false;
  std::string show;  // "body" or "original": print those bytes instead of the trail
};

// The API's address from the config file (the default one when none is named); nullopt after
// printing the config's problems.
std::optional<std::string> api_from_config(std::string config, const AdapterRegistry& registry) {
  if (config.empty()) config = "config/tellonce.yaml";
  auto load = load_config(config, registry);
  if (!load.config) {
    for (const auto& p : load.problems) std::cerr << p.to_string() << "\n";
    return std::nullopt;
  }
  return "http://" + load.config->api.listen;
}

std::optional<ClientArgs> parse_client_args(const char* cmd, int argc, char** argv,
                                            const AdapterRegistry& registry) {
  ClientArgs a;
  std::filesystem::path config;
  for (int i = 0; i < argc; ++i) {
    std::string_view s = argv[i];
    if (s == "--config" && i + 1 < argc) config = argv[++i];
    else if (s == "--api" && i + 1 < argc) a.api = argv[++i];
    else if (s == "--json") a.json = true;
    else if (s == "--token-file" && i + 1 < argc) { if (!read_token_file(cmd, argv[++i])) return std::nullopt; }
    else if (s == "--reason" && i + 1 < argc) credentials().reason = argv[++i];
    else if ((s == "--body" || s == "--original") && std::string_view(cmd) == "message") a.show = s.substr(2);
    else if (!s.starts_with("--") && a.id.empty()) a.id = s;
    else {
      std::cerr << "tellonce " << cmd << ": unexpected argument '" << s << "'\n";
      return std::nullopt;
    }
  }
  if (a.id.empty()) {
    std::cerr << "usage: tellonce " << cmd << " ID [--config FILE | --api http://HOST:PORT] [--token-file FILE] [--reason WHY] [--json"
              << (std::string_view(cmd) == "message" ? " | --body | --original" : "") << "]\n";
    return std::nullopt;
  }
  if (a.api.empty()) {
    auto api = api_from_config(config, registry);
    if (!api) return std::nullopt;
    a.api = std::move(*api);
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
  // Actions go on trails with who did them.
  const char* user = std::getenv("USER");
  const std::string actor = std::string("X-Tellonce-Actor: cli:") + (user && *user ? user : "unknown");
  curl_slist* headers = curl_slist_append(nullptr, actor.c_str());
  std::string token = credentials().token;
  if (token.empty())
    if (const char* env = std::getenv("TELLONCE_TOKEN")) token = env;
  const std::string auth = "Authorization: Bearer " + token;
  if (!token.empty()) headers = curl_slist_append(headers, auth.c_str());
  std::string reason = credentials().reason;
  for (auto& c : reason)
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  const std::string why = "X-Tellonce-Reason: " + reason;
  if (!reason.empty()) headers = curl_slist_append(headers, why.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  CURLcode rc = curl_easy_perform(h);
  curl_slist_free_all(headers);
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
  if (it->value.IsUint64()) return std::to_string(it->value.GetUint64());
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

namespace {

std::string url_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

// The options every listing command shares: where the API is, filters as key=value.
struct ListArgs {
  std::string api;
  std::string query;  // "state=failed&source=rtx"
  std::vector<std::string> words;  // other arguments, in order
  bool json = false;
  bool dry_run = false;
  bool filter = false;  // --filter seen
};

// The search flags (--state failed) and --filter key=value, as API query parameters.
std::optional<ListArgs> parse_list_args(const char* cmd, int argc, char** argv, const AdapterRegistry& registry) {
  static const std::vector<std::pair<std::string_view, std::string_view>> flags = {
      {"--state", "state"}, {"--source", "source"}, {"--destination", "destination"}, {"--route", "route"},
      {"--resource-type", "resourceType"}, {"--event", "event"}, {"--since", "since"}, {"--until", "until"},
      {"--nhs-number", "nhsNumber"}, {"--limit", "limit"}, {"--cursor", "cursor"}};
  ListArgs a;
  std::filesystem::path config;
  auto add = [&](std::string_view key, std::string_view value) {
    if (!a.query.empty()) a.query += '&';
    a.query += std::string(key) + "=" + url_encode(value);
  };
  for (int i = 0; i < argc; ++i) {
    std::string_view s = argv[i];
    bool matched = false;
    for (const auto& [flag, key] : flags)
      if (s == flag && i + 1 < argc) {
        add(key, argv[++i]);
        matched = true;
      }
    if (matched) continue;
    if (s == "--config" && i + 1 < argc) config = argv[++i];
    else if (s == "--api" && i + 1 < argc) a.api = argv[++i];
    else if (s == "--json") a.json = true;
    else if (s == "--token-file" && i + 1 < argc) { if (!read_token_file(cmd, argv[++i])) return std::nullopt; }
    else if (s == "--dry-run") a.dry_run = true;
    else if (s == "--filter" && i + 1 < argc) {
      std::string_view kv = argv[++i];
      auto eq = kv.find('=');
      if (eq == std::string_view::npos || eq == 0) {
        std::cerr << "tellonce " << cmd << ": --filter takes key=value (state=failed, destination=gp-a81001, ...)\n";
        return std::nullopt;
      }
      a.filter = true;
      add(kv.substr(0, eq), kv.substr(eq + 1));
    } else if (!s.starts_with("--")) a.words.emplace_back(s);
    else {
      std::cerr << "tellonce " << cmd << ": unexpected argument '" << s << "'\n";
      return std::nullopt;
    }
  }
  if (a.api.empty()) {
    auto api = api_from_config(config, registry);
    if (!api) return std::nullopt;
    a.api = std::move(*api);
  }
  return a;
}

std::string cell(std::string text, std::size_t width) {
  if (text.size() > width) text = text.substr(0, width - 1) + "~";
  return text + std::string(width - text.size() + 2, ' ');
}

}  // namespace

int run_messages_command(int argc, char** argv, const AdapterRegistry& registry) {
  auto a = parse_list_args("messages", argc, argv, registry);
  if (!a) return 2;
  if (!a->words.empty()) {
    std::cerr << "usage: tellonce messages [--state S] [--source P] [--destination P] [--route R] [--resource-type T]\n"
                 "                         [--event E] [--since TIME] [--until TIME] [--nhs-number N] [--limit N]\n"
                 "                         [--cursor C] [--config FILE | --api URL] [--json]\n";
    return 2;
  }
  int status = 0;
  auto body = call_ok("GET", a->api + "/api/messages" + (a->query.empty() ? "" : "?" + a->query), status);
  if (!body) return status;
  rapidjson::Document d;
  d.Parse(body->c_str());
  if (a->json || d.HasParseError() || !d.IsObject() || !d.HasMember("messages") || !d["messages"].IsArray()) {
    std::cout << *body << "\n";
    return 0;
  }
  std::cout << cell("RECEIVED", 24) << cell("ID", 26) << cell("STATE", 10) << cell("SOURCE", 16)
            << cell("CHANNEL", 16) << cell("TYPE", 14) << "EVENT\n";
  for (auto& m : d["messages"].GetArray())
    std::cout << cell(str(m, "receivedAt"), 24) << cell(str(m, "id"), 26) << cell(str(m, "state"), 10)
              << cell(str(m, "source"), 16) << cell(str(m, "channel"), 16) << cell(str(m, "resourceType"), 14)
              << str(m, "event") << "\n";
  std::cout << d["messages"].Size() << " message(s), newest first";
  if (!str(d, "next").empty()) std::cout << "; more: add --cursor " << str(d, "next");
  std::cout << "\n";
  return 0;
}

int run_destinations_command(int argc, char** argv, const AdapterRegistry& registry) {
  auto a = parse_list_args("destinations", argc, argv, registry);
  if (!a) return 2;
  int status = 0;
  if (!a->words.empty()) {
    if (a->words.size() != 2 || (a->words[0] != "pause" && a->words[0] != "resume")) {
      std::cerr << "usage: tellonce destinations [pause|resume NAME] [--config FILE | --api URL] [--token-file FILE] [--json]  (token also from TELLONCE_TOKEN)\n";
      return 2;
    }
    auto body = call_ok("POST", a->api + "/api/destinations/" + url_encode(a->words[1]) + "/" + a->words[0], status);
    if (!body) return status;
    rapidjson::Document d;
    d.Parse(body->c_str());
    std::cout << a->words[1] << ": " << (d.IsObject() ? str(d, "status") + " - " + str(d, "statusText") : *body) << "\n";
    return 0;
  }
  auto body = call_ok("GET", a->api + "/api/destinations", status);
  if (!body) return status;
  rapidjson::Document d;
  d.Parse(body->c_str());
  if (a->json || d.HasParseError() || !d.IsArray()) {
    std::cout << *body << "\n";
    return 0;
  }
  std::cout << cell("DESTINATION", 20) << cell("TYPE", 10) << cell("STATUS", 9) << cell("WAITING", 8)
            << cell("OLDEST", 9) << "WHAT IS HAPPENING\n";
  for (auto& x : d.GetArray()) {
    std::string oldest = "-";
    if (x.HasMember("oldestAgeSeconds") && x["oldestAgeSeconds"].IsNumber())
      oldest = std::to_string(static_cast<long long>(x["oldestAgeSeconds"].GetDouble())) + " s";
    std::string depth = x.HasMember("depth") && x["depth"].IsUint64() ? std::to_string(x["depth"].GetUint64()) : "";
    std::cout << cell(str(x, "name"), 20) << cell(str(x, "type"), 10) << cell(str(x, "status"), 9) << cell(depth, 8)
              << cell(oldest, 9) << str(x, "statusText") << "\n";
  }
  return 0;
}

int run_replay_command(int argc, char** argv, const AdapterRegistry& registry) {
  for (int i = 0; i < argc; ++i) {
    if (std::string_view(argv[i]) != "--filter") continue;
    auto f = parse_list_args("replay", argc, argv, registry);
    if (!f) return 2;
    if (!f->words.empty()) {
      std::cerr << "usage: tellonce replay --filter key=value [--filter ...] [--dry-run]  (or: tellonce replay ID)\n";
      return 2;
    }
    int status = 0;
    auto body = call_ok("POST", f->api + "/api/replay?" + f->query + "&dryRun=" + (f->dry_run ? "true" : "false"), status);
    if (!body) return status;
    rapidjson::Document d;
    d.Parse(body->c_str());
    if (f->dry_run)
      std::cout << str(d, "matched") << " dead or expired delivery(ies) match; nothing replayed (dry run)\n";
    else
      std::cout << str(d, "matched") << " matched, " << str(d, "replayed") << " queued again\n";
    return 0;
  }
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
