// Test support: a Store that stores nothing. Fakes derive from it and override only what their
// test looks at. Completes every call at once on the caller's executor; not thread-safe.
#pragma once

#include "tellonce/store.hpp"

namespace tellonce::test {

class NullStore : public Store {
 public:
  asio::awaitable<Result<Committed>> commit(NewMessage) override {
    co_return Failure::permanent(Errc::internal, Issue{Severity::error, "exception", "not in this fake", "", ""});
  }
  asio::awaitable<Result<void>> record_attempt(DeliveryAttempt) override { co_return Result<void>{}; }
  asio::awaitable<Result<std::optional<MessageView>>> find(std::string) override {
    co_return std::optional<MessageView>{};
  }
  asio::awaitable<Result<std::string>> body(std::string) override {
    co_return Failure::permanent(Errc::not_found, Issue{Severity::error, "not-found", "not in this fake", "", ""});
  }
  asio::awaitable<Result<std::optional<StoredBytes>>> original(std::string) override {
    co_return Failure::permanent(Errc::not_found, Issue{Severity::error, "not-found", "not in this fake", "", ""});
  }
  asio::awaitable<Result<std::vector<MessageSummary>>> list(MessageQuery) override {
    co_return std::vector<MessageSummary>{};
  }
  asio::awaitable<Result<std::vector<DeliveryJob>>> replay(std::string) override {
    co_return std::vector<DeliveryJob>{};
  }
  Result<std::vector<DeliveryJob>> load_pending(std::size_t) override { return std::vector<DeliveryJob>{}; }
  asio::awaitable<Result<void>> health() override { co_return Result<void>{}; }
  asio::awaitable<Result<std::vector<DestinationBacklog>>> backlog() override {
    co_return std::vector<DestinationBacklog>{};
  }
  void close() override {}
  asio::awaitable<Result<std::vector<HeldRecord>>> mailbox(std::string, int) override {
    co_return std::vector<HeldRecord>{};
  }
  asio::awaitable<Result<HeldRecord>> held(std::string, std::string) override {
    co_return Failure::permanent(Errc::not_found, Issue{Severity::error, "not-found", "not in this fake", "", ""});
  }
  asio::awaitable<Result<void>> collect(std::string, std::string) override {
    co_return Failure::permanent(Errc::not_found, Issue{Severity::error, "not-found", "not in this fake", "", ""});
  }
  asio::awaitable<Result<std::vector<std::string>>> expire_held(std::string, std::int64_t) override {
    co_return std::vector<std::string>{};
  }
};

}  // namespace tellonce::test
