// End-to-end for the `file` outbound adapter: the real broker writes a partner's records into
// its outbox folder, one durable file per record (or NDJSON batches with a manifest each), and
// the trail shows the delivery.
#include "harness.hpp"
#include "records.hpp"
#include "tellonce/json.hpp"
#include "tellonce/message.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
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
insecure_clear_api_keys: true
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
)" + std::string(kFhirHttpInboundYaml) + R"(routes:
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

// The manifests' message ids, in batch order, once every manifest so far names a file whose
// sha256 and line count match it (the reader's contract: only files a manifest names).
struct OutboxView {
  std::vector<std::string> ids;
  std::vector<std::string> lines;
  std::vector<std::string> problems;
};

OutboxView read_outbox(const fs::path& outbox) {
  OutboxView view;
  std::vector<fs::path> manifests;
  for (auto& e : fs::directory_iterator(outbox))
    if (e.path().filename().string().ends_with(".manifest.json")) manifests.push_back(e.path());
  std::sort(manifests.begin(), manifests.end());
  for (const auto& m : manifests) {
    auto doc = parse_json(read_file(m));
    if (!doc) {
      view.problems.push_back("unreadable " + m.filename().string());
      continue;
    }
    const auto file = std::string(json_string(json_member(*doc, "file")));
    const auto bytes = read_file(outbox / file);
    if (sha256_hex(bytes) != json_string(json_member(*doc, "sha256")))
      view.problems.push_back(m.filename().string() + ": sha256 does not match " + file);
    std::size_t lines = 0;
    std::string line;
    for (char c : bytes) {
      if (c != '\n') {
        line += c;
        continue;
      }
      view.lines.push_back(std::move(line));
      line.clear();
      ++lines;
    }
    if (!line.empty()) view.problems.push_back(file + ": the last line has no end");
    if (auto* ids = json_member(*doc, "message_ids"); ids && ids->IsArray()) {
      for (auto& id : ids->GetArray()) view.ids.emplace_back(json_string(&id));
      if (ids->Size() != lines) view.problems.push_back(m.filename().string() + ": ids and lines differ");
    }
  }
  return view;
}

TEST(FileDelivery, NdjsonBatchesWithAManifestEachReachTheOutbox) {
  TempDir dir("tellonce-file-delivery-ndjson");
  const auto outbox = dir / "outbox";
  fs::create_directories(outbox);
  Broker broker(dir.path(), R"(api:
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
    ods: 8JK99
    endpoint:
      type: file
      directory: ")" + outbox.string() + R"("
      format: ndjson
      batch_max_records: 3
      batch_max_wait: 200ms
)" + std::string(kFhirHttpInboundYaml) + R"(routes:
  - id: patients-to-carers
    match: { resource_type: Patient }
    to: [carers]
)");
  broker.start();
  Client client;
  std::vector<std::string> ids;
  std::set<std::string> bodies;
  for (int i = 0; i < 5; ++i) {
    std::string record_id = "b";
    record_id += std::to_string(i);  // (g++ 12 warns falsely on "b" + std::to_string(i))
    auto body = patient(nhs_number(200 + i), "A81001", record_id);
    auto r = client.post_fhir(broker.base() + "/fhir/Patient", body, "rtx");
    ASSERT_EQ(r.status, 202) << r.body;
    ids.push_back(r.headers["x-tellonce-message-id"]);
    // NDJSON holds one record per line: the line breaks between tokens become spaces.
    std::replace(body.begin(), body.end(), '\n', ' ');
    bodies.insert(body);
  }
  for (const auto& id : ids) {
    auto trail = wait_for_state(client, broker.base(), id, "delivered", 10s);
    EXPECT_NE(trail.find("\"delivered\""), std::string::npos) << trail;
  }
  // Delivered means the batch and its manifest are durable: every id is listed exactly once, and
  // each listed file is whole (sha256) and holds the records' bytes, one per line.
  auto view = read_outbox(outbox);
  EXPECT_TRUE(view.problems.empty()) << view.problems.front();
  EXPECT_EQ(std::set<std::string>(view.ids.begin(), view.ids.end()), std::set<std::string>(ids.begin(), ids.end()));
  EXPECT_EQ(view.ids.size(), ids.size());
  EXPECT_EQ(std::set<std::string>(view.lines.begin(), view.lines.end()), bodies);
  for (auto& e : fs::directory_iterator(outbox))
    EXPECT_FALSE(e.path().filename().string().ends_with(".tmp")) << e.path();
  EXPECT_EQ(broker.stop(), 0);
}

}  // namespace
}  // namespace tellonce::itest
