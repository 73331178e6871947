// Test support: a Store whose find/list/replay answers come from fields the test sets.
#pragma once

#include "store/store.hpp"

#include <map>

namespace tellonce::testing {

class FakeStore : public Store {
 public:
  std::map<std::string, MessageView> messages;
  std::vector<MessageSummary> summaries;
  MessageQuery last_query;

  asio::awaitable<Result<Committed>> commit(NewMessage) override {
    co_return Failure::permanent(500, Issue{Severity::error, "exception", "not in this fake", "", ""});
  }
  asio::awaitable<Result<void>> record_attempt(DeliveryAttempt) override { co_return Result<void>{}; }
  asio::awaitable<Result<std::optional<MessageView>>> find(std::string id) override {
    auto it = messages.find(id);
    if (it == messages.end()) co_return std::optional<MessageView>{};
    co_return std::optional<MessageView>{it->second};
  }
  asio::awaitable<Result<std::vector<MessageSummary>>> list(MessageQuery q) override {
    last_query = q;
    co_return summaries;
  }
  asio::awaitable<Result<std::vector<DeliveryJob>>> replay(std::string) override {
    co_return std::vector<DeliveryJob>{};
  }
  Result<std::vector<DeliveryJob>> load_pending() override { return std::vector<DeliveryJob>{}; }
  void close() override {}
};

}  // namespace tellonce::testing
