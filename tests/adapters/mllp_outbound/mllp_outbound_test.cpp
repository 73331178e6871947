// The mllp outbound adapter against a scripted v2 receiver on loopback, with a fake renderer:
// what each ACK (or its absence) comes to, that an ACK counts only for the control id sent, and
// that connections are kept.
#include "adapters/mllp_outbound/mllp_outbound.hpp"

#include "adapters/mllp_inbound/mllp_socket.hpp"
#include "adapters/mllp_outbound/mllp_client.hpp"
#include "broker/config/config.hpp"
#include "support/builders.hpp"
#include "support/run_async.hpp"
#include "support/temp_dir.hpp"
#include "tellonce/store.hpp"

#include <gtest/gtest.h>

#include <fstream>

namespace tellonce {
namespace {

using test::ack_for;
using test::control_id_of;
using test::ScriptedReceiver;

// Renders every record as an A31 with the control id it is given; "unrenderable" bodies fail.
class FakeRenderer : public hl7v2::FhirToV2 {
 public:
  Result<hl7v2::Rendered> render(std::string_view fhir_json, const hl7v2::V2Addressing& to,
                                 std::string_view control_id, std::string_view timestamp) const override {
    if (fhir_json.find("unrenderable") != std::string_view::npos)
      return Failure::permanent(Errc::unsupported, Issue{Severity::error, "not-supported",
                                                         "Observation is not rendered as v2", "resourceType", "v2-render"});
    hl7v2::Rendered r;
    r.control_id = std::string(control_id);
    r.event = "ADT^A31";
    r.er7 = "MSH|^~\\&|" + to.sending_application + "|" + to.sending_facility + "|" + to.receiving_application + "|" +
            to.receiving_facility + "|" + std::string(timestamp) + "||ADT^A31^ADT_A05|" + r.control_id +
            "|P|2.4\rEVN|A31\rPID|1||9449306753^^^NHS^NH\r";
    return r;
  }
};

class FakeOriginals : public OriginalReader {
 public:
  std::optional<StoredBytes> stored;
  asio::awaitable<Result<std::optional<StoredBytes>>> original(std::string) override { co_return stored; }
};

class MllpOutboundTest : public ::testing::Test {
 protected:
  std::unique_ptr<OutboundAdapter> make(unsigned short port, MllpOutboundSettings s = {}) {
    s.address = "127.0.0.1:" + std::to_string(port);
    s.receiving_application = "LEGACY";
    s.receiving_facility = "SITE";
    if (s.ack_timeout == std::chrono::milliseconds(10000)) s.ack_timeout = std::chrono::seconds(5);
    return make_mllp_outbound(s, io_.get_executor(), std::make_shared<FakeRenderer>(), &originals_);
  }
  DeliveryResult deliver(OutboundAdapter& a, const DeliveryJob& job) {
    return test::run_async<DeliveryResult>(io_, a.deliver(job));
  }
  static DeliveryJob job(std::int64_t id, int attempts = 0) {
    auto j = test::job(id, "legacy");
    j.delivery_id = id;
    j.attempts = attempts;
    return j;
  }

  asio::io_context io_;
  FakeOriginals originals_;
};

TEST_F(MllpOutboundTest, AnAAIsDeliveredAndTheMessageIsAddressedToTheReceiver) {
  ScriptedReceiver rx([](const std::string& m, int) { return ScriptedReceiver::Reply{{ack_for(m, "AA", "thanks")}}; });
  auto adapter = make(rx.port());
  auto r = deliver(*adapter, job(7, 2));
  EXPECT_EQ(r.outcome, DeliveryOutcome::ok);
  EXPECT_EQ(r.partner_code, "ACK AA");
  EXPECT_EQ(r.detail, "thanks");
  ASSERT_EQ(rx.received().size(), 1u);
  const auto sent = rx.received()[0];
  EXPECT_EQ(control_id_of(sent), "7-3");  // delivery id and attempt number
  EXPECT_NE(sent.find("|LEGACY|SITE|"), std::string::npos) << sent;
  adapter->stop();
}

TEST_F(MllpOutboundTest, AnAEIsRetryableAndAnARPermanentWithTheirText) {
  ScriptedReceiver rx([](const std::string& m, int n) {
    return ScriptedReceiver::Reply{{ack_for(m, n == 1 ? "AE" : "AR", n == 1 ? "PID-3 missing" : "not for us")}};
  });
  auto adapter = make(rx.port());
  auto first = deliver(*adapter, job(1));
  EXPECT_EQ(first.outcome, DeliveryOutcome::retryable);
  EXPECT_EQ(first.partner_code, "ACK AE");
  EXPECT_EQ(first.detail, "PID-3 missing");
  auto second = deliver(*adapter, job(2));
  EXPECT_EQ(second.outcome, DeliveryOutcome::permanent);
  EXPECT_EQ(second.partner_code, "ACK AR");
  EXPECT_EQ(second.detail, "not for us");
  adapter->stop();
}

TEST_F(MllpOutboundTest, AnAckForAnotherControlIdIsNeverTakenForThisMessage) {
  // The receiver first answers AA for a message it saw earlier, then AE for this one.
  ScriptedReceiver rx([](const std::string& m, int) {
    auto stale = ack_for(m, "AA");
    auto pos = stale.find("MSA|AA|");
    stale.replace(pos + 7, control_id_of(m).size(), "OLDER-1");
    return ScriptedReceiver::Reply{{stale, ack_for(m, "AE", "bad")}};
  });
  auto adapter = make(rx.port());
  auto r = deliver(*adapter, job(3));
  EXPECT_EQ(r.outcome, DeliveryOutcome::retryable);
  EXPECT_EQ(r.partner_code, "ACK AE");
  adapter->stop();
}

TEST_F(MllpOutboundTest, NoAckInTimeIsRetryableWithoutAPartnerCodeAndTheNextMessageGetsAFreshConnection) {
  ScriptedReceiver rx([](const std::string& m, int n) {
    if (n == 1) return ScriptedReceiver::Reply{};  // never answered
    return ScriptedReceiver::Reply{{ack_for(m, "AA")}};
  });
  MllpOutboundSettings s;
  s.ack_timeout = std::chrono::milliseconds(200);
  auto adapter = make(rx.port(), s);
  auto first = deliver(*adapter, job(4));
  EXPECT_EQ(first.outcome, DeliveryOutcome::retryable);
  EXPECT_EQ(first.partner_code, "");
  EXPECT_NE(first.detail.find("no ACK within 200 ms"), std::string::npos) << first.detail;
  auto second = deliver(*adapter, job(4, 1));
  EXPECT_EQ(second.outcome, DeliveryOutcome::ok);
  EXPECT_EQ(rx.connections(), 2);
  adapter->stop();
}

TEST_F(MllpOutboundTest, TheConnectionIsKeptBetweenMessages) {
  ScriptedReceiver rx([](const std::string& m, int) { return ScriptedReceiver::Reply{{ack_for(m, "AA")}}; });
  auto adapter = make(rx.port());
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(deliver(*adapter, job(i)).outcome, DeliveryOutcome::ok);
  EXPECT_EQ(rx.connections(), 1);
  adapter->stop();
}

TEST_F(MllpOutboundTest, AConnectionTheReceiverClosedIsReopenedAndTheMessageSent) {
  ScriptedReceiver rx([](const std::string& m, int) {
    return ScriptedReceiver::Reply{{ack_for(m, "AA")}, true};  // closes after every answer
  });
  auto adapter = make(rx.port());
  EXPECT_EQ(deliver(*adapter, job(1)).outcome, DeliveryOutcome::ok);
  auto second = deliver(*adapter, job(2));
  EXPECT_EQ(second.outcome, DeliveryOutcome::ok) << second.detail;
  EXPECT_EQ(rx.received().size(), 2u);
  adapter->stop();
}

TEST_F(MllpOutboundTest, ARefusedConnectionIsRetryableAndNotTheBrokersFault) {
  unsigned short port;
  {
    ScriptedReceiver gone([](const std::string&, int) { return ScriptedReceiver::Reply{}; });
    port = gone.port();
  }
  auto adapter = make(port);
  auto r = deliver(*adapter, job(1));
  EXPECT_EQ(r.outcome, DeliveryOutcome::retryable);
  EXPECT_EQ(r.partner_code, "");
  EXPECT_FALSE(r.broker_fault);
  EXPECT_NE(r.detail.find("connect to 127.0.0.1:"), std::string::npos) << r.detail;
  adapter->stop();
}

TEST_F(MllpOutboundTest, ARecordThatCannotBeRenderedIsPermanent) {
  ScriptedReceiver rx([](const std::string& m, int) { return ScriptedReceiver::Reply{{ack_for(m, "AA")}}; });
  auto adapter = make(rx.port());
  auto j = job(1);
  j.body = R"({"resourceType":"Observation","id":"unrenderable"})";
  auto r = deliver(*adapter, j);
  EXPECT_EQ(r.outcome, DeliveryOutcome::permanent);
  EXPECT_NE(r.detail.find("v2-render"), std::string::npos) << r.detail;
  EXPECT_TRUE(rx.received().empty());
  adapter->stop();
}

TEST_F(MllpOutboundTest, SendOriginalForwardsThePartnersBytesReaddressed) {
  ScriptedReceiver rx([](const std::string& m, int) { return ScriptedReceiver::Reply{{ack_for(m, "AA")}}; });
  originals_.stored = StoredBytes{std::string(kHl7v2ContentType),
                                  "MSH|^~\\&|PAS|RTX|TELLONCE|BROKER|20261130120000||ADT^A01^ADT_A01|ORIG42|P|2.4\r"
                                  "PID|1||9449306753^^^NHS^NH\rZU1|kept as sent\r"};
  MllpOutboundSettings s;
  s.send = MllpOutboundSettings::Send::original;
  auto adapter = make(rx.port(), s);
  auto r = deliver(*adapter, job(9));
  EXPECT_EQ(r.outcome, DeliveryOutcome::ok) << r.detail;
  ASSERT_EQ(rx.received().size(), 1u);
  EXPECT_EQ(rx.received()[0],
            "MSH|^~\\&|PAS|RTX|LEGACY|SITE|20261130120000||ADT^A01^ADT_A01|ORIG42|P|2.4\r"
            "PID|1||9449306753^^^NHS^NH\rZU1|kept as sent\r");
  adapter->stop();
}

TEST_F(MllpOutboundTest, SendOriginalRendersARecordThatCameInAsFhir) {
  ScriptedReceiver rx([](const std::string& m, int) { return ScriptedReceiver::Reply{{ack_for(m, "AA")}}; });
  MllpOutboundSettings s;
  s.send = MllpOutboundSettings::Send::original;
  auto adapter = make(rx.port(), s);
  EXPECT_EQ(deliver(*adapter, job(5)).outcome, DeliveryOutcome::ok);
  ASSERT_EQ(rx.received().size(), 1u);
  EXPECT_EQ(control_id_of(rx.received()[0]), "5-1");
  adapter->stop();
}

TEST(ReaddressOriginal, ReplacesOnlyMSH5And6AndReadsTheControlId) {
  std::string control_id;
  auto out = readdress_original("MSH|^~\\&|A|B|C|D|2026||ADT^A01|CID7|P|2.4\nPID|1\n", "R&D", "", control_id);
  ASSERT_TRUE(out);
  EXPECT_EQ(*out, "MSH|^~\\&|A|B|R\\T\\D|D|2026||ADT^A01|CID7|P|2.4\nPID|1\n");
  EXPECT_EQ(control_id, "CID7");
  EXPECT_FALSE(readdress_original("PID|1\r", "", "", control_id));
}

}  // namespace
}  // namespace tellonce

namespace tellonce {
namespace {

// Settings through the real config loader, as in the broker.
TEST(MllpOutboundSettings, ReadsItsKeysAndReportsBadOnesWithTheirPaths) {
  test::TempDir dir;
  auto load = [&](const std::string& endpoint_lines) {
    auto path = dir.path() / "tellonce.yaml";
    std::ofstream(path) << "partners:\n  - id: pas\n    kind: trust\n    ods: RYX\n    endpoint:\n      type: mllp\n"
                        << endpoint_lines;
    AdapterRegistry registry;
    register_builtin_engines(registry);
    registry.add(mllp_outbound_type());
    return load_config(path, registry);
  };
  auto good = load("      address: 127.0.0.1:2576\n      ack_timeout: 3s\n      send: original\n"
                   "      receiving_application: PAS\n      connections: 2\n");
  ASSERT_TRUE(good.config);
  const auto& s = settings_as<MllpOutboundSettings>(good.config->partners[0].endpoint->settings);
  EXPECT_EQ(s.address, "127.0.0.1:2576");
  EXPECT_EQ(s.ack_timeout, std::chrono::seconds(3));
  EXPECT_EQ(s.send, MllpOutboundSettings::Send::original);
  EXPECT_EQ(s.receiving_application, "PAS");
  EXPECT_EQ(s.connections, 2);

  auto bad = load("      address: nowhere\n      send: translated\n      ack_timeot: 3s\n");
  EXPECT_FALSE(bad.config);
  std::string text;
  for (const auto& p : bad.problems) text += p.to_string() + "\n";
  EXPECT_NE(text.find("partners[0].endpoint.address: 'nowhere' must be host:port"), std::string::npos) << text;
  EXPECT_NE(text.find("partners[0].endpoint.send: must be converted or original"), std::string::npos) << text;
  EXPECT_NE(text.find("partners[0].endpoint.ack_timeot"), std::string::npos) << text;
}

}  // namespace
}  // namespace tellonce
