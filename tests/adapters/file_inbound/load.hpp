// Loads a `file` inbound channel through the real config loader, as the broker does.
#pragma once

#include "adapters/file_inbound/file_inbound.hpp"
#include "broker/config/config.hpp"
#include "support/temp_dir.hpp"

#include <filesystem>
#include <fstream>
#include <string>

namespace tellonce::test {

struct LoadedChannel {
  ConfigLoad load;
  std::string problems;
  const FileInboundSettings* settings = nullptr;
};

// `channel` is the channel's keys after `type: file`, indented four spaces. The config sits in
// `dir`, with a partner `vcse-linkworkers`.
inline LoadedChannel load_file_channel(const std::filesystem::path& dir, const std::string& channel) {
  auto path = dir / "tellonce.yaml";
  std::ofstream(path) << "api:\n  listen: 127.0.0.1:0\npartners:\n  - id: vcse-linkworkers\n    kind: vcse\n    ods: 8JK99\n"
                         "inbound:\n  - id: drops\n    type: file\n"
                      << channel;
  AdapterRegistry registry;
  register_builtin_engines(registry);
  registry.add(file_inbound_type());
  LoadedChannel out{load_config(path, registry), "", nullptr};
  for (const auto& p : out.load.problems) out.problems += p.to_string() + "\n";
  if (out.load.config) out.settings = &settings_as<FileInboundSettings>(out.load.config->inbound[0].settings);
  return out;
}

// A social prescribing outcome mapping like the shipped demo's, smaller.
inline const char* kOutcomeMapping = R"(    mapping:
      bundle: transaction
      resources:
        - type: Task
          fields:
            - { path: intent, value: order }
            - { path: status, column: Outcome, codes: [ { value: Completed, code: completed }, { value: Declined, code: rejected } ] }
            - { path: for.identifier.system, value: "https://fhir.nhs.uk/Id/nhs-number" }
            - { path: for.identifier.value, column: NHS number, as: nhs-number, required: true }
            - { path: authoredOn, column: Referral date, as: date, required: true }
            - { path: owner.display, column: Link worker }
            - { path: "output[0].type.text", value: Onward service, if_column: Onward service }
            - { path: "output[0].valueString", column: Onward service }
        - type: Observation
          fields:
            - { path: status, value: final }
            - { path: "code.coding[0]", system: "http://snomed.info/sct", code: "1234", display: Outcome }
            - { path: subject.identifier.value, column: NHS number, as: nhs-number }
            - { path: "valueCodeableConcept.coding[0]", column: Outcome, as: coding, codes: [ { value: Completed, code: done, system: "urn:x", display: Done }, { value: Declined, code: no, system: "urn:x" } ] }
            - { path: "focus[0].reference", reference_to: Task }
            - { path: valueQuantity.value, column: Sessions, as: integer }
)";

}  // namespace tellonce::test
