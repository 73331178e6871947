#include "harness.hpp"

#include <gtest/gtest.h>

#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <rapidjson/document.h>
#include <rapidjson/pointer.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>


namespace tellonce::itest {

std::string one_route_config(unsigned short sink, const std::string& delivery, const std::string& store_extra,
                             unsigned short port) {
  const std::string listen = "127.0.0.1:" + std::to_string(port);
  return "api:\n  listen: " + listen + "\nstore:\n  path: data/tellonce.db\n" + store_extra +
         (delivery.empty() ? "" : "delivery:\n" + delivery) + R"(partners:
  - id: rtx
    name: Royal Example NHS Trust
    kind: trust
    ods: RTX
  - id: gp-a
    name: Example Surgery A
    kind: primary-care
    ods: A81001
    endpoint: { type: fhir-rest, url: "http://127.0.0.1:)" + std::to_string(sink) + R"(/fhir", timeout: 5s, connect_timeout: 1s }
inbound:
  - id: fhir-http
    type: fhir-rest
    listen: )" + listen + R"(
    base_path: /fhir
    allow_partner_header: true
routes:
  - id: all-to-gp-a
    match: {}
    to: [gp-a]
)";
}

std::filesystem::path tellonce_binary() { return TELLONCE_BINARY; }
std::filesystem::path source_dir() { return TELLONCE_SOURCE_DIR; }
std::filesystem::path shared_data_dir() { return TELLONCE_SHARED_DATA; }

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::filesystem::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

ReservedPort::ReservedPort() {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd_ >= 0) ::close(fd_);
    throw std::runtime_error("cannot reserve a loopback port");
  }
  port_ = ntohs(a.sin_port);
}

ReservedPort::~ReservedPort() { ::close(fd_); }

namespace {
// The port at the end of a "... HOST:PORT" line.
unsigned short port_at_end(const std::string& line) {
  auto colon = line.rfind(':');
  if (colon == std::string::npos) return 0;
  return static_cast<unsigned short>(std::strtoul(line.c_str() + colon + 1, nullptr, 10));
}
}  // namespace

// ---- Process ---------------------------------------------------------------

namespace {
// In a sanitizer build every child inherits ASAN_OPTIONS/UBSAN_OPTIONS/TSAN_OPTIONS; what it
// finds (leaks are reported at exit) goes to its stderr, the log file. A report fails the test.
void expect_no_sanitizer_report(const std::string& name, const std::string& output) {
  for (const char* mark : {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                           "WARNING: ThreadSanitizer"}) {
    if (output.find(mark) != std::string::npos) {
      ADD_FAILURE() << name << " reported " << mark << ":\n" << output;
      return;
    }
  }
}
}  // namespace

Process::Process(std::vector<std::string> args, std::filesystem::path log_file) : log_file_(std::move(log_file)) {
  int pipefd[2];
  if (::pipe(pipefd) != 0) throw std::runtime_error("pipe");
  int log_fd = ::open(log_file_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    // A test that dies (an assertion, SIGPIPE) must not leave brokers and sinks behind.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::dup2(pipefd[1], 1);
    ::dup2(log_fd, 2);
    ::close(pipefd[0]);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(pipefd[1]);
  ::close(log_fd);
  out_fd_ = pipefd[0];
  ::fcntl(out_fd_, F_SETFL, O_NONBLOCK);
}

Process::~Process() {
  if (running()) kill();
  if (out_fd_ >= 0) ::close(out_fd_);
}

std::optional<std::string> Process::wait_for_line(const std::string& needle, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::size_t nl;
    while ((nl = buffered_.find('\n')) != std::string::npos) {
      std::string line = buffered_.substr(0, nl);
      buffered_.erase(0, nl + 1);
      { std::ofstream(log_file_, std::ios::app) << line << "\n"; }
      if (line.find(needle) != std::string::npos) return line;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{out_fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::min<long>(left.count(), 100))) > 0) {
      char buf[4096];
      ssize_t n = ::read(out_fd_, buf, sizeof buf);
      if (n > 0) buffered_.append(buf, n);
      else if (n == 0 && !running()) return std::nullopt;
    } else if (!running()) {
      return std::nullopt;
    }
  }
}

bool Process::running() {
  if (pid_ <= 0) return false;
  int status;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    pid_ = -1;
    exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  return true;
}

int Process::terminate() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int status = 0;
  for (int i = 0; i < 200; ++i) {
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill();
  return -1;
}

void Process::signal(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

int Process::wait_exit(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return exit_status_;
}

void Process::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string Process::output() const { return read_file(log_file_); }

// ---- RawConnection ---------------------------------------------------------

RawConnection::RawConnection(unsigned short port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (fd_ >= 0) ::close(fd_);
    throw std::runtime_error("connect to 127.0.0.1:" + std::to_string(port) + " failed");
  }
  timeval limit{20, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
}

RawConnection::~RawConnection() { ::close(fd_); }

bool RawConnection::send_all(const std::string& bytes) {
  return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

std::string RawConnection::read_until(const std::string& needle) {
  std::string got;
  char buf[4096];
  while (got.find(needle) == std::string::npos) {
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

// ---- Client ----------------------------------------------------------------

namespace {
size_t collect_body(char* d, size_t s, size_t n, void* out) {
  static_cast<std::string*>(out)->append(d, s * n);
  return s * n;
}
size_t collect_header(char* d, size_t s, size_t n, void* out) {
  std::string line(d, s * n);
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), ::tolower);
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ')) value.erase(0, 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
    (*static_cast<std::map<std::string, std::string>*>(out))[name] = value;
  }
  return s * n;
}
}  // namespace

Client::Client() : handle_(curl_easy_init()) {}
Client::~Client() { curl_easy_cleanup(static_cast<CURL*>(handle_)); }

const char* const kTestOperatorsYaml =
    "operators:\n"
    "  - { name: itest-viewer, role: viewer, token_hashes: [\"sha256:7fc511295c6e7ba07a60f46d4af91598e38bf691e18566530c19d2a6c62fde3d\"] }\n"
    "  - { name: itest-operator, role: operator, token_hashes: [\"sha256:d5c5996dd30bff2a8379001e3608116ddded5ebf6080a877106bf0b05e6799a8\"] }\n"
    "  - { name: itest-admin, role: admin, token_hashes: [\"sha256:93789815e259f4c8211fb2cf5967d3f146670a94035c2f1b042eed942b40fd4c\"] }\n"
    "  - { name: itest-metrics, role: metrics, token_hashes: [\"sha256:3a931ad1db76c4b62d28688eed788412adc20311e01fe2af16fab28e8d48ee8a\"] }\n";

const char* const kFhirHttpInboundYaml =
    "inbound:\n"
    "  - id: fhir-http\n"
    "    type: fhir-rest\n"
    "    listen: 127.0.0.1:0\n"
    "    base_path: /fhir\n"
    "    allow_partner_header: true\n";

std::string bearer(const std::string& token) { return "Authorization: Bearer " + token; }

std::string token_file(const std::filesystem::path& dir, const std::string& token) {
  auto path = dir / "token";
  write_file(path, token + "\n");
  return path.string();
}

HttpReply Client::request(const std::string& method, const std::string& url, const std::string& body,
                          std::vector<std::string> headers) {
  CURL* h = static_cast<CURL*>(handle_);
  const bool admin_url = url.find("/api/") != std::string::npos || url.find("/metrics") != std::string::npos;
  bool has_auth = false;
  for (const auto& x : headers) has_auth = has_auth || x.rfind("Authorization:", 0) == 0;
  if (admin_url && !has_auth && !operator_token_.empty()) headers.push_back(bearer(operator_token_));
  HttpReply r;
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
  if (method == "POST" || method == "PUT") {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  } else {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str());
  }
  curl_slist* hl = nullptr;
  headers.push_back("Expect:");
  for (auto& x : headers) hl = curl_slist_append(hl, x.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, collect_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &r.headers);
  CURLcode rc = curl_easy_perform(h);
  curl_slist_free_all(hl);
  if (rc != CURLE_OK) {
    r.status = -1;
    r.body = curl_easy_strerror(rc);
    return r;
  }
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.status);
  curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &r.new_connections);
  return r;
}

HttpReply Client::post_fhir(const std::string& url, const std::string& body, const std::string& partner,
                            std::vector<std::string> extra) {
  extra.push_back("Content-Type: application/fhir+json");
  if (!partner.empty()) extra.push_back("X-Tellonce-Partner: " + partner);
  return request("POST", url, body, std::move(extra));
}

// ---- Sink ------------------------------------------------------------------

Sink::Sink(const std::filesystem::path& dir, std::string name, unsigned short port,
           std::vector<std::string> extra_args)
    : record_(dir / (name + ".ndjson")), port_(port) {
  std::vector<std::string> args{tellonce_binary().string(), "demo-sink", "--listen",
                                "127.0.0.1:" + std::to_string(port), "--record", record_.string(), "--quiet"};
  for (auto& a : extra_args) args.push_back(a);
  proc_ = std::make_unique<Process>(args, dir / (name + ".log"));
  auto line = proc_->wait_for_line("listening", std::chrono::seconds(10));
  if (!line) throw std::runtime_error("demo-sink " + name + " did not start: " + proc_->output());
  port_ = port_at_end(*line);
}

void Sink::stop() {
  if (proc_) {
    proc_->terminate();
    expect_no_sanitizer_report("demo-sink", proc_->output());
  }
  proc_.reset();
}

namespace {
std::vector<std::string> record_field(const std::filesystem::path& file, const char* pointer, bool raw_body) {
  std::vector<std::string> out;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    rapidjson::Document d;
    d.Parse(line.c_str());
    if (d.HasParseError() || !d.IsObject()) continue;  // a line still being written
    auto status = d.FindMember("status");
    if (status != d.MemberEnd() && status->value.IsInt() && status->value.GetInt() >= 300) continue;  // refused
    if (raw_body) {
      auto it = d.FindMember("body");
      if (it == d.MemberEnd()) continue;
      if (it->value.IsString()) {
        out.emplace_back(it->value.GetString());
      } else {
        rapidjson::StringBuffer sb;
        rapidjson::Writer<rapidjson::StringBuffer> w(sb);
        it->value.Accept(w);
        out.emplace_back(sb.GetString());
      }
    } else {
      const rapidjson::Value* v = rapidjson::Pointer(pointer).Get(d);
      out.emplace_back(v && v->IsString() ? v->GetString() : "");
    }
  }
  return out;
}
}  // namespace

std::vector<std::string> Sink::received_message_ids() const { return record_field(record_, "/messageId", false); }
std::vector<std::string> Sink::received_bodies() const { return record_field(record_, "", true); }

bool Sink::wait_for(std::size_t n, std::chrono::milliseconds timeout) const {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (received_message_ids().size() >= n) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return received_message_ids().size() >= n;
}

// ---- Broker ----------------------------------------------------------------

Broker::Broker(const std::filesystem::path& dir, const std::string& config_yaml, unsigned short port)
    : dir_(dir), config_(dir / "tellonce.yaml"), configured_port_(port), port_(port) {
  // Operators to sign in with (issue 12), unless the test brings its own.
  const bool has_operators = config_yaml.starts_with("operators:") || config_yaml.find("\noperators:") != std::string::npos;
  write_file(config_, has_operators ? config_yaml : config_yaml + "\n" + kTestOperatorsYaml);
}

Broker::~Broker() { stop(); }

void Broker::start() {
  ++starts_;
  proc_ = std::make_unique<Process>(
      std::vector<std::string>{tellonce_binary().string(), "serve", "--config", config_.string()},
      dir_ / ("broker-" + std::to_string(starts_) + ".log"));
  auto listening = proc_->wait_for_line("  listening ", std::chrono::seconds(30));
  if (!listening) throw std::runtime_error("broker did not start:\n" + proc_->output());
  if (configured_port_ == 0) port_ = port_at_end(*listening);
  if (!proc_->wait_for_line("pending deliveries resumed", std::chrono::seconds(30)))
    throw std::runtime_error("broker did not start:\n" + proc_->output());
}

int Broker::stop() {
  if (!proc_) return -1;
  int rc = proc_->terminate();
  expect_no_sanitizer_report("broker", proc_->output());
  proc_.reset();
  return rc;
}

void Broker::crash() {
  if (proc_) proc_->kill();
  proc_.reset();
}

std::string Broker::output() const { return proc_ ? proc_->output() : std::string{}; }

// ---- JSON ------------------------------------------------------------------

std::string json_string_at(const std::string& json, const std::string& pointer) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  if (d.HasParseError()) return {};
  const rapidjson::Value* v = rapidjson::Pointer(pointer.c_str()).Get(d);
  if (!v) return {};
  if (v->IsString()) return v->GetString();
  if (v->IsInt64()) return std::to_string(v->GetInt64());
  if (v->IsBool()) return v->GetBool() ? "true" : "false";
  return {};
}

namespace {
std::vector<std::string> outcome_field(const std::string& oo, bool rules) {
  std::vector<std::string> out;
  rapidjson::Document d;
  d.Parse(oo.c_str());
  if (d.HasParseError() || !d.IsObject() || !d.HasMember("issue") || !d["issue"].IsArray()) return out;
  for (auto& i : d["issue"].GetArray()) {
    const rapidjson::Value* v =
        rules ? rapidjson::Pointer("/details/coding/0/code").Get(i) : rapidjson::Pointer("/expression/0").Get(i);
    if (v && v->IsString()) out.emplace_back(v->GetString());
  }
  return out;
}
}  // namespace

std::vector<std::string> outcome_locations(const std::string& oo) { return outcome_field(oo, false); }
std::vector<std::string> outcome_rules(const std::string& oo) { return outcome_field(oo, true); }

std::vector<std::string> stored_message_ids(Client& c, const std::string& base) {
  std::vector<std::string> out;
  auto r = c.request("GET", base + "/api/messages?limit=1000");
  rapidjson::Document d;
  d.Parse(r.body.c_str());
  if (r.status != 200 || d.HasParseError() || !d.IsObject() || !d.HasMember("messages") || !d["messages"].IsArray())
    throw std::runtime_error("GET /api/messages failed: " + std::to_string(r.status) + " " + r.body);
  for (auto& m : d["messages"].GetArray())
    if (m.IsObject() && m.HasMember("id") && m["id"].IsString()) out.emplace_back(m["id"].GetString());
  return out;
}

std::string wait_for_state(Client& c, const std::string& base, const std::string& id, const std::string& state,
                           std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last;
  do {
    auto r = c.request("GET", base + "/api/messages/" + id);
    last = r.body;
    if (r.status == 200 && json_string_at(r.body, "/state") == state) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (std::chrono::steady_clock::now() < deadline);
  return last;
}

}  // namespace tellonce::itest
