// Consent rules at routing time: the opt-out list, Consent deny provisions (purpose, recipient,
// period), and how a destination reached by several routes is judged.
#include "broker/consent/consent.hpp"
#include "engines/sqlite_store/sqlite_store.hpp"
#include "tellonce/json.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <fstream>

#include "support/run_async.hpp"
#include "support/temp_dir.hpp"

namespace tellonce {
namespace {

constexpr const char* kPatient = "9434765919";  // valid check digit
constexpr const char* kOther = "9434765870";

Config two_routes() {
  Config c;
  Partner gp;
  gp.id = "gp-a";
  gp.ods_code = "A81001";
  Partner analytics;
  analytics.id = "analytics";
  analytics.ods_code = "X26";
  Partner charity;
  charity.id = "charity";
  charity.ods_code = "8JK99";
  c.partners = {gp, analytics, charity};
  Route care;
  care.id = "care";
  care.to = {"gp-a", "charity"};
  Route research;
  research.id = "research";
  research.purpose = RoutePurpose::secondary_use;
  research.to = {"analytics"};
  c.routes = {care, research};
  return c;
}

std::vector<RouteMatch> matches_all() { return {{"care", {"gp-a", "charity"}}, {"research", {"analytics"}}}; }

std::vector<std::string> kept(const std::vector<RouteMatch>& m) { return destinations_of(m); }

rapidjson::Document json(const std::string& text) {
  auto d = parse_json(text);
  EXPECT_TRUE(d) << text;
  return std::move(*d);
}

std::string consent(const std::string& id, const std::string& status, const std::string& deny_extra,
                    const std::string& nhs = kPatient) {
  return R"({"resourceType":"Consent","id":")" + id + R"(","status":")" + status + R"(",
    "scope":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"patient-privacy"}]},
    "category":[{"coding":[{"system":"http://loinc.org","code":"59284-0"}]}],
    "patient":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" + nhs + R"("}},
    "provision":{"type":"permit","provision":[{"type":"deny")" + deny_extra + "}]}}";
}

TEST(OptOut, ParsesNumbersCommentsAndReportsBadLinesByNumberOnly) {
  auto list = parse_opt_out(std::string("# national data opt-out\n") + kPatient + "\n\n943 476 5870  # spaced\n1234567890\nabc\n");
  EXPECT_EQ(list.nhs_numbers.size(), 2u);
  EXPECT_TRUE(list.nhs_numbers.contains(kPatient));
  EXPECT_TRUE(list.nhs_numbers.contains(kOther));
  ASSERT_EQ(list.problems.size(), 2u);
  EXPECT_EQ(list.problems[0].rfind("line 5:", 0), 0u) << list.problems[0];
  EXPECT_EQ(list.problems[1].rfind("line 6:", 0), 0u) << list.problems[1];
  for (const auto& p : list.problems) EXPECT_EQ(p.find("1234567890"), std::string::npos) << p;
}

TEST(OptOut, WithholdsSecondaryUseOnly) {
  ConsentGate gate(two_routes());
  gate.set_opt_out(std::make_shared<const std::unordered_set<std::string>>(std::unordered_set<std::string>{kPatient}));
  auto m = matches_all();
  std::vector<Withholding> withheld;
  gate.withhold(kPatient, m, 0, withheld);
  EXPECT_EQ(kept(m), (std::vector<std::string>{"gp-a", "charity"}));
  ASSERT_EQ(withheld.size(), 1u);
  EXPECT_EQ(withheld[0].destination, "analytics");
  EXPECT_EQ(withheld[0].reason, "opt-out");
  EXPECT_NE(withheld[0].rule.find("national data opt-out"), std::string::npos);
  EXPECT_NE(withheld[0].rule.find("route research"), std::string::npos);
  EXPECT_EQ(withheld[0].rule.find(kPatient), std::string::npos);

  auto other = matches_all();
  withheld.clear();
  gate.withhold(kOther, other, 0, withheld);
  EXPECT_TRUE(withheld.empty());
  EXPECT_EQ(kept(other).size(), 3u);
}

TEST(OptOut, ADestinationAlsoReachedForDirectCareIsDelivered) {
  auto config = two_routes();
  config.routes[0].to.push_back("analytics");
  ConsentGate gate(config);
  gate.set_opt_out(std::make_shared<const std::unordered_set<std::string>>(std::unordered_set<std::string>{kPatient}));
  std::vector<RouteMatch> m = {{"care", {"gp-a", "analytics"}}, {"research", {"analytics"}}};
  std::vector<Withholding> withheld;
  gate.withhold(kPatient, m, 0, withheld);
  EXPECT_TRUE(withheld.empty());
  EXPECT_EQ(kept(m), (std::vector<std::string>{"gp-a", "analytics"}));
}

TEST(ConsentDeny, RecipientByOdsCodeWithholdsThatPartnerOnly) {
  ConsentGate gate(two_routes());
  auto doc = json(consent("c1", "active", R"(,"actor":[{"role":{"text":"recipient"},
      "reference":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"8JK99"}}}])"));
  EXPECT_EQ(gate.learn(doc, "rtx"), 1u);
  auto m = matches_all();
  std::vector<Withholding> withheld;
  gate.withhold(kPatient, m, 0, withheld);
  EXPECT_EQ(kept(m), (std::vector<std::string>{"gp-a", "analytics"}));
  ASSERT_EQ(withheld.size(), 1u);
  EXPECT_EQ(withheld[0].destination, "charity");
  EXPECT_EQ(withheld[0].reason, "consent");
  EXPECT_NE(withheld[0].rule.find("Consent/c1 provision.provision[0] deny recipient=8JK99"), std::string::npos)
      << withheld[0].rule;
}

TEST(ConsentDeny, PurposeResearchWithholdsSecondaryUseOnly) {
  ConsentGate gate(two_routes());
  auto doc = json(consent("c2", "active",
                          R"(,"purpose":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActReason","code":"HRESCH"}])"));
  gate.learn(doc, "rtx");
  auto m = matches_all();
  std::vector<Withholding> withheld;
  gate.withhold(kPatient, m, 0, withheld);
  EXPECT_EQ(kept(m), (std::vector<std::string>{"gp-a", "charity"}));
  ASSERT_EQ(withheld.size(), 1u);
  EXPECT_NE(withheld[0].rule.find("purpose=secondary-use"), std::string::npos) << withheld[0].rule;
}

TEST(ConsentDeny, UnknownPurposeCodeDeniesEveryPurpose) {
  ConsentGate gate(two_routes());
  gate.learn(json(consent("c3", "active", R"(,"purpose":[{"system":"urn:x","code":"SOMETHING"}])")), "rtx");
  auto m = matches_all();
  std::vector<Withholding> withheld;
  gate.withhold(kPatient, m, 0, withheld);
  EXPECT_TRUE(kept(m).empty());
  EXPECT_EQ(withheld.size(), 3u);
}

TEST(ConsentDeny, PeriodBoundsTheRule) {
  ConsentGate gate(two_routes());
  gate.learn(json(consent("c4", "active", R"(,"period":{"start":"2026-01-01","end":"2026-06-30"})")), "rtx");
  const std::int64_t jan_2026 = 1767225600000 + 86'400'000;  // 2026-01-02
  const std::int64_t jul_2026 = 1782864000000;               // 2026-07-01
  auto inside = matches_all();
  std::vector<Withholding> withheld;
  gate.withhold(kPatient, inside, jan_2026, withheld);
  EXPECT_EQ(withheld.size(), 3u);
  auto after = matches_all();
  withheld.clear();
  gate.withhold(kPatient, after, jul_2026, withheld);
  EXPECT_TRUE(withheld.empty());
}

TEST(ConsentDeny, InactiveOrPermitOnlyDeniesNothingAndALaterVersionReplacesTheRules) {
  ConsentGate gate(two_routes());
  gate.learn(json(consent("c5", "active", "")), "rtx");
  auto m = matches_all();
  std::vector<Withholding> withheld;
  gate.withhold(kPatient, m, 0, withheld);
  EXPECT_EQ(withheld.size(), 3u);

  gate.learn(json(consent("c5", "inactive", "")), "rtx");  // the same Consent, withdrawn
  auto again = matches_all();
  withheld.clear();
  gate.withhold(kPatient, again, 0, withheld);
  EXPECT_TRUE(withheld.empty());
}

TEST(ConsentDeny, ConsentsInsideABundleAreLearnt) {
  ConsentGate gate(two_routes());
  auto bundle = json(R"({"resourceType":"Bundle","type":"transaction","entry":[{"resource":)" +
                     consent("c6", "active", "") + "}]}");
  EXPECT_EQ(gate.learn(bundle, "rtx"), 1u);
  auto m = matches_all();
  std::vector<Withholding> withheld;
  gate.withhold(kPatient, m, 0, withheld);
  EXPECT_EQ(withheld.size(), 3u);
}

TEST(ConsentFile, NdjsonLinesWithProblemsByLine) {
  std::string one_line = consent("f1", "active", "");
  std::erase(one_line, '\n');
  auto file = parse_consents_ndjson(one_line + "\n{not json\n" +
                                    R"({"resourceType":"Patient"})" + "\n");
  EXPECT_EQ(file.consents.size(), 1u);
  ASSERT_EQ(file.problems.size(), 2u);
  EXPECT_EQ(file.problems[0], "line 2: not JSON");
  EXPECT_EQ(file.problems[1], "line 3: not a Consent resource");
}

TEST(ConsentFileWatcher, LoadsAtStartAndAgainWhenTheFileChanges) {
  test::TempDir dir;
  const auto path = dir.path() / "opt-out.txt";
  { std::ofstream(path) << kPatient << "\n"; }
  ConsentGate gate(two_routes());
  ConsentSettings settings;
  settings.opt_out_file = path;
  settings.poll_every = std::chrono::milliseconds(20);
  ConsentFileWatcher watcher(gate, settings);
  EXPECT_EQ(gate.opt_out_size(), 1u);
  watcher.start();
  { std::ofstream(path) << kPatient << "\n" << kOther << "\n"; }
  for (int i = 0; i < 500 && gate.opt_out_size() != 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(gate.opt_out_size(), 2u);
}

// The consents file is replaced whole on each change: a deny added later applies, and one
// taken out of the file no longer does.
TEST(ConsentFileWatcher, TheConsentsFileIsReloadedWholeWhenItChanges) {
  test::TempDir dir;
  const auto path = dir.path() / "consents.ndjson";
  std::string deny = consent("f1", "active", R"(,"actor":[{"role":{"text":"recipient"},
      "reference":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"8JK99"}}}])");
  std::erase(deny, '\n');
  { std::ofstream(path) << ""; }
  ConsentGate gate(two_routes());
  ConsentSettings settings;
  settings.consents_file = path;
  settings.poll_every = std::chrono::milliseconds(20);
  ConsentFileWatcher watcher(gate, settings);
  auto withheld_now = [&] {
    auto m = matches_all();
    std::vector<Withholding> withheld;
    gate.withhold(kPatient, m, 0, withheld);
    return withheld.size();
  };
  EXPECT_EQ(withheld_now(), 0u);
  watcher.start();
  { std::ofstream(path) << deny << "\n"; }
  for (int i = 0; i < 500 && withheld_now() != 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(withheld_now(), 1u);
  { std::ofstream(path) << "\n"; }
  for (int i = 0; i < 500 && withheld_now() != 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(withheld_now(), 0u);
}

TEST(ConsentFileWatcher, AMissingFileAtStartIsAnError) {
  test::TempDir dir;
  ConsentGate gate(two_routes());
  ConsentSettings settings;
  settings.opt_out_file = dir.path() / "absent.txt";
  EXPECT_THROW(ConsentFileWatcher(gate, settings), std::runtime_error);
}

// At start-up the rules are learnt again from the stored records, read a page of 1,000 at a
// time. A Consent in the oldest of 1,200 Bundles is on the second page: found, and learnt once
// (reading the next page's cursor from a row already moved out once made this loop for ever).
TEST(ConsentRebuild, ReadsEveryPageOfTheStoredBundles) {
  test::TempDir dir;
  SqliteStoreSettings settings;
  settings.path = dir.path() / "store.db";
  auto store = make_sqlite_store(settings);
  auto bundle = [](const std::string& entry) {
    NewMessage m;
    m.id = new_message_id();
    m.source = "rtx";
    m.channel = "fhir-http";
    m.resource_type = "Bundle";
    m.patient_key = kPatient;
    m.content_type = "application/fhir+json";
    m.body = R"({"resourceType":"Bundle","type":"collection","entry":[)" + entry + "]}";
    m.received_at_ms = now_ms();
    m.destinations = {"gp-a"};
    return m;
  };
  const std::string with_consent = R"({"resource":)" + consent("c1", "active", R"(,"actor":[{"role":{"text":"recipient"},
      "reference":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"8JK99"}}}])") + "}";
  ASSERT_TRUE(test::run_async(store->commit(bundle(with_consent))));
  {
    asio::io_context io;
    int failed = 0;
    for (int i = 0; i < 1200; ++i)
      asio::co_spawn(io, store->commit(bundle(R"({"resource":{"resourceType":"Patient"}})")),
                     [&failed](std::exception_ptr e, Result<Committed> r) { failed += (e || !r) ? 1 : 0; });
    io.run();
    ASSERT_EQ(failed, 0);
  }
  ConsentGate gate(two_routes());
  EXPECT_EQ(gate.rebuild_from_store(*store), 1u);
  auto m = matches_all();
  std::vector<Withholding> withheld;
  gate.withhold(kPatient, m, 0, withheld);
  ASSERT_EQ(withheld.size(), 1u);
  EXPECT_EQ(withheld[0].destination, "charity");
}

}  // namespace
}  // namespace tellonce
