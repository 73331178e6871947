// The seams partners plug into: an InboundAdapter turns a partner's transport into
// InboundRecords for the pipeline; an OutboundAdapter delivers one record to one partner.
#pragma once

#include "core/error.hpp"
#include "core/message.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <memory>
#include <string>

namespace tellonce {

namespace asio = boost::asio;

struct Config;
class Pipeline;
class HttpServers;
class Store;

class InboundAdapter {
 public:
  virtual ~InboundAdapter() = default;
  virtual void start() = 0;   // bind, mount, begin accepting
  virtual void stop() = 0;
  virtual std::string describe() const = 0;  // "fhir-rest on 127.0.0.1:8080/fhir"
};

struct InboundContext {
  asio::io_context& io;
  Pipeline& pipeline;
  HttpServers& http;
  Store& store;
  const Config& config;
  std::string channel_id;
};

// What one delivery came to, in transport-neutral terms plus the partner's own code. Each
// adapter decides what its wire's answers mean: fhir-rest calls 4xx (but 408/425/429)
// permanent and 5xx, timeouts and refused connections retryable.
struct DeliveryResult {
  DeliveryOutcome outcome = DeliveryOutcome::retryable;
  std::string partner_code;  // "HTTP 201", "ACK AE"...; empty when nothing was answered
  std::string detail;        // for people: the partner's reason, or the transport error
  // The broker's own resources failed before the partner was reached (out of file descriptors,
  // out of memory, no socket): retryable, never the partner's failure, never dead-lettered.
  bool broker_fault = false;
};

class OutboundAdapter {
 public:
  virtual ~OutboundAdapter() = default;
  // Sends one record. Never throws for a partner's failure: that is a DeliveryResult.
  virtual asio::awaitable<DeliveryResult> deliver(const DeliveryJob& job) = 0;
  virtual std::string describe() const = 0;
  virtual void stop() {}
};

struct OutboundContext {
  asio::io_context& io;
  std::string partner_id;
};

}  // namespace tellonce
