#include "store_contract.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <set>
#include <stdlib.h>
#include <thread>

namespace tellonce::test {
namespace {

std::vector<EventKind> kinds(const MessageView& view) {
  std::vector<EventKind> out;
  for (const auto& e : view.events) out.push_back(e.kind);
  return out;
}

long count_kind(const MessageView& view, EventKind kind) {
  return std::count_if(view.events.begin(), view.events.end(), [&](const auto& e) { return e.kind == kind; });
}

const LifecycleEvent& only_event(const MessageView& view, EventKind kind) {
  auto it = std::find_if(view.events.begin(), view.events.end(), [&](const auto& e) { return e.kind == kind; });
  if (count_kind(view, kind) != 1) throw std::runtime_error("not exactly one " + std::string(to_string(kind)) + " event");
  return *it;
}


MessageQuery query(std::optional<MessageState> state, std::string source, int limit) {
  MessageQuery q;
  q.state = state;
  q.source = std::move(source);
  q.limit = limit;
  return q;
}

const DeliveryView& delivery_to(const MessageView& view, std::string_view destination) {
  for (const auto& d : view.deliveries)
    if (d.destination == destination) return d;
  throw std::runtime_error("no delivery to " + std::string(destination));
}

}  // namespace

DeliveryAttempt attempt_on(const DeliveryJob& job, int number, bool ok, bool dead) {
  DeliveryAttempt a;
  a.delivery_id = job.delivery_id;
  a.message_id = job.message_id;
  a.destination = job.destination;
  a.attempt = number;
  a.at_ms = now_ms();
  a.outcome = ok ? DeliveryOutcome::ok : dead ? DeliveryOutcome::permanent : DeliveryOutcome::retryable;
  a.partner_code = ok ? "HTTP 200" : "HTTP 503";
  a.detail = ok ? "accepted" : "partner busy";
  a.next_attempt_ms = ok || dead ? 0 : a.at_ms + 30000;
  a.dead = dead;
  return a;
}

NewMessage sample(std::string idempotency_key, std::vector<std::string> destinations, std::string source) {
  NewMessage m;
  m.id = new_message_id();
  m.source = std::move(source);
  m.channel = "fhir-http";
  m.idempotency_key = std::move(idempotency_key);
  m.resource_type = "Bundle";
  m.event = "https://fhir.nhs.uk/CodeSystem/message-event|referral-request";
  m.patient_key = "9449306753";
  m.content_type = "application/fhir+json";
  m.body = R"({"resourceType":"Bundle","type":"message","id":")" + m.id + R"("})";
  m.content_hash = sha256_hex(m.body);
  m.received_at_ms = now_ms();
  m.route_ids = {"referrals"};
  m.destinations = std::move(destinations);
  m.warnings = {"Bundle.meta: no profile claimed"};
  return m;
}

void StoreContract::SetUp() {
  fixture_ = GetParam().open();
  store_ = fixture_->open();
}

void StoreContract::TearDown() {
  store_.reset();
  fixture_.reset();
}

void StoreContract::reopen() {
  store_->close();
  store_.reset();
  store_ = fixture_->open();
}

TEST_P(StoreContract, CommitThenFindReturnsEveryFieldAndTheTrailInOrder) {
  auto msg = sample("key-1");
  auto committed = run(store_->commit(msg)).value();
  EXPECT_EQ(committed.outcome.message_id, msg.id);
  EXPECT_FALSE(committed.outcome.duplicate);
  EXPECT_EQ(committed.outcome.state, MessageState::delivering);
  ASSERT_EQ(committed.jobs.size(), 2u);
  EXPECT_NE(committed.jobs[0].delivery_id, committed.jobs[1].delivery_id);
  EXPECT_EQ(committed.jobs[0].destination, "trust-a");
  EXPECT_EQ(committed.jobs[1].destination, "gp-b");
  for (const auto& job : committed.jobs) {
    EXPECT_EQ(job.message_id, msg.id);
    EXPECT_EQ(job.body, msg.body);
    EXPECT_EQ(job.patient_key, msg.patient_key);
    EXPECT_EQ(job.resource_type, "Bundle");
    EXPECT_EQ(job.content_type, msg.content_type);
    EXPECT_EQ(job.attempts, 0);
    EXPECT_GT(job.seq, 0);
  }

  auto view = run(store_->find(msg.id)).value();
  ASSERT_TRUE(view.has_value());
  EXPECT_EQ(view->id, msg.id);
  EXPECT_EQ(view->source, msg.source);
  EXPECT_EQ(view->channel, msg.channel);
  EXPECT_EQ(view->resource_type, msg.resource_type);
  EXPECT_EQ(view->event, msg.event);
  EXPECT_EQ(view->patient_key, msg.patient_key);
  EXPECT_EQ(view->content_hash, msg.content_hash);
  EXPECT_EQ(view->received_at_ms, msg.received_at_ms);
  EXPECT_EQ(view->state, MessageState::delivering);
  EXPECT_EQ(view->body_bytes, msg.body.size());
  ASSERT_EQ(view->deliveries.size(), 2u);
  EXPECT_EQ(view->deliveries[0].destination, "trust-a");
  EXPECT_EQ(view->deliveries[0].status, DeliveryStatus::pending);
  EXPECT_EQ(view->deliveries[0].attempts, 0);
  EXPECT_EQ(view->deliveries[0].delivery_id, committed.jobs[0].delivery_id);
  EXPECT_EQ(kinds(*view), (std::vector<EventKind>{EventKind::received, EventKind::validated, EventKind::routed}));
  const auto& received = view->events[0];
  EXPECT_EQ(received.at_ms, msg.received_at_ms);
  EXPECT_EQ(received.source, msg.source);
  EXPECT_EQ(received.channel, msg.channel);
  EXPECT_EQ(received.content_type, msg.content_type);
  EXPECT_EQ(received.bytes, msg.body.size());
  EXPECT_EQ(received.content_hash, msg.content_hash);
  EXPECT_EQ(received.idempotency_key, "key-1");
  EXPECT_GE(view->events[1].at_ms, msg.received_at_ms);
  EXPECT_EQ(view->events[1].warnings, msg.warnings);
  EXPECT_EQ(view->events[2].routes, msg.route_ids);
  EXPECT_EQ(view->events[2].destinations, (std::vector<std::string>{"trust-a", "gp-b"}));
  for (const auto& e : view->events) EXPECT_TRUE(e.legacy_text.empty()) << e.legacy_text;
}

TEST_P(StoreContract, BodyIsReadBackAsReceived) {
  auto msg = sample();
  msg.body = std::string("{\"resourceType\":\"Patient\",\"note\":\"caf\xc3\xa9\"}");
  auto committed = run(store_->commit(msg)).value();
  EXPECT_EQ(run(store_->body(committed.outcome.message_id)).value(), msg.body);
  auto missing = run(store_->body("01UNKNOWN0000000000000000"));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::not_found);
}

// A converted record keeps what the partner sent beside its FHIR form; a record that arrived as
// FHIR has no separate original.
TEST_P(StoreContract, ConvertedRecordKeepsWhatThePartnerSent) {
  auto converted = sample("v2:MSG00001");
  converted.original_content_type = "x-application/hl7-v2+er7";
  converted.original_bytes = std::string("MSH|^~\\&|PAS|RTX|||20261130||ADT^A01|MSG00001|P|2.4\rPID|||x\r\0z", 55);
  auto id = run(store_->commit(converted)).value().outcome.message_id;
  auto original = run(store_->original(id)).value();
  ASSERT_TRUE(original.has_value());
  EXPECT_EQ(original->content_type, "x-application/hl7-v2+er7");
  EXPECT_EQ(original->bytes, converted.original_bytes);  // byte for byte, a NUL included
  EXPECT_EQ(run(store_->body(id)).value(), converted.body);

  auto view = run(store_->find(id)).value();
  ASSERT_TRUE(view);
  EXPECT_EQ(view->content_type, "application/fhir+json");
  EXPECT_EQ(view->original_content_type, "x-application/hl7-v2+er7");
  EXPECT_EQ(view->original_bytes, converted.original_bytes.size());
  const auto& received = only_event(*view, EventKind::received);
  EXPECT_EQ(received.original_content_type, "x-application/hl7-v2+er7");
  EXPECT_EQ(received.original_bytes, converted.original_bytes.size());
  EXPECT_EQ(received.bytes, converted.body.size());

  auto plain = run(store_->commit(sample("fhir-1"))).value().outcome.message_id;
  EXPECT_FALSE(run(store_->original(plain)).value().has_value());
  auto plain_view = run(store_->find(plain)).value();
  ASSERT_TRUE(plain_view);
  EXPECT_TRUE(plain_view->original_content_type.empty());
  EXPECT_EQ(plain_view->original_bytes, 0u);

  auto missing = run(store_->original("01UNKNOWN0000000000000000"));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::not_found);
}

TEST_P(StoreContract, FindUnknownIdReturnsNothing) {
  auto view = run(store_->find("01UNKNOWN0000000000000000")).value();
  EXPECT_FALSE(view.has_value());
}

TEST_P(StoreContract, SequentialDuplicateIsStoredOnceAndNoted) {
  auto first = run(store_->commit(sample("same-key"))).value();
  auto again = sample("same-key");
  auto second = run(store_->commit(again)).value();
  EXPECT_TRUE(second.outcome.duplicate);
  EXPECT_EQ(second.outcome.message_id, first.outcome.message_id);
  EXPECT_EQ(second.outcome.state, MessageState::delivering);
  EXPECT_TRUE(second.jobs.empty());

  EXPECT_FALSE(run(store_->find(again.id)).value().has_value());
  auto view = run(store_->find(first.outcome.message_id)).value();
  ASSERT_TRUE(view);
  const auto& duplicate = only_event(*view, EventKind::duplicate);
  EXPECT_EQ(duplicate.source, again.source);
  EXPECT_EQ(duplicate.idempotency_key, "same-key");
  EXPECT_EQ(duplicate.content_hash, again.content_hash);
  EXPECT_FALSE(duplicate.same_content);  // sample() puts the message id in the body
  EXPECT_EQ(run(store_->list(MessageQuery{})).value().size(), 1u);
  EXPECT_EQ(store_->load_pending().value().size(), 2u);
}

TEST_P(StoreContract, KeysAreScopedBySourceAndEmptyKeysNeverMatch) {
  EXPECT_FALSE(run(store_->commit(sample("k", {"trust-a"}, "hospital-1"))).value().outcome.duplicate);
  EXPECT_FALSE(run(store_->commit(sample("k", {"trust-a"}, "gp-2"))).value().outcome.duplicate);
  EXPECT_FALSE(run(store_->commit(sample("", {"trust-a"}))).value().outcome.duplicate);
  EXPECT_FALSE(run(store_->commit(sample("", {"trust-a"}))).value().outcome.duplicate);
  EXPECT_EQ(run(store_->list(MessageQuery{})).value().size(), 4u);
}

TEST_P(StoreContract, ConcurrentDuplicatesAreStoredOnce) {
  constexpr int callers = 50;
  asio::io_context io;
  std::vector<Committed> results;
  std::exception_ptr error;
  for (int i = 0; i < callers; ++i) {
    auto done = [&](std::exception_ptr e, Result<Committed> r) {
      if (e) error = e;
      else if (r) results.push_back(*r);
    };
    asio::co_spawn(io, store_->commit(sample("burst-key")), done);
  }
  io.run();
  ASSERT_FALSE(error);
  ASSERT_EQ(results.size(), static_cast<std::size_t>(callers));
  auto originals = std::count_if(results.begin(), results.end(), [](const auto& c) { return !c.outcome.duplicate; });
  EXPECT_EQ(originals, 1);
  for (const auto& c : results) EXPECT_EQ(c.outcome.message_id, results.front().outcome.message_id);

  EXPECT_EQ(run(store_->list(MessageQuery{})).value().size(), 1u);
  auto view = run(store_->find(results.front().outcome.message_id)).value();
  ASSERT_TRUE(view);
  EXPECT_EQ(count_kind(*view, EventKind::duplicate), callers - 1);
}

TEST_P(StoreContract, MessageWithoutDestinationIsUnroutable) {
  auto msg = sample("", {});
  auto committed = run(store_->commit(msg)).value();
  EXPECT_EQ(committed.outcome.state, MessageState::unroutable);
  EXPECT_TRUE(committed.jobs.empty());
  auto view = run(store_->find(msg.id)).value();
  ASSERT_TRUE(view);
  EXPECT_EQ(view->state, MessageState::unroutable);
  EXPECT_TRUE(view->deliveries.empty());
  EXPECT_EQ(kinds(*view), (std::vector<EventKind>{EventKind::received, EventKind::validated, EventKind::unroutable}));
  EXPECT_EQ(view->events[2].routes, msg.route_ids);
  EXPECT_TRUE(view->events[2].destinations.empty());
  EXPECT_TRUE(store_->load_pending().value().empty());
}

TEST_P(StoreContract, RetryThenDeliveredMovesDeliveryAndMessageState) {
  auto committed = run(store_->commit(sample())).value();
  const auto& a = committed.jobs[0];
  const auto& b = committed.jobs[1];
  const auto id = committed.outcome.message_id;

  auto retry = attempt_on(a, 1, false);
  ASSERT_TRUE(run(store_->record_attempt(retry)));
  auto view = run(store_->find(id)).value();
  EXPECT_EQ(view->state, MessageState::delivering);
  EXPECT_EQ(delivery_to(*view, "trust-a").status, DeliveryStatus::pending);
  EXPECT_EQ(delivery_to(*view, "trust-a").attempts, 1);
  EXPECT_EQ(delivery_to(*view, "trust-a").next_attempt_ms, retry.next_attempt_ms);
  EXPECT_EQ(delivery_to(*view, "trust-a").last_outcome, DeliveryOutcome::retryable);
  EXPECT_EQ(delivery_to(*view, "trust-a").last_partner_code, "HTTP 503");
  EXPECT_EQ(delivery_to(*view, "trust-a").last_detail, "partner busy");

  ASSERT_TRUE(run(store_->record_attempt(attempt_on(a, 2, true))));
  view = run(store_->find(id)).value();
  EXPECT_EQ(delivery_to(*view, "trust-a").status, DeliveryStatus::delivered);
  EXPECT_EQ(delivery_to(*view, "trust-a").attempts, 2);
  EXPECT_EQ(view->state, MessageState::delivering);  // gp-b still pending

  ASSERT_TRUE(run(store_->record_attempt(attempt_on(b, 1, true))));
  view = run(store_->find(id)).value();
  EXPECT_EQ(view->state, MessageState::delivered);
  EXPECT_EQ(delivery_to(*view, "trust-a").last_outcome, DeliveryOutcome::ok);
  EXPECT_EQ(count_kind(*view, EventKind::attempt), 1);  // failed attempts; successes are the "delivered" events
  EXPECT_EQ(count_kind(*view, EventKind::delivered), 2);
  const auto& failed = only_event(*view, EventKind::attempt);
  EXPECT_EQ(failed.at_ms, retry.at_ms);
  EXPECT_EQ(failed.destination, "trust-a");
  EXPECT_EQ(failed.attempt, 1);
  EXPECT_EQ(failed.outcome, DeliveryOutcome::retryable);
  EXPECT_EQ(failed.partner_code, "HTTP 503");
  EXPECT_EQ(failed.detail, "partner busy");
  EXPECT_EQ(failed.next_attempt_ms, retry.next_attempt_ms);
  for (const auto& e : view->events) {
    if (e.kind != EventKind::delivered) continue;
    EXPECT_EQ(e.attempt, e.destination == "trust-a" ? 2 : 1);
    EXPECT_EQ(e.outcome, DeliveryOutcome::ok);
    EXPECT_EQ(e.partner_code, "HTTP 200");
    EXPECT_EQ(e.detail, "accepted");
  }
  EXPECT_TRUE(store_->load_pending().value().empty());
}

// The audit's start-up catch-up (broker/audit) reads receipts and settled deliveries from here.
TEST_P(StoreContract, FactsSinceListReceiptsAndSettledDeliveriesOnly) {
  auto msg = sample();
  auto committed = run(store_->commit(msg)).value();
  ASSERT_TRUE(run(store_->record_attempt(attempt_on(committed.jobs[0], 1, true))));
  ASSERT_TRUE(run(store_->record_attempt(attempt_on(committed.jobs[1], 1, false))));  // still pending
  auto facts = store_->facts_since(0);
  if (!facts && facts.error().code == Errc::unsupported) GTEST_SKIP() << "this store has no audit facts";
  ASSERT_TRUE(facts) << facts.error().summary();
  ASSERT_EQ(facts->size(), 2u);
  const auto& receipt = (*facts)[0].destination.empty() ? (*facts)[0] : (*facts)[1];
  const auto& delivery = (*facts)[0].destination.empty() ? (*facts)[1] : (*facts)[0];
  EXPECT_EQ(receipt.message_id, committed.outcome.message_id);
  EXPECT_EQ(receipt.source, msg.source);
  EXPECT_EQ(receipt.resource_type, msg.resource_type);
  EXPECT_EQ(receipt.at_ms, msg.received_at_ms);
  EXPECT_EQ(delivery.destination, committed.jobs[0].destination);
  EXPECT_EQ(delivery.status, DeliveryStatus::delivered);
  EXPECT_EQ(delivery.attempts, 1);
  // Nothing at or after a time later than both.
  EXPECT_TRUE(store_->facts_since(now_ms() + 60'000).value().empty());
}

TEST_P(StoreContract, DeadDeliveryFailsTheMessage) {
  auto committed = run(store_->commit(sample())).value();
  ASSERT_TRUE(run(store_->record_attempt(attempt_on(committed.jobs[0], 1, true))));
  ASSERT_TRUE(run(store_->record_attempt(attempt_on(committed.jobs[1], 5, false, true))));
  auto view = run(store_->find(committed.outcome.message_id)).value();
  EXPECT_EQ(view->state, MessageState::failed);
  EXPECT_EQ(delivery_to(*view, "gp-b").status, DeliveryStatus::dead);
  const auto& dead = only_event(*view, EventKind::dead);
  EXPECT_EQ(dead.destination, "gp-b");
  EXPECT_EQ(dead.attempt, 5);
  EXPECT_EQ(dead.outcome, DeliveryOutcome::permanent);
  EXPECT_EQ(dead.partner_code, "HTTP 503");
  EXPECT_EQ(dead.detail, "partner busy");
  EXPECT_EQ(delivery_to(*view, "gp-b").last_outcome, DeliveryOutcome::permanent);
  auto failed = run(store_->list(query(MessageState::failed, "", 10))).value();
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].id, committed.outcome.message_id);
}

TEST_P(StoreContract, ReplayReturnsDeadDeliveriesToPending) {
  auto msg = sample();
  auto committed = run(store_->commit(msg)).value();
  ASSERT_TRUE(run(store_->record_attempt(attempt_on(committed.jobs[0], 1, true))));
  ASSERT_TRUE(run(store_->record_attempt(attempt_on(committed.jobs[1], 5, false, true))));

  auto jobs = run(store_->replay(msg.id)).value();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].delivery_id, committed.jobs[1].delivery_id);
  EXPECT_EQ(jobs[0].destination, "gp-b");
  EXPECT_EQ(jobs[0].body, msg.body);
  EXPECT_EQ(jobs[0].attempts, 0);
  EXPECT_EQ(jobs[0].seq, committed.jobs[1].seq);

  auto view = run(store_->find(msg.id)).value();
  EXPECT_EQ(view->state, MessageState::delivering);
  EXPECT_EQ(delivery_to(*view, "gp-b").status, DeliveryStatus::pending);
  EXPECT_EQ(delivery_to(*view, "gp-b").attempts, 0);
  EXPECT_EQ(delivery_to(*view, "trust-a").status, DeliveryStatus::delivered);
  // Its place in the trail: after the dead letter. (Not necessarily last: the other delivery's
  // success is read from its row with a millisecond time, which may tie with the replay's.)
  EXPECT_EQ(only_event(*view, EventKind::replayed).destinations, (std::vector<std::string>{"gp-b"}));
  auto at = [&](EventKind k) {
    return std::find_if(view->events.begin(), view->events.end(), [&](const auto& e) { return e.kind == k; });
  };
  EXPECT_LT(at(EventKind::dead) - view->events.begin(), at(EventKind::replayed) - view->events.begin());
  auto pending = store_->load_pending().value();
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].destination, "gp-b");

  EXPECT_TRUE(run(store_->replay(msg.id)).value().empty());  // nothing dead any more
}

TEST_P(StoreContract, ReplayOfUnknownMessageIsNotFound) {
  auto result = run(store_->replay("01NOSUCHMESSAGE0000000000"));
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, Errc::not_found);
  EXPECT_FALSE(result.error().is_retryable());
  ASSERT_FALSE(result.error().issues.empty());
  EXPECT_EQ(result.error().issues[0].code, "not-found");
}

TEST_P(StoreContract, AttemptOnUnknownDeliveryIsNotFound) {
  DeliveryJob ghost;
  ghost.delivery_id = 987654;
  auto result = run(store_->record_attempt(attempt_on(ghost, 1, true)));
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, Errc::not_found);
}

TEST_P(StoreContract, PendingDeliveriesSurviveReopenInAcceptanceOrder) {
  std::vector<NewMessage> sent;
  for (int i = 0; i < 3; ++i) sent.push_back(sample("order-" + std::to_string(i)));
  std::vector<Committed> committed;
  for (const auto& m : sent) committed.push_back(run(store_->commit(m)).value());
  ASSERT_TRUE(run(store_->record_attempt(attempt_on(committed[1].jobs[0], 1, true))));

  reopen();
  auto pending = store_->load_pending().value();
  ASSERT_EQ(pending.size(), 5u);
  std::vector<std::string> order;
  for (const auto& job : pending) order.push_back(job.message_id + "/" + job.destination);
  EXPECT_EQ(order, (std::vector<std::string>{sent[0].id + "/trust-a", sent[0].id + "/gp-b", sent[1].id + "/gp-b",
                                             sent[2].id + "/trust-a", sent[2].id + "/gp-b"}));
  for (std::size_t i = 1; i < pending.size(); ++i) EXPECT_LE(pending[i - 1].seq, pending[i].seq);
  EXPECT_EQ(pending[0].body, sent[0].body);
  EXPECT_EQ(pending[4].body, sent[2].body);

  // Duplicates are still recognised and the sequence keeps growing after a restart.
  EXPECT_TRUE(run(store_->commit(sample("order-0"))).value().outcome.duplicate);
  auto later = run(store_->commit(sample("order-3"))).value();
  EXPECT_GT(later.jobs.at(0).seq, pending.back().seq);
}

TEST_P(StoreContract, PendingBodiesPastTheBudgetStayInTheStore) {
  auto first = sample("budget-1", {"trust-a"});
  auto second = sample("budget-2", {"trust-a"});
  run(store_->commit(first)).value();
  run(store_->commit(second)).value();
  auto pending = store_->load_pending(first.body.size()).value();
  ASSERT_EQ(pending.size(), 2u);
  EXPECT_EQ(pending[0].body, first.body);
  EXPECT_TRUE(pending[1].body.empty());  // not carried: read back with body()
  EXPECT_EQ(run(store_->body(pending[1].message_id)).value(), second.body);
}

TEST_P(StoreContract, ListFiltersByStateAndSource) {
  auto unroutable = run(store_->commit(sample("", {}, "hospital-1"))).value();
  auto routed = run(store_->commit(sample("", {"trust-a"}, "hospital-1"))).value();
  auto other = run(store_->commit(sample("", {"trust-a"}, "gp-2"))).value();

  auto all = run(store_->list(MessageQuery{})).value();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].id, other.outcome.message_id);  // newest first

  auto stuck = run(store_->list(query(MessageState::unroutable, "", 100))).value();
  ASSERT_EQ(stuck.size(), 1u);
  EXPECT_EQ(stuck[0].id, unroutable.outcome.message_id);
  EXPECT_EQ(stuck[0].state, MessageState::unroutable);
  EXPECT_EQ(stuck[0].source, "hospital-1");
  EXPECT_EQ(stuck[0].resource_type, "Bundle");

  auto from_gp = run(store_->list(query(std::nullopt, "gp-2", 100))).value();
  ASSERT_EQ(from_gp.size(), 1u);
  EXPECT_EQ(from_gp[0].id, other.outcome.message_id);

  auto delivering = run(store_->list(query(MessageState::delivering, "hospital-1", 100))).value();
  ASSERT_EQ(delivering.size(), 1u);
  EXPECT_EQ(delivering[0].id, routed.outcome.message_id);

  EXPECT_EQ(run(store_->list(query(std::nullopt, "", 2))).value().size(), 2u);
}

// Search (issue 11): each filter alone, and together, newest received first.
TEST_P(StoreContract, SearchFindsMessagesByEachFilterNewestReceivedFirst) {
  auto make = [](std::string source, std::vector<std::string> destinations, std::string resource_type,
                 std::string event, std::string patient_key, std::string route, std::int64_t received) {
    NewMessage m = sample("", std::move(destinations), std::move(source));
    m.resource_type = std::move(resource_type);
    m.event = std::move(event);
    m.patient_key = std::move(patient_key);
    m.route_ids = {std::move(route)};
    m.received_at_ms = received;
    return m;
  };
  const std::int64_t t0 = 1'700'000'000'000;
  auto a = run(store_->commit(make("rtx", {"gp-1"}, "Patient", "", "9449306753", "patients", t0 + 1000))).value();
  auto b = run(store_->commit(make("rtx", {"gp-1", "vcse"}, "Bundle", "ADT^A01", "9449306761", "admissions", t0 + 2000))).value();
  auto c = run(store_->commit(make("gp-a", {"vcse"}, "Bundle", "ADT^A01", "Patient/x", "admissions", t0 + 3000))).value();
  auto d = run(store_->commit(make("gp-a", {}, "Observation", "", "9449306753", "none", t0 + 4000))).value();
  // a delivered, b failed at vcse (gp-1 delivered), c pending, d unroutable
  run(store_->record_attempt(attempt_on(a.jobs[0], 1, true))).value();
  for (const auto& job : b.jobs) run(store_->record_attempt(attempt_on(job, 1, job.destination == "gp-1", true))).value();

  auto ids = [&](MessageQuery q) {
    std::vector<std::string> out;
    for (const auto& m : run(store_->list(std::move(q))).value()) out.push_back(m.id);
    return out;
  };
  const auto A = a.outcome.message_id, B = b.outcome.message_id, C = c.outcome.message_id, D = d.outcome.message_id;
  using V = std::vector<std::string>;
  EXPECT_EQ(ids({}), (V{D, C, B, A}));
  MessageQuery q;
  q.source = "rtx";
  EXPECT_EQ(ids(q), (V{B, A}));
  q = {};
  q.destination = "vcse";
  EXPECT_EQ(ids(q), (V{C, B}));
  q = {};
  q.route = "admissions";
  EXPECT_EQ(ids(q), (V{C, B}));
  q = {};
  q.resource_type = "Bundle";
  EXPECT_EQ(ids(q), (V{C, B}));
  q = {};
  q.event = "ADT^A01";
  EXPECT_EQ(ids(q), (V{C, B}));
  q = {};
  q.nhs_number = "9449306753";
  EXPECT_EQ(ids(q), (V{D, A}));
  q = {};
  q.since_ms = t0 + 2000;
  q.until_ms = t0 + 4000;  // until is exclusive
  EXPECT_EQ(ids(q), (V{C, B}));
  q = {};
  q.state = MessageState::failed;
  EXPECT_EQ(ids(q), (V{B}));
  q.state = MessageState::delivering;
  EXPECT_EQ(ids(q), (V{C}));
  q.state = MessageState::delivered;
  EXPECT_EQ(ids(q), (V{A}));
  q.state = MessageState::unroutable;
  EXPECT_EQ(ids(q), (V{D}));
  // Together: every filter must match.
  q = {};
  q.destination = "vcse";
  q.state = MessageState::failed;
  EXPECT_EQ(ids(q), (V{B}));
  q.source = "gp-a";
  EXPECT_EQ(ids(q), V{});
  q = {};
  q.event = "ADT^A01";
  q.destination = "gp-1";
  EXPECT_EQ(ids(q), (V{B}));
  // A summary says what the listing shows.
  q = {};
  q.nhs_number = "9449306761";
  auto found = run(store_->list(q)).value();
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].channel, "fhir-http");
  EXPECT_EQ(found[0].event, "ADT^A01");
  EXPECT_EQ(found[0].received_at_ms, t0 + 2000);
  EXPECT_EQ(found[0].state, MessageState::failed);
}

TEST_P(StoreContract, CursorPagesThroughEveryMatchOnceEvenWhileNewRecordsArrive) {
  std::set<std::string> stored;
  for (int i = 0; i < 7; ++i) {
    auto m = sample("", {"gp-1"});
    m.received_at_ms = 1'700'000'000'000 + (i / 2) * 1000;  // pairs share a time: ties break by acceptance
    stored.insert(run(store_->commit(m)).value().outcome.message_id);
  }
  std::vector<std::string> seen;
  MessageQuery q;
  q.limit = 3;
  for (int page = 0; page < 10; ++page) {
    auto rows = run(store_->list(q)).value();
    for (const auto& r : rows) seen.push_back(r.id);
    if (page == 0) run(store_->commit(sample("", {"gp-1"}))).value();  // newer: must not shift the pages
    if (rows.size() < 3u) break;
    q.cursor = rows.back().cursor;
  }
  ASSERT_EQ(seen.size(), 7u);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()), stored);
  MessageQuery bad;
  bad.cursor = "not-a-cursor";
  auto refused = run(store_->list(bad));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::malformed);
}

TEST_P(StoreContract, ReplayByFilterCountsFirstThenRevivesOnlyMatchingDeadDeliveriesWithWhoDidIt) {
  auto one = run(store_->commit(sample("", {"gp-1", "vcse"}))).value();
  auto two = run(store_->commit(sample("", {"vcse"}, "gp-a"))).value();
  for (const auto& job : one.jobs) run(store_->record_attempt(attempt_on(job, 1, false, true))).value();
  for (const auto& job : two.jobs) run(store_->record_attempt(attempt_on(job, 1, false, true))).value();

  MessageQuery q;
  q.destination = "vcse";
  auto dry = run(store_->replay_matching(q, "cli:alice", true)).value();
  EXPECT_EQ(dry.matched, 2u);
  EXPECT_TRUE(dry.jobs.empty());
  EXPECT_EQ(run(store_->find(one.outcome.message_id)).value()->state, MessageState::failed);  // nothing changed

  auto done = run(store_->replay_matching(q, "cli:alice", false)).value();
  EXPECT_EQ(done.matched, 2u);
  ASSERT_EQ(done.jobs.size(), 2u);
  for (const auto& job : done.jobs) EXPECT_EQ(job.destination, "vcse");
  auto view = run(store_->find(one.outcome.message_id)).value().value();
  EXPECT_EQ(delivery_to(view, "vcse").status, DeliveryStatus::pending);
  EXPECT_EQ(delivery_to(view, "gp-1").status, DeliveryStatus::dead);  // not matched: left dead
  const auto& replayed = only_event(view, EventKind::replayed);
  EXPECT_EQ(replayed.actor, "cli:alice");
  EXPECT_EQ(replayed.destinations, std::vector<std::string>{"vcse"});
  EXPECT_EQ(run(store_->replay_matching(q, "cli:alice", true)).value().matched, 0u);
}

TEST_P(StoreContract, APausedDestinationStaysPausedAfterReopenWithItsTrail) {
  run(store_->set_paused("vcse", true, "cli:alice")).value();
  reopen();
  auto controls = run(store_->destination_controls()).value();
  ASSERT_EQ(controls.size(), 1u);
  EXPECT_EQ(controls[0].destination, "vcse");
  EXPECT_TRUE(controls[0].paused);
  EXPECT_EQ(controls[0].actor, "cli:alice");
  run(store_->set_paused("vcse", false, "api@127.0.0.1")).value();
  controls = run(store_->destination_controls()).value();
  ASSERT_EQ(controls.size(), 1u);
  EXPECT_FALSE(controls[0].paused);
  auto trail = run(store_->destination_trail("vcse", 10)).value();
  ASSERT_EQ(trail.size(), 2u);
  EXPECT_EQ(trail[0].action, "resumed");
  EXPECT_EQ(trail[0].actor, "api@127.0.0.1");
  EXPECT_EQ(trail[1].action, "paused");
  EXPECT_EQ(trail[1].actor, "cli:alice");
}

TEST_P(StoreContract, ConcurrentCommitsFromTwoThreadsAllComplete) {
  constexpr int messages = 400;
  asio::io_context io;
  std::mutex mutex;
  std::set<std::string> ids;
  std::set<std::int64_t> seqs;
  std::atomic<int> failures{0};
  for (int i = 0; i < messages; ++i) {
    auto done = [&](std::exception_ptr e, Result<Committed> r) {
      if (e || !r || r->jobs.size() != 2) {
        ++failures;
        return;
      }
      std::lock_guard lock(mutex);
      ids.insert(r->outcome.message_id);
      seqs.insert(r->jobs[0].seq);
    };
    asio::co_spawn(io, store_->commit(sample("c-" + std::to_string(i))), done);
  }
  std::thread second([&] { io.run(); });
  io.run();
  second.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(ids.size(), static_cast<std::size_t>(messages));
  EXPECT_EQ(seqs.size(), static_cast<std::size_t>(messages));
  EXPECT_EQ(store_->load_pending().value().size(), static_cast<std::size_t>(2 * messages));
}

TEST_P(StoreContract, ClosedStoreRefusesWritesAsRetryable) {
  store_->close();
  auto result = run(store_->commit(sample()));
  ASSERT_FALSE(result);
  EXPECT_TRUE(result.error().is_retryable());
  EXPECT_EQ(result.error().code, Errc::unavailable);
}

// Health says whether records can be stored now: yes on a working store (and after writes),
// no, as retryable unavailable with a reason, once it is closed.
TEST_P(StoreContract, HealthIsOkWhileWritableAndUnavailableOnceClosed) {
  EXPECT_TRUE(run(store_->health()));
  ASSERT_TRUE(run(store_->commit(sample("health-1"))));
  EXPECT_TRUE(run(store_->health()));
  store_->close();
  auto health = run(store_->health());
  ASSERT_FALSE(health);
  EXPECT_EQ(health.error().code, Errc::unavailable);
  EXPECT_TRUE(health.error().is_retryable());
  ASSERT_FALSE(health.error().issues.empty());
  EXPECT_FALSE(health.error().issues[0].diagnostics.empty());
}


// ---- mailboxes: held deliveries (MailboxStore) ----

namespace {

DeliveryAttempt held_on(const DeliveryJob& job, std::int64_t at_ms) {
  DeliveryAttempt a;
  a.delivery_id = job.delivery_id;
  a.message_id = job.message_id;
  a.destination = job.destination;
  a.attempt = 1;
  a.at_ms = at_ms;
  a.outcome = DeliveryOutcome::held;
  a.partner_code = "mailbox";
  a.detail = "placed in the mailbox";
  return a;
}

std::vector<std::string> listed_ids(const std::vector<HeldRecord>& records) {
  std::vector<std::string> out;
  for (const auto& r : records) out.push_back(r.message_id);
  return out;
}

}  // namespace

TEST_P(StoreContract, HeldDeliveriesAreListedInTheirPartnersMailboxInAcceptanceOrder) {
  std::vector<Committed> committed;
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    committed.push_back(run(store_->commit(sample("", {"carers", "gp-b"}))).value());
    ids.push_back(committed.back().outcome.message_id);
  }
  // Held out of acceptance order: the mailbox still lists them in it.
  for (int i : {2, 0, 1}) ASSERT_TRUE(run(store_->record_attempt(held_on(committed[i].jobs[0], now_ms()))));

  auto listed = run(store_->mailbox("carers", 10)).value();
  EXPECT_EQ(listed_ids(listed), ids);
  EXPECT_EQ(listed[0].source, "hospital-1");
  EXPECT_EQ(listed[0].resource_type, "Bundle");
  EXPECT_EQ(listed[0].content_type, "application/fhir+json");
  EXPECT_TRUE(listed[0].body.empty());
  EXPECT_LT(listed[0].seq, listed[1].seq);
  EXPECT_EQ(listed_ids(run(store_->mailbox("carers", 2)).value()), (std::vector<std::string>{ids[0], ids[1]}));
  EXPECT_TRUE(run(store_->mailbox("gp-b", 10)).value().empty());  // pending there, not held

  auto view = run(store_->find(ids[0])).value();
  EXPECT_EQ(delivery_to(*view, "carers").status, DeliveryStatus::held);
  EXPECT_EQ(delivery_to(*view, "carers").last_outcome, DeliveryOutcome::held);
  EXPECT_EQ(view->state, MessageState::delivering);
  const auto& held = only_event(*view, EventKind::held);
  EXPECT_EQ(held.destination, "carers");
  EXPECT_EQ(held.attempt, 1);
  EXPECT_EQ(held.partner_code, "mailbox");
  // Held deliveries wait in the mailbox: a restart does not queue them again.
  for (const auto& job : store_->load_pending().value()) EXPECT_NE(job.destination, "carers");
  reopen();
  EXPECT_EQ(listed_ids(run(store_->mailbox("carers", 10)).value()), ids);
}

TEST_P(StoreContract, CollectingAHeldDeliveryMakesItDeliveredOnce) {
  auto msg = sample("", {"carers"});
  auto committed = run(store_->commit(msg)).value();
  ASSERT_TRUE(run(store_->record_attempt(held_on(committed.jobs[0], now_ms()))));

  auto record = run(store_->held("carers", msg.id));
  ASSERT_TRUE(record);
  EXPECT_EQ(record->message_id, msg.id);
  EXPECT_EQ(record->body, msg.body);
  EXPECT_EQ(record->source, "hospital-1");
  EXPECT_EQ(record->resource_type, "Bundle");
  // Another partner's key on this message, or a message not there: not found.
  EXPECT_EQ(run(store_->held("gp-b", msg.id)).error().code, Errc::not_found);
  EXPECT_EQ(run(store_->collect("gp-b", msg.id)).error().code, Errc::not_found);
  EXPECT_EQ(run(store_->collect("carers", "01NOSUCHMESSAGE0000000000")).error().code, Errc::not_found);

  ASSERT_TRUE(run(store_->collect("carers", msg.id)));
  auto view = run(store_->find(msg.id)).value();
  EXPECT_EQ(delivery_to(*view, "carers").status, DeliveryStatus::delivered);
  EXPECT_EQ(view->state, MessageState::delivered);
  const auto& delivered = only_event(*view, EventKind::delivered);
  EXPECT_EQ(delivered.destination, "carers");
  EXPECT_EQ(delivered.partner_code, "acknowledged");
  EXPECT_TRUE(run(store_->mailbox("carers", 10)).value().empty());
  auto again = run(store_->collect("carers", msg.id));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::not_found);
  EXPECT_FALSE(again.error().is_retryable());
  EXPECT_EQ(run(store_->held("carers", msg.id)).error().code, Errc::not_found);
}

// A delivery minimised for the partner is collected as minimised, never as stored.
TEST_P(StoreContract, AHeldDeliveryIsCollectedWithTheBodyItWasHeldWith) {
  auto msg = sample("", {"carers", "gp-b"});
  auto committed = run(store_->commit(msg)).value();
  auto held = held_on(committed.jobs[0], now_ms());
  held.held_body = R"({"resourceType":"Bundle","type":"message"})";
  ASSERT_TRUE(run(store_->record_attempt(held)));
  EXPECT_EQ(run(store_->held("carers", msg.id)).value().body, held.held_body);
  EXPECT_EQ(run(store_->body(msg.id)).value(), msg.body);  // the stored record is unchanged
  ASSERT_TRUE(run(store_->record_attempt(held_on(committed.jobs[1], now_ms()))));
  EXPECT_EQ(run(store_->held("gp-b", msg.id)).value().body, msg.body);  // not minimised there
}

TEST_P(StoreContract, HeldDeliveriesPastTheirTimeExpireVisiblyAndCanBeReplayed) {
  const auto now = now_ms();
  auto old_msg = sample("", {"carers"});
  auto new_msg = sample("", {"carers"});
  auto old_job = run(store_->commit(old_msg)).value().jobs[0];
  auto new_job = run(store_->commit(new_msg)).value().jobs[0];
  ASSERT_TRUE(run(store_->record_attempt(held_on(old_job, now - 60'000))));
  ASSERT_TRUE(run(store_->record_attempt(held_on(new_job, now))));

  EXPECT_EQ(run(store_->expire_held("gp-b", now - 30'000)).value().size(), 0u);  // another partner's: untouched
  EXPECT_EQ(run(store_->expire_held("carers", now - 30'000)).value(), (std::vector<std::string>{old_msg.id}));
  EXPECT_EQ(run(store_->expire_held("carers", now - 30'000)).value().size(), 0u);  // once only
  EXPECT_EQ(listed_ids(run(store_->mailbox("carers", 10)).value()), (std::vector<std::string>{new_msg.id}));

  auto view = run(store_->find(old_msg.id)).value();
  EXPECT_EQ(delivery_to(*view, "carers").status, DeliveryStatus::expired);
  EXPECT_EQ(view->state, MessageState::failed);
  const auto& expired = only_event(*view, EventKind::expired);
  EXPECT_EQ(expired.destination, "carers");
  EXPECT_EQ(expired.attempt, 1);
  EXPECT_FALSE(expired.detail.empty());
  EXPECT_EQ(run(store_->collect("carers", old_msg.id)).error().code, Errc::not_found);
  auto failed = run(store_->list(query(MessageState::failed, "", 10))).value();
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].id, old_msg.id);

  auto replayed = run(store_->replay(old_msg.id)).value();
  ASSERT_EQ(replayed.size(), 1u);
  EXPECT_EQ(replayed[0].destination, "carers");
  view = run(store_->find(old_msg.id)).value();
  EXPECT_EQ(delivery_to(*view, "carers").status, DeliveryStatus::pending);
}
}  // namespace tellonce::test

namespace tellonce::test {

// The backlog counts pending deliveries only, per destination, and dates each by its oldest
// record in acceptance order; a retried delivery is still pending, settled ones leave it.
TEST_P(StoreContract, BacklogCountsPendingDeliveriesPerDestinationWithTheOldestReceivedTime) {
  EXPECT_TRUE(run(store_->backlog()).value().empty());

  auto first = sample("", {"trust-a", "gp-b"});
  first.received_at_ms = 1'700'000'000'000;
  auto second = sample("", {"trust-a", "gp-b"});
  second.received_at_ms = 1'700'000'060'000;
  auto third = sample("", {"trust-a", "carers"});
  third.received_at_ms = 1'700'000'120'000;
  auto c1 = run(store_->commit(first)).value();
  auto c2 = run(store_->commit(second)).value();
  auto c3 = run(store_->commit(third)).value();
  ASSERT_TRUE(run(store_->commit(sample("", {}))));  // unroutable: no delivery at all

  auto job = [](const Committed& c, const std::string& destination) {
    return *std::find_if(c.jobs.begin(), c.jobs.end(), [&](const auto& j) { return j.destination == destination; });
  };
  // trust-a: the first is delivered, the second retried (still pending), the third untouched.
  ASSERT_TRUE(run(store_->record_attempt(attempt_on(job(c1, "trust-a"), 1, true))));
  ASSERT_TRUE(run(store_->record_attempt(attempt_on(job(c2, "trust-a"), 1, false))));
  // gp-b: the first dead, the second pending. carers: held in the mailbox.
  ASSERT_TRUE(run(store_->record_attempt(attempt_on(job(c1, "gp-b"), 1, false, true))));
  ASSERT_TRUE(run(store_->record_attempt(held_on(job(c3, "carers"), now_ms()))));

  auto backlog = run(store_->backlog()).value();
  ASSERT_EQ(backlog.size(), 2u);
  EXPECT_EQ(backlog[0].destination, "gp-b");
  EXPECT_EQ(backlog[0].pending, 1u);
  EXPECT_EQ(backlog[0].oldest_received_at_ms, second.received_at_ms);
  EXPECT_EQ(backlog[1].destination, "trust-a");
  EXPECT_EQ(backlog[1].pending, 2u);
  EXPECT_EQ(backlog[1].oldest_received_at_ms, second.received_at_ms);

  // A replayed dead delivery is pending again, and the oldest again.
  ASSERT_EQ(run(store_->replay(first.id)).value().size(), 1u);
  backlog = run(store_->backlog()).value();
  ASSERT_EQ(backlog.size(), 2u);
  EXPECT_EQ(backlog[0].pending, 2u);
  EXPECT_EQ(backlog[0].oldest_received_at_ms, first.received_at_ms);

  reopen();  // durable: read back the same after a restart
  backlog = run(store_->backlog()).value();
  ASSERT_EQ(backlog.size(), 2u);
  EXPECT_EQ(backlog[1].destination, "trust-a");
  EXPECT_EQ(backlog[1].pending, 2u);
}

TEST_P(StoreContract, BacklogOfAClosedStoreIsUnavailable) {
  store_->close();
  auto backlog = run(store_->backlog());
  ASSERT_FALSE(backlog);
  EXPECT_EQ(backlog.error().code, Errc::unavailable);
  EXPECT_TRUE(backlog.error().is_retryable());
}

}  // namespace tellonce::test
