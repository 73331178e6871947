// `queue.type: memory`: the in-process queue. It has no settings of its own yet; its memory
// budget is the broker-wide `delivery.max_queued_body_bytes` (QueueContext).
#include "memory_queue.hpp"

#include "tellonce/registry.hpp"

namespace tellonce {
namespace {
struct MemoryQueueSettings {};
}  // namespace

QueueEngineType memory_queue_engine() {
  QueueEngineType type;
  type.name = "memory";
  type.summary = "in-process, rebuilt from the store at start-up";
  type.parse = [](SettingsReader&) -> AdapterSettings { return std::make_shared<MemoryQueueSettings>(); };
  type.create = [](const AdapterSettings& s, const QueueContext& ctx) -> std::unique_ptr<Queue> {
    (void)settings_as<MemoryQueueSettings>(s);
    return make_memory_queue(ctx.executor, ctx.max_queued_body_bytes);
  };
  return type;
}

}  // namespace tellonce
