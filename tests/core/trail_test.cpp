// The trail's words: what people read in the API's events[].detail and `tellonce message`.
#include "broker/core/trail.hpp"

#include <gtest/gtest.h>

namespace tellonce {
namespace {

LifecycleEvent attempt_event(EventKind kind, DeliveryOutcome outcome, std::string code, std::string detail) {
  LifecycleEvent e;
  e.kind = kind;
  e.destination = "gp-a";
  e.attempt = 3;
  e.outcome = outcome;
  e.partner_code = std::move(code);
  e.detail = std::move(detail);
  e.next_attempt_ms = 1700000005000;
  return e;
}

TEST(Trail, AttemptOutcomeShowsThePartnersCodeOrThatNoAnswerCame) {
  EXPECT_EQ(attempt_outcome_text("HTTP 503", "busy"), "HTTP 503: busy");
  EXPECT_EQ(attempt_outcome_text("ACK AE", ""), "ACK AE");
  EXPECT_EQ(attempt_outcome_text("", "connect: refused"), "no response: connect: refused");
  EXPECT_EQ(attempt_outcome_text("", ""), "no response");
  // The broker refused to send it (an allow-list): not a silent partner.
  EXPECT_EQ(attempt_outcome_text(kNotSent, "allow-list x keeps nothing of a Condition"),
            "not sent: allow-list x keeps nothing of a Condition");
}

TEST(Trail, AttemptsDeliveriesAndDeadLetters) {
  EXPECT_EQ(trail_text(attempt_event(EventKind::attempt, DeliveryOutcome::retryable, "HTTP 503", "busy")),
            "destination=gp-a attempt=3 HTTP 503: busy (retryable, will retry at 1700000005000)");
  // A refusal is the partner's answer, never "no response".
  EXPECT_EQ(trail_text(attempt_event(EventKind::dead, DeliveryOutcome::permanent, "ACK AE", "bad segment")),
            "destination=gp-a attempt=3 ACK AE: bad segment (gave up after 3 attempt(s))");
  EXPECT_EQ(trail_text(attempt_event(EventKind::delivered, DeliveryOutcome::ok, "HTTP 201", "")),
            "destination=gp-a attempt=3 HTTP 201");
}

TEST(Trail, MailboxHoldsAndExpiries) {
  EXPECT_EQ(trail_text(attempt_event(EventKind::held, DeliveryOutcome::held, "mailbox", "placed in the mailbox")),
            "destination=gp-a attempt=3 mailbox: placed in the mailbox (held until the partner collects it)");
  EXPECT_EQ(trail_text(attempt_event(EventKind::expired, DeliveryOutcome::held, "mailbox", "not acknowledged within 5 s")),
            "destination=gp-a attempt=3 mailbox: not acknowledged within 5 s (expired: not acknowledged in time; "
            "replay sends it again)");
  DeliveryView d;
  d.last_outcome = DeliveryOutcome::held;  // waiting in the mailbox is not an error
  d.last_partner_code = "mailbox";
  EXPECT_EQ(last_error_text(d), "");
}

TEST(Trail, AcceptanceEvents) {
  LifecycleEvent received;
  received.kind = EventKind::received;
  received.source = "rtx";
  received.channel = "fhir-in";
  received.content_type = "application/fhir+json";
  received.bytes = 42;
  received.content_hash = "abc";
  EXPECT_EQ(trail_text(received), "source=rtx channel=fhir-in content_type=application/fhir+json bytes=42 sha256=abc");
  received.idempotency_key = "k1";
  EXPECT_EQ(trail_text(received),
            "source=rtx channel=fhir-in content_type=application/fhir+json bytes=42 sha256=abc idempotency_key=k1");
  received.original_content_type = "x-application/hl7-v2+er7";
  received.original_bytes = 17;
  EXPECT_EQ(trail_text(received),
            "source=rtx channel=fhir-in sent_as=x-application/hl7-v2+er7 sent_bytes=17 "
            "converted_to=application/fhir+json bytes=42 sha256=abc idempotency_key=k1");

  LifecycleEvent validated;
  validated.kind = EventKind::validated;
  EXPECT_EQ(trail_text(validated), "no warnings");
  validated.warnings = {"w1", "w2"};
  EXPECT_EQ(trail_text(validated), "2 warning(s): w1; w2");

  LifecycleEvent routed;
  routed.kind = EventKind::routed;
  routed.routes = {"r1", "r2"};
  routed.destinations = {"gp-a", "vcse"};
  EXPECT_EQ(trail_text(routed), "routes=r1,r2 destinations=gp-a,vcse");
  routed.kind = EventKind::unroutable;
  routed.destinations.clear();
  EXPECT_EQ(trail_text(routed), "routes r1,r2 matched but named no destination");
  routed.routes.clear();
  EXPECT_EQ(trail_text(routed), "no route matched");
}

TEST(Trail, DuplicatesAndReplays) {
  LifecycleEvent duplicate;
  duplicate.kind = EventKind::duplicate;
  duplicate.source = "rtx";
  duplicate.idempotency_key = "k1";
  duplicate.content_hash = "def";
  EXPECT_EQ(trail_text(duplicate), "idempotency_key=k1 from rtx submitted again; answered with this message");
  duplicate.same_content = false;
  EXPECT_EQ(trail_text(duplicate),
            "idempotency_key=k1 from rtx submitted again with different content sha256=def; answered with this message");

  LifecycleEvent replayed;
  replayed.kind = EventKind::replayed;
  replayed.destinations = {"gp-a", "vcse"};
  EXPECT_EQ(trail_text(replayed), "destinations=gp-a,vcse");
}

TEST(Trail, OlderStoresTextIsShownAsItWas) {
  LifecycleEvent old;
  old.kind = EventKind::attempt;
  old.legacy_text = "destination=vcse attempt=2 http 503 (retryable, will retry at 5000)";
  EXPECT_EQ(trail_text(old), old.legacy_text);
  LifecycleEvent delivered;  // read from an old delivery row: destination and attempt still known
  delivered.kind = EventKind::delivered;
  delivered.destination = "gp";
  delivered.attempt = 1;
  delivered.legacy_text = "HTTP 201: created";
  EXPECT_EQ(trail_text(delivered), "destination=gp attempt=1 HTTP 201: created");
}

TEST(Trail, LastErrorOfADelivery) {
  DeliveryView d;
  EXPECT_EQ(last_error_text(d), "");  // no attempt yet
  d.last_outcome = DeliveryOutcome::retryable;
  d.last_partner_code = "HTTP 503";
  d.last_detail = "busy";
  EXPECT_EQ(last_error_text(d), "HTTP 503: busy");
  d.last_outcome = DeliveryOutcome::ok;
  EXPECT_EQ(last_error_text(d), "");
  d.legacy_last_error = "http 503";
  EXPECT_EQ(last_error_text(d), "http 503");
}

TEST(Trail, EventKindNamesRoundTrip) {
  for (auto kind : {EventKind::received, EventKind::validated, EventKind::routed, EventKind::unroutable,
                    EventKind::duplicate, EventKind::attempt, EventKind::delivered, EventKind::dead,
                    EventKind::replayed, EventKind::held, EventKind::expired})
    EXPECT_EQ(event_kind_from(to_string(kind)), kind);
  EXPECT_EQ(delivery_outcome_from("held"), DeliveryOutcome::held);
  for (auto status : {DeliveryStatus::pending, DeliveryStatus::delivered, DeliveryStatus::dead, DeliveryStatus::held,
                      DeliveryStatus::expired})
    EXPECT_EQ(delivery_status_from(to_string(status)), status);
  EXPECT_FALSE(event_kind_from("nonsense").has_value());
  EXPECT_EQ(delivery_outcome_from("permanent"), DeliveryOutcome::permanent);
  EXPECT_FALSE(delivery_outcome_from("").has_value());
}

}  // namespace
}  // namespace tellonce
