// The structural FHIR R4 check: one walk over the JSON tree, driven by the compiled schema.
// Nothing is allocated while the record is valid: the location lives in one reusable buffer
// and is only copied into an Issue when something is wrong.
#include "broker/validate/contained_ids.hpp"
#include "broker/validate/rules.hpp"
#include "broker/validate/schema.hpp"
#include "tellonce/json.hpp"
#include "tellonce/validator.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>

namespace tellonce {
namespace {

using fhir::ElementDef;
using fhir::Property;
using fhir::Shape;
using fhir::TypeDef;
using rapidjson::Value;

std::string_view view(const Value& v) { return {v.GetString(), v.GetStringLength()}; }

std::string describe(const Value& v) {
  switch (v.GetType()) {
    case rapidjson::kNullType: return "null";
    case rapidjson::kFalseType: return "false";
    case rapidjson::kTrueType: return "true";
    case rapidjson::kObjectType: return "a JSON object";
    case rapidjson::kArrayType: return "a JSON array";
    case rapidjson::kStringType: {
      std::string_view s = view(v);
      if (s.size() > 60) return "\"" + std::string(s.substr(0, 57)) + "...\"";
      return "\"" + std::string(s) + "\"";
    }
    case rapidjson::kNumberType: {
      if (v.IsInt64()) return std::to_string(v.GetInt64());
      if (v.IsUint64()) return std::to_string(v.GetUint64());
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", v.GetDouble());
      return buf;
    }
  }
  return "a value";
}

std::string_view json_kind(const Value& v) {
  switch (v.GetType()) {
    case rapidjson::kNullType: return "null";
    case rapidjson::kFalseType:
    case rapidjson::kTrueType: return "a boolean";
    case rapidjson::kObjectType: return "an object";
    case rapidjson::kArrayType: return "an array";
    case rapidjson::kStringType: return "a string";
    case rapidjson::kNumberType: return "a number";
  }
  return "a value";
}

const Value* find_string(const Value& obj, std::string_view name) {
  for (auto& m : obj.GetObject())
    if (view(m.name) == name) return m.value.IsString() ? &m.value : nullptr;
  return nullptr;
}

// What holds the object being walked, for extension contexts: the element (Property::element_key;
// none for a resource) and its type (Patient, HumanName, date for a "_birthDate" companion).
struct Container {
  std::uint32_t element_key;
  std::uint32_t type;
};

constexpr std::string_view core_extension_prefix = "http://hl7.org/fhir/StructureDefinition/";

// Per-call state: the issue list and the location of the value being looked at.
struct Walk {
  std::vector<Issue>& out;
  std::string path;
  unsigned depth = 0;  // objects entered; bounds the recursion for documents not from parse_json
  fhir::ContainedIds* container = nullptr;  // the resource whose `contained` a "#id" reference names

  // At most max_issues are listed; the rest are counted, so that a hostile record's answer
  // and memory stay bounded (issue 7: a million unknown keys gave a million issues).
  std::size_t limit = 0;
  std::size_t unlisted_errors = 0, unlisted_others = 0;

  void report(const char* code, const char* rule, std::string diagnostics,
              Severity severity = Severity::error) {
    if (out.size() >= limit) {
      ++(severity == Severity::error ? unlisted_errors : unlisted_others);
      return;
    }
    out.push_back(Issue{severity, code, std::move(diagnostics), path, rule});
  }
  // Rule sets append to `out` themselves; what they added past the limit is dropped and counted.
  void trim() {
    for (std::size_t i = limit; i < out.size(); ++i) ++(out[i].is_error() ? unlisted_errors : unlisted_others);
    if (out.size() > limit) out.resize(limit);
  }
  std::size_t push(std::string_view name) {
    std::size_t mark = path.size();
    path += '.';
    path += name;
    return mark;
  }
  std::size_t push_index(std::size_t i) {
    std::size_t mark = path.size();
    char buf[24];
    auto end = std::to_chars(buf, buf + sizeof buf, i).ptr;
    path += '[';
    path.append(buf, end);
    path += ']';
    return mark;
  }
  void pop(std::size_t mark) { path.resize(mark); }
};

class Engine final : public Validator {
 public:
  Engine(fhir::Schema schema, std::vector<std::unique_ptr<RuleSet>> rules)
      : schema_(std::move(schema)), rules_(std::move(rules)),
        reference_type_(schema_.types_by_name.find("Reference")) {}

  void validate(const Value& resource, std::vector<Issue>& out) const override {
    Walk w{out, {}};
    w.path.reserve(256);
    w.limit = out.size() + max_issues_per_record;
    check_resource(resource, w, true, false);
    if (std::size_t unlisted = w.unlisted_errors + w.unlisted_others) {
      out.push_back(Issue{w.unlisted_errors ? Severity::error : Severity::warning, "too-costly",
                          "and " + std::to_string(unlisted) + " more problems not listed (" +
                              std::to_string(w.unlisted_errors) + " of them errors): only the first " +
                              std::to_string(max_issues_per_record) + " are listed; fix these and send the record again",
                          "", "issue-limit"});
    }
  }

 private:
  void run_rules(std::string_view type, const Value& v, Walk& w) const {
    for (auto& r : rules_) r->check(type, v, w.path, w.out);
    if (w.out.size() > w.limit) w.trim();
  }

  // `contained`: v sits in its container's `contained` list, so "#id" references inside it
  // resolve against the container, not against v.
  void check_resource(const Value& v, Walk& w, bool top, bool contained) const {
    if (!v.IsObject()) {
      if (top) w.path = "(resource)";
      w.report("structure", "fhir-type", "a resource must be a JSON object, not " + std::string(json_kind(v)));
      return;
    }
    const Value* type_name = nullptr;
    auto rt = v.FindMember("resourceType");
    if (rt != v.MemberEnd()) type_name = &rt->value;
    auto resource_type_error = [&](const char* code, std::string why) {
      std::size_t mark = top ? 0 : w.push("resourceType");
      if (top) w.path = "resourceType";  // the walk starts with an empty path
      w.report(code, "fhir-resource-type", std::move(why));
      w.pop(mark);
    };
    if (!type_name) return resource_type_error("required", "resourceType is missing: every resource needs one");
    if (!type_name->IsString())
      return resource_type_error("structure", "resourceType must be a string, not " + std::string(json_kind(*type_name)));
    std::uint32_t t = schema_.types_by_name.find(view(*type_name));
    if (t == fhir::NameTable::npos)
      return resource_type_error("not-supported", "unknown resource type " + describe(*type_name) +
                                                      " (not a FHIR R4 resource)");
    const TypeDef& type = schema_.types[t];
    if (type.kind != TypeDef::Kind::resource || type.abstract) {
      return resource_type_error("structure", type.name + (type.abstract ? " is an abstract type" : " is a datatype") +
                                                   ", not a resource type");
    }
    std::size_t mark = w.path.size();
    if (top) w.path = type.name;
    fhir::ContainedIds own_ids(&v);  // lives while v's contents are walked: built at most once
    fhir::ContainedIds* outer_container = w.container;
    if (!contained) w.container = &own_ids;
    check_object(v, type.shape, w, Container{fhir::none, t});
    run_rules(type.name, v, w);
    w.container = outer_container;
    w.pop(mark);
  }

  static constexpr unsigned max_depth = 100;

  void check_object(const Value& obj, std::uint32_t shape_index, Walk& w, const Container& here) const {
    if (w.depth >= max_depth) {
      w.report("too-costly", "fhir-depth", "nested deeper than " + std::to_string(max_depth) + " objects");
      return;
    }
    ++w.depth;
    check_members(obj, schema_.shapes[shape_index], w, here);
    --w.depth;
  }

  void check_members(const Value& obj, const Shape& shape, Walk& w, const Container& here) const {
    std::uint32_t counts[fhir::max_shape_elements];
    std::uint32_t chosen[fhir::max_shape_elements];  // property index of the choice taken
    std::fill_n(counts, shape.elements.size(), 0u);
    std::fill_n(chosen, shape.elements.size(), fhir::none);
    std::uint64_t seen[fhir::max_shape_properties / 64];  // RapidJSON keeps duplicate keys
    std::fill_n(seen, (shape.properties.size() + 63) / 64, 0u);

    bool resource_type_seen = false;  // not a property of the shape, so not in `seen`
    fhir::validation_steps += obj.MemberCount();
    for (auto& m : obj.GetObject()) {
      std::string_view name = view(m.name);
      std::uint32_t pi = shape.by_json_name.find(name);
      if (pi == fhir::NameTable::npos) {
        if (!(shape.resource && name == "resourceType")) {
          unknown_member(name, shape, w);
        } else if (resource_type_seen) {
          std::size_t mark = w.push(name);
          w.report("structure", "fhir-duplicate", "property resourceType appears more than once");
          w.pop(mark);
        }
        resource_type_seen |= name == "resourceType";
        continue;
      }
      const Property& p = shape.properties[pi];
      const ElementDef& e = shape.elements[p.element];
      std::uint64_t bit = std::uint64_t{1} << (pi % 64);
      if (seen[pi / 64] & bit) {
        std::size_t mark = w.push(p.location_name);
        w.report("structure", "fhir-duplicate", "property " + std::string(name) + " appears more than once");
        w.pop(mark);
        continue;
      }
      seen[pi / 64] |= bit;
      if (e.choice) {
        std::uint32_t value_property = p.extension_part ? pi - 1 : pi;
        if (chosen[p.element] == fhir::none) {
          chosen[p.element] = value_property;
        } else if (chosen[p.element] != value_property) {
          std::size_t mark = w.push(p.location_name);
          w.report("structure", "fhir-choice",
                   e.name + " allows one type only, but both " +
                       shape.properties[chosen[p.element]].location_name + " and " + p.location_name +
                       " are present");
          w.pop(mark);
        }
      }
      std::size_t mark = w.push(p.location_name);
      counts[p.element] = std::max(counts[p.element], check_member(m.value, p, e, obj, w, here));
      w.pop(mark);
    }
    for (std::uint32_t r : shape.required) {
      const ElementDef& e = shape.elements[r];
      if (counts[r] >= e.min) continue;
      std::size_t mark = w.push(e.name);
      w.report("required", "fhir-cardinality",
               counts[r] == 0 ? e.name + " is required but missing"
                              : e.name + " needs at least " + std::to_string(e.min) + " items");
      w.pop(mark);
    }
  }

  // A member name as shown in a location or message: hostile names can be megabytes long.
  static std::string_view shown_name(std::string_view name) {
    constexpr std::size_t longest = 64;
    if (name.size() <= longest) return name;
    std::size_t cut = longest;
    while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xC0) == 0x80) --cut;  // whole characters
    return name.substr(0, cut);
  }

  void unknown_member(std::string_view full_name, const Shape& shape, Walk& w) const {
    if (w.out.size() >= w.limit) {  // not listed anyway: skip building the message
      ++w.unlisted_errors;
      return;
    }
    std::string_view name = shown_name(full_name);
    std::size_t mark = w.push(name);
    std::string why;
    if (name == "resourceType") {
      w.pop(mark);
      w.report("structure", "fhir-type", "a resource is not allowed here: " + shape.name + " is a datatype");
      return;
    }
    if (name == "fhir_comments") {
      why = "fhir_comments is not part of FHIR R4 JSON (it was dropped after DSTU2): remove it";
    } else if (!name.empty() && name[0] == '_' && shape.by_json_name.contains(name.substr(1))) {
      why = "unknown element " + std::string(name) + ": only primitive elements have a \"_\" companion";
    } else {
      why = "unknown element " + std::string(name) + (name.size() < full_name.size() ? "..." : "") + " in " +
            shape.name;
      for (const Property& p : shape.properties) {
        const std::string& candidate = p.location_name;
        bool same = candidate.size() == name.size() &&
                    std::equal(candidate.begin(), candidate.end(), name.begin(),
                               [](char a, char b) { return std::tolower(a) == std::tolower(b); });
        const ElementDef& e = shape.elements[p.element];
        bool choice_stem = e.choice && e.name.size() == name.size() + 3 && e.name.compare(0, name.size(), name) == 0;
        if (same || choice_stem) {
          why += same ? " (did you mean " + candidate + "?)"
                      : " (" + e.name + " needs its type in the name, e.g. " + candidate + ")";
          break;
        }
      }
    }
    w.report("structure", "fhir-unknown-element", std::move(why));
    w.pop(mark);
  }

  // Returns how many values the member holds, for the cardinality check.
  // `here`: what holds `parent`.
  std::uint32_t check_member(const Value& v, const Property& p, const ElementDef& e, const Value& parent,
                             Walk& w, const Container& here) const {
    if (!e.array) {
      if (v.IsArray()) {
        w.report("structure", "fhir-cardinality", e.name + " is a single element, so it must not be a JSON array");
        return 1;
      }
      if (p.extension_part) {
        check_extension_part(v, p, w);
        if (!parent.HasMember(rapidjson::StringRef(p.location_name.data(), p.location_name.size()))) {
          if (id_only(v)) report_empty_primitive(w);
          else if (v.IsObject()) check_code_given(v, p, w);
        }
      } else {
        check_value(v, p, w, here);
      }
      return 1;
    }
    if (!v.IsArray()) {
      w.report("structure", "fhir-cardinality",
               e.name + " can repeat, so it must be a JSON array even with one item");
      if (!p.extension_part) check_value(v, p, w, here);
      return 1;
    }
    auto size = v.Size();
    if (size == 0) {
      w.report("structure", "fhir-cardinality", "empty arrays are not allowed in FHIR JSON: leave " + e.name + " out");
      return 0;
    }
    if (size > e.max) {
      w.report("structure", "fhir-cardinality",
               e.name + " allows at most " + std::to_string(e.max) + " items, found " + std::to_string(size));
    }
    const Value* companion = nullptr;  // the other half of a primitive array, looked up on demand
    bool companion_looked_up = false;
    if (p.extension_part) {
      companion_looked_up = true;
      auto it = parent.FindMember(rapidjson::StringRef(p.location_name.data(), p.location_name.size()));
      if (it != parent.MemberEnd() && it->value.IsArray()) companion = &it->value;
      if (companion && companion->Size() != size) {
        w.report("structure", "fhir-cardinality",
                 e.name + " and _" + e.name + " must have the same number of items (pad with null); found " +
                     std::to_string(companion->Size()) + " and " + std::to_string(size));
      }
    }
    for (rapidjson::SizeType i = 0; i < size; ++i) {
      const Value& item = v[i];
      std::size_t mark = w.push_index(i);
      if (item.IsNull() && schema_.types[p.type].kind == TypeDef::Kind::primitive) {
        // [null] pads a primitive array where only the other half ("x" or "_x") has an entry.
        if (!companion_looked_up) {
          companion_looked_up = true;
          std::string other = p.extension_part ? p.location_name : "_" + p.location_name;
          auto it = parent.FindMember(rapidjson::StringRef(other.data(), other.size()));
          if (it != parent.MemberEnd() && it->value.IsArray()) companion = &it->value;
        }
        if (!companion || i >= companion->Size() || (*companion)[i].IsNull()) {
          w.report("structure", "fhir-type",
                   "null in a primitive array needs a matching entry at the same index in its \"_\" companion");
        }
      } else if (p.extension_part) {
        check_extension_part(item, p, w);
        if (!companion || i >= companion->Size() || (*companion)[i].IsNull()) {
          if (id_only(item)) report_empty_primitive(w);
          else if (item.IsObject()) check_code_given(item, p, w);
        }
      } else {
        check_value(item, p, w, here);
      }
      w.pop(mark);
    }
    return size;
  }

  // An object with no members but "id": with no value beside it, the primitive is empty.
  static bool id_only(const Value& v) {
    if (!v.IsObject()) return false;
    for (auto& m : v.GetObject())
      if (view(m.name) != "id") return false;
    return true;
  }

  static void report_empty_primitive(Walk& w) {
    w.report("invariant", "ele-1",
             "Element is empty: a primitive needs a value or an extension, and its \"_\" companion has neither");
  }

  // A code under a required binding may be left out only when the record says why (the core
  // data-absent-reason extension); any other extension in its place hands the receiver no code
  // although the value set needs one, as the reference validator also reports.
  void check_code_given(const Value& companion, const Property& p, Walk& w) const {
    if (p.binding == fhir::none || p.strength != fhir::BindingStrength::required ||
        schema_.types[p.type].primitive != fhir::Primitive::code)
      return;
    if (const Value* list = json_member(companion, "extension"); list && list->IsArray())
      for (const Value& ext : list->GetArray())
        if (json_string(json_member(ext, "url")) == "http://hl7.org/fhir/StructureDefinition/data-absent-reason") return;
    w.report("code-invalid", "fhir-binding",
             "no code given: " + value_set_phrase(schema_.value_sets[p.binding], p.strength) +
                 " needs one here; if the code is not known, say why with the data-absent-reason extension");
  }

  // The "_name" companion holds the extensions of primitive element p.
  void check_extension_part(const Value& v, const Property& p, Walk& w) const {
    if (!v.IsObject()) {
      w.report("structure", "fhir-type",
               "the \"_\" companion of a primitive holds id and extension, so it must be a JSON object, not " +
                   std::string(json_kind(v)));
      return;
    }
    check_object(v, schema_.element_shape, w, Container{p.element_key, p.type});
  }

  // `parent`: what holds the object v is a member of.
  void check_value(const Value& v, const Property& p, Walk& w, const Container& parent) const {
    const TypeDef& type = schema_.types[p.type];
    switch (type.kind) {
      case TypeDef::Kind::primitive: {
        if (v.IsNull()) {
          w.report("structure", "fhir-type", "null is not a FHIR value: leave the element out");
          return;
        }
        auto fault = fhir::check_primitive(type.primitive, v);
        if (fault == fhir::PrimitiveFault::too_long) {
          w.report("too-long", "fhir-string-length",
                   "a " + type.name + " of " + std::to_string(fhir::utf8_characters(view(v))) +
                       " characters is longer than FHIR allows (1 MB: " +
                       std::to_string(fhir::max_string_characters) + " characters)");
          return;
        }
        if (fault != fhir::PrimitiveFault::none) {
          using fhir::PrimitiveFault;
          const char* code = fault == PrimitiveFault::json_type ? "structure" : "value";
          const char* rule = fault == PrimitiveFault::json_type ? "fhir-type"
                             : fault == PrimitiveFault::date   ? "fhir-date"
                                                                : "fhir-value";
          w.report(code, rule,
                   describe(v) + " is not a valid " + type.name + ": expected " +
                       std::string(fhir::expected_form(type.primitive)));
          return;
        }
        if (p.binding != fhir::none && type.primitive == fhir::Primitive::code) {
          const fhir::ValueSet& vs = schema_.value_sets[p.binding];
          if (!vs.all_codes.contains(view(v))) report_code(view(v), vs, p.strength, w);
        }
        return;
      }
      case TypeDef::Kind::complex:
      case TypeDef::Kind::backbone:
        if (!v.IsObject()) {
          w.report("structure", "fhir-type",
                   "expected a JSON object (FHIR type " + type.name + "), not " + std::string(json_kind(v)));
          return;
        }
        check_object(v, type.shape, w, Container{p.element_key, p.type});
        if (p.extension_list != Property::ExtensionList::no) check_extension_use(v, p, parent, w);
        if (p.type == reference_type_) check_local_reference(v, w);
        if (p.binding != fhir::none) {
          const fhir::ValueSet& vs = schema_.value_sets[p.binding];
          if (p.strength != fhir::BindingStrength::required) {
            if (type.name == "Coding" || type.name == "CodeableConcept") check_open_binding(v, type.name, vs, p.strength, w);
          } else if (type.name == "Coding") {
            check_coding(v, vs, w);
          } else if (type.name == "CodeableConcept") {
            check_codeable_concept(v, vs, w);
          }
        }
        run_rules(type.name, v, w);
        return;
      case TypeDef::Kind::any_resource:
      case TypeDef::Kind::resource:
        check_resource(v, w, false, p.location_name == "contained");
        return;
    }
  }

  // A core extension against its definition: modifier or not, value type, sub-extensions, and
  // where it may be used. Extensions the package does not define pass (partners' own), but a url
  // under the core namespace that names no R4 extension is an error, as in the reference
  // validator: a typo, or an extension of a later version (R4 names those with
  // http://hl7.org/fhir/5.0/StructureDefinition/extension-...), which an R4 receiver cannot read.
  void check_extension_use(const Value& ext, const Property& list, const Container& holder, Walk& w) const {
    const Value* url_value = find_string(ext, "url");
    if (!url_value) return;  // the structure check reports it
    std::string_view url = view(*url_value);
    url = url.substr(0, url.find('|'));  // a versioned canonical names the same definition
    std::uint32_t found = schema_.extensions_by_url.find(url);
    if (found == fhir::NameTable::npos) {
      if (url.starts_with(core_extension_prefix) && url.size() > core_extension_prefix.size())
        w.report("extension", "ext-unknown",
                 "extension " + describe(*url_value) +
                     " is not a FHIR R4 core extension (its url is in the core namespace, but R4 defines no such "
                     "extension): check the url; an extension of a later FHIR version takes its cross-version url "
                     "(http://hl7.org/fhir/5.0/StructureDefinition/extension-...)");
      return;
    }
    const fhir::ExtensionDef& def = schema_.extensions[found];
    bool in_modifier_list = list.extension_list == Property::ExtensionList::modifier_extension;
    if (def.modifier != in_modifier_list) {
      w.report("extension", "ext-modifier",
               def.modifier ? "extension " + def.url + " is a modifier extension: it belongs in modifierExtension, not extension"
                            : "extension " + def.url +
                                  " is not a modifier extension: it belongs in extension, not modifierExtension");
    }
    const Value* nested = nullptr;
    const Property* value = extension_value(ext, nested);
    if (def.complex) {
      if (value) {
        std::size_t mark = w.push(value->location_name);
        w.report("extension", "ext-complex",
                 "extension " + def.url + " is a complex extension: it holds sub-extensions only, not a value[x]");
        w.pop(mark);
      }
      if (!def.parts.empty()) check_extension_parts(def, nested, w);
    } else {
      if (value && !value_type_allowed(def.value_types, value->type)) {
        std::size_t mark = w.push(value->location_name);
        w.report("extension", "ext-value-type",
                 "extension " + def.url + " takes a value of type " + def.value_names + ", not " +
                     schema_.types[value->type].name);
        w.pop(mark);
      }
      if (nested && !def.nested_allowed) {
        std::size_t mark = w.push("extension");
        w.report("extension", "ext-simple",
                 "extension " + def.url + " is a simple extension: it holds a value[x] (" + def.value_names +
                     ") and no sub-extensions");
        w.pop(mark);
      }
    }
    // Inside another extension the context is that extension, which the element-based contexts
    // of the R4 definitions do not describe: not checked there.
    if (def.anywhere || holder.type == schema_.extension_type || context_allows(def, holder)) return;
    const TypeDef& type = schema_.types[holder.type];
    w.report("extension", "ext-context",
             "extension " + def.url + " is not allowed on " +
                 (holder.element_key == fhir::none ? "the resource (" + type.name + ")"
                  : type.kind == TypeDef::Kind::backbone
                      ? "this element (" + schema_.shapes[type.shape].name + ")"
                      : "this element (type " + type.name + ")") +
                 ": its definition allows it on " + def.contexts + " only");
  }

  // The value[x] property an extension object uses (or its "_valueX" companion), and in `nested`
  // its "extension" member.
  const Property* extension_value(const Value& ext, const Value*& nested) const {
    const Property* value = nullptr;
    const Shape& shape = schema_.shapes[schema_.types[schema_.extension_type].shape];
    for (auto& m : ext.GetObject()) {
      std::string_view name = view(m.name);
      if (name == "extension") {
        nested = &m.value;
      } else if (name.starts_with("value") || name.starts_with("_value")) {
        std::uint32_t pi = shape.by_json_name.find(name);
        if (pi != fhir::NameTable::npos && shape.elements[shape.properties[pi].element].choice) value = &shape.properties[pi];
      }
    }
    return value;
  }

  // The sub-extensions a complex core extension defines: how many of each, and their value types.
  // Other urls pass (R4's slicings are open). `nested`: the "extension" member, if any.
  void check_extension_parts(const fhir::ExtensionDef& def, const Value* nested, Walk& w) const {
    std::uint32_t counts[fhir::max_extension_parts] = {};
    if (nested && nested->IsArray()) {
      std::size_t list_mark = w.push("extension");
      for (rapidjson::SizeType i = 0; i < nested->Size(); ++i) {
        const Value& part_value = (*nested)[i];
        if (!part_value.IsObject()) continue;
        const Value* url = find_string(part_value, "url");
        if (!url) continue;
        for (std::size_t j = 0; j < def.parts.size(); ++j) {
          const fhir::ExtensionPart& part = def.parts[j];
          if (part.url != view(*url)) continue;
          std::size_t item_mark = w.push_index(i);
          if (++counts[j] == part.max + 1 && part.max != fhir::unbounded)  // once, at the first one too many
            w.report("extension", "ext-part-max",
                     "extension " + def.url + " allows its sub-extension '" + part.url + "' " +
                         std::to_string(part.max) + (part.max == 1 ? " time" : " times") + " only");
          const Value* part_nested = nullptr;
          const Property* value = extension_value(part_value, part_nested);
          if (value && !part.value_types.empty() && !value_type_allowed(part.value_types, value->type)) {
            std::size_t value_mark = w.push(value->location_name);
            w.report("extension", "ext-value-type",
                     "sub-extension '" + part.url + "' of " + def.url + " takes a value of type " + part.value_names +
                         ", not " + schema_.types[value->type].name);
            w.pop(value_mark);
          }
          w.pop(item_mark);
          break;
        }
      }
      w.pop(list_mark);
    }
    for (std::size_t j = 0; j < def.parts.size(); ++j) {
      if (counts[j] >= def.parts[j].min) continue;
      w.report("extension", "ext-part-required",
               "extension " + def.url + " needs its sub-extension '" + def.parts[j].url + "'");
    }
  }

  bool value_type_allowed(const std::vector<std::uint32_t>& types, std::uint32_t type) const {
    for (std::uint32_t allowed : types)
      if (schema_.is_a(type, allowed)) return true;  // Age is a Quantity
    return false;
  }

  bool context_allows(const fhir::ExtensionDef& def, const Container& holder) const {
    if (holder.element_key != fhir::none)
      for (std::uint32_t key : def.element_keys)
        if (key == holder.element_key) return true;
    for (std::uint32_t type : def.context_types)
      if (schema_.is_a(holder.type, type)) return true;
    return false;
  }

  // ref-1: "#id" must name a resource in the container's `contained` ("#" alone is the container).
  void check_local_reference(const Value& ref, Walk& w) const {
    const Value* target = find_string(ref, "reference");
    if (!target || target->GetStringLength() < 2 || target->GetString()[0] != '#' || !w.container) return;
    if (w.container->contains(view(*target).substr(1))) return;
    w.report("invariant", "ref-1",
             "local reference " + describe(*target) +
                 " does not match the id of any contained resource: contain it or reference it by URL");
  }

  static const char* strength_name(fhir::BindingStrength strength) {
    switch (strength) {
      case fhir::BindingStrength::required: return "required";
      case fhir::BindingStrength::extensible: return "extensible";
      case fhir::BindingStrength::preferred: return "preferred";
    }
    return "required";
  }

  // "the extensible value set 'Identifier Type Codes' (http://...)"
  static std::string value_set_phrase(const fhir::ValueSet& vs, fhir::BindingStrength strength) {
    std::string phrase = "the " + std::string(strength_name(strength)) + " value set ";
    if (!vs.display.empty()) phrase += "'" + vs.display + "' (" + vs.url + ")";
    else phrase += vs.url;
    return phrase;
  }

  static std::string systems_phrase(const fhir::ValueSet& vs) {
    std::string s = "its systems: ";
    for (std::size_t i = 0; i < vs.systems.size(); ++i) s += (i ? ", " : "") + vs.systems[i];
    return s;
  }

  void report_code(std::string_view code, const fhir::ValueSet& vs, fhir::BindingStrength strength, Walk& w) const {
    bool required = strength == fhir::BindingStrength::required;
    std::string why = "code \"" + std::string(code) + "\" is not in " + value_set_phrase(vs, strength);
    const auto& codes = vs.all_codes.keys();
    if (codes.size() <= 20) {
      why += " (allowed: ";
      for (std::size_t i = 0; i < codes.size(); ++i) why += (i ? ", " : "") + codes[i];
      why += ")";
    }
    if (!required) why += ": use one of its codes when one fits";
    w.report("code-invalid", "fhir-binding", std::move(why), required ? Severity::error : Severity::warning);
  }

  // Extensible and preferred bindings: codes from elsewhere are allowed, so a warning only, and
  // text alone (no code fits) is fine. Silent when any coding is in the set.
  void check_open_binding(const Value& v, std::string_view type, const fhir::ValueSet& vs,
                          fhir::BindingStrength strength, Walk& w) const {
    const Value* first = nullptr;  // the first coding with a code
    if (type == "Coding") {
      Fit fit = coding_fit(v, vs);
      if (fit == Fit::silent || fit == Fit::in_set) return;
      first = &v;
    } else {
      auto codings = v.FindMember("coding");
      if (codings == v.MemberEnd() || !codings->value.IsArray()) return;
      for (auto& c : codings->value.GetArray()) {
        Fit fit = coding_fit(c, vs);
        if (fit == Fit::in_set) return;
        if (fit != Fit::silent && !first) first = &c;
      }
      if (!first) return;
    }
    if (w.out.size() >= w.limit) return w.report("code-invalid", "fhir-binding", {}, Severity::warning);
    const Value* system = find_string(*first, "system");
    std::string coded = (system ? describe(*system) + " " : std::string()) + describe(*find_string(*first, "code"));
    std::string why = (type == "Coding" ? "the coding " + coded + " is not" : "no coding is") + std::string(" from ") +
                      value_set_phrase(vs, strength) + " (" + systems_phrase(vs) + ")" +
                      (type == "Coding" ? std::string() : "; first coding: " + coded) + ": use a code from it when one fits";
    w.report("code-invalid", "fhir-binding", std::move(why), Severity::warning);
  }

  // How one coding stands against a required value set.
  enum class Fit { silent, in_set, wrong_code, wrong_system };

  // A coding without a code says nothing about the binding. Without a system the code is
  // taken as meant from the set when any of its systems has it.
  static Fit coding_fit(const Value& coding, const fhir::ValueSet& vs) {
    if (!coding.IsObject()) return Fit::silent;
    const Value* code = find_string(coding, "code");
    if (!code) return Fit::silent;
    const Value* system = find_string(coding, "system");
    if (!system) return vs.all_codes.contains(view(*code)) ? Fit::in_set : Fit::wrong_code;
    for (std::uint32_t i = 0; i < vs.systems.size(); ++i)
      if (vs.systems[i] == view(*system))
        return vs.codes_by_system[i].contains(view(*code)) ? Fit::in_set : Fit::wrong_code;
    return Fit::wrong_system;
  }

  void report_coding(const Value& coding, Fit fit, const fhir::ValueSet& vs, Walk& w) const {
    if (fit == Fit::wrong_code) {
      const Value* code = find_string(coding, "code");
      std::size_t mark = w.push("code");
      report_code(code ? view(*code) : std::string_view{}, vs, fhir::BindingStrength::required, w);
      w.pop(mark);
      return;
    }
    std::string why = "code system " + describe(*find_string(coding, "system")) + " is not used by " +
                      value_set_phrase(vs, fhir::BindingStrength::required) + " (" + systems_phrase(vs) + ")";
    std::size_t mark = w.push("system");
    w.report("code-invalid", "fhir-binding", std::move(why));
    w.pop(mark);
  }

  void check_coding(const Value& coding, const fhir::ValueSet& vs, Walk& w) const {
    Fit fit = coding_fit(coding, vs);
    if (fit == Fit::wrong_code || fit == Fit::wrong_system) report_coding(coding, fit, vs, w);
  }

  // FHIR: a required-bound CodeableConcept needs a coding from the set; text alone is not a
  // substitute. Passes when any coding is in the set; else names each coded one. A concept with
  // no code but an extension (e.g. data-absent-reason) is left alone.
  void check_codeable_concept(const Value& cc, const fhir::ValueSet& vs, Walk& w) const {
    auto codings = cc.FindMember("coding");
    bool coded = false;
    if (codings != cc.MemberEnd() && codings->value.IsArray()) {
      for (auto& c : codings->value.GetArray()) {
        Fit fit = coding_fit(c, vs);
        if (fit == Fit::in_set) return;
        coded |= fit != Fit::silent;
      }
    }
    if (!coded) {
      if (!cc.HasMember("extension") && cc.MemberCount() > 0)
        w.report("code-invalid", "fhir-binding",
                 "no coding with a code: " + value_set_phrase(vs, fhir::BindingStrength::required) +
                     " needs a coding from it (text alone is not enough)");
      return;
    }
    std::size_t mark = w.push("coding");
    auto& list = codings->value;
    for (rapidjson::SizeType i = 0; i < list.Size(); ++i) {
      Fit fit = coding_fit(list[i], vs);
      if (fit == Fit::silent) continue;
      std::size_t item = w.push_index(i);
      report_coding(list[i], fit, vs, w);
      w.pop(item);
    }
    w.pop(mark);
  }

  fhir::Schema schema_;
  std::vector<std::unique_ptr<RuleSet>> rules_;
  std::uint32_t reference_type_;  // the Reference datatype, for ref-1
};

}  // namespace

std::unique_ptr<Validator> make_structural_validator(const ValidatorSettings& settings,
                                                     std::vector<std::unique_ptr<RuleSet>> rules) {
  return std::make_unique<Engine>(fhir::Schema::load(settings.schema_dir / "fhir-r4"), std::move(rules));
}

}  // namespace tellonce
