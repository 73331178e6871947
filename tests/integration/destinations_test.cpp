// A destination's health on the real broker (issue 11): retrying, then failing, in words, while
// its partner refuses, and ok once it answers; the bounded excerpt of a partner's long answer in
// a message's detail; `tellonce destinations` and `tellonce replay --dry-run` run as an operator would.
#include "harness.hpp"
#include "records.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <thread>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// A partner's FHIR endpoint of the test's own, so it can answer what demo-sink cannot: a long
// body, after a delay, and a different answer from one moment to the next. One connection at a
// time on a thread; each is answered and closed.
class Partner {
 public:
  Partner(int status, std::string body, std::chrono::milliseconds delay = 0ms)
      : status_(status), body_(std::move(body)), delay_(delay) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 64) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("the test partner cannot listen");
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~Partner() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  unsigned short port() const { return port_; }
  // From the next request on.
  void answer(int status, std::string body, std::chrono::milliseconds delay = 0ms) {
    std::lock_guard lock(mu_);
    status_ = status;
    body_ = std::move(body);
    delay_ = delay;
  }
  int requests() const { return requests_; }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      timeval two_seconds{2, 0};
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &two_seconds, sizeof two_seconds);
      if (read_request(c)) respond(c);
      ::close(c);
    }
  }

  // The request's head, then as many body bytes as its Content-Length says (the broker's client
  // sends one). False: the client went away first.
  static bool read_request(int c) {
    std::string in;
    char buf[8192];
    std::size_t head_end = std::string::npos, need = 0;
    for (;;) {
      if (head_end != std::string::npos && in.size() >= head_end + 4 + need) return true;
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) return false;
      in.append(buf, static_cast<std::size_t>(n));
      if (head_end == std::string::npos && (head_end = in.find("\r\n\r\n")) != std::string::npos) {
        std::string head = in.substr(0, head_end);
        for (auto& ch : head) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        if (auto at = head.find("\r\ncontent-length:"); at != std::string::npos)
          need = std::strtoul(head.c_str() + at + 17, nullptr, 10);
      }
    }
  }

  void respond(int c) {
    int status;
    std::string body;
    std::chrono::milliseconds delay;
    {
      std::lock_guard lock(mu_);
      status = status_;
      body = body_;
      delay = delay_;
    }
    ++requests_;
    std::this_thread::sleep_for(delay);
    std::string out = "HTTP/1.1 " + std::to_string(status) + (status < 300 ? " Created" : " Refused") +
                      "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
                      "\r\nConnection: close\r\n\r\n" + body;
    for (std::size_t sent = 0; sent < out.size();) {
      ssize_t n = ::send(c, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += static_cast<std::size_t>(n);
    }
  }

  int fd_ = -1;
  unsigned short port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::mutex mu_;
  int status_;
  std::string body_;
  std::chrono::milliseconds delay_{0};
  std::thread thread_;
};

// gp-a's entry in GET /api/destinations: its status and statusText.
std::pair<std::string, std::string> health(Client& c, const std::string& base) {
  auto r = c.request("GET", base + "/api/destinations");
  return {json_string_at(r.body, "/0/status"), json_string_at(r.body, "/0/statusText")};
}

TEST(DestinationsIntegration, HealthIsRetryingThenFailingInWordsWhileThePartnerRefusesAndOkOnceItAnswers) {
  TempDir dir;
  // Each refusal takes 300 ms, so a probe is in flight half the time: the word must not follow it.
  Partner partner(503, "down for maintenance", 300ms);
  Broker broker(dir.path(), one_route_config(partner.port(),
                                             "  failing_after: 3s\n"
                                             "  retry: { keep_trying_for: 1h, initial_backoff: 200ms, max_backoff: 300ms }\n"));
  broker.start();
  Client client;
  EXPECT_EQ(health(client, broker.base()), std::make_pair(std::string("ok"), std::string("delivering; nothing waiting")));

  auto sent = client.post_fhir(broker.base() + "/fhir/Patient", patient(nhs_number(31), "A81001"), "rtx");
  ASSERT_EQ(sent.status, 202) << sent.body;
  const auto posted = std::chrono::steady_clock::now();
  // Every status seen, in order, until failing.
  std::vector<std::string> seen;
  std::string retrying_text, failing_text;
  while (std::chrono::steady_clock::now() < posted + 15s) {
    auto [status, text] = health(client, broker.base());
    if (seen.empty() || seen.back() != status) seen.push_back(status);
    if (status == "retrying") retrying_text = text;
    if (status == "failing") {
      failing_text = text;
      break;
    }
    std::this_thread::sleep_for(25ms);
  }
  const auto failing_after = std::chrono::steady_clock::now() - posted;
  if (!seen.empty() && seen.front() == "ok") seen.erase(seen.begin());  // the first attempt in flight
  ASSERT_EQ(seen, (std::vector<std::string>{"retrying", "failing"}));
  EXPECT_GE(failing_after, 3s);  // not before failing_after
  EXPECT_NE(retrying_text.find("did not take the last record"), std::string::npos) << retrying_text;
  EXPECT_NE(retrying_text.find("(last: HTTP 503: down for maintenance)"), std::string::npos) << retrying_text;
  const auto at = failing_text.find("has taken no record for ");
  ASSERT_NE(at, std::string::npos) << failing_text;
  EXPECT_GE(std::atoi(failing_text.c_str() + at + 24), 3) << failing_text;  // "3 s", or more on a busy machine
  EXPECT_NE(failing_text.find("(last: HTTP 503: down for maintenance)"), std::string::npos) << failing_text;

  // Still failing while probes come and go.
  const int requests = partner.requests();
  for (auto until = std::chrono::steady_clock::now() + 2s; std::chrono::steady_clock::now() < until;) {
    EXPECT_EQ(health(client, broker.base()).first, "failing");
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_GE(partner.requests(), requests + 1) << "no probe was sent meanwhile";

  partner.answer(201, "");
  std::string status;
  for (auto until = std::chrono::steady_clock::now() + 10s; status != "ok" && std::chrono::steady_clock::now() < until;
       std::this_thread::sleep_for(25ms))
    status = health(client, broker.base()).first;
  EXPECT_EQ(status, "ok");
  const std::string id = sent.headers["x-tellonce-message-id"];
  EXPECT_EQ(json_string_at(wait_for_state(client, broker.base(), id, "delivered", 10s), "/state"), "delivered");
  auto listed = client.request("GET", broker.base() + "/api/destinations");
  EXPECT_EQ(json_string_at(listed.body, "/0/statusText"), "delivering; nothing waiting") << listed.body;
  EXPECT_EQ(json_string_at(listed.body, "/0/lastError"), "HTTP 503: down for maintenance") << listed.body;
}

TEST(DestinationsIntegration, AFailedAttemptKeepsABoundedExcerptOfThePartnersLongAnswer) {
  TempDir dir;
  std::string answer = "Service unavailable: ";
  for (int i = 0; answer.size() < 4000; ++i) answer += "line " + std::to_string(i) + " of a stack trace; ";
  Partner partner(503, answer);
  Broker broker(dir.path(),
                one_route_config(partner.port(), "  retry: { keep_trying_for: 1h, initial_backoff: 1s, max_backoff: 1s }\n"));
  broker.start();
  Client client;
  auto sent = client.post_fhir(broker.base() + "/fhir/Patient", patient(nhs_number(32), "A81001"), "rtx");
  ASSERT_EQ(sent.status, 202) << sent.body;
  const std::string url = broker.base() + "/api/messages/" + sent.headers["x-tellonce-message-id"];

  rapidjson::Document view;
  for (auto until = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < until;
       std::this_thread::sleep_for(50ms)) {
    auto r = client.request("GET", url);
    ASSERT_EQ(r.status, 200) << r.body;
    ASSERT_FALSE(view.Parse(r.body.c_str()).HasParseError()) << r.body;
    if (view["attempts"].Size() > 0) break;
  }
  ASSERT_GE(view["attempts"].Size(), 1u);
  const auto& attempt = view["attempts"][0];
  EXPECT_STREQ(attempt["outcome"].GetString(), "retryable");
  EXPECT_STREQ(attempt["partnerCode"].GetString(), "HTTP 503");
  const std::string excerpt = attempt["excerpt"].GetString();
  EXPECT_GE(excerpt.size(), 100u) << "too little of the answer to read";
  EXPECT_LE(excerpt.size(), 512u);
  EXPECT_EQ(answer.compare(0, excerpt.size(), excerpt), 0) << "not the start of the answer: " << excerpt;
}

struct CliRun {
  int status = -1;
  std::string out, err;
};

// Runs the real `tellonce` CLI against the broker's API with an operator's token file; its exit
// status, stdout and stderr.
CliRun run_cli(const fs::path& dir, const std::string& base, std::vector<std::string> args,
               const std::string& token_path) {
  static int runs = 0;
  const fs::path err = dir / ("cli-" + std::to_string(++runs) + ".err");
  std::string command = "'" + tellonce_binary().string() + "'";
  args.insert(args.end(), {"--api", base, "--token-file", token_path});
  for (const auto& a : args) command += " '" + a + "'";  // none has a quote
  command += " 2>'" + err.string() + "'";
  CliRun run;
  FILE* p = popen(command.c_str(), "r");
  if (!p) return run;
  char buf[4096];
  while (auto n = fread(buf, 1, sizeof buf, p)) run.out.append(buf, n);
  const int status = pclose(p);
  run.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  run.err = read_file(err);
  return run;
}

// The line of a table that starts with `name`.
std::string row_of(const std::string& table, const std::string& name) {
  std::istringstream in(table);
  for (std::string line; std::getline(in, line);)
    if (line.starts_with(name + " ")) return line;
  return {};
}

TEST(DestinationsIntegration, TheCliListsPausesAndResumesDestinationsAndCountsAReplayDryRun) {
  TempDir dir;
  // The partner refuses the first record for good (HTTP 400): a dead letter to count.
  Sink gp(dir.path(), "gp-a", 0, {"--fail-status", "400", "--fail-first", "1"});
  Broker broker(dir.path(), one_route_config(gp.port()));
  broker.start();
  Client client;
  auto sent = client.post_fhir(broker.base() + "/fhir/Patient", patient(nhs_number(33), "A81001"), "rtx");
  ASSERT_EQ(sent.status, 202) << sent.body;
  const std::string id = sent.headers["x-tellonce-message-id"];
  ASSERT_EQ(json_string_at(wait_for_state(client, broker.base(), id, "failed", 10s), "/state"), "failed");
  const auto base = broker.base();
  const auto operator_token = token_file(dir.path());
  fs::create_directories(dir.path() / "viewer");
  const auto viewer_token = token_file(dir.path() / "viewer", kViewerToken);

  auto listed = run_cli(dir.path(), base, {"destinations"}, operator_token);
  EXPECT_EQ(listed.status, 0) << listed.err;
  EXPECT_TRUE(listed.out.starts_with("DESTINATION ")) << listed.out;
  auto row = row_of(listed.out, "gp-a");
  EXPECT_NE(row.find(" fhir-rest "), std::string::npos) << listed.out;
  // The partner answers: a record it refused for good is a dead letter, not its health.
  EXPECT_NE(row.find(" ok "), std::string::npos) << listed.out;
  EXPECT_NE(row.find("refused for good, a dead letter (last: HTTP 400"), std::string::npos) << listed.out;

  auto dry = run_cli(dir.path(), base, {"replay", "--filter", "state=failed", "--filter", "destination=gp-a", "--dry-run"},
                     operator_token);
  EXPECT_EQ(dry.status, 0) << dry.err;
  EXPECT_EQ(dry.out, "1 dead or expired delivery(ies) match; nothing replayed (dry run)\n");
  auto none = run_cli(dir.path(), base, {"replay", "--filter", "source=nobody", "--dry-run"}, operator_token);
  EXPECT_EQ(none.status, 0) << none.err;
  EXPECT_EQ(none.out, "0 dead or expired delivery(ies) match; nothing replayed (dry run)\n");
  EXPECT_EQ(json_string_at(client.request("GET", base + "/api/messages/" + id).body, "/state"), "failed")
      << "a dry run replayed";

  auto paused = run_cli(dir.path(), base, {"destinations", "pause", "gp-a"}, operator_token);
  EXPECT_EQ(paused.status, 0) << paused.err;
  EXPECT_TRUE(paused.out.starts_with("gp-a: paused - paused by itest-operator via cli:")) << paused.out;
  EXPECT_NE(paused.out.find("; 0 record(s) waiting in order"), std::string::npos) << paused.out;
  row = row_of(run_cli(dir.path(), base, {"destinations"}, operator_token).out, "gp-a");
  EXPECT_NE(row.find(" paused "), std::string::npos) << row;

  // Refusals: a viewer may not resume; no such destination; no name.
  auto viewer = run_cli(dir.path(), base, {"destinations", "resume", "gp-a"}, viewer_token);
  EXPECT_EQ(viewer.status, 1);
  EXPECT_EQ(viewer.out, "");
  EXPECT_NE(viewer.err.find("needs the operator role"), std::string::npos) << viewer.err;
  auto unknown = run_cli(dir.path(), base, {"destinations", "pause", "gp-nowhere"}, operator_token);
  EXPECT_EQ(unknown.status, 1);
  EXPECT_NE(unknown.err.find("no destination named gp-nowhere"), std::string::npos) << unknown.err;
  auto no_name = run_cli(dir.path(), base, {"destinations", "pause"}, operator_token);
  EXPECT_EQ(no_name.status, 2);
  EXPECT_NE(no_name.err.find("usage: tellonce destinations [pause|resume NAME]"), std::string::npos) << no_name.err;
  EXPECT_EQ(json_string_at(client.request("GET", base + "/api/destinations/gp-a").body, "/status"), "paused");

  auto resumed = run_cli(dir.path(), base, {"destinations", "resume", "gp-a"}, operator_token);
  EXPECT_EQ(resumed.status, 0) << resumed.err;
  EXPECT_TRUE(resumed.out.starts_with("gp-a: ok - delivering; nothing waiting")) << resumed.out;
  auto json = run_cli(dir.path(), base, {"destinations", "--json"}, operator_token);
  EXPECT_EQ(json.status, 0) << json.err;
  EXPECT_EQ(json_string_at(json.out, "/0/name"), "gp-a") << json.out;
  EXPECT_EQ(json_string_at(json.out, "/0/status"), "ok") << json.out;
  auto trail = client.request("GET", base + "/api/destinations/gp-a");
  EXPECT_EQ(json_string_at(trail.body, "/trail/0/action"), "resumed") << trail.body;
  EXPECT_EQ(json_string_at(trail.body, "/trail/1/action"), "paused") << trail.body;
}

}  // namespace
}  // namespace tellonce::itest
