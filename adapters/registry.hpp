// One registry of adapter types keyed by type name; the config picks them with `type:`.
// Each type's parse() turns its config section into a typed settings struct and reports bad
// values with their config path, so adapters never see raw config. Built-in types are listed
// in register_builtin_adapters(), not by static initialisers.
#pragma once

#include "adapters/adapter.hpp"
#include "config/settings_reader.hpp"

#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace tellonce {

using AdapterSettingsPtr = std::shared_ptr<const void>;

struct InboundAdapterType {
  std::string name;
  std::string summary;
  std::function<AdapterSettingsPtr(SettingsReader&)> parse;
  std::function<std::unique_ptr<InboundAdapter>(const AdapterSettingsPtr&, InboundContext&)> create;
};

struct OutboundAdapterType {
  std::string name;
  std::string summary;
  std::function<AdapterSettingsPtr(SettingsReader&)> parse;
  std::function<std::shared_ptr<OutboundAdapter>(const AdapterSettingsPtr&, OutboundContext&)> create;
};

class AdapterRegistry {
 public:
  void add(InboundAdapterType t) { auto n = t.name; inbound_.emplace(std::move(n), std::move(t)); }
  void add(OutboundAdapterType t) { auto n = t.name; outbound_.emplace(std::move(n), std::move(t)); }
  const InboundAdapterType* inbound(const std::string& name) const {
    auto it = inbound_.find(name);
    return it == inbound_.end() ? nullptr : &it->second;
  }
  const OutboundAdapterType* outbound(const std::string& name) const {
    auto it = outbound_.find(name);
    return it == outbound_.end() ? nullptr : &it->second;
  }
  std::vector<std::string> inbound_names() const { return keys(inbound_); }
  std::vector<std::string> outbound_names() const { return keys(outbound_); }

 private:
  template <class M>
  static std::vector<std::string> keys(const M& m) {
    std::vector<std::string> out;
    for (auto& [k, v] : m) out.push_back(k);
    return out;
  }
  std::map<std::string, InboundAdapterType> inbound_;
  std::map<std::string, OutboundAdapterType> outbound_;
};

// Typed helpers so a factory writes parse(SettingsReader&) -> Settings and create(const Settings&, ctx).
template <class Settings>
const Settings& settings_as(const AdapterSettingsPtr& p) {
  return *static_cast<const Settings*>(p.get());
}

// Every adapter type that ships with the broker, in one place.
void register_builtin_adapters(AdapterRegistry& registry);

}  // namespace tellonce
