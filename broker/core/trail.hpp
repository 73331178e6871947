// The trail in words: the one place that turns a message's lifecycle events (facts, as the
// Store returns them) into the text people read in the API and `tellonce message`.
// Pure functions of their arguments: thread-safe, no I/O, nothing kept.
#pragma once

#include "tellonce/message.hpp"

#include <string>

namespace tellonce {

// What an attempt came to: "HTTP 503: reason", "ACK AE: reason", or "no response: <transport
// error>" when the partner answered nothing (empty partner_code).
std::string attempt_outcome_text(std::string_view partner_code, std::string_view detail);

// One event as a line of the trail, without its time and kind (for example, an attempt:
// "destination=gp-a attempt=2 HTTP 503: busy (retryable, will retry at 1714557600000)").
// An event an older store kept as text (legacy_text) is shown as that text.
std::string trail_text(const LifecycleEvent& event);

// A delivery's last failure in words ("" when its last attempt succeeded or none was made).
std::string last_error_text(const DeliveryView& delivery);

}  // namespace tellonce
