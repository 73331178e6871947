// The audit log (broker/audit): the chain, what verify detects, reopening, the start-up
// catch-up from a store, and the FHIR export against the broker's own validator.
#include "broker/audit/audit_log.hpp"

#include "support/null_store.hpp"
#include "support/run_async.hpp"
#include "support/temp_dir.hpp"
#include "tellonce/json.hpp"
#include "tellonce/message.hpp"
#include "tellonce/validator.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <thread>

namespace tellonce {
namespace {

namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void spit(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}
std::vector<std::string> lines_of(const fs::path& p) {
  std::vector<std::string> out;
  std::istringstream in(slurp(p));
  for (std::string l; std::getline(in, l);) out.push_back(l + "\n");
  return out;
}
std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l;
  return s;
}

AuditEntry received(const std::string& id) {
  AuditEntry e;
  e.kind = AuditKind::received;
  e.actor = e.source = "rtx";
  e.channel = "fhir-http";
  e.message_id = id;
  e.resource_type = "Patient";
  e.outcome = "ok";
  return e;
}

// Writes n entries (the last one waited for) and closes the log.
void write_entries(const fs::path& path, int n, int first = 1) {
  asio::io_context io;
  auto log = open_audit_log(AuditLogSettings{path, {}});
  for (int i = first; i < first + n - 1; ++i) log->record(received("m" + std::to_string(i)));
  AuditEntry last = received("m" + std::to_string(first + n - 1));
  last.kind = AuditKind::body_viewed;
  last.actor = "cli:alice";
  last.reason = "complaint 17";
  auto durable = test::run_async(io, log->record_durable(std::move(last)));
  ASSERT_TRUE(durable) << durable.error().summary();
  log->close();
}

class AuditLogTest : public ::testing::Test {
 protected:
  test::TempDir dir;
  fs::path path = dir / "audit.ndjson";
};

TEST_F(AuditLogTest, EntriesChainAndVerify) {
  write_entries(path, 5);
  auto lines = lines_of(path);
  ASSERT_EQ(lines.size(), 5u);
  std::string prev = kAuditGenesisHash;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    std::string why;
    auto l = parse_audit_line(std::string_view(lines[i]).substr(0, lines[i].size() - 1), why);
    ASSERT_TRUE(l) << why;
    EXPECT_EQ(l->seq, static_cast<std::int64_t>(i + 1));
    EXPECT_EQ(l->prev, prev);
    prev = l->hash;
  }
  EXPECT_NE(lines[4].find("\"reason\":\"complaint 17\""), std::string::npos) << lines[4];
  auto report = verify_audit_log(path);
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_EQ(report.entries, 5);
  EXPECT_TRUE(report.warning.empty()) << report.warning;
}

// record() entries are written at once but synced (and named by the head) at most a second
// later, so the log does not fdatasync 50 times a second beside the store. With no more traffic
// the writer still syncs them: the head comes to name the last one by itself.
TEST_F(AuditLogTest, EntriesNobodyWaitsForAreSyncedWithoutMoreTraffic) {
  auto log = open_audit_log(AuditLogSettings{path, {}});
  auto head_names = [&](int seq) {
    std::ifstream in(audit_head_path(path));
    std::stringstream text;
    text << in.rdbuf();
    return text.str().find("\"seq\":" + std::to_string(seq) + ",") != std::string::npos;
  };
  auto wait_for_head = [&](int seq) {
    for (int i = 0; i < 500 && !head_names(seq); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return head_names(seq);
  };
  log->record(received("m1"));
  ASSERT_TRUE(wait_for_head(1));  // the first batch: no sync yet, so synced at once
  log->record(received("m2"));
  log->record(received("m3"));
  EXPECT_TRUE(wait_for_head(3));
  EXPECT_EQ(lines_of(path).size(), 3u);
  log->close();
  auto report = verify_audit_log(path);
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_TRUE(report.warning.empty()) << report.warning;
}

TEST_F(AuditLogTest, VerifyNamesAChangedByte) {
  write_entries(path, 5);
  auto lines = lines_of(path);
  auto at = lines[2].find("rtx");
  lines[2][at] = 'R';  // one byte of entry 3
  spit(path, joined(lines));
  auto report = verify_audit_log(path);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.bad_line, 3);
  EXPECT_EQ(report.problem.rfind("changed", 0), 0u) << report.problem;
}

TEST_F(AuditLogTest, VerifyNamesARemovedEntry) {
  write_entries(path, 5);
  auto lines = lines_of(path);
  lines.erase(lines.begin() + 1);
  spit(path, joined(lines));
  auto report = verify_audit_log(path);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.bad_line, 2);
  EXPECT_EQ(report.problem.rfind("removed", 0), 0u) << report.problem;
}

TEST_F(AuditLogTest, VerifyNamesReorderedEntries) {
  write_entries(path, 5);
  auto lines = lines_of(path);
  std::swap(lines[1], lines[3]);
  spit(path, joined(lines));
  auto report = verify_audit_log(path);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.bad_line, 2);
  EXPECT_EQ(report.problem.rfind("reordered", 0), 0u) << report.problem;
}

TEST_F(AuditLogTest, VerifyNamesATruncatedTailFromTheHead) {
  write_entries(path, 5);
  auto lines = lines_of(path);
  lines.pop_back();
  spit(path, joined(lines));
  auto report = verify_audit_log(path);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.bad_line, 5);
  EXPECT_EQ(report.problem.rfind("truncated", 0), 0u) << report.problem;
  // Without its head the same cut cannot be seen: said as a warning, not passed silently.
  fs::remove(audit_head_path(path));
  report = verify_audit_log(path);
  EXPECT_TRUE(report.ok) << report.problem;
  EXPECT_NE(report.warning.find("cannot be detected"), std::string::npos) << report.warning;
}

TEST_F(AuditLogTest, ARewrittenChainStillDisagreesWithItsHead) {
  // Entry 2 changed and every later entry re-hashed: the chain is whole again, the head is not.
  write_entries(path, 4);
  auto lines = lines_of(path);
  std::vector<AuditLine> parsed;
  for (auto& l : lines) {
    std::string why;
    parsed.push_back(*parse_audit_line(std::string_view(l).substr(0, l.size() - 1), why));
  }
  parsed[1].entry.actor = "someone-else";
  std::string prev = kAuditGenesisHash, text;
  for (auto& p : parsed) {
    auto line = audit_line(p.seq, p.at_ms, p.entry, prev);
    prev = line.substr(line.size() - 67, 64);
    text += line;
  }
  spit(path, text);
  auto report = verify_audit_log(path);
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(report.bad_line, 4);
  EXPECT_NE(report.problem.find("head"), std::string::npos) << report.problem;
}

TEST_F(AuditLogTest, ReopeningContinuesTheChainAndDropsAnUnfinishedLine) {
  write_entries(path, 3);
  {
    std::ofstream out(path, std::ios::binary | std::ios::app);
    out << R"({"seq":4,"at":1,"kind":"recei)";  // a batch cut by a crash: never reported durable
  }
  write_entries(path, 2, 4);
  auto report = verify_audit_log(path);
  EXPECT_TRUE(report.ok) << report.bad_line << ": " << report.problem;
  EXPECT_EQ(report.entries, 5);
  EXPECT_EQ(lines_of(path).size(), 5u);
}

TEST_F(AuditLogTest, OpeningACutLogIsRefused) {
  write_entries(path, 3);
  auto lines = lines_of(path);
  lines.pop_back();
  spit(path, joined(lines));
  EXPECT_THROW(open_audit_log(AuditLogSettings{path, {}}), std::runtime_error);
}

// A store whose facts are given by the test.
class FactStore : public test::NullStore {
 public:
  std::vector<StoredFact> facts;
  std::int64_t asked_since = -1;
  Result<std::vector<StoredFact>> facts_since(std::int64_t since_ms) override {
    asked_since = since_ms;
    std::vector<StoredFact> out;
    for (const auto& f : facts)
      if (f.at_ms >= since_ms) out.push_back(f);
    return out;
  }
};

TEST_F(AuditLogTest, CatchUpAddsOnlyWhatTheLogLacks) {
  write_entries(path, 3);  // m1 and m2 received, m3 viewed
  FactStore store;
  const auto now = now_ms();
  auto fact = [&](std::string id, std::string destination, DeliveryStatus status) {
    StoredFact f;
    f.at_ms = now;
    f.message_id = std::move(id);
    f.source = "rtx";
    f.channel = "fhir-http";
    f.resource_type = "Patient";
    f.destination = std::move(destination);
    f.status = status;
    f.attempts = 1;
    return f;
  };
  store.facts = {fact("m1", "", {}), fact("m2", "", {}), fact("m9", "", {}), fact("m9", "gp-a", DeliveryStatus::delivered),
                 fact("m2", "gp-a", DeliveryStatus::dead)};
  {
    auto log = open_audit_log(AuditLogSettings{path, {}});
    auto added = log->catch_up(store);
    ASSERT_TRUE(added) << added.error().summary();
    EXPECT_EQ(*added, 3u);  // m9 received, m9 delivered, m2 dead; m1 and m2 were there
    EXPECT_LT(store.asked_since, now);
    log->close();
  }
  auto lines = lines_of(path);
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_NE(lines[3].find(R"("kind":"received")"), std::string::npos) << lines[3];
  EXPECT_NE(lines[3].find(R"("message":"m9")"), std::string::npos) << lines[3];
  EXPECT_NE(lines[3].find("recovered at start-up"), std::string::npos) << lines[3];
  EXPECT_NE(lines[5].find(R"("kind":"dead")"), std::string::npos) << lines[5];
  EXPECT_TRUE(verify_audit_log(path).ok);
  // A second start finds nothing more to add.
  auto log = open_audit_log(AuditLogSettings{path, {}});
  auto again = log->catch_up(store);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, 0u);
}

TEST_F(AuditLogTest, CatchUpNamesTheCollectingPartnerAndSkipsACollectionLoggedLive) {
  const auto settled_at = now_ms();
  {
    auto log = open_audit_log(AuditLogSettings{path, {}});
    AuditEntry live;  // as the mailbox adapter records a collection, after the store's commit
    live.kind = AuditKind::delivered;
    live.actor = live.destination = "carers";
    live.message_id = "m5";
    live.outcome = "ok";
    log->record(std::move(live));
    log->close();
  }
  FactStore store;
  auto delivered = [&](std::string id, std::string destination, std::string partner_code) {
    StoredFact f;
    f.at_ms = settled_at;
    f.message_id = std::move(id);
    f.destination = std::move(destination);
    f.status = DeliveryStatus::delivered;
    f.attempts = 1;
    f.partner_code = std::move(partner_code);
    return f;
  };
  store.facts = {delivered("m5", "carers", "acknowledged"), delivered("m6", "carers", "acknowledged"),
                 delivered("m7", "gp-a", "HTTP 201")};
  auto log = open_audit_log(AuditLogSettings{path, {}});
  auto added = log->catch_up(store);
  ASSERT_TRUE(added) << added.error().summary();
  EXPECT_EQ(*added, 2u);  // m6 and m7; m5 was logged live
  log->close();
  auto lines = lines_of(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_NE(lines[1].find(R"("actor":"carers","message":"m6","destination":"carers")"), std::string::npos) << lines[1];
  EXPECT_NE(lines[2].find(R"("actor":"tellonce","message":"m7","destination":"gp-a")"), std::string::npos) << lines[2];
}

TEST_F(AuditLogTest, ExportIsValidFhirAuditEvents) {
  {
    asio::io_context io;
    auto log = open_audit_log(AuditLogSettings{path, {}});
    log->record(received("m1"));
    AuditEntry d = received("m1");
    d.kind = AuditKind::dead;
    d.actor = "tellonce";
    d.destination = "gp-a";
    d.outcome = "HTTP 400";
    log->record(d);
    AuditEntry r;
    r.kind = AuditKind::replay_requested;
    r.actor = "cli:bob";
    r.detail = "state=failed destination=gp-a: matched 1, replayed 1";
    r.reason = "partner fixed its endpoint";
    log->record(r);
    audit_config_reload(log.get(), "signal", "tls certificates");
    auto done = test::run_async(io, log->record_durable(received("m2")));
    ASSERT_TRUE(done);
    log->close();
  }
  std::ostringstream out, errors;
  EXPECT_EQ(export_audit_fhir(path, 0, out, errors), 5u);
  EXPECT_EQ(errors.str(), "");
  auto validator = make_fhir_validator(ValidatorSettings{fs::path(TELLONCE_SOURCE_DIR) / "schemas"});
  std::istringstream in(out.str());
  int n = 0;
  for (std::string line; std::getline(in, line); ++n) {
    auto doc = parse_json(line);
    ASSERT_TRUE(doc) << line;
    std::vector<Issue> issues;
    validator->validate(*doc, issues);
    for (const auto& i : issues) EXPECT_FALSE(i.is_error()) << i.location << ": " << i.diagnostics << "\n" << line;
  }
  EXPECT_EQ(n, 5);
  EXPECT_NE(out.str().find(R"("purposeOfEvent":[{"text":"partner fixed its endpoint"}])"), std::string::npos);
  EXPECT_NE(out.str().find(R"("code":"110106")"), std::string::npos);  // DICOM Export, for the delivery
  // A resource the validator refuses is still caught: the export is not checked by a test that passes anything.
  auto broken = parse_json(R"({"resourceType":"AuditEvent","recorded":"yesterday"})");
  ASSERT_TRUE(broken);
  std::vector<Issue> issues;
  validator->validate(*broken, issues);
  EXPECT_TRUE(std::any_of(issues.begin(), issues.end(), [](const Issue& i) { return i.is_error(); }));
}

}  // namespace
}  // namespace tellonce
