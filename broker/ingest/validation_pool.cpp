#include "broker/ingest/validation_pool.hpp"

#include <pthread.h>

namespace tellonce {

ValidationPool::ValidationPool(unsigned threads) : keep_running_(asio::make_work_guard(context_)) {
  for (unsigned i = 0; i < threads; ++i)
    threads_.emplace_back([this] {
      pthread_setname_np(pthread_self(), "validate");
      context_.run();
    });
}

ValidationPool::~ValidationPool() {
  keep_running_.reset();  // run() returns once the queued work is done
  for (auto& t : threads_) t.join();
}

}  // namespace tellonce
