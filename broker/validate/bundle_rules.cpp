// Rules across a Bundle's entries. Resolution follows FHIR R4 "Resolving references in Bundles"
// (bundle.html#references), leniently: a relative reference is taken as resolved by any entry
// with that type and id, whatever its base, so that only references nothing in the Bundle can
// answer are reported.
#include "broker/validate/bundle_rules.hpp"

#include "broker/validate/contained_ids.hpp"
#include "tellonce/json.hpp"

#include <algorithm>
#include <optional>
#include <tuple>

namespace tellonce::fhir {
namespace {

using rapidjson::Value;

std::string_view view(const Value& v) { return {v.GetString(), v.GetStringLength()}; }
std::string_view str_at(const Value& v, std::string_view name) { return json_string(json_member(v, name)); }

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// A URL or relative reference of the RESTful form [base/]Type/id[/_history/version].
struct RestfulUrl {
  std::string_view base;  // up to and including the '/' before Type; empty when relative
  std::string_view type;
  std::string_view id;
  std::string_view version;
};

bool id_like(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s)
    if (!is_alpha(c) && !(c >= '0' && c <= '9') && c != '-' && c != '.') return false;
  return true;
}

std::optional<RestfulUrl> restful(std::string_view s) {
  RestfulUrl r;
  if (auto h = s.find("/_history/"); h != std::string_view::npos) {
    r.version = s.substr(h + 10);
    s = s.substr(0, h);
  }
  auto slash = s.rfind('/');
  if (slash == std::string_view::npos || slash == 0) return std::nullopt;
  r.id = s.substr(slash + 1);
  auto type_start = s.rfind('/', slash - 1);
  type_start = type_start == std::string_view::npos ? 0 : type_start + 1;
  r.type = s.substr(type_start, slash - type_start);
  r.base = s.substr(0, type_start);
  if (r.type.empty() || !(r.type[0] >= 'A' && r.type[0] <= 'Z') || !id_like(r.id)) return std::nullopt;
  for (char c : r.type)
    if (!is_alpha(c)) return std::nullopt;
  return r;
}

bool absolute(std::string_view s) { return s.find(':') != std::string_view::npos; }

void report(std::vector<Issue>& out, const char* code, const char* rule, std::string location, std::string text) {
  out.push_back(Issue{Severity::error, code, std::move(text), std::move(location), rule});
}

std::string entry_path(const std::string& path, std::size_t i) {
  return path + ".entry[" + std::to_string(i) + "]";
}

struct Entry {
  std::string_view full_url;
  std::string_view type, id, version;  // of the entry's resource
  std::size_t index = 0;
};

// What the Bundle's references can resolve to, sorted for binary search.
class EntryIndex {
 public:
  explicit EntryIndex(const std::vector<Entry>& entries) : entries_(entries) {
    for (std::size_t k = 0; k < entries.size(); ++k) {
      if (!entries[k].full_url.empty()) by_url_.emplace_back(entries[k].full_url, k);
      if (!entries[k].type.empty() && !entries[k].id.empty()) by_identity_.emplace_back(entries[k].type, entries[k].id, k);
    }
    std::sort(by_url_.begin(), by_url_.end());
    std::sort(by_identity_.begin(), by_identity_.end());
  }

  // The entry `reference` names (any version), or nullptr.
  const Entry* find(std::string_view reference) const {
    ++validation_steps;
    std::string_view unversioned = reference.substr(0, reference.find("/_history/"));
    auto u = std::lower_bound(by_url_.begin(), by_url_.end(), std::pair{unversioned, std::size_t{0}});
    if (u != by_url_.end() && u->first == unversioned) return &entries_[u->second];
    if (auto r = restful(reference)) {
      auto i = std::lower_bound(by_identity_.begin(), by_identity_.end(), std::tuple{r->type, r->id, std::size_t{0}});
      if (i != by_identity_.end() && std::get<0>(*i) == r->type && std::get<1>(*i) == r->id) {
        const Entry& e = entries_[std::get<2>(*i)];
        // An absolute URL names that server's resource: only an entry with the same base is it.
        if (r->base.empty() || restful_base(e) == r->base) return &e;
      }
    }
    return nullptr;
  }

 private:
  static std::string_view restful_base(const Entry& e) {
    auto r = restful(e.full_url);
    return r ? r->base : std::string_view{};
  }

  const std::vector<Entry>& entries_;
  std::vector<std::pair<std::string_view, std::size_t>> by_url_;
  std::vector<std::tuple<std::string_view, std::string_view, std::size_t>> by_identity_;
};

void check_identity(const Entry& e, const Value& entry, const std::string& path, std::string_view bundle_type,
                    std::vector<Issue>& out) {
  const bool full_url_optional = bundle_type == "transaction" || bundle_type == "transaction-response" ||
                                 bundle_type == "batch" || bundle_type == "batch-response";
  if (e.full_url.empty()) {
    if (!full_url_optional && !json_member(entry, "fullUrl"))
      report(out, "required", "bundle-fullurl-required", entry_path(path, e.index),
             "entry has a resource but no fullUrl: except in transactions and batches, each entry needs a "
             "fullUrl, the identity of its resource (urn:uuid:... or the resource's URL)");
    return;
  }
  std::string_view url = e.full_url;
  if (url.starts_with("urn:uuid:")) {
    if (!urn_uuid_valid(url))
      report(out, "value", "bundle-fullurl", entry_path(path, e.index) + ".fullUrl",
             "fullUrl '" + std::string(url) + "' is not a valid urn:uuid (urn:uuid: then 8-4-4-4-12 hex digits)");
    return;
  }
  if (!absolute(url) || url.starts_with("urn:")) return;
  auto r = restful(url);
  if (!r || e.type.empty()) return;
  if (r->type != e.type) {
    report(out, "invalid", "bundle-fullurl", entry_path(path, e.index) + ".fullUrl",
           "fullUrl '" + std::string(url) + "' names a " + std::string(r->type) + " but the entry's resource is a " +
               std::string(e.type) + ": the fullUrl must be the resource's own URL");
  } else if (!e.id.empty() && r->id != e.id) {
    report(out, "invalid", "bundle-fullurl", entry_path(path, e.index) + ".fullUrl",
           "fullUrl '" + std::string(url) + "' ends in id '" + std::string(r->id) + "' but the resource's id is '" +
               std::string(e.id) + "': they must agree");
  }
}

// The same resource (type and id) twice. History Bundles hold versions of one resource, so
// there only the same version twice is a duplicate.
void check_duplicates(std::vector<Entry> entries, const std::string& path, std::string_view bundle_type,
                      std::vector<Issue>& out) {
  entries.erase(std::remove_if(entries.begin(), entries.end(),
                               [](const Entry& e) { return e.type.empty() || e.id.empty(); }),
                entries.end());
  auto key = [](const Entry& e) { return std::tie(e.type, e.id, e.version, e.index); };
  std::sort(entries.begin(), entries.end(), [&](const Entry& a, const Entry& b) { return key(a) < key(b); });
  for (std::size_t k = 1; k < entries.size(); ++k) {
    const Entry& a = entries[k - 1];
    const Entry& b = entries[k];
    if (a.type != b.type || a.id != b.id || a.version != b.version) continue;
    if (bundle_type == "history" && a.version.empty()) continue;
    if (bundle_type != "history" && !a.full_url.empty() && a.full_url == b.full_url) continue;  // bdl-7 has it
    report(out, "duplicate", "bundle-duplicate-resource", entry_path(path, b.index) + ".resource",
           "the Bundle holds " + std::string(b.type) + "/" + std::string(b.id) +
               (b.version.empty() ? std::string() : " version " + std::string(b.version)) + " twice (entry[" +
               std::to_string(a.index) + "] too): a resource may appear once" +
               (bundle_type == "history" ? " per version" : std::string()));
  }
}

// Walks an entry's resource for References and checks each against the Bundle. The location
// is kept as a stack of names and indexes and spelled out only for a reference that fails.
class ReferenceCheck {
 public:
  // `self_contained`: a document, which must hold everything it refers to. `urn_local`: a
  // Bundle whose urn: references can only name its own entries (not a search result or a
  // history, which may refer to what is not on the page).
  ReferenceCheck(const EntryIndex& index, bool self_contained, bool urn_local, std::vector<Issue>& out)
      : index_(index), self_contained_(self_contained), urn_local_(urn_local), out_(out) {}

  void walk_entry(const Value& resource, std::string entry_location) {
    entry_location_ = std::move(entry_location);
    walk(resource, true);
  }

 private:
  struct Step {
    std::string_view name;  // empty for an array item
    rapidjson::SizeType index = 0;
  };

  void walk(const Value& v, bool top) {
    ++validation_steps;
    if (v.IsObject()) {
      // A Bundle inside an entry resolves its own references.
      if (!top && str_at(v, "resourceType") == "Bundle") return;
      for (auto& m : v.GetObject()) {
        std::string_view name = view(m.name);
        if (name == "reference" && m.value.IsString()) {
          steps_.push_back({name});
          check(view(m.value));
          steps_.pop_back();
        } else if (m.value.IsObject() || m.value.IsArray()) {
          steps_.push_back({name});
          walk(m.value, false);
          steps_.pop_back();
        }
      }
    } else if (v.IsArray()) {
      for (rapidjson::SizeType i = 0; i < v.Size(); ++i) {
        if (!v[i].IsObject() && !v[i].IsArray()) continue;
        steps_.push_back({{}, i});
        walk(v[i], false);
        steps_.pop_back();
      }
    }
  }

  std::string location() const {
    std::string at = entry_location_;
    for (const Step& s : steps_) {
      if (s.name.empty()) {
        at += '[';
        at += std::to_string(s.index);
        at += ']';
      } else {
        at += '.';
        at += s.name;
      }
    }
    return at;
  }

  void check(std::string_view ref) {
    if (ref.empty() || ref[0] == '#' || ref.find('?') != std::string_view::npos) return;  // local, conditional
    const bool urn = ref.starts_with("urn:");
    const Entry* target = index_.find(ref);
    if (!target) {
      if ((urn && urn_local_) || (self_contained_ && !absolute(ref)))
        report(out_, "not-found", "bundle-reference-unresolved", location(),
               "reference '" + std::string(ref) + "' does not resolve to any entry in the Bundle" +
                   (urn ? std::string(": a urn: reference must name an entry's fullUrl")
                        : std::string(": a document Bundle must contain what it refers to")));
      return;
    }
    auto h = ref.find("/_history/");
    if (h == std::string_view::npos) return;
    std::string_view wanted = ref.substr(h + 10);
    if (!target->version.empty() && target->version != wanted)
      report(out_, "not-found", "bundle-reference-version", location(),
             "reference '" + std::string(ref) + "' asks for version " + std::string(wanted) +
                 " but the Bundle holds version " + std::string(target->version) + " (entry[" +
                 std::to_string(target->index) + "])");
  }

  const EntryIndex& index_;
  bool self_contained_, urn_local_;
  std::vector<Issue>& out_;
  std::string entry_location_;
  std::vector<Step> steps_;
};

}  // namespace

bool urn_uuid_valid(std::string_view uri) {
  if (!uri.starts_with("urn:uuid:")) return false;
  std::string_view u = uri.substr(9);
  if (u.size() != 36) return false;
  for (std::size_t i = 0; i < u.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? u[i] != '-' : !is_hex(u[i])) return false;
  }
  return true;
}

// Paging and identity links name one target each: a second "next" leaves a client two pages
// to follow. Other relations (IANA's "alternate", "related"...) may repeat. Paging itself belongs
// to search results and histories: a document, message, collection or transaction is one whole,
// so a "next" page there points at nothing a receiver can make sense of.
void check_links(const Value& bundle, std::string_view type, const std::string& path, std::vector<Issue>& out) {
  const Value* links = json_member(bundle, "link");
  if (!links || !links->IsArray()) return;
  constexpr std::string_view single[] = {"self", "first", "previous", "prev", "next", "last"};
  bool seen[std::size(single)] = {};
  // A missing or unknown Bundle.type is reported on its own; its links are not judged by it.
  const bool whole = type == "document" || type == "message" || type == "collection" || type == "transaction" ||
                     type == "transaction-response" || type == "batch" || type == "batch-response";
  for (rapidjson::SizeType i = 0; i < links->Size(); ++i) {
    const Value& link = (*links)[i];
    if (!link.IsObject()) continue;
    const std::string_view relation = str_at(link, "relation");
    for (std::size_t k = 0; k < std::size(single); ++k) {
      if (relation != single[k]) continue;
      if (k > 0 && whole) {
        report(out, "invalid", "bundle-link-paging", path + ".link[" + std::to_string(i) + "].relation",
               "the link relation '" + std::string(relation) + "' pages through search results, but this is a " +
                   std::string(type) + " Bundle: only searchset and history Bundles have pages");
      } else if (seen[k]) {
        report(out, "invalid", "bundle-link-unique", path + ".link[" + std::to_string(i) + "].relation",
               "the link relation '" + std::string(relation) + "' appears more than once: a Bundle has at most one " +
                   std::string(relation) + " link");
      }
      seen[k] = true;
    }
  }
}

void check_bundle_entries(const Value& bundle, std::string_view type, const std::string& path,
                          std::vector<Issue>& out) {
  check_links(bundle, type, path, out);
  const Value* list = json_member(bundle, "entry");
  if (!list || !list->IsArray() || list->Empty()) return;
  std::vector<Entry> entries;
  entries.reserve(list->Size());
  for (rapidjson::SizeType i = 0; i < list->Size(); ++i) {
    const Value& entry = (*list)[i];
    if (!entry.IsObject()) continue;
    const Value* resource = json_member(entry, "resource");
    if (!resource || !resource->IsObject()) continue;
    Entry e;
    e.index = i;
    e.full_url = str_at(entry, "fullUrl");
    e.type = str_at(*resource, "resourceType");
    e.id = str_at(*resource, "id");
    if (const Value* meta = json_member(*resource, "meta"); meta && meta->IsObject()) e.version = str_at(*meta, "versionId");
    entries.push_back(e);
    check_identity(e, entry, path, type, out);
  }
  if (entries.size() > 1) check_duplicates(entries, path, type, out);

  // Search results and histories may refer to what is not on the page: nothing to resolve.
  const bool urn_local = type == "document" || type == "message" || type == "transaction" || type == "batch" ||
                         type == "collection";
  if (!urn_local) return;
  EntryIndex index(entries);
  ReferenceCheck references(index, type == "document", urn_local, out);
  for (const Entry& e : entries)
    references.walk_entry((*list)[static_cast<rapidjson::SizeType>(e.index)]["resource"],
                          entry_path(path, e.index) + ".resource");
}

}  // namespace tellonce::fhir
