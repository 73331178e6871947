// The admin API under /api: message lookup, listing, replay and health, as JSON.
#pragma once

#include <cstdint>
#include <string>

namespace tellonce {

class HttpServer;
class Store;
class Pipeline;
struct Config;

// Mounts /api on the server. Call before the server starts.
void mount_api(HttpServer& server, Store& store, Pipeline& pipeline, const Config& config);

// "2026-11-23T10:00:00.123Z"
std::string iso8601_utc(std::int64_t ms_since_epoch);

}  // namespace tellonce
