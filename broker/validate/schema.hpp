// The FHIR R4 definitions from schemas/fhir-r4/*.json compiled for lookups on the hot path:
// every object shape (a type, or a backbone element inside one) gets a hash table keyed by
// JSON property name, so validating a member costs one hash and one compare. The core extension
// definitions (extensions.json) are compiled to numbers too: where an extension may sit is a list
// of element keys and type indexes, so checking one costs a hash of its url and a few compares.
#pragma once

#include "broker/validate/primitives.hpp"

#include <rapidjson/document.h>

#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace tellonce::fhir {

// Open-addressing string -> index table; immutable after building, so safe to share.
class NameTable {
 public:
  static constexpr std::uint32_t npos = std::numeric_limits<std::uint32_t>::max();
  void add(std::string key, std::uint32_t value);  // rebuilds the slots; build time only
  std::uint32_t find(std::string_view key) const;
  bool contains(std::string_view key) const { return find(key) != npos; }
  std::size_t size() const { return keys_.size(); }
  const std::vector<std::string>& keys() const { return keys_; }  // insertion order

 private:
  // A probe reads its slot and nothing else for keys of up to 16 bytes (most FHIR names): the
  // value, the length and the first bytes are here, not behind keys_ (two more cache misses).
  struct Slot {
    std::uint32_t index;  // into keys_, npos when empty
    std::uint32_t tag;    // high hash bits: most misses skip the string compare
    std::uint32_t value;
    std::uint32_t size;   // of the key
    char head[16];        // the key's first bytes; the rest is compared in keys_
  };
  static std::uint64_t hash(std::string_view s);
  void rehash();
  void place(std::uint32_t key_index);
  std::vector<std::string> keys_;
  std::vector<std::uint32_t> values_;
  std::vector<Slot> slots_;
};

// One of the JSON files under schemas/; throws std::runtime_error naming the file when it cannot
// be read or is not a JSON object. Start-up only.
rapidjson::Document read_schema_file(const std::filesystem::path& file);

constexpr std::uint32_t unbounded = std::numeric_limits<std::uint32_t>::max();
constexpr std::uint32_t none = std::numeric_limits<std::uint32_t>::max();

struct TypeDef {
  enum class Kind : unsigned char { primitive, complex, backbone, resource, any_resource };
  std::string name;   // FHIR type code; for backbones the declared code (BackboneElement, Element)
  Kind kind = Kind::complex;
  Primitive primitive = Primitive::string;
  std::uint32_t shape = none;  // object shape for complex, backbone and resource kinds
  std::uint32_t base = none;   // the type it specialises (Patient -> DomainResource); backbones: their declared type
  bool abstract = false;
};

// One element of a shape; a choice element ("value[x]") is one element with several properties.
struct ElementDef {
  std::string name;  // "birthDate", "value[x]"
  std::uint32_t min = 0;
  std::uint32_t max = 1;
  bool array = false;
  bool choice = false;
};

// Required bindings are errors; extensible and preferred ones only warnings.
enum class BindingStrength : unsigned char { required, extensible, preferred };

// One JSON property name accepted by a shape.
struct Property {
  std::uint32_t element = 0;    // index into Shape::elements
  std::uint32_t type = 0;       // index into Schema::types
  std::uint32_t binding = none; // index into Schema::value_sets
  BindingStrength strength = BindingStrength::required;  // of `binding`
  std::uint32_t element_key = 0;  // Shape::first_element_key + element: one number per element of every shape
  std::string location_name;    // name used in locations: "valueQuantity" for both it and "_valueQuantity"
  bool extension_part = false;  // the "_name" companion of a primitive
  // `extension` or `modifierExtension` (of Extension type): each item's definition is looked up.
  enum class ExtensionList : unsigned char { no, extension, modifier_extension } extension_list = ExtensionList::no;
};

struct Shape {
  std::string name;  // "Patient", "Patient.contact"
  bool resource = false;
  std::vector<ElementDef> elements;
  std::vector<Property> properties;
  NameTable by_json_name;  // -> properties index
  std::vector<std::uint32_t> required;  // elements with min > 0
  std::uint32_t first_element_key = 0;  // element i of this shape has key first_element_key + i
};

// A sub-extension a complex extension defines (one slice of its Extension.extension, by url).
struct ExtensionPart {
  std::string url;  // relative: "latitude"
  std::uint32_t min = 0;
  std::uint32_t max = 1;  // `unbounded` for "*"
  std::vector<std::uint32_t> value_types;  // empty: not checked
  std::string value_names;
};
constexpr std::size_t max_extension_parts = 32;  // R4 needs 6

// A core extension's definition (schemas/fhir-r4/extensions.json), compiled.
struct ExtensionDef {
  std::string url;
  std::string contexts;  // the context expressions as written, for messages: "Patient, Patient.birthDate"
  bool anywhere = false;  // context "Element": any element or resource
  std::vector<std::uint32_t> element_keys;  // elements it may sit on (a contentReference's copies included)
  std::vector<std::uint32_t> context_types;  // types it may sit on, or on any specialisation of
  bool modifier = false;
  bool complex = false;  // sub-extensions only, no value[x]
  std::vector<ExtensionPart> parts;  // complex: the sub-extensions it defines (others are allowed)
  bool nested_allowed = false;  // a simple extension that may also have sub-extensions
  std::vector<std::uint32_t> value_types;  // simple: the types value[x] may take
  std::string value_names;  // "dateTime, date", for messages
};

struct ValueSet {
  std::string url;
  std::string display;  // title, else name: "AdministrativeGender"
  std::vector<std::string> systems;
  std::vector<NameTable> codes_by_system;  // parallel to systems
  NameTable all_codes;                     // for `code` elements, which carry no system
};

struct Schema {
  std::vector<TypeDef> types;
  std::vector<Shape> shapes;
  std::vector<ValueSet> value_sets;
  NameTable types_by_name;  // named types only (not backbones)
  std::uint32_t element_shape = none;  // Element: the shape of "_name" companions
  std::uint32_t extension_type = none;  // Extension
  std::vector<ExtensionDef> extensions;
  NameTable extensions_by_url;  // -> extensions index

  // True when type `t` is `ancestor` or specialises it (SimpleQuantity -> Quantity -> Element).
  bool is_a(std::uint32_t t, std::uint32_t ancestor) const {
    for (unsigned hops = 0; t != none && hops < 16; ++hops, t = types[t].base)
      if (t == ancestor) return true;
    return false;
  }

  // Reads dir/types.json, dir/valuesets.json and, when present, dir/extensions.json; throws
  // std::runtime_error naming the file (and, for an extension context that names no element,
  // the extension).
  static Schema load(const std::filesystem::path& fhir_r4_dir);
};

// The most elements any shape has; the engine keeps per-element counters on the stack.
constexpr std::size_t max_shape_elements = 96;  // R4 needs 54 (ActivityDefinition)
constexpr std::size_t max_shape_properties = 512;  // R4 needs 295 (ElementDefinition's choices)

}  // namespace tellonce::fhir
