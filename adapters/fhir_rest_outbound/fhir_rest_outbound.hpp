// Outbound FHIR REST over libcurl: POSTs each record to the partner's FHIR base
// (resource → {base}/{type}, Bundle → {base}), reusing connections, TLS verification on.
#pragma once

#include "adapters/registry.hpp"

#include <chrono>

namespace tellonce {

struct FhirRestOutboundSettings {
  std::string url;                       // partner's FHIR base URL
  std::chrono::milliseconds timeout{10000};
  std::chrono::milliseconds connect_timeout{3000};
  bool verify_tls = true;
  std::string ca_file;                   // optional extra CA bundle
  std::string bearer_token;              // optional Authorization: Bearer
  int max_connections = 16;
};

OutboundAdapterType fhir_rest_outbound_type();

}  // namespace tellonce
