// `queue.type: rabbitmq`: the delivery Queue (tellonce/queue.hpp) on RabbitMQ quorum queues, so
// that several broker nodes share one queue and any of them may fail. Client: rabbitmq-c
// (Debian's librabbitmq), a blocking library, so each queue runs one thread of its own that owns
// the AMQP connection; coroutines hand it work and are resumed on their own executor.
//
// Topology, per destination D (names start with `queue_prefix`, default "tellonce"):
//   PREFIX.D.sN   N = 0..shards-1: durable quorum queues (x-queue-type: quorum) with
//                 x-single-active-consumer, so at any time one node consumes a shard.
//   PREFIX.D.dead durable quorum queue: a copy of every job settled dead (the dead-letter queue).
// A job goes to shard fnv1a(patient_key) % shards (no patient: by delivery id), so one patient's
// jobs for one destination are in one queue, in push order, consumed by one node.
//
// push: publishes the job (its ids, seq and times; never the body or anything about the
// patient but the ordering key) as a persistent message on a channel in confirm mode, and
// completes once RabbitMQ confirmed it (a quorum queue confirms once a majority of its replicas
// has it). A nack, a lost connection or stop(): Errc::unavailable, retryable.
//
// Consuming: the first push(D) or next(D) subscribes to D's shards (manual acknowledgement, `prefetch`
// un-acknowledged jobs per shard). What arrives goes into a local in-process queue (the memory
// queue), which applies the seam's rules among the jobs this node holds: seq order, one job of a
// patient at a time, not_before times. A job is acknowledged to RabbitMQ only at settle:
//   delivered   ack;
//   dead        publish a copy to PREFIX.D.dead, wait for its confirm, then ack;
//   retry       no ack: the job stays un-acknowledged here, on a local timer until retry_at_ms,
//               and the patient's later jobs, also un-acknowledged, wait behind it.
// Why the backoff is held by the shard's consumer rather than in a TTL delay queue dead-lettered
// back to the shard: a job coming back from a delay queue lands at the tail of its shard, behind
// the patient's later jobs, which the consumer would then have to park un-acknowledged while the
// retry waits in RabbitMQ: if the consumer node dies in between, the next active consumer knows
// nothing of the hold and sends the later jobs first; and parked jobs fill the prefetch window
// during a partner's outage until the returning retries can no longer be delivered. Held
// un-acknowledged, a retrying job and the jobs behind it go back to the shard in their original
// order if the node dies (RabbitMQ requeues un-acknowledged messages of a closed channel ahead
// of the rest), and the single active consumer that takes over sees them in order.
// The cost: RabbitMQ's consumer_timeout (default 30 min) must be longer than `retry.max_backoff`
// (default 5 min), or RabbitMQ closes the channel and the jobs are redelivered early (delivered
// at least once, still in order); and at most `prefetch` jobs of a shard wait on one node.
//
// Crashes and start-up (the Store is the truth): every job pushed is pending in the Store first.
// With a store that tracks queueing (PostgreSQL: several nodes), the broker reconciles the two
// (broker/queue/reconciled_queue.hpp): a pending delivery whose push no node confirmed within
// delivery.requeue_unconfirmed_after is pushed by some node's sweep, and start-up pushes nothing
// else. With a store that does not (SQLite: one node), start-up pushes every pending delivery
// (resume_pending); one RabbitMQ still holds is then there twice, and the second copy is handed
// out again after the first was delivered: at least once, absorbed by the partner through
// X-Request-Id (the delivery id). A job handed out and not acknowledged when its node or
// connection died is redelivered to the shard's next consumer.
//
// A lost connection (RabbitMQ restarted, a network blip): the queue reconnects by itself, once a
// second, and subscribes again. Publishes not yet confirmed are sent again on the new connection
// (a job may then be in its shard twice; the node that holds it acks the second copy on arrival)
// and fail, retryably, only when no connection comes back within max(connect_timeout, 5s). A job
// this node holds across a reconnection is not handed out twice here: its redelivery only takes
// the new delivery tag, and one settled meanwhile is acked when its redelivery arrives.
// Settlements made before stop() are acked before the connection closes.
//
// Threading: every member may be called from any thread. stats() counts what this node holds
// (RabbitMQ's own counts are in its management tools). stop() closes the connection from the
// queue's thread; the destructor joins it.
#pragma once

#include "tellonce/queue.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <memory>
#include <string>

namespace tellonce {

struct RabbitQueueSettings {
  std::string host = "127.0.0.1";
  int port = 5672;
  std::string vhost = "/";
  std::string user = "guest";
  std::string password = "guest";  // from `password_file`, never from the config itself
  std::string queue_prefix = "tellonce";
  int shards = 4;        // per destination; fixed once queues exist (changing it reorders)
  int prefetch = 500;    // un-acknowledged jobs per shard on this node
  std::chrono::seconds connect_timeout{5};
};

// Connects at once (throws std::runtime_error naming the server when it cannot: start-up).
// Timers of held jobs run on `executor`; waiters resume on the executor they called next() from.
std::unique_ptr<Queue> make_rabbitmq_queue(const RabbitQueueSettings& settings, asio::any_io_executor executor);

struct QueueEngineType;
QueueEngineType rabbitmq_queue_engine();  // for the registry: `queue.type: rabbitmq`

}  // namespace tellonce
