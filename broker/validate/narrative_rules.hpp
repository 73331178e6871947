// What FHIR allows inside Narrative.div (txt-1, R4 narrative.html#xhtml): the basic HTML 4.0
// formatting elements and their attributes, no scripts, no event handlers, no forms or embedded
// objects, images only from inside the resource (#id or data:), and "#id" links that land on
// something. Internal to broker/validate; called by the FHIR invariants once per resource with a
// text.div. Thread-safe; reads the text in one pass and allocates only for anchors and issues.
#pragma once

#include "tellonce/error.hpp"

#include <rapidjson/document.h>

#include <string>
#include <vector>

namespace tellonce::fhir {

// `resource` is the resource holding `text.div` (its contained ids are link targets too);
// `path` its location ("Patient", "Bundle.entry[0].resource"). The links of a Bundle entry's
// narrative are left to check_bundle_narrative_links().
void check_narrative(const rapidjson::Value& resource, const std::string& path, std::vector<Issue>& out);

// The "#x" links in the narratives of a Bundle's entries: besides the entry's own ids, names
// and contained resources, they may land on another entry, by its id or as Type_id or Type/id
// (how renderers of Bundles, the IG publisher among them, anchor each entry).
void check_bundle_narrative_links(const rapidjson::Value& bundle, const std::string& path, std::vector<Issue>& out);

}  // namespace tellonce::fhir
