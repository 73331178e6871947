#include "tellonce/queue.hpp"

#include "tellonce/log.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <stdexcept>

namespace tellonce {
namespace {

asio::awaitable<std::size_t> push_all(Queue& queue, std::vector<DeliveryJob> jobs) {
  std::size_t refused = 0;
  for (auto& job : jobs) {
    const std::string message_id = job.message_id, destination = job.destination;
    Result<void> queued = co_await queue.push(std::move(job));
    if (queued) continue;
    ++refused;
    log::error("queue", "could not queue pending delivery message=" + message_id + " destination=" + destination +
                            " event=delivery.queue_refused queue=\"" + queued.error().summary() + "\"");
  }
  co_return refused;
}

}  // namespace

std::size_t resume_pending(Queue& queue, std::vector<DeliveryJob> jobs) {
  asio::io_context io;
  std::size_t refused = 0;
  std::exception_ptr failed;
  asio::co_spawn(io, push_all(queue, std::move(jobs)), [&](std::exception_ptr e, std::size_t n) {
    failed = e;
    refused = n;
  });
  io.run();
  if (failed) std::rethrow_exception(failed);  // start-up: an exception is the way out
  return refused;
}

}  // namespace tellonce
