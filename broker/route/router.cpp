// Routes are compiled once at start-up; route() runs for every record, so it walks the
// parsed JSON in place and allocates only the matches it returns.
#include "tellonce/router.hpp"

#include "broker/config/config.hpp"
#include "broker/route/record_walk.hpp"

#include <charconv>
#include <map>
#include <optional>

namespace tellonce {

namespace {

namespace rw = record_walk;

struct EventCondition {
  std::string system;  // empty: bare code, matches any system
  std::string code;
  bool has_system = false;
};

struct CompiledValue {
  std::string text;
  std::optional<double> number;  // when the text is numeric, so 1 matches 1.0 in the record
};

struct CompiledPredicate {
  std::string resource_type;
  std::vector<std::string> fields;
  std::vector<CompiledValue> any_of;
};

struct CompiledRoute {
  std::string id;
  std::vector<std::string> resource_types;
  std::vector<std::string> sources;
  std::vector<EventCondition> events;
  std::vector<CompiledPredicate> where;
  std::vector<std::string> to;
};

std::vector<std::string> split(std::string_view path, char sep) {
  std::vector<std::string> out;
  while (true) {
    auto p = path.find(sep);
    out.emplace_back(path.substr(0, p));
    if (p == std::string_view::npos) break;
    path.remove_prefix(p + 1);
  }
  return out;
}

CompiledRoute compile(const Route& r) {
  CompiledRoute c{r.id, r.resource_types, r.sources, {}, {}, r.to};
  for (const auto& e : r.events) {
    auto bar = e.rfind('|');
    if (bar == std::string::npos) c.events.push_back({"", e, false});
    else c.events.push_back({e.substr(0, bar), e.substr(bar + 1), true});
  }
  for (const auto& w : r.where) {
    auto segments = split(w.path, '.');
    CompiledPredicate p;
    p.resource_type = segments.front();
    p.fields.assign(segments.begin() + 1, segments.end());
    for (const auto& v : w.any_of) {
      CompiledValue cv{v, std::nullopt};
      double d = 0;
      auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
      if (ec == std::errc() && end == v.data() + v.size()) cv.number = d;
      p.any_of.push_back(std::move(cv));
    }
    c.where.push_back(std::move(p));
  }
  return c;
}

bool contains(const std::vector<std::string>& list, std::string_view value) {
  for (const auto& s : list)
    if (s == value) return true;
  return false;
}

bool leaf_matches(const rapidjson::Value& v, const std::vector<CompiledValue>& any_of) {
  if (v.IsString()) {
    std::string_view s(v.GetString(), v.GetStringLength());
    for (const auto& c : any_of)
      if (c.text == s) return true;
  } else if (v.IsNumber()) {
    double d = v.GetDouble();
    for (const auto& c : any_of)
      if (c.number && *c.number == d) return true;
  } else if (v.IsBool()) {
    std::string_view s = v.GetBool() ? "true" : "false";
    for (const auto& c : any_of)
      if (c.text == s) return true;
  }
  return false;
}

// Follows fields[i..] from v, flattening arrays at every step.
bool path_matches(const rapidjson::Value& v, const CompiledPredicate& p, std::size_t i) {
  if (v.IsArray()) {
    for (const auto& item : v.GetArray())
      if (path_matches(item, p, i)) return true;
    return false;
  }
  if (i == p.fields.size()) return leaf_matches(v, p.any_of);
  const auto* next = rw::member(v, p.fields[i]);
  return next && path_matches(*next, p, i + 1);
}

bool predicate_holds(const rapidjson::Value& record, const CompiledPredicate& p) {
  auto check = [&p](const rapidjson::Value& resource) {
    return rw::resource_type(resource) == p.resource_type && path_matches(resource, p, 0);
  };
  return rw::visit_resources(record, check);
}

bool type_matches(const rapidjson::Value& record, const std::vector<std::string>& types) {
  if (types.empty()) return true;
  auto listed = [&types](const rapidjson::Value& resource) { return contains(types, rw::resource_type(resource)); };
  return rw::visit_resources(record, listed);
}

bool event_matches(std::string_view event, const std::vector<EventCondition>& events) {
  if (events.empty()) return true;
  if (event.empty()) return false;
  auto bar = event.rfind('|');
  std::string_view system = bar == std::string_view::npos ? std::string_view{} : event.substr(0, bar);
  std::string_view code = bar == std::string_view::npos ? event : event.substr(bar + 1);
  for (const auto& e : events) {
    if (e.code != code) continue;
    if (!e.has_system || e.system == system) return true;
  }
  return false;
}

// A partner's `may:` compiled; an unset list allows any.
struct CompiledPermissions {
  std::optional<std::vector<std::string>> channels, resource_types;
  std::optional<std::vector<EventCondition>> events;
};

std::vector<EventCondition> compile_events(const std::vector<std::string>& events) {
  std::vector<EventCondition> out;
  for (const auto& e : events) {
    auto bar = e.rfind('|');
    if (bar == std::string::npos) out.push_back({"", e, false});
    else out.push_back({e.substr(0, bar), e.substr(bar + 1), true});
  }
  return out;
}

class ConfigRouter final : public Router {
 public:
  ConfigRouter(std::vector<CompiledRoute> routes, std::map<std::string, CompiledPermissions, std::less<>> may)
      : routes_(std::move(routes)), may_(std::move(may)) {}

  std::string refusal(std::string_view source, std::string_view channel, const std::vector<std::string>& types,
                      std::string_view event) const override {
    auto it = may_.find(source);
    if (it == may_.end()) return {};
    const auto& may = it->second;
    if (may.channels && !contains(*may.channels, channel))
      return "partner " + std::string(source) + " may not send on channel " + std::string(channel) +
             " (partners[].may.channels)";
    if (may.resource_types)
      for (const auto& t : types)
        if (!contains(*may.resource_types, t))
          return "partner " + std::string(source) + " may not send " + t + " resources (partners[].may.resource_types)";
    // A record without an event (not a FHIR message) is governed by the resource types alone.
    if (may.events && !event.empty() && (may.events->empty() || !event_matches(event, *may.events)))
      return "partner " + std::string(source) + " may not send event " + std::string(event) +
             " (partners[].may.events)";
    return {};
  }

  std::vector<RouteMatch> route(const RouteInput& in) const override {
    std::vector<RouteMatch> out;
    for (const auto& r : routes_) {
      // Cheapest conditions first: source and event are string compares, types and paths walk the record.
      if (!r.sources.empty() && !contains(r.sources, in.source)) continue;
      if (!event_matches(in.event, r.events)) continue;
      if (!type_matches(in.record, r.resource_types)) continue;
      bool all = true;
      for (const auto& p : r.where) {
        if (!predicate_holds(in.record, p)) {
          all = false;
          break;
        }
      }
      if (all) out.push_back(RouteMatch{r.id, r.to});
    }
    return out;
  }

 private:
  std::vector<CompiledRoute> routes_;
  std::map<std::string, CompiledPermissions, std::less<>> may_;  // partners with `may:`
};

}  // namespace

std::unique_ptr<Router> make_router(const Config& config) {
  std::vector<CompiledRoute> routes;
  routes.reserve(config.routes.size());
  for (const auto& r : config.routes) routes.push_back(compile(r));
  std::map<std::string, CompiledPermissions, std::less<>> may;
  for (const auto& p : config.partners) {
    if (!p.may) continue;
    CompiledPermissions c{p.may->channels, p.may->resource_types, std::nullopt};
    if (p.may->events) c.events = compile_events(*p.may->events);
    may.emplace(p.id, std::move(c));
  }
  return std::make_unique<ConfigRouter>(std::move(routes), std::move(may));
}

std::vector<std::string> destinations_of(const std::vector<RouteMatch>& matches) {
  std::vector<std::string> out;
  for (const auto& m : matches)
    for (const auto& d : m.destinations)
      if (!contains(out, d)) out.push_back(d);
  return out;
}

}  // namespace tellonce
