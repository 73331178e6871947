// The HL7 v2 library's CPU cost per message on one thread: the MLLP framer, parse(), reading the
// fields an ADT converter reads, V2ToFhir::convert(), the broker's validator over what convert()
// made (JSON parse included: the pipeline parses the Bundle it is handed), build_ack() and
// read_ack() over the NHS ITK example messages, and FhirToV2::render() over a UK Core Patient.
// Not a test: the figures depend on the machine.
//   bench_hl7v2 [--seconds N] [--data DIR]
#include "hl7v2/ack.hpp"
#include "hl7v2/er7.hpp"
#include "hl7v2/from_fhir.hpp"
#include "hl7v2/mllp.hpp"
#include "hl7v2/to_fhir.hpp"
#include "tellonce/json.hpp"
#include "tellonce/validator.hpp"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace hl7 = tellonce::hl7v2;
using Clock = std::chrono::steady_clock;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `one` over the corpus for about `seconds`; prints messages/s and microseconds per message.
void measure(const char* name, std::size_t corpus_size, double seconds, const std::function<std::size_t(std::size_t)>& one) {
  std::size_t done = 0, sink = 0;
  const auto start = Clock::now();
  const auto until = start + std::chrono::duration<double>(seconds);
  while (Clock::now() < until) {
    for (std::size_t i = 0; i < corpus_size; ++i) sink += one(i);
    done += corpus_size;
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("RESULT %-28s %10.0f msg/s %8.2f us/msg (%zu)\n", name, done / elapsed, 1e6 * elapsed / done,
              sink % 10);
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 3;
  fs::path data = TELLONCE_SHARED_DATA;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--seconds") == 0) seconds = std::stod(argv[i + 1]);
    if (std::strcmp(argv[i], "--data") == 0) data = argv[i + 1];
  }
  std::vector<std::string> messages;
  std::size_t bytes = 0;
  for (const auto& e : fs::recursive_directory_iterator(data / "nhs-itk-v2")) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || (name.find("_Example") == std::string::npos && name.find("_example") == std::string::npos))
      continue;
    std::string text = read_file(e.path());
    for (char& c : text)
      if (c == '\n') c = '\r';  // as they arrive over MLLP
    bytes += text.size();
    messages.push_back(std::move(text));
  }
  if (messages.empty()) {
    std::fprintf(stderr, "no NHS ITK example messages under %s\n", (data / "nhs-itk-v2").c_str());
    return 1;
  }
  std::printf("corpus: %zu NHS ITK example messages, %zu bytes on average\n", messages.size(), bytes / messages.size());

  std::string stream;
  for (const auto& m : messages) stream += hl7::mllp_frame(m);
  measure("frame-reader (64 KiB reads)", messages.size(), seconds, [&](std::size_t i) {
    if (i != 0) return std::size_t{0};  // one pass over the whole stream per round
    hl7::FrameReader reader(1 << 20);
    std::size_t n = 0;
    for (std::size_t at = 0; at < stream.size(); at += 65536) {
      reader.feed(std::string_view(stream).substr(at, 65536));
      while (auto e = reader.next()) n += e->message.size();
    }
    return n;
  });
  measure("parse", messages.size(), seconds,
          [&](std::size_t i) { return hl7::parse(messages[i])->segments().size(); });
  measure("parse + ADT fields", messages.size(), seconds, [&](std::size_t i) {
    const auto m = hl7::parse(messages[i]);
    std::size_t n = m->message_code().size() + m->trigger_event().size() + m->control_id().size();
    if (const auto* pid = m->first("PID")) {
      for (std::size_t rep = 1; rep <= pid->repetition_count(3); ++rep) n += pid->value(3, 1, 1, rep).size();
      n += pid->value(5, 1).size() + pid->value(5, 2).size() + pid->value(7).size() + pid->value(8).size();
      n += pid->value(11, 1).size() + pid->value(11, 5).size() + pid->value(32).size();
    }
    if (const auto* pd1 = m->first("PD1")) n += pd1->value(3, 3).size() + pd1->value(4, 1).size();
    if (const auto* pv1 = m->first("PV1")) n += pv1->value(2).size() + pv1->value(44).size();
    return n;
  });
  std::vector<hl7::Message> parsed;
  for (const auto& m : messages) parsed.push_back(*hl7::parse(m));

  // The ITK examples that convert (two carry an impossible birth date upstream: refused).
  const fs::path schemas = fs::path(TELLONCE_SOURCE_DIR) / "schemas";
  const auto to_fhir = hl7::V2ToFhir::load(schemas / "hl7v2");
  std::vector<const hl7::Message*> convertible;
  std::vector<std::string> bundles;
  for (const auto& m : parsed)
    if (auto c = to_fhir->convert(m)) {
      convertible.push_back(&m);
      bundles.push_back(c->bundle_json);
    }
  std::printf("convert and validate: the %zu of them that convert\n", convertible.size());
  measure("V2ToFhir::convert", convertible.size(), seconds,
          [&](std::size_t i) { return to_fhir->convert(*convertible[i])->bundle_json.size(); });
  const auto validator = tellonce::make_fhir_validator(tellonce::ValidatorSettings{schemas});
  measure("JSON parse + validate Bundle", bundles.size(), seconds, [&](std::size_t i) {
    auto doc = tellonce::parse_json(bundles[i]);
    std::vector<tellonce::Issue> issues;
    validator->validate(*doc, issues);
    return issues.size() + 1;
  });
  std::vector<std::string> acks;
  measure("build_ack AA", messages.size(), seconds, [&](std::size_t i) {
    return hl7::build_ack(parsed[i], hl7::AckCode::AA, {}, {}, "ACK1", "20240101120000+0000").size();
  });
  for (const auto& m : parsed) acks.push_back(hl7::build_ack(m, hl7::AckCode::AA, {}, {}, "ACK1", "20240101"));
  measure("read_ack", messages.size(), seconds,
          [&](std::size_t i) { return hl7::read_ack(acks[i])->acked_control_id.size(); });

  const fs::path patient = data / "ukcore-examples" / "json-converted" / "UKCore-Patient-RichardSmith-Example.json";
  if (fs::exists(patient)) {
    const auto to_v2 = hl7::FhirToV2::load(fs::path(TELLONCE_SOURCE_DIR) / "schemas" / "hl7v2");
    const std::string json = read_file(patient);
    measure("FhirToV2::render (Patient)", 1, seconds, [&](std::size_t) {
      return to_v2->render(json, hl7::V2Addressing{}, "C1", "20240101120000+0000")->er7.size();
    });
  }
  return 0;
}
