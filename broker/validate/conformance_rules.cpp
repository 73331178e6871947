// Rules that need tables of the R4 core definitions beyond types and extensions, generated with
// the other definitions: a CapabilityStatement's search parameters, and a SearchParameter derived
// from a core one, against the core SearchParameters they name (schemas/fhir-r4/searchparams.json);
// a Coding's system in the core namespace against the code systems R4 defines
// (schemas/fhir-r4/codesystems.json).
#include "broker/validate/rules.hpp"
#include "broker/validate/schema.hpp"
#include "tellonce/json.hpp"

#include <algorithm>
#include <cctype>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

namespace tellonce {
namespace {

using Value = rapidjson::Value;

std::string_view str_at(const Value& v, std::string_view name) { return json_string(json_member(v, name)); }

void report(std::vector<Issue>& out, const char* code, const char* rule, std::string location, std::string text) {
  Issue issue;
  issue.code = code;
  issue.rule = rule;
  issue.location = std::move(location);
  issue.diagnostics = std::move(text);
  out.push_back(std::move(issue));
}

bool contains(const std::vector<std::string>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// Looked up by string_view (C++20 heterogeneous lookup): no string is made per search parameter.
struct UrlHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
struct CoreSearchParam {
  std::string type;               // token, date, reference ...
  std::vector<std::string> base;  // the resource types it applies to
};
using SearchTypes = std::unordered_map<std::string, CoreSearchParam, UrlHash, std::equal_to<>>;
using CodeSystems = std::unordered_set<std::string, UrlHash, std::equal_to<>>;

class ConformanceRules final : public RuleSet {
 public:
  ConformanceRules(SearchTypes search_types, CodeSystems code_systems)
      : search_types_(std::move(search_types)), code_systems_(std::move(code_systems)) {}

  void check(std::string_view type, const Value& value, const std::string& path,
             std::vector<Issue>& out) const override {
    if (!value.IsObject()) return;
    if (type == "Coding") return check_coding_system(value, path, out);
    if (type == "SearchParameter") return check_derived(value, path, out);
    if (type != "CapabilityStatement") return;
    const Value* rest = json_member(value, "rest");
    if (!rest || !rest->IsArray()) return;
    for (rapidjson::SizeType r = 0; r < rest->Size(); ++r) {
      const Value* resources = json_member((*rest)[r], "resource");
      if (!resources || !resources->IsArray()) continue;
      for (rapidjson::SizeType i = 0; i < resources->Size(); ++i) {
        const Value* params = json_member((*resources)[i], "searchParam");
        if (!params || !params->IsArray()) continue;
        for (rapidjson::SizeType k = 0; k < params->Size(); ++k) {
          auto where = [&] {  // built only for a problem: rules allocate nothing on good input
            return path + ".rest[" + std::to_string(r) + "].resource[" + std::to_string(i) + "].searchParam[" +
                   std::to_string(k) + "]";
          };
          check_search_param((*params)[k], where, out);
        }
      }
    }
  }

 private:
  // The type a searchParam states must be the type of the core SearchParameter it names: a
  // client builds its query from the stated type (a date prefix, a token's system|code).
  template <class Where>
  void check_search_param(const Value& param, const Where& where, std::vector<Issue>& out) const {
    std::string_view definition = str_at(param, "definition");
    std::string_view stated = str_at(param, "type");
    if (definition.empty() || stated.empty()) return;
    definition = definition.substr(0, definition.find('|'));  // a versioned canonical names the same one
    auto it = search_types_.find(definition);
    if (it == search_types_.end() || it->second.type == stated) return;
    report(out, "invariant", "cps-search-type", where() + ".type",
           "search parameter '" + std::string(str_at(param, "name").substr(0, 64)) + "' has type '" +
               std::string(stated.substr(0, 32)) + "', but its definition " + it->first + " is of type '" +
               it->second.type + "'");
  }

  // A SearchParameter derived from a core one (derivedFrom) keeps its type and applies only to
  // resource types the core one covers: it narrows the parameter, it cannot change what it means.
  void check_derived(const Value& sp, const std::string& path, std::vector<Issue>& out) const {
    std::string_view from = str_at(sp, "derivedFrom");
    if (from.empty()) return;
    auto it = search_types_.find(from.substr(0, from.find('|')));
    if (it == search_types_.end()) return;
    const CoreSearchParam& core = it->second;
    std::string_view stated = str_at(sp, "type");
    if (!stated.empty() && stated != core.type)
      report(out, "invariant", "spd-derived", path + ".type",
             "type '" + std::string(stated.substr(0, 32)) + "' differs from the type '" + core.type + "' of " +
                 it->first + ", which this parameter is derived from");
    const Value* bases = json_member(sp, "base");
    if (!bases || !bases->IsArray() || contains(core.base, "Resource")) return;
    // DomainResource covers every resource type but these.
    const bool any_domain_resource = contains(core.base, "DomainResource");
    auto covered = [&](std::string_view name) {
      if (contains(core.base, name)) return true;
      return any_domain_resource && name != "Resource" && name != "DomainResource" && name != "Bundle" &&
             name != "Binary" && name != "Parameters";
    };
    for (rapidjson::SizeType i = 0; i < bases->Size(); ++i) {
      std::string_view name = json_string(&(*bases)[i]);
      if (name.empty() || covered(name)) continue;
      report(out, "invariant", "spd-derived", path + ".base[" + std::to_string(i) + "]",
             "base '" + std::string(name.substr(0, 64)) + "' is not one the parameter it is derived from (" +
                 it->first + ") applies to");
    }
  }

  // A Coding whose system is in the core namespace must name a code system R4 defines: the
  // receiver looks codes up by it. Typical misses are STU3 urls R4 moved to terminology.hl7.org
  // (http://hl7.org/fhir/v2/0203) and value set urls given as systems. Left alone: the sid/
  // urls HL7 assigns to external systems (ICD-10, CVX, NDC), implementation guides under a
  // realm code (http://hl7.org/fhir/us/...) and cross-version urls (http://hl7.org/fhir/5.0/...).
  void check_coding_system(const Value& coding, const std::string& path, std::vector<Issue>& out) const {
    if (code_systems_.empty()) return;
    constexpr std::string_view core = "http://hl7.org/fhir/";
    std::string_view system = str_at(coding, "system");
    if (!system.starts_with(core)) return;
    std::string_view rest = system.substr(core.size());
    std::string_view first = rest.substr(0, rest.find('/'));
    if (first.empty() || first == "sid" || (first.size() == 2 && std::isalpha(static_cast<unsigned char>(first[0])) &&
                                            std::isalpha(static_cast<unsigned char>(first[1]))) ||
        std::isdigit(static_cast<unsigned char>(first[0])))
      return;
    if (code_systems_.contains(system.substr(0, system.find('|')))) return;
    std::string text;
    if (first == "ValueSet") {
      text = "system " + std::string(system.substr(0, 128)) +
             " is a value set url, not a code system: give the url of the code system the code comes from";
    } else {
      text = "system " + std::string(system.substr(0, 128)) +
             " is in the FHIR core namespace but R4 defines no such code system";
      // R4 moved the v2 and v3 tables and many others to terminology.hl7.org.
      std::string moved = "http://terminology.hl7.org/CodeSystem/" + std::string(rest);
      if (moved.find("/v2/") != std::string::npos || moved.find("/v3/") != std::string::npos)
        moved.replace(moved.rfind('/'), 1, "-");
      if (code_systems_.contains(moved)) text += ": R4 names it " + moved;
    }
    report(out, "code-invalid", "coding-core-system", path + ".system", std::move(text));
  }

  SearchTypes search_types_;  // core SearchParameter url -> type and base
  CodeSystems code_systems_;  // R4's code system urls (core namespace and terminology.hl7.org)
};

// One of the generated tables, {"generated": ..., KEY: {...}}: KEY's object, or nullptr when
// the file is not there (the rules that need it then check nothing); a file that is there but
// unreadable or without KEY is refused, naming it.
const Value* table(std::optional<rapidjson::Document>& doc, const std::filesystem::path& file, const char* key) {
  if (!std::filesystem::exists(file)) return nullptr;
  doc = fhir::read_schema_file(file);
  const Value* t = json_member(*doc, key);
  if (!t || !t->IsObject()) throw std::runtime_error(file.string() + ": missing \"" + key + "\"");
  return t;
}

}  // namespace

std::unique_ptr<RuleSet> make_conformance_rules(const std::filesystem::path& schema_dir) {
  std::optional<rapidjson::Document> doc;
  SearchTypes types;
  if (const Value* params = table(doc, schema_dir / "fhir-r4" / "searchparams.json", "searchParameters")) {
    for (auto& m : params->GetObject()) {
      std::string_view type = str_at(m.value, "type");
      if (type.empty()) continue;
      CoreSearchParam param{std::string(type), {}};
      if (const Value* base = json_member(m.value, "base"); base && base->IsArray())
        for (auto& b : base->GetArray())
          if (b.IsString()) param.base.emplace_back(b.GetString());
      types.emplace(m.name.GetString(), std::move(param));
    }
  }
  CodeSystems code_systems;
  if (const Value* systems = table(doc, schema_dir / "fhir-r4" / "codesystems.json", "codeSystems"))
    for (auto& m : systems->GetObject()) code_systems.emplace(m.name.GetString());
  return std::make_unique<ConformanceRules>(std::move(types), std::move(code_systems));
}

}  // namespace tellonce
