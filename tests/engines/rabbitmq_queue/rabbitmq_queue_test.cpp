// The RabbitMQ queue: the Queue contract suite, unchanged, plus what only a broker-backed queue
// has: a job handed out on a connection that dies before its settle is not lost. Runs against the
// server scripts/rabbitmq.sh started for this ctest run (TELLONCE_RABBITMQ_STATE names its state
// folder); each test has queues of its own (a random queue_prefix), deleted afterwards.
#include "queue_contract.hpp"

#include "engines/rabbitmq_queue/rabbitmq_queue.hpp"
#include "support/builders.hpp"
#include "support/run_async.hpp"

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#include <cstdlib>
#include <fstream>
#include <random>

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

}  // namespace tellonce::test
