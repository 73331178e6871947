#include "adapters/file_outbound/file_outbound.hpp"
#include "broker/config/config.hpp"
#include "support/run_async.hpp"
#include "support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace tellonce {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

class FileOutboundTest : public ::testing::Test {
 protected:
  test::TempDir dir{"tellonce-file-outbound"};
  fs::path outbox = dir / "outbox";

  void SetUp() override { fs::create_directories(outbox); }

  static DeliveryJob job(std::string id, std::string body) {
    DeliveryJob j;
    j.message_id = std::move(id);
    j.destination = "carers-centre";
    j.content_type = "application/fhir+json";
    j.body = std::move(body);
    return j;
  }

  static asio::awaitable<DeliveryResult> call(OutboundAdapter& a, DeliveryJob j) {
    co_return co_await a.deliver(j);
  }

  // The adapter keeps the io_context busy until the result is posted back.
  static DeliveryResult deliver(OutboundAdapter& a, DeliveryJob j) {
    return test::run_async(call(a, std::move(j)));
  }
};

TEST_F(FileOutboundTest, WritesTheRecordUnderItsMessageIdAndLeavesNoPartialFile) {
  auto adapter = make_file_outbound({outbox, true});
  auto r = deliver(*adapter, job("01JD3FILE0000000000000000A", R"({"resourceType":"Patient"})"));
  EXPECT_EQ(r.outcome, DeliveryOutcome::ok) << r.detail;
  EXPECT_EQ(r.partner_code, "file written");
  EXPECT_EQ(names_in(outbox), std::vector<std::string>{"01JD3FILE0000000000000000A.json"});
  EXPECT_EQ(read_file(outbox / "01JD3FILE0000000000000000A.json"), R"({"resourceType":"Patient"})");
}

TEST_F(FileOutboundTest, ARedeliveryReplacesTheSameFile) {
  auto adapter = make_file_outbound({outbox, true});
  ASSERT_EQ(deliver(*adapter, job("01JD3FILE0000000000000000B", "first")).outcome, DeliveryOutcome::ok);
  ASSERT_EQ(deliver(*adapter, job("01JD3FILE0000000000000000B", "second")).outcome, DeliveryOutcome::ok);
  EXPECT_EQ(names_in(outbox), std::vector<std::string>{"01JD3FILE0000000000000000B.json"});
  EXPECT_EQ(read_file(outbox / "01JD3FILE0000000000000000B.json"), "second");
}

TEST_F(FileOutboundTest, RecordsSortInAcceptanceOrder) {
  auto adapter = make_file_outbound({outbox, false});
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(new_message_id());
    ASSERT_EQ(deliver(*adapter, job(ids.back(), std::to_string(i))).outcome, DeliveryOutcome::ok);
  }
  auto names = names_in(outbox);
  ASSERT_EQ(names.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(read_file(outbox / names[i]), std::to_string(i)) << names[i];
}

TEST_F(FileOutboundTest, AMissingFolderIsRetryableAndNamesTheError) {
  auto adapter = make_file_outbound({outbox, true});
  fs::remove_all(outbox);
  auto r = deliver(*adapter, job("01JD3FILE0000000000000000C", "x"));
  EXPECT_EQ(r.outcome, DeliveryOutcome::retryable);
  EXPECT_EQ(r.partner_code, "file ENOENT");
  EXPECT_NE(r.detail.find("create"), std::string::npos) << r.detail;
  // Once the operator puts the folder back, the same delivery succeeds.
  fs::create_directories(outbox);
  EXPECT_EQ(deliver(*adapter, job("01JD3FILE0000000000000000C", "x")).outcome, DeliveryOutcome::ok);
}

// Settings go through the real config loader, as they do in the broker.
class FileOutboundSettingsTest : public FileOutboundTest {
 protected:
  ConfigLoad load(const std::string& endpoint_lines) {
    auto path = dir / "tellonce.yaml";
    std::ofstream(path) << "partners:\n  - id: carers\n    kind: vcse\n    ods: 8JK99\n    endpoint:\n"
                           "      type: file\n" << endpoint_lines;
    AdapterRegistry registry;
    register_builtin_engines(registry);  // the config names a store and a queue engine too
    registry.add(file_outbound_type());
    return load_config(path, registry);
  }
  static std::string problems(const ConfigLoad& l) {
    std::string out;
    for (const auto& p : l.problems) out += p.to_string() + "\n";
    return out;
  }
};

TEST_F(FileOutboundSettingsTest, ReadsFolderAndFsync) {
  auto l = load("      directory: " + outbox.string() + "\n      fsync: false\n");
  ASSERT_TRUE(l.config) << problems(l);
  const auto& s = settings_as<FileOutboundSettings>(l.config->partners[0].endpoint->settings);
  EXPECT_EQ(s.directory, outbox);
  EXPECT_FALSE(s.fsync);
}

TEST_F(FileOutboundSettingsTest, AMissingFolderIsAConfigProblemWithItsPath) {
  auto l = load("      directory: " + (dir / "nowhere").string() + "\n      fsynk: true\n");
  EXPECT_FALSE(l.config);
  auto text = problems(l);
  ASSERT_EQ(l.problems.size(), 2u) << text;
  EXPECT_NE(text.find("partners[0].endpoint.directory"), std::string::npos) << text;
  EXPECT_NE(text.find("is not a folder"), std::string::npos) << text;
  EXPECT_NE(text.find("partners[0].endpoint.fsynk"), std::string::npos) << text;
}

}  // namespace
}  // namespace tellonce
