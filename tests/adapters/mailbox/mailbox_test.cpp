// The mailbox adapter against a real SQLite store and a real HTTP server on 127.0.0.1.
#include "adapters/mailbox/mailbox.hpp"

#include "broker/config/config.hpp"
#include "engines/sqlite_store/sqlite_store.hpp"
#include "support/loopback_client.hpp"
#include "support/run_async.hpp"
#include "support/temp_dir.hpp"

#include <rapidjson/document.h>

#include <gtest/gtest.h>

#include <fstream>
#include <thread>

namespace tellonce {
namespace {

class FakePartners : public PartnerDirectory {
 public:
  std::string_view by_api_key(std::string_view key) const override {
    if (key == "key-carers") return carers_;
    if (key == "key-pantry") return pantry_;
    return {};
  }
  std::string_view by_id(std::string_view id) const override { return id == carers_ || id == pantry_ ? id : ""; }
  std::string_view by_hl7v2_facility(std::string_view) const override { return {}; }

 private:
  std::string carers_ = "carers", pantry_ = "pantry";
};

class MailboxTest : public ::testing::Test {
 protected:
  void SetUp() override { build(std::chrono::hours(24)); }

  void build(std::chrono::milliseconds expire_after) {
    SqliteStoreSettings store_settings;
    store_settings.path = dir_.path() / "t.db";
    store_settings.synchronous_full = false;  // hundreds of small commits; durability is not tested here
    store_ = make_sqlite_store(store_settings);
    MailboxSettings settings;
    settings.listen = "127.0.0.1:0";
    settings.expire_after = expire_after;
    OutboundContext ctx{io_.io, "carers", *store_, &servers_, &partners_, store_.get()};
    adapter_ = mailbox_outbound_type().create(std::make_shared<MailboxSettings>(settings), ctx);
    servers_.start_all();
    io_.start();
    port_ = servers_.at("127.0.0.1:0").port();
  }

  void TearDown() override {
    servers_.stop_all();
    adapter_->stop();
    io_.stop();
    adapter_.reset();
    store_->close();
  }

  // A record routed to the carers' mailbox and held there, as the dispatcher would leave it.
  std::string hold(std::string patient = "9449306753", std::int64_t held_at_ms = now_ms()) {
    NewMessage m;
    m.id = new_message_id();
    m.source = "rtx";
    m.channel = "fhir-http";
    m.resource_type = "Patient";
    m.patient_key = std::move(patient);
    m.content_type = "application/fhir+json";
    m.body = R"({"resourceType":"Patient","id":")" + m.id + R"("})";
    m.content_hash = sha256_hex(m.body);
    m.received_at_ms = now_ms();
    m.destinations = {"carers"};
    auto committed = test::run_async(store_->commit(m)).value();
    const auto& job = committed.jobs.at(0);
    auto held = test::run_async(adapter_->deliver(job));
    EXPECT_EQ(held.outcome, DeliveryOutcome::held);
    DeliveryAttempt a;
    a.delivery_id = job.delivery_id;
    a.message_id = job.message_id;
    a.destination = job.destination;
    a.attempt = 1;
    a.at_ms = held_at_ms;
    a.outcome = held.outcome;
    a.partner_code = held.partner_code;
    a.detail = held.detail;
    EXPECT_TRUE(test::run_async(store_->record_attempt(a)));
    return m.id;
  }

  HttpResponse call(http::verb verb, const std::string& target, const std::string& key = "key-carers") {
    auto req = test::make_request(verb, target);
    if (!key.empty()) req.set(http::field::authorization, "Bearer " + key);
    return test::send(port_, req);
  }

  std::vector<std::string> inbox(const std::string& key = "key-carers") {
    auto res = call(http::verb::get, "/mailbox/carers/inbox", key);
    EXPECT_EQ(res.result(), http::status::ok) << res.body();
    rapidjson::Document doc;
    doc.Parse(res.body().c_str());
    std::vector<std::string> ids;
    if (doc.IsObject() && doc.HasMember("messages"))
      for (const auto& id : doc["messages"].GetArray()) ids.emplace_back(id.GetString());
    return ids;
  }

  static std::string issue_code(const HttpResponse& res) {
    rapidjson::Document doc;
    doc.Parse(res.body().c_str());
    if (!doc.IsObject() || !doc.HasMember("issue")) return "not an OperationOutcome: " + res.body();
    return doc["issue"][0]["code"].GetString();
  }

  test::TempDir dir_{"tellonce-mailbox"};
  test::IoThread io_;
  HttpServers servers_{io_.io, HttpLimits{}};
  FakePartners partners_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<OutboundAdapter> adapter_;
  unsigned short port_ = 0;
};

TEST_F(MailboxTest, ListReadAcknowledge) {
  const auto first = hold();
  const auto second = hold();
  EXPECT_EQ(inbox(), (std::vector<std::string>{first, second}));

  auto read = call(http::verb::get, "/mailbox/carers/inbox/" + first);
  ASSERT_EQ(read.result(), http::status::ok) << read.body();
  EXPECT_EQ(read[http::field::content_type], "application/fhir+json");
  EXPECT_EQ(read["X-Tellonce-Message-Id"], first);
  EXPECT_EQ(read["X-Tellonce-Source"], "rtx");
  EXPECT_EQ(read["X-Tellonce-Resource-Type"], "Patient");
  EXPECT_EQ(read.body(), R"({"resourceType":"Patient","id":")" + first + R"("})");

  auto ack = call(http::verb::put, "/mailbox/carers/inbox/" + first + "/status/acknowledged");
  ASSERT_EQ(ack.result(), http::status::ok) << ack.body();
  EXPECT_EQ(inbox(), (std::vector<std::string>{second}));
  auto view = test::run_async(store_->find(first)).value();
  ASSERT_TRUE(view);
  EXPECT_EQ(view->deliveries.at(0).status, DeliveryStatus::delivered);
  EXPECT_EQ(view->state, MessageState::delivered);

  // Gone from the inbox: neither readable nor acknowledgeable again.
  EXPECT_EQ(call(http::verb::get, "/mailbox/carers/inbox/" + first).result(), http::status::not_found);
  auto again = call(http::verb::put, "/mailbox/carers/inbox/" + first + "/status/acknowledged");
  EXPECT_EQ(again.result(), http::status::not_found);
  EXPECT_EQ(issue_code(again), "not-found");
}

TEST_F(MailboxTest, OnlyThePartnersOwnKeyOpensItsMailbox) {
  const auto id = hold();
  for (const auto& target : {std::string("/mailbox/carers/inbox"), "/mailbox/carers/inbox/" + id}) {
    auto none = call(http::verb::get, target, "");
    EXPECT_EQ(none.result(), http::status::unauthorized) << target;
    EXPECT_EQ(none[http::field::www_authenticate], "Bearer");
    EXPECT_EQ(issue_code(none), "security");
    EXPECT_EQ(call(http::verb::get, target, "not-a-key").result(), http::status::unauthorized) << target;
    auto other = call(http::verb::get, target, "key-pantry");
    EXPECT_EQ(other.result(), http::status::forbidden) << target;
    EXPECT_EQ(issue_code(other), "forbidden");
  }
  auto ack = call(http::verb::put, "/mailbox/carers/inbox/" + id + "/status/acknowledged", "key-pantry");
  EXPECT_EQ(ack.result(), http::status::forbidden);
  EXPECT_EQ(inbox(), (std::vector<std::string>{id}));  // still there

  auto unknown = call(http::verb::get, "/mailbox/carers/inbox/01NOSUCHMESSAGE0000000000");
  EXPECT_EQ(unknown.result(), http::status::not_found);
  EXPECT_EQ(issue_code(unknown), "not-found");
  EXPECT_EQ(call(http::verb::get, "/mailbox/carers/outbox").result(), http::status::not_found);
  auto wrong_method = call(http::verb::delete_, "/mailbox/carers/inbox/" + id);
  EXPECT_EQ(wrong_method.result(), http::status::method_not_allowed);
  EXPECT_EQ(wrong_method[http::field::allow], "GET");
}

TEST_F(MailboxTest, ListsAPatientsRecordsInAcceptanceOrderAtMostFiveHundred) {
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(hold(i % 2 ? "9449306753" : "9449310475"));
  EXPECT_EQ(inbox(), ids);
  // A long mailbox is listed 500 at a time; acknowledging makes room for the rest.
  for (int i = 0; i < 500; ++i) ids.push_back(hold());
  auto listed = inbox();
  ASSERT_EQ(listed.size(), 500u);
  EXPECT_EQ(listed.front(), ids[0]);
  EXPECT_EQ(listed.back(), ids[499]);
  ASSERT_EQ(call(http::verb::put, "/mailbox/carers/inbox/" + ids[0] + "/status/acknowledged").result(),
            http::status::ok);
  EXPECT_EQ(inbox().back(), ids[500]);
}

class MailboxExpiryTest : public MailboxTest {
 protected:
  void SetUp() override { build(std::chrono::seconds(1)); }
};

TEST_F(MailboxExpiryTest, RecordsNotAcknowledgedInTimeExpireOnTheTrail) {
  // The expiry timer runs at start-up and every expire_after / 4 (at least 250 ms).
  EXPECT_EQ(mailbox_expiry_interval(std::chrono::hours(120)), std::chrono::minutes(1));
  EXPECT_EQ(mailbox_expiry_interval(std::chrono::seconds(1)), std::chrono::milliseconds(250));
  const auto stale = hold("9449306753", now_ms() - 60'000);
  const auto fresh = hold("9449306753", now_ms() + 3'600'000);  // not due within this test
  auto expired = [&] {
    auto view = test::run_async(store_->find(stale)).value();
    return view && view->deliveries.at(0).status == DeliveryStatus::expired;
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!expired() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(expired());
  auto view = test::run_async(store_->find(stale)).value();
  EXPECT_EQ(view->state, MessageState::failed);
  EXPECT_EQ(view->events.back().kind, EventKind::expired);
  EXPECT_EQ(view->events.back().destination, "carers");
  EXPECT_EQ(inbox(), (std::vector<std::string>{fresh}));
  EXPECT_EQ(call(http::verb::get, "/mailbox/carers/inbox/" + stale).result(), http::status::not_found);
}

TEST_F(MailboxTest, NeedsTheBrokersHttpFacility) {
  OutboundContext bare{io_.io, "carers", *store_};
  EXPECT_THROW(mailbox_outbound_type().create(std::make_shared<MailboxSettings>(), bare), std::logic_error);
}

// The config checks a mailbox's settings: expire_after of at least a second, a usable listen
// address; without either key the defaults (5 days, the API's listener) apply.
TEST(MailboxConfig, ExpireAfterAndListenAreChecked) {
  test::TempDir dir("tellonce-mailbox-config");
  auto load = [&](const std::string& endpoint) {
    const auto path = dir.path() / "t.yaml";
    std::ofstream(path) << "insecure_clear_api_keys: true\npartners:\n  - id: rtx\n    kind: trust\n    ods: RTX\n"
                           "  - id: carers\n    kind: vcse\n    ods: 8JK98\n    api_keys: [k]\n"
                           "    endpoint: " + endpoint + "\n"
                           "routes:\n  - id: all\n    match: {}\n    to: [carers]\n";
    AdapterRegistry registry;
    register_builtin_adapters(registry);
    register_builtin_engines(registry);
    return load_config(path, registry);
  };
  auto ok = load("{ type: mailbox }");
  ASSERT_TRUE(ok.problems.empty()) << ok.problems.front().message;
  const auto& settings = settings_as<MailboxSettings>(ok.config->partner("carers")->endpoint->settings);
  EXPECT_EQ(settings.expire_after, std::chrono::hours(24 * 5));
  EXPECT_EQ(settings.listen, "");
  auto short_expiry = load("{ type: mailbox, expire_after: 500ms }");
  ASSERT_EQ(short_expiry.problems.size(), 1u);
  EXPECT_EQ(short_expiry.problems[0].path, "partners[1].endpoint.expire_after");
  auto bad_listen = load("{ type: mailbox, listen: nowhere }");
  ASSERT_EQ(bad_listen.problems.size(), 1u);
  EXPECT_EQ(bad_listen.problems[0].path, "partners[1].endpoint.listen");
}

}  // namespace
}  // namespace tellonce
