// Outbound `mailbox`: for a partner without an endpoint. deliver() places the record in the
// partner's mailbox at once (DeliveryOutcome::held: no I/O); the partner collects it over HTTP,
// on the listener at `listen` (by default the API's, OutboundContext::api_listen), under
// /mailbox/<partner id>, authenticated with its own API key (`Authorization: Bearer <key>`):
//   GET  /mailbox/{partner}/inbox                              {"messages": [ids]}, oldest first, <= 500
//   GET  /mailbox/{partner}/inbox/{id}                         the record, with X-Tellonce-* headers
//   PUT  /mailbox/{partner}/inbox/{id}/status/acknowledged     held -> delivered on the trail
// 401 without a valid key, 403 with another partner's key, 404 for an id not in this inbox;
// every error is an OperationOutcome. A held record not acknowledged within `expire_after`
// (default 5 days) expires: a timer on the io_context marks it expired on the trail.
// With OutboundContext::audit, each collection (delivered, the partner as actor) and each expiry
// is queued on the audit log once the store has made it durable.
//
// Needs OutboundContext::http, ::partners and ::mailbox (create() throws std::logic_error
// without them). Threading: handlers run on their connection's strand, the expiry timer on the
// io_context; the store is awaited from there and resumes there. stop() cancels the timer.
#pragma once

#include "tellonce/registry.hpp"

#include <chrono>
#include <string>

namespace tellonce {

struct MailboxSettings {
  std::string listen;  // empty: the API's listen address
  std::chrono::milliseconds expire_after{5LL * 24 * 3600 * 1000};
};

// How often the expiry timer looks: a quarter of expire_after, between 250 ms and one minute.
std::chrono::milliseconds mailbox_expiry_interval(std::chrono::milliseconds expire_after);

OutboundAdapterType mailbox_outbound_type();

// The adapter itself, for tests: mounts its handler at once.
std::unique_ptr<OutboundAdapter> make_mailbox_outbound(const MailboxSettings& settings, OutboundContext& ctx);

}  // namespace tellonce
