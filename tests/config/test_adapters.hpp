// The registry the config tests load with: the broker's real adapter types, plus one
// deliberately odd inbound type that proves the loader stays generic. "odd-line" is a made-up
// transport: it listens on `bind` (not `listen`) with protocol "odd-line", names the partner
// that sends on it in `sender`, and has no base path or HTTP at all.
#pragma once

#include "tellonce/registry.hpp"

#include <memory>
#include <string>
#include <vector>

namespace tellonce::config_test {

struct OddLineSettings {
  std::string bind;
  std::string sender;
  std::vector<std::string> facilities;
};

inline InboundAdapterType odd_line_type() {
  InboundAdapterType t;
  t.name = "odd-line";
  t.summary = "a made-up line protocol, for the loader's tests";
  t.parse = [](SettingsReader& r) -> AdapterSettings {
    auto s = std::make_shared<OddLineSettings>();
    s->bind = r.required_string("bind");
    if (!s->bind.empty()) {
      if (auto why = check_listen_address(s->bind); !why.empty()) r.problem("bind", why);
      else r.declare_listener("bind", s->bind, "odd-line");
    }
    s->sender = r.required_string("sender");
    if (!s->sender.empty()) r.declare_partner_reference("sender", s->sender);
    s->facilities = r.strings("facilities");
    return s;
  };
  t.create = [](const AdapterSettings&, InboundContext&) -> std::unique_ptr<InboundAdapter> { return nullptr; };
  return t;
}

inline AdapterRegistry test_registry() {
  AdapterRegistry registry;
  register_builtin_adapters(registry);
  register_builtin_engines(registry);
  registry.add(odd_line_type());
  return registry;
}

}  // namespace tellonce::config_test
