// The delivery Queue seam: which delivery is due next, per destination, in acceptance order,
// one patient's records in turn. Every job pushed is already durable in the Store (pending),
// so a queue may lose what it holds (a crash) without losing a record: start-up pushes every
// pending delivery again (Store::load_pending), or, for a shared queue and a store that tracks
// queueing, those no node confirmed queueing (broker/queue/reconciled_queue.hpp). Implementations: the in-process memory queue
// (engines/memory_queue) and RabbitMQ quorum queues shared by several nodes (engines/rabbitmq_queue).
// Both pass the contract suite in tests/engines/queue_contract.
//
// Threading: every member may be called from any thread. Each awaitable resumes its caller on
// the executor it was awaited from. A coroutine parameter is taken by value: the queue never
// refers to the caller's objects after the call returns.
//
// Acceptance order is the order of DeliveryJob::seq, which the Store assigns: a record whose
// commit started after another's was acknowledged has the larger seq. Records whose commits
// overlapped have no order between them (a store with concurrent commits may number them either
// way), and neither do their deliveries. Jobs the queue holds at the same time go out in seq order.
//
// Per-patient lanes: at one destination, a job is handed out only when no earlier job of the
// same patient_key (empty: no patient, no lane) is in flight or waiting to be retried there;
// "earlier" is push order, which for one patient is seq order because the pipeline pushes a
// record only after its commit. A durable broker queue keeps this with one active consumer per
// patient shard, which holds a retrying job back itself (engines/rabbitmq_queue says why): that is
// the cost of the guarantee outside a process.
//
// Failure: push and settle return a retryable Failure (Errc::unavailable) when the queue could
// not take the job or the settlement (stopped; a broker that did not confirm). The delivery is
// then still pending in the Store and is queued again at the next start-up, or by the next sweep
// of a reconciled shared queue; nothing is lost, but it may wait until then. They never fail for a job's content.
#pragma once

#include "tellonce/error.hpp"
#include "tellonce/message.hpp"

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tellonce {

namespace asio = boost::asio;

struct Settlement {
  enum class Kind { delivered, retry, dead };
  Kind kind = Kind::delivered;
  // With retry: not handed out again before this time (ms since epoch). A time already past
  // puts the job straight back in its place, as for a job taken but not tried.
  std::int64_t retry_at_ms = 0;
};

struct QueueStats {
  std::size_t ready = 0;      // due now and not held back
  std::size_t waiting = 0;    // backing off, or behind an earlier record of the same patient
  std::size_t in_flight = 0;  // handed out by next() and not yet settled
};

class Queue {
 public:
  virtual ~Queue() = default;

  // Queues a job (durable in the Store already). Completes once the queue holds it.
  virtual asio::awaitable<Result<void>> push(DeliveryJob job) = 0;

  // The next job for the destination that is due and whose patient has no earlier job in flight
  // or waiting to retry there. Suspends until one is; nullopt once stopped. The job may come
  // without its body (body empty: a queue need not carry bodies); the caller reads it from the
  // Store (Store::body). A job handed out is in flight until settled.
  virtual asio::awaitable<std::optional<DeliveryJob>> next(std::string destination) = 0;

  // How a job taken with next() ended. Delivered and dead release the patient's next job;
  // retry keeps it (and every later job of that patient) back until retry_at_ms.
  virtual asio::awaitable<Result<void>> settle(DeliveryJob job, Settlement s) = 0;

  virtual QueueStats stats(const std::string& destination) const = 0;
  // Whether the jobs outlive this process and are shared with other nodes (RabbitMQ). With a
  // store that tracks queueing (Store::track_queueing), the broker then reconciles the two
  // (broker/queue/reconciled_queue.hpp) instead of pushing every pending delivery at start-up,
  // which would put each job another node holds into the queue a second time.
  virtual bool shared() const { return false; }
  // Waiting next() calls end with nullopt; later push and settle fail. Idempotent.
  virtual void stop() = 0;
};

// Start-up: pushes the pending deliveries (Store::load_pending, in acceptance order) and waits
// until the queue took them all, so that they are queued before anything new is accepted.
// Blocking (it runs an io_context of its own): call it before the broker's io_context runs.
// Returns how many the queue refused; each is logged and stays pending in the store.
std::size_t resume_pending(Queue& queue, std::vector<DeliveryJob> jobs);

}  // namespace tellonce
