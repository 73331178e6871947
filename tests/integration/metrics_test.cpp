// The real broker's operations endpoints: /metrics (checked by promtool), /healthz, /readyz,
// /api/flow and JSON logs, while records flow to a live partner and to one that is down.
#include "harness.hpp"
#include "records.hpp"

#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <sys/wait.h>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// The value of one series in a scrape ("name{labels}"), or -1 when it is not there.
double series(const std::string& scrape, const std::string& name) {
  std::istringstream in(scrape);
  for (std::string line; std::getline(in, line);)
    if (line.starts_with(name + " ")) return std::stod(line.substr(name.size() + 1));
  return -1;
}

// Runs a command with `input` on its stdin; its exit status and what it wrote (stdout+stderr).
std::pair<int, std::string> run_with_input(const std::string& command, const fs::path& input) {
  std::string out;
  FILE* p = popen((command + " < '" + input.string() + "' 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed"};
  char buf[4096];
  while (auto n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string promtool() {
  for (const char* p : {"/usr/bin/promtool", "/usr/local/bin/promtool"})
    if (fs::exists(p)) return p;
  return {};
}

// Every tellonce_* metric name an ops/ file uses, without the histogram series suffixes.
std::set<std::string> names_used_in(const fs::path& file) {
  const auto text = read_file(file);
  std::set<std::string> names;
  std::regex name("tellonce_[a-z_]+");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), name); it != std::sregex_iterator(); ++it) {
    auto n = it->str();
    for (const char* suffix : {"_bucket", "_sum", "_count"})
      if (n.ends_with(suffix) && n.find("_seconds") != std::string::npos) n.resize(n.size() - std::strlen(suffix));
    names.insert(n);
  }
  return names;
}

std::set<std::string> names_exposed(const std::string& scrape) {
  std::set<std::string> names;
  std::istringstream in(scrape);
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("# TYPE ")) names.insert(line.substr(7, line.find(' ', 7) - 7));
  return names;
}

std::uint64_t sum_of(const rapidjson::Value& array) {
  std::uint64_t total = 0;
  for (const auto& v : array.GetArray()) total += v.GetUint64();
  return total;
}

TEST(Metrics, ScrapeOfARunningBrokerCountsWhatHappenedAndPassesPromtool) {
  const auto checker = promtool();
  ASSERT_FALSE(checker.empty()) << "promtool not found: scripts/install-deps.sh installs Debian's prometheus package";
  TempDir dir;
  // The partner refuses its first record for good (HTTP 400): a dead letter, and a log line about it.
  Sink gp(dir.path(), "gp-a", 0, {"--fail-status", "400", "--fail-first", "1"});
  Broker broker(dir.path(), one_route_config(gp.port()) + "log:\n  format: json\n");
  broker.start();
  Client client;
  const auto url = broker.base() + "/fhir/Patient";

  auto before = client.request("GET", broker.base() + "/metrics");
  ASSERT_EQ(before.status, 200) << before.body;
  EXPECT_EQ(before.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(series(before.body, "tellonce_dead_letters_total{destination=\"gp-a\"}"), 0);
  EXPECT_EQ(series(before.body, "tellonce_destination_queue_depth{destination=\"gp-a\"}"), 0);

  std::vector<std::string> sent_nhs, sent_ids;
  for (int i = 0; i < 3; ++i) {
    sent_nhs.push_back(nhs_number(i + 1));
    auto r = client.post_fhir(url, patient(sent_nhs.back(), "A81001"), "rtx");
    ASSERT_EQ(r.status, 202) << r.body;
    sent_ids.push_back(r.headers["x-tellonce-message-id"]);
  }
  const auto bad_nhs = nhs_number(9).substr(0, 9) + (nhs_number(9).back() == '0' ? "1" : "0");
  ASSERT_EQ(client.post_fhir(url, patient(bad_nhs, "A81001"), "rtx").status, 422);
  auto fourth = client.post_fhir(url, patient(nhs_number(4), "A81001"), "rtx", {"Idempotency-Key: k-1"});
  ASSERT_EQ(fourth.status, 202) << fourth.body;
  sent_ids.push_back(fourth.headers["x-tellonce-message-id"]);
  ASSERT_EQ(client.post_fhir(url, patient(nhs_number(4), "A81001"), "rtx", {"Idempotency-Key: k-1"}).status, 200);
  sent_nhs.push_back(nhs_number(4));
  ASSERT_TRUE(gp.wait_for(3, 10s));  // the refused one is not counted

  // The delivery is counted once the attempt is on the trail, just after the sink saw it.
  std::string scrape;
  const std::string ok = "tellonce_delivery_attempts_total{destination=\"gp-a\",outcome=\"ok\"}";
  const std::string refused = "tellonce_delivery_attempts_total{destination=\"gp-a\",outcome=\"permanent\"}";
  for (auto until = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < until;) {
    scrape = client.request("GET", broker.base() + "/metrics").body;
    if (series(scrape, ok) == 3 && series(scrape, refused) == 1) break;
    std::this_thread::sleep_for(50ms);
  }
  const std::string by = "{channel=\"fhir-http\",partner=\"rtx\"";
  EXPECT_EQ(series(scrape, "tellonce_records_received_total" + by + "}"), 6) << scrape;
  EXPECT_EQ(series(scrape, "tellonce_records_accepted_total" + by + ",resource_type=\"Patient\"}"), 4);
  EXPECT_EQ(series(scrape, "tellonce_records_rejected_total" + by + ",resource_type=\"Patient\",reason_class=\"invalid\"}"), 1);
  EXPECT_EQ(series(scrape, "tellonce_records_duplicate_total" + by + "}"), 1);
  EXPECT_EQ(series(scrape, "tellonce_accept_latency_seconds_count{channel=\"fhir-http\"}"), 6);
  EXPECT_EQ(series(scrape, ok), 3);
  EXPECT_EQ(series(scrape, refused), 1);
  EXPECT_EQ(series(scrape, "tellonce_dead_letters_total{destination=\"gp-a\"}"), 1);
  EXPECT_EQ(series(scrape, "tellonce_delivery_latency_seconds_count{destination=\"gp-a\"}"), 3);
  EXPECT_GT(series(scrape, "tellonce_store_size_bytes"), 0);
  EXPECT_NE(scrape.find("tellonce_build_info{version=\""), std::string::npos);

  const auto file = dir.path() / "scrape.prom";
  write_file(file, scrape);
  auto [status, said] = run_with_input(checker + " check metrics", file);
  EXPECT_EQ(status, 0) << said;
  EXPECT_EQ(said, "") << said;

  // The dashboard and the alert rules use only names the broker exposes.
  const auto exposed = names_exposed(scrape);
  for (const auto& ops_file : {source_dir() / "ops/grafana/tellonce-dashboard.json",
                               source_dir() / "ops/prometheus/tellonce-alerts.yml"}) {
    const auto used = names_used_in(ops_file);
    EXPECT_GE(used.size(), 4u) << ops_file;
    for (const auto& name : used) EXPECT_TRUE(exposed.count(name)) << name << " in " << ops_file << " is not exposed";
  }

  auto healthz = client.request("GET", broker.base() + "/healthz");
  EXPECT_EQ(healthz.status, 200);
  auto readyz = client.request("GET", broker.base() + "/readyz");
  EXPECT_EQ(readyz.status, 200) << readyz.body;
  EXPECT_EQ(json_string_at(readyz.body, "/status"), "ready");
  EXPECT_EQ(client.request("GET", broker.base() + "/api/health").status, 200);

  auto flow = client.request("GET", broker.base() + "/api/flow");
  ASSERT_EQ(flow.status, 200);
  rapidjson::Document doc;
  ASSERT_FALSE(doc.Parse(flow.body.c_str()).HasParseError()) << flow.body;
  EXPECT_EQ(doc["minuteStarts"].Size(), 15u);
  // Sent within the last minute or two: all in the window.
  EXPECT_EQ(sum_of(doc["in"]["fhir-http"]["accepted"]), 4u) << flow.body;
  EXPECT_EQ(sum_of(doc["in"]["fhir-http"]["rejected"]), 1u);
  EXPECT_EQ(sum_of(doc["out"]["gp-a"]["delivered"]), 3u);
  EXPECT_EQ(sum_of(doc["out"]["gp-a"]["failed"]), 1u);
  ASSERT_GE(doc["topRejections"].Size(), 1u);
  EXPECT_STREQ(doc["topRejections"][0]["reason"].GetString(), "uk-nhs-number");

  ASSERT_EQ(broker.stop(), 0);
  // log.format: json: every log line is one JSON object; the rejection names its partner, the
  // dead letter its message, partner and event.
  const auto output = read_file(dir.path() / "broker-1.log");  // the harness's log of the first start
  std::istringstream lines(output);
  int json_lines = 0;
  bool rejection_seen = false, dead_letter_seen = false;
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with("{")) continue;  // the banner on stdout
    rapidjson::Document entry;
    ASSERT_FALSE(entry.Parse(line.c_str()).HasParseError()) << line;
    ASSERT_TRUE(entry.HasMember("time") && entry.HasMember("level") && entry.HasMember("component") &&
                entry.HasMember("message"))
        << line;
    ++json_lines;
    if (std::string(entry["message"].GetString()).starts_with("rejected record")) {
      rejection_seen = true;
      EXPECT_STREQ(entry["partner"].GetString(), "rtx") << line;
      EXPECT_STREQ(entry["channel"].GetString(), "fhir-http") << line;
      EXPECT_STREQ(entry["event"].GetString(), "record.rejected") << line;
    }
    if (entry.HasMember("event") && entry["event"] == "delivery.dead") {
      dead_letter_seen = true;
      EXPECT_STREQ(entry["level"].GetString(), "error") << line;
      EXPECT_TRUE(std::string(entry["time"].GetString()).ends_with("Z")) << line;
      ASSERT_TRUE(entry.HasMember("messageId") && entry.HasMember("partner")) << line;
      EXPECT_NE(std::find(sent_ids.begin(), sent_ids.end(), entry["messageId"].GetString()), sent_ids.end()) << line;
      EXPECT_STREQ(entry["partner"].GetString(), "gp-a") << line;  // the partner that refused it
      EXPECT_STREQ(entry["destination"].GetString(), "gp-a") << line;
    }
  }
  EXPECT_GT(json_lines, 2) << output;
  EXPECT_TRUE(rejection_seen) << output;
  EXPECT_TRUE(dead_letter_seen) << output;
  // Never patient data: no NHS number, birth date or name, nor any of a body.
  sent_nhs.push_back(bad_nhs);
  for (const auto& nhs : sent_nhs) EXPECT_EQ(output.find(nhs), std::string::npos) << "an NHS number reached the log";
  for (const char* data : {"1980-04-12", "Alex", "\"resourceType\":\"Patient\""})
    EXPECT_EQ(output.find(data), std::string::npos) << data << " reached the log";
}

// A destination that is down: its queue depth and oldest age rise, retries are counted; a
// store that cannot write makes /readyz answer 503 saying so.
TEST(Metrics, BacklogOfADownDestinationAndReadinessOfAFullStore) {
  TempDir dir;
  ReservedPort down;  // nothing listens: every attempt fails and is retried
  Broker broker(dir.path(), one_route_config(down, "  retry: { keep_trying_for: 1h, initial_backoff: 100ms, max_backoff: 200ms }\n",
                                             "  max_size: 640KB\n"));
  broker.start();
  Client client;
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(client.post_fhir(broker.base() + "/fhir/Patient", patient(nhs_number(i + 1), "A81001"), "rtx").status, 202);
  std::this_thread::sleep_for(1500ms);  // the oldest record is over a second old

  auto scrape = client.request("GET", broker.base() + "/metrics").body;
  EXPECT_EQ(series(scrape, "tellonce_destination_queue_depth{destination=\"gp-a\"}"), 5) << scrape;
  EXPECT_GE(series(scrape, "tellonce_destination_oldest_undelivered_age_seconds{destination=\"gp-a\"}"), 1.0);
  EXPECT_GT(series(scrape, "tellonce_delivery_retries_total{destination=\"gp-a\"}"), 0);
  EXPECT_GT(series(scrape, "tellonce_delivery_attempts_total{destination=\"gp-a\",outcome=\"retryable\"}"), 0);
  EXPECT_EQ(series(scrape, "tellonce_delivery_latency_seconds_count{destination=\"gp-a\"}"), -1);  // none delivered

  long last = 202;
  for (int i = 0; i < 3000 && last == 202; ++i)
    last = client.post_fhir(broker.base() + "/fhir/Patient", patient(nhs_number(i + 100), "A81001"), "rtx").status;
  ASSERT_EQ(last, 503) << "the store never filled up";
  auto readyz = client.request("GET", broker.base() + "/readyz");
  EXPECT_EQ(readyz.status, 503) << readyz.body;
  EXPECT_EQ(json_string_at(readyz.body, "/status"), "not ready");
  EXPECT_NE(json_string_at(readyz.body, "/problems/0").find("store: "), std::string::npos) << readyz.body;
  EXPECT_EQ(client.request("GET", broker.base() + "/healthz").status, 200);  // alive all the same
  scrape = client.request("GET", broker.base() + "/metrics").body;
  EXPECT_GE(series(scrape, "tellonce_records_rejected_total{channel=\"fhir-http\",partner=\"rtx\",resource_type=\"Patient\",reason_class=\"unavailable\"}"), 1);
  ASSERT_EQ(broker.stop(), 0);
}

// A broker that has begun to stop: /readyz answers 503 saying so (so that a load balancer stops
// sending before the listener goes away). New connections are refused by then, so the probe is
// one already on its way: its header read before SIGTERM (the broker answers 100 Continue, and the
// stop lets a busy connection finish), its one-byte body sent after the broker says it is stopping.
TEST(Metrics, ReadinessIsNotReadyOnceTheBrokerIsStopping) {
  TempDir dir;
  ReservedPort down;  // no records are sent: the destination is never tried
  Broker broker(dir.path(), one_route_config(down));
  broker.start();
  Client client;
  auto before = client.request("GET", broker.base() + "/readyz");
  ASSERT_EQ(before.status, 200) << before.body;
  const auto port = static_cast<unsigned short>(std::stoi(broker.base().substr(broker.base().rfind(':') + 1)));

  RawConnection held(port);
  ASSERT_TRUE(held.send_all("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"));
  ASSERT_NE(held.read_until("\r\n\r\n").find("100 Continue"), std::string::npos);
  broker.process().signal(SIGTERM);
  // Logged just after the broker marks itself stopping (Broker::begin_shutdown).
  const std::string stopping = "stopping: no new connections";
  for (auto until = std::chrono::steady_clock::now() + 20s;
       broker.output().find(stopping) == std::string::npos && std::chrono::steady_clock::now() < until;)
    std::this_thread::sleep_for(20ms);
  ASSERT_NE(broker.output().find(stopping), std::string::npos) << broker.output();

  ASSERT_TRUE(held.send_all("x"));
  const std::string answer = held.read_to_end();
  EXPECT_EQ(answer.rfind("HTTP/1.1 503", 0), 0u) << answer;
  const auto blank = answer.find("\r\n\r\n");
  const std::string body = blank == std::string::npos ? std::string() : answer.substr(blank + 4);
  EXPECT_EQ(json_string_at(body, "/status"), "not ready") << answer;
  EXPECT_EQ(json_string_at(body, "/problems/0"), "broker: stopping, not taking new records") << answer;
  EXPECT_EQ(json_string_at(body, "/problems/1"), "") << answer;  // the store and the listeners are fine
  EXPECT_EQ(broker.process().wait_exit(30s), 0) << broker.output();
}

}  // namespace
}  // namespace tellonce::itest
