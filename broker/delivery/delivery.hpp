// Delivery: workers per destination take due jobs from the Queue, hand them to the partner's
// OutboundAdapter, record each DeliveryAttempt in the Store and settle the job: delivered;
// retried by time (retry_policy.hpp: backoff until keep_trying_for has passed since the first
// failed attempt); or dead-lettered (a permanent refusal at once). Each destination has a
// circuit (circuit.hpp): while its partner is failing nothing is sent but one probe at a time,
// and the log gets one line per change of the circuit rather than one per attempt.
//
// Threading: workers are coroutines on the io_context passed in (any of its threads); each
// destination's circuit and waiting workers are guarded by a mutex of their own. start() and
// stop() may be called from any thread, once each (later calls do nothing). The Store, Queue
// and adapters must outlive the Dispatcher's workers: stop() and run the io_context dry first.
#pragma once

#include "tellonce/adapter.hpp"
#include "broker/config/config.hpp"
#include "broker/delivery/circuit.hpp"
#include "broker/delivery/retry_policy.hpp"
#include "broker/minimise/minimise.hpp"
#include "tellonce/queue.hpp"
#include "tellonce/store.hpp"

#include <boost/asio/io_context.hpp>

#include <map>
#include <memory>
#include <string>

namespace tellonce {

class Audit;
class BrokerMetrics;

struct DestinationStats {
  std::uint64_t delivered = 0;
  std::uint64_t failed_attempts = 0;  // recorded on the trail (the broker's own faults are not)
  std::uint64_t dead = 0;
  std::uint64_t broker_faults = 0;    // attempts that failed for the broker's own reasons
  Circuit::State circuit = Circuit::State::closed;
  std::int64_t circuit_opened_at_ms = 0;  // when the circuit last opened (meaningful while not closed)
  bool paused = false;                // by an operator (set_paused)
  std::int64_t last_failure_at_ms = 0;  // of the last failed attempt since start (0: none)
  std::int64_t last_success_at_ms = 0;  // of the last delivered (or held) attempt since start
  std::string last_error;             // that failure's partner code and reason, bounded
  bool last_failure_dead = false;     // that failure dead-lettered its record (not retried)
};

class Dispatcher {
 public:
  // `minimisers`: the destinations with an allow-list (broker/minimise); their records are
  // minimised before the adapter sees them, and the trail's attempt says how much was removed.
  // Other destinations' bodies go to the adapter untouched, unparsed.
  Dispatcher(asio::io_context& io, Store& store, Queue& queue, DeliverySettings settings,
             std::map<std::string, std::shared_ptr<OutboundAdapter>> adapters,
             std::map<std::string, std::shared_ptr<const Minimiser>> minimisers = {},
             BrokerMetrics* metrics = nullptr,  // when given: told of every recorded attempt; outlives this
             Audit* audit = nullptr);           // when given: each recorded attempt queued there; outlives this
  ~Dispatcher();
  void start();  // spawns concurrency_per_destination workers per destination
  // Stops the queue (waiting workers end) and every adapter (in-flight deliveries end
  // unrecorded: those jobs stay pending in the store and are loaded again on the next start).
  void stop();
  DestinationStats stats(const std::string& destination) const;
  // An operator's pause: while paused the destination's workers take no jobs, so its records
  // wait in order in the queue; resuming lets them drain. In memory only (the Store keeps it
  // durable; the broker applies it before start()). Any thread. False: no such destination.
  bool set_paused(const std::string& destination, bool paused);

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace tellonce
