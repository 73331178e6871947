// The defect corpus in tests/validate/corpus/: one realistic partner mistake per file under
// invalid/, each listed in expected.txt as "NAME RULE LOCATION" (one line per problem the
// validator must report as an error there), and tricky but valid records under valid/, which
// must produce no errors at all. Runs the full broker validator (engine, invariants, UK rules).
#include "tellonce/json.hpp"
#include "tellonce/validator.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace tellonce {
namespace {

namespace fs = std::filesystem;

const fs::path corpus = fs::path(TELLONCE_SOURCE_DIR) / "tests" / "validate" / "corpus";

const Validator& validator() {
  static std::unique_ptr<Validator> v =
      make_fhir_validator(ValidatorSettings{fs::path(TELLONCE_SOURCE_DIR) / "schemas"});
  return *v;
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<Issue> validate_file(const fs::path& file) {
  auto doc = parse_json(read_text(file));
  if (!doc) return doc.error().issues;
  std::vector<Issue> issues;
  validator().validate(*doc, issues);
  return issues;
}

std::string show(const std::vector<Issue>& issues) {
  std::string s;
  for (auto& i : issues)
    s += "  " + std::string(to_string(i.severity)) + " " + i.location + ": " + i.diagnostics + " [" + i.rule + "]\n";
  return s;
}

struct Expected {
  std::string rule;
  std::string location;
};

// Case name -> the problems it must report.
std::map<std::string, std::vector<Expected>> read_expectations() {
  std::map<std::string, std::vector<Expected>> cases;
  std::ifstream in(corpus / "expected.txt");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string name;
    Expected e;
    fields >> name >> e.rule >> e.location;
    cases[name].push_back(e);
  }
  return cases;
}

std::set<std::string> case_names(const fs::path& dir) {
  std::set<std::string> names;
  for (auto& entry : fs::directory_iterator(dir))
    if (entry.path().extension() == ".json") names.insert(entry.path().stem().string());
  return names;
}

TEST(ValidateCorpus, EveryInvalidCaseHasExpectations) {
  auto cases = read_expectations();
  auto files = case_names(corpus / "invalid");
  EXPECT_GE(files.size(), 60u);
  for (auto& name : files) EXPECT_TRUE(cases.count(name)) << name << ".json is not listed in expected.txt";
  for (auto& [name, expected] : cases) EXPECT_TRUE(files.count(name)) << name << " has no invalid/" << name << ".json";
}

TEST(ValidateCorpus, InvalidCasesReportEachProblemWhereItIs) {
  int checked = 0;
  for (auto& [name, expected] : read_expectations()) {
    fs::path file = corpus / "invalid" / (name + ".json");
    if (!fs::exists(file)) continue;  // reported by EveryInvalidCaseHasExpectations
    auto issues = validate_file(file);
    for (auto& e : expected) {
      bool found = false;
      for (auto& i : issues) found = found || (i.is_error() && i.rule == e.rule && i.location == e.location);
      EXPECT_TRUE(found) << name << ": expected error [" << e.rule << "] at " << e.location << ", got\n"
                         << show(issues);
    }
    ++checked;
  }
  EXPECT_GE(checked, 60);
}

TEST(ValidateCorpus, ValidCasesHaveNoErrors) {
  auto names = case_names(corpus / "valid");
  EXPECT_GE(names.size(), 30u);
  for (auto& name : names) {
    auto issues = validate_file(corpus / "valid" / (name + ".json"));
    EXPECT_FALSE(has_errors(issues)) << name << ".json must be valid, got\n" << show(issues);
  }
}

}  // namespace
}  // namespace tellonce
