#include "broker/minimise/minimise.hpp"
#include "broker/minimise/restricted.hpp"

#include "broker/validate/schema.hpp"
#include "tellonce/json.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <functional>
#include <set>

namespace tellonce {

// What to keep of one object: properties by JSON name. A null child keeps the property whole;
// `resources` marks values that are resources, each filtered by its own type's node.
struct AllowList::Node {
  std::map<std::string, const Node*, std::less<>> keep;
  bool resources = false;
  std::uint32_t shape = fhir::none;  // for the required-element check
  std::string where;                 // "Patient", "Patient.contact": for problems
  std::string config_path;           // the first allow path that made this node
  int line = 0;
};

AllowList::AllowList() = default;
AllowList::~AllowList() = default;
AllowList::AllowList(AllowList&&) noexcept = default;

namespace {

using Node = AllowList::Node;
using Alloc = rapidjson::Document::AllocatorType;

// Kept on every resource a list names: no patient data, and implicitRules changes how the rest reads.
constexpr std::string_view always_kept[] = {"resourceType", "id", "_id", "meta", "implicitRules", "_implicitRules",
                                            "language", "_language"};

long count_of(const rapidjson::Value& v) { return v.IsArray() ? static_cast<long>(v.Size()) : 1; }

std::string_view name_of(const rapidjson::Value& name) { return {name.GetString(), name.GetStringLength()}; }

}  // namespace

// ---- compiling ----

class AllowListCompiler {
 public:
  AllowListCompiler(const Config& config, const fhir::Schema& schema, std::vector<ConfigProblem>& problems)
      : config_(config), s_(schema), problems_(problems) {}

  std::shared_ptr<const AllowList> compile(const MinimisationList& list) {
    auto out = std::make_shared<AllowList>();
    out->id_ = list.id;
    list_ = out.get();
    list_id_ = list.id;
    std::vector<Node*> partial;  // nodes to check for required elements
    for (const auto& a : list.allow) add_path(a, partial);
    for (Node* n : partial) check_required(*n);
    return out;
  }

 private:
  void problem(const AllowedPath& a, const std::string& message) {
    problems_.push_back(ConfigProblem{config_.file.string(), a.line, a.config_path, message});
  }

  Node& new_node(std::uint32_t shape, std::string where, const AllowedPath& a) {
    Node& n = list_->nodes_.emplace_back();
    n.shape = shape;
    n.where = std::move(where);
    n.config_path = a.config_path;
    n.line = a.line;
    return n;
  }

  static std::vector<std::string> split(const std::string& path) {
    std::vector<std::string> out;
    std::size_t start = 0;
    for (;;) {
      auto dot = path.find('.', start);
      out.push_back(path.substr(start, dot - start));
      if (dot == std::string::npos) return out;
      start = dot + 1;
    }
  }

  // The JSON names an element step selects in `shape`, the element's index and the property
  // to descend through (none when the step names a choice element of several types).
  struct Step {
    std::vector<std::string> names;
    std::uint32_t element = fhir::none;
    std::uint32_t property = fhir::none;
  };

  std::optional<Step> resolve(const fhir::Shape& shape, const std::string& segment) {
    Step step;
    auto p = shape.by_json_name.find(segment);
    if (p != fhir::NameTable::npos && !segment.starts_with("_")) {
      step.property = p;
      step.element = shape.properties[p].element;
      step.names.push_back(segment);
      if (shape.by_json_name.contains("_" + segment)) step.names.push_back("_" + segment);
      return step;
    }
    // A choice element by its base name, with or without [x]: every type's properties.
    std::string choice = segment.ends_with("[x]") ? segment : segment + "[x]";
    for (std::uint32_t e = 0; e < shape.elements.size(); ++e) {
      if (shape.elements[e].name != choice) continue;
      step.element = e;
      int types = 0;
      for (std::uint32_t i = 0; i < shape.properties.size(); ++i) {
        if (shape.properties[i].element != e) continue;
        step.names.push_back(shape.by_json_name.keys()[i]);  // keys are in property order
        if (shape.properties[i].extension_part) continue;
        ++types;
        step.property = i;
      }
      if (types > 1) step.property = fhir::none;  // several types: no single one to descend into
      return step;
    }
    return std::nullopt;
  }

  void add_path(const AllowedPath& a, std::vector<Node*>& partial) {
    auto segments = split(a.path);
    const std::string& type = segments.front();
    auto t = s_.types_by_name.find(type);
    if (t == fhir::NameTable::npos || s_.types[t].kind != fhir::TypeDef::Kind::resource || s_.types[t].abstract) {
      problem(a, "'" + type + "' is not a FHIR R4 resource type");
      return;
    }
    if (type == "Bundle") {
      problem(a, "a Bundle is kept as the message's structure and each entry filtered by its own resource "
                 "type: list the entries' types' paths instead");
      return;
    }
    auto& slot = list_->by_type_[type];
    if (!slot) {
      Node& n = new_node(s_.types[t].shape, type, a);
      for (auto name : always_kept) n.keep.emplace(std::string(name), nullptr);
      slot = &n;
      partial.push_back(&n);
    }
    Node* node = const_cast<Node*>(slot);
    std::string where = type;
    for (std::size_t i = 1; i < segments.size(); ++i) {
      const std::string& segment = segments[i];
      const bool last = i + 1 == segments.size();
      const fhir::Shape& shape = s_.shapes[node->shape];
      if (i == 1 && segment == "contained") {
        if (!last) {
          problem(a, "contained resources are filtered by their own type: list " + type +
                         ".contained and the contained types' paths");
          return;
        }
        static const Node contained_marker = [] {
          Node m;
          m.resources = true;
          return m;
        }();
        node->keep["contained"] = &contained_marker;
        return;
      }
      auto step = resolve(shape, segment);
      if (!step) {
        problem(a, "FHIR R4 " + where + " has no element '" + segment + "'");
        return;
      }
      where += "." + segment;
      if (last) {
        for (const auto& name : step->names) node->keep[name] = nullptr;  // whole: wins over parts
        return;
      }
      if (step->property == fhir::none) {
        problem(a, where + " has several types: name one (e.g. " + segment.substr(0, segment.find('[')) +
                       "Quantity) to keep parts of it");
        return;
      }
      const auto& typedef_ = s_.types[shape.properties[step->property].type];
      if (typedef_.kind == fhir::TypeDef::Kind::primitive) {
        problem(a, where + " is a primitive value: it has no parts to choose");
        return;
      }
      if (typedef_.kind == fhir::TypeDef::Kind::resource || typedef_.kind == fhir::TypeDef::Kind::any_resource) {
        problem(a, where + " holds a resource: list it whole");
        return;
      }
      const std::string& name = step->names.front();
      auto it = node->keep.find(name);
      if (it != node->keep.end() && it->second == nullptr) return;  // already kept whole
      if (it == node->keep.end()) {
        Node& child = new_node(typedef_.shape, where, a);
        partial.push_back(&child);
        it = node->keep.emplace(name, &child).first;
      }
      node = const_cast<Node*>(it->second);
    }
  }

  void check_required(const Node& n) {
    const fhir::Shape& shape = s_.shapes[n.shape];
    for (std::uint32_t e : shape.required) {
      bool kept = false;
      for (std::uint32_t i = 0; i < shape.properties.size() && !kept; ++i)
        if (shape.properties[i].element == e && n.keep.contains(shape.by_json_name.keys()[i])) kept = true;
      if (kept) continue;
      std::string element = shape.elements[e].name;
      problems_.push_back(ConfigProblem{config_.file.string(), n.line, n.config_path,
                                        "allow-list '" + list_id_ + "' would remove " + n.where + "." + element +
                                            ", which FHIR requires: add " + n.where + "." + element});
    }
  }

  const Config& config_;
  const fhir::Schema& s_;
  std::vector<ConfigProblem>& problems_;
  AllowList* list_ = nullptr;
  std::string list_id_;
};

CompiledMinimisation compile_minimisation(const Config& config, const fhir::Schema& schema) {
  CompiledMinimisation out;
  AllowListCompiler compiler(config, schema, out.problems);
  for (const auto& list : config.minimisation) out.lists.emplace(list.id, compiler.compile(list));
  return out;
}

CompiledMinimisation compile_minimisation(const Config& config, const std::filesystem::path& default_schema_dir) {
  if (config.minimisation.empty()) return {};
  const auto dir = config.validation.schema_dir.empty() ? default_schema_dir : config.validation.schema_dir;
  try {
    return compile_minimisation(config, fhir::Schema::load(dir / "fhir-r4"));
  } catch (const std::exception& e) {
    CompiledMinimisation out;
    out.problems.push_back(ConfigProblem{config.file.string(), config.minimisation.front().line, "minimisation",
                                         std::string("cannot read the FHIR definitions to check allow-lists: ") +
                                             e.what()});
    return out;
  }
}

// ---- filtering ----

namespace {

struct Filter {
  const AllowList& list;
  Alloc& alloc;
  long removed = 0;
  bool modifier_removed = false;
  std::function<bool(rapidjson::Value&)> resource;  // filters a nested resource; false: remove it

  // Keeps only what `node` allows of `obj`. Returns false when nothing is left.
  bool object(rapidjson::Value& obj, const Node& node) {
    if (!obj.IsObject()) return true;  // the validator refused anything else on the way in
    // The names, copied before the loop below moves members out of obj (a moved-from name is
    // null, and short names live inside the member itself).
    std::vector<std::string> names;
    names.reserve(obj.MemberCount());
    for (auto m = obj.MemberBegin(); m != obj.MemberEnd(); ++m) names.emplace_back(name_of(m->name));
    auto present = [&names](std::string_view n) { return std::find(names.begin(), names.end(), n) != names.end(); };
    rapidjson::Value kept(rapidjson::kObjectType);
    for (auto m = obj.MemberBegin(); m != obj.MemberEnd(); ++m) {
      std::string_view name = name_of(m->name);
      auto rule = node.keep.find(name);
      if (rule == node.keep.end()) {
        if (name == "modifierExtension") modifier_removed = true;
        // "_name" beside "name" is one element.
        if (!(name.starts_with('_') && present(name.substr(1)))) removed += count_of(m->value);
        continue;
      }
      if (rule->second) {
        const long before = removed;
        if (!value(m->value, *rule->second)) {
          if (!m->value.IsArray()) removed = before + 1;  // an array's emptied items were counted
          continue;
        }
      }
      kept.AddMember(m->name.Move(), m->value.Move(), alloc);
    }
    obj = std::move(kept);
    return obj.MemberCount() > 0;
  }

  // One property's value (an array: each item); false when nothing of it is left.
  bool value(rapidjson::Value& v, const Node& node) {
    if (!v.IsArray()) return item(v, node);
    rapidjson::Value kept(rapidjson::kArrayType);
    for (auto& x : v.GetArray()) {
      const long before = removed;
      if (item(x, node)) kept.PushBack(x.Move(), alloc);
      else removed = before + 1;  // an item removed whole counts once, whatever was inside
    }
    v = std::move(kept);
    return !v.Empty();
  }

  bool item(rapidjson::Value& v, const Node& node) { return node.resources ? resource(v) : object(v, node); }
};

}  // namespace

bool AllowList::filter_resource(rapidjson::Value& r, Alloc& alloc, long& removed, bool& modifier_removed) const {
  std::string_view type = json_string(json_member(r, "resourceType"));
  if (type == "Bundle") {
    auto* entries = const_cast<rapidjson::Value*>(json_member(r, "entry"));
    if (!entries || !entries->IsArray()) return true;
    std::set<std::string, std::less<>> gone;  // fullUrls of removed entries
    rapidjson::Value kept(rapidjson::kArrayType);
    for (auto& e : entries->GetArray()) {
      auto* res = const_cast<rapidjson::Value*>(json_member(e, "resource"));
      if (res && !filter_resource(*res, alloc, removed, modifier_removed)) {
        ++removed;
        if (auto url = json_string(json_member(e, "fullUrl")); !url.empty()) gone.emplace(url);
        continue;
      }
      kept.PushBack(e.Move(), alloc);
    }
    // A message's focus must not point at an entry that is no longer there.
    for (auto& e : kept.GetArray()) {
      auto* res = const_cast<rapidjson::Value*>(json_member(e, "resource"));
      if (!res || json_string(json_member(*res, "resourceType")) != "MessageHeader") continue;
      auto* focus = const_cast<rapidjson::Value*>(json_member(*res, "focus"));
      if (!focus || !focus->IsArray() || gone.empty()) continue;
      rapidjson::Value still(rapidjson::kArrayType);
      for (auto& f : focus->GetArray()) {
        if (gone.contains(json_string(json_member(f, "reference")))) ++removed;
        else still.PushBack(f.Move(), alloc);
      }
      if (still.Empty()) res->RemoveMember("focus");
      else *focus = std::move(still);
    }
    if (kept.Empty()) r.RemoveMember("entry");
    else *entries = std::move(kept);
    return true;
  }
  auto node = by_type_.find(type);
  if (node == by_type_.end()) return type == "MessageHeader";  // a message's header stays unless listed
  Filter f{*this, alloc, 0, false, {}};
  f.resource = [this, &alloc, &f](rapidjson::Value& nested) {
    long n = 0;
    bool kept = filter_resource(nested, alloc, n, f.modifier_removed);
    f.removed += n;
    return kept;
  };
  f.object(r, *node->second);
  removed += f.removed;
  modifier_removed = modifier_removed || f.modifier_removed;
  return true;
}

long AllowList::filter(rapidjson::Value& record, Alloc& alloc, bool& modifier_removed) const {
  long removed = 0;
  if (!filter_resource(record, alloc, removed, modifier_removed)) return -1;
  return removed;
}

// ---- applying to deliveries ----

Minimiser::Minimiser(std::shared_ptr<const AllowList> partner_list,
                     std::map<std::string, std::shared_ptr<const AllowList>> route_lists, const Validator& validator,
                     Store& store, JsonLimits limits, bool strip_restricted)
    : partner_list_(std::move(partner_list)),
      route_lists_(std::move(route_lists)),
      validator_(validator),
      store_(store),
      limits_(limits),
      strip_restricted_(strip_restricted) {}

MinimiseOutcome Minimiser::apply_lists(std::string_view body, const std::vector<const AllowList*>& lists) const {
  MinimiseOutcome out;
  const bool check_restricted = strip_restricted_ && may_be_restricted(body);
  if (lists.empty() && !check_restricted) return out;
  std::string names;
  for (const auto* l : lists) names += (names.empty() ? "" : ", ") + l->id();
  const std::string by = lists.empty() ? std::string("the restricted-record rule")
                                       : (lists.size() == 1 ? "allow-list " : "allow-lists ") + names;
  rapidjson::Document doc;
  if (auto parsed = parse_json_into(doc, body, limits_); !parsed) {
    out.kind = MinimiseOutcome::Kind::refused;
    out.note = "the stored record is not JSON, so " + by + " cannot be applied";
    return out;
  }
  std::string restricted_note;
  if (check_restricted && is_restricted(doc)) {
    auto stripped = strip_locating_details(doc);
    restricted_note = "restricted record, partner not entitled: " + stripped.describe() + " removed";
  }
  if (lists.empty() && restricted_note.empty()) return out;  // mentions the code system, is not restricted
  long removed = 0;
  bool modifier_removed = false;
  for (const auto* l : lists) {
    long n = l->filter(doc, doc.GetAllocator(), modifier_removed);
    if (n < 0) {
      out.kind = MinimiseOutcome::Kind::refused;
      out.note = by + " keeps nothing of a " + std::string(json_string(json_member(doc, "resourceType")));
      return out;
    }
    removed += n;
  }
  if (modifier_removed) {
    out.kind = MinimiseOutcome::Kind::refused;
    out.note = by + " would remove a modifierExtension, which changes the meaning of what is kept";
    return out;
  }
  std::vector<Issue> issues;
  validator_.validate(doc, issues);
  for (const auto& i : issues) {
    if (!i.is_error()) continue;
    // Location and rule only: the diagnostics may quote values.
    out.kind = MinimiseOutcome::Kind::refused;
    out.note = "the record minimised by " + by + " is not valid FHIR (" + i.location +
               (i.rule.empty() ? "" : " " + i.rule) + ")";
    return out;
  }
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  doc.Accept(writer);
  out.kind = MinimiseOutcome::Kind::minimised;
  out.body.assign(buffer.GetString(), buffer.GetSize());
  if (!lists.empty())
    out.note = "minimised by " + by + ": " + std::to_string(removed) + (removed == 1 ? " element" : " elements") +
               " removed";
  if (!restricted_note.empty()) out.note += (out.note.empty() ? "" : "; ") + restricted_note;
  return out;
}

asio::awaitable<MinimiseOutcome> Minimiser::apply(const DeliveryJob& job) const {
  std::vector<const AllowList*> lists;
  if (partner_list_) lists.push_back(partner_list_.get());
  if (!route_lists_.empty()) {
    // Which routes made this delivery is on the message's trail (the store keeps no per-delivery route).
    auto found = co_await store_.find(job.message_id);
    if (!found || !*found) {
      MinimiseOutcome retry;
      retry.kind = MinimiseOutcome::Kind::retry;
      retry.note = found ? "message not found" : found.error().summary();
      co_return retry;
    }
    for (const auto& event : (*found)->events) {
      if (event.kind != EventKind::routed) continue;
      for (const auto& route : event.routes)
        if (auto it = route_lists_.find(route); it != route_lists_.end()) lists.push_back(it->second.get());
    }
  }
  co_return apply_lists(job.body, lists);
}

std::map<std::string, std::shared_ptr<const Minimiser>> make_minimisers(const Config& config, const Validator& validator,
                                                                         Store& store, JsonLimits limits) {
  std::map<std::string, std::shared_ptr<const Minimiser>> out;
  auto list = [&config](const std::string& id) -> std::shared_ptr<const AllowList> {
    if (id.empty()) return nullptr;
    auto it = config.allow_lists.find(id);
    return it == config.allow_lists.end() ? nullptr : it->second;
  };
  for (const auto& p : config.partners) {
    std::map<std::string, std::shared_ptr<const AllowList>> by_route;
    for (const auto& r : config.routes)
      if (auto l = list(r.minimise); l && std::find(r.to.begin(), r.to.end(), p.id) != r.to.end())
        by_route.emplace(r.id, std::move(l));
    auto own = list(p.minimise);
    const bool strip = !p.restricted_records_entitled;
    if (!own && by_route.empty() && !strip) continue;
    out.emplace(p.id,
                std::make_shared<Minimiser>(std::move(own), std::move(by_route), validator, store, limits, strip));
  }
  return out;
}

}  // namespace tellonce
