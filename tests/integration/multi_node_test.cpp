// Several broker nodes (issue 13): two real `tellonce serve` processes share one PostgreSQL store
// and a 3-node RabbitMQ cluster (scripts/postgres.sh, scripts/rabbitmq.sh, started for this ctest
// run), bench/load/loadgen sends to both, and one part of the system fails under load: a broker
// node killed (-9), a RabbitMQ node stopped, PostgreSQL restarted. Every record answered 202 must
// reach the partner; duplicate deliveries are allowed (at least once) and counted. Each test
// prints its counts (acknowledged, refused, delivered, lost, duplicates).
#include "harness.hpp"
#include "records.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <thread>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::vector<std::string> lines_of(const fs::path& file) {
  std::vector<std::string> out;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

std::string first_line(const fs::path& file) {
  auto lines = lines_of(file);
  return lines.empty() ? "" : lines.front();
}

void script(const std::string& name, const std::string& args) {
  const std::string command = (source_dir() / "scripts" / name).string() + " " + args + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
}

// The servers, a fresh PostgreSQL schema and RabbitMQ queue prefix, a sink, and N broker nodes.
class MultiNode : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto state = env("TELLONCE_MULTINODE_STATE");  // the fixtures' folder: pg/ and rabbitmq/
    pg_state_ = state + "/pg";
    rabbit_state_ = state + "/rabbitmq";
    conninfo_ = first_line(fs::path(pg_state_) / "conninfo");
    rabbit_ports_ = lines_of(fs::path(rabbit_state_) / "amqp_ports");
    if (conninfo_.empty() || rabbit_ports_.size() < 3)
      GTEST_SKIP() << "no PostgreSQL or 3-node RabbitMQ for this run (scripts/postgres.sh, scripts/rabbitmq.sh; "
                      "install postgresql-15 and rabbitmq-server with scripts/install-deps.sh; run through ctest)";
    std::random_device rd;
    name_ = "mn_" + std::to_string(rd() % 1000000000);
    psql("CREATE SCHEMA " + name_);
    sink_ = std::make_unique<Sink>(dir_.path(), "gp-a", sink_port_);
  }
  void TearDown() override {
    nodes_.clear();
    if (!name_.empty()) psql("DROP SCHEMA IF EXISTS " + name_ + " CASCADE");
  }

  void psql(const std::string& sql) {
    const std::string command = "psql \"" + conninfo_ + "\" -qAt -c \"" + sql + "\" >/dev/null 2>&1";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }

  Broker& add_node(int rabbit_node = 1) {
    const auto n = nodes_.size();
    const auto node_dir = dir_.path() / ("node-" + std::to_string(n));
    fs::create_directories(node_dir);
    auto config = one_route_config(sink_port_, "  concurrency_per_destination: 16\n  requeue_unconfirmed_after: 3s\n");
    const std::string sqlite = "store:\n  path: data/tellonce.db\n";
    const auto at = config.find(sqlite);
    EXPECT_NE(at, std::string::npos);
    config.replace(at, sqlite.size(),
                   "store:\n  type: postgresql\n  conninfo: \"" + conninfo_ + " options='-csearch_path=" + name_ +
                       "'\"\n  connect_timeout: 2s\nqueue:\n  type: rabbitmq\n  port: " + rabbit_ports_[rabbit_node - 1] +
                       "\n  queue_prefix: " + name_ + "\n  shards: 4\n");
    nodes_.push_back(std::make_unique<Broker>(node_dir, config));
    nodes_.back()->start();
    return *nodes_.back();
  }

  // bench/load/loadgen against `node` for `seconds`; its acknowledged ids go to acked-N.txt.
  std::unique_ptr<Process> load(Broker& node, int seconds, const std::string& tag) {
    const auto base = node.base();
    return std::make_unique<Process>(
        std::vector<std::string>{TELLONCE_LOADGEN, "--port", base.substr(base.rfind(':') + 1), "--connections", "8",
                                 "--seconds", std::to_string(seconds), "--mix", "patient:3,observation:4,encounter:2",
                                 "--acked", (dir_.path() / ("acked-" + tag + ".txt")).string()},
        dir_.path() / ("loadgen-" + tag + ".log"));
  }

  static void wait_done(Process& p, std::chrono::seconds limit) {
    for (auto end = std::chrono::steady_clock::now() + limit; p.running() && std::chrono::steady_clock::now() < end;)
      std::this_thread::sleep_for(50ms);
    ASSERT_FALSE(p.running()) << p.output();
  }

  std::vector<std::string> acked(const std::string& tag) { return lines_of(dir_.path() / ("acked-" + tag + ".txt")); }
  // Every id the load generators of both nodes were answered 202 for.
  std::set<std::string> acked_by_both() {
    auto from_a = acked("a"), from_b = acked("b");
    std::set<std::string> promised(from_a.begin(), from_a.end());
    promised.insert(from_b.begin(), from_b.end());
    return promised;
  }

  // Waits (up to `limit`) until the sink has every id in `promised`; prints and returns the
  // ones still missing.
  std::vector<std::string> missing_after(const std::set<std::string>& promised, std::chrono::seconds limit,
                                         const std::string& what) {
    std::vector<std::string> missing;
    auto deadline = std::chrono::steady_clock::now() + limit;
    do {
      auto received = sink_->received_message_ids();
      std::set<std::string> have(received.begin(), received.end());
      missing.clear();
      for (const auto& id : promised)
        if (!have.count(id)) missing.push_back(id);
      if (missing.empty()) break;
      std::this_thread::sleep_for(200ms);
    } while (std::chrono::steady_clock::now() < deadline);
    auto received = sink_->received_message_ids();
    const std::set<std::string> unique(received.begin(), received.end());
    std::cout << what << ": acknowledged " << promised.size() << ", delivered " << unique.size() << ", lost "
              << missing.size() << ", duplicate deliveries " << received.size() - unique.size() << "\n";
    RecordProperty("acknowledged", static_cast<int>(promised.size()));
    RecordProperty("lost", static_cast<int>(missing.size()));
    RecordProperty("duplicates", static_cast<int>(received.size() - unique.size()));
    return missing;
  }

  TempDir dir_;
  ReservedPort sink_port_;
  std::string pg_state_, rabbit_state_, conninfo_, name_;
  std::vector<std::string> rabbit_ports_;
  std::unique_ptr<Sink> sink_;
  std::vector<std::unique_ptr<Broker>> nodes_;
};

// A node killed while both take records: every record either node answered 202 arrives, the
// killed node's unfinished deliveries among them (RabbitMQ hands its un-acknowledged jobs to the
// other node; what it committed but never saw confirmed is swept by the other node), and the
// surviving node answers for the killed node's records.
TEST_F(MultiNode, KillingOneNodeUnderLoadLosesNoAcknowledgedRecord) {
  auto& a = add_node();
  auto& b = add_node();
  auto load_a = load(a, 30, "a");
  auto load_b = load(b, 5, "b");
  std::this_thread::sleep_for(1500ms);
  a.crash();
  wait_done(*load_a, 20s);
  wait_done(*load_b, 30s);
  auto from_a = acked("a"), from_b = acked("b");
  ASSERT_FALSE(from_a.empty()) << "node a accepted nothing before the kill: " << load_a->output();
  ASSERT_FALSE(from_b.empty()) << load_b->output();
  std::set<std::string> promised(from_a.begin(), from_a.end());
  promised.insert(from_b.begin(), from_b.end());
  EXPECT_EQ(missing_after(promised, 90s, "node killed"), std::vector<std::string>{});

  // Nothing stays pending: also not a record node a committed but was killed before RabbitMQ
  // confirmed its job (its client never heard 202; a resend would be answered as a duplicate),
  // which node b's sweep queues after requeue_unconfirmed_after (3 s here).
  Client client;
  HttpReply waiting;
  for (auto end = std::chrono::steady_clock::now() + 60s; std::chrono::steady_clock::now() < end;) {
    waiting = client.request("GET", b.base() + "/api/messages?state=delivering&limit=5");
    if (waiting.status == 200 && json_string_at(waiting.body, "/messages/0/id").empty()) break;
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(waiting.status, 200) << waiting.body;
  EXPECT_EQ(json_string_at(waiting.body, "/messages/0/id"), "") << "still delivering: " << waiting.body;

  // Node b answers for a record node a accepted: stored once, delivered.
  auto view = client.request("GET", b.base() + "/api/messages/" + from_a.back());
  ASSERT_EQ(view.status, 200) << view.body;
  EXPECT_EQ(json_string_at(view.body, "/state"), "delivered") << view.body;
}

// Pause and resume are the same on every node. Node a started first, so it is the active
// consumer of the destination's shards: paused through node b, node a stops delivering too
// (within its poll of the store, 2 s); resumed through node a, the records arrive.
TEST_F(MultiNode, PauseAndResumeThroughOneNodeHoldOnEveryNode) {
  auto& a = add_node();
  auto& b = add_node();
  Client client;
  auto paused = client.request("POST", b.base() + "/api/destinations/gp-a/pause");
  ASSERT_EQ(paused.status, 200) << paused.body;
  std::this_thread::sleep_for(3s);  // node b's poll
  for (auto* node : {&a, &b}) {
    auto shown = client.request("GET", node->base() + "/api/destinations/gp-a");
    EXPECT_NE(shown.body.find("\"paused\":true"), std::string::npos) << shown.body;
  }
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    auto& node = i % 2 ? b : a;
    auto sent = client.post_fhir(node.base() + "/fhir/Patient", patient(nhs_number(10 + i), "A81001"), "rtx");
    ASSERT_EQ(sent.status, 202) << sent.body;
    ids.push_back(sent.headers["x-tellonce-message-id"]);
  }
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(sink_->received_message_ids().size(), 0u) << "delivered while paused";
  auto resumed = client.request("POST", a.base() + "/api/destinations/gp-a/resume");
  ASSERT_EQ(resumed.status, 200) << resumed.body;
  EXPECT_EQ(missing_after(std::set<std::string>(ids.begin(), ids.end()), 30s, "paused then resumed"),
            std::vector<std::string>{});
}

// Node a's RabbitMQ node goes away: its pushes fail after the publish retries, but the records
// are committed, so they are answered 202. Node b's sweep finds them (pending, never confirmed
// queued) and queues them through its own RabbitMQ node; node a is never restarted.
TEST_F(MultiNode, RecordsWhosePushFailedAreQueuedByAnotherNodesSweep) {
  auto& a = add_node(3);
  auto& b = add_node(1);
  (void)b;
  script("rabbitmq.sh", "halt " + rabbit_state_ + " 3");
  std::set<std::string> promised;
  {
    auto load_a = load(a, 4, "a");
    wait_done(*load_a, 60s);
    auto from_a = acked("a");
    promised.insert(from_a.begin(), from_a.end());
  }
  ASSERT_GT(promised.size(), 0u) << "node a answered nothing while its RabbitMQ node was away";
  auto missing = missing_after(promised, 60s, "pushes refused on node a");
  script("rabbitmq.sh", "resume " + rabbit_state_ + " 3");
  EXPECT_EQ(missing, std::vector<std::string>{});
}

// One of the three RabbitMQ nodes stops while both brokers take records: the quorum queues keep
// a majority and carry on; nothing acknowledged is lost. The node comes back afterwards.
TEST_F(MultiNode, StoppingOneRabbitMqNodeUnderLoadLosesNothing) {
  auto& a = add_node();
  auto& b = add_node();
  auto load_a = load(a, 6, "a");
  auto load_b = load(b, 6, "b");
  std::this_thread::sleep_for(1500ms);
  script("rabbitmq.sh", "halt " + rabbit_state_ + " 3");
  wait_done(*load_a, 60s);
  wait_done(*load_b, 60s);
  const auto promised = acked_by_both();
  ASSERT_GT(promised.size(), 0u);
  auto missing = missing_after(promised, 90s, "RabbitMQ node stopped");
  script("rabbitmq.sh", "resume " + rabbit_state_ + " 3");
  EXPECT_EQ(missing, std::vector<std::string>{});
}

// PostgreSQL restarts while both brokers take records: records are refused (503) while it is
// away, none acknowledged is lost, and both nodes take records again by themselves.
TEST_F(MultiNode, RestartingPostgresUnderLoadRefusesWhileAwayAndLosesNothing) {
  auto& a = add_node();
  auto& b = add_node();
  auto load_a = load(a, 8, "a");
  auto load_b = load(b, 8, "b");
  std::this_thread::sleep_for(1500ms);
  script("postgres.sh", "halt " + pg_state_);
  Client client;
  auto refused = client.post_fhir(a.base() + "/fhir/Patient",
                                  patient(nhs_number(1), "A81001"), "rtx");
  EXPECT_EQ(refused.status, 503) << refused.body;
  std::this_thread::sleep_for(1500ms);
  script("postgres.sh", "resume " + pg_state_);
  wait_done(*load_a, 60s);
  wait_done(*load_b, 60s);
  const auto promised = acked_by_both();
  ASSERT_GT(promised.size(), 0u);
  EXPECT_EQ(missing_after(promised, 90s, "PostgreSQL restarted"), std::vector<std::string>{});
  // Both take records again.
  for (auto* node : {&a, &b}) {
    auto again = client.post_fhir(node->base() + "/fhir/Patient",
                                  patient(nhs_number(2), "A81001"), "rtx");
    EXPECT_EQ(again.status, 202) << again.body;
  }
}

}  // namespace
}  // namespace tellonce::itest
