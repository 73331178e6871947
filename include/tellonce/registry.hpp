// One registry of the broker's pluggable parts, keyed by type name: inbound and outbound adapter
// types (the config picks them with `type:`) and the engines behind the Store and Queue seams
// (`store.type`, `queue.type`). Each type's parse() turns its config section into its own
// settings struct (held as AdapterSettings, whose type is checked when read) and reports bad
// values with their config path, so no adapter or engine sees raw config. Built-in types are
// listed in register_builtin_adapters() and register_builtin_engines(), not by static initialisers.
//
// Contract: filled at start-up on one thread, then only read. add() throws std::logic_error
// for a second type of the same name and kind, or a type missing parse or create.
// create() runs at start-up and may throw (std::exception) for what only it can detect.
#pragma once

#include "tellonce/adapter.hpp"
#include "tellonce/adapter_settings.hpp"
#include "tellonce/queue.hpp"
#include "tellonce/store.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace tellonce {

struct InboundAdapterType {
  std::string name;
  std::string summary;
  AdapterSettingsParser parse;
  std::function<std::unique_ptr<InboundAdapter>(const AdapterSettings&, InboundContext&)> create;
};

struct OutboundAdapterType {
  std::string name;
  std::string summary;
  AdapterSettingsParser parse;
  std::function<std::unique_ptr<OutboundAdapter>(const AdapterSettings&, OutboundContext&)> create;
};

// The operator's start-up choices a store engine honours (`tellonce serve` flags).
struct StoreStartup {
  // Start a new, empty store in place of one that was lost, damaged or replaced; what was
  // there is kept aside, never deleted.
  bool accept_new_store = false;
  // Start although recovery would drop transactions that were acknowledged (a damaged log).
  bool accept_wal_loss = false;
};

struct StoreEngineType {
  std::string name;
  std::string summary;
  AdapterSettingsParser parse;  // reads the `store:` section (its `type` is the loader's)
  // Opens the store: called once, at start-up, on the main thread; throws std::exception, with
  // a message that names what to do, when it cannot.
  std::function<std::unique_ptr<Store>(const AdapterSettings&, const StoreStartup&)> create;
};

// What a queue engine gets: the executor its timers run on, and how many bytes of queued
// bodies it may keep in memory (config `delivery.max_queued_body_bytes`; past it jobs are
// queued without their body, which the dispatcher reads back from the store).
struct QueueContext {
  asio::any_io_executor executor;
  std::size_t max_queued_body_bytes = 0;
};

struct QueueEngineType {
  std::string name;
  std::string summary;
  AdapterSettingsParser parse;  // reads the `queue:` section
  std::function<std::unique_ptr<Queue>(const AdapterSettings&, const QueueContext&)> create;
};

class AdapterRegistry final : public AdapterCatalog {
 public:
  void add(InboundAdapterType t) { insert(inbound_, std::move(t), "inbound adapter"); }
  void add(OutboundAdapterType t) { insert(outbound_, std::move(t), "outbound adapter"); }
  void add(StoreEngineType t) { insert(stores_, std::move(t), "store engine"); }
  void add(QueueEngineType t) { insert(queues_, std::move(t), "queue engine"); }
  const InboundAdapterType* inbound(const std::string& name) const { return find(inbound_, name); }
  const OutboundAdapterType* outbound(const std::string& name) const { return find(outbound_, name); }
  const StoreEngineType* store(const std::string& name) const { return find(stores_, name); }
  const QueueEngineType* queue(const std::string& name) const { return find(queues_, name); }

  const AdapterSettingsParser* inbound_parser(const std::string& type) const override {
    auto* t = inbound(type);
    return t ? &t->parse : nullptr;
  }
  const AdapterSettingsParser* outbound_parser(const std::string& type) const override {
    auto* t = outbound(type);
    return t ? &t->parse : nullptr;
  }
  std::vector<std::string> inbound_names() const override { return keys(inbound_); }
  std::vector<std::string> outbound_names() const override { return keys(outbound_); }
  const AdapterSettingsParser* store_parser(const std::string& type) const override {
    auto* t = store(type);
    return t ? &t->parse : nullptr;
  }
  const AdapterSettingsParser* queue_parser(const std::string& type) const override {
    auto* t = queue(type);
    return t ? &t->parse : nullptr;
  }
  std::vector<std::string> store_names() const override { return keys(stores_); }
  std::vector<std::string> queue_names() const override { return keys(queues_); }

 private:
  template <class T>
  static void insert(std::map<std::string, T>& m, T t, const char* kind) {
    if (t.name.empty()) throw std::logic_error(std::string(kind) + " type without a name");
    if (!t.parse || !t.create)
      throw std::logic_error(std::string(kind) + " type '" + t.name + "' lacks parse or create");
    auto name = t.name;
    if (!m.emplace(name, std::move(t)).second)
      throw std::logic_error("two " + std::string(kind) + " types named '" + name + "'");
  }
  template <class T>
  static const T* find(const std::map<std::string, T>& m, const std::string& name) {
    auto it = m.find(name);
    return it == m.end() ? nullptr : &it->second;
  }
  template <class M>
  static std::vector<std::string> keys(const M& m) {
    std::vector<std::string> out;
    for (auto& [k, v] : m) out.push_back(k);
    return out;
  }
  std::map<std::string, InboundAdapterType> inbound_;
  std::map<std::string, OutboundAdapterType> outbound_;
  std::map<std::string, StoreEngineType> stores_;
  std::map<std::string, QueueEngineType> queues_;
};

// Every adapter type that ships with the broker, in one place.
void register_builtin_adapters(AdapterRegistry& registry);
// Every store and queue engine that ships with the broker (engines/register_builtin.cpp).
void register_builtin_engines(AdapterRegistry& registry);

}  // namespace tellonce
