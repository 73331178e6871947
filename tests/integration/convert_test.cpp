// `tellonce convert --from hl7v2`: the real binary on a message file, its output and exit status.
#include "harness.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;

struct ConvertRun {
  int status = -1;
  std::string output;
};

ConvertRun convert(const test::TempDir& dir, const std::string& message, std::vector<std::string> options = {"--from", "hl7v2"}) {
  write_file(dir / "message.hl7", message);
  std::vector<std::string> args{tellonce_binary().string(), "convert"};
  for (auto& o : options) args.push_back(o);
  args.push_back((dir / "message.hl7").string());
  Process p(args, dir / "convert.log");
  ConvertRun r;
  p.wait_for_line("\"resourceType\":\"OperationOutcome\"", 30s);  // drains stdout into the log; the outcome is last
  r.status = p.wait_exit(30s);
  r.output = p.output();
  return r;
}

// An NHS ITK style A01 with LF segment ends, as the shared examples have them.
std::string a01(const std::string& nhs_number) {
  return "MSH|^~\\&|PAS|RCB|ROUTE|ROUTE|201010101418||ADT^A01^ADT_A01|1391320453338055|P|2.4|||||GBR|UNICODE|EN\n"
         "EVN||201010101400\n"
         "PID|1||" + nhs_number + "^^^NHS||SMITH^FREDRICA^J^^MRS^^L||196512131515|2" + std::string(24, '|') + "NSTS01\n"
         "PD1|||MALTON GP PRACTICE^^Y06601|G5612908^Townley^Gregory^^^Dr^^^GMC\n"
         "PV1|1|I|RCB^OBS1^BAY2-6^RCB55|13|||C3456789^Darwin^Samuel^^^Dr^^^GMC\n";
}

TEST(ConvertCommand, PrintsTheIndentedBundleAndACleanOutcome) {
  test::TempDir dir;
  ConvertRun r = convert(dir, a01("9434765919"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("\"resourceType\": \"Bundle\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\"system\": \"https://fhir.nhs.uk/Id/nhs-number\""), std::string::npos);
  EXPECT_NE(r.output.find("UKCore-NHSNumberVerificationStatusEngland"), std::string::npos);
  EXPECT_NE(r.output.find("\"resourceType\":\"OperationOutcome\""), std::string::npos);
  EXPECT_EQ(r.output.find("\"severity\":\"error\""), std::string::npos) << r.output;
}

TEST(ConvertCommand, AValidationErrorNamesTheV2FieldAndExitsOne) {
  test::TempDir dir;
  ConvertRun r = convert(dir, a01("9434765918"));  // check digit wrong
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("uk-nhs-number"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("(HL7 v2 PID^1^3)"), std::string::npos) << r.output;
}

TEST(ConvertCommand, AnUnsupportedEventIsRefusedWithoutABundle) {
  test::TempDir dir;
  std::string message = a01("9434765919");
  message.replace(message.find("ADT^A01^ADT_A01"), 15, "SIU^S12^SIU_S12");
  ConvertRun r = convert(dir, message);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("hl7v2-unsupported-event"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("\"resourceType\": \"Bundle\""), std::string::npos) << r.output;
}

TEST(ConvertCommand, WithoutFromHl7v2ItIsAUsageError) {
  test::TempDir dir;
  EXPECT_EQ(convert(dir, a01("9434765919"), {}).status, 2);
  EXPECT_EQ(convert(dir, a01("9434765919"), {"--from", "csv"}).status, 2);
}

}  // namespace
}  // namespace tellonce::itest
