// Decides which partners get a record, from the routes in the configuration.
#pragma once

#include <rapidjson/document.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tellonce {

struct Config;

struct RouteInput {
  std::string_view source;                  // partner id
  const rapidjson::Value& record;           // the parsed resource or Bundle
  std::string_view event;                   // MessageHeader.eventCoding "system|code", or empty
};

struct RouteMatch {
  std::string route_id;
  std::vector<std::string> destinations;   // partner ids, in route order
};

class Router {
 public:
  virtual ~Router() = default;
  // Every route that matches, in config order. No match: the record is unroutable.
  virtual std::vector<RouteMatch> route(const RouteInput& in) const = 0;
  // Per-partner authorisation (partners[].may): why `source` may not send this record on
  // `channel` (`types`: the record's type and its Bundle entries'; `event` as in RouteInput),
  // or empty when it may. The default allows everything.
  virtual std::string refusal(std::string_view source, std::string_view channel,
                              const std::vector<std::string>& types, std::string_view event) const {
    (void)source, (void)channel, (void)types, (void)event;
    return {};
  }
};

// Compiles the config's routes once (paths split into segments); the router keeps no
// reference to the Config.
std::unique_ptr<Router> make_router(const Config& config);

// Facts read off a record that routing and ordering need.
struct RecordFacts {
  std::string resource_type;               // top-level resourceType
  std::string event;                       // "system|code" of MessageHeader.eventCoding
  std::string patient_key;                 // NHS number, else subject/patient reference, else ""
  std::vector<std::string> contained_types;  // types of the record and of its Bundle entries
};
RecordFacts read_record_facts(const rapidjson::Value& record);

// Union of destinations over matches, first occurrence order, no duplicates.
std::vector<std::string> destinations_of(const std::vector<RouteMatch>& matches);

}  // namespace tellonce
