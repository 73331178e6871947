// Delivery queue: per-destination, in acceptance order, with per-patient ordering. Jobs are
// already durable in the Store when pushed; the queue only decides what is due next.
// A RabbitMQ-backed queue comes later behind the same seam.
#pragma once

#include "core/message.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace tellonce {

namespace asio = boost::asio;

struct Settlement {
  enum class Kind { delivered, retry, dead };
  Kind kind = Kind::delivered;
  std::int64_t retry_at_ms = 0;  // with retry
};

struct QueueStats {
  std::size_t ready = 0;      // due now and not held back
  std::size_t waiting = 0;    // backing off, or behind an earlier record of the same patient
  std::size_t in_flight = 0;
  std::size_t bodies_left_in_store = 0;  // queued jobs (all destinations) whose body was not kept
};

class Queue {
 public:
  virtual ~Queue() = default;

  virtual void push(DeliveryJob job) = 0;

  // The next job for the destination that is due and whose patient has no earlier job
  // in flight or waiting to retry there. Suspends until one is; nullopt once stopped.
  virtual asio::awaitable<std::optional<DeliveryJob>> next(std::string destination) = 0;

  // Reports how a job taken with next() ended. Delivered and dead release the patient's
  // next job; retry keeps it (and every later job of that patient) back until retry_at_ms.
  virtual void settle(const DeliveryJob& job, Settlement s) = 0;

  virtual QueueStats stats(const std::string& destination) const = 0;
  virtual void stop() = 0;
};

// In-process queue; thread-safe. Waiters resume on the executor they called next() from.
// Bodies of queued jobs are kept in memory up to max_body_bytes in all; past that a job is
// queued without its body (body_in_store) so a long outage costs bounded memory.
std::unique_ptr<Queue> make_memory_queue(asio::any_io_executor timer_executor,
                                         std::size_t max_body_bytes = 256u * 1024 * 1024);

}  // namespace tellonce
