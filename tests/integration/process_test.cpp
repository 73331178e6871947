// The broker as a process: what SIGTERM does to requests in flight, and what reaches its logs.
#include "harness.hpp"
#include "records.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;

// A broker on a port of its own; Patients registered at A81001 go to gp-a, at A81002 to gp-b.
std::string config_text(unsigned short gp_a, unsigned short gp_b) {
  return R"(api:
  listen: 127.0.0.1:0
store:
  path: data/tellonce.db
delivery:
  concurrency_per_destination: 2
  retry: { keep_trying_for: 1h, initial_backoff: 100ms, max_backoff: 400ms, multiplier: 2, jitter: 0.1 }
partners:
  - id: rtx
    name: Royal Example NHS Trust
    kind: trust
    ods: RTX
  - id: gp-a
    name: Example Surgery A
    kind: primary-care
    ods: A81001
    endpoint: { type: fhir-rest, url: "http://127.0.0.1:)" + std::to_string(gp_a) + R"(/fhir", timeout: 2s, connect_timeout: 1s }
  - id: gp-b
    name: Example Surgery B
    kind: primary-care
    ods: A81002
    endpoint: { type: fhir-rest, url: "http://127.0.0.1:)" + std::to_string(gp_b) + R"(/fhir", timeout: 2s, connect_timeout: 1s }
)" + std::string(kFhirHttpInboundYaml) + R"(routes:
  - id: gp-a
    match:
      where:
        - path: Patient.generalPractitioner.identifier.value
          equals: A81001
    to: [gp-a]
  - id: gp-b
    match:
      where:
        - path: Patient.generalPractitioner.identifier.value
          equals: A81002
    to: [gp-b]
)";
}

std::string header_value(const std::string& response, const std::string& name) {
  auto at = response.find("\r\n" + name + ": ");
  if (at == std::string::npos) return {};
  at += name.size() + 4;
  return response.substr(at, response.find("\r\n", at) - at);
}

// SIGTERM while records are arriving: every request answered 202 is in the store after a
// restart, and every record in the store was answered 202 (none committed and left unanswered).
// A request whose header arrived before the signal is finished and answered, even though its
// body arrives after it.
TEST(BrokerProcess, SigtermLetsRequestsInFlightFinishAndLosesNothing) {
  TempDir dir;
  Sink gp(dir.path(), "gp-a", 0);
  Sink gp_b(dir.path(), "gp-b", 0);
  Broker broker(dir.path(), config_text(gp.port(), gp_b.port()));
  broker.start();
  const unsigned short port = static_cast<unsigned short>(std::stoi(broker.base().substr(broker.base().rfind(':') + 1)));

  // Held mid-request: the header is read (the broker says 100 Continue), the body is not sent.
  std::string held_body = patient(nhs_number(9100), "A81001", "held");
  RawConnection held(port);
  ASSERT_TRUE(held.send_all("POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            "Content-Type: application/fhir+json\r\nX-Tellonce-Partner: rtx\r\n"
                            "Expect: 100-continue\r\nContent-Length: " + std::to_string(held_body.size()) + "\r\n\r\n"));
  ASSERT_NE(held.read_until("\r\n\r\n").find("100 Continue"), std::string::npos);

  // Partners posting on keep-alive connections until the broker stops taking them.
  std::mutex mu;
  std::set<std::string> answered_202;
  std::atomic<int> answers{0};
  std::atomic<int> refused{0};
  std::string errors;  // how each partner was turned away, for the failure messages
  std::vector<std::thread> partners;
  for (int t = 0; t < 6; ++t) {
    partners.emplace_back([&, t] {
      Client c;
      for (int i = 0; i < 400; ++i) {
        int n = t * 1000 + i;
        auto r = c.post_fhir(broker.base() + "/fhir/Patient", patient(nhs_number(n), "A81002", "p" + std::to_string(n)),
                             "rtx");
        if (r.status < 0) {  // the connection was refused or closed before an answer
          ++refused;
          std::lock_guard lk(mu);
          errors += "partner " + std::to_string(t) + " request " + std::to_string(i) + ": " + r.body + "\n";
          break;
        }
        ++answers;
        if (r.status == 202) {
          std::lock_guard lk(mu);
          answered_202.insert(r.headers["x-tellonce-message-id"]);
        }
      }
    });
  }
  while (answers < 60) std::this_thread::sleep_for(5ms);
  broker.process().signal(SIGTERM);
  ASSERT_TRUE(broker.process().wait_for_line("tellonce stopping", 10s).has_value()) << broker.output();

  // The rest of the held request, after the broker began to stop: it is still answered.
  ASSERT_TRUE(held.send_all(held_body));
  std::string held_answer = held.read_to_end();
  EXPECT_EQ(held_answer.rfind("HTTP/1.1 202", 0), 0u) << held_answer;
  EXPECT_EQ(header_value(held_answer, "Connection"), "close") << held_answer;
  std::string held_id = header_value(held_answer, "X-Tellonce-Message-Id");
  EXPECT_EQ(held_id.size(), 26u) << held_answer;

  for (auto& p : partners) p.join();
  EXPECT_EQ(refused.load(), 6) << "every partner is eventually turned away";
  ASSERT_TRUE(broker.process().wait_for_line("tellonce stopped", 30s).has_value()) << broker.output();
  EXPECT_EQ(broker.process().wait_exit(10s), 0) << broker.output();
  // Every connection was closed by the drain itself, none left for the deadline to cut off.
  EXPECT_EQ(broker.output().find("drain deadline"), std::string::npos) << broker.output();

  answered_202.insert(held_id);
  broker.start();  // the same store
  Client c;
  auto stored = stored_message_ids(c, broker.base());
  std::set<std::string> in_store(stored.begin(), stored.end());
  EXPECT_EQ(in_store.size(), stored.size());
  for (const auto& id : answered_202) EXPECT_TRUE(in_store.count(id)) << "answered 202 but not stored: " << id;
  for (const auto& id : in_store)
    EXPECT_TRUE(answered_202.count(id)) << "stored but never answered 202: " << id << "\n" << errors;
}

// Records carrying known identifiers, good and bad, refused, accepted, delivered and refused by
// partners: none of the identifiers, names or birth dates appears in what the broker prints.
TEST(BrokerProcess, NoPatientDataInTheLogs) {
  const std::string good_nhs_a = nhs_number(424242), good_nhs_b = nhs_number(515151), other_nhs = nhs_number(616161);
  std::string bad_nhs = other_nhs;
  bad_nhs.back() = static_cast<char>('0' + (bad_nhs.back() - '0' + 1) % 10);  // a wrong check digit
  const std::string family = "Quenbyfeather", given = "Ottoline", birth = "1947-06-19", bad_birth = "1947-02-31";
  const std::vector<std::string> secrets{good_nhs_a, good_nhs_b, other_nhs, bad_nhs, family, given, birth, bad_birth};

  auto person = [&](const std::string& nhs, const std::string& gp_ods, const std::string& birth_date,
                    const std::string& extra = "") {
    return R"({"resourceType":"Patient",)" + extra + R"("identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" +
           nhs + R"("}],"name":[{"family":")" + family + R"(","given":[")" + given + R"("]}],"birthDate":")" + birth_date +
           R"(","generalPractitioner":[{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":")" +
           gp_ods + R"("}}]})";
  };

  TempDir dir;
  Sink refusing(dir.path(), "gp-a", 0, {"--fail-status", "400", "--fail-first", "1000"});
  Sink flaky(dir.path(), "gp-b", 0, {"--fail-status", "503", "--fail-first", "2"});
  Broker broker(dir.path(), config_text(refusing.port(), flaky.port()));
  broker.start();
  Client c;
  auto url = broker.base() + "/fhir/Patient";

  auto refused_by_partner = c.post_fhir(url, person(good_nhs_a, "A81001", birth), "rtx");
  ASSERT_EQ(refused_by_partner.status, 202) << refused_by_partner.body;
  auto retried = c.post_fhir(url, person(good_nhs_b, "A81002", birth), "rtx", {"Idempotency-Key: " + good_nhs_b});
  ASSERT_EQ(retried.status, 202) << retried.body;
  EXPECT_EQ(c.post_fhir(url, person(good_nhs_b, "A81002", birth), "rtx", {"Idempotency-Key: " + good_nhs_b}).status, 200);
  EXPECT_EQ(c.post_fhir(url, person(other_nhs, "Y99999", birth), "rtx").status, 202);  // unroutable
  EXPECT_EQ(c.post_fhir(url, person(bad_nhs, "A81001", birth), "rtx").status, 422);
  EXPECT_EQ(c.post_fhir(url, person(good_nhs_a, "A81001", bad_birth), "rtx").status, 422);
  EXPECT_EQ(c.post_fhir(url, person(good_nhs_a, "A81001", birth, R"("gender":")" + family + R"(",)"), "rtx").status, 422);
  EXPECT_EQ(c.post_fhir(url, person(good_nhs_a, "A81001", birth, R"("nickname":")" + given + R"(",)"), "rtx").status, 422);
  EXPECT_EQ(c.post_fhir(url, person(good_nhs_a, "A81001", birth).substr(0, 120), "rtx").status, 400);  // cut short
  EXPECT_EQ(c.post_fhir(broker.base() + "/fhir/Observation", person(good_nhs_a, "A81001", birth), "rtx").status, 400);
  EXPECT_EQ(c.post_fhir(url, person(good_nhs_a, "A81001", birth), "no-such-partner").status, 401);

  std::string dead_id = refused_by_partner.headers["x-tellonce-message-id"];
  EXPECT_EQ(json_string_at(wait_for_state(c, broker.base(), dead_id, "failed", 15s), "/state"), "failed");
  std::string retried_id = retried.headers["x-tellonce-message-id"];
  EXPECT_EQ(json_string_at(wait_for_state(c, broker.base(), retried_id, "delivered", 15s), "/state"), "delivered");

  broker.process().signal(SIGTERM);
  ASSERT_TRUE(broker.process().wait_for_line("tellonce stopped", 30s).has_value());  // all of stdout read
  EXPECT_EQ(broker.process().wait_exit(10s), 0);
  std::string output = broker.output();
  EXPECT_EQ(output.find("drain deadline"), std::string::npos) << output;
  // The lines that could carry data are there, so the test looks at something.
  EXPECT_NE(output.find("rejected record from rtx"), std::string::npos) << output;
  EXPECT_NE(output.find("attempt failed destination=gp-a message=" + dead_id), std::string::npos) << output;
  // A retried failure is logged by gp-b's circuit (one line per change), not per attempt.
  EXPECT_NE(output.find("circuit open destination=gp-b"), std::string::npos) << output;
  EXPECT_NE(output.find("matched no route"), std::string::npos) << output;
  for (const auto& secret : secrets) EXPECT_EQ(output.find(secret), std::string::npos) << secret << " in:\n" << output;
}

}  // namespace
}  // namespace tellonce::itest
