// Several broker nodes on a shared queue (Queue::shared(): RabbitMQ) and a store that tracks
// queueing (Store::track_queueing: PostgreSQL): the queue and the store kept in agreement
// without pushing every pending delivery again at each start-up, which would put every job
// another node holds into the queue a second time.
//
// The store is the truth. A commit (or replay) leaves each new pending delivery with a requeue
// time `grace` ahead. This queue forwards every call to the shared one and, for each push the
// shared queue confirmed, tells the store (mark_queued, batched every `mark_every`), which clears
// that time. A sweep on every node, every grace/3 or so (jittered so that nodes spread out),
// claims the pending deliveries whose time has passed and pushes them: those committed by a node
// that died before the queue confirmed them, those a push refused (RabbitMQ away longer than the
// publish retries), and a version-1 store's backlog. A job whose confirm was noted but whose
// mark was lost in a crash (at most `mark_every` of them) is pushed again after `grace`: it is
// then in the queue twice and delivered at least once, which the partner absorbs through
// X-Request-Id, as for any redelivery. A delivery queued by a sweep goes behind the patient's
// later records that were queued meanwhile: order within a patient holds except across such a
// crash.
//
// Threading: push/next/settle/stats/stop as the seam says (any thread). The sweep and the marks
// run on the executor given to start(). sweep_now() blocks; call it before that executor runs.
// Errors: a failed mark or claim is logged and tried again on the next round; nothing is lost,
// as the store still has the delivery pending.
#pragma once

#include "tellonce/queue.hpp"
#include "tellonce/store.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <memory>

namespace tellonce {

struct ReconcileSettings {
  std::chrono::milliseconds grace{30'000};       // the store's requeue delay (Store::track_queueing)
  std::chrono::milliseconds mark_every{250};     // how often confirmed pushes are written to the store
  std::size_t claim_batch = 1000;                 // deliveries per claim
};

class ReconciledQueue final : public Queue {
 public:
  ReconciledQueue(std::unique_ptr<Queue> shared, Store& store, ReconcileSettings settings);
  ~ReconciledQueue() override;

  // Start-up: pushes every delivery the store says is due (blocking, on an io_context of its own),
  // before anything new is accepted; returns how many.
  std::size_t sweep_now();
  // Starts the marks and the periodic sweep on `executor`; they end with stop().
  void start(asio::any_io_executor executor);

  asio::awaitable<Result<void>> push(DeliveryJob job) override;
  asio::awaitable<std::optional<DeliveryJob>> next(std::string destination) override;
  asio::awaitable<Result<void>> settle(DeliveryJob job, Settlement s) override;
  QueueStats stats(const std::string& destination) const override;
  void stop() override;
  bool shared() const override { return true; }

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace tellonce
