// The seams partners plug into: an InboundAdapter turns a partner's transport into
// InboundRecords for the pipeline; an OutboundAdapter delivers one record to one partner.
// Adapter types are registered in adapters/registry.hpp.
#pragma once

#include "tellonce/error.hpp"
#include "tellonce/message.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <memory>
#include <string>
#include <string_view>

namespace tellonce {

namespace asio = boost::asio;

class Pipeline;
class HttpMounts;
class OriginalReader;  // tellonce/store.hpp
class MailboxStore;    // tellonce/store.hpp
class PartnerLimits;   // tellonce/limits.hpp
class Audit;           // tellonce/audit.hpp

// Who a sender is. An inbound adapter asks by what its transport offers (a bearer key, the
// partner id a trusted header or the channel's settings name, an HL7 v2 sending facility, a
// verified client certificate). Answers are partner ids, empty when nobody matches; the views stay valid
// as long as the directory. Read-only after start-up: safe from any thread.
class PartnerDirectory {
 public:
  virtual ~PartnerDirectory() = default;
  virtual std::string_view by_api_key(std::string_view key) const = 0;
  virtual std::string_view by_id(std::string_view partner_id) const = 0;  // the id if known
  // HL7 v2 MSH-4.1: a partner's listed `hl7v2_facilities`, else the partner with that ODS code.
  virtual std::string_view by_hl7v2_facility(std::string_view facility) const = 0;
  // A client certificate the transport verified: its "sha256:AB:..." fingerprint (see
  // tellonce/tls.hpp), else its RFC 2253 subject, as listed in a partner's `certificates`.
  virtual std::string_view by_certificate(std::string_view fingerprint, std::string_view subject) const {
    (void)fingerprint;
    (void)subject;
    return {};
  }
  // The partners' rate limits and connection caps (tellonce/limits.hpp); nullptr: none. An
  // adapter asks admit() once it knows a record's (or a read's) partner. Any thread.
  virtual PartnerLimits* limits() const { return nullptr; }
};

class InboundAdapter {
 public:
  virtual ~InboundAdapter() = default;
  // Binds or mounts and begins accepting. Called once, at start-up, on the main thread, before
  // the shared HTTP servers start; throws std::exception when it cannot (the broker stops).
  virtual void start() = 0;
  // Stops taking new records; records in flight still complete. Called at most once, after start().
  virtual void stop() = 0;
  virtual std::string describe() const = 0;  // "fhir-rest on 127.0.0.1:8080/fhir"
};

// What an inbound adapter gets; all of it outlives the adapter. Records go to the pipeline,
// whose accept() may be awaited from any executor and resumes on the caller's.
struct InboundContext {
  const PartnerDirectory& partners;
  Pipeline& pipeline;
  asio::any_io_executor executor;  // for the adapter's own I/O and timers
  HttpMounts* http;                // the shared HTTP servers, for adapters that serve HTTP; else nullptr
  std::string channel_id;          // config `inbound[].id`
};

// What one delivery came to, in transport-neutral terms plus the partner's own code. Each
// adapter decides what its wire's answers mean: fhir-rest calls 4xx (but 408/425/429)
// permanent and 5xx, timeouts and refused connections retryable. `held` means the record was
// placed in the partner's mailbox (the `mailbox` adapter): the delivery waits there, held,
// until the partner collects it, and the dispatcher moves on to the next record.
struct DeliveryResult {
  DeliveryOutcome outcome = DeliveryOutcome::retryable;
  std::string partner_code;  // "HTTP 201", "ACK AE"...; empty when nothing was answered
  std::string detail;        // for people: the partner's reason, or the transport error
  // The broker's own resources failed before the partner was reached (out of file descriptors,
  // out of memory, no socket): retryable, never the partner's failure, never dead-lettered.
  bool broker_fault = false;
};

// A socket error that is this process running out (descriptors, memory, buffers): what
// outbound adapters mark as broker_fault instead of blaming the partner.
inline bool is_broker_resource_error(const boost::system::error_code& ec) {
  namespace error = boost::asio::error;
  return ec == error::no_descriptors || ec == error::no_memory || ec == error::no_buffer_space ||
         ec == boost::system::errc::too_many_files_open_in_system;
}

class OutboundAdapter {
 public:
  virtual ~OutboundAdapter() = default;
  // Sends one record. Never throws for a partner's failure: that is a DeliveryResult.
  // Threading: called on an io thread; resumes the caller on the executor it was awaited from;
  // blocking work (a C library, file I/O) belongs on the adapter's own thread. Lifetime: `job`
  // is owned by the awaiting dispatcher and stays alive until this coroutine completes; the
  // adapter must not keep a reference (or a pointer into job.body) after it has returned.
  // (A reference rather than a copy: the body would otherwise be copied once per attempt.)
  // stop() may come while deliveries are in flight; they then end as retryable.
  virtual asio::awaitable<DeliveryResult> deliver(const DeliveryJob& job) = 0;
  virtual std::string describe() const = 0;
  virtual void stop() {}
};

// What an outbound adapter gets; everything referred to stays valid while the io_context runs
// (the broker destroys it only after the io threads have stopped).
struct OutboundContext {
  asio::io_context& io;
  std::string partner_id;
  OriginalReader& originals;  // for adapters that forward a partner's bytes
  // For adapters the partner calls instead (the `mailbox` adapter: the partner collects its
  // held deliveries over HTTP). Set by `tellonce serve`; nullptr where there is none (tests,
  // tools), and an adapter that needs one throws std::logic_error from create(). `http` may be
  // mounted on only during create() (before the servers start); `partners` is read-only and
  // safe from any thread; `mailbox` follows tellonce/store.hpp (any thread, resumes on the
  // caller's executor).
  HttpMounts* http = nullptr;
  const PartnerDirectory* partners = nullptr;
  MailboxStore* mailbox = nullptr;
  std::string api_listen;  // the API's listen address (config `api.listen`): where such an adapter mounts by default
  // The audit log (tellonce/audit.hpp), for what an adapter settles outside the dispatcher (a
  // mailbox's collections and expiries); nullptr: not audited. record() from any thread.
  Audit* audit = nullptr;
};

}  // namespace tellonce
