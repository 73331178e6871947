// The real broker against a lost store and a full one: it refuses to start on a store that was
// lost, and /api/health says when records cannot be accepted.
#include "harness.hpp"
#include "records.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <thread>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::string config_text(unsigned short port, unsigned short sink, const std::string& store_extra = "") {
  return one_route_config(sink, "", store_extra, port);
}

// Runs `tellonce serve` with extra arguments until it exits (a refusal) or is ready; returns its
// output and whether it was still running (ready) when looked at.
struct ServeRun {
  bool ready = false;
  std::string output;
};

ServeRun serve(const fs::path& dir, const fs::path& config, std::vector<std::string> extra, const std::string& tag) {
  std::vector<std::string> args{tellonce_binary().string(), "serve", "--config", config.string()};
  for (auto& a : extra) args.push_back(a);
  Process p(args, dir / ("serve-" + tag + ".log"));
  ServeRun r;
  r.ready = p.wait_for_line("pending deliveries resumed", 30s).has_value();
  if (r.ready) p.terminate();
  r.output = p.output();
  return r;
}

TEST(StoreFaults, BrokerRefusesAStoreTruncatedToZeroBytesThenStartsAfreshWhenTold) {
  TempDir dir;
  unsigned short port = 0;  // the broker binds a port of its own
  ReservedPort sink_port;
  Sink gp(dir.path(), "gp-a", sink_port);
  const auto config = dir.path() / "tellonce.yaml";
  write_file(config, config_text(port, sink_port));
  const auto db = dir.path() / "data" / "tellonce.db";

  {
    Broker broker(dir.path(), config_text(port, sink_port), port);
    broker.start();
    {
      Client client;  // closed before the broker stops: an idle keep-alive connection once held its stop up
      for (int i = 0; i < 3; ++i)
        ASSERT_EQ(client.post_fhir(broker.base() + "/fhir/Patient", patient(nhs_number(i + 1), "A81001"), "rtx").status, 202);
    }
    ASSERT_TRUE(gp.wait_for(3, 10s));
    ASSERT_EQ(broker.stop(), 0);
  }
  ASSERT_TRUE(fs::exists(db.string() + ".id"));
  fs::resize_file(db, 0);

  auto refused = serve(dir.path(), config, {}, "refused");
  EXPECT_FALSE(refused.ready) << refused.output;
  EXPECT_NE(refused.output.find("is empty (0 bytes)"), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find(db.string() + ".id"), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find("--accept-new-store"), std::string::npos) << refused.output;
  EXPECT_EQ(fs::file_size(db), 0u);

  auto accepted = serve(dir.path(), config, {"--accept-new-store"}, "accepted");
  EXPECT_TRUE(accepted.ready) << accepted.output;
  bool kept_aside = false;
  for (const auto& e : fs::directory_iterator(db.parent_path()))
    kept_aside |= e.path().filename().string().starts_with("tellonce.db.replaced-");
  EXPECT_TRUE(kept_aside);
  EXPECT_TRUE(serve(dir.path(), config, {}, "after").ready);  // the new store is the marked one now
}

// A store at its size limit is a full disk: records are answered 503 and /api/health says 503
// with the reason; given room (a restart with a larger limit) it is healthy and nothing
// accepted earlier is missing.
TEST(StoreFaults, HealthIsUnavailableWhileTheStoreCannotWrite) {
  TempDir dir;
  unsigned short port = 0;
  ReservedPort sink_port;
  Sink gp(dir.path(), "gp-a", sink_port);
  Broker broker(dir.path(), config_text(port, sink_port, "  max_size: 640KB\n"), port);
  broker.start();
  Client client;
  auto health = client.request("GET", broker.base() + "/api/health");
  ASSERT_EQ(health.status, 200) << health.body;
  EXPECT_EQ(json_string_at(health.body, "/status"), "ok");

  std::vector<std::string> accepted;
  long last = 202;
  for (int i = 0; i < 3000 && last == 202; ++i) {
    auto r = client.post_fhir(broker.base() + "/fhir/Patient", patient(nhs_number(i + 1), "A81001"), "rtx");
    last = r.status;
    if (r.status == 202) accepted.push_back(r.headers["x-tellonce-message-id"]);
  }
  ASSERT_EQ(last, 503) << "the store never filled up";
  ASSERT_FALSE(accepted.empty());
  health = client.request("GET", broker.base() + "/api/health");
  EXPECT_EQ(health.status, 503) << health.body;
  EXPECT_EQ(json_string_at(health.body, "/status"), "unavailable");
  EXPECT_NE(json_string_at(health.body, "/problems/0").find("full"), std::string::npos) << health.body;
  ASSERT_EQ(broker.stop(), 0);

  write_file(broker.config_path(), config_text(port, sink_port, "  max_size: 64MB\n"));
  broker.start();
  health = client.request("GET", broker.base() + "/api/health");
  EXPECT_EQ(health.status, 200) << health.body;
  // Deliveries whose outcome could not be recorded while the store was full are sent again, so
  // the sink may hold duplicates: wait for every accepted id, not for a count.
  auto missing = [&] {
    auto ids = gp.received_message_ids();
    std::vector<std::string> out;
    for (const auto& id : accepted)
      if (std::find(ids.begin(), ids.end(), id) == ids.end()) out.push_back(id);
    return out;
  };
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (!missing().empty() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(50ms);
  EXPECT_EQ(missing(), std::vector<std::string>{});
}

}  // namespace
}  // namespace tellonce::itest
