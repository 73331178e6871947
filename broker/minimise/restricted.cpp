#include "broker/minimise/restricted.hpp"

#include "tellonce/json.hpp"

#include <array>

namespace tellonce {

namespace {

constexpr std::string_view confidentiality_system = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";

// Calls f on the record, every Bundle entry's resource and every contained resource, nested.
template <class F>
void each_resource(rapidjson::Value& r, F& f, int depth = 0) {
  if (!r.IsObject() || depth > 16) return;
  f(r);
  for (const char* child : {"entry", "contained"}) {
    auto it = r.FindMember(child);
    if (it == r.MemberEnd() || !it->value.IsArray()) continue;
    for (auto& item : it->value.GetArray()) {
      if (std::string_view(child) == "contained") {
        each_resource(item, f, depth + 1);
      } else if (item.IsObject()) {
        auto res = item.FindMember("resource");
        if (res != item.MemberEnd()) each_resource(res->value, f, depth + 1);
      }
    }
  }
}

bool tagged_restricted(const rapidjson::Value& r) {
  const auto* meta = json_member(r, "meta");
  const auto* security = meta ? json_member(*meta, "security") : nullptr;
  if (!security || !security->IsArray()) return false;
  for (const auto& c : security->GetArray())
    if (json_string(json_member(c, "system")) == confidentiality_system && json_string(json_member(c, "code")) == "R")
      return true;
  return false;
}

// Removes member `name`; returns how many items it held (1 for a non-array).
long remove(rapidjson::Value& obj, const char* name) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd()) return 0;
  long n = it->value.IsArray() ? static_cast<long>(it->value.Size()) : 1;
  obj.RemoveMember(it);
  return n;
}

constexpr std::array<std::string_view, 3> locating_extensions = {"NominatedPharmacy", "PreferredDispenserOrganization",
                                                                 "MedicalApplianceSupplier"};

}  // namespace

// Searched by its capital C: string_view::find looks for a needle's first byte with memchr,
// and a capital C is rare in FHIR JSON, so the scan runs at memchr speed (ten times glibc's
// memmem on bench/load's bodies, which profiled at about 1 us a delivered record).
bool may_be_restricted(std::string_view body) {
  static constexpr std::string_view prefix = "v3-", rest = "Confidentiality";
  for (auto at = body.find(rest, prefix.size()); at != std::string_view::npos; at = body.find(rest, at + 1))
    if (body.substr(at - prefix.size(), prefix.size()) == prefix) return true;
  return false;
}

bool is_restricted(const rapidjson::Value& record) {
  bool found = false;
  auto check = [&found](rapidjson::Value& r) { found = found || tagged_restricted(r); };
  each_resource(const_cast<rapidjson::Value&>(record), check);  // read only
  return found;
}

std::string LocatingRemoved::describe() const {
  std::string out;
  auto add = [&out](long n, std::string_view what) {
    if (n == 0) return;
    out += (out.empty() ? "" : ", ") + std::to_string(n) + " " + std::string(what);
  };
  add(addresses, "address(es)");
  add(telecoms, "telecom(s)");
  add(practices, "generalPractitioner reference(s)");
  add(contacts, "contact(s) left without details");
  add(extensions, "pharmacy/supplier extension(s)");
  return out.empty() ? "nothing" : out;
}

LocatingRemoved strip_locating_details(rapidjson::Value& record) {
  LocatingRemoved n;
  auto strip = [&n](rapidjson::Value& r) {
    auto type = json_string(json_member(r, "resourceType"));
    if (type != "Patient" && type != "RelatedPerson") return;
    n.addresses += remove(r, "address");
    n.telecoms += remove(r, "telecom");
    if (type != "Patient") return;
    n.practices += remove(r, "generalPractitioner");
    auto contacts = r.FindMember("contact");
    if (contacts != r.MemberEnd() && contacts->value.IsArray()) {
      auto& list = contacts->value;
      for (auto c = list.Begin(); c != list.End();) {
        if (c->IsObject()) {
          n.addresses += remove(*c, "address");
          n.telecoms += remove(*c, "telecom");
          if (!c->HasMember("name") && !c->HasMember("organization")) {
            c = list.Erase(c);
            ++n.contacts;
            continue;
          }
        }
        ++c;
      }
      if (list.Empty()) r.RemoveMember("contact");
    }
    auto ext = r.FindMember("extension");
    if (ext != r.MemberEnd() && ext->value.IsArray()) {
      auto& list = ext->value;
      for (auto e = list.Begin(); e != list.End();) {
        auto url = json_string(json_member(*e, "url"));
        bool locating = false;
        for (auto l : locating_extensions) locating = locating || url.find(l) != std::string_view::npos;
        if (locating) {
          e = list.Erase(e);
          ++n.extensions;
        } else {
          ++e;
        }
      }
      if (list.Empty()) r.RemoveMember("extension");
    }
  };
  each_resource(record, strip);
  return n;
}

}  // namespace tellonce
