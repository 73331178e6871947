// Looking up "#id" local references in a resource without quadratic cost, and a count of the
// validator's work that tests use to show it grows linearly with the record (not a timer).
// Header-only, internal to broker/validate. Not thread-safe: one per validate() call.
#pragma once

#include <rapidjson/document.h>

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

namespace tellonce::fhir {

// Steps of the validator's loops that depend on the record's size, on this thread. Tests read
// it before and after a call; nothing else does.
inline thread_local std::uint64_t validation_steps = 0;

// A set of strings small enough to scan, else sorted once for binary search. A record with up
// to `scan_limit` entries costs no allocation (the engine's contract for valid records).
class IdSet {
 public:
  static constexpr std::size_t scan_limit = 8;

  void add(std::string_view id) { ids_.push_back(id); }
  void freeze() { std::sort(ids_.begin(), ids_.end()); }
  bool contains(std::string_view id) const {
    ++validation_steps;
    return std::binary_search(ids_.begin(), ids_.end(), id);
  }

 private:
  std::vector<std::string_view> ids_;
};

// The ids of a container's `contained` resources, built on the first lookup that needs it.
class ContainedIds {
 public:
  explicit ContainedIds(const rapidjson::Value* container) : container_(container) {}

  bool contains(std::string_view id) {
    const rapidjson::Value* list = contained();
    if (!list) return false;
    if (list->Size() <= IdSet::scan_limit) {
      for (auto& res : list->GetArray()) {
        ++validation_steps;
        if (id_of(res) == id) return true;
      }
      return false;
    }
    if (!built_) {
      for (auto& res : list->GetArray()) {
        ++validation_steps;
        if (auto rid = id_of(res); !rid.empty()) set_.add(rid);
      }
      set_.freeze();
      built_ = true;
    }
    return set_.contains(id);
  }

 private:
  // Looked up once: a container can have very many members.
  const rapidjson::Value* contained() {
    if (looked_up_) return list_;
    looked_up_ = true;
    if (!container_ || !container_->IsObject()) return nullptr;
    auto it = container_->FindMember("contained");
    list_ = it != container_->MemberEnd() && it->value.IsArray() ? &it->value : nullptr;
    return list_;
  }
  static std::string_view id_of(const rapidjson::Value& res) {
    if (!res.IsObject()) return {};
    for (auto& m : res.GetObject())
      if (std::string_view(m.name.GetString(), m.name.GetStringLength()) == "id")
        return m.value.IsString() ? std::string_view(m.value.GetString(), m.value.GetStringLength())
                                  : std::string_view{};
    return {};
  }

  const rapidjson::Value* container_;
  const rapidjson::Value* list_ = nullptr;
  bool looked_up_ = false;
  IdSet set_;
  bool built_ = false;
};

}  // namespace tellonce::fhir
