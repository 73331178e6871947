// Validator throughput on one thread: parse + validate a corpus built from the shared sample data,
// repeated for N seconds. Not a test. Also writes the exact corpus for the ajv side (--corpus-out)
// and reports which hand-made defective resources it rejects (--defects DIR).
#include "tellonce/json.hpp"
#include "tellonce/validator.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

struct Doc {
  std::string name;  // relative to the data folder
  std::string text;
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Realistic records only: FHIR resources up to 64 KB that parse (error-response examples and
// the malformed upstream file are left out; they are not what partners send).
std::vector<Doc> load_corpus(const fs::path& data, const std::vector<std::string>& folders,
                             std::size_t max_bytes) {
  std::vector<Doc> docs;
  for (auto& folder : folders) {
    std::vector<fs::path> files;
    for (auto& e : fs::recursive_directory_iterator(data / folder))
      if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (auto& f : files) {
      std::string text = read_file(f);
      if (text.size() > max_bytes) continue;
      auto doc = tellonce::parse_json(text);
      if (!doc || !doc->IsObject() || !doc->HasMember("resourceType") || !(*doc)["resourceType"].IsString())
        continue;
      if (std::string_view((*doc)["resourceType"].GetString()) == "OperationOutcome") continue;
      docs.push_back({fs::relative(f, data).generic_string(), std::move(text)});
    }
  }
  return docs;
}

struct Counts {
  std::size_t resources = 0, bytes = 0, errors = 0, warnings = 0, information = 0, rejected = 0;
};

Counts one_pass(const tellonce::Validator& v, const std::vector<Doc>& docs) {
  Counts c;
  std::vector<tellonce::Issue> issues;
  for (auto& d : docs) {
    issues.clear();
    auto doc = tellonce::parse_json(d.text);
    if (doc) v.validate(*doc, issues);
    bool rejected = !doc;
    for (auto& i : issues) {
      if (i.is_error()) ++c.errors, rejected = true;
      else if (i.severity == tellonce::Severity::warning) ++c.warnings;
      else ++c.information;
    }
    c.rejected += rejected;
    ++c.resources;
    c.bytes += d.text.size();
  }
  return c;
}

void run(const char* label, const tellonce::Validator& v, const std::vector<Doc>& docs, double seconds) {
  if (docs.empty()) return;
  Counts issues = one_pass(v, docs);
  std::size_t resources = 0, bytes = 0;
  auto start = Clock::now();
  double elapsed = 0;
  do {
    Counts c = one_pass(v, docs);
    resources += c.resources;
    bytes += c.bytes;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < seconds);
  std::size_t corpus_bytes = 0;
  for (auto& d : docs) corpus_bytes += d.text.size();
  std::printf("RESULT %s files=%zu corpus_kb=%.1f resources_per_s=%.0f mb_per_s=%.2f errors=%zu "
              "warnings=%zu information=%zu rejected_files=%zu\n",
              label, docs.size(), corpus_bytes / 1024.0, resources / elapsed, bytes / elapsed / 1e6,
              issues.errors, issues.warnings, issues.information, issues.rejected);
}

void write_corpus(const fs::path& out, const char* label, const std::vector<Doc>& docs) {
  fs::create_directories(out / label);
  for (std::size_t i = 0; i < docs.size(); ++i) {
    std::string name = docs[i].name;
    std::replace(name.begin(), name.end(), '/', '_');
    std::replace(name.begin(), name.end(), ' ', '_');
    char prefix[24];
    std::snprintf(prefix, sizeof prefix, "%04zu-", i);
    std::ofstream(out / label / (prefix + name), std::ios::binary) << docs[i].text;
  }
}

// One line per defect file: whether it was rejected, and by which rules.
void check_defects(const tellonce::Validator& v, const fs::path& dir) {
  std::vector<fs::path> files;
  for (auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  int caught = 0;
  for (auto& f : files) {
    std::string text = read_file(f);
    auto doc = tellonce::parse_json(text);
    std::vector<tellonce::Issue> issues;
    std::string rules;
    if (!doc) {
      rules = "json";
    } else {
      v.validate(*doc, issues);
      for (auto& i : issues)
        if (i.is_error() && rules.find(i.rule) == std::string::npos) rules += (rules.empty() ? "" : ",") + i.rule;
    }
    bool rejected = !rules.empty();
    caught += rejected;
    std::printf("DEFECT %s caught=%d %s\n", f.filename().c_str(), rejected ? 1 : 0, rules.c_str());
  }
  std::printf("DEFECTS caught=%d of=%zu\n", caught, files.size());
}

}  // namespace

int main(int argc, char** argv) {
  fs::path schemas = TELLONCE_SCHEMA_DIR, data = TELLONCE_SHARED_DATA, corpus_out, defects;
  double seconds = 5;
  bool synthea = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--schemas") schemas = next();
    else if (a == "--data") data = next();
    else if (a == "--seconds") seconds = std::stod(next());
    else if (a == "--corpus-out") corpus_out = next();
    else if (a == "--defects") defects = next();
    else if (a == "--no-synthea") synthea = false;
    else {
      std::cerr << "usage: bench_validate [--seconds N] [--schemas DIR] [--data DIR] "
                   "[--corpus-out DIR] [--defects DIR] [--no-synthea]\n";
      return 2;
    }
  }

  auto main_corpus = load_corpus(
      data, {"ukcore-examples/json-converted", "bars-api-examples", "fhir-r4-spec-examples", "pds-examples"},
      64 * 1024);
  std::vector<Doc> synthea_corpus;
  if (synthea) synthea_corpus = load_corpus(data, {"synthea-r4"}, std::size_t(-1));

  if (!corpus_out.empty()) {
    write_corpus(corpus_out, "main", main_corpus);
    write_corpus(corpus_out, "synthea", synthea_corpus);
    std::printf("wrote %zu + %zu files under %s\n", main_corpus.size(), synthea_corpus.size(),
                corpus_out.c_str());
    return 0;
  }

  auto start = Clock::now();
  auto validator = tellonce::make_fhir_validator({schemas, true});
  double startup_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  std::printf("RESULT startup ms=%.1f\n", startup_ms);

  if (!defects.empty()) {
    check_defects(*validator, defects);
    return 0;
  }
  run("main", *validator, main_corpus, seconds);
  run("synthea", *validator, synthea_corpus, seconds);

  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("RESULT peak_rss_kb=%ld\n", usage.ru_maxrss);
}
