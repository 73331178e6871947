// Inbound FHIR REST: POST /fhir/{type}, POST /fhir (Bundle), POST /fhir/$process-message,
// GET /fhir/metadata, mounted on the shared HTTP server for its listen address.
#pragma once

#include "adapters/registry.hpp"

namespace tellonce {

struct FhirRestInboundSettings {
  std::string listen = "127.0.0.1:8080";
  std::string base_path = "/fhir";
  // Partners are told apart by bearer token (partners[].api_keys). With allow_partner_header,
  // an X-Tellonce-Partner header names the source instead: for demos and trusted networks.
  bool allow_partner_header = false;
};

InboundAdapterType fhir_rest_inbound_type();

}  // namespace tellonce
