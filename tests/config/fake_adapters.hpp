// Fake adapter types for the loader tests: they take the fhir-rest adapters' keys and check them
// the same way, so the loader is tested without the real adapters' dependencies.
#pragma once

#include "adapters/registry.hpp"

#include <chrono>
#include <memory>
#include <string>

namespace tellonce::test {

struct FakeInboundSettings {
  std::string listen;
  std::string base_path;
  bool allow_partner_header = false;
};

struct FakeOutboundSettings {
  std::string url;
  std::chrono::milliseconds timeout{10000};
};

inline AdapterRegistry fake_registry() {
  AdapterRegistry registry;
  InboundAdapterType in;
  in.name = "fhir-rest";
  in.summary = "fake inbound";
  in.parse = [](SettingsReader& r) -> AdapterSettingsPtr {
    auto s = std::make_shared<FakeInboundSettings>();
    s->listen = r.string("listen", "127.0.0.1:8080");
    if (auto err = check_listen_address(s->listen); !err.empty()) r.problem("listen", err);
    s->base_path = r.string("base_path", "/fhir");
    s->allow_partner_header = r.boolean("allow_partner_header", false);
    return s;
  };
  registry.add(std::move(in));

  OutboundAdapterType out;
  out.name = "fhir-rest";
  out.summary = "fake outbound";
  out.parse = [](SettingsReader& r) -> AdapterSettingsPtr {
    auto s = std::make_shared<FakeOutboundSettings>();
    s->url = r.required_string("url");
    if (!s->url.empty()) {
      if (auto err = check_http_url(s->url); !err.empty()) r.problem("url", err);
    }
    s->timeout = r.duration("timeout", s->timeout);
    r.finish();
    return s;
  };
  registry.add(std::move(out));
  return registry;
}

}  // namespace tellonce::test
