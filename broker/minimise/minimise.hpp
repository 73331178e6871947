// Data minimisation per destination: named allow-lists of FHIR element paths (config
// `minimisation:`), compiled once against the shipped FHIR R4 definitions, and applied to a
// record just before it is handed to the destination's outbound adapter, whatever the adapter.
//
// What a list keeps, for each resource whose type it names:
// - resourceType, id, meta, implicitRules and language always (they carry no patient data and
//   implicitRules changes how the rest is read);
// - each listed element whole ("Patient.name"), or only the listed parts of it
//   ("Patient.contact.name"); a choice element by its base name ("Observation.value[x]" or
//   "Observation.value": every type) or one type ("Observation.valueQuantity"); a primitive's
//   "_name" extension companion with it; extensions only where `extension` is listed;
// - `contained` when "<Type>.contained" is listed, each contained resource then filtered by
//   its own type's paths (a contained resource of a type the list does not name is removed).
// A resource of a type the list does not name is removed whole. A Bundle is the message's
// structure and is kept, each entry's resource filtered by its own type; an entry whose
// resource is removed goes, and so do MessageHeader.focus references to it. A MessageHeader
// is kept whole unless the list names MessageHeader paths.
//
// A list that would remove an element FHIR requires (min > 0 in the definitions: Observation.status,
// Task.intent; inside a partly kept element, that element's own required parts) is refused with
// file, line and path; so is a path FHIR does not have. Whatever passes is validated again
// after filtering (invariants and profile rules may still fail) and never sent when invalid.
//
// Several lists on one delivery (the partner's and those of routes that made it): an element is
// kept only when every list keeps it (the intersection: the stricter wins).
//
// Threading: compiled at start-up; an AllowList and a Minimiser are immutable afterwards and
// may be used from any thread at once. Errors: config problems are values (ConfigProblem);
// apply() never throws for a record, its refusals are outcomes.
#pragma once

#include "broker/config/config.hpp"
#include "tellonce/json.hpp"
#include "tellonce/message.hpp"
#include "tellonce/store.hpp"
#include "tellonce/validator.hpp"

#include <boost/asio/awaitable.hpp>
#include <rapidjson/document.h>

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tellonce {

namespace fhir {
struct Schema;
}

// A compiled allow-list.
class AllowList {
 public:
  struct Node;  // what to keep of one object (defined in minimise.cpp)

  const std::string& id() const { return id_; }
  // Filters `record` (a resource or a Bundle) in place, allocating from `alloc`. Returns the
  // number of elements removed (an array item, a property, a Bundle entry or a reference each
  // count one; the "_name" companion of a removed "name" does not count again), or -1 when
  // nothing of the record may be sent (its type is not on the list). `modifier_removed` is set
  // when a modifierExtension was removed from something kept.
  long filter(rapidjson::Value& record, rapidjson::Document::AllocatorType& alloc, bool& modifier_removed) const;

  AllowList();
  ~AllowList();
  AllowList(AllowList&&) noexcept;

 private:
  friend class AllowListCompiler;
  std::string id_;
  std::deque<Node> nodes_;  // stable addresses; each resource node's children point into it
  std::map<std::string, const Node*, std::less<>> by_type_;
  bool filter_resource(rapidjson::Value& resource, rapidjson::Document::AllocatorType& alloc, long& removed,
                       bool& modifier_removed) const;
};

struct CompiledMinimisation {
  std::map<std::string, std::shared_ptr<const AllowList>, std::less<>> lists;  // by id
  std::vector<ConfigProblem> problems;  // non-empty: refuse the config
};

// Compiles every list of config.minimisation against `schema` (schemas/fhir-r4). Problems carry
// the config file, the path's line and its config path.
CompiledMinimisation compile_minimisation(const Config& config, const fhir::Schema& schema);
// The same, loading the definitions from the config's validation.schema_dir (or `default_schema_dir`).
// A definitions file that cannot be read is a problem too (check-config, start-up).
CompiledMinimisation compile_minimisation(const Config& config, const std::filesystem::path& default_schema_dir);

// How minimising one delivery ended.
struct MinimiseOutcome {
  enum class Kind {
    unchanged,  // no list applies to this delivery: send the body as it is
    minimised,  // send `body`; `note` goes on the trail
    refused,    // never send: `note` says why (the list keeps none of it, or the result is invalid)
    retry,      // could not tell which routes made the delivery (store unavailable): try later
  };
  Kind kind = Kind::unchanged;
  std::string body;
  std::string note;  // never quotes the record's values
};

// Every list that applies to one destination: its partner's, and those of routes to it (which
// apply only to deliveries those routes made: read from the store's trail of the message).
class Minimiser {
 public:
  // `validator` and `store` must outlive the Minimiser; `store` is read only when a route list
  // applies to this destination.
  // `strip_restricted`: the partner is not entitled to restricted records, so their locating
  // details are removed first (broker/minimise/restricted.hpp); a body that cannot be restricted
  // (may_be_restricted) is not parsed for it.
  Minimiser(std::shared_ptr<const AllowList> partner_list,
            std::map<std::string, std::shared_ptr<const AllowList>> route_lists, const Validator& validator,
            Store& store, JsonLimits limits = {}, bool strip_restricted = false);
  // Parses the job's body once, filters it by every applying list, validates and serialises it.
  // Resumes on the caller's executor.
  asio::awaitable<MinimiseOutcome> apply(const DeliveryJob& job) const;
  // The same when the applying lists are already known (tests; apply() after the store read).
  MinimiseOutcome apply_lists(std::string_view body, const std::vector<const AllowList*>& lists) const;

 private:
  std::shared_ptr<const AllowList> partner_list_;
  std::map<std::string, std::shared_ptr<const AllowList>> route_lists_;  // route id -> list
  const Validator& validator_;
  Store& store_;
  JsonLimits limits_;
  bool strip_restricted_ = false;
};

// The Minimiser of each partner some list applies to, or that is not entitled to restricted
// records (`restricted_records`) (partners without one are not in the map:
// their deliveries are never parsed), from config.allow_lists (compiled by load_config).
std::map<std::string, std::shared_ptr<const Minimiser>> make_minimisers(const Config& config, const Validator& validator,
                                                                         Store& store, JsonLimits limits);

}  // namespace tellonce
