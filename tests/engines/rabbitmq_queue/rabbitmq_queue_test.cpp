// The RabbitMQ queue: the Queue contract suite, unchanged, plus what only a broker-backed queue
// has: a job handed out on a connection that dies before its settle is not lost; a node that
// takes over a shard keeps its patients' order; two nodes share a destination; the dead-letter
// queue; the queue reconnects by itself after RabbitMQ closed its connection. Runs against the
// server scripts/rabbitmq.sh started for this ctest run (TELLONCE_RABBITMQ_STATE names its state
// folder); each test has queues of its own (a random queue_prefix), deleted afterwards.
#include "queue_contract.hpp"

#include "engines/rabbitmq_queue/rabbitmq_queue.hpp"
#include "support/builders.hpp"
#include "support/run_async.hpp"

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include <boost/asio/co_spawn.hpp>

#include <cstdlib>
#include <map>
#include <set>
#include <fstream>
#include <random>
#include <thread>

namespace tellonce::test {
namespace {

// The AMQP port of the node scripts/rabbitmq.sh started, or 0 when it did not start one.
int server_port() {
  const char* dir = std::getenv("TELLONCE_RABBITMQ_STATE");
  if (!dir) return 0;
  std::ifstream in(std::string(dir) + "/amqp_ports");
  int port = 0;
  in >> port;
  return port;
}

const char* const no_server =
    "no test RabbitMQ: scripts/rabbitmq.sh did not start one (rabbitmq-server absent? install it with "
    "scripts/install-deps.sh; run through ctest)";

const std::vector<std::string> destinations = {"trust-a", "gp-b"};

RabbitQueueSettings settings_for(const std::string& prefix) {
  RabbitQueueSettings s;
  s.port = server_port();
  s.queue_prefix = prefix;
  s.shards = 4;
  return s;
}

// Deletes every queue a test's prefix made (best effort: a queue never declared is skipped).
void delete_queues(const RabbitQueueSettings& s) {
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t* socket = amqp_tcp_socket_new(conn);
  if (amqp_socket_open(socket, s.host.c_str(), s.port) == AMQP_STATUS_OK &&
      amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest").reply_type ==
          AMQP_RESPONSE_NORMAL) {
    std::vector<std::string> names;
    for (auto& d : destinations) {
      for (int i = 0; i < s.shards; ++i) names.push_back(s.queue_prefix + "." + d + ".s" + std::to_string(i));
      names.push_back(s.queue_prefix + "." + d + ".dead");
    }
    amqp_channel_t ch = 1;
    for (auto& n : names) {
      amqp_channel_open(conn, ch);
      amqp_queue_delete(conn, ch, amqp_cstring_bytes(n.c_str()), 0, 0);
      if (amqp_get_rpc_reply(conn).reply_type == AMQP_RESPONSE_NORMAL) amqp_channel_close(conn, ch, AMQP_REPLY_SUCCESS);
      ++ch;  // a channel closed by an error (no such queue) is not reused
    }
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  }
  amqp_destroy_connection(conn);
}

// Ready messages in a queue (a passive declare on a connection of its own); nullopt when it
// does not exist or the server cannot be reached.
std::optional<std::uint32_t> ready_messages(const RabbitQueueSettings& s, const std::string& queue) {
  std::optional<std::uint32_t> count;
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t* socket = amqp_tcp_socket_new(conn);
  if (amqp_socket_open(socket, s.host.c_str(), s.port) == AMQP_STATUS_OK &&
      amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest").reply_type ==
          AMQP_RESPONSE_NORMAL) {
    amqp_channel_open(conn, 1);
    auto* ok = amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue.c_str()), 1, 0, 0, 0, amqp_empty_table);
    if (ok) count = ok->message_count;
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  }
  amqp_destroy_connection(conn);
  return count;
}

// Waits (bounded) until the queue holds `count` ready messages.
bool ready_becomes(const RabbitQueueSettings& s, const std::string& queue, std::uint32_t count) {
  for (int i = 0; i < 100; ++i) {
    if (ready_messages(s, queue) == count) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

std::string random_prefix() {
  std::random_device rd;
  std::string prefix = "t";  // built in steps: g++ 12 warns (-Wrestrict) on "t" + to_string(...)
  prefix += std::to_string(rd());
  prefix += std::to_string(rd());
  return prefix;
}

class RabbitFixture final : public QueueFixture {
 public:
  RabbitFixture() : settings_(settings_for(random_prefix())) {}
  ~RabbitFixture() override {
    if (settings_.port) delete_queues(settings_);
  }
  std::unique_ptr<Queue> open(asio::any_io_executor executor) override {
    return make_rabbitmq_queue(settings_, std::move(executor));
  }
  const RabbitQueueSettings& settings() const { return settings_; }

 private:
  RabbitQueueSettings settings_;
};

}  // namespace

// Without a server the factory makes no fixture, and the contract's cases skip.
INSTANTIATE_TEST_SUITE_P(RabbitMQ, QueueContract,
                         ::testing::Values(QueueKind{"rabbitmq",
                                                     []() -> std::unique_ptr<QueueFixture> {
                                                       if (!server_port()) return nullptr;
                                                       return std::make_unique<RabbitFixture>();
                                                     },
                                                     2000}));

// A job handed out to a node whose connection then dies, before it was settled, is handed out
// again (to the node that consumes the shard next): not lost.
TEST(RabbitQueue, JobNotSettledWhenTheNodeGoesIsHandedOutAgain) {
  if (!server_port()) GTEST_SKIP() << no_server;
  RabbitFixture fixture;
  asio::io_context io;
  auto job = test::job(1, "trust-a", "p1");
  job.body.clear();
  {
    auto first = fixture.open(io.get_executor());
    ASSERT_TRUE(run_async(io, first->push(job)));
    auto taken = run_async(io, first->next("trust-a"));
    ASSERT_TRUE(taken);
    EXPECT_EQ(taken->seq, 1);
    // The node goes without settling: its connection closes with the job un-acknowledged.
  }
  auto second = fixture.open(io.get_executor());
  auto again = run_async(io, second->next("trust-a"));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->delivery_id, 1);
  EXPECT_EQ(again->message_id, "m1");
  EXPECT_EQ(again->patient_key, "p1");
  ASSERT_TRUE(run_async(io, second->settle(*again, Settlement{Settlement::Kind::delivered, 0})));
  second->stop();
  io.restart();
  io.poll();
}


// Built in steps: g++ 12 warns (-Wrestrict) on "p" + std::to_string(...).
std::string patient_name(int n) {
  std::string name = "p";
  name += std::to_string(n);
  return name;
}

DeliveryJob bare(std::int64_t seq, std::string patient, std::string destination = "trust-a") {
  auto j = test::job(seq, std::move(destination), std::move(patient));
  j.body.clear();
  return j;
}

// A job settled dead is copied to PREFIX.DESTINATION.dead and acknowledged: it is in the
// dead-letter queue and no longer in its shard.
TEST(RabbitQueue, DeadJobGoesToTheDeadLetterQueue) {
  if (!server_port()) GTEST_SKIP() << no_server;
  RabbitFixture fixture;
  asio::io_context io;
  auto queue = fixture.open(io.get_executor());
  ASSERT_TRUE(run_async(io, queue->push(bare(1, "p1"))));
  auto taken = run_async(io, queue->next("trust-a"));
  ASSERT_TRUE(taken);
  ASSERT_TRUE(run_async(io, queue->settle(*taken, Settlement{Settlement::Kind::dead, 0})));
  const auto& s = fixture.settings();
  EXPECT_TRUE(ready_becomes(s, s.queue_prefix + ".trust-a.dead", 1));
  queue.reset();  // un-acknowledged jobs would go back to their shard now
  for (int shard = 0; shard < s.shards; ++shard)
    EXPECT_TRUE(ready_becomes(s, s.queue_prefix + ".trust-a.s" + std::to_string(shard), 0)) << shard;
  io.restart();
  io.poll();
}

// The node that consumed a shard goes while one patient's job is backing off: the next node
// gets the shard's jobs back in their order, so the retrying job still comes before the
// patient's later one (early: its backoff was held by the node that went).
TEST(RabbitQueue, NodeTakingOverAShardKeepsThePatientsOrder) {
  if (!server_port()) GTEST_SKIP() << no_server;
  RabbitFixture fixture;
  asio::io_context io;
  auto a = fixture.open(io.get_executor());
  for (auto [seq, patient] : std::vector<std::pair<int, std::string>>{{1, "p1"}, {2, "p1"}, {3, "p2"}})
    ASSERT_TRUE(run_async(io, a->push(bare(seq, patient))));
  ASSERT_TRUE(run_until(io, [&] {
    auto st = a->stats("trust-a");
    return st.ready + st.waiting == 3;
  }));
  auto first = run_async(io, a->next("trust-a"));
  ASSERT_TRUE(first);
  ASSERT_EQ(first->seq, 1);
  ASSERT_TRUE(run_async(io, a->settle(*first, Settlement{Settlement::Kind::retry, now_ms() + 600000})));

  auto b = fixture.open(io.get_executor());
  std::vector<std::int64_t> order;
  auto take_two = [&]() -> asio::awaitable<void> {
    for (int i = 0; i < 2; ++i) {
      auto j = co_await b->next("trust-a");
      if (!j) co_return;
      order.push_back(j->seq);
    }
  };
  asio::co_spawn(io, take_two(), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  test::run_ready(io);
  EXPECT_TRUE(order.empty());  // a's shards: b is not their active consumer while a lives
  a.reset();                   // a goes, its jobs un-acknowledged
  ASSERT_TRUE(run_until(io, [&] { return order.size() == 2; }));
  EXPECT_EQ(order, (std::vector<std::int64_t>{1, 3}));  // 2 waits behind 1
  ASSERT_TRUE(run_until(io, [&] { return b->stats("trust-a").waiting == 1; }));
  ASSERT_TRUE(run_async(io, b->settle(bare(1, "p1"), Settlement{Settlement::Kind::delivered, 0})));
  auto third = run_async(io, b->next("trust-a"));
  ASSERT_TRUE(third);
  EXPECT_EQ(third->seq, 2);
  b->stop();
  io.restart();
  io.poll();
}

// Two nodes take from one destination at once, four workers each: every job is handed out
// once, and each patient's jobs in order, whichever node consumes the patient's shard.
TEST(RabbitQueue, TwoNodesShareADestinationInPatientOrder) {
  if (!server_port()) GTEST_SKIP() << no_server;
  RabbitFixture fixture;
  asio::io_context io;
  auto a = fixture.open(io.get_executor());
  auto b = fixture.open(io.get_executor());
  constexpr int count = 1000;
  std::map<std::string, std::int64_t> last_seq;
  std::set<std::int64_t> seen;
  bool in_order = true;
  bool twice = false;
  auto worker = [&](Queue& q) -> asio::awaitable<void> {
    while (seen.size() < count) {
      auto j = co_await q.next("trust-a");
      if (!j) co_return;
      if (!seen.insert(j->delivery_id).second) twice = true;
      auto& last = last_seq[j->patient_key];
      if (j->seq <= last) in_order = false;
      last = j->seq;
      (void)co_await q.settle(*j, Settlement{Settlement::Kind::delivered, 0});
    }
  };
  auto rethrow = [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  };
  for (int i = 0; i < 4; ++i) {
    asio::co_spawn(io, worker(*a), rethrow);
    asio::co_spawn(io, worker(*b), rethrow);
  }
  auto push_all = [&]() -> asio::awaitable<bool> {
    for (int i = 1; i <= count; ++i)
      if (!co_await (i % 2 ? a : b)->push(bare(i, patient_name(i % 53)))) co_return false;
    co_return true;
  };
  ASSERT_TRUE(run_async(io, push_all(), std::chrono::seconds(60)));
  ASSERT_TRUE(run_until(io, [&] { return seen.size() == count; }, std::chrono::seconds(60)));
  EXPECT_TRUE(in_order);
  EXPECT_FALSE(twice);
  a->stop();
  b->stop();
  io.restart();
  io.poll();
}

// RabbitMQ closes the queue's connection (a restart, a network blip): the queue reconnects by
// itself (a push meanwhile waits for the new connection, or fails retryably), and a job it held
// across the reconnection is acknowledged under its new delivery tag when settled: nothing is
// left in the shards, and nothing was handed out twice.
TEST(RabbitQueue, ReconnectsAfterTheServerClosedTheConnection) {
  if (!server_port()) GTEST_SKIP() << no_server;
  RabbitFixture fixture;
  asio::io_context io;
  auto queue = fixture.open(io.get_executor());
  ASSERT_TRUE(run_async(io, queue->push(bare(1, "p1"))));
  auto first = run_async(io, queue->next("trust-a"));
  ASSERT_TRUE(first);

  const std::string kick = std::string(TELLONCE_SOURCE_DIR) + "/scripts/rabbitmq.sh kick " +
                           std::getenv("TELLONCE_RABBITMQ_STATE");
  ASSERT_EQ(std::system(kick.c_str()), 0);

  bool pushed = false;
  for (int attempt = 0; attempt < 100 && !pushed; ++attempt) {
    pushed = static_cast<bool>(run_async(io, queue->push(bare(2, "p2"))));
    if (!pushed) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(pushed);
  auto second = run_async(io, queue->next("trust-a"));
  ASSERT_TRUE(second);
  EXPECT_EQ(second->seq, 2);  // job 1 came again, but it is held here already: not twice
  // Job 1 comes again on the new connection (nothing ready in the shards: both are with us).
  const auto& s = fixture.settings();
  for (int shard = 0; shard < s.shards; ++shard)
    ASSERT_TRUE(ready_becomes(s, s.queue_prefix + ".trust-a.s" + std::to_string(shard), 0)) << shard;
  test::run_ready(io);
  EXPECT_EQ(queue->stats("trust-a").in_flight, 2u);
  ASSERT_TRUE(run_async(io, queue->settle(*first, Settlement{Settlement::Kind::delivered, 0})));
  ASSERT_TRUE(run_async(io, queue->settle(*second, Settlement{Settlement::Kind::delivered, 0})));
  queue.reset();  // what was not acknowledged goes back to the shards now
  for (int shard = 0; shard < s.shards; ++shard)
    EXPECT_TRUE(ready_becomes(s, s.queue_prefix + ".trust-a.s" + std::to_string(shard), 0)) << shard;
  io.restart();
  io.poll();
}

}  // namespace tellonce::test
