#include "broker/validate/questionnaire_rules.hpp"

#include "broker/validate/contained_ids.hpp"
#include "tellonce/json.hpp"

#include <array>
#include <optional>
#include <unordered_map>
#include <unordered_set>

namespace tellonce::fhir {
namespace {

using rapidjson::Value;

std::string_view str_at(const Value& v, std::string_view name) { return json_string(json_member(v, name)); }

const Value* array_at(const Value& v, std::string_view name) {
  const Value* a = json_member(v, name);
  return a && a->IsArray() ? a : nullptr;
}

// The answer types each item type takes (R4 Questionnaire.item.type; answers' value[x] suffixes).
// choice and open-choice also take the types of their answerOptions.
struct ItemAnswers {
  std::string_view item_type;
  std::array<std::string_view, 2> value_types;
};
constexpr std::array<ItemAnswers, 16> answer_types = {{
    {"attachment", {"Attachment"}},
    {"boolean", {"Boolean"}},
    {"choice", {"Coding"}},
    {"date", {"Date"}},
    {"dateTime", {"DateTime"}},
    {"decimal", {"Decimal"}},
    {"display", {}},
    {"group", {}},
    {"integer", {"Integer"}},
    {"open-choice", {"Coding", "String"}},
    {"quantity", {"Quantity"}},
    {"reference", {"Reference"}},
    {"string", {"String"}},
    {"text", {"String"}},
    {"time", {"Time"}},
    {"url", {"Uri"}},
}};

const ItemAnswers* answers_for(std::string_view type) {
  for (const ItemAnswers& a : answer_types)
    if (a.item_type == type) return &a;
  return nullptr;
}

// The value[x] of an answer or answerOption: its type suffix ("Coding") and value.
struct ChoiceValue {
  std::string_view type;
  const Value* value = nullptr;
};
ChoiceValue value_of(const Value& holder) {
  if (!holder.IsObject()) return {};
  for (auto& m : holder.GetObject()) {
    std::string_view name(m.name.GetString(), m.name.GetStringLength());
    if (name.size() > 5 && name.starts_with("value")) return {name.substr(5), &m.value};
  }
  return {};
}

// The same answer as an option: a Coding by system (when the option gives one) and code, a
// Reference by its reference, a primitive by its JSON value.
bool same_value(std::string_view type, const Value& answer, const Value& option) {
  if (type == "Coding") {
    std::string_view system = str_at(option, "system");
    return str_at(answer, "code") == str_at(option, "code") && !str_at(option, "code").empty() &&
           (system.empty() || system == str_at(answer, "system"));
  }
  if (type == "Reference") return str_at(answer, "reference") == str_at(option, "reference");
  return answer == option;  // rapidjson compares numbers by value and strings by content
}

constexpr int max_depth = 64;
constexpr int max_reported = 20;  // one bad form should not drown the rest

class ResponseCheck {
 public:
  ResponseCheck(const Value& response, const Value& questionnaire, std::string_view questionnaire_ref,
                const std::string& path, std::vector<Issue>& out)
      : ref_(questionnaire_ref), path_(path), out_(out) {
    index(questionnaire, {}, 0);
    if (const Value* list = array_at(response, "contained"))
      for (const Value& res : list->GetArray()) {
        ++validation_steps;
        if (auto id = str_at(res, "id"); !id.empty()) contained_.emplace(id, &res);
      }
  }

  void run(const Value& response) { walk(response, {}, path_, 0); }


 private:
  struct Question {
    const Value* item = nullptr;
    std::string_view parent;  // the linkId of the item it sits under; empty at the top
  };

  void index(const Value& owner, std::string_view parent, int depth) {
    const Value* items = array_at(owner, "item");
    if (!items || depth > max_depth) return;
    for (const Value& item : items->GetArray()) {
      ++validation_steps;
      std::string_view id = str_at(item, "linkId");
      if (id.empty()) continue;
      questions_.emplace(id, Question{&item, parent});  // a repeated linkId keeps its first place
      index(item, id, depth + 1);
    }
  }

  void report(const char* rule, std::string location, std::string text) {
    if (reported_ >= max_reported) return;
    ++reported_;
    out_.push_back(Issue{Severity::error, "invariant", std::move(text), std::move(location), rule});
  }

  static std::string shown(std::string_view s) { return std::string(s.substr(0, 64)); }

  void walk(const Value& owner, std::string_view parent, const std::string& path, int depth) {
    const Value* items = array_at(owner, "item");
    if (!items || depth > max_depth) return;
    for (rapidjson::SizeType i = 0; i < items->Size(); ++i) {
      ++validation_steps;
      const Value& item = (*items)[i];
      std::string_view id = str_at(item, "linkId");
      if (id.empty()) continue;  // linkId is 1..1: the structural check reports it
      std::string here = path + ".item[" + std::to_string(i) + "]";
      auto found = questions_.find(id);
      if (found == questions_.end()) {
        report("qr-linkid", here + ".linkId",
               "linkId '" + shown(id) + "' is not an item of the questionnaire " + shown(ref_) +
                   ": answer only the questions it asks");
        continue;
      }
      const Question& q = found->second;
      if (q.parent != parent) {
        report("qr-linkid", here + ".linkId",
               "item '" + shown(id) + "' is " +
                   (q.parent.empty() ? std::string("at the top of the questionnaire")
                                     : "under item '" + shown(q.parent) + "' in the questionnaire") +
                   ", so it cannot be answered " +
                   (parent.empty() ? std::string("at the top") : "under '" + shown(parent) + "'"));
        continue;
      }
      check_answers(item, *q.item, id, here, depth);
      walk(item, id, here, depth + 1);
    }
  }

  void check_answers(const Value& item, const Value& question, std::string_view id, const std::string& here,
                     int depth) {
    const Value* answers = array_at(item, "answer");
    if (!answers) return;
    std::string_view type = str_at(question, "type");
    const ItemAnswers* allowed = answers_for(type);
    if (!allowed) return;  // an unknown type is the Questionnaire's own error
    if (allowed->value_types[0].empty()) {
      report("qr-answer-type", here + ".answer",
             "item '" + shown(id) + "' is a " + std::string(type) +
                 " in the questionnaire and takes no answers: put what it holds under its item");
      return;
    }
    const Value* options = array_at(question, "answerOption");
    for (rapidjson::SizeType j = 0; j < answers->Size(); ++j) {
      ++validation_steps;
      const Value& answer = (*answers)[j];
      std::string at = here + ".answer[" + std::to_string(j) + "]";
      ChoiceValue given = value_of(answer);
      if (given.value && !type_fits(given.type, *allowed, options)) {
        report("qr-answer-type", at,
               "item '" + shown(id) + "' is a " + std::string(type) +
                   " question, so its answer cannot be a value" + shown(given.type) + expected(*allowed, options));
      } else if (given.value && type == "choice") {
        check_option(given, question, options, id, at);
      }
      walk(answer, id, at, depth + 1);
    }
  }

  static bool type_fits(std::string_view given, const ItemAnswers& allowed, const Value* options) {
    for (std::string_view t : allowed.value_types)
      if (!t.empty() && t == given) return true;
    if (allowed.item_type != "choice" && allowed.item_type != "open-choice") return false;
    if (options)
      for (const Value& option : options->GetArray())
        if (value_of(option).type == given) return true;
    return false;
  }

  static std::string expected(const ItemAnswers& allowed, const Value* options) {
    std::string s = ": give value";
    s += allowed.value_types[0];
    if (!allowed.value_types[1].empty()) {
      s += " or value";
      s += allowed.value_types[1];
    }
    if (options && options->Size() > 0) s += ", or one of its answerOptions";
    return s;
  }

  // A choice answer is one of the item's options: its answerOptions, else the codes its
  // answerValueSet lists when that ValueSet is contained and enumerates them.
  void check_option(const ChoiceValue& given, const Value& question, const Value* options, std::string_view id,
                    const std::string& at) {
    if (options && options->Size() > 0) {
      for (const Value& option : options->GetArray()) {
        ++validation_steps;
        ChoiceValue o = value_of(option);
        if (o.type == given.type && same_value(given.type, *given.value, *o.value)) return;
      }
      report("qr-answer-option", at, "the answer to item '" + shown(id) + "' is not one of its answerOptions" +
                                         coding_hint(given));
      return;
    }
    std::string_view vs_ref = str_at(question, "answerValueSet");
    if (given.type != "Coding" || !vs_ref.starts_with("#")) return;  // outside value sets need a server
    const Codes* codes = listed_codes(vs_ref.substr(1));
    if (!codes) return;
    std::string key = std::string(str_at(*given.value, "system")) + '|' + std::string(str_at(*given.value, "code"));
    if (codes->contains(key)) return;
    report("qr-answer-option", at,
           "the answer to item '" + shown(id) + "' is not in its value set " + shown(vs_ref) + coding_hint(given));
  }

  static std::string coding_hint(const ChoiceValue& given) {
    if (given.type != "Coding") return {};
    std::string_view system = str_at(*given.value, "system");
    if (system.empty()) return ": the Coding has no system, and a code alone matches no option";
    return " (" + shown(system) + " " + shown(str_at(*given.value, "code")) + ")";
  }

  using Codes = std::unordered_set<std::string>;

  // The system|code pairs a contained ValueSet spells out: its expansion, else a compose whose
  // includes each list concepts of one system (no filters, no other value sets, no excludes).
  // nullptr when it does not spell them out: then nothing is checked.
  const Codes* listed_codes(std::string_view id) {
    if (auto it = value_sets_.find(id); it != value_sets_.end()) return it->second ? &*it->second : nullptr;
    std::optional<Codes>& slot = value_sets_[id];
    const Value* vs = contained_value_set(id);
    if (!vs) return nullptr;
    Codes codes;
    if (const Value* expansion = json_member(*vs, "expansion"); expansion && expansion->IsObject()) {
      if (!add_expansion(*expansion, codes, 0)) return nullptr;
    } else {
      const Value* compose = json_member(*vs, "compose");
      const Value* includes = compose ? array_at(*compose, "include") : nullptr;
      if (!includes || json_member(*compose, "exclude")) return nullptr;
      for (const Value& include : includes->GetArray()) {
        const Value* concepts = array_at(include, "concept");
        std::string_view system = str_at(include, "system");
        if (!concepts || system.empty() || json_member(include, "filter") || json_member(include, "valueSet"))
          return nullptr;
        for (const Value& c : concepts->GetArray()) {
          ++validation_steps;
          codes.insert(std::string(system) + '|' + std::string(str_at(c, "code")));
        }
      }
    }
    slot = std::move(codes);
    return &*slot;
  }

  static bool add_expansion(const Value& node, Codes& codes, int depth) {
    const Value* contains = array_at(node, "contains");
    if (!contains) return depth > 0;  // an expansion that lists nothing is not an enumeration
    if (depth > max_depth) return false;
    for (const Value& c : contains->GetArray()) {
      ++validation_steps;
      if (!str_at(c, "code").empty())
        codes.insert(std::string(str_at(c, "system")) + '|' + std::string(str_at(c, "code")));
      if (!add_expansion(c, codes, depth + 1) && json_member(c, "contains")) return false;
    }
    return true;
  }

  const Value* contained_value_set(std::string_view id) const {
    auto it = contained_.find(id);
    if (it == contained_.end() || str_at(*it->second, "resourceType") != "ValueSet") return nullptr;
    return it->second;
  }

  std::string_view ref_;
  const std::string& path_;
  std::vector<Issue>& out_;
  int reported_ = 0;
  std::unordered_map<std::string_view, Question> questions_;
  std::unordered_map<std::string_view, const Value*> contained_;  // the response's, by id
  std::unordered_map<std::string_view, std::optional<Codes>> value_sets_;
};

}  // namespace

void check_questionnaire_response(const Value& response, const std::string& path, std::vector<Issue>& out) {
  std::string_view ref = str_at(response, "questionnaire");
  if (!ref.starts_with("#") || ref.size() < 2) return;
  const Value* list = array_at(response, "contained");
  if (!list) return;  // an unresolved "#" reference is reported with the other local references
  for (const Value& res : list->GetArray()) {
    ++validation_steps;
    if (str_at(res, "id") != ref.substr(1)) continue;
    if (str_at(res, "resourceType") != "Questionnaire") return;
    ResponseCheck(response, res, ref, path, out).run(response);
    return;
  }
}

}  // namespace tellonce::fhir
