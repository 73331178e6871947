// Test support: small, valid values to start a test from; the test changes what it looks at.
#pragma once

#include "tellonce/message.hpp"

#include <cstdint>
#include <string>

namespace tellonce::test {

// A queued delivery of message "m<seq>" to `destination`, about `patient` (empty: no ordering
// key), with a small Patient body.
DeliveryJob job(std::int64_t seq, std::string destination = "trust-a", std::string patient = "9000000009");

}  // namespace tellonce::test
