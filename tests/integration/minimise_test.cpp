// End-to-end data minimisation: the real `tellonce serve`, two demo-sink partners, one with an
// allow-list. The minimised partner receives the referral without the diagnosis and medication;
// the other receives the record as it was sent; the trail says how much was removed.
#include "harness.hpp"
#include "records.hpp"

#include "support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;

std::string config_text(unsigned short gp, unsigned short charity) {
  return R"(api:
  listen: 127.0.0.1:0
store:
  path: data/tellonce.db
insecure_clear_api_keys: true
partners:
  - id: rtx
    kind: trust
    ods: RTX
  - id: gp-a
    kind: primary-care
    ods: A81001
    endpoint: { type: fhir-rest, url: "http://127.0.0.1:)" + std::to_string(gp) + R"(/fhir", timeout: 2s }
  - id: charity
    kind: vcse
    ods: 8JK99
    minimise: social-prescribing
    endpoint: { type: fhir-rest, url: "http://127.0.0.1:)" + std::to_string(charity) + R"(/fhir", timeout: 2s }
)" + std::string(kFhirHttpInboundYaml) + R"(routes:
  - id: referrals
    match:
      event: servicerequest-request
    to: [gp-a, charity]
minimisation:
  - id: social-prescribing
    allow:
      - Patient.identifier
      - Patient.name
      - Patient.telecom
      - Patient.address
      - ServiceRequest.status
      - ServiceRequest.intent
      - ServiceRequest.code
      - ServiceRequest.subject
      - ServiceRequest.reasonCode
)";
}

// The demo's referral with a diagnosis (Condition) and a medication (MedicationStatement) added,
// and the patient's birth date and gender, which the charity does not need either.
std::string referral_with_clinical_entries(const std::string& nhs) {
  std::string m = referral_message("7f2b0c1e-2222-4aaa-8bbb-000000000001", nhs, "A81001");
  const std::string extra = R"(,
   {"fullUrl":"urn:uuid:5e2a4ad1-0000-4000-8000-000000000004","resource":{"resourceType":"Condition",
     "code":{"coding":[{"system":"http://snomed.info/sct","code":"35489007","display":"Depressive disorder"}]},
     "subject":{"reference":"urn:uuid:5e2a4ad1-0000-4000-8000-000000000003"}}},
   {"fullUrl":"urn:uuid:5e2a4ad1-0000-4000-8000-000000000005","resource":{"resourceType":"MedicationStatement",
     "status":"active",
     "medicationCodeableConcept":{"coding":[{"system":"http://snomed.info/sct","code":"321949006","display":"Sertraline 50mg tablets"}]},
     "subject":{"reference":"urn:uuid:5e2a4ad1-0000-4000-8000-000000000003"}}}
  ]})";
  auto end = m.rfind(']');
  return m.substr(0, end) + extra.substr(0, extra.size() - 4) + "\n  ]}";
}

TEST(MinimiseIntegration, MinimisedPartnerGetsOnlyTheListAndTheOtherTheRecordAsSent) {
  TempDir dir;
  ReservedPort gp_port, charity_port;
  Sink gp(dir.path(), "gp-a", gp_port);
  Sink charity(dir.path(), "charity", charity_port);
  Broker broker(dir.path(), config_text(gp_port, charity_port));
  broker.start();
  Client client;

  const std::string sent = referral_with_clinical_entries(nhs_number(41));
  auto r = client.post_fhir(broker.base() + "/fhir/$process-message", sent, "rtx");
  ASSERT_EQ(r.status, 202) << r.body;
  const std::string id = r.headers["x-tellonce-message-id"];
  ASSERT_TRUE(gp.wait_for(1, 10s));
  ASSERT_TRUE(charity.wait_for(1, 10s));

  const std::string to_gp = gp.received_bodies().front();
  EXPECT_NE(to_gp.find("\"Condition\""), std::string::npos);
  EXPECT_NE(to_gp.find("Sertraline"), std::string::npos);

  const std::string to_charity = charity.received_bodies().front();
  EXPECT_EQ(to_charity.find("\"Condition\""), std::string::npos) << to_charity;
  EXPECT_EQ(to_charity.find("MedicationStatement"), std::string::npos) << to_charity;
  EXPECT_EQ(to_charity.find("birthDate"), std::string::npos) << to_charity;
  EXPECT_EQ(to_charity.find("generalPractitioner"), std::string::npos) << to_charity;
  EXPECT_NE(to_charity.find(nhs_number(41)), std::string::npos) << to_charity;
  EXPECT_NE(to_charity.find("\"family\":\"Example\""), std::string::npos) << to_charity;
  EXPECT_NE(to_charity.find("servicerequest-request"), std::string::npos) << to_charity;
  EXPECT_NE(to_charity.find("\"ServiceRequest\""), std::string::npos) << to_charity;

  auto view = wait_for_state(client, broker.base(), id, "delivered", 10s);
  // The two clinical entries; Patient gender, birthDate, generalPractitioner.
  EXPECT_NE(view.find("minimised by allow-list social-prescribing: 5 elements removed"), std::string::npos) << view;
  EXPECT_EQ(view.find("Sertraline"), std::string::npos);
}

// The same allow-list on a `file` outbox and on a `mailbox`: the dispatcher minimises before every
// adapter, so what lands in the folder and what the partner collects lack the clinical entries.
TEST(MinimiseIntegration, FileAndMailboxPartnersGetTheMinimisedRecordToo) {
  TempDir dir;
  const auto outbox = dir.path() / "outbox";
  std::filesystem::create_directories(outbox);
  std::string config = config_text(1, 1);  // the fhir-rest partners are not routed to here
  const std::string extra_partners = R"(  - id: charity-files
    kind: vcse
    ods: 8JK98
    minimise: social-prescribing
    endpoint: { type: file, directory: ")" + outbox.string() + R"(" }
  - id: charity-box
    kind: vcse
    ods: 8JK97
    api_keys: [it-box-key]
    minimise: social-prescribing
    endpoint: { type: mailbox }
inbound:)";
  config.replace(config.find("inbound:"), 8, extra_partners);
  config.replace(config.find("to: [gp-a, charity]"), 19, "to: [charity-files, charity-box]");
  Broker broker(dir.path(), config);
  broker.start();
  Client client;

  auto r = client.post_fhir(broker.base() + "/fhir/$process-message", referral_with_clinical_entries(nhs_number(42)), "rtx");
  ASSERT_EQ(r.status, 202) << r.body;
  const std::string id = r.headers["x-tellonce-message-id"];

  const auto file = outbox / (id + ".json");
  for (int i = 0; i < 100 && !std::filesystem::exists(file); ++i) std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(std::filesystem::exists(file)) << broker.output();
  const std::string in_file = read_file(file);

  HttpReply collected;
  for (int i = 0; i < 100; ++i) {
    collected = client.request("GET", broker.base() + "/mailbox/charity-box/inbox/" + id, "",
                               {"Authorization: Bearer it-box-key"});
    if (collected.status == 200) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(collected.status, 200) << collected.body << broker.output();

  for (const std::string* body : std::initializer_list<const std::string*>{&in_file, &collected.body}) {
    EXPECT_EQ(body->find("\"Condition\""), std::string::npos) << *body;
    EXPECT_EQ(body->find("Sertraline"), std::string::npos) << *body;
    EXPECT_EQ(body->find("birthDate"), std::string::npos) << *body;
    EXPECT_NE(body->find(nhs_number(42)), std::string::npos) << *body;
    EXPECT_NE(body->find("\"ServiceRequest\""), std::string::npos) << *body;
  }
  auto view = client.request("GET", broker.base() + "/api/messages/" + id).body;
  EXPECT_NE(view.find("minimised by allow-list social-prescribing: 5 elements removed"), std::string::npos) << view;
}

}  // namespace
}  // namespace tellonce::itest
