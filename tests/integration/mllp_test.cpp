// HL7 v2 over MLLP on the real processes, with clients nobody here wrote: Debian's python3-hl7
// `mllp_send` as a trust's sender (it exits 0 even on a rejection, so its MSA-1 is checked here)
// and its asyncio server (hl7.mllp, tests/integration/mllp_receiver.py) as a legacy v2 partner;
// `tellonce mllp-send`; and raw sockets for split and pipelined frames and for kill -9.
#include "harness.hpp"

#include "adapters/mllp_inbound/mllp_socket.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// An ADT^A01 for a patient registered with GP practice A81001; `id` is MSH-10 and also a local
// hospital number (PID-3, second repetition) so the delivered FHIR record can be told apart.
std::string adt_a01(const std::string& id, const std::string& facility = "RTX",
                    const std::string& nhs_number = "9449306753") {
  return "MSH|^~\\&|PAS|" + facility + "|TELLONCE|BROKER|20261130120000||ADT^A01^ADT_A01|" + id +
         "|P|2.4|||||GBR|UNICODE UTF-8|EN\r"
         "EVN|A01|20261130120000\r"
         "PID|1||" + nhs_number + "^^^NHS^NH~" + id + "^^^RTX^MR||SMITH^JOHN^^^MR||19800101|1|||"
         "1 HIGH STREET^^LEEDS^^LS1 1AA^GBR^H\r"
         "PD1|||DENSHAM SURGERY^^A81001|G1234567^WELBY^MARCUS^^^DR\r"
         "PV1|1|I|RTX^WARD1^BED1||||C1234567^DARWIN^SAMUEL^^^DR|||300|||||||||V" + id + "^^^RTX^VN|||||||||||||||||||||||||20261130120000\r";
}

// The same admission's discharge (ADT^A03, PV1-45 the discharge time).
std::string adt_a03(const std::string& id) {
  std::string m = adt_a01(id);
  m.replace(m.find("ADT^A01^ADT_A01"), 15, "ADT^A03^ADT_A03");
  m.replace(m.find("EVN|A01"), 7, "EVN|A03");
  m.replace(m.size() - 1, 1, "|20261201093000\r");  // PV1-45 after PV1-44
  return m;
}

// The broker: an MLLP channel for the trust (sender by MSH-4) on a reserved port; ADT from the
// trust goes to the GP's FHIR endpoint (a demo-sink), and discharges (routed on the v2 event) to
// a legacy v2 system (mllp_receiver.py) too; a Patient the GP posts goes to the legacy system.
std::string mllp_config(unsigned short mllp_port, unsigned short sink, unsigned short legacy) {
  return "api:\n  listen: 127.0.0.1:0\nstore:\n  path: data/tellonce.db\n"
         "delivery:\n  retry: { initial_backoff: 100ms, max_backoff: 200ms }\n"
         R"(partners:
  - id: rtx
    name: Royal Example NHS Trust
    kind: trust
    ods: RTX
  - id: gp-a
    name: Example Surgery A
    kind: primary-care
    ods: A81001
    endpoint: { type: fhir-rest, url: "http://127.0.0.1:)" + std::to_string(sink) + R"(/fhir", timeout: 5s, connect_timeout: 1s }
  - id: legacy
    name: Community Trust PAS
    kind: trust
    ods: RYX
    endpoint: { type: mllp, address: "127.0.0.1:)" + std::to_string(legacy) + R"(", ack_timeout: 2s, connect_timeout: 1s, receiving_application: LEGACYPAS, receiving_facility: RYX }
)" + std::string(kFhirHttpInboundYaml) + R"(  - id: trust-v2
    type: mllp
    listen: 127.0.0.1:)" + std::to_string(mllp_port) + R"(
routes:
  - id: adt-to-gp
    match: { source: [rtx] }
    to: [gp-a]
  - id: gp-updates-to-legacy
    match: { source: [gp-a], resource_type: Patient }
    to: [legacy]
  - id: discharges-to-legacy
    match: { source: [rtx], event: "http://terminology.hl7.org/CodeSystem/v2-0003|A03" }
    to: [legacy]
)";
}

struct CommandResult {
  int exit_code = -1;
  std::string output;
};

// Runs a shell command (its own output and errors captured), bounded by `timeout`.
CommandResult run(const std::string& command) {
  CommandResult r;
  FILE* p = ::popen(("timeout 30 " + command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) r.output.append(buf, n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// "<MSA-2> <MSA-1>" of one ACK frame.
std::string msa_of(const std::string& frame) {
  std::smatch m;
  if (!std::regex_search(frame, m, std::regex(R"(MSA\|([A-Z]{2})\|([^|\r]*))"))) return "?";
  return m[2].str() + " " + m[1].str();
}

// MSA-1 of each ACK in some text (mllp_send prints ACKs with CR segment ends).
std::vector<std::string> msa_codes(const std::string& text) {
  std::vector<std::string> out;
  std::regex msa(R"(MSA\|([A-Z]{2})\|)");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), msa); it != std::sregex_iterator(); ++it)
    out.push_back((*it)[1]);
  return out;
}

// The legacy v2 partner: Debian's hl7.mllp server, answering `answers` in turn.
class LegacyReceiver {
 public:
  LegacyReceiver(const fs::path& dir, const std::string& answers = "AA")
      : record_(dir / "legacy.txt"),
        proc_({"/usr/bin/python3", (source_dir() / "tests/integration/mllp_receiver.py").string(), "--record",
               record_.string(), "--answers", answers},
              dir / "legacy.log") {
    auto line = proc_.wait_for_line("listening on ", 20s);
    if (!line) throw std::runtime_error("mllp_receiver.py did not start: " + proc_.output());
    port_ = static_cast<unsigned short>(std::stoi(line->substr(line->rfind(' ') + 1)));
  }
  unsigned short port() const { return port_; }
  std::vector<std::string> messages() const {
    std::vector<std::string> out;
    std::ifstream in(record_);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) out.push_back(line);
    return out;
  }
  bool wait_for(std::size_t n, std::chrono::milliseconds timeout) const {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (messages().size() < n && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(50ms);
    return messages().size() >= n;
  }

 private:
  fs::path record_;
  Process proc_;
  unsigned short port_ = 0;
};

class MllpIntegration : public ::testing::Test {
 protected:
  void SetUp() override {
    sink_ = std::make_unique<Sink>(dir_.path(), "gp-a", 0);
    broker_ = std::make_unique<Broker>(dir_.path(), mllp_config(mllp_port_, sink_->port(), legacy_.port()));
    broker_->start();
  }
  void TearDown() override {
    if (broker_) EXPECT_EQ(broker_->stop(), 0);
  }
  fs::path write_message(const std::string& name, std::string er7, bool lf = true) {
    if (lf)
      for (auto& c : er7)
        if (c == '\r') c = '\n';
    auto p = dir_.path() / name;
    write_file(p, er7);
    return p;
  }
  std::string mllp_send_tellonce(const fs::path& file, int& exit_code) {
    auto r = run(tellonce_binary().string() + " mllp-send --to 127.0.0.1:" + std::to_string(mllp_port_) +
                 " --timeout 10s " + file.string());
    exit_code = r.exit_code;
    return r.output;
  }
  std::string trail(const std::string& id) {
    Client c;
    return c.request("GET", broker_->base() + "/api/messages/" + id).body;
  }

  TempDir dir_;
  ReservedPort mllp_port_;
  LegacyReceiver legacy_{dir_.path()};
  std::unique_ptr<Sink> sink_;
  std::unique_ptr<Broker> broker_;
};

TEST_F(MllpIntegration, AnAdtA01SentWithDebiansMllpSendArrivesAtTheGpAsFhir) {
  auto file = write_message("a01.hl7", adt_a01("DEB0001"));
  auto r = run("/usr/bin/mllp_send --loose -p " + std::to_string(mllp_port_) + " -f " + file.string() + " 127.0.0.1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(msa_codes(r.output), std::vector<std::string>{"AA"}) << r.output << broker_->output();
  EXPECT_NE(r.output.find("MSA|AA|DEB0001"), std::string::npos) << r.output;
  ASSERT_TRUE(sink_->wait_for(1, 20s)) << broker_->output();
  auto body = sink_->received_bodies().at(0);
  EXPECT_EQ(json_string_at(body, "/resourceType"), "Bundle");
  EXPECT_EQ(json_string_at(body, "/type"), "message");
  EXPECT_NE(body.find("9449306753"), std::string::npos);
  EXPECT_NE(body.find("DEB0001"), std::string::npos);
  // The stored record keeps the message as it was sent.
  auto id = sink_->received_message_ids().at(0);
  Client c;
  auto original = c.request("GET", broker_->base() + "/api/messages/" + id + "/original?reason=test");
  EXPECT_EQ(original.status, 200);
  EXPECT_NE(original.body.find("ADT^A01^ADT_A01|DEB0001"), std::string::npos) << original.body;
}

// A route can name the v2 event (MessageHeader.eventCoding of the converted Bundle): the A03
// goes to the GP and to the legacy system, which gets it back as an A03; the A01 only to the GP.
TEST_F(MllpIntegration, ARouteOnTheV2EventSendsADischargeOnwardAndNotTheAdmission) {
  int rc = -1;
  auto admitted = mllp_send_tellonce(write_message("a01.hl7", adt_a01("EVT0001")), rc);
  ASSERT_EQ(rc, 0) << admitted << broker_->output();
  auto discharged = mllp_send_tellonce(write_message("a03.hl7", adt_a03("EVT0002")), rc);
  ASSERT_EQ(rc, 0) << discharged << broker_->output();
  ASSERT_TRUE(sink_->wait_for(2, 20s)) << broker_->output();
  ASSERT_TRUE(legacy_.wait_for(1, 20s)) << broker_->output();
  std::this_thread::sleep_for(300ms);  // an A01 wrongly routed would have arrived by now too
  auto messages = legacy_.messages();
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_NE(messages[0].find("ADT^A03"), std::string::npos) << messages[0];
  EXPECT_NE(messages[0].find("9449306753"), std::string::npos) << messages[0];
}

TEST_F(MllpIntegration, AResentMessageIsStoredOnceAndAcknowledgedAAAgain) {
  auto file = write_message("a01.hl7", adt_a01("DUP0001"));
  int rc = -1;
  auto first = mllp_send_tellonce(file, rc);
  EXPECT_EQ(rc, 0) << first;
  auto second = mllp_send_tellonce(file, rc);
  EXPECT_EQ(rc, 0) << second;
  EXPECT_EQ(msa_codes(second), std::vector<std::string>{"AA"}) << second;
  Client c;
  EXPECT_EQ(stored_message_ids(c, broker_->base()).size(), 1u);
}

TEST_F(MllpIntegration, AFhirPatientPostedByTheGpReachesTheLegacyPartnerAsAnA31) {
  Client c;
  auto patient = R"({"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9449305552"}],)"
                 R"("name":[{"family":"JONES","given":["ANN"]}],"gender":"female","birthDate":"1970-02-03"})";
  auto reply = c.post_fhir(broker_->base() + "/fhir/Patient", patient, "gp-a");
  ASSERT_EQ(reply.status, 202) << reply.body;
  ASSERT_TRUE(legacy_.wait_for(1, 20s)) << broker_->output();
  auto message = legacy_.messages().at(0);
  EXPECT_NE(message.find("ADT^A31"), std::string::npos) << message;
  EXPECT_NE(message.find("|LEGACYPAS|RYX|"), std::string::npos) << message;
  EXPECT_NE(message.find("9449305552"), std::string::npos) << message;
  auto id = reply.headers["x-tellonce-message-id"];
  auto view = wait_for_state(c, broker_->base(), id, "delivered", 20s);
  EXPECT_NE(view.find("ACK AA"), std::string::npos) << view;
}

TEST_F(MllpIntegration, TellonceMllpSendExitsNonZeroOnAEAndARAndPrintsTheAck) {
  // An NHS number failing its check digit: read, converted, refused by validation.
  int rc = -1;
  auto ae = mllp_send_tellonce(write_message("bad.hl7", adt_a01("BAD0001", "RTX", "9449306754")), rc);
  EXPECT_EQ(rc, 1) << ae;
  EXPECT_EQ(msa_codes(ae), std::vector<std::string>{"AE"}) << ae;
  EXPECT_NE(ae.find("ERR|"), std::string::npos) << ae;
  EXPECT_EQ(ae.find("9449306754"), std::string::npos) << "the ACK must not quote the NHS number: " << ae;
  // An unknown sending facility: AR 204.
  auto ar = mllp_send_tellonce(write_message("who.hl7", adt_a01("WHO0001", "NOBODY")), rc);
  EXPECT_EQ(rc, 1) << ar;
  EXPECT_EQ(msa_codes(ar), std::vector<std::string>{"AR"}) << ar;
  // Debian's mllp_send exits 0 on the same AR: only its MSA-1 tells.
  auto deb = run("/usr/bin/mllp_send --loose -p " + std::to_string(mllp_port_) + " -f " +
                 (dir_.path() / "who.hl7").string() + " 127.0.0.1");
  EXPECT_EQ(deb.exit_code, 0);
  EXPECT_EQ(msa_codes(deb.output), std::vector<std::string>{"AR"}) << deb.output;
  // Several messages in one file with LF ends: each answered; a good one after them still AA.
  auto many = write_message("many.hl7", adt_a01("MANY001") + adt_a01("MANY002"));
  auto both = mllp_send_tellonce(many, rc);
  EXPECT_EQ(rc, 0) << both;
  EXPECT_EQ(msa_codes(both), (std::vector<std::string>{"AA", "AA"})) << both;
}

TEST_F(MllpIntegration, SplitAndPipelinedFramesAreEachAnsweredInOrder) {
  test::MllpSocket s(mllp_port_);
  std::string bytes;
  for (const char* id : {"PIPE001", "PIPE002", "PIPE003"}) bytes += hl7v2::mllp_frame(adt_a01(id));
  const auto first = hl7v2::mllp_frame(adt_a01("PIPE001")).size();
  // The first frame in three pieces, the rest (two frames and a half) in one write, then the tail.
  s.send_raw(bytes.substr(0, 10));
  std::this_thread::sleep_for(20ms);
  s.send_raw(bytes.substr(10, first - 11));
  std::this_thread::sleep_for(20ms);
  s.send_raw(bytes.substr(first - 1, bytes.size() - first - 5));
  std::this_thread::sleep_for(20ms);
  s.send_raw(bytes.substr(bytes.size() - 6));
  std::vector<std::string> answered;
  for (int i = 0; i < 3; ++i) {
    auto frame = s.read_frame(20s);
    ASSERT_TRUE(frame) << broker_->output();
    answered.push_back(msa_of(*frame));
  }
  EXPECT_EQ(answered, (std::vector<std::string>{"PIPE001 AA", "PIPE002 AA", "PIPE003 AA"}));
  EXPECT_TRUE(sink_->wait_for(3, 20s));
}

// The legacy partner answers AE, then AA, then AR: the first record is retried until delivered,
// the second dead-lettered at once.
TEST(MllpLegacyPartner, AnAEIsRetriedUntilAAAndAnARIsDeadLettered) {
  TempDir dir;
  LegacyReceiver legacy(dir.path(), "AE,AA,AR");
  ReservedPort mllp_port;
  Sink sink(dir.path(), "gp-a", 0);
  Broker broker(dir.path(), mllp_config(mllp_port, sink.port(), legacy.port()));
  broker.start();
  Client c;
  auto patient = [](const char* nhs) {
    return std::string(R"({"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")") +
           nhs + R"("}],"name":[{"family":"JONES"}],"gender":"female","birthDate":"1970-02-03"})";
  };
  auto first = c.post_fhir(broker.base() + "/fhir/Patient", patient("9449305552"), "gp-a");
  ASSERT_EQ(first.status, 202) << first.body;
  auto delivered = wait_for_state(c, broker.base(), first.headers["x-tellonce-message-id"], "delivered", 20s);
  EXPECT_NE(delivered.find("ACK AE"), std::string::npos) << delivered;  // the first attempt's answer
  EXPECT_NE(delivered.find("ACK AA"), std::string::npos) << delivered;

  auto second = c.post_fhir(broker.base() + "/fhir/Patient", patient("9000000009"), "gp-a");
  ASSERT_EQ(second.status, 202) << second.body;
  auto dead = wait_for_state(c, broker.base(), second.headers["x-tellonce-message-id"], "failed", 20s);
  EXPECT_NE(dead.find("ACK AR"), std::string::npos) << dead;
  EXPECT_EQ(legacy.messages().size(), 3u);
  EXPECT_EQ(broker.stop(), 0);
}

// kill -9 of the broker between and during messages: every message answered AA reaches the GP.
TEST(MllpCrashDurability, EveryMessageAnsweredAAIsDeliveredAcrossKills) {
  TempDir dir;
  LegacyReceiver legacy(dir.path());
  ReservedPort mllp_port;
  Sink sink(dir.path(), "gp-a", 0);
  Broker broker(dir.path(), mllp_config(mllp_port, sink.port(), legacy.port()));
  std::set<std::string> acked;
  int next = 0;
  for (int round = 0; round < 3; ++round) {
    broker.start();
    {
      test::MllpSocket s(mllp_port);
      // Between messages: a few sent and answered one at a time.
      for (int i = 0; i < 5; ++i) {
        auto id = "K" + std::to_string(++next);
        s.send(adt_a01(id));
        auto frame = s.read_frame(20s);
        ASSERT_TRUE(frame) << broker.output();
        if (msa_of(*frame) == id + " AA") acked.insert(id);
      }
      // During messages: twenty pipelined, the broker killed once a few are answered.
      std::string burst;
      std::vector<std::string> ids;
      for (int i = 0; i < 20; ++i) {
        ids.push_back("K" + std::to_string(++next));
        burst += hl7v2::mllp_frame(adt_a01(ids.back()));
      }
      s.send_raw(burst);
      for (int i = 0; i < 20; ++i) {
        if (i == 3) broker.crash();
        auto frame = s.read_frame(i < 3 ? 20s : 2s);
        if (!frame) break;
        auto answer = msa_of(*frame);
        if (answer.ends_with(" AA")) acked.insert(answer.substr(0, answer.size() - 3));
      }
    }
    broker.crash();
  }
  broker.start();
  ASSERT_GE(acked.size(), 15u);
  std::vector<std::string> missing;
  auto deadline = std::chrono::steady_clock::now() + 60s;
  do {
    std::string all;
    for (const auto& b : sink.received_bodies()) all += b;
    missing.clear();
    for (const auto& id : acked)
      if (all.find("\"" + id + "\"") == std::string::npos) missing.push_back(id);
    if (missing.empty()) break;
    std::this_thread::sleep_for(100ms);
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_TRUE(missing.empty()) << missing.size() << " of " << acked.size() << " answered AA but not delivered, e.g. "
                               << (missing.empty() ? "" : missing.front());
  RecordProperty("acknowledged", static_cast<int>(acked.size()));
  EXPECT_EQ(broker.stop(), 0);
}

}  // namespace
}  // namespace tellonce::itest
