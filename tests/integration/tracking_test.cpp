// End-to-end for message tracking (issue 11): the real `tellonce serve` and a real demo-sink
// partner; search, pause/resume across a restart, replay by filter with a dry run.
#include "harness.hpp"
#include "records.hpp"

#include <gtest/gtest.h>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;

std::string post_as(Client& c, const std::string& url, const std::string& actor, long expect = 200) {
  auto r = c.request("POST", url, "", {"X-Tellonce-Actor: " + actor});
  EXPECT_EQ(r.status, expect) << url << " " << r.body;
  return r.body;
}

TEST(TrackingIntegration, PausedDestinationHoldsRecordsInOrderAcrossARestartAndDrainsOnResume) {
  TempDir dir;
  ReservedPort sink_port;
  Broker broker(dir.path(), one_route_config(sink_port));
  Client client;
  broker.start();
  post_as(client, broker.base() + "/api/destinations/gp-a/pause", "cli:it-operator");

  Sink gp(dir.path(), "gp-a", sink_port);
  std::vector<std::string> sent;
  for (int i = 0; i < 5; ++i) {
    auto r = client.post_fhir(broker.base() + "/fhir/Patient", patient(nhs_number(10), "A81001", "p" + std::to_string(i)), "rtx");  // one patient: one lane, in order
    ASSERT_EQ(r.status, 202) << r.body;
    sent.push_back(r.headers["x-tellonce-message-id"]);
  }
  EXPECT_FALSE(gp.wait_for(1, 1500ms)) << "a paused destination was sent a record";
  auto listed = client.request("GET", broker.base() + "/api/destinations");
  EXPECT_EQ(json_string_at(listed.body, "/0/status"), "paused") << listed.body;
  EXPECT_EQ(json_string_at(listed.body, "/0/changedBy"), "itest-admin via cli:it-operator") << listed.body;

  ASSERT_EQ(broker.stop(), 0);
  broker.start();
  EXPECT_FALSE(gp.wait_for(1, 1500ms)) << "the pause did not survive the restart";
  listed = client.request("GET", broker.base() + "/api/destinations/gp-a");
  EXPECT_EQ(json_string_at(listed.body, "/status"), "paused") << listed.body;

  // Resumed through the CLI, as an operator would.
  Process cli({tellonce_binary().string(), "destinations", "resume", "gp-a", "--api", broker.base(), "--token-file", token_file(dir.path())},
              dir.path() / "cli.log");
  EXPECT_EQ(cli.wait_exit(10s), 0) << cli.output();
  ASSERT_TRUE(gp.wait_for(5, 10s));
  EXPECT_EQ(gp.received_message_ids(), sent);  // in acceptance order
  auto one = client.request("GET", broker.base() + "/api/destinations/gp-a");
  EXPECT_EQ(json_string_at(one.body, "/trail/0/action"), "resumed") << one.body;
  EXPECT_EQ(json_string_at(one.body, "/trail/1/action"), "paused") << one.body;
  EXPECT_EQ(json_string_at(one.body, "/trail/1/actor"), "itest-admin via cli:it-operator") << one.body;
}

TEST(TrackingIntegration, SearchFindsARecordByNhsNumberAndReplayByFilterCountsFirst) {
  TempDir dir;
  ReservedPort sink_port;
  // The partner refuses the first two records for good (HTTP 400): they go dead.
  Sink gp(dir.path(), "gp-a", sink_port, {"--fail-status", "400", "--fail-first", "2"});
  Broker broker(dir.path(), one_route_config(sink_port));
  Client client;
  broker.start();
  std::vector<std::string> ids;
  for (int i = 0; i < 2; ++i) {
    auto r = client.post_fhir(broker.base() + "/fhir/Patient", patient(nhs_number(20 + i), "A81001"), "rtx");
    ASSERT_EQ(r.status, 202) << r.body;
    ids.push_back(r.headers["x-tellonce-message-id"]);
    wait_for_state(client, broker.base(), ids.back(), "failed", 10s);
  }
  auto found = client.request("GET", broker.base() + "/api/messages?nhsNumber=" + nhs_number(21));
  EXPECT_EQ(json_string_at(found.body, "/messages/0/id"), ids[1]) << found.body;
  EXPECT_EQ(json_string_at(found.body, "/messages/1/id"), "") << found.body;
  auto detail = client.request("GET", broker.base() + "/api/messages/" + ids[0]);
  EXPECT_EQ(json_string_at(detail.body, "/attempts/0/partnerCode"), "HTTP 400") << detail.body;
  EXPECT_EQ(json_string_at(detail.body, "/attempts/0/outcome"), "permanent") << detail.body;

  auto dry = post_as(client, broker.base() + "/api/replay?state=failed&destination=gp-a&dryRun=true", "cli:it");
  EXPECT_EQ(dry, R"({"matched":2,"replayed":0,"dryRun":true})");
  EXPECT_NE(client.request("GET", broker.base() + "/api/messages/" + ids[0]).body.find("\"failed\""),
            std::string::npos);  // a dry run changes nothing

  Process cli({tellonce_binary().string(), "replay", "--filter", "state=failed", "--filter", "destination=gp-a",
               "--api", broker.base(), "--token-file", token_file(dir.path())},
              dir.path() / "cli.log");
  EXPECT_TRUE(cli.wait_for_line("2 matched, 2 queued again", 10s)) << cli.output();
  EXPECT_EQ(cli.wait_exit(10s), 0) << cli.output();
  for (const auto& id : ids) {
    auto view = wait_for_state(client, broker.base(), id, "delivered", 10s);
    EXPECT_NE(view.find(std::string("by itest-operator via cli:")), std::string::npos) << view;  // who replayed it
  }
  // The listing CLI shows them.
  Process list({tellonce_binary().string(), "messages", "--state", "delivered", "--api", broker.base(), "--token-file", token_file(dir.path())},
               dir.path() / "list.log");
  EXPECT_TRUE(list.wait_for_line("2 message(s), newest first", 10s)) << list.output();
  EXPECT_NE(list.output().find(ids[0]), std::string::npos) << list.output();
  EXPECT_EQ(list.wait_exit(10s), 0) << list.output();
}

}  // namespace
}  // namespace tellonce::itest
