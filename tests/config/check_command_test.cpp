#include "broker/config/check_command.hpp"
#include "config_files.hpp"
#include "test_adapters.hpp"

#include <gtest/gtest.h>

#include <sstream>

namespace tellonce {
namespace {

int run(std::vector<std::string> args, std::string& out, std::string& err) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  std::ostringstream o, e;
  auto registry = config_test::test_registry();
  int rc = run_check_config_command(static_cast<int>(argv.size()), argv.data(), registry, o, e);
  out = o.str();
  err = e.str();
  return rc;
}

TEST(CheckConfigCommand, ShippedExampleIsOk) {
  std::string file = std::string(TELLONCE_SOURCE_DIR) + "/config/tellonce.yaml";
  std::string out, err;
  EXPECT_EQ(run({"tellonce", "check-config", file}, out, err), 0) << out;
  EXPECT_EQ(out, file + ": OK \u2014 7 partners, 3 inbound channels, 9 routes\n");
}

TEST(CheckConfigCommand, PrintsEveryProblemAndASummary) {
  test::ConfigFiles files;
  auto file = files.write("bad.yaml", "broker:\n  io_threads: -1\n  colour: blue\nroutes:\n  - id: r\n    to: [x]\n").string();
  std::string out, err;
  EXPECT_EQ(run({"tellonce", "check-config", file}, out, err), 1);
  EXPECT_EQ(out, file + ":2: broker.io_threads: -1 is out of range (0 to 256)\n" +
                     file + ":3: broker.colour: unknown key 'colour'\n" +
                     file + ":6: routes[0].to[0]: unknown partner 'x'\n" +
                     "3 problems in " + file + "\n");
}

TEST(CheckConfigCommand, UsageWithoutAFile) {
  std::string out, err;
  EXPECT_EQ(run({"tellonce", "check-config"}, out, err), 2);
  EXPECT_NE(err.find("usage"), std::string::npos);
}

}  // namespace
}  // namespace tellonce
