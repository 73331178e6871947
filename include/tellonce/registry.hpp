// One registry of adapter types keyed by type name; the config picks them with `type:`.
// Each type's parse() turns its config section into its own settings struct (held as
// AdapterSettings, whose type is checked when read) and reports bad values with their config
// path, so adapters never see raw config. Built-in types are listed in
// register_builtin_adapters(), not by static initialisers.
//
// Contract: filled at start-up on one thread, then only read. add() throws std::logic_error
// for a second type of the same name and direction, or a type missing parse or create.
// create() runs at start-up and may throw (std::exception) for what only it can detect.
#pragma once

#include "tellonce/adapter.hpp"
#include "tellonce/adapter_settings.hpp"

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

class AdapterRegistry final : public AdapterCatalog {
 public:
  void add(InboundAdapterType t) { insert(inbound_, std::move(t), "inbound"); }
  void add(OutboundAdapterType t) { insert(outbound_, std::move(t), "outbound"); }
  const InboundAdapterType* inbound(const std::string& name) const { return find(inbound_, name); }
  const OutboundAdapterType* outbound(const std::string& name) const { return find(outbound_, name); }

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

 private:
  template <class T>
  static void insert(std::map<std::string, T>& m, T t, const char* direction) {
    if (t.name.empty()) throw std::logic_error(std::string(direction) + " adapter type without a name");
    if (!t.parse || !t.create)
      throw std::logic_error(std::string(direction) + " adapter type '" + t.name + "' lacks parse or create");
    auto name = t.name;
    if (!m.emplace(name, std::move(t)).second)
      throw std::logic_error("two " + std::string(direction) + " adapter types named '" + name + "'");
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
};

// Every adapter type that ships with the broker, in one place.
void register_builtin_adapters(AdapterRegistry& registry);

}  // namespace tellonce
