// The in-process Queue (queue.hpp): volatile, rebuilt from the Store at start-up; push and
// settle complete without suspending and fail only after stop(). Timers for jobs backing off
// run on `timer_executor`; waiters resume on the executor they called next() from.
//
// Memory budget: bodies of queued jobs are kept in memory up to max_body_bytes in all
// destinations together; past that a job is queued without its body and handed out with an
// empty body, which the Dispatcher reads back from the Store, so a long outage costs bounded
// memory. A job pushed with an empty body (Store::load_pending past its budget) stays so.
#pragma once

#include "tellonce/queue.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <memory>

namespace tellonce {

std::unique_ptr<Queue> make_memory_queue(asio::any_io_executor timer_executor,
                                         std::size_t max_body_bytes = 256u * 1024 * 1024);

struct QueueEngineType;
QueueEngineType memory_queue_engine();  // for the registry: `queue.type: memory`

}  // namespace tellonce
