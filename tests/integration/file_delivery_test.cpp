// End-to-end for the `file` outbound adapter: the real broker writes a partner's records into
// its outbox folder, one durable file per record, and the trail shows the delivery.
#include "harness.hpp"
#include "records.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <thread>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// The finished files: a file being written has a temporary name starting with a dot.
std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  for (auto& e : fs::directory_iterator(dir))
    if (!e.path().filename().string().starts_with(".")) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

bool wait_for_files(const fs::path& dir, std::size_t n, std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (files_in(dir).size() >= n) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

TEST(FileDelivery, EachRecordBecomesOneFileInThePartnersOutbox) {
  TempDir dir("tellonce-file-delivery");
  const auto outbox = dir / "outbox";
  fs::create_directories(outbox);
  Broker broker(dir.path(), R"(api:
  listen: 127.0.0.1:0
store:
  path: data/tellonce.db
partners:
  - id: rtx
    kind: trust
    ods: RTX
    api_keys: [it-rtx-key]
  - id: carers
    name: Example Carers Centre
    kind: vcse
    ods: 8JK99
    endpoint: { type: file, directory: ")" + outbox.string() + R"(" }
inbound:
  - id: fhir-http
    type: fhir-rest
    listen: 127.0.0.1:0
    base_path: /fhir
    allow_partner_header: true
routes:
  - id: patients-to-carers
    match: { resource_type: Patient }
    to: [carers]
)");
  broker.start();
  Client client;
  std::vector<std::string> ids, bodies;
  for (int i = 0; i < 3; ++i) {
    bodies.push_back(patient(nhs_number(100 + i), "A81001", "p" + std::to_string(i)));
    auto r = client.post_fhir(broker.base() + "/fhir/Patient", bodies.back(), "rtx");
    ASSERT_EQ(r.status, 202) << r.body;
    ids.push_back(r.headers["x-tellonce-message-id"]);
  }
  ASSERT_TRUE(wait_for_files(outbox, 3, 10s));
  auto files = files_in(outbox);
  ASSERT_EQ(files.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(files[i].filename().string(), ids[i] + ".json");  // acceptance order
    EXPECT_EQ(read_file(files[i]), bodies[i]);                  // the bytes as received
  }
  for (const auto& id : ids) {
    auto trail = wait_for_state(client, broker.base(), id, "delivered", 5s);
    EXPECT_NE(trail.find("\"delivered\""), std::string::npos) << trail;
  }
  // Once every delivery is done, no temporary file is left behind.
  EXPECT_EQ(static_cast<std::size_t>(std::distance(fs::directory_iterator(outbox), fs::directory_iterator())), 3u);
  EXPECT_EQ(broker.stop(), 0);
}

}  // namespace
}  // namespace tellonce::itest
