// Private to the router: allocation-free reads over a parsed FHIR record.
#pragma once

#include <rapidjson/document.h>

#include <cstring>
#include <string_view>

namespace tellonce::record_walk {

inline const rapidjson::Value* member(const rapidjson::Value& obj, std::string_view name) {
  if (!obj.IsObject()) return nullptr;
  for (auto m = obj.MemberBegin(); m != obj.MemberEnd(); ++m) {
    if (m->name.GetStringLength() == name.size() && std::memcmp(m->name.GetString(), name.data(), name.size()) == 0)
      return &m->value;
  }
  return nullptr;
}

inline std::string_view text(const rapidjson::Value* v) {
  if (!v || !v->IsString()) return {};
  return {v->GetString(), v->GetStringLength()};
}

inline std::string_view text_at(const rapidjson::Value& obj, std::string_view name) { return text(member(obj, name)); }

inline std::string_view resource_type(const rapidjson::Value& resource) { return text_at(resource, "resourceType"); }

inline bool is_bundle(const rapidjson::Value& resource) { return resource_type(resource) == "Bundle"; }

// Calls f(resource) for the record and, for Bundles, every entry's resource (nested Bundles too).
template <class F>
bool visit_resources(const rapidjson::Value& record, F& f, int depth = 0) {
  if (!record.IsObject()) return false;
  if (f(record)) return true;
  if (depth > 8 || !is_bundle(record)) return false;
  const auto* entries = member(record, "entry");
  if (!entries || !entries->IsArray()) return false;
  for (const auto& e : entries->GetArray()) {
    if (const auto* r = member(e, "resource"); r && visit_resources(*r, f, depth + 1)) return true;
  }
  return false;
}

}  // namespace tellonce::record_walk
