// tellonce: one executable, one subcommand per job.
#include "broker/cli/commands.hpp"

#include "tellonce/registry.hpp"
#include "broker/config/check_command.hpp"
#include "broker/sink/sink.hpp"
#include "broker/validate/validate_command.hpp"
#include "broker/cli/convert_command.hpp"
#include "broker/cli/csv_check_command.hpp"

#include <cstring>
#include <exception>
#include <iostream>
#include <string_view>

namespace {

constexpr const char* kUsage = R"(tellonce — FHIR interoperability broker

usage:
  tellonce serve --config FILE          run the broker
  tellonce check-config FILE            check a configuration; every problem with file and line
  tellonce validate [--text] [--ndjson] [--schemas DIR] FILE...|-
                                        validate FHIR R4 + UK Core records; exit 1 on any error
  tellonce convert --from hl7v2 [--schemas DIR] FILE|-
                                        an HL7 v2 message as the FHIR Bundle the broker builds, validated
  tellonce csv-check --config FILE --channel ID DATA.csv [--row N]
                                        a `file` channel's mapping and validation, offline; exit 1 on a bad row
  tellonce message ID [--config FILE | --api URL]
                                        show a message's lifecycle
  tellonce replay ID [--config FILE | --api URL]
                                        resend a dead-lettered message
  tellonce replay --filter KEY=VALUE... [--dry-run]
                                        resend every dead delivery matching (state, source, destination, ...)
  tellonce messages [--state S] [--source P] [--destination P] [--route R] [--resource-type T]
                    [--event E] [--since TIME] [--until TIME] [--nhs-number N] [--limit N] [--cursor C]
                                        find messages, newest first
  tellonce destinations [pause|resume NAME]
                                        each destination's health and backlog; pause or resume one
  tellonce audit verify [PATH] [--config FILE]
                                        check the audit log's hash chain and head; exit 1 naming the first bad line
  tellonce audit export --fhir [--since TIME] [PATH] [--config FILE]
                                        the audit log as FHIR R4 AuditEvent NDJSON
  tellonce mllp-send --to HOST:PORT [--timeout 10s] FILE...|-
                                        send HL7 v2 messages over MLLP; exit 1 unless each is ACKed AA
  tellonce demo-sink --listen HOST:PORT [--record FILE] [--fail-status N --fail-first N]
                                        a partner FHIR endpoint for demos and tests
  tellonce hash-key < KEYFILE            print the hash a partner's api_key_hashes stores for a key
  tellonce version
)";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  std::string_view cmd = argv[1];
  try {
    tellonce::AdapterRegistry registry;
    tellonce::register_builtin_adapters(registry);
    tellonce::register_builtin_engines(registry);
    if (cmd == "serve") return tellonce::run_serve_command(argc - 2, argv + 2, registry);
    if (cmd == "check-config") return tellonce::run_check_config_command(argc - 1, argv + 1, registry);
    if (cmd == "validate")
      return tellonce::run_validate_command(argc - 2, argv + 2, TELLONCE_SCHEMA_DIR);
    if (cmd == "convert") return tellonce::run_convert_command(argc - 2, argv + 2, TELLONCE_SCHEMA_DIR);
    if (cmd == "csv-check")
      return tellonce::run_csv_check_command(argc - 2, argv + 2, registry, TELLONCE_SCHEMA_DIR);
    if (cmd == "message") return tellonce::run_message_command(argc - 2, argv + 2, registry);
    if (cmd == "replay") return tellonce::run_replay_command(argc - 2, argv + 2, registry);
    if (cmd == "messages") return tellonce::run_messages_command(argc - 2, argv + 2, registry);
    if (cmd == "destinations") return tellonce::run_destinations_command(argc - 2, argv + 2, registry);
    if (cmd == "audit") return tellonce::run_audit_command(argc - 2, argv + 2, registry);
    if (cmd == "mllp-send") return tellonce::run_mllp_send_command(argc - 2, argv + 2);
    if (cmd == "hash-key") return tellonce::run_hash_key_command(argc - 2, argv + 2);
    if (cmd == "demo-sink") return tellonce::run_sink_command(argc - 2, argv + 2);
    if (cmd == "version" || cmd == "--version") {
      std::cout << "tellonce " << TELLONCE_VERSION << "\n";
      return 0;
    }
    if (cmd == "help" || cmd == "--help" || cmd == "-h") {
      std::cout << kUsage;
      return 0;
    }
  } catch (const std::exception& e) {
    std::cerr << "tellonce " << cmd << ": " << e.what() << "\n";
    return 2;
  }
  std::cerr << "unknown command '" << cmd << "'\n\n" << kUsage;
  return 2;
}
