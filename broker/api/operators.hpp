// Operators' sign-in for the admin API, the console's API calls and /metrics (issue 12).
//
// Contract:
// - guard_operators() wraps a handler: every request must carry `Authorization: Bearer <token>`
//   whose sha256 is one of an operator's token_hashes, or arrive on a TLS listener with a client
//   certificate (the server's verified X-Tellonce-Client-Cert-* headers) an operator lists.
//   None or an unknown credential: 401 with WWW-Authenticate. A role below role_needed(): 403
//   naming the role needed. Otherwise the inner handler runs with kOperatorHeader set to the
//   operator's name (any value a client sent under that name is removed first, so handlers may
//   trust it). /api/health stays open: it is a probe, with no data in it.
// - Partners' API keys and certificates are not operators' credentials: they get 401.
// - Runs on the connection's strand; `config` must outlive the handler; never blocks.
#pragma once

#include "broker/config/config.hpp"
#include "tellonce/http_server.hpp"

#include <string_view>

namespace tellonce {

// Set by guard_operators on the requests it lets through: the operator's name.
inline constexpr const char* kOperatorHeader = "X-Tellonce-Operator";

// The least role a request needs: metrics for GET /metrics; operator for bodies
// (/api/messages/{id}/body, /original) and every POST; admin for /api/config/...; viewer for
// the rest (flow, messages' metadata, destinations).
OperatorRole role_needed(http::verb method, std::string_view path);

HttpHandler guard_operators(const Config& config, HttpHandler inner);

}  // namespace tellonce
