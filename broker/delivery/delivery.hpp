// Delivery: workers per destination take due jobs from the Queue, hand them to the
// partner's OutboundAdapter, record each DeliveryAttempt in the Store and settle the job
// (delivered, retry with exponential backoff and jitter, or dead letter).
#pragma once

#include "adapters/adapter.hpp"
#include "config/config.hpp"
#include "queue/queue.hpp"
#include "store/store.hpp"

#include <boost/asio/io_context.hpp>

#include <map>
#include <memory>
#include <string>

namespace tellonce {

// When the next attempt is due after `attempts_made` failed attempts; nullopt: dead letter.
std::optional<std::int64_t> next_attempt_at(const RetryPolicy& policy, int attempts_made,
                                            std::int64_t now_ms, double random01);

struct DestinationStats {
  std::uint64_t delivered = 0;
  std::uint64_t failed_attempts = 0;
  std::uint64_t dead = 0;
};

class Dispatcher {
 public:
  Dispatcher(asio::io_context& io, Store& store, Queue& queue, DeliverySettings settings,
             std::map<std::string, std::shared_ptr<OutboundAdapter>> adapters);
  ~Dispatcher();
  void start();  // spawns concurrency_per_destination workers per destination
  // Stops the queue (waiting workers end) and every adapter (in-flight deliveries end
  // unrecorded: those jobs stay pending in the store and are loaded again on the next start).
  void stop();
  DestinationStats stats(const std::string& destination) const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace tellonce
