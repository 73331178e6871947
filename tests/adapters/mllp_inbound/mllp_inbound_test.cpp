// The mllp inbound adapter over real loopback sockets, with a fake converter and pipeline: what
// each message comes to on the wire (ACK codes, ERR segments, order) and what reaches the pipeline.
#include "adapters/mllp_inbound/mllp_inbound.hpp"

#include "adapters/mllp_inbound/mllp_socket.hpp"
#include "broker/config/config.hpp"
#include "support/io_thread.hpp"
#include "support/temp_dir.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <regex>

namespace tellonce {
namespace {

using test::MllpSocket;

std::string adt(const std::string& control_id, const std::string& facility = "RTX", const std::string& event = "A01",
                const std::string& msh_tail = "") {
  return "MSH|^~\\&|PAS|" + facility + "|TELLONCE|BROKER|20261130120000||ADT^" + event + "^ADT_A01|" + control_id +
         "|P|2.4" + msh_tail + "\rEVN|" + event + "|20261130120000\rPID|1||9449306753^^^NHS^NH||SMITH^JOHN||19800101|M\r"
         "PV1|1|I\r";
}

// Converts ADT A01 and A31 to a fixed Bundle; a message without PID is invalid; other events unsupported.
class FakeConverter : public hl7v2::V2ToFhir {
 public:
  Result<hl7v2::Converted> convert(const hl7v2::Message& m) const override {
    if (m.message_code() != "ADT" || (m.trigger_event() != "A01" && m.trigger_event() != "A31"))
      return Failure::permanent(Errc::unsupported, Issue{Severity::error, "not-supported",
                                                         "event not converted", "MSH^1^9", "hl7v2-unsupported-event"});
    if (!m.first("PID"))
      return Failure::permanent(Errc::invalid, Issue{Severity::error, "required", "PID segment is required",
                                                     "PID", "hl7v2-required-segment"});
    hl7v2::Converted c;
    c.bundle_json = R"({"resourceType":"Bundle","type":"message"})";
    c.event = "ADT^" + m.trigger_event();
    c.locations = {{"Bundle.entry[1].resource.identifier[0]", "PID^1^3^1"}, {"Bundle.entry[1].resource", "PID^1"}};
    return c;
  }
};

// Records what it is given; answers `answer`. With `hold`, accept() waits until release().
class FakePipeline : public Pipeline {
 public:
  std::mutex mu;
  std::vector<InboundRecord> received;
  Result<Accepted> answer = Accepted{"01JMLLP000000000000000000A", false, MessageState::delivering, {"gp-a"}, {}};
  std::atomic<bool> hold{false};
  std::atomic<bool> released{false};

  asio::awaitable<Result<Accepted>> accept(InboundRecord record) override {
    {
      std::lock_guard lk(mu);
      received.push_back(std::move(record));
    }
    asio::steady_timer wait(co_await asio::this_coro::executor);
    while (hold && !released) {
      wait.expires_after(std::chrono::milliseconds(5));
      co_await wait.async_wait(asio::use_awaitable);
    }
    co_return answer;
  }
  asio::awaitable<Result<std::size_t>> replay(std::string) override { co_return std::size_t{0}; }
  std::size_t count() {
    std::lock_guard lk(mu);
    return received.size();
  }
};

class FakePartners : public PartnerDirectory {
 public:
  std::string_view by_api_key(std::string_view) const override { return {}; }
  std::string_view by_id(std::string_view id) const override { return id == "rtx" || id == "other" ? id : std::string_view(); }
  std::string_view by_hl7v2_facility(std::string_view f) const override {
    return f == "RTX" ? std::string_view(rtx_) : std::string_view();
  }

 private:
  std::string rtx_ = "rtx";
};

struct Ack {
  std::string code, control_id, text;
  std::vector<std::vector<std::string>> errs;  // ERR-2, ERR-3, ERR-4, ERR-8 of each ERR
  std::string msh9;
};

Ack read_ack(const std::string& frame) {
  auto m = hl7v2::parse(frame);
  EXPECT_TRUE(m) << "unreadable ACK";
  Ack a;
  if (!m) return a;
  a.msh9 = m->message_code();
  if (auto* msa = m->first("MSA")) {
    a.code = msa->value(1);
    a.control_id = msa->value(2);
    a.text = msa->value(3);
  }
  for (auto* err : m->all("ERR"))
    a.errs.push_back({std::string(err->raw_field(2)), err->value(3), err->value(4), err->value(8)});
  return a;
}

class MllpInboundTest : public ::testing::Test {
 protected:
  void start(MllpInboundSettings settings = {}) {
    settings.listen = "127.0.0.1:0";
    InboundContext ctx{partners_, pipeline_, io_.io.get_executor(), nullptr, "v2-in"};
    ctx_.emplace(ctx);
    adapter_ = make_mllp_inbound(settings, *ctx_, std::make_shared<FakeConverter>());
    adapter_->start();
    io_.start();
    std::smatch m;
    auto text = adapter_->describe();
    ASSERT_TRUE(std::regex_search(text, m, std::regex(R"(127\.0\.0\.1:(\d+))"))) << text;
    port_ = static_cast<unsigned short>(std::stoi(m[1]));
  }
  void TearDown() override {
    if (adapter_) adapter_->stop();
    io_.stop();
  }

  Ack exchange(const std::string& message) {
    MllpSocket s(port_);
    s.send(message);
    auto frame = s.read_frame();
    EXPECT_TRUE(frame) << "no ACK";
    return frame ? read_ack(*frame) : Ack{};
  }

  test::IoThread io_;
  FakePipeline pipeline_;
  FakePartners partners_;
  std::optional<InboundContext> ctx_;
  std::unique_ptr<InboundAdapter> adapter_;
  unsigned short port_ = 0;
};

TEST_F(MllpInboundTest, AnAcceptedMessageIsAnsweredAAWithItsControlIdAndReachesThePipelineWithItsOriginal) {
  start();
  auto message = adt("MSG00001");
  auto ack = exchange(message);
  EXPECT_EQ(ack.code, "AA");
  EXPECT_EQ(ack.control_id, "MSG00001");
  EXPECT_EQ(ack.msh9, "ACK");
  EXPECT_TRUE(ack.errs.empty());
  ASSERT_EQ(pipeline_.count(), 1u);
  const auto& rec = pipeline_.received[0];
  EXPECT_EQ(rec.source, "rtx");
  EXPECT_EQ(rec.channel, "v2-in");
  EXPECT_EQ(rec.content_type, "application/fhir+json");
  EXPECT_EQ(rec.body, R"({"resourceType":"Bundle","type":"message"})");
  EXPECT_EQ(rec.original_content_type, "x-application/hl7-v2+er7");
  EXPECT_EQ(rec.original_bytes, message);
  EXPECT_EQ(rec.idempotency_key, "PAS|RTX|MSG00001");
}

TEST_F(MllpInboundTest, AADuplicateIsAnsweredAAAgain) {
  start();
  pipeline_.answer = Accepted{"01JMLLP000000000000000000A", true, MessageState::delivered, {}, {}};
  EXPECT_EQ(exchange(adt("MSG00001")).code, "AA");
}

TEST_F(MllpInboundTest, TheChannelsPartnerWinsOverTheSendingFacility) {
  MllpInboundSettings s;
  s.partner = "other";
  start(s);
  EXPECT_EQ(exchange(adt("MSG1", "UNLISTED")).code, "AA");
  ASSERT_EQ(pipeline_.count(), 1u);
  EXPECT_EQ(pipeline_.received[0].source, "other");
}

TEST_F(MllpInboundTest, AnUnknownSendingFacilityIsAR204AndNeverReachesThePipeline) {
  start();
  auto ack = exchange(adt("MSG2", "NOBODY"));
  EXPECT_EQ(ack.code, "AR");
  EXPECT_EQ(ack.control_id, "MSG2");
  ASSERT_EQ(ack.errs.size(), 1u);
  EXPECT_EQ(ack.errs[0][0], "MSH^1^4^1");
  EXPECT_EQ(ack.errs[0][1], "204");
  EXPECT_EQ(pipeline_.count(), 0u);
}

TEST_F(MllpInboundTest, AnUnparseableMessageIsAR) {
  start();
  auto ack = exchange("PID|1||123\rMSH|^~\\&|oops\r");
  EXPECT_EQ(ack.code, "AR");
  EXPECT_FALSE(ack.errs.empty());
  EXPECT_EQ(pipeline_.count(), 0u);
}

TEST_F(MllpInboundTest, ABatchIsRefusedWithAClearAR) {
  start();
  auto ack = exchange("FHS|^~\\&|PAS|RTX\rBHS|^~\\&|PAS|RTX\r" + adt("MSG3") + "BTS|1\rFTS|1\r");
  EXPECT_EQ(ack.code, "AR");
  ASSERT_EQ(ack.errs.size(), 1u);
  EXPECT_EQ(ack.errs[0][1], "200");
  EXPECT_NE(ack.errs[0][3].find("batches"), std::string::npos) << ack.errs[0][3];
  EXPECT_EQ(pipeline_.count(), 0u);
}

TEST_F(MllpInboundTest, AnUnsupportedEventIsAR201) {
  start();
  auto ack = exchange(adt("MSG4", "RTX", "A99"));
  EXPECT_EQ(ack.code, "AR");
  ASSERT_EQ(ack.errs.size(), 1u);
  EXPECT_EQ(ack.errs[0][0], "MSH^1^9");
  EXPECT_EQ(ack.errs[0][1], "201");
}

TEST_F(MllpInboundTest, AConversionProblemIsAEWithItsV2Location) {
  start();
  auto ack = exchange("MSH|^~\\&|PAS|RTX|TELLONCE|BROKER|20261130120000||ADT^A01^ADT_A01|MSG5|P|2.4\rEVN|A01\r");
  EXPECT_EQ(ack.code, "AE");
  ASSERT_EQ(ack.errs.size(), 1u);
  EXPECT_EQ(ack.errs[0][1], "101");
  EXPECT_NE(ack.errs[0][3].find("hl7v2-required-segment"), std::string::npos) << ack.errs[0][3];
}

TEST_F(MllpInboundTest, ValidationFailuresAreAEWithOneErrPerIssueAtTheirV2FieldsAndNoValues) {
  start();
  Failure f;
  f.code = Errc::invalid;
  f.issues = {Issue{Severity::error, "value", "NHS number 9449306750 fails its check digit",
                    "Bundle.entry[1].resource.identifier[0].value", "uk-nhs-number"},
              Issue{Severity::error, "required", "Patient.name is required for SMITH",
                    "Bundle.entry[1].resource.name", "uk-patient-name"}};
  pipeline_.answer = f;
  auto ack = exchange(adt("MSG6"));
  EXPECT_EQ(ack.code, "AE");
  EXPECT_EQ(ack.control_id, "MSG6");
  ASSERT_EQ(ack.errs.size(), 2u);
  EXPECT_EQ(ack.errs[0][0], "PID^1^3^1");  // the longest prefix the converter named
  EXPECT_EQ(ack.errs[0][2], "E");
  EXPECT_NE(ack.errs[0][3].find("uk-nhs-number"), std::string::npos) << ack.errs[0][3];
  EXPECT_NE(ack.errs[0][3].find("Bundle.entry[1].resource.identifier[0].value"), std::string::npos);
  EXPECT_EQ(ack.errs[1][0], "PID^1");
  EXPECT_EQ(ack.errs[1][1], "101");
  for (const auto& e : ack.errs) {
    EXPECT_EQ(e[3].find("9449306750"), std::string::npos) << e[3];
    EXPECT_EQ(e[3].find("SMITH"), std::string::npos) << e[3];
  }
}

TEST_F(MllpInboundTest, AStoreThatCannotWriteIsAR207AskingForAResend) {
  start();
  pipeline_.answer = Failure::retryable(Errc::unavailable, Issue{Severity::error, "transient", "disk full", "", ""});
  auto ack = exchange(adt("MSG7"));
  EXPECT_EQ(ack.code, "AR");
  ASSERT_EQ(ack.errs.size(), 1u);
  EXPECT_EQ(ack.errs[0][1], "207");
  EXPECT_NE(ack.errs[0][3].find("resend"), std::string::npos) << ack.errs[0][3];
}

TEST_F(MllpInboundTest, TheAAComesOnlyAfterThePipelineHasCommitted) {
  start();
  pipeline_.hold = true;
  MllpSocket s(port_);
  s.send(adt("MSG8"));
  // The record is with the pipeline, which has not completed: nothing may have been answered.
  for (int i = 0; i < 1000 && pipeline_.count() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(pipeline_.count(), 1u);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(s.nothing_to_read());
  pipeline_.released = true;
  auto frame = s.read_frame();
  ASSERT_TRUE(frame);
  EXPECT_EQ(read_ack(*frame).code, "AA");
}

TEST_F(MllpInboundTest, FramesSplitAtEveryByteAndPipelinedFramesAreAnsweredInOrder) {
  start();
  MllpSocket s(port_);
  std::string bytes = hl7v2::mllp_frame(adt("P1")) + hl7v2::mllp_frame(adt("P2", "NOBODY")) + hl7v2::mllp_frame(adt("P3"));
  // The first message a byte at a time, the other two in one write.
  auto first = hl7v2::mllp_frame(adt("P1")).size();
  for (std::size_t i = 0; i < first; ++i) s.send_raw(bytes.substr(i, 1));
  s.send_raw(bytes.substr(first));
  std::vector<std::string> answered;
  for (int i = 0; i < 3; ++i) {
    auto frame = s.read_frame();
    ASSERT_TRUE(frame) << "ACK " << i;
    auto ack = read_ack(*frame);
    answered.push_back(ack.control_id + " " + ack.code);
  }
  EXPECT_EQ(answered, (std::vector<std::string>{"P1 AA", "P2 AR", "P3 AA"}));
}

TEST_F(MllpInboundTest, AFrameOverTheLimitIsARAndTheConnectionGoesOn) {
  MllpInboundSettings s;
  s.max_frame_bytes = 1024;
  start(s);
  MllpSocket sock(port_);
  sock.send(adt("BIG") + "NTE|1||" + std::string(4000, 'x') + "\r");
  sock.send(adt("SMALL"));
  auto first = sock.read_frame();
  ASSERT_TRUE(first);
  auto big = read_ack(*first);
  EXPECT_EQ(big.code, "AR");
  ASSERT_EQ(big.errs.size(), 1u);
  EXPECT_NE(big.errs[0][3].find("1024"), std::string::npos) << big.errs[0][3];
  auto second = sock.read_frame();
  ASSERT_TRUE(second);
  EXPECT_EQ(read_ack(*second).control_id, "SMALL");
  EXPECT_EQ(read_ack(*second).code, "AA");
  EXPECT_EQ(pipeline_.count(), 1u);
}

TEST_F(MllpInboundTest, EnhancedModeSendsTheCommitAckThenTheApplicationAck) {
  start();
  MllpSocket s(port_);
  s.send(adt("E1", "RTX", "A01", "|||AL|AL"));
  auto commit = s.read_frame();
  auto application = s.read_frame();
  ASSERT_TRUE(commit && application);
  EXPECT_EQ(read_ack(*commit).code, "CA");
  EXPECT_EQ(read_ack(*commit).control_id, "E1");
  EXPECT_EQ(read_ack(*application).code, "AA");
  EXPECT_EQ(read_ack(*application).control_id, "E1");
}

TEST_F(MllpInboundTest, EnhancedModeWithApplicationAckNESendsTheCommitAckOnly) {
  start();
  MllpSocket s(port_);
  s.send(adt("E2", "RTX", "A01", "|||AL|NE"));
  s.send(adt("E3"));  // original mode: its AA must be the very next frame
  auto first = s.read_frame();
  auto second = s.read_frame();
  ASSERT_TRUE(first && second);
  EXPECT_EQ(read_ack(*first).code + read_ack(*first).control_id, "CAE2");
  EXPECT_EQ(read_ack(*second).code + read_ack(*second).control_id, "AAE3");
}

TEST_F(MllpInboundTest, EnhancedModeErrorsAreACommitErrorWithTheirErrSegments) {
  start();
  MllpSocket s(port_);
  s.send(adt("E4", "NOBODY", "A01", "|||AL|AL"));
  s.send(adt("E5"));
  auto first = s.read_frame();
  auto second = s.read_frame();
  ASSERT_TRUE(first && second);
  auto commit = read_ack(*first);
  EXPECT_EQ(commit.code, "CR");
  ASSERT_EQ(commit.errs.size(), 1u);
  EXPECT_EQ(commit.errs[0][1], "204");
  EXPECT_EQ(read_ack(*second).control_id, "E5");  // no application ACK for a message not taken
}

TEST_F(MllpInboundTest, AnIdleConnectionIsClosed) {
  MllpInboundSettings s;
  s.idle_timeout = std::chrono::milliseconds(100);
  start(s);
  MllpSocket sock(port_);
  EXPECT_TRUE(sock.wait_closed());
}

TEST_F(MllpInboundTest, ConnectionsOverTheCapAreClosedAndTheOthersServed) {
  MllpInboundSettings s;
  s.max_connections = 1;
  start(s);
  MllpSocket first(port_);
  first.send(adt("C1"));
  ASSERT_TRUE(first.read_frame());  // the first connection is being served
  MllpSocket second(port_);
  EXPECT_TRUE(second.wait_closed());
  first.send(adt("C2"));
  auto ack = first.read_frame();
  ASSERT_TRUE(ack);
  EXPECT_EQ(read_ack(*ack).control_id, "C2");
}

TEST_F(MllpInboundTest, StopClosesIdleConnections) {
  start();
  MllpSocket sock(port_);
  sock.send(adt("S1"));
  ASSERT_TRUE(sock.read_frame());
  adapter_->stop();
  EXPECT_TRUE(sock.wait_closed());
}

// acks_for on its own: which ACKs enhanced mode asks for.
TEST(MllpAcksFor, EnhancedModeFollowsMSH15AndMSH16) {
  auto codes = [](const std::string& msh_tail, hl7v2::AckCode code) {
    auto m = hl7v2::parse(adt("X1", "RTX", "A01", msh_tail));
    EXPECT_TRUE(m);
    std::string out;
    for (const auto& ack : acks_for(*m, MllpVerdict{code, {}}, "ACK1", "20261130120000"))
      out += (out.empty() ? "" : ",") + read_ack(ack).code;
    return out;
  };
  using hl7v2::AckCode;
  EXPECT_EQ(codes("", AckCode::AA), "AA");
  EXPECT_EQ(codes("", AckCode::AE), "AE");
  EXPECT_EQ(codes("|||AL|AL", AckCode::AA), "CA,AA");
  EXPECT_EQ(codes("|||AL|NE", AckCode::AA), "CA");
  EXPECT_EQ(codes("|||ER|AL", AckCode::AA), "AA");
  EXPECT_EQ(codes("|||ER|NE", AckCode::AA), "");
  EXPECT_EQ(codes("|||ER|NE", AckCode::AE), "CE");
  EXPECT_EQ(codes("|||AL|AL", AckCode::AR), "CR");
  EXPECT_EQ(codes("|||NE|ER", AckCode::AE), "AE");
  EXPECT_EQ(codes("|||SU|SU", AckCode::AA), "CA,AA");
}

}  // namespace
}  // namespace tellonce

namespace tellonce {
namespace {

// Settings through the real config loader, as in the broker.
ConfigLoad load_mllp(const std::string& inbound_lines) {
  test::TempDir dir;
  auto path = dir.path() / "tellonce.yaml";
  std::ofstream(path) << "api:\n  listen: 127.0.0.1:8080\npartners:\n  - id: rtx\n    kind: trust\n    ods: RTX\n"
                         "inbound:\n  - id: v2\n    type: mllp\n" << inbound_lines;
  AdapterRegistry registry;
  register_builtin_engines(registry);  // the config names a store and a queue engine too
  registry.add(mllp_inbound_type());
  return load_config(path, registry);
}

std::string problems(const ConfigLoad& l) {
  std::string out;
  for (const auto& p : l.problems) out += p.to_string() + "\n";
  return out;
}

TEST(MllpInboundSettings, ReadsItsKeysWithDefaults) {
  auto l = load_mllp("    listen: 127.0.0.1:2575\n    partner: rtx\n    max_frame_bytes: 64KB\n    idle_timeout: 30s\n");
  ASSERT_TRUE(l.config) << problems(l);
  const auto& s = settings_as<MllpInboundSettings>(l.config->inbound[0].settings);
  EXPECT_EQ(s.listen, "127.0.0.1:2575");
  EXPECT_EQ(s.partner, "rtx");
  EXPECT_EQ(s.max_frame_bytes, 64u * 1024);
  EXPECT_EQ(s.idle_timeout, std::chrono::seconds(30));
  EXPECT_EQ(s.max_connections, 256u);
}

TEST(MllpInboundSettings, AClashWithTheApiListenerAnUnknownPartnerAndATypoAreProblems) {
  auto l = load_mllp("    listen: 127.0.0.1:8080\n    partner: nobody\n    idle_timeuot: 5s\n");
  EXPECT_FALSE(l.config);
  auto text = problems(l);
  EXPECT_NE(text.find("inbound[0].listen"), std::string::npos) << text;
  EXPECT_NE(text.find("overlaps"), std::string::npos) << text;
  EXPECT_NE(text.find("unknown partner 'nobody'"), std::string::npos) << text;
  EXPECT_NE(text.find("inbound[0].idle_timeuot"), std::string::npos) << text;
}

// MSH-4 is a claim anyone who reaches the port can make: beyond loopback only a client
// certificate says who is sending.
TEST(MllpInboundSettings, BeyondLoopbackWithoutClientCertificatesIsAProblem) {
  auto l = load_mllp("    listen: 0.0.0.0:2575\n");
  EXPECT_FALSE(l.config);
  auto text = problems(l);
  EXPECT_NE(text.find("inbound[0].listen"), std::string::npos) << text;
  EXPECT_NE(text.find("must know who is sending: add tls: with client_certificates: required"), std::string::npos)
      << text;
}

}  // namespace
}  // namespace tellonce
