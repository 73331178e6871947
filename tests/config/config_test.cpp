#include "broker/config/config.hpp"
#include "config_files.hpp"
#include "adapters/fhir_rest_inbound/fhir_rest_inbound.hpp"
#include "adapters/fhir_rest_outbound/fhir_rest_outbound.hpp"
#include "adapters/mllp_inbound/mllp_inbound.hpp"
#include "adapters/mllp_outbound/mllp_outbound.hpp"
#include "test_adapters.hpp"
#include "engines/postgres_store/postgres_store.hpp"
#include "engines/rabbitmq_queue/rabbitmq_queue.hpp"
#include "engines/sqlite_store/sqlite_store.hpp"
#include "broker/minimise/minimise.hpp"
#include "support/fake_store.hpp"

#include <fstream>
#include <iterator>

#include <gtest/gtest.h>

#include <cstdlib>

#include <algorithm>

namespace tellonce {
namespace {

using test::ConfigFiles;
using config_test::test_registry;

// A small valid config; tests append or swap sections to make it wrong.
const char* const valid_partners = R"(partners:
  - id: rtx
    name: Royal Example NHS Trust
    kind: trust
    ods: RTX
    api_key_hashes: ["sha256:d605493942f0226466975c066c2a46299430af995419ca9e54664dab9be20312"]
  - id: gp-a81001
    kind: primary-care
    ods: A81001
    endpoint:
      type: fhir-rest
      url: http://127.0.0.1:9101/fhir
      timeout: 3s
  - id: vcse-linkworkers
    kind: vcse
    ods: 8JK99
    endpoint:
      type: fhir-rest
      url: http://127.0.0.1:9103/fhir
)";

std::string problems_text(const ConfigLoad& load) {
  std::string out;
  for (const auto& p : load.problems) out += p.to_string() + "\n";
  return out;
}

const SqliteStoreSettings& sqlite_settings(const Config& c) { return settings_as<SqliteStoreSettings>(c.store.settings); }

const ConfigProblem* find_problem(const ConfigLoad& load, std::string_view path) {
  for (const auto& p : load.problems)
    if (p.path == path) return &p;
  return nullptr;
}

TEST(LoadConfig, ShippedExampleLoads) {
  auto registry = test_registry();
  auto load = load_config(std::string(TELLONCE_SOURCE_DIR) + "/config/tellonce.yaml", registry);
  ASSERT_TRUE(load.problems.empty()) << problems_text(load);
  ASSERT_TRUE(load.config);
  const Config& c = *load.config;
  EXPECT_EQ(c.partners.size(), 7u);
  EXPECT_EQ(c.inbound.size(), 3u);
  EXPECT_EQ(c.routes.size(), 9u);
  ASSERT_EQ(c.minimisation.size(), 1u);
  EXPECT_EQ(c.partner("vcse-linkworkers")->minimise, "social-prescribing");
  EXPECT_EQ(c.allow_lists.count("social-prescribing"), 1u);
  ASSERT_NE(c.partner("gp-a81002"), nullptr);
  ASSERT_TRUE(c.partner("gp-a81002")->endpoint);
  EXPECT_EQ(settings_as<FhirRestOutboundSettings>(c.partner("gp-a81002")->endpoint->settings).url,
            "http://127.0.0.1:9102/fhir");
  EXPECT_FALSE(c.partner("rtx")->endpoint);
  EXPECT_EQ(c.partner_by_api_key("demo-rtx-key"), c.partner("rtx"));
  EXPECT_TRUE(settings_as<FhirRestInboundSettings>(c.inbound[0].settings).allow_partner_header);
  EXPECT_EQ(settings_as<MllpInboundSettings>(c.inbound[1].settings).listen, "127.0.0.1:2575");
  EXPECT_EQ(settings_as<MllpOutboundSettings>(c.partner("community-pas")->endpoint->settings).address, "127.0.0.1:2576");
  ASSERT_NE(c.partner("vcse-carers"), nullptr);
  EXPECT_EQ(c.partner("vcse-carers")->endpoint->type, "mailbox");
  EXPECT_EQ(c.partner_by_api_key("demo-carers-key"), c.partner("vcse-carers"));
}

// The demo's link-worker charity gets the referral, the patient's name, NHS number and contact
// details and the reason, not the diagnosis or the medication (config/examples' referral).
TEST(LoadConfig, ShippedAllowListKeepsTheReferralWithoutDiagnosesOrMedications) {
  auto registry = test_registry();
  auto load = load_config(std::string(TELLONCE_SOURCE_DIR) + "/config/tellonce.yaml", registry);
  ASSERT_TRUE(load.config) << problems_text(load);
  auto validator = make_fhir_validator(ValidatorSettings{std::string(TELLONCE_SOURCE_DIR) + "/schemas"});
  test::FakeStore store;
  auto minimisers = make_minimisers(*load.config, *validator, store, JsonLimits{});
  ASSERT_EQ(minimisers.count("vcse-linkworkers"), 1u);
  // The practices are entitled to restricted records and have no allow-list: nothing to apply.
  // Other partners have a Minimiser for restricted records only, which parses no body that
  // does not mention the confidentiality code system (broker/minimise/restricted.hpp).
  EXPECT_EQ(minimisers.count("gp-a81001"), 0u);
  EXPECT_EQ(minimisers.count("gp-a81002"), 0u);
  std::ifstream in(std::string(TELLONCE_SOURCE_DIR) + "/config/examples/referral-social-prescribing.json");
  std::string referral((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(referral.empty());
  auto out = minimisers.at("vcse-linkworkers")->apply_lists(referral, {load.config->allow_lists.at("social-prescribing").get()});
  ASSERT_EQ(out.kind, MinimiseOutcome::Kind::minimised) << out.note;
  for (const char* kept : {"9000000009", "\"family\":\"Example\"", "07700 900123", "LS1 4AP", "422650009", "871711000000103"})
    EXPECT_NE(out.body.find(kept), std::string::npos) << kept << " in " << out.body;
  for (const char* gone : {"\"Condition\"", "MedicationStatement", "Sertraline", "35489007", "reasonReference", "birthDate"})
    EXPECT_EQ(out.body.find(gone), std::string::npos) << gone << " in " << out.body;
  EXPECT_EQ(out.note, "minimised by allow-list social-prescribing: 6 elements removed");
}

TEST(LoadConfig, ValidConfigHasTypedValues) {
  ConfigFiles files;
  auto path = files.write("broker.yaml", std::string(R"(broker:
  max_body_bytes: 2MB
  max_json_depth: 32
  io_threads: 3
api:
  listen: "[::1]:9000"
store:
  path: /var/lib/tellonce/t.db
  max_commit_delay: 5ms
  max_batch: 100
validation:
  schema_dir: schemas
  nhs_number_check_digit: warning
delivery:
  concurrency_per_destination: 4
  failing_after: 90s
  retry: { keep_trying_for: 2d, initial_backoff: 250ms, max_backoff: 1h, multiplier: 1.5, jitter: 0 }
)") + valid_partners + R"(inbound:
  - id: fhir-http
    type: fhir-rest
    listen: 127.0.0.1:8080
    base_path: /fhir
routes:
  - id: discharge-to-gp
    match:
      resource_type: Encounter
      source: rtx
      event: [https://fhir.nhs.uk/CodeSystem/message-events-bars|servicerequest-request, discharge]
      where:
        - path: Patient.generalPractitioner.identifier.value
          equals: A81001
        - path: Encounter.status
          in: [finished, in-progress]
    require_consent: true
    to: [gp-a81001, vcse-linkworkers]
)");
  auto registry = test_registry();
  auto load = load_config(path, registry);
  ASSERT_TRUE(load.problems.empty()) << problems_text(load);
  const Config& c = *load.config;
  EXPECT_EQ(c.max_body_bytes, 2u * 1024 * 1024);
  EXPECT_EQ(c.max_json_depth, 32u);
  EXPECT_EQ(c.io_threads, 3);
  EXPECT_EQ(c.api.listen, "[::1]:9000");
  EXPECT_EQ(c.store.type, "sqlite");
  EXPECT_EQ(sqlite_settings(c).path, "/var/lib/tellonce/t.db");
  EXPECT_EQ(sqlite_settings(c).max_commit_delay, std::chrono::microseconds(5000));
  EXPECT_EQ(sqlite_settings(c).max_batch, 100);
  EXPECT_EQ(c.queue.type, "memory");  // no queue: section: the default engine
  EXPECT_EQ(c.validation.schema_dir, files.dir() / "schemas");
  EXPECT_FALSE(c.validation.nhs_number_check_digit_is_error);
  EXPECT_EQ(c.delivery.concurrency_per_destination, 4);
  EXPECT_EQ(c.delivery.failing_after, std::chrono::seconds(90));
  EXPECT_EQ(c.delivery.retry.keep_trying_for, std::chrono::hours(48));
  EXPECT_EQ(c.delivery.retry.initial_backoff, std::chrono::milliseconds(250));
  EXPECT_EQ(c.delivery.retry.max_backoff, std::chrono::hours(1));
  EXPECT_DOUBLE_EQ(c.delivery.retry.multiplier, 1.5);
  EXPECT_DOUBLE_EQ(c.delivery.retry.jitter, 0.0);

  ASSERT_EQ(c.partners.size(), 3u);
  EXPECT_EQ(c.partners[0].name, "Royal Example NHS Trust");
  EXPECT_EQ(c.partners[1].name, "gp-a81001");  // defaults to the id
  EXPECT_EQ(c.partners[1].kind, PartnerKind::primary_care);
  EXPECT_EQ(to_string(c.partners[2].kind), "vcse");
  EXPECT_EQ(c.partners[1].line, 24);
  EXPECT_EQ(settings_as<FhirRestOutboundSettings>(c.partners[1].endpoint->settings).timeout, std::chrono::seconds(3));

  ASSERT_EQ(c.routes.size(), 1u);
  const Route& r = c.routes[0];
  EXPECT_EQ(r.resource_types, std::vector<std::string>{"Encounter"});
  EXPECT_EQ(r.sources, std::vector<std::string>{"rtx"});
  EXPECT_EQ(r.events.size(), 2u);
  ASSERT_EQ(r.where.size(), 2u);
  EXPECT_EQ(r.where[0].any_of, std::vector<std::string>{"A81001"});
  EXPECT_EQ(r.where[1].any_of, (std::vector<std::string>{"finished", "in-progress"}));
  EXPECT_TRUE(r.require_consent);
  EXPECT_EQ(r.to, (std::vector<std::string>{"gp-a81001", "vcse-linkworkers"}));
}

TEST(LoadConfig, FiveMistakesAreAllReportedWithTheirLines) {
  ConfigFiles files;
  auto path = files.write("five.yaml", R"(broker:
  max_json_depth: deep
partners:
  - id: rtx
    kind: hospital
    ods: RTX
  - id: gp-a81001
    kind: primary-care
    ods: A81001
    endpoint: { type: fhir-rest, url: "http://127.0.0.1:9101/fhir" }
  - id: rtx
    kind: trust
    ods: RTX2
routes:
  - id: r1
    match: { resource_type: Patient }
    destinatons: [gp-a81001]
    to: [gp-a81009]
)");
  auto registry = test_registry();
  auto load = load_config(path, registry);
  EXPECT_FALSE(load.config);
  ASSERT_EQ(load.problems.size(), 5u) << problems_text(load);
  struct Expected {
    int line;
    std::string path;
    std::string fragment;
  };
  std::vector<Expected> expected = {
      {2, "broker.max_json_depth", "whole number"},
      {5, "partners[0].kind", "hospital"},
      {11, "partners[2].id", "duplicate partner id 'rtx' (first at line 4)"},
      {17, "routes[0].destinatons", "unknown key"},
      {18, "routes[0].to[0]", "unknown partner 'gp-a81009'"},
  };
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const auto& p = load.problems[i];
    EXPECT_EQ(p.line, expected[i].line) << p.to_string();
    EXPECT_EQ(p.path, expected[i].path) << p.to_string();
    EXPECT_NE(p.message.find(expected[i].fragment), std::string::npos) << p.to_string();
    EXPECT_EQ(p.file, path.string());
  }
  EXPECT_EQ(load.problems[4].to_string(), path.string() + ":18: routes[0].to[0]: unknown partner 'gp-a81009'");
}

TEST(LoadConfig, ConsentSettingsPurposeAndRestrictedRecords) {
  ConfigFiles files;
  auto path = files.write("consent.yaml", R"(consent:
  opt_out_file: opt-out.txt
  poll_every: 1ms
partners:
  - id: gp-a81001
    kind: primary-care
    ods: A81001
    restricted_records: maybe
    endpoint: { type: fhir-rest, url: "http://127.0.0.1:9101/fhir" }
routes:
  - id: r1
    purpose: research
    to: [gp-a81001]
  - id: r2
    purpose: secondary-use
    to: [gp-a81001]
)");
  auto registry = test_registry();
  auto load = load_config(path, registry);
  ASSERT_EQ(load.problems.size(), 3u) << problems_text(load);
  EXPECT_EQ(load.problems[0].to_string(), path.string() + ":3: consent.poll_every: must be from 50ms to 1h");
  EXPECT_EQ(load.problems[1].to_string(),
            path.string() + ":8: partners[0].restricted_records: must be entitled or not-entitled, found 'maybe'");
  EXPECT_EQ(load.problems[2].to_string(),
            path.string() + ":12: routes[0].purpose: must be direct-care or secondary-use, found 'research'");

  auto good = files.write("good.yaml", R"(consent: { opt_out_file: lists/opt-out.txt }
partners:
  - id: gp-a81001
    kind: primary-care
    ods: A81001
    restricted_records: entitled
    endpoint: { type: fhir-rest, url: "http://127.0.0.1:9101/fhir" }
routes:
  - id: r1
    to: [gp-a81001]
  - id: r2
    purpose: secondary-use
    to: [gp-a81001]
)");
  auto ok = load_config(good, registry);
  ASSERT_TRUE(ok.config) << problems_text(ok);
  EXPECT_EQ(ok.config->consent.opt_out_file, good.parent_path() / "lists/opt-out.txt");
  EXPECT_TRUE(ok.config->partners[0].restricted_records_entitled);
  EXPECT_EQ(ok.config->routes[0].purpose, RoutePurpose::direct_care);
  EXPECT_EQ(ok.config->routes[1].purpose, RoutePurpose::secondary_use);
}

// valid_partners is 19 lines: what is appended starts at line 20.
TEST(LoadConfig, MinimisationListsAreReferencedByPartnersAndRoutes) {
  ConfigFiles files;
  auto path = files.write("minimise.yaml", std::string(valid_partners) + R"(routes:
  - id: r
    to: [vcse-linkworkers]
    minimise: names
minimisation:
  - id: names
    allow: [Patient.name, Patient.identifier]
)");
  auto registry = test_registry();
  auto load = load_config(path, registry);
  ASSERT_TRUE(load.problems.empty()) << problems_text(load);
  EXPECT_EQ(load.config->routes[0].minimise, "names");
  ASSERT_EQ(load.config->minimisation.size(), 1u);
  EXPECT_EQ(load.config->minimisation[0].allow.size(), 2u);
  EXPECT_EQ(load.config->minimisation[0].allow[1].line, 26);
}

TEST(LoadConfig, MinimisationProblemsAreReportedWhereTheyAre) {
  ConfigFiles files;
  auto path = files.write("minimise-bad.yaml", std::string(valid_partners) + R"(routes:
  - id: r
    to: [vcse-linkworkers]
    minimise: nmaes
minimisation:
  - id: obs
    allow:
      - Patient.name
      - Observation.code
      - Patient.favouriteColour
      - patient
)");
  auto registry = test_registry();
  auto load = load_config(path, registry);
  ASSERT_EQ(load.problems.size(), 4u) << problems_text(load);
  EXPECT_EQ(load.problems[0].line, 23);
  EXPECT_EQ(load.problems[0].path, "routes[0].minimise");
  EXPECT_NE(load.problems[0].message.find("unknown allow-list 'nmaes'"), std::string::npos);
  EXPECT_EQ(load.problems[1].line, 28);
  EXPECT_EQ(load.problems[1].path, "minimisation[0].allow[1]");
  EXPECT_EQ(load.problems[1].message, "allow-list 'obs' would remove Observation.status, which FHIR requires: add Observation.status");
  EXPECT_EQ(load.problems[2].line, 29);
  EXPECT_NE(load.problems[2].message.find("Patient has no element 'favouriteColour'"), std::string::npos);
  EXPECT_EQ(load.problems[3].line, 30);
  EXPECT_NE(load.problems[3].message.find("must be a resource type and its elements"), std::string::npos);
}

TEST(LoadConfig, UnknownKeyIsAProblemWithASuggestion) {
  ConfigFiles files;
  auto path = files.write("typo.yaml", std::string("brokr:\n  io_threads: 2\n") + valid_partners +
                                           "routes:\n  - id: r\n    to: [gp-a81001]\n    match: { sourse: rtx }\n");
  auto registry = test_registry();
  auto load = load_config(path, registry);
  ASSERT_EQ(load.problems.size(), 2u) << problems_text(load);
  EXPECT_EQ(load.problems[0].path, "brokr");
  EXPECT_EQ(load.problems[0].line, 1);
  EXPECT_NE(load.problems[0].message.find("did you mean 'broker'"), std::string::npos);
  EXPECT_EQ(load.problems[1].path, "routes[0].match.sourse");
  EXPECT_NE(load.problems[1].message.find("did you mean 'source'"), std::string::npos);
}

TEST(LoadConfig, UnknownKeyInsideAnAdapterSection) {
  ConfigFiles files;
  auto path = files.write("adapter-typo.yaml", R"(partners:
  - id: gp
    kind: primary-care
    ods: A81001
    endpoint:
      type: fhir-rest
      url: http://127.0.0.1:9101/fhir
      timout: 3s
)");
  auto registry = test_registry();
  auto load = load_config(path, registry);
  ASSERT_EQ(load.problems.size(), 1u) << problems_text(load);
  EXPECT_EQ(load.problems[0].path, "partners[0].endpoint.timout");
  EXPECT_EQ(load.problems[0].line, 8);
}

TEST(LoadConfig, UnknownAdapterTypeListsTheRegisteredTypes) {
  ConfigFiles files;
  auto path = files.write("adapter.yaml", R"(partners:
  - id: gp
    kind: primary-care
    ods: A81001
    endpoint:
      type: mesh
      mailbox: X26OT001
inbound:
  - id: in
    type: dicom
    listen: 127.0.0.1:104
)");
  auto registry = test_registry();
  auto load = load_config(path, registry);
  auto* out = find_problem(load, "partners[0].endpoint.type");
  ASSERT_NE(out, nullptr) << problems_text(load);
  EXPECT_EQ(out->line, 6);
  EXPECT_NE(out->message.find("unknown outbound adapter type 'mesh' (registered: fhir-rest, file, mailbox, mllp)"), std::string::npos);
  auto* in = find_problem(load, "inbound[0].type");
  ASSERT_NE(in, nullptr) << problems_text(load);
  EXPECT_NE(in->message.find("unknown inbound adapter type 'dicom'"), std::string::npos);
}

TEST(LoadConfig, DuplicatePartnerId) {
  ConfigFiles files;
  auto path = files.write("dup.yaml", std::string(valid_partners) + R"(  - id: gp-a81001
    kind: primary-care
    ods: A81002
)");
  auto registry = test_registry();
  auto load = load_config(path, registry);
  ASSERT_EQ(load.problems.size(), 1u) << problems_text(load);
  EXPECT_EQ(load.problems[0].path, "partners[3].id");
  EXPECT_EQ(load.problems[0].line, 20);
  EXPECT_NE(load.problems[0].message.find("first at line 7"), std::string::npos);
}

TEST(LoadConfig, RouteTargetsMustBeKnownPartnersWithEndpoints) {
  ConfigFiles files;
  auto path = files.write("to.yaml", std::string(valid_partners) + R"(routes:
  - id: r1
    match: { source: [rtx, nobody] }
    to: [gp-a81001, gp-x, rtx]
)");
  auto registry = test_registry();
  auto load = load_config(path, registry);
  ASSERT_EQ(load.problems.size(), 3u) << problems_text(load);
  EXPECT_EQ(find_problem(load, "routes[0].match.source[1]")->message, "unknown partner 'nobody'");
  EXPECT_EQ(find_problem(load, "routes[0].to[1]")->message, "unknown partner 'gp-x'");
  EXPECT_EQ(find_problem(load, "routes[0].to[2]")->message, "partner 'rtx' has no endpoint to deliver to");
  EXPECT_EQ(find_problem(load, "routes[0].to[1]")->line, 23);
}

TEST(LoadConfig, DurationsAcceptUnitsAndBareMilliseconds) {
  ConfigFiles files;
  auto registry = test_registry();
  struct Case {
    std::string text;
    std::chrono::milliseconds expected;
  };
  for (const auto& c : std::vector<Case>{{"250ms", std::chrono::milliseconds(250)},
                                         {"10s", std::chrono::seconds(10)},
                                         {"5m", std::chrono::minutes(5)},
                                         {"1h", std::chrono::hours(1)},
                                         {"750", std::chrono::milliseconds(750)}}) {
    auto path = files.write("d.yaml", "delivery:\n  retry:\n    initial_backoff: 1ms\n    max_backoff: " + c.text + "\n");
    auto load = load_config(path, registry);
    ASSERT_TRUE(load.problems.empty()) << c.text << "\n" << problems_text(load);
    EXPECT_EQ(load.config->delivery.retry.max_backoff, c.expected) << c.text;
  }
  for (std::string bad : {"5 minutes", "10x", "ms", "-5s", "1.5s"}) {
    auto path = files.write("d.yaml", "delivery:\n  retry:\n    max_backoff: \"" + bad + "\"\n");
    auto load = load_config(path, registry);
    ASSERT_EQ(load.problems.size(), 1u) << bad;
    EXPECT_EQ(load.problems[0].path, "delivery.retry.max_backoff");
    EXPECT_EQ(load.problems[0].line, 3);
  }
}

TEST(LoadConfig, RelativeStorePathIsResolvedAgainstTheConfigDirectory) {
  ConfigFiles files;
  auto registry = test_registry();
  auto rel = load_config(files.write("etc/tellonce.yaml", "store:\n  path: ../var/tellonce.db\n"), registry);
  ASSERT_TRUE(rel.config) << problems_text(rel);
  EXPECT_EQ(sqlite_settings(*rel.config).path, (files.dir() / "var/tellonce.db").lexically_normal());

  auto fallback = load_config(files.write("etc/empty.yaml", "broker: {}\n"), registry);
  ASSERT_TRUE(fallback.config) << problems_text(fallback);
  EXPECT_EQ(sqlite_settings(*fallback.config).path, (files.dir() / "etc/data/tellonce.db").lexically_normal());

  auto abs = load_config(files.write("etc/abs.yaml", "store:\n  path: /srv/t.db\n"), registry);
  ASSERT_TRUE(abs.config);
  EXPECT_EQ(sqlite_settings(*abs.config).path, "/srv/t.db");
}

// store.type: postgresql reads its own typed settings; bad values are refused with their line.
TEST(LoadConfig, PostgresqlStoreSettingsAreTypedAndCheckedWithTheirLine) {
  ConfigFiles files;
  auto registry = test_registry();
  auto load = load_config(files.write("pg.yaml", "store:\n  type: postgresql\n  host: db.internal\n  port: 5433\n"
                                                 "  dbname: broker\n  user: tellonce\n  pool_size: 4\n"
                                                 "  max_commit_delay: 5ms\n  max_batch: 200\nqueue:\n  type: memory\n"),
                          registry);
  ASSERT_TRUE(load.config) << problems_text(load);
  const auto& pg = settings_as<PostgresStoreSettings>(load.config->store.settings);
  EXPECT_EQ(pg.conninfo, "host=db.internal port=5433 dbname=broker user=tellonce");
  EXPECT_EQ(pg.pool_size, 4);
  EXPECT_EQ(pg.max_commit_delay, std::chrono::microseconds(5000));
  EXPECT_EQ(pg.max_batch, 200);

  auto uri = load_config(files.write("uri.yaml", "store:\n  type: postgresql\n  conninfo: postgresql://t@10.0.0.5/tellonce\n"),
                         registry);
  ASSERT_TRUE(uri.config) << problems_text(uri);
  EXPECT_EQ(settings_as<PostgresStoreSettings>(uri.config->store.settings).conninfo, "postgresql://t@10.0.0.5/tellonce");

  auto bad = load_config(files.write("bad.yaml", "store:\n  type: postgresql\n  port: 70000\n  pool_size: 0\n"
                                                "  max_commit_delay: 5s\n  max_batch: 0\n"),
                         registry);
  for (const auto* path : {"store.port", "store.pool_size", "store.max_commit_delay", "store.max_batch"})
    EXPECT_NE(find_problem(bad, path), nullptr) << path << "\n" << problems_text(bad);
  auto* port = find_problem(bad, "store.port");
  ASSERT_NE(port, nullptr);
  EXPECT_EQ(port->line, 3);

  auto both = load_config(files.write("both.yaml", "store:\n  type: postgresql\n  conninfo: host=a\n  host: b\n"), registry);
  EXPECT_NE(find_problem(both, "store.conninfo"), nullptr) << problems_text(both);
  auto secret = load_config(files.write("pw.yaml", "store:\n  type: postgresql\n  conninfo: host=a password=x\n"), registry);
  EXPECT_NE(find_problem(secret, "store.conninfo"), nullptr) << problems_text(secret);
}

// queue.type: rabbitmq reads its own typed settings; bad values are refused with their line,
// and a password is read from a file, never from the config.
TEST(LoadConfig, RabbitmqQueueSettingsAreTypedAndCheckedWithTheirLine) {
  ConfigFiles files;
  auto registry = test_registry();
  files.write("rabbit.pw", "s3cret\n");
  auto load = load_config(files.write("q.yaml", "queue:\n  type: rabbitmq\n  host: mq.internal\n  port: 5673\n"
                                                "  vhost: ics\n  user: broker\n  password_file: rabbit.pw\n"
                                                "  queue_prefix: ics1\n  shards: 8\n  prefetch: 100\n"),
                          registry);
  ASSERT_TRUE(load.config) << problems_text(load);
  const auto& mq = settings_as<RabbitQueueSettings>(load.config->queue.settings);
  EXPECT_EQ(mq.host, "mq.internal");
  EXPECT_EQ(mq.port, 5673);
  EXPECT_EQ(mq.vhost, "ics");
  EXPECT_EQ(mq.user, "broker");
  EXPECT_EQ(mq.password, "s3cret");
  EXPECT_EQ(mq.queue_prefix, "ics1");
  EXPECT_EQ(mq.shards, 8);
  EXPECT_EQ(mq.prefetch, 100);

  auto bad = load_config(files.write("bad.yaml", "queue:\n  type: rabbitmq\n  shards: 0\n  prefetch: 70000\n"
                                                "  password: x\n  password_file: missing.pw\n  queue_prefix: \"a b\"\n"),
                         registry);
  for (const auto* path : {"queue.shards", "queue.prefetch", "queue.password", "queue.password_file", "queue.queue_prefix"})
    EXPECT_NE(find_problem(bad, path), nullptr) << path << "\n" << problems_text(bad);
  auto* shards = find_problem(bad, "queue.shards");
  ASSERT_NE(shards, nullptr);
  EXPECT_EQ(shards->line, 3);
}

// store.type and queue.type pick engines from the registry; the engine reads the rest of the
// section, and an unknown type names the ones there are.
TEST(LoadConfig, StoreAndQueueEnginesAreChosenByType) {
  ConfigFiles files;
  auto registry = test_registry();
  auto load = load_config(files.write("e.yaml", "store:\n  type: sqlite\n  max_batch: 7\nqueue:\n  type: memory\n"),
                          registry);
  ASSERT_TRUE(load.config) << problems_text(load);
  EXPECT_EQ(load.config->store.type, "sqlite");
  EXPECT_EQ(sqlite_settings(*load.config).max_batch, 7);
  EXPECT_EQ(load.config->queue.type, "memory");
  EXPECT_TRUE(load.config->queue.settings);

  auto bad = load_config(files.write("bad.yaml", "store:\n  type: postgres\nqueue:\n  type: rabbit\n  extra: 1\n"),
                         registry);
  auto* store = find_problem(bad, "store.type");
  ASSERT_NE(store, nullptr) << problems_text(bad);
  EXPECT_EQ(store->message, "store type 'postgres' is not available (available: postgresql, sqlite)");
  EXPECT_EQ(store->line, 2);
  auto* queue = find_problem(bad, "queue.type");
  ASSERT_NE(queue, nullptr) << problems_text(bad);
  EXPECT_EQ(queue->message, "queue type 'rabbit' is not available (available: memory, rabbitmq)");

  auto typo = load_config(files.write("typo.yaml", "store:\n  max_batchh: 7\n"), registry);
  EXPECT_NE(find_problem(typo, "store.max_batchh"), nullptr) << problems_text(typo);
}

TEST(LoadConfig, CrossChecksAndRanges) {
  ConfigFiles files;
  auto path = files.write("cross.yaml", std::string(R"(store:
  type: postgres
delivery:
  failing_after: 500ms
  retry: { max_attempts: 8, keep_trying_for: 0s, jitter: 1.5, initial_backoff: 10s, max_backoff: 1s }
)") + valid_partners + R"(  - id: charity-two
    kind: vcse
    ods: 8JK98
    api_key_hashes: ["sha256:d605493942f0226466975c066c2a46299430af995419ca9e54664dab9be20312"]
inbound:
  - { id: a, type: fhir-rest, listen: "127.0.0.1:8080", base_path: /fhir }
  - { id: b, type: fhir-rest, listen: "127.0.0.1:8080", base_path: /fhir }
routes:
  - id: r
    match:
      where:
        - path: generalPractitioner.identifier.value
          equals: A81001
    to: [gp-a81001]
)");
  auto registry = test_registry();
  auto load = load_config(path, registry);
  EXPECT_NE(find_problem(load, "store.type"), nullptr);
  auto* old_count = find_problem(load, "delivery.retry.max_attempts");
  ASSERT_NE(old_count, nullptr);  // retry by count is gone: the message names the key that replaced it
  EXPECT_NE(old_count->message.find("keep_trying_for"), std::string::npos) << old_count->message;
  EXPECT_NE(find_problem(load, "delivery.retry.keep_trying_for"), nullptr);
  EXPECT_NE(find_problem(load, "delivery.retry.jitter"), nullptr);
  EXPECT_NE(find_problem(load, "delivery.retry.max_backoff"), nullptr);
  EXPECT_NE(find_problem(load, "delivery.failing_after"), nullptr);
  auto* key = find_problem(load, "partners[3].api_key_hashes[0]");
  ASSERT_NE(key, nullptr) << problems_text(load);
  EXPECT_EQ(key->message, "api key already used by partner 'rtx'");
  EXPECT_NE(find_problem(load, "inbound[1].listen"), nullptr);
  EXPECT_NE(find_problem(load, "routes[0].match.where[0].path"), nullptr);
  EXPECT_EQ(load.problems.size(), 9u) << problems_text(load);
}

TEST(LoadConfig, Hl7v2SendingFacilitiesNameOnePartnerEach) {
  ConfigFiles files;
  auto good = files.write("fac.yaml", std::string(valid_partners) + R"(  - id: trust-two
    kind: trust
    ods: RX2
    hl7v2_facilities: [RX2PAS, RX2LAB]
)");
  auto registry = test_registry();
  auto load = load_config(good, registry);
  ASSERT_TRUE(load.config) << problems_text(load);
  const Config& c = *load.config;
  ASSERT_NE(c.partner_by_hl7v2_facility("RX2LAB"), nullptr);
  EXPECT_EQ(c.partner_by_hl7v2_facility("RX2LAB")->id, "trust-two");
  ASSERT_NE(c.partner_by_hl7v2_facility("RTX"), nullptr);  // an ODS code is a facility too
  EXPECT_EQ(c.partner_by_hl7v2_facility("RTX")->id, "rtx");
  EXPECT_EQ(c.partner_by_hl7v2_facility("RX9"), nullptr);
  EXPECT_EQ(c.partner_by_hl7v2_facility(""), nullptr);

  auto clash = files.write("clash.yaml", std::string(valid_partners) + R"(  - id: trust-two
    kind: trust
    ods: RX2
    hl7v2_facilities: [RX2PAS, A81001]
  - id: trust-three
    kind: trust
    ods: RX3
    hl7v2_facilities: [RX2PAS]
)");
  auto bad = load_config(clash, registry);
  auto* own = find_problem(bad, "partners[3].hl7v2_facilities[1]");
  ASSERT_NE(own, nullptr) << problems_text(bad);
  EXPECT_EQ(own->message, "sending facility 'A81001' is partner 'gp-a81001''s ODS code");
  auto* twice = find_problem(bad, "partners[4].hl7v2_facilities[0]");
  ASSERT_NE(twice, nullptr) << problems_text(bad);
  EXPECT_EQ(twice->message, "sending facility 'RX2PAS' is already partner 'trust-two''s");
}

TEST(LoadConfig, AnOddAdapterTypeIsParsedByTheGenericLoader) {
  ConfigFiles files;
  auto path = files.write("odd.yaml", std::string(valid_partners) + R"(inbound:
  - id: line
    type: odd-line
    bind: 127.0.0.1:2575
    sender: rtx
    facilities: [RTX-PAS, RTX-LAB]
routes:
  - { id: r, to: [gp-a81001] }
)");
  auto registry = test_registry();
  auto load = load_config(path, registry);
  ASSERT_TRUE(load.config) << problems_text(load);
  const auto& odd = settings_as<config_test::OddLineSettings>(load.config->inbound[0].settings);
  EXPECT_EQ(odd.bind, "127.0.0.1:2575");
  EXPECT_EQ(odd.sender, "rtx");
  EXPECT_EQ(odd.facilities, (std::vector<std::string>{"RTX-PAS", "RTX-LAB"}));
}

TEST(LoadConfig, PartnerNamedInAnAdaptersSettingsMustExist) {
  ConfigFiles files;
  auto path = files.write("sender.yaml", std::string(valid_partners) + R"(inbound:
  - id: line
    type: odd-line
    bind: 127.0.0.1:2575
    sender: gp-nobody
routes:
  - { id: r, to: [gp-a81001] }
)");
  auto registry = test_registry();
  auto load = load_config(path, registry);
  ASSERT_EQ(load.problems.size(), 1u) << problems_text(load);
  EXPECT_EQ(load.problems[0].path, "inbound[0].sender");
  EXPECT_EQ(load.problems[0].line, 24);
  EXPECT_EQ(load.problems[0].message, "unknown partner 'gp-nobody'");
}

TEST(LoadConfig, ListenAddressClashesAcrossEveryKindOfListener) {
  ConfigFiles files;
  auto path = files.write("clash.yaml", std::string(R"(api:
  listen: 127.0.0.1:8080
)") + valid_partners + R"(inbound:
  - { id: rest, type: fhir-rest, listen: "127.0.0.1:8080", base_path: /fhir }
  - { id: rest-again, type: fhir-rest, listen: "127.0.0.1:8080", base_path: /fhir/ }
  - { id: api-path, type: fhir-rest, listen: "127.0.0.1:8080", base_path: /api }
  - { id: line-on-http, type: odd-line, bind: "127.0.0.1:8080", sender: rtx }
  - { id: line, type: odd-line, bind: "127.0.0.1:2575", sender: rtx }
  - { id: rest-on-any, type: fhir-rest, listen: "0.0.0.0:2575" }
  - { id: fresh-ports, type: odd-line, bind: "127.0.0.1:0", sender: rtx }
  - { id: more-fresh, type: odd-line, bind: "127.0.0.1:0", sender: rtx }
  - { id: elsewhere, type: fhir-rest, listen: "127.0.0.1:8081", base_path: /fhir }
routes:
  - { id: r, to: [gp-a81001] }
)");
  auto registry = test_registry();
  auto load = load_config(path, registry);
  std::vector<std::string> paths;
  for (const auto& p : load.problems) paths.push_back(p.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"inbound[1].listen", "inbound[2].listen", "inbound[3].bind",
                                             "inbound[5].listen"}))
      << problems_text(load);
  auto* same_path = find_problem(load, "inbound[1].listen");
  ASSERT_NE(same_path, nullptr);
  EXPECT_EQ(same_path->line, 24);
  EXPECT_NE(same_path->message.find("inbound[0].listen"), std::string::npos) << same_path->message;
  auto* api = find_problem(load, "inbound[2].listen");
  ASSERT_NE(api, nullptr);
  EXPECT_NE(api->message.find("api.listen"), std::string::npos) << api->message;
  auto* across_kinds = find_problem(load, "inbound[3].bind");
  ASSERT_NE(across_kinds, nullptr);
  EXPECT_NE(across_kinds->message.find("odd-line listener on 127.0.0.1:8080 overlaps api.listen"), std::string::npos)
      << across_kinds->message;
  auto* wildcard = find_problem(load, "inbound[5].listen");
  ASSERT_NE(wildcard, nullptr);
  EXPECT_NE(wildcard->message.find("inbound[4].bind"), std::string::npos) << wildcard->message;
}

// X-Tellonce-Partner is a claim anyone can make, so it may name the sender only where nothing
// beyond this machine connects.
TEST(LoadConfig, PartnerHeaderIsRefusedBeyondLoopback) {
  ConfigFiles files;
  auto path = files.write("header.yaml", std::string(valid_partners) + R"(inbound:
  - { id: local, type: fhir-rest, listen: "127.0.0.1:8080", allow_partner_header: true }
  - { id: open, type: fhir-rest, listen: "0.0.0.0:8081", allow_partner_header: true }
  - { id: keyed, type: fhir-rest, listen: "0.0.0.0:8082" }
routes:
  - { id: r, to: [gp-a81001] }
)");
  auto registry = test_registry();
  auto load = load_config(path, registry);
  ASSERT_EQ(load.problems.size(), 1u) << problems_text(load);
  EXPECT_EQ(load.problems[0].path, "inbound[1].allow_partner_header");
  EXPECT_EQ(load.problems[0].line, 22);
  EXPECT_NE(load.problems[0].message.find("only on a loopback listen address"), std::string::npos)
      << load.problems[0].message;
}

TEST(AdapterSettings, AreReadOnlyAsTheTypeTheyHold) {
  AdapterSettings held = std::make_shared<FhirRestInboundSettings>();
  EXPECT_TRUE(held.holds<FhirRestInboundSettings>());
  EXPECT_EQ(settings_as<FhirRestInboundSettings>(held).base_path, "/fhir");
  EXPECT_THROW(settings_as<FhirRestOutboundSettings>(held), std::logic_error);
  EXPECT_THROW(settings_as<FhirRestInboundSettings>(AdapterSettings{}), std::logic_error);
}

TEST(AdapterRegistry, RefusesASecondTypeOfTheSameNameAndIncompleteTypes) {
  AdapterRegistry registry;
  register_builtin_adapters(registry);
  EXPECT_THROW(registry.add(fhir_rest_inbound_type()), std::logic_error);
  EXPECT_THROW(registry.add(fhir_rest_outbound_type()), std::logic_error);
  register_builtin_engines(registry);
  EXPECT_THROW(registry.add(sqlite_store_engine()), std::logic_error);
  EXPECT_NE(registry.store("sqlite"), nullptr);
  EXPECT_NE(registry.queue("memory"), nullptr);
  EXPECT_EQ(registry.store("memory"), nullptr);  // each kind has its own names
  auto incomplete = config_test::odd_line_type();
  incomplete.create = nullptr;
  EXPECT_THROW(registry.add(incomplete), std::logic_error);
  registry.add(config_test::odd_line_type());  // a new name is fine
  EXPECT_EQ(registry.inbound_names(), (std::vector<std::string>{"fhir-rest", "file", "mllp", "odd-line"}));
  EXPECT_THROW(registry.add(config_test::odd_line_type()), std::logic_error);
}

TEST(LoadConfig, EmptyTargetsAndDuplicateKeys) {
  ConfigFiles files;
  auto registry = test_registry();
  auto load = load_config(files.write("empty-to.yaml", R"(routes:
  - id: r
    id: r2
    to: []
  - id: s
)"),
                          registry);
  ASSERT_EQ(load.problems.size(), 3u) << problems_text(load);
  EXPECT_EQ(load.problems[0].path, "routes[0].id");
  EXPECT_EQ(load.problems[0].line, 3);
  EXPECT_EQ(load.problems[1].path, "routes[0].to");
  EXPECT_EQ(load.problems[1].line, 4);
  EXPECT_EQ(load.problems[2].path, "routes[1].to");
  EXPECT_EQ(load.problems[2].line, 5);
}

TEST(LoadConfig, SyntaxErrorAndMissingFile) {
  ConfigFiles files;
  auto registry = test_registry();
  auto bad = load_config(files.write("bad.yaml", "partners:\n  - id: a\n  - [unclosed\n"), registry);
  ASSERT_EQ(bad.problems.size(), 1u);
  EXPECT_GE(bad.problems[0].line, 3);
  EXPECT_NE(bad.problems[0].message.find("YAML"), std::string::npos);

  auto missing = load_config(files.dir() / "nope.yaml", registry);
  ASSERT_EQ(missing.problems.size(), 1u);
  EXPECT_FALSE(missing.config);
}

TEST(Config, LookupsAndNames) {
  Config c;
  c.partners.push_back(Partner{"a", "A", PartnerKind::trust, "AAA", {"k1", "k2"}, {}, std::nullopt, 1});
  c.partners.push_back(Partner{"b", "B", PartnerKind::primary_care, "BBB", {"k3"}, {}, std::nullopt, 2});
  EXPECT_EQ(c.partner("b"), &c.partners[1]);
  EXPECT_EQ(c.partner("c"), nullptr);
  EXPECT_EQ(c.partner_by_api_key("k2"), &c.partners[0]);
  EXPECT_EQ(c.partner_by_api_key(""), nullptr);
  EXPECT_EQ(c.partner_by_api_key("k"), nullptr);
  EXPECT_EQ(to_string(PartnerKind::primary_care), "primary-care");
  EXPECT_EQ((ConfigProblem{"f.yaml", 3, "", "bad"}).to_string(), "f.yaml:3: bad");
}

}  // namespace
}  // namespace tellonce

namespace tellonce {
namespace {

// Partner credentials: keys only hashed (unless marked), hashes and certificates in their forms,
// a listener's TLS files checked where they are named.
TEST(LoadConfig, PartnerCredentialsAndListenerTls) {
  test::ConfigFiles files;
  auto path = files.write("creds.yaml", R"(partners:
  - id: rtx
    kind: trust
    ods: RTX
    api_keys: [in-clear]
    api_key_hashes: ["sha256:NOTHEX"]
    certificates: ["AB:CD", "subject:CN=rtx-pas", "sha256:cc:3f:c9:94:e2:a3:c8:16:fa:d5:0b:dc:1b:d0:f7:98:b4:f4:c3:2f:ba:bc:7f:39:e7:05:97:f5:87:57:f9:bc"]
listeners:
  - listen: 127.0.0.1:8443
    tls: { cert: no-such.pem, key: no-such.key, client_certificates: required, min_version: "1.1" }
)");
  auto registry = config_test::test_registry();
  auto load = load_config(path, registry);
  auto text = [&](const char* at) {
    for (const auto& p : load.problems)
      if (p.path == at) return p.message;
    return std::string("(no problem at ") + at + ")";
  };
  EXPECT_NE(text("partners[0].api_keys[0]").find("stored hashed"), std::string::npos) << text("partners[0].api_keys[0]");
  EXPECT_NE(text("partners[0].api_key_hashes[0]").find("64 lowercase hex"), std::string::npos);
  EXPECT_NE(text("partners[0].certificates[0]").find("sha256:AB:CD"), std::string::npos);
  EXPECT_EQ(text("partners[0].certificates[1]"), "(no problem at partners[0].certificates[1])");
  EXPECT_EQ(text("partners[0].certificates[2]"), "(no problem at partners[0].certificates[2])");
  EXPECT_NE(text("listeners[0].tls.cert").find("does not exist"), std::string::npos) << text("listeners[0].tls.cert");
  EXPECT_NE(text("listeners[0].tls.client_ca").find("client_ca"), std::string::npos);
  EXPECT_NE(text("listeners[0].tls.min_version").find("1.2"), std::string::npos);
  for (const auto& p : load.problems) EXPECT_EQ(p.message.find("in-clear"), std::string::npos) << p.message;
}

// Beyond loopback the admin API needs both: TLS on its listener and operators to sign in.
TEST(LoadConfig, ApiBeyondLoopbackNeedsTlsAndOperators) {
  test::ConfigFiles files;
  const auto certs = files.dir() / "certs";
  ASSERT_EQ(std::system((std::string(TELLONCE_SOURCE_DIR) + "/tests/integration/tls/make_certs.sh " + certs.string()).c_str()), 0);
  auto problems_with = [&](const std::string& operators) {
    auto path = files.write("api.yaml", std::string("api:\n  listen: 0.0.0.0:8443\n") + valid_partners +
                                            "listeners:\n  - listen: 0.0.0.0:8443\n    tls: { cert: " +
                                            (certs / "server.pem").string() + ", key: " +
                                            (certs / "server.key").string() + " }\n" + operators);
    auto registry = config_test::test_registry();
    return problems_text(load_config(path, registry));
  };
  auto without_operators = problems_with("");
  EXPECT_NE(without_operators.find("api.listen: the admin API listens beyond loopback (0.0.0.0:8443) but no operators"),
            std::string::npos) << without_operators;
  EXPECT_EQ(without_operators.find("no TLS"), std::string::npos) << without_operators;
  EXPECT_EQ(problems_with("operators:\n  - { name: ops, role: viewer, token_hashes: [\"sha256:" + std::string(64, 'a') +
                        "\"] }\n"),
            "");
}

TEST(Config, ApiKeysMatchByHashAndCertificatesByFingerprintOrSubject) {
  Config c;
  Partner a;
  a.id = "a";
  a.api_key_hashes = {api_key_hash("key-of-a")};
  a.certificates = {"sha256:AA:BB", "subject:CN=a-app,O=A"};
  c.partners.push_back(a);
  EXPECT_EQ(c.partner_by_api_key("key-of-a"), &c.partners[0]);
  EXPECT_EQ(c.partner_by_api_key("key-of-b"), nullptr);
  EXPECT_EQ(c.partner_by_api_key(api_key_hash("key-of-a")), nullptr);  // the hash is not the key
  EXPECT_EQ(c.partner_by_certificate("sha256:AA:BB", "CN=other"), &c.partners[0]);
  EXPECT_EQ(c.partner_by_certificate("sha256:CC:DD", "CN=a-app,O=A"), &c.partners[0]);
  EXPECT_EQ(c.partner_by_certificate("sha256:CC:DD", "CN=a-app"), nullptr);
  EXPECT_EQ(c.partner_by_certificate("", "CN=a-app,O=A"), nullptr);  // no verified certificate
}

}  // namespace
}  // namespace tellonce
