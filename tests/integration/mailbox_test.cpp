// End-to-end for mailboxes: the real broker holds records for partners without an endpoint,
// and each partner, with libcurl as its client, lists, reads and acknowledges its own.
#include "harness.hpp"
#include "records.hpp"

#include <gtest/gtest.h>

#include <rapidjson/document.h>

#include <algorithm>
#include <thread>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;

// Two VCSE partners without a server: the carers' centre receives Patients, the food bank
// Observations. `expire_after` is the carers' mailbox setting.
std::string mailbox_config(const std::string& expire_after) {
  return R"(api:
  listen: 127.0.0.1:0
store:
  path: data/tellonce.db
insecure_clear_api_keys: true
partners:
  - id: rtx
    kind: trust
    ods: RTX
    api_keys: [it-rtx-key]
  - id: carers
    name: Example Carers Centre
    kind: vcse
    ods: 8JK98
    api_keys: [it-carers-key]
    endpoint: { type: mailbox, listen: "127.0.0.1:0", expire_after: )" + expire_after + R"( }
  - id: pantry
    name: Example Food Bank
    kind: vcse
    ods: 8JK97
    api_keys: [it-pantry-key]
    endpoint: { type: mailbox }   # on the API's listener
)" + std::string(kFhirHttpInboundYaml) + R"(routes:
  - id: patients-to-carers
    match: { resource_type: Patient }
    to: [carers]
  - id: observations-to-pantry
    match: { resource_type: Observation }
    to: [pantry]
)";
}

std::vector<std::string> auth(const std::string& key) { return {"Authorization: Bearer " + key}; }

std::vector<std::string> listed(const HttpReply& r) {
  rapidjson::Document doc;
  doc.Parse(r.body.c_str());
  std::vector<std::string> ids;
  if (doc.IsObject() && doc.HasMember("messages") && doc["messages"].IsArray())
    for (const auto& id : doc["messages"].GetArray()) ids.emplace_back(id.GetString());
  return ids;
}

// Polls the inbox until it lists `n` messages (the dispatcher holds them asynchronously).
std::vector<std::string> wait_for_inbox(Client& c, const std::string& url, const std::string& key, std::size_t n) {
  auto end = std::chrono::steady_clock::now() + 10s;
  std::vector<std::string> ids;
  while (std::chrono::steady_clock::now() < end) {
    auto r = c.request("GET", url, "", auth(key));
    EXPECT_EQ(r.status, 200) << r.body;
    ids = listed(r);
    if (ids.size() >= n) break;
    std::this_thread::sleep_for(20ms);
  }
  return ids;
}

std::string post(Client& c, Broker& broker, const std::string& path, const std::string& body) {
  auto r = c.post_fhir(broker.base() + path, body, "rtx");
  EXPECT_EQ(r.status, 202) << r.body;
  return r.headers["x-tellonce-message-id"];
}

TEST(Mailbox, PartnersListReadAndAcknowledgeTheirOwnRecordsInAcceptanceOrder) {
  TempDir dir("tellonce-mailbox-it");
  Broker broker(dir.path(), mailbox_config("1h"));
  broker.start();
  Client c;
  // Two patients, interleaved: the listing keeps acceptance order, so each patient's too.
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i)
    ids.push_back(post(c, broker, "/fhir/Patient", patient(nhs_number(200 + i % 2), "A81001", "p" + std::to_string(i))));
  const auto observation_id = post(c, broker, "/fhir/Observation", observation(nhs_number(200)));

  const auto inbox = broker.base() + "/mailbox/carers/inbox";
  EXPECT_EQ(wait_for_inbox(c, inbox, "it-carers-key", ids.size()), ids);
  EXPECT_EQ(wait_for_inbox(c, broker.base() + "/mailbox/pantry/inbox", "it-pantry-key", 1),
            std::vector<std::string>{observation_id});
  auto trail = wait_for_state(c, broker.base(), ids[0], "delivering", 5s);
  EXPECT_EQ(json_string_at(trail, "/deliveries/0/status"), "held");

  auto read = c.request("GET", inbox + "/" + ids[0], "", auth("it-carers-key"));
  ASSERT_EQ(read.status, 200) << read.body;
  EXPECT_EQ(read.headers["x-tellonce-message-id"], ids[0]);
  EXPECT_EQ(read.headers["x-tellonce-source"], "rtx");
  EXPECT_EQ(read.headers["x-tellonce-resource-type"], "Patient");
  EXPECT_EQ(read.headers["content-type"], "application/fhir+json");
  EXPECT_EQ(read.body, patient(nhs_number(200), "A81001", "p0"));

  auto ack = c.request("PUT", inbox + "/" + ids[0] + "/status/acknowledged", "", auth("it-carers-key"));
  ASSERT_EQ(ack.status, 200) << ack.body;
  EXPECT_EQ(listed(c.request("GET", inbox, "", auth("it-carers-key"))),
            std::vector<std::string>(ids.begin() + 1, ids.end()));
  trail = wait_for_state(c, broker.base(), ids[0], "delivered", 5s);
  EXPECT_EQ(json_string_at(trail, "/deliveries/0/status"), "delivered");
  EXPECT_EQ(json_string_at(trail, "/deliveries/0/lastPartnerCode"), "acknowledged");
  EXPECT_EQ(broker.stop(), 0);
}

TEST(Mailbox, APartnerCannotOpenAnotherPartnersMailboxNorAMessageNotInItsOwn) {
  TempDir dir("tellonce-mailbox-it");
  Broker broker(dir.path(), mailbox_config("1h"));
  broker.start();
  Client c;
  const auto for_carers = post(c, broker, "/fhir/Patient", patient(nhs_number(210), "A81001"));
  const auto for_pantry = post(c, broker, "/fhir/Observation", observation(nhs_number(210)));
  const auto carers = broker.base() + "/mailbox/carers/inbox";
  const auto pantry = broker.base() + "/mailbox/pantry/inbox";
  ASSERT_EQ(wait_for_inbox(c, carers, "it-carers-key", 1).size(), 1u);
  ASSERT_EQ(wait_for_inbox(c, pantry, "it-pantry-key", 1).size(), 1u);

  // 401: no key, or a key nobody was given.
  EXPECT_EQ(c.request("GET", carers).status, 401);
  EXPECT_EQ(c.request("GET", carers, "", auth("guessed-key")).status, 401);
  EXPECT_EQ(c.request("GET", carers + "/" + for_carers, "", auth("guessed-key")).status, 401);
  // 403: another partner's key, for listing, reading and acknowledging.
  EXPECT_EQ(c.request("GET", carers, "", auth("it-pantry-key")).status, 403);
  EXPECT_EQ(c.request("GET", carers + "/" + for_carers, "", auth("it-pantry-key")).status, 403);
  auto forbidden = c.request("PUT", carers + "/" + for_carers + "/status/acknowledged", "", auth("it-pantry-key"));
  EXPECT_EQ(forbidden.status, 403);
  EXPECT_EQ(json_string_at(forbidden.body, "/resourceType"), "OperationOutcome");
  EXPECT_EQ(c.request("GET", pantry, "", auth("it-rtx-key")).status, 403);
  // 404: the other partner's message asked for in one's own mailbox.
  auto not_mine = c.request("GET", carers + "/" + for_pantry, "", auth("it-carers-key"));
  EXPECT_EQ(not_mine.status, 404);
  EXPECT_EQ(json_string_at(not_mine.body, "/issue/0/code"), "not-found");
  EXPECT_EQ(c.request("PUT", pantry + "/" + for_carers + "/status/acknowledged", "", auth("it-pantry-key")).status,
            404);
  // Nothing changed for either.
  EXPECT_EQ(listed(c.request("GET", carers, "", auth("it-carers-key"))), std::vector<std::string>{for_carers});
  EXPECT_EQ(listed(c.request("GET", pantry, "", auth("it-pantry-key"))), std::vector<std::string>{for_pantry});
  EXPECT_EQ(broker.stop(), 0);
}

TEST(Mailbox, ARecordNotAcknowledgedWithinExpireAfterEndsExpiredOnTheTrail) {
  TempDir dir("tellonce-mailbox-it");
  Broker broker(dir.path(), mailbox_config("1s"));
  broker.start();
  Client c;
  const auto id = post(c, broker, "/fhir/Patient", patient(nhs_number(220), "A81001"));
  // Held first, then expired by the mailbox's timer (it looks every 250 ms with expire_after 1s).
  auto trail = wait_for_state(c, broker.base(), id, "failed", 10s);
  EXPECT_EQ(json_string_at(trail, "/deliveries/0/status"), "expired");
  rapidjson::Document doc;
  doc.Parse(trail.c_str());
  ASSERT_TRUE(doc.IsObject());
  std::vector<std::string> kinds;
  for (const auto& e : doc["events"].GetArray()) kinds.emplace_back(e["kind"].GetString());
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "held"), kinds.end());
  ASSERT_EQ(kinds.back(), "expired");
  EXPECT_EQ(listed(c.request("GET", broker.base() + "/mailbox/carers/inbox", "", auth("it-carers-key"))),
            std::vector<std::string>{});
  EXPECT_EQ(c.request("GET", broker.base() + "/mailbox/carers/inbox/" + id, "", auth("it-carers-key")).status, 404);
  EXPECT_EQ(broker.stop(), 0);
}

}  // namespace
}  // namespace tellonce::itest
