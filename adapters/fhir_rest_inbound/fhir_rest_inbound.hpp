// Inbound FHIR REST: POST /fhir/{type}, POST /fhir (Bundle), POST /fhir/$process-message,
// GET /fhir/metadata, mounted on the shared HTTP server for its listen address.
#pragma once

#include "tellonce/registry.hpp"

namespace tellonce {

struct FhirRestInboundSettings {
  std::string listen = "127.0.0.1:8080";
  std::string base_path = "/fhir";
  // Partners are told apart by bearer token (partners[].api_keys). With allow_partner_header,
  // an X-Tellonce-Partner header names the source instead: for demos and trusted networks.
  bool allow_partner_header = false;
};

InboundAdapterType fhir_rest_inbound_type();

// Which FHIR REST endpoint a POST reached; each takes only some records.
struct FhirRestEndpoint {
  enum class Kind { resource_type, base, process_message };
  Kind kind = Kind::resource_type;
  std::string resource_type;  // for Kind::resource_type: the type in the path (POST /fhir/Patient)
};

// The endpoint's rule, which the pipeline runs on the parsed record (an InboundRecord::rule):
// POST /{type} takes that type; POST to the base takes a message, transaction or batch Bundle;
// $process-message takes a message Bundle. A refusal is Errc::malformed with one located issue.
std::optional<Failure> check_fhir_rest_endpoint(const FhirRestEndpoint& endpoint, const rapidjson::Value& record);

}  // namespace tellonce
