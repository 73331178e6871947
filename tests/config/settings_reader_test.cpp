#include "broker/config/config.hpp"
#include "tellonce/settings_reader.hpp"
#include "config_files.hpp"
#include "test_adapters.hpp"

#include <gtest/gtest.h>

namespace tellonce {
namespace {

TEST(CheckListenAddress, AcceptsIpv4Ipv6AndLocalhost) {
  for (std::string ok : {"127.0.0.1:8080", "0.0.0.0:0", "localhost:65535", "[::1]:8080", "[::]:443"})
    EXPECT_EQ(check_listen_address(ok), "") << ok;
}

TEST(CheckListenAddress, RejectsBadHostsAndPorts) {
  for (std::string bad : {"8080", "127.0.0.1", "127.0.0.1:65536", "127.0.0.1:http", "256.0.0.1:80",
                          "1.2.3:80", "example.org:80", "[::1]8080", "[zz]:80", ":80", "127.0.0.1:"})
    EXPECT_NE(check_listen_address(bad), "") << bad;
}

TEST(LoopbackListenAddress, OnlyAddressesNothingBeyondThisMachineReaches) {
  for (std::string loopback : {"127.0.0.1:8080", "127.9.8.7:1", "localhost:80", "[::1]:8080"})
    EXPECT_TRUE(loopback_listen_address(loopback)) << loopback;
  for (std::string beyond : {"0.0.0.0:8080", "[::]:443", "10.0.0.1:80", "128.0.0.1:80", "[::2]:80", "1.127.0.0:80"})
    EXPECT_FALSE(loopback_listen_address(beyond)) << beyond;
}

TEST(CheckHttpUrl, AcceptsHttpAndHttps) {
  for (std::string ok : {"http://127.0.0.1:9101/fhir", "https://example.nhs.uk/fhir/R4", "http://localhost",
                         "https://[::1]:8443/x", "https://user@host.example:443?q=1"})
    EXPECT_EQ(check_http_url(ok), "") << ok;
}

TEST(CheckHttpUrl, RejectsOtherSchemesAndMissingHosts) {
  for (std::string bad : {"ftp://host/x", "127.0.0.1:9101/fhir", "http://", "https:///fhir", "http://host:99999/",
                          "http://bad host/", "HTTP//x"})
    EXPECT_NE(check_http_url(bad), "") << bad;
}

TEST(SettingsReader, ByteSizesAndNumbersThroughTheBrokerSection) {
  test::ConfigFiles files;
  auto registry = config_test::test_registry();
  auto ok = load_config(files.write("a.yaml", "broker:\n  max_body_bytes: 512KB\n"), registry);
  ASSERT_TRUE(ok.config);
  EXPECT_EQ(ok.config->max_body_bytes, 512u * 1024);
  auto plain = load_config(files.write("b.yaml", "broker:\n  max_body_bytes: 4096\n"), registry);
  ASSERT_TRUE(plain.config);
  EXPECT_EQ(plain.config->max_body_bytes, 4096u);
  auto bad = load_config(files.write("c.yaml", "broker:\n  max_body_bytes: 10 MB\n  io_threads: [1]\n"), registry);
  ASSERT_EQ(bad.problems.size(), 2u);
  EXPECT_EQ(bad.problems[0].path, "broker.max_body_bytes");
  EXPECT_EQ(bad.problems[1].path, "broker.io_threads");
}

TEST(SettingsReader, AdapterSeesPathAndRequiredKeys) {
  test::ConfigFiles files;
  AdapterRegistry registry = config_test::test_registry();
  std::string seen_path;
  OutboundAdapterType probe;
  probe.name = "probe";
  probe.create = [](const AdapterSettings&, OutboundContext&) -> std::unique_ptr<OutboundAdapter> { return nullptr; };
  probe.parse = [&seen_path](SettingsReader& r) -> AdapterSettings {
    seen_path = r.path();
    r.required_string("mailbox");
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(r.strings("workflows"), (std::vector<std::string>{"A", "B"}));
    EXPECT_TRUE(r.has("workflows"));
    EXPECT_FALSE(r.has("mailbox"));
    return std::make_shared<int>(1);
  };
  registry.add(std::move(probe));
  auto load = load_config(files.write("p.yaml", R"(partners:
  - id: x
    kind: vcse
    ods: ABC
    endpoint:
      type: probe
      workflows: [A, B]
)"),
                          registry);
  EXPECT_EQ(seen_path, "partners[0].endpoint");
  ASSERT_EQ(load.problems.size(), 1u);
  EXPECT_EQ(load.problems[0].path, "partners[0].endpoint.mailbox");
  EXPECT_EQ(load.problems[0].message, "required");
  EXPECT_EQ(load.problems[0].line, 5);
}

}  // namespace
}  // namespace tellonce
