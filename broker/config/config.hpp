// The broker's configuration, read from one YAML file and checked as a whole: every problem
// is reported at once with file, line and config path, and nothing starts with a bad config.
#pragma once

#include "tellonce/adapter_settings.hpp"
#include "tellonce/limits.hpp"
#include "tellonce/tls.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tellonce {

class AllowList;  // broker/minimise/minimise.hpp

enum class PartnerKind { trust, primary_care, vcse };
std::string_view to_string(PartnerKind k);

// Where a partner receives records: an outbound adapter picked by `type:`.
struct PartnerEndpoint {
  std::string type;                    // registry name, e.g. "fhir-rest"
  AdapterSettings settings;            // parsed by that adapter type's parse()
};

struct Partner {
  std::string id;
  std::string name;
  PartnerKind kind = PartnerKind::trust;
  std::string ods_code;
  std::vector<std::string> api_keys;   // bearer tokens in clear: only with `insecure_clear_api_keys: true`
  // HL7 v2 sending facilities (MSH-4.1) this partner's systems put on their messages; its ODS
  // code counts as one too. Each belongs to one partner.
  std::vector<std::string> hl7v2_facilities;
  std::optional<PartnerEndpoint> endpoint;  // absent: partner only sends
  int line = 0;
  std::string minimise;                // allow-list id (`minimisation:`) for every record it receives; empty: none
  std::vector<std::string> api_key_hashes;  // "sha256:<hex>" of the bearer tokens (tellonce hash-key)
  // Client certificates it connects with: "sha256:AB:CD:..." fingerprints or "subject:CN=...,O=...".
  std::vector<std::string> certificates;
  // `restricted_records: entitled`: receives records tagged restricted (meta.security R) whole;
  // otherwise their locating details are removed first (broker/minimise/restricted.hpp).
  bool restricted_records_entitled = false;
  // `limits:` its own rate and connection cap (tellonce/limits.hpp); absent: the broker's `limits:`.
  std::optional<RateLimit> limits;
  // `may:` what it may send (issue 12); absent: anything, as before. An empty list inside it
  // allows nothing of that kind; a missing one allows any.
  struct Permissions {
    std::optional<std::vector<std::string>> channels;        // inbound channel ids
    std::optional<std::vector<std::string>> resource_types;  // of the record (a Bundle's own type)
    std::optional<std::vector<std::string>> events;          // "system|code" or "code", as routes match them
  };
  std::optional<Permissions> may;
};

// `operators:` people and tools allowed into the admin API and console (issue 12). Roles in
// increasing power; each may do what the ones before it may (broker/api/operators.hpp).
enum class OperatorRole { metrics, viewer, operator_, admin };
std::string_view to_string(OperatorRole r);

struct OperatorAccount {
  std::string name;                          // on trails as the actor
  OperatorRole role = OperatorRole::viewer;
  std::vector<std::string> token_hashes;     // "sha256:<hex>" of bearer tokens (tellonce hash-key)
  std::vector<std::string> certificates;     // as Partner::certificates
  int line = 0;
};

struct InboundChannel {
  std::string id;
  std::string type;                    // registry name, e.g. "fhir-rest"
  AdapterSettings settings;
  int line = 0;
};

// `where:` predicate: a dotted path into the record, e.g. Patient.generalPractitioner.identifier.value.
// It holds when any value the path reaches equals (or, with `in`, is one of) the given values.
struct FieldPredicate {
  std::string path;
  std::vector<std::string> any_of;
};

// Why a route discloses records: direct care of the patient, or anything else (planning,
// research, analytics). The national data opt-out withholds secondary-use routes only.
enum class RoutePurpose { direct_care, secondary_use };
inline std::string_view to_string(RoutePurpose p) {  // inline: users need not link tellonce_config
  return p == RoutePurpose::secondary_use ? "secondary-use" : "direct-care";
}

struct Route {
  std::string id;
  RoutePurpose purpose = RoutePurpose::direct_care;  // `purpose:`
  std::vector<std::string> resource_types;  // empty: any
  std::vector<std::string> sources;         // partner ids; empty: any
  std::vector<std::string> events;          // "system|code" or "code"; empty: any
  std::vector<FieldPredicate> where;
  bool require_consent = false;             // parsed and kept; not enforced (README "Known limits")
  std::vector<std::string> to;              // partner ids with an endpoint
  // Allow-list id (`minimisation:`) for the deliveries this route makes; empty: none. A delivery
  // every applying list restricts keeps only what all of them allow (broker/minimise/minimise.hpp).
  int line = 0;
  std::string minimise;
};

// One FHIR element path of an allow-list ("Patient.name", "Observation.value[x]"), where it is.
struct AllowedPath {
  std::string path;
  std::string config_path;  // minimisation[0].allow[3]
  int line = 0;
};

// `minimisation:` a named allow-list of FHIR element paths: what a destination may receive.
// Checked against the FHIR definitions by broker/minimise (check-config and serve).
struct MinimisationList {
  std::string id;
  std::vector<AllowedPath> allow;
  int line = 0;
};

// Retry by time: a delivery the partner could not take is tried again, backing off, until
// keep_trying_for has passed since its first failed attempt; then it is dead-lettered. A record
// the partner refused for good (DeliveryOutcome::permanent) is dead-lettered at once. The same
// backoff paces the probes of a destination whose circuit is open (broker/delivery/circuit.hpp).
struct RetryPolicy {
  std::chrono::milliseconds keep_trying_for{3LL * 24 * 60 * 60 * 1000};
  std::chrono::milliseconds initial_backoff{500};
  std::chrono::milliseconds max_backoff{5 * 60 * 1000};
  double multiplier = 2.0;
  double jitter = 0.2;                        // +/- fraction of the backoff
};

struct DeliverySettings {
  RetryPolicy retry;
  int concurrency_per_destination = 16;       // in-flight requests to one partner
  // Bodies of queued deliveries kept in memory, all destinations together; beyond it they are
  // read back from the store when their turn comes.
  std::uint64_t max_queued_body_bytes = 256ull * 1024 * 1024;
  // Several nodes on a shared queue (broker/queue/reconciled_queue.hpp): a pending delivery no
  // node confirmed queueing within this time is queued again by a node's sweep.
  std::chrono::milliseconds requeue_unconfirmed_after{30'000};
  // How long a destination's circuit stays open (its partner taking nothing) before the API and
  // console call it failing rather than retrying.
  std::chrono::milliseconds failing_after{60'000};
};

// Which engine runs behind a seam (`store:`, `queue:`), with the settings its type parsed.
struct EngineChoice {
  std::string type;
  AdapterSettings settings;
  int line = 0;
};

struct ValidationSettings {
  std::filesystem::path schema_dir;          // default: the shipped schemas
  bool nhs_number_check_digit_is_error = true;
};

// `consent:` where the national data opt-out list and Consent resources from outside the broker
// come from (broker/consent/consent.hpp); empty paths: none. Both files are polled for changes.
struct ConsentSettings {
  std::filesystem::path opt_out_file;        // NHS numbers, one a line, # comments
  std::filesystem::path consents_file;       // FHIR Consent resources, NDJSON
  std::chrono::milliseconds poll_every{5000};
};

struct ApiSettings {
  std::string listen = "127.0.0.1:8080";     // shared with an inbound fhir-rest on the same address
  std::filesystem::path console_dir;         // the web console's files; empty: found by the binary
  int line = 0;                              // of api.listen, for the loopback check
};

// `listeners:` what an HTTP listen address (shared by the API, fhir-rest and mailboxes) serves
// beyond plain HTTP: for now its TLS.
struct ListenerSettings {
  std::string listen;
  std::optional<TlsSettings> tls;
  int line = 0;
};

// audit: the hash-chained audit log (broker/audit, docs/audit.md).
struct AuditSettings {
  bool enabled = true;
  std::filesystem::path path;                  // default data/audit.ndjson beside the config
  std::chrono::milliseconds flush_delay{20};    // how long the writer gathers a batch before writing
};

struct Config {
  std::filesystem::path file;
  std::size_t max_body_bytes = 10 * 1024 * 1024;
  unsigned max_json_depth = 64;
  int io_threads = 0;                        // 0: one per core
  // Inbound connections: each listener keeps at most this many, and all listeners together
  // leave reserved_descriptors() of the process's descriptor limit for delivery and the store.
  std::size_t max_connections_per_listener = 10'000;
  std::size_t reserved_descriptors = 0;      // 0: derived from the partners (see below)
  ApiSettings api;
  AuditSettings audit;
  std::string log_format = "text";           // log.format: text or json (tellonce/log.hpp)
  std::vector<ListenerSettings> listeners;
  bool insecure_clear_api_keys = false;      // accept partners' `api_keys` in clear (demos, tests)
  // `limits:` the default rate and connection cap of every partner without `limits:` of its
  // own, and the cap on one remote address's connections per listener (0: none).
  RateLimit default_limits;
  std::size_t max_connections_per_address = 0;
  // An HTTP request must arrive whole (header and body) within this long of the previous answer
  // or of connecting; a slower one is answered 408 and closed (HttpLimits::idle_timeout).
  std::chrono::milliseconds request_timeout{60'000};
  EngineChoice store{"sqlite", {}, 0};
  EngineChoice queue{"memory", {}, 0};
  ValidationSettings validation;
  DeliverySettings delivery;
  ConsentSettings consent;
  std::vector<Partner> partners;
  std::vector<OperatorAccount> operators;
  std::vector<InboundChannel> inbound;
  std::vector<Route> routes;
  std::vector<MinimisationList> minimisation;
  // The lists above compiled against the FHIR definitions by load_config (broker/minimise), by id.
  std::map<std::string, std::shared_ptr<const AllowList>, std::less<>> allow_lists;

  // Descriptors kept free of inbound connections: reserved_descriptors when set, else 64 for
  // the store, logs and listeners plus, per partner with an endpoint, its deliveries in flight
  // and 16 for the outbound connection pool.
  std::size_t descriptors_reserved() const;

  const Partner* partner(std::string_view id) const;
  const Partner* partner_by_api_key(std::string_view key) const;  // constant-time compare of hashes
  // By a verified client certificate: its fingerprint, else its subject.
  const Partner* partner_by_certificate(std::string_view fingerprint, std::string_view subject) const;
  // Operators by bearer token (every hash compared, each in constant time) or verified certificate.
  const OperatorAccount* operator_by_token(std::string_view token) const;
  const OperatorAccount* operator_by_certificate(std::string_view fingerprint, std::string_view subject) const;
  const Partner* partner_by_hl7v2_facility(std::string_view facility) const;
  const MinimisationList* minimisation_list(std::string_view id) const;
};

struct ConfigProblem {
  std::string file;
  int line = 0;          // 1-based; 0 when unknown
  std::string path;      // config path: routes[2].to[0]
  std::string message;
  std::string to_string() const;  // "config/tellonce.yaml:42: routes[2].to[0]: unknown partner 'gp-x'"
};

struct ConfigLoad {
  std::optional<Config> config;        // set only when problems is empty
  std::vector<ConfigProblem> problems;
};

// Reads and checks the file. Adapter sections are parsed by the adapter types' own parse(),
// found in `adapters`; the listeners and partner references they declare are checked with the
// rest (every listen address of every kind, including api.listen).
ConfigLoad load_config(const std::filesystem::path& file, const AdapterCatalog& adapters);

}  // namespace tellonce
