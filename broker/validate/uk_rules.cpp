// UK Core rules and partner profiles, read from schemas/uk/*.json and schemas/profiles/*.json.
// The file format is described in schemas/uk/README.md. Element-wide checks (identifier
// systems, coding systems, retired extension URLs) run on every Identifier, Coding and
// Extension; per-resource checks run on resources of a type, when their file applies.
#include "tellonce/json.hpp"
#include "broker/validate/rules.hpp"
#include "broker/validate/rules_formats.hpp"

#include <rapidjson/error/en.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

namespace tellonce {
namespace {

using rapidjson::Value;

std::string_view str_at(const Value& v, std::string_view name) { return json_string(json_member(v, name)); }

enum class Format { nhs_number, ods_code, snomed_concept_id };

struct FormatRule {
  std::string system;
  Format format;
  std::string rule;
  Severity severity = Severity::error;
};

struct LegacyUrl {
  std::string prefix;
  std::string replacement_prefix;
  std::string rule;
  Severity severity = Severity::error;
};

enum class Check { required, identifier_system, coding_system, code_in, fixed };

struct ResourceRule {
  std::string rule;
  Check check;
  std::vector<std::string> path;  // element names from the resource down
  std::string path_text;
  std::string system;              // identifier-system, coding-system, code-in (optional)
  std::vector<std::string> codes;  // code-in
  rapidjson::Document fixed;       // fixed
  std::string message;
  Severity severity = Severity::error;
};

struct Profile {
  std::string name;
  std::string meta_profile;  // empty: applies to every resource of the listed types
  std::map<std::string, std::vector<ResourceRule>, std::less<>> resources;
};

// ---- loading ----------------------------------------------------------------------------

[[noreturn]] void bad_file(const std::filesystem::path& file, const std::string& what) {
  throw std::runtime_error("rules file " + file.string() + ": " + what);
}

std::string required_string(const Value& v, std::string_view name, const std::filesystem::path& file,
                            std::string_view where) {
  std::string_view s = str_at(v, name);
  if (s.empty())
    bad_file(file, std::string(where) + " needs a non-empty string '" + std::string(name) + "'");
  return std::string(s);
}

Severity read_severity(const Value& v, const std::filesystem::path& file) {
  const Value* s = json_member(v, "severity");
  if (!s) return Severity::error;
  std::string_view text = json_string(s);
  if (text == "error") return Severity::error;
  if (text == "warning") return Severity::warning;
  if (text == "information") return Severity::information;
  bad_file(file, "severity must be error, warning or information, not '" + std::string(text) + "'");
}

std::vector<std::string> split_path(std::string_view text) {
  std::vector<std::string> parts;
  while (!text.empty()) {
    auto dot = text.find('.');
    parts.emplace_back(text.substr(0, dot));
    if (dot == std::string_view::npos) break;
    text.remove_prefix(dot + 1);
  }
  return parts;
}

Format read_format(std::string_view text, const std::filesystem::path& file) {
  if (text == "nhs-number") return Format::nhs_number;
  if (text == "ods-code") return Format::ods_code;
  if (text == "snomed-concept-id") return Format::snomed_concept_id;
  bad_file(file, "unknown format '" + std::string(text) +
                     "' (known: nhs-number, ods-code, snomed-concept-id)");
}

Check read_check(std::string_view text, const std::filesystem::path& file) {
  if (text == "required") return Check::required;
  if (text == "identifier-system") return Check::identifier_system;
  if (text == "coding-system") return Check::coding_system;
  if (text == "code-in") return Check::code_in;
  if (text == "fixed") return Check::fixed;
  bad_file(file, "unknown check '" + std::string(text) +
                     "' (known: required, identifier-system, coding-system, code-in, fixed)");
}

rapidjson::Document read_json_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) bad_file(file, "cannot be read");
  std::stringstream text;
  text << in.rdbuf();
  rapidjson::Document doc;
  doc.Parse(text.str().c_str());
  if (doc.HasParseError())
    bad_file(file, std::string("invalid JSON at offset ") + std::to_string(doc.GetErrorOffset()) +
                       ": " + rapidjson::GetParseError_En(doc.GetParseError()));
  if (!doc.IsObject()) bad_file(file, "must hold a JSON object");
  return doc;
}

std::vector<std::filesystem::path> json_files(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return files;
  for (auto& e : std::filesystem::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

// ---- path walking -------------------------------------------------------------------------

struct Step {
  std::string_view name;
  int index = -1;  // -1: not an array
};
// The steps from the resource to the current value; fixed size so walking never allocates.
struct Trail {
  std::array<Step, 12> steps;
  std::size_t size = 0;
};

std::string render(const std::string& base, const Trail& trail) {
  std::string s = base;
  for (std::size_t i = 0; i < trail.size; ++i) {
    s += '.';
    s += trail.steps[i].name;
    if (trail.steps[i].index >= 0) {
      s += '[';
      s += std::to_string(trail.steps[i].index);
      s += ']';
    }
  }
  return s;
}

// Calls f(value, trail) for every value the path reaches, descending through arrays.
template <class F>
void each_at(const Value& v, const std::vector<std::string>& path, std::size_t at, Trail& trail, F& f) {
  if (at == path.size()) {
    f(v, trail);
    return;
  }
  if (trail.size == trail.steps.size()) return;
  const Value* next = json_member(v, path[at]);
  if (!next) return;
  Step& step = trail.steps[trail.size++];
  step.name = path[at];
  if (next->IsArray()) {
    for (rapidjson::SizeType i = 0; i < next->Size(); ++i) {
      step.index = static_cast<int>(i);
      each_at((*next)[i], path, at + 1, trail, f);
    }
  } else {
    step.index = -1;
    each_at(*next, path, at + 1, trail, f);
  }
  --trail.size;
}

bool non_empty(const Value& v) {
  if (v.IsNull()) return false;
  if (v.IsString()) return v.GetStringLength() > 0;
  if (v.IsArray()) return !v.Empty();
  if (v.IsObject()) return !v.ObjectEmpty();
  return true;
}

// ---- the rule set --------------------------------------------------------------------------

void add_issue(std::vector<Issue>& out, Severity severity, std::string_view code, std::string_view rule,
               std::string location, std::string text) {
  Issue issue;
  issue.severity = severity;
  issue.code = std::string(code);
  issue.rule = std::string(rule);
  issue.location = std::move(location);
  issue.diagnostics = std::move(text);
  out.push_back(std::move(issue));
}

std::string with_message(std::string text, const std::string& message) {
  if (!message.empty()) {
    text += ": ";
    text += message;
  }
  return text;
}

class UkRules final : public RuleSet {
 public:
  explicit UkRules(const UkRuleSettings& settings) : check_digit_severity_(
      settings.nhs_number_check_digit_is_error ? Severity::error : Severity::warning) {
    for (auto& file : json_files(settings.schema_dir / "uk")) load(file);
    for (auto& file : json_files(settings.schema_dir / "profiles")) load(file);
  }

  void check(std::string_view type, const Value& value, const std::string& path,
             std::vector<Issue>& out) const override {
    if (!value.IsObject()) return;
    if (type == "Identifier") check_coded(identifiers_, "value", value, path, out);
    else if (type == "Coding") check_coded(codings_, "code", value, path, out);
    else if (type == "Extension") check_extension(value, path, out);
    else if (value.HasMember("resourceType")) check_resource(type, value, path, out);
  }

 private:
  void load(const std::filesystem::path& file) {
    rapidjson::Document doc = read_json_file(file);
    Profile profile;
    profile.name = required_string(doc, "name", file, "the file");
    const Value* applies = json_member(doc, "applies_to");
    if (!applies) bad_file(file, "needs 'applies_to': \"always\" or {\"meta_profile\": url}");
    if (!(applies->IsString() && json_string(applies) == "always")) {
      profile.meta_profile = required_string(*applies, "meta_profile", file, "applies_to");
      for (auto section : {"identifiers", "codings", "legacy_extensions"})
        if (doc.HasMember(section))
          bad_file(file, std::string("'") + section +
                             "' applies to every element, so only an \"always\" file may declare it");
    }
    if (const Value* list = json_member(doc, "identifiers")) read_formats(*list, identifiers_, file);
    if (const Value* list = json_member(doc, "codings")) read_formats(*list, codings_, file);
    if (const Value* list = json_member(doc, "legacy_extensions")) {
      if (!list->IsArray()) bad_file(file, "'legacy_extensions' must be an array");
      for (auto& e : list->GetArray())
        legacy_.push_back({required_string(e, "prefix", file, "legacy_extensions[]"),
                           required_string(e, "replacement_prefix", file, "legacy_extensions[]"),
                           required_string(e, "rule", file, "legacy_extensions[]"),
                           read_severity(e, file)});
    }
    if (const Value* resources = json_member(doc, "resources")) {
      if (!resources->IsObject()) bad_file(file, "'resources' must map resource types to rule lists");
      for (auto& m : resources->GetObject()) {
        std::string type = m.name.GetString();
        if (!m.value.IsArray()) bad_file(file, "resources." + type + " must be an array");
        for (auto& r : m.value.GetArray()) profile.resources[type].push_back(read_rule(r, type, file));
      }
    }
    profiles_.push_back(std::move(profile));
  }

  static void read_formats(const Value& list, std::vector<FormatRule>& into,
                           const std::filesystem::path& file) {
    if (!list.IsArray()) bad_file(file, "identifiers/codings must be arrays");
    for (auto& e : list.GetArray())
      into.push_back({required_string(e, "system", file, "a format entry"),
                      read_format(required_string(e, "format", file, "a format entry"), file),
                      required_string(e, "rule", file, "a format entry"), read_severity(e, file)});
  }

  static ResourceRule read_rule(const Value& r, const std::string& type,
                                const std::filesystem::path& file) {
    std::string where = "a rule of resources." + type;
    ResourceRule rule;
    rule.rule = required_string(r, "rule", file, where);
    rule.check = read_check(required_string(r, "check", file, where), file);
    rule.path_text = required_string(r, "path", file, where);
    rule.path = split_path(rule.path_text);
    if (rule.path.size() > Trail{}.steps.size()) bad_file(file, "path too deep: " + rule.path_text);
    rule.message = std::string(str_at(r, "message"));
    rule.severity = read_severity(r, file);
    rule.system = std::string(str_at(r, "system"));
    if ((rule.check == Check::identifier_system || rule.check == Check::coding_system) &&
        rule.system.empty())
      bad_file(file, rule.rule + " needs a 'system'");
    if (rule.check == Check::code_in) {
      const Value* codes = json_member(r, "codes");
      if (!codes || !codes->IsArray() || codes->Empty())
        bad_file(file, rule.rule + " needs a non-empty 'codes' array");
      for (auto& c : codes->GetArray()) {
        if (!c.IsString()) bad_file(file, rule.rule + ": codes must be strings");
        rule.codes.emplace_back(c.GetString(), c.GetStringLength());
      }
    }
    if (rule.check == Check::fixed) {
      const Value* fixed = json_member(r, "value");
      if (!fixed) bad_file(file, rule.rule + " needs a 'value'");
      rule.fixed.CopyFrom(*fixed, rule.fixed.GetAllocator());
    }
    return rule;
  }

  void check_coded(const std::vector<FormatRule>& rules, std::string_view field, const Value& v,
                   const std::string& path, std::vector<Issue>& out) const {
    std::string_view system = str_at(v, "system");
    if (system.empty()) return;
    for (auto& r : rules) {
      if (r.system != system) continue;
      const Value* raw = json_member(v, field);
      if (!raw || !raw->IsString()) return;
      check_format(r, json_string(raw), path, field, out);
    }
  }

  void check_format(const FormatRule& r, std::string_view text, const std::string& path,
                    std::string_view field, std::vector<Issue>& out) const {
    auto location = [&] { return path + "." + std::string(field); };
    switch (r.format) {
      case Format::nhs_number:
        if (!nhs_number_well_formed(text))
          add_issue(out, r.severity, "value", r.rule, location(),
                    "NHS number '" + std::string(text) + "' must be exactly 10 digits");
        else if (!nhs_number_valid(text))
          add_issue(out, check_digit_severity_, "value", r.rule, location(),
                    "NHS number " + std::string(text) +
                        " fails the modulus-11 check digit: check it was typed correctly");
        return;
      case Format::ods_code:
        if (!ods_code_valid(text))
          add_issue(out, r.severity, "value", r.rule, location(),
                    "ODS code '" + std::string(text) + "' for " + r.system +
                        " must be 3 to 10 upper-case letters and digits");
        return;
      case Format::snomed_concept_id:
        if (snomed_expression_p(text)) return;
        if (!snomed_concept_id_valid(text))
          add_issue(out, r.severity, "code-invalid", r.rule, location(),
                    "'" + std::string(text) +
                        "' is not a valid SNOMED CT concept id (6-18 digits, concept partition, "
                        "Verhoeff check digit)");
        return;
    }
  }

  void check_extension(const Value& v, const std::string& path, std::vector<Issue>& out) const {
    std::string_view url = str_at(v, "url");
    for (auto& l : legacy_) {
      if (!url.starts_with(l.prefix)) continue;
      std::string name(url.substr(l.prefix.size()));
      // "CareConnect-EthnicCategory-1" / "UKCore-EthnicCategory" -> "EthnicCategory"
      for (std::string_view family : {"CareConnect-", "UKCore-"})
        if (name.starts_with(family)) name.erase(0, family.size());
      if (name.size() > 2 && name.ends_with("-1")) name.resize(name.size() - 2);
      add_issue(out, l.severity, "not-supported", l.rule, path + ".url",
                "Extension URL " + std::string(url) +
                    " is a retired NHS URL; use the current UK Core extension, probably " +
                    l.replacement_prefix + name);
      return;
    }
  }

  void check_resource(std::string_view type, const Value& v, const std::string& path,
                      std::vector<Issue>& out) const {
    for (auto& profile : profiles_) {
      auto it = profile.resources.find(type);
      if (it == profile.resources.end()) continue;
      if (!profile.meta_profile.empty() && !declares_profile(v, profile.meta_profile)) continue;
      for (auto& rule : it->second) run(rule, v, path, out);
    }
  }

  static bool declares_profile(const Value& v, std::string_view url) {
    const Value* meta = json_member(v, "meta");
    const Value* profiles = meta ? json_member(*meta, "profile") : nullptr;
    if (!profiles || !profiles->IsArray()) return false;
    for (auto& p : profiles->GetArray()) {
      std::string_view s = json_string(&p);
      // A canonical may carry a version: url|1.0.0
      if (s == url || (s.starts_with(url) && s.size() > url.size() && s[url.size()] == '|'))
        return true;
    }
    return false;
  }

  void run(const ResourceRule& rule, const Value& resource, const std::string& path,
           std::vector<Issue>& out) const {
    Trail trail;
    switch (rule.check) {
      case Check::required: {
        bool found = false;
        auto seen = [&](const Value& v, const Trail&) { found = found || non_empty(v); };
        each_at(resource, rule.path, 0, trail, seen);
        if (!found)
          add_issue(out, rule.severity, "required", rule.rule, path + "." + rule.path_text,
                    with_message(rule.path_text + " is required", rule.message));
        return;
      }
      case Check::identifier_system: {
        bool found = false;
        auto seen = [&](const Value& v, const Trail&) {
          found = found || str_at(v, "system") == rule.system;
        };
        each_at(resource, rule.path, 0, trail, seen);
        if (!found)
          add_issue(out, rule.severity, "required", rule.rule, path + "." + rule.path_text,
                    with_message("an identifier with system " + rule.system + " is required",
                                 rule.message));
        return;
      }
      case Check::coding_system: {
        auto each = [&](const Value& cc, const Trail& t) {
          const Value* codings = json_member(cc, "coding");
          if (!codings || !codings->IsArray() || codings->Empty()) return;
          for (auto& c : codings->GetArray())
            if (str_at(c, "system") == rule.system) return;
          add_issue(out, rule.severity, "code-invalid", rule.rule, render(path, t),
                    with_message("a coding from " + rule.system + " is expected", rule.message));
        };
        each_at(resource, rule.path, 0, trail, each);
        return;
      }
      case Check::code_in: {
        auto allowed = [&](std::string_view code) {
          return std::find(rule.codes.begin(), rule.codes.end(), code) != rule.codes.end();
        };
        auto reject = [&](std::string_view code, const Trail& t) {
          add_issue(out, rule.severity, "code-invalid", rule.rule, render(path, t),
                    with_message("code '" + std::string(code) + "' is not allowed here",
                                 rule.message));
        };
        auto each = [&](const Value& v, const Trail& t) {
          if (v.IsString()) {
            if (!allowed(json_string(&v))) reject(json_string(&v), t);
            return;
          }
          // A Coding, or a CodeableConcept whose codings from `system` must all be allowed.
          const Value* codings = json_member(v, "coding");
          auto one = [&](const Value& c) {
            if (!rule.system.empty() && str_at(c, "system") != rule.system) return;
            if (!allowed(str_at(c, "code"))) reject(str_at(c, "code"), t);
          };
          if (codings && codings->IsArray()) {
            for (auto& c : codings->GetArray()) one(c);
          } else if (json_member(v, "code")) {
            one(v);
          }
        };
        each_at(resource, rule.path, 0, trail, each);
        return;
      }
      case Check::fixed: {
        auto each = [&](const Value& v, const Trail& t) {
          if (v == rule.fixed) return;
          add_issue(out, rule.severity, "value", rule.rule, render(path, t),
                    with_message(rule.path_text + " has a value this profile does not allow",
                                 rule.message));
        };
        each_at(resource, rule.path, 0, trail, each);
        return;
      }
    }
  }

  Severity check_digit_severity_;
  std::vector<FormatRule> identifiers_;
  std::vector<FormatRule> codings_;
  std::vector<LegacyUrl> legacy_;
  std::vector<Profile> profiles_;
};

}  // namespace

std::unique_ptr<RuleSet> make_uk_rules(const UkRuleSettings& settings) {
  return std::make_unique<UkRules>(settings);
}

}  // namespace tellonce
