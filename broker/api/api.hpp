// The admin API under /api: message lookup, listing, replay and health, as JSON.
#pragma once

#include "tellonce/log.hpp"  // iso8601_utc

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace tellonce {

class HttpServer;
class Store;
class Pipeline;
class Dispatcher;
class Audit;
struct Config;

// Whether the broker can accept records now, and if not why. The one place readiness is
// decided: /api/health answers from it (200 or 503), and a later /readyz must too. Runs on the
// caller's executor; never throws.
struct Health {
  bool ok = true;
  std::vector<std::string> problems;  // operator-facing reasons; no patient data
};
boost::asio::awaitable<Health> check_health(Store& store);
std::string health_json(const Health& health);  // {"status":"ok"} or {"status":"unavailable","problems":[...]}

// Mounts /api on the server behind guard_operators (broker/api/operators.hpp): every call but
// /api/health needs an operator of config.operators. Call before the server starts. `config`
// and `dispatcher` (may be null: no pause/resume in effect, no per-destination counts) must
// outlive the server. `audit` (may be null: nothing audited) must too: replays, pauses, resumes
// and body views are on disk there before they are answered; when the audit cannot record one
// it is refused (503).
void mount_api(HttpServer& server, Store& store, Pipeline& pipeline, const Config& config,
               Dispatcher* dispatcher = nullptr, Audit* audit = nullptr);


}  // namespace tellonce
