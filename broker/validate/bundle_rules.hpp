// Rules that span a Bundle's entries (issue 14): each entry's fullUrl against its resource's
// type and id, entries that need a fullUrl, the same resource twice, references that must
// resolve inside the Bundle, and paging links (self, first, previous, next, last) at most once. Internal to broker/validate; called by the FHIR invariants once per
// Bundle. Stateless and thread-safe; allocates (an index of the entries) only for Bundles.
#pragma once

#include "tellonce/error.hpp"

#include <rapidjson/document.h>

#include <string>
#include <string_view>
#include <vector>

namespace tellonce::fhir {

// `bundle` is a Bundle resource (a JSON object), `type` its Bundle.type, `path` its location.
// Appends one issue per problem, located at the entry (Bundle.entry[2].fullUrl) or at the
// reference (Bundle.entry[1].resource.subject.reference).
void check_bundle_entries(const rapidjson::Value& bundle, std::string_view type, const std::string& path,
                          std::vector<Issue>& out);

// "urn:uuid:" followed by a UUID in its 8-4-4-4-12 hex form.
bool urn_uuid_valid(std::string_view uri);

}  // namespace tellonce::fhir
