#include "tellonce/registry.hpp"

#include "memory_queue/memory_queue.hpp"
#include "postgres_store/postgres_store.hpp"
#include "rabbitmq_queue/rabbitmq_queue.hpp"
#include "sqlite_store/sqlite_store.hpp"

namespace tellonce {

void register_builtin_engines(AdapterRegistry& registry) {
  registry.add(sqlite_store_engine());
  registry.add(postgres_store_engine());
  registry.add(memory_queue_engine());
  registry.add(rabbitmq_queue_engine());
}

}  // namespace tellonce
