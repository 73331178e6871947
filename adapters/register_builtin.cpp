#include "tellonce/registry.hpp"

#include "fhir_rest_inbound/fhir_rest_inbound.hpp"
#include "fhir_rest_outbound/fhir_rest_outbound.hpp"
#include "file_inbound/file_inbound.hpp"
#include "file_outbound/file_outbound.hpp"
#include "mailbox/mailbox.hpp"
#include "mllp_inbound/mllp_inbound.hpp"
#include "mllp_outbound/mllp_outbound.hpp"

namespace tellonce {

void register_builtin_adapters(AdapterRegistry& registry) {
  registry.add(fhir_rest_inbound_type());
  registry.add(fhir_rest_outbound_type());
  registry.add(file_inbound_type());
  registry.add(file_outbound_type());
  registry.add(mailbox_outbound_type());
  registry.add(mllp_inbound_type());
  registry.add(mllp_outbound_type());
}

}  // namespace tellonce
