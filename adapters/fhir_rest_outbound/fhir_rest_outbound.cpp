#include "fhir_rest_outbound.hpp"
#include "tellonce/tls.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <curl/curl.h>
#include <rapidjson/document.h>
#include <rapidjson/reader.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <pthread.h>
#include <sys/socket.h>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <vector>

namespace tellonce {
namespace {

using ResultHandler = asio::any_completion_handler<void(DeliveryResult)>;

// Keep enough of an error response to read an OperationOutcome; the rest is discarded.
constexpr std::size_t max_response_bytes = 16 * 1024;
constexpr std::size_t max_detail_chars = 300;

void init_curl_once() {
  static const CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (rc != CURLE_OK) throw std::runtime_error(std::string("curl_global_init: ") + curl_easy_strerror(rc));
}

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

bool is_resource_errno(int e) { return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM; }

std::string describe_resource_errno(int e) {
  if (e == EMFILE || e == ENFILE) return "out of file descriptors (" + std::string(std::strerror(e)) + ")";
  return "out of memory for a socket (" + std::string(std::strerror(e)) + ")";
}

std::size_t collect_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto& out = *static_cast<std::string*>(user);
  const std::size_t n = size * count;
  if (out.size() < max_response_bytes) out.append(data, std::min(n, max_response_bytes - out.size()));
  return n;
}

// One request, owned by the curl thread from submission to completion.
struct Transfer {
  const DeliveryJob* job = nullptr;  // the caller's job, alive while it awaits deliver()
  std::string url;
  std::string request_id;
  std::string message_id_header;
  // The request's header list, linked by hand over strings this transfer or the adapter own:
  // curl_slist_append would copy each line into two fresh allocations per delivery.
  std::array<curl_slist, 6> header_nodes{};
  std::string response;
  asio::any_io_executor executor;  // tracks outstanding work, so the io_context waits for us
  // optional + emplace: Boost 1.81's any_completion_handler move-assignment recurses forever.
  std::optional<ResultHandler> handler;
  char error[CURL_ERROR_SIZE] = {};
  int socket_errno = 0;  // why socket() failed, if it did: libcurl reports only "couldn't connect"

  curl_slist* link_headers(std::initializer_list<const char*> lines) {
    curl_slist* head = nullptr;
    curl_slist** tail = &head;
    std::size_t used = 0;
    for (const char* line : lines) {
      if (!line || used == header_nodes.size()) continue;
      auto& node = header_nodes[used++];
      node.data = const_cast<char*>(line);  // curl only reads header lines
      node.next = nullptr;
      *tail = &node;
      tail = &node.next;
    }
    return head;
  }
};

// libcurl's multi interface on one thread per adapter instance. Per instance because the
// connection cache and CURLMOPT_MAX_HOST_CONNECTIONS live in the multi handle, so each partner
// gets its own connection limit, and stop() only has to join its own thread. A thread in
// curl_multi_poll costs nothing while the partner is idle.
class FhirRestOutbound final : public OutboundAdapter {
 public:
  FhirRestOutbound(FhirRestOutboundSettings settings, asio::any_io_executor fallback)
      : settings_(std::move(settings)), fallback_(std::move(fallback)) {
    init_curl_once();
    base_ = settings_.url;
    while (!base_.empty() && base_.back() == '/') base_.pop_back();
    if (!settings_.bearer_token.empty()) authorization_ = "Authorization: Bearer " + settings_.bearer_token;
    multi_ = curl_multi_init();
    if (!multi_) throw std::runtime_error("curl_multi_init failed");
    curl_multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS, static_cast<long>(settings_.max_connections));
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, static_cast<long>(settings_.max_connections));
    curl_multi_setopt(multi_, CURLMOPT_PIPELINING, static_cast<long>(CURLPIPE_MULTIPLEX));
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "deliver-curl");
      run();
    });
  }

  ~FhirRestOutbound() override {
    stop();
    for (CURL* easy : idle_) curl_easy_cleanup(easy);
    curl_multi_cleanup(multi_);
  }

  asio::awaitable<DeliveryResult> deliver(const DeliveryJob& job) override {
    auto transfer = std::make_unique<Transfer>();
    transfer->job = &job;
    transfer->url = target_url(job);
    Submit submit{this, std::move(transfer)};
    co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(DeliveryResult)>(
        std::move(submit), asio::use_awaitable);
  }

  std::string describe() const override { return "fhir-rest to " + base_; }

  void stop() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    curl_multi_wakeup(multi_);
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
  }

 private:
  struct Submit {
    FhirRestOutbound* self;
    std::unique_ptr<Transfer> transfer;
    template <class Handler>
    void operator()(Handler&& handler) {
      asio::any_io_executor ex = asio::get_associated_executor(handler, self->fallback_);
      transfer->executor = asio::prefer(ex, asio::execution::outstanding_work.tracked);
      transfer->handler.emplace(std::forward<Handler>(handler));
      self->submit(std::move(transfer));
    }
  };

  std::string target_url(const DeliveryJob& job) const {
    if (job.resource_type == "Bundle") {
      auto type = bundle_type(job.body);
      if (type == "transaction" || type == "batch" || type == "message") return base_;
    }
    return base_ + "/" + job.resource_type;
  }

  void submit(std::unique_ptr<Transfer> t) {
    bool wake = false;
    {
      std::lock_guard lock(mutex_);
      if (!stopping_) {
        submitted_.push_back(std::move(t));
        // One wake-up per batch: the curl thread takes everything submitted when it wakes.
        wake = !wake_pending_;
        wake_pending_ = true;
      }
    }
    if (t) {
      complete(std::move(t), transport_failure("adapter stopped"));
      return;
    }
    if (wake) curl_multi_wakeup(multi_);
  }

  static void complete(std::unique_ptr<Transfer> t, DeliveryResult result) {
    auto ex = t->executor;
    auto resume = [handler = std::move(*t->handler), result = std::move(result)]() mutable {
      std::move(handler)(std::move(result));
    };
    t.reset();
    asio::post(ex, std::move(resume));
  }

  CURL* take_easy() {
    if (!idle_.empty()) {
      CURL* easy = idle_.back();
      idle_.pop_back();
      return easy;
    }
    CURL* easy = curl_easy_init();
    if (!easy) return nullptr;
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(settings_.timeout.count()));
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(settings_.connect_timeout.count()));
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, settings_.verify_tls ? 1L : 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, settings_.verify_tls ? 2L : 0L);
    if (!settings_.ca_file.empty()) curl_easy_setopt(easy, CURLOPT_CAINFO, settings_.ca_file.c_str());
    curl_easy_setopt(easy, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2));
    if (!settings_.client_cert.empty()) {  // the partner knows us by this certificate
      curl_easy_setopt(easy, CURLOPT_SSLCERT, settings_.client_cert.c_str());
      curl_easy_setopt(easy, CURLOPT_SSLKEY, settings_.client_key.c_str());
    }
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "tellonce/0.1");
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &collect_body);
    return easy;
  }

  // Opens the sockets for libcurl, so that a socket() failing for lack of descriptors is told
  // apart from a partner that does not answer (libcurl reports both as "couldn't connect").
  static curl_socket_t open_socket(void* user, curlsocktype, curl_sockaddr* address) {
    curl_socket_t fd = ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
    if (fd == CURL_SOCKET_BAD && user) static_cast<Transfer*>(user)->socket_errno = errno;
    return fd;
  }

  void start(std::unique_ptr<Transfer> t) {
    CURL* easy = take_easy();
    if (!easy) {
      complete(std::move(t), broker_failure("out of memory (curl_easy_init failed)"));
      return;
    }
    const DeliveryJob& job = *t->job;
    t->request_id = "X-Request-Id: " + job.message_id + "-" + job.destination;
    t->message_id_header = "X-Tellonce-Message-Id: " + job.message_id;
    curl_slist* headers = t->link_headers({"Content-Type: application/fhir+json", "Accept: application/fhir+json",
                                           "Expect:",  // no 100-continue round trip
                                           t->message_id_header.c_str(), t->request_id.c_str(),
                                           authorization_.empty() ? nullptr : authorization_.c_str()});

    curl_easy_setopt(easy, CURLOPT_URL, t->url.c_str());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, job.body.data());  // not copied: the job outlives the transfer
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(job.body.size()));
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &t->response);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->error);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, &open_socket);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, t.get());
    if (CURLMcode rc = curl_multi_add_handle(multi_, easy); rc != CURLM_OK) {
      idle_.push_back(easy);
      std::string detail = std::string("curl_multi_add_handle: ") + curl_multi_strerror(rc);
      complete(std::move(t), rc == CURLM_OUT_OF_MEMORY ? broker_failure(detail) : transport_failure(detail));
      return;
    }
    active_.emplace(easy, std::move(t));
  }

  void finish(CURL* easy, CURLcode rc) {
    auto node = active_.extract(easy);
    curl_multi_remove_handle(multi_, easy);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, nullptr);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, nullptr);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, nullptr);
    if (node.empty()) {
      idle_.push_back(easy);
      return;
    }
    auto t = std::move(node.mapped());
    DeliveryResult result;
    if (rc == CURLE_OK) {
      long status = 0;
      curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
      result = classify(status, t->response);
    } else if (is_resource_errno(t->socket_errno)) {
      result = broker_failure(describe_resource_errno(t->socket_errno));
    } else if (rc == CURLE_OUT_OF_MEMORY) {
      result = broker_failure("out of memory (libcurl)");
    } else {
      std::string detail = curl_easy_strerror(rc);
      if (t->error[0] != '\0') detail += std::string(": ") + t->error;
      result = transport_failure(clip(detail));
    }
    idle_.push_back(easy);
    complete(std::move(t), std::move(result));
  }

  void run() {
    std::vector<std::unique_ptr<Transfer>> incoming;
    for (;;) {
      {
        std::lock_guard lock(mutex_);
        if (stopping_) break;
        incoming.swap(submitted_);
        wake_pending_ = false;
      }
      for (auto& t : incoming) start(std::move(t));
      incoming.clear();
      int running = 0;
      curl_multi_perform(multi_, &running);
      int left = 0;
      while (CURLMsg* msg = curl_multi_info_read(multi_, &left))
        if (msg->msg == CURLMSG_DONE) finish(msg->easy_handle, msg->data.result);
      curl_multi_poll(multi_, nullptr, 0, 1000, nullptr);
    }
    // Stopping: whatever has not finished ends as a retryable failure the caller can drop.
    for (auto& [easy, t] : active_) {
      curl_multi_remove_handle(multi_, easy);
      idle_.push_back(easy);
      complete(std::move(t), transport_failure("adapter stopped"));
    }
    active_.clear();
    std::lock_guard lock(mutex_);
    for (auto& t : submitted_) complete(std::move(t), transport_failure("adapter stopped"));
    submitted_.clear();
  }

  FhirRestOutboundSettings settings_;
  asio::any_io_executor fallback_;
  std::string base_;
  std::string authorization_;
  CURLM* multi_ = nullptr;

  std::mutex mutex_;
  bool stopping_ = false;
  bool wake_pending_ = false;
  std::vector<std::unique_ptr<Transfer>> submitted_;

  // Touched only by the curl thread (and the destructor after join).
  std::unordered_map<CURL*, std::unique_ptr<Transfer>> active_;
  std::vector<CURL*> idle_;
  std::thread thread_;
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
