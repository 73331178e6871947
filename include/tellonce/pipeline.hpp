// The path every inbound record takes: parse, validate, route, store durably; then the
// deliveries go to the queue. accept() completes only once the record is committed.
#pragma once

#include "tellonce/error.hpp"
#include "tellonce/json.hpp"
#include "tellonce/message.hpp"
#include "tellonce/store.hpp"

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tellonce {

namespace asio = boost::asio;

struct Accepted {
  std::string message_id;
  bool duplicate = false;
  MessageState state = MessageState::accepted;   // unroutable when no route matched
  std::vector<std::string> destinations;
  std::vector<Issue> warnings;                    // validator warnings: accepted anyway
};

struct ReplayCounts {
  std::size_t matched = 0, replayed = 0;
};

struct PipelineCounters {
  std::uint64_t accepted = 0, duplicates = 0, rejected = 0, unroutable = 0;
};

class Pipeline {
 public:
  virtual ~Pipeline() = default;
  // Failure is permanent (4xx with every issue found) or retryable (503: store unavailable).
  virtual asio::awaitable<Result<Accepted>> accept(InboundRecord record) = 0;
  // Re-sends the dead deliveries of a message. 404 Failure when unknown.
  virtual asio::awaitable<Result<std::size_t>> replay(std::string message_id) = 0;
  // As replay(), noting who asked on the trail. The default forgets the actor.
  virtual asio::awaitable<Result<std::size_t>> replay_as(std::string message_id, std::string actor) {
    (void)actor;
    return replay(std::move(message_id));
  }
  // Replay by filter (Store::replay_matching): how many dead/expired deliveries match and, unless
  // dry_run, how many were queued again. The default: Errc::unsupported.
  virtual asio::awaitable<Result<ReplayCounts>> replay_matching(MessageQuery query, std::string actor, bool dry_run);
  virtual PipelineCounters counters() const { return {}; }
};

inline asio::awaitable<Result<ReplayCounts>> Pipeline::replay_matching(MessageQuery, std::string, bool) {
  co_return store_unsupported("replay by filter");
}

class Audit;
class BrokerMetrics;
class ConsentGate;
class Validator;
class Router;
class Store;
class Queue;

// Where records of min_body_bytes or more are parsed and validated: on a pool of `threads`
// threads named "validate" that the pipeline owns (0: inline, on the caller's I/O thread).
// 256 KiB: parse plus the shipped validator run at 100-150 MB/s (a 9 MB Patient takes 60-80 ms
// on the 2-core build machine), so a record below it holds an I/O thread for 2-3 ms at most,
// while the records of the load benchmark (a few KiB) stay inline and pay no thread hop.
// Two threads: one huge record does not queue the next behind it.
struct HeavyRecords {
  std::size_t min_body_bytes = 256 * 1024;
  unsigned threads = 2;
};

// The broker's Pipeline: parse → validate → route → commit → enqueue. accept() may be called
// from any number of coroutines at once, on any executors; each resumes on its own.
// `metrics` (broker/metrics), when given, must outlive the pipeline; it is told of every record.
// `audit` (tellonce/audit.hpp), when given, must outlive it: each receipt, duplicate,
// rejection and delivery consent withheld is queued there before accept() completes.
// `consent` (broker/consent), when given, must outlive it: it withholds destinations after
// routing (each one a "withheld" event on the trail) and learns the Consents of accepted records.
std::unique_ptr<Pipeline> make_pipeline(const Validator& validator, const Router& router, Store& store,
                                        Queue& queue, JsonLimits limits, HeavyRecords heavy = {},
                                        BrokerMetrics* metrics = nullptr, Audit* audit = nullptr,
                                        ConsentGate* consent = nullptr);

// Which key makes a resubmission a duplicate: the client's header key, else MessageHeader.id
// of a message Bundle, else Bundle.id. Empty for single resources without a header key.
std::string idempotency_key_for(const InboundRecord& rec, const rapidjson::Value& record);

}  // namespace tellonce
