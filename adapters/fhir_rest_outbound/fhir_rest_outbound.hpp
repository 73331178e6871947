// Outbound FHIR REST over Boost.Beast (http_client.hpp): POSTs each record to the partner's FHIR
// base (resource → {base}/{type}, Bundle → {base}) over HTTP/1.1 keep-alive connections, at most
// max_connections at once, TLS verification on. Credentials: bearer_token, else a URL's
// user:password as HTTP Basic.
#pragma once

#include "tellonce/registry.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>

namespace tellonce {

struct FhirRestOutboundSettings {
  std::string url;                       // partner's FHIR base URL
  std::chrono::milliseconds timeout{10000};
  std::chrono::milliseconds connect_timeout{3000};
  bool verify_tls = true;
  std::string ca_file;                   // optional CA bundle the partner's certificate is checked against
  std::string client_cert;               // optional PEM client certificate (with client_key): TLS client auth
  std::string client_key;
  std::string bearer_token;              // optional Authorization: Bearer
  int max_connections = 16;
};

OutboundAdapterType fhir_rest_outbound_type();

// The adapter itself, for tests and embedding. Its connections do their I/O on strands of
// `executor`'s io_context; deliver() resumes the caller on its own executor.
std::shared_ptr<OutboundAdapter> make_fhir_rest_outbound(const FhirRestOutboundSettings& settings,
                                                         asio::any_io_executor executor);
// The type's parse(): reads url, timeout, connect_timeout, verify_tls, ca_file, client_cert,
// client_key (checked: readable, unexpired, matching), bearer_token,
// max_connections, then finish() (unknown keys are problems).
AdapterSettings parse_fhir_rest_outbound_settings(SettingsReader& reader);

}  // namespace tellonce
