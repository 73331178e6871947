#include "broker/validate/schema.hpp"

#include "tellonce/json.hpp"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

namespace tellonce::fhir {

// Constant time: length plus the first and last eight bytes, which covers all of most FHIR
// names; longer keys that differ only in the middle fall back to the probe's compare.
std::uint64_t NameTable::hash(std::string_view s) {
  std::uint64_t head = 0, tail = 0;
  std::size_t n = s.size();
  if (n >= 8) {
    std::memcpy(&head, s.data(), 8);
    std::memcpy(&tail, s.data() + n - 8, 8);
  } else if (n >= 4) {
    std::uint32_t a, b;
    std::memcpy(&a, s.data(), 4);
    std::memcpy(&b, s.data() + n - 4, 4);
    head = a;
    tail = b;
  } else if (n > 0) {
    head = static_cast<unsigned char>(s[0]) | static_cast<unsigned char>(s[n / 2]) << 8 |
           static_cast<unsigned char>(s[n - 1]) << 16;
  }
  std::uint64_t h = head * 0x9E3779B97F4A7C15ull ^ (tail + n) * 0xC2B2AE3D27D4EB4Full;
  return h ^ (h >> 31);
}

void NameTable::rehash() {
  std::size_t size = 8;
  while (size < keys_.size() * 2 + 2) size *= 2;
  slots_.assign(size, Slot{npos, 0, 0, 0, {}});
  for (std::uint32_t i = 0; i < keys_.size(); ++i) place(i);
}

void NameTable::place(std::uint32_t i) {
  std::uint64_t h = hash(keys_[i]);
  std::size_t mask = slots_.size() - 1, slot = h & mask;
  while (slots_[slot].index != npos) slot = (slot + 1) & mask;
  Slot& s = slots_[slot];
  s = Slot{i, static_cast<std::uint32_t>(h >> 32), values_[i], static_cast<std::uint32_t>(keys_[i].size()), {}};
  std::memcpy(s.head, keys_[i].data(), std::min(keys_[i].size(), sizeof s.head));
}

void NameTable::add(std::string key, std::uint32_t value) {
  if (find(key) != npos) return;
  keys_.push_back(std::move(key));
  values_.push_back(value);
  if (keys_.size() * 2 + 2 > slots_.size()) {
    rehash();
  } else {
    place(static_cast<std::uint32_t>(keys_.size() - 1));
  }
}

std::uint32_t NameTable::find(std::string_view key) const {
  if (slots_.empty()) return npos;
  std::uint64_t h = hash(key);
  auto tag = static_cast<std::uint32_t>(h >> 32);
  std::size_t mask = slots_.size() - 1, slot = h & mask;
  for (;;) {
    const Slot& s = slots_[slot];
    if (s.index == npos) return npos;
    if (s.tag == tag && s.size == key.size()) {
      constexpr std::size_t head = sizeof s.head;
      const std::size_t rest = key.size() > head ? key.size() - head : 0;  // beyond the slot's copy
      if (same_bytes(s.head, key.data(), key.size() - rest) &&
          (rest == 0 || same_bytes(keys_[s.index].data() + head, key.data() + head, rest)))
        return s.value;
    }
    slot = (slot + 1) & mask;
  }
}

rapidjson::Document read_schema_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read FHIR schema file " + file.string());
  std::stringstream text;
  text << in.rdbuf();
  rapidjson::Document doc;
  doc.Parse(text.str().c_str());
  if (doc.HasParseError() || !doc.IsObject()) {
    throw std::runtime_error("FHIR schema file " + file.string() + " is not valid JSON: " +
                             rapidjson::GetParseError_En(doc.GetParseError()));
  }
  return doc;
}

namespace {


const rapidjson::Value& member(const rapidjson::Value& v, const char* name, const std::string& where) {
  auto it = v.FindMember(name);
  if (it == v.MemberEnd()) throw std::runtime_error(where + ": missing \"" + name + "\"");
  return it->value;
}

std::string str(const rapidjson::Value& v) { return {v.GetString(), v.GetStringLength()}; }

class Builder {
 public:
  explicit Builder(Schema& s) : s_(s) {}

  void load_value_sets(const rapidjson::Value& sets) {
    for (auto& [url_value, vs_json] : sets.GetObject()) {
      ValueSet vs;
      vs.url = str(url_value);
      auto title = vs_json.FindMember("title");
      auto name = vs_json.FindMember("name");
      if (title != vs_json.MemberEnd() && title->value.IsString()) vs.display = str(title->value);
      else if (name != vs_json.MemberEnd() && name->value.IsString()) vs.display = str(name->value);
      for (auto& [system, codes] : member(vs_json, "systems", vs.url).GetObject()) {
        vs.systems.push_back(str(system));
        NameTable table;
        for (auto& code : codes.GetArray()) {
          table.add(str(code), 0);
          vs.all_codes.add(str(code), 0);
        }
        vs.codes_by_system.push_back(std::move(table));
      }
      value_set_index_[vs.url] = static_cast<std::uint32_t>(s_.value_sets.size());
      s_.value_sets.push_back(std::move(vs));
    }
  }

  void load_types(const rapidjson::Value& types) {
    for (auto& [name_value, def] : types.GetObject()) {
      TypeDef t;
      t.name = str(name_value);
      std::string kind = str(member(def, "kind", t.name));
      auto abstract = def.FindMember("abstract");
      t.abstract = abstract != def.MemberEnd() && abstract->value.IsTrue();
      if (kind == "primitive") {
        auto p = primitive_from_name(t.name);
        if (!p) throw std::runtime_error("primitive type " + t.name + " has no checker");
        t.kind = TypeDef::Kind::primitive;
        t.primitive = *p;
      } else if (t.name == "Resource") {
        t.kind = TypeDef::Kind::any_resource;  // as an element type it means "any resource"
      } else {
        t.kind = kind == "resource" ? TypeDef::Kind::resource : TypeDef::Kind::complex;
      }
      s_.types_by_name.add(t.name, static_cast<std::uint32_t>(s_.types.size()));
      s_.types.push_back(std::move(t));
    }
    for (auto& [name_value, def] : types.GetObject()) {
      auto base = def.FindMember("base");
      if (base == def.MemberEnd()) continue;
      std::string name = str(name_value);
      s_.types[type_named(name, name)].base = type_named(str(base->value), name);
    }
    for (auto& [name_value, def] : types.GetObject()) {
      auto elements = def.FindMember("elements");
      if (elements != def.MemberEnd()) build_shapes(str(name_value), elements->value);
    }
    // Constraint profiles (SimpleQuantity) share their base's shape and keep their own name,
    // so the rules see which profile applies.
    for (auto& [name_value, def] : types.GetObject()) {
      auto shape_of = def.FindMember("shapeOf");
      if (shape_of == def.MemberEnd()) continue;
      std::string name = str(name_value);
      s_.types[type_named(name, name)].shape = s_.types[type_named(str(shape_of->value), name)].shape;
    }
    s_.element_shape = s_.types[type_named("Element", "Element")].shape;
    s_.extension_type = type_named("Extension", "Extension");
    std::uint32_t key = 0;
    for (Shape& shape : s_.shapes) {
      shape.first_element_key = key;
      key += static_cast<std::uint32_t>(shape.elements.size());
      for (Property& p : shape.properties) {
        p.element_key = shape.first_element_key + p.element;
        const std::string& name = shape.elements[p.element].name;
        if (p.type == s_.extension_type && (name == "extension" || name == "modifierExtension"))
          p.extension_list = name == "extension" ? Property::ExtensionList::extension
                                                 : Property::ExtensionList::modifier_extension;
      }
    }
  }

  void load_extensions(const rapidjson::Value& extensions) {
    for (auto& entry : extensions.GetObject()) {
      // Named, not a structured binding: clang (the fuzz build) does not let a lambda capture those.
      const rapidjson::Value& def = entry.value;
      ExtensionDef ext;
      ext.url = str(entry.name);
      for (auto& context : member(def, "context", ext.url).GetArray()) {
        std::string expression = str(context);
        ext.contexts += (ext.contexts.empty() ? "" : ", ") + expression;
        add_context(ext, expression);
      }
      auto flag = [&](const char* name) {
        auto it = def.FindMember(name);
        return it != def.MemberEnd() && it->value.IsTrue();
      };
      ext.modifier = flag("modifier");
      ext.complex = flag("complex");
      ext.nested_allowed = flag("nested");
      read_value_types(def, ext.url, ext.value_types, ext.value_names);
      if (auto parts = def.FindMember("parts"); parts != def.MemberEnd()) {
        for (auto& part_json : parts->value.GetArray()) {
          ExtensionPart part;
          part.url = str(member(part_json, "url", ext.url));
          std::string where = ext.url + " part " + part.url;
          part.min = member(part_json, "min", where).GetUint();
          std::string max = str(member(part_json, "max", where));
          part.max = max == "*" ? unbounded : static_cast<std::uint32_t>(std::stoul(max));
          read_value_types(part_json, where, part.value_types, part.value_names);
          ext.parts.push_back(std::move(part));
        }
        if (ext.parts.size() > max_extension_parts) throw std::runtime_error(ext.url + ": too many sub-extensions");
      }
      s_.extensions_by_url.add(ext.url, static_cast<std::uint32_t>(s_.extensions.size()));
      s_.extensions.push_back(std::move(ext));
    }
  }

 private:
  std::uint32_t type_named(const std::string& name, const std::string& where) {
    std::uint32_t i = s_.types_by_name.find(name);
    if (i == NameTable::npos) throw std::runtime_error(where + ": unknown type " + name);
    return i;
  }

  std::uint32_t new_shape(std::string name, bool resource) {
    Shape shape;
    shape.name = std::move(name);
    shape.resource = resource;
    s_.shapes.push_back(std::move(shape));
    return static_cast<std::uint32_t>(s_.shapes.size() - 1);
  }

  void build_shapes(const std::string& type_name, const rapidjson::Value& elements) {
    std::uint32_t type_index = type_named(type_name, type_name);
    bool resource = s_.types[type_index].kind == TypeDef::Kind::resource ||
                    s_.types[type_index].kind == TypeDef::Kind::any_resource;
    std::uint32_t root = new_shape(type_name, resource);
    s_.types[type_index].shape = root;

    // A path with children is a backbone element with its own shape.
    std::unordered_set<std::string> parents;
    for (auto& el : elements.GetArray()) {
      std::string path = str(member(el, "path", type_name));
      for (auto dot = path.find('.'); dot != std::string::npos; dot = path.find('.', dot + 1))
        parents.insert(path.substr(0, dot));
    }
    std::unordered_map<std::string, std::uint32_t> shape_of{{"", root}};
    std::unordered_map<std::string, std::uint32_t> backbone_type_of;
    for (auto& el : elements.GetArray()) {
      std::string path = str(el["path"]);
      std::string where = type_name + "." + path;
      if (parents.count(path)) {
        TypeDef backbone;
        backbone.name = str(member(el, "type", where));
        backbone.base = type_named(backbone.name, where);
        backbone.kind = TypeDef::Kind::backbone;
        backbone.shape = new_shape(where, false);
        shape_of[path] = backbone.shape;
        backbone_type_of[path] = static_cast<std::uint32_t>(s_.types.size());
        s_.types.push_back(std::move(backbone));
      }
    }
    for (auto& el : elements.GetArray()) {
      std::string path = str(el["path"]);
      std::string where = type_name + "." + path;
      auto dot = path.rfind('.');
      std::string parent = dot == std::string::npos ? "" : path.substr(0, dot);
      std::string name = dot == std::string::npos ? path : path.substr(dot + 1);
      Shape& shape = s_.shapes[shape_of.at(parent)];

      ElementDef def;
      def.name = name;
      def.min = member(el, "min", where).GetUint();
      std::string max = str(member(el, "max", where));
      def.max = max == "*" ? unbounded : static_cast<std::uint32_t>(std::stoul(max));
      auto array = el.FindMember("array");
      def.array = array != el.MemberEnd() ? array->value.IsTrue() : max != "1";
      auto element_index = static_cast<std::uint32_t>(shape.elements.size());
      if (element_index >= max_shape_elements) throw std::runtime_error(where + ": too many elements");

      std::uint32_t binding = none;
      BindingStrength strength = BindingStrength::required;
      if (auto b = el.FindMember("binding"); b != el.MemberEnd()) {
        auto it = value_set_index_.find(str(b->value));
        if (it != value_set_index_.end()) binding = it->second;  // unexpandable sets are not checked
        if (auto st = el.FindMember("strength"); st != el.MemberEnd()) {
          std::string s = str(st->value);
          if (s == "extensible") strength = BindingStrength::extensible;
          else if (s == "preferred") strength = BindingStrength::preferred;
          else throw std::runtime_error(where + ": unknown binding strength " + s);
        }
      }
      // Element.id and Extension.url are XML attributes: JSON gives them no "_name" companion.
      bool attribute = (name == "id" && !shape.resource) || (type_name == "Extension" && path == "url");

      auto add = [&](const std::string& json_name, std::uint32_t type) {
        Property p;
        p.element = element_index;
        p.type = type;
        p.binding = binding;
        p.strength = strength;
        p.location_name = json_name;
        shape.by_json_name.add(json_name, static_cast<std::uint32_t>(shape.properties.size()));
        shape.properties.push_back(p);
        if (s_.types[type].kind == TypeDef::Kind::primitive && !attribute) {
          p.extension_part = true;
          shape.by_json_name.add("_" + json_name, static_cast<std::uint32_t>(shape.properties.size()));
          shape.properties.push_back(p);
        }
      };
      if (auto ref = el.FindMember("contentReference"); ref != el.MemberEnd()) {
        auto it = backbone_type_of.find(str(ref->value));
        if (it == backbone_type_of.end()) throw std::runtime_error(where + ": bad contentReference");
        add(name, it->second);
      } else if (auto choices = el.FindMember("choices"); choices != el.MemberEnd()) {
        def.choice = true;
        for (auto& [json_name, type] : choices->value.GetObject())
          add(str(json_name), type_named(str(type), where));
      } else if (parents.count(path)) {
        add(name, backbone_type_of.at(path));
      } else {
        add(name, type_named(str(member(el, "type", where)), where));
      }
      if (shape.properties.size() > max_shape_properties) throw std::runtime_error(where + ": too many properties");
      if (def.min > 0) shape.required.push_back(element_index);
      shape.elements.push_back(std::move(def));
    }
  }

  void read_value_types(const rapidjson::Value& def, const std::string& where, std::vector<std::uint32_t>& types,
                        std::string& names) {
    auto value = def.FindMember("value");
    if (value == def.MemberEnd()) return;
    for (auto& type : value->value.GetArray()) {
      types.push_back(type_named(str(type), where));
      names += (names.empty() ? "" : ", ") + str(type);
    }
  }

  // "Element" (anywhere), a type ("HumanName", "string", "DomainResource") or an element path
  // ("Patient.birthDate", "StructureDefinition.snapshot.element.binding.valueSet", through
  // datatypes and backbones).
  void add_context(ExtensionDef& ext, const std::string& expression) {
    std::string where = ext.url + ": context " + expression;
    auto dot = expression.find('.');
    std::uint32_t t = type_named(expression.substr(0, dot), where);
    if (dot == std::string::npos) {
      if (expression == "Element") ext.anywhere = true;
      else ext.context_types.push_back(t);
      return;
    }
    const Property* p = nullptr;
    while (dot != std::string::npos) {
      std::uint32_t shape = s_.types[t].shape;
      if (shape == none) throw std::runtime_error(where + ": " + s_.types[t].name + " has no elements");
      auto next = expression.find('.', dot + 1);
      std::string name = expression.substr(dot + 1, next == std::string::npos ? std::string::npos : next - dot - 1);
      std::uint32_t pi = s_.shapes[shape].by_json_name.find(name);
      if (pi == NameTable::npos) throw std::runtime_error(where + ": no element " + name);
      p = &s_.shapes[shape].properties[pi];
      t = p->type;
      dot = next;
    }
    ext.element_keys.push_back(p->element_key);
    // A backbone element also appears where a contentReference repeats it (Questionnaire.item.item).
    if (s_.types[p->type].kind != TypeDef::Kind::backbone) return;
    for (const Shape& shape : s_.shapes)
      for (const Property& other : shape.properties)
        if (other.type == p->type && other.element_key != p->element_key) ext.element_keys.push_back(other.element_key);
  }

  Schema& s_;
  std::unordered_map<std::string, std::uint32_t> value_set_index_;
};

}  // namespace

Schema Schema::load(const std::filesystem::path& dir) {
  Schema s;
  Builder b(s);
  auto value_sets = read_schema_file(dir / "valuesets.json");
  b.load_value_sets(member(value_sets, "valuesets", (dir / "valuesets.json").string()));
  auto types = read_schema_file(dir / "types.json");
  b.load_types(member(types, "types", (dir / "types.json").string()));
  // Optional: a hand-written schema directory may define no extensions (none are then checked).
  if (std::filesystem::exists(dir / "extensions.json")) {
    auto extensions = read_schema_file(dir / "extensions.json");
    b.load_extensions(member(extensions, "extensions", (dir / "extensions.json").string()));
  }
  return s;
}

}  // namespace tellonce::fhir
