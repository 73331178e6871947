// End to end for the audit log (issue 12): the real `tellonce serve`, a real demo-sink partner and
// the real `tellonce audit verify`: records in, delivered, a replay and a body view with their
// actor and reason; tampering named by line; a kill -9 under load caught up at the next start.
#include "harness.hpp"
#include "records.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::vector<std::string> lines_of(const fs::path& p) {
  std::vector<std::string> out;
  std::istringstream in(read_file(p));
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

struct Cli {
  int status;
  std::string output;
};
Cli run_cli(const fs::path& dir, std::vector<std::string> args) {
  // Through sh, into a file: the harness reads a child's stdout only while waiting for a line.
  static int n = 0;
  const fs::path out = dir / ("cli-" + std::to_string(++n) + ".out");
  std::string command = "exec '" + tellonce_binary().string() + "'";
  for (const auto& a : args) command += " '" + a + "'";
  command += " > '" + out.string() + "' 2>&1";
  Process p({"/bin/sh", "-c", command}, dir / ("cli-" + std::to_string(n) + ".log"));
  int status = p.wait_exit(30s);
  return {status, read_file(out)};
}

// The entries of `kind` for message `id` (by plain text: the log's own format).
std::size_t count_entries(const std::vector<std::string>& lines, const std::string& kind, const std::string& id) {
  std::size_t n = 0;
  for (const auto& l : lines)
    if (l.find("\"kind\":\"" + kind + "\"") != std::string::npos && l.find("\"message\":\"" + id + "\"") != std::string::npos)
      ++n;
  return n;
}

TEST(AuditIntegration, RecordsDeliveriesAReplayAndABodyViewVerifyAndTamperingIsNamedByLine) {
  TempDir dir;
  ReservedPort sink_port;
  Sink gp(dir.path(), "gp-a", sink_port, {"--fail-status", "400", "--fail-first", "1"});
  Broker broker(dir.path(), one_route_config(sink_port));
  Client client;
  broker.start();
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    std::string local_id = "p";
    local_id += std::to_string(i);  // not "p" + ...: g++ 12 warns about that falsely (-Wrestrict)
    auto r = client.post_fhir(broker.base() + "/fhir/Patient", patient(nhs_number(20 + i), "A81001", local_id), "rtx");
    ASSERT_EQ(r.status, 202) << r.body;
    ids.push_back(r.headers["x-tellonce-message-id"]);
    // The first is refused for good (HTTP 400, the sink's first answer): dead. Waiting for that
    // before sending the others makes it the first the sink sees, whatever the delivery timing.
    if (i == 0)
      ASSERT_NE(wait_for_state(client, broker.base(), ids[0], "failed", 20s).find(R"("state":"failed")"), std::string::npos);
  }
  // The first, dead, is replayed by an operator with a reason.
  auto replay = client.request("POST", broker.base() + "/api/messages/" + ids[0] + "/replay?reason=partner%20fixed", "",
                               {"X-Tellonce-Actor: cli:it-operator"});
  ASSERT_EQ(replay.status, 200) << replay.body;
  for (const auto& id : ids) wait_for_state(client, broker.base(), id, "delivered", 20s);
  auto body = client.request("GET", broker.base() + "/api/messages/" + ids[1] + "/body", "",
                             {"X-Tellonce-Actor: cli:it-viewer", "X-Tellonce-Reason: complaint 42"});
  ASSERT_EQ(body.status, 200);
  broker.process().signal(SIGHUP);  // a reload: audited as config-reloaded
  ASSERT_TRUE(broker.process().wait_for_line("reloaded TLS certificates", 10s)) << broker.output();
  ASSERT_EQ(broker.stop(), 0);

  const fs::path log = dir.path() / "data" / "audit.ndjson";
  auto lines = lines_of(log);
  for (const auto& id : ids) {
    EXPECT_EQ(count_entries(lines, "received", id), 1u) << id;
    EXPECT_EQ(count_entries(lines, "delivered", id), 1u) << id;
  }
  EXPECT_EQ(count_entries(lines, "dead", ids[0]), 1u);
  std::string replayed, viewed;
  for (const auto& l : lines) {
    if (l.find("\"kind\":\"replayed\"") != std::string::npos) replayed = l;
    if (l.find("\"kind\":\"body-viewed\"") != std::string::npos) viewed = l;
  }
  // The actor is the signed-in operator (the harness client signs in as itest-admin), its label after "via".
  EXPECT_NE(replayed.find(R"("actor":"itest-admin via cli:it-operator")"), std::string::npos) << replayed;
  EXPECT_NE(replayed.find(R"("reason":"partner fixed")"), std::string::npos) << replayed;
  EXPECT_NE(viewed.find(R"("actor":"itest-admin via cli:it-viewer")"), std::string::npos) << viewed;
  EXPECT_NE(viewed.find(R"("reason":"complaint 42")"), std::string::npos) << viewed;
  EXPECT_EQ(std::count_if(lines.begin(), lines.end(),
                          [](const std::string& l) {
                            return l.find(R"("kind":"config-reloaded","actor":"signal:SIGHUP")") != std::string::npos &&
                                   l.find(R"("outcome":"ok","detail":"tls certificates")") != std::string::npos;
                          }),
            1);
  // No patient data: the NHS numbers sent are nowhere in the log.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(read_file(log).find(nhs_number(20 + i)), std::string::npos);

  auto ok = run_cli(dir.path(), {"audit", "verify", "--config", broker.config_path().string()});
  EXPECT_EQ(ok.status, 0) << ok.output;

  auto fhir = run_cli(dir.path(), {"audit", "export", "--fhir", log.string()});
  ASSERT_EQ(fhir.status, 0) << fhir.output;
  EXPECT_EQ(std::count(fhir.output.begin(), fhir.output.end(), '\n'), static_cast<long>(lines.size())) << fhir.output;
  write_file(dir.path() / "audit-events.ndjson", fhir.output);
  auto valid = run_cli(dir.path(), {"validate", "--ndjson", (dir.path() / "audit-events.ndjson").string()});
  EXPECT_EQ(valid.status, 0) << valid.output;
  // Every line validated, with no errors (the local subtype codings draw an extensible-binding warning).
  EXPECT_NE(valid.output.find("line " + std::to_string(lines.size()) + ":"), std::string::npos) << valid.output;
  EXPECT_EQ(valid.output.find(R"("severity":"error")"), std::string::npos) << valid.output;

  const std::string original = read_file(log);
  // One byte of line 4 changed.
  auto edited = lines;
  auto at = edited[3].find("\"kind\":\"") + 8;
  edited[3][at] = edited[3][at] == 'x' ? 'y' : 'x';
  write_file(log, joined(edited));
  auto changed = run_cli(dir.path(), {"audit", "verify", log.string()});
  EXPECT_EQ(changed.status, 1) << changed.output;
  EXPECT_NE(changed.output.find("audit.ndjson:4: changed"), std::string::npos) << changed.output;

  // Line 2 deleted.
  auto shorter = lines;
  shorter.erase(shorter.begin() + 1);
  write_file(log, joined(shorter));
  auto removed = run_cli(dir.path(), {"audit", "verify", log.string()});
  EXPECT_EQ(removed.status, 1) << removed.output;
  EXPECT_NE(removed.output.find("audit.ndjson:2: removed"), std::string::npos) << removed.output;

  write_file(log, original);
  EXPECT_EQ(run_cli(dir.path(), {"audit", "verify", log.string()}).status, 0);
}

TEST(AuditIntegration, AKillUnderLoadLosesNoAcknowledgedReceiptFromTheAudit) {
  TempDir dir;
  ReservedPort sink_port;
  Sink gp(dir.path(), "gp-a", sink_port);
  // The writer gathers for 2 s before each batch: a kill lands while acknowledged receipts are
  // still only in memory, so the next start must recover them from the store.
  Broker broker(dir.path(), one_route_config(sink_port) + "audit:\n  flush_delay: 2s\n");
  broker.start();
  std::mutex mu;
  std::vector<std::string> acknowledged;
  std::atomic<bool> stop{false};
  std::vector<std::thread> senders;
  const std::string base = broker.base();
  for (int t = 0; t < 4; ++t) {
    senders.emplace_back([&, t] {
      Client c;
      for (int i = 0; !stop.load(); ++i) {
        auto r = c.post_fhir(base + "/fhir/Patient", patient(nhs_number(1000 + t * 10000 + i), "A81001"), "rtx");
        if (r.status != 202) continue;
        std::lock_guard lk(mu);
        acknowledged.push_back(r.headers["x-tellonce-message-id"]);
      }
    });
  }
  for (int i = 0; i < 200; ++i) {
    std::this_thread::sleep_for(10ms);
    std::lock_guard lk(mu);
    if (acknowledged.size() >= 50) break;
  }
  broker.crash();
  stop = true;
  for (auto& s : senders) s.join();
  ASSERT_GE(acknowledged.size(), 1u);

  broker.start();
  ASSERT_EQ(broker.stop(), 0);

  const fs::path log = dir.path() / "data" / "audit.ndjson";
  auto verified = run_cli(dir.path(), {"audit", "verify", log.string()});
  EXPECT_EQ(verified.status, 0) << verified.output;
  auto lines = lines_of(log);
  std::set<std::string> received;
  std::size_t recovered = 0;
  for (const auto& l : lines) {
    if (l.find("recovered at start-up") != std::string::npos) ++recovered;
    if (l.find("\"kind\":\"received\"") == std::string::npos) continue;
    auto at = l.find("\"message\":\"");
    if (at != std::string::npos) received.insert(l.substr(at + 11, l.find('"', at + 11) - at - 11));
  }
  for (const auto& id : acknowledged) EXPECT_TRUE(received.count(id)) << "acknowledged " << id << " is not in the audit log";
  EXPECT_GE(recovered, 1u) << "the kill lost nothing from the audit, so the catch-up was not exercised";
  for (const auto& id : acknowledged) EXPECT_LE(count_entries(lines, "received", id), 1u) << id;
}

// The one entry of `kind` for message `id`, or "" (by plain text, as count_entries).
std::string entry_of(const std::vector<std::string>& lines, const std::string& kind, const std::string& id) {
  for (const auto& l : lines)
    if (l.find("\"kind\":\"" + kind + "\"") != std::string::npos && l.find("\"message\":\"" + id + "\"") != std::string::npos)
      return l;
  return {};
}

TEST(AuditIntegration, AnOptOutWithholdingIsAuditedWithoutPatientDataAndTheLogVerifies) {
  TempDir dir;
  ReservedPort gp_port, analytics_port;  // analytics is never called: its one record is withheld
  Sink gp(dir.path(), "gp-a", gp_port);
  write_file(dir.path() / "opt-out.txt", nhs_number(71) + "\n");
  Broker broker(dir.path(), R"(api:
  listen: 127.0.0.1:0
store:
  path: data/tellonce.db
consent:
  opt_out_file: opt-out.txt
partners:
  - id: rtx
    kind: trust
    ods: RTX
  - id: gp-a
    kind: primary-care
    ods: A81001
    endpoint: { type: fhir-rest, url: "http://127.0.0.1:)" + std::to_string(gp_port.port()) + R"(/fhir", timeout: 2s }
  - id: analytics
    kind: trust
    ods: X26
    endpoint: { type: fhir-rest, url: "http://127.0.0.1:)" + std::to_string(analytics_port.port()) + R"(/fhir", timeout: 2s }
)" + std::string(kFhirHttpInboundYaml) + R"(routes:
  - id: care
    match: { resource_type: [Patient] }
    to: [gp-a]
  - id: research
    purpose: secondary-use
    match: { resource_type: [Patient] }
    to: [analytics]
)");
  broker.start();
  Client client;
  auto r = client.post_fhir(broker.base() + "/fhir/Patient", patient(nhs_number(71), "A81001"), "rtx");
  ASSERT_EQ(r.status, 202) << r.body;
  const std::string id = r.headers["x-tellonce-message-id"];
  wait_for_state(client, broker.base(), id, "delivered", 10s);
  ASSERT_EQ(broker.stop(), 0);

  const fs::path log = dir.path() / "data" / "audit.ndjson";
  auto lines = lines_of(log);
  EXPECT_EQ(count_entries(lines, "withheld", id), 1u) << joined(lines);
  const auto withheld = entry_of(lines, "withheld", id);
  EXPECT_NE(withheld.find(R"("actor":"tellonce","source":"rtx","channel":"fhir-http")"), std::string::npos) << withheld;
  EXPECT_NE(withheld.find(R"("resourceType":"Patient","destination":"analytics","outcome":"opt-out")"), std::string::npos)
      << withheld;
  EXPECT_NE(withheld.find(R"j("detail":"national data opt-out (purpose secondary-use, route research)")j"),
            std::string::npos) << withheld;
  EXPECT_EQ(count_entries(lines, "delivered", id), 1u);  // the direct-care destination still got it
  EXPECT_EQ(read_file(log).find(nhs_number(71)), std::string::npos);
  auto verified = run_cli(dir.path(), {"audit", "verify", log.string()});
  EXPECT_EQ(verified.status, 0) << verified.output;
}

TEST(AuditIntegration, MailboxCollectionsAndExpiriesAreAuditedOnceAndNotAddedAgainAtTheNextStart) {
  TempDir dir;
  // The carers collect what they are sent; the food bank's records expire after a second.
  Broker broker(dir.path(), R"(api:
  listen: 127.0.0.1:0
store:
  path: data/tellonce.db
insecure_clear_api_keys: true
partners:
  - id: rtx
    kind: trust
    ods: RTX
  - id: carers
    kind: vcse
    ods: 8JK98
    api_keys: [it-carers-key]
    endpoint: { type: mailbox, expire_after: 1h }
  - id: pantry
    kind: vcse
    ods: 8JK97
    api_keys: [it-pantry-key]
    endpoint: { type: mailbox, expire_after: 1s }
)" + std::string(kFhirHttpInboundYaml) + R"(routes:
  - id: patients-to-carers
    match: { resource_type: Patient }
    to: [carers]
  - id: observations-to-pantry
    match: { resource_type: Observation }
    to: [pantry]
)");
  broker.start();
  Client client;
  auto sent = client.post_fhir(broker.base() + "/fhir/Patient", patient(nhs_number(72), "A81001"), "rtx");
  ASSERT_EQ(sent.status, 202) << sent.body;
  const std::string collected = sent.headers["x-tellonce-message-id"];
  sent = client.post_fhir(broker.base() + "/fhir/Observation", observation(nhs_number(72)), "rtx");
  ASSERT_EQ(sent.status, 202) << sent.body;
  const std::string expired = sent.headers["x-tellonce-message-id"];

  wait_for_state(client, broker.base(), collected, "delivering", 10s);  // held in the carers' mailbox
  const std::string inbox = broker.base() + "/mailbox/carers/inbox/" + collected;
  HttpReply ack;
  for (int i = 0; i < 200; ++i) {  // the dispatcher holds it asynchronously
    ack = client.request("PUT", inbox + "/status/acknowledged", "", {"Authorization: Bearer it-carers-key"});
    if (ack.status != 404) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(ack.status, 200) << ack.body;
  wait_for_state(client, broker.base(), collected, "delivered", 10s);
  auto trail = wait_for_state(client, broker.base(), expired, "failed", 10s);
  ASSERT_EQ(json_string_at(trail, "/deliveries/0/status"), "expired") << trail;
  ASSERT_EQ(broker.stop(), 0);

  const fs::path log = dir.path() / "data" / "audit.ndjson";
  auto check = [&](const char* when) {
    auto lines = lines_of(log);
    EXPECT_EQ(count_entries(lines, "delivered", collected), 1u) << when << "\n" << joined(lines);
    EXPECT_NE(entry_of(lines, "delivered", collected).find(R"("actor":"carers","message":")" + collected +
                                                           R"(","destination":"carers","outcome":"ok")"),
              std::string::npos) << when << "\n" << joined(lines);
    EXPECT_EQ(count_entries(lines, "expired", expired), 1u) << when << "\n" << joined(lines);
    EXPECT_NE(entry_of(lines, "expired", expired).find(R"("destination":"pantry","outcome":"expired")"),
              std::string::npos) << when << "\n" << joined(lines);
    EXPECT_EQ(read_file(log).find("recovered at start-up"), std::string::npos) << when << "\n" << joined(lines);
  };
  check("as logged live");
  // The start-up catch-up finds both settled in the store, and both already in the log.
  broker.start();
  ASSERT_EQ(broker.stop(), 0);
  check("after a restart");
  EXPECT_EQ(read_file(log).find(nhs_number(72)), std::string::npos);
  auto verified = run_cli(dir.path(), {"audit", "verify", log.string()});
  EXPECT_EQ(verified.status, 0) << verified.output;
  // In the FHIR export the collecting partner is the requesting agent, as a partner.
  auto fhir = run_cli(dir.path(), {"audit", "export", "--fhir", log.string()});
  ASSERT_EQ(fhir.status, 0) << fhir.output;
  EXPECT_NE(fhir.output.find(R"({"who":{"identifier":{"system":"urn:tellonce:partner","value":"carers"}},"requestor":true})"),
            std::string::npos) << fhir.output;
}

}  // namespace
}  // namespace tellonce::itest
