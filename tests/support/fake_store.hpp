// Test support: an in-memory Store and a decorator that makes chosen operations fail.
// Both complete every call at once on the caller's executor and are not thread-safe: use them
// from one io thread (or the test's own thread).
#pragma once

#include "support/null_store.hpp"

#include <map>
#include <vector>

namespace tellonce::test {

// Keeps what it is given: commits (one DeliveryJob per destination, duplicates by source and
// idempotency key answered with the first id), attempts, and find/list answers the test sets.
class FakeStore : public NullStore {
 public:
  std::vector<NewMessage> stored;                     // committed, in order
  std::vector<DeliveryAttempt> attempts;              // recorded, in order
  std::map<std::string, MessageView> messages;        // what find() answers
  std::vector<MessageSummary> summaries;              // what list() answers
  MessageQuery last_query;                            // what list() was last asked
  std::vector<DeliveryJob> pending;                   // what load_pending() answers

  asio::awaitable<Result<Committed>> commit(NewMessage m) override {
    Committed c;
    if (!m.idempotency_key.empty()) {
      auto key = m.source + "\n" + m.idempotency_key;
      if (auto it = by_key_.find(key); it != by_key_.end()) {
        c.outcome = {it->second, true, MessageState::delivering};
        co_return c;
      }
      by_key_[key] = m.id;
    }
    c.outcome = {m.id, false, m.destinations.empty() ? MessageState::unroutable : MessageState::delivering};
    for (auto& d : m.destinations) {
      DeliveryJob job;
      job.delivery_id = next_delivery_id_++;
      job.seq = job.delivery_id;
      job.message_id = m.id;
      job.destination = d;
      c.jobs.push_back(std::move(job));
    }
    stored.push_back(std::move(m));
    co_return c;
  }
  asio::awaitable<Result<void>> record_attempt(DeliveryAttempt attempt) override {
    attempts.push_back(std::move(attempt));
    co_return Result<void>{};
  }
  asio::awaitable<Result<std::optional<MessageView>>> find(std::string id) override {
    auto it = messages.find(id);
    if (it == messages.end()) co_return std::optional<MessageView>{};
    co_return std::optional<MessageView>{it->second};
  }
  // Body views noted (issue 12): "id what actor reason".
  std::vector<std::string> views;
  asio::awaitable<Result<void>> record_view(std::string id, std::string what, std::string actor,
                                            std::string reason) override {
    if (!messages.contains(id))
      co_return Failure::permanent(Errc::not_found, Issue{Severity::error, "not-found", "no message " + id, "", ""});
    views.push_back(id + " " + what + " " + actor + " " + reason);
    co_return Result<void>{};
  }
  asio::awaitable<Result<std::string>> body(std::string id) override {
    for (const auto& m : stored)
      if (m.id == id) co_return m.body;
    co_return Failure::permanent(Errc::not_found, Issue{Severity::error, "not-found", "no message " + id, "", ""});
  }
  // A stored message's original: nullopt when it was not converted.
  asio::awaitable<Result<std::optional<StoredBytes>>> original(std::string id) override {
    for (const auto& m : stored)
      if (m.id == id)
        co_return m.original_content_type.empty()
            ? std::optional<StoredBytes>{}
            : std::optional<StoredBytes>{StoredBytes{m.original_content_type, m.original_bytes}};
    co_return Failure::permanent(Errc::not_found, Issue{Severity::error, "not-found", "no message " + id, "", ""});
  }
  asio::awaitable<Result<std::vector<MessageSummary>>> list(MessageQuery q) override {
    last_query = q;
    co_return summaries;
  }
  Result<std::vector<DeliveryJob>> load_pending(std::size_t) override { return pending; }

  std::vector<DeliveryAttempt> attempts_for(const std::string& destination) const {
    std::vector<DeliveryAttempt> out;
    for (const auto& a : attempts)
      if (a.destination == destination) out.push_back(a);
    return out;
  }

 private:
  std::map<std::string, std::string> by_key_;
  std::int64_t next_delivery_id_ = 0;
};

// Forwards to `inner`, except that the next `fail_next(op, n)` calls of an operation fail as a
// store outage (retryable, Errc::unavailable) without reaching `inner`.
class FailingStore : public Store {
 public:
  enum class FailOn { commit, record_attempt, find, body, original, list, replay, load_pending, mailbox, held,
                      collect, expire_held };

  explicit FailingStore(Store& inner) : inner_(inner) {}
  void fail_next(FailOn op, int times = 1) { left_[op] = times; }
  int failures() const { return failures_; }  // how many calls were made to fail so far

  static Failure outage() {
    return Failure::retryable(Errc::unavailable, Issue{Severity::error, "transient", "store down", "", ""});
  }

  asio::awaitable<Result<Committed>> commit(NewMessage m) override {
    if (fails(FailOn::commit)) co_return outage();
    co_return co_await inner_.commit(std::move(m));
  }
  asio::awaitable<Result<void>> record_attempt(DeliveryAttempt a) override {
    if (fails(FailOn::record_attempt)) co_return outage();
    co_return co_await inner_.record_attempt(std::move(a));
  }
  asio::awaitable<Result<std::optional<MessageView>>> find(std::string id) override {
    if (fails(FailOn::find)) co_return outage();
    co_return co_await inner_.find(std::move(id));
  }
  asio::awaitable<Result<std::string>> body(std::string id) override {
    if (fails(FailOn::body)) co_return outage();
    co_return co_await inner_.body(std::move(id));
  }
  asio::awaitable<Result<std::optional<StoredBytes>>> original(std::string id) override {
    if (fails(FailOn::original)) co_return outage();
    co_return co_await inner_.original(std::move(id));
  }
  asio::awaitable<Result<std::vector<MessageSummary>>> list(MessageQuery q) override {
    if (fails(FailOn::list)) co_return outage();
    co_return co_await inner_.list(std::move(q));
  }
  asio::awaitable<Result<std::vector<DeliveryJob>>> replay(std::string id) override {
    if (fails(FailOn::replay)) co_return outage();
    co_return co_await inner_.replay(std::move(id));
  }
  Result<std::vector<DeliveryJob>> load_pending(std::size_t max_body_bytes) override {
    if (fails(FailOn::load_pending)) return outage();
    return inner_.load_pending(max_body_bytes);
  }
  asio::awaitable<Result<void>> health() override { co_return co_await inner_.health(); }
  asio::awaitable<Result<std::vector<DestinationBacklog>>> backlog() override { co_return co_await inner_.backlog(); }
  void close() override { inner_.close(); }
  asio::awaitable<Result<std::vector<HeldRecord>>> mailbox(std::string partner, int limit) override {
    if (fails(FailOn::mailbox)) co_return outage();
    co_return co_await inner_.mailbox(std::move(partner), limit);
  }
  asio::awaitable<Result<HeldRecord>> held(std::string partner, std::string id) override {
    if (fails(FailOn::held)) co_return outage();
    co_return co_await inner_.held(std::move(partner), std::move(id));
  }
  asio::awaitable<Result<void>> collect(std::string partner, std::string id) override {
    if (fails(FailOn::collect)) co_return outage();
    co_return co_await inner_.collect(std::move(partner), std::move(id));
  }
  asio::awaitable<Result<std::vector<std::string>>> expire_held(std::string partner,
                                                                 std::int64_t held_before_ms) override {
    if (fails(FailOn::expire_held)) co_return outage();
    co_return co_await inner_.expire_held(std::move(partner), held_before_ms);
  }

 private:
  bool fails(FailOn op) {
    auto it = left_.find(op);
    if (it == left_.end() || it->second <= 0) return false;
    --it->second;
    ++failures_;
    return true;
  }

  Store& inner_;
  std::map<FailOn, int> left_;
  int failures_ = 0;
};

}  // namespace tellonce::test
