// Test support: an OutboundAdapter that answers from a script and records what it was given.
// deliver() completes at once on the caller's executor; not thread-safe.
#pragma once

#include "tellonce/adapter.hpp"

#include <functional>
#include <vector>

namespace tellonce::test {

inline DeliveryResult delivered() { return {DeliveryOutcome::ok, "HTTP 200", ""}; }
inline DeliveryResult unavailable() { return {DeliveryOutcome::retryable, "HTTP 503", "down for maintenance"}; }
inline DeliveryResult refused() { return {DeliveryOutcome::permanent, "HTTP 400", "Patient.identifier missing"}; }

class RecordingOutbound : public OutboundAdapter {
 public:
  // The script gets the 0-based call number; the default accepts everything.
  explicit RecordingOutbound(std::function<DeliveryResult(int)> script = [](int) { return delivered(); })
      : script_(std::move(script)) {}

  int calls = 0;
  std::vector<DeliveryJob> received;  // a copy of each job, in call order
  bool stopped = false;

  asio::awaitable<DeliveryResult> deliver(const DeliveryJob& job) override {
    received.push_back(job);
    co_return script_(calls++);
  }
  std::string describe() const override { return "recording"; }
  void stop() override { stopped = true; }

 private:
  std::function<DeliveryResult(int)> script_;
};

}  // namespace tellonce::test
