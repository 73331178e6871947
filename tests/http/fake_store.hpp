// Test support: a Store whose find/list/replay answers come from fields the test sets.
#pragma once

#include "support/null_store.hpp"

#include <map>

namespace tellonce::testing {

class FakeStore : public NullStore {
 public:
  std::map<std::string, MessageView> messages;
  std::vector<MessageSummary> summaries;
  MessageQuery last_query;

  asio::awaitable<Result<std::optional<MessageView>>> find(std::string id) override {
    auto it = messages.find(id);
    if (it == messages.end()) co_return std::optional<MessageView>{};
    co_return std::optional<MessageView>{it->second};
  }
  asio::awaitable<Result<std::vector<MessageSummary>>> list(MessageQuery q) override {
    last_query = q;
    co_return summaries;
  }
};

}  // namespace tellonce::testing
