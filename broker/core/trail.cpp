#include "broker/core/trail.hpp"

namespace tellonce {
namespace {

std::string attempt_line(const LifecycleEvent& e) {
  return "destination=" + e.destination + " attempt=" + std::to_string(e.attempt) + " " +
         attempt_outcome_text(e.partner_code, e.detail);
}

}  // namespace

std::string attempt_outcome_text(std::string_view partner_code, std::string_view detail) {
  if (partner_code.empty()) return detail.empty() ? "no response" : "no response: " + std::string(detail);
  if (detail.empty()) return std::string(partner_code);
  return std::string(partner_code) + ": " + std::string(detail);
}

std::string trail_text(const LifecycleEvent& e) {
  if (!e.legacy_text.empty())  // an older store's words; a delivery row still names its destination
    return e.destination.empty() ? e.legacy_text
                                 : "destination=" + e.destination + " attempt=" + std::to_string(e.attempt) + " " +
                                       e.legacy_text;
  switch (e.kind) {
    case EventKind::received:
      return "source=" + e.source + " channel=" + e.channel +
             (e.original_content_type.empty()
                  ? std::string()
                  : " sent_as=" + e.original_content_type + " sent_bytes=" + std::to_string(e.original_bytes) +
                        " converted_to=" + e.content_type) +
             (e.original_content_type.empty() ? " content_type=" + e.content_type : std::string()) +
             " bytes=" + std::to_string(e.bytes) + " sha256=" + e.content_hash +
             (e.idempotency_key.empty() ? "" : " idempotency_key=" + e.idempotency_key);
    case EventKind::validated:
      return e.warnings.empty() ? std::string("no warnings")
                                : std::to_string(e.warnings.size()) + " warning(s): " + join(e.warnings, "; ");
    case EventKind::routed:
      return "routes=" + join(e.routes, ",") + " destinations=" + join(e.destinations, ",");
    case EventKind::unroutable:
      if (!e.destinations.empty())  // every destination withheld (the store lists them here)
        return "routes " + join(e.routes, ",") + " matched; nothing delivered: every destination (" +
               join(e.destinations, ",") + ") withheld by consent";
      return e.routes.empty() ? std::string("no route matched")
                              : "routes " + join(e.routes, ",") + " matched but named no destination";
    case EventKind::duplicate:
      return "idempotency_key=" + e.idempotency_key + " from " + e.source + " submitted again" +
             (e.same_content ? "" : " with different content sha256=" + e.content_hash) +
             "; answered with this message";
    case EventKind::attempt:
      return attempt_line(e) + " (" + (e.outcome == DeliveryOutcome::retryable ? "retryable, " : "") +
             "will retry at " + std::to_string(e.next_attempt_ms) + ")";
    case EventKind::delivered:
      return attempt_line(e);
    case EventKind::dead:
      return attempt_line(e) + " (gave up after " + std::to_string(e.attempt) + " attempt(s))";
    case EventKind::replayed:
      return "destinations=" + join(e.destinations, ",") + (e.actor.empty() ? "" : " by " + e.actor);
    case EventKind::held:
      return attempt_line(e) + " (held until the partner collects it)";
    case EventKind::expired:
      return attempt_line(e) + " (expired: not acknowledged in time; replay sends it again)";
    case EventKind::withheld:
      return "destination=" + e.destination + " withheld by consent: " + e.detail;
    case EventKind::viewed:
      return (e.detail.empty() ? std::string("body") : e.detail) + " viewed by " + e.actor + ", reason: " + e.reason;
  }
  return {};
}

std::string last_error_text(const DeliveryView& d) {
  if (!d.legacy_last_error.empty()) return d.legacy_last_error;
  if (!d.last_outcome || *d.last_outcome == DeliveryOutcome::ok || *d.last_outcome == DeliveryOutcome::held) return {};
  return attempt_outcome_text(d.last_partner_code, d.last_detail);
}

}  // namespace tellonce
