// One-line structured log to stderr: `2026-11-23T10:00:00.123Z level component message key=value`,
// or with Format::json (config `log.format: json`) one JSON object a line:
// {"time":"...","level":"info","component":"ingest","message":"...","messageId":"01M...","partner":"rtx"}
// where messageId, partner, destination, channel and event are copied from the message's own
// message=, partner=, destination=, channel= and event= pairs when it has them; a line with a
// destination= but no partner= names that destination as its partner (a destination is a partner).
// Log messages never carry patient data (the seams issue); the JSON form adds none. Any thread;
// set_* before serving.
//
// event= is a stable name for what happened, put before any text a partner can influence (the
// first pair of a key wins). Lines about a record: record.rejected, record.unroutable,
// record.withheld, mllp.refused, file.processed, file.rejected, mailbox.expired; its deliveries:
// delivery.retry (debug), delivery.dead, delivery.queue_refused, delivery.store_failed,
// delivery.adapter_failed, delivery.unsettled, delivery.broker_fault, delivery.broker_fault_over;
// a destination's circuit: circuit.open, circuit.probe, circuit.probe_failed, circuit.closed;
// operators: destination.paused, destination.resumed, destination.paused_at_start,
// message.replayed, message.replayed_by_filter. None is logged for a record that goes well.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tellonce {
// "2026-11-23T10:00:00.123Z": the one UTC timestamp form of logs, the API and the audit log.
std::string iso8601_utc(std::int64_t ms_since_epoch);
}  // namespace tellonce

namespace tellonce::log {

enum class Level { debug, info, warn, error };
void set_level(Level l);
enum class Format { text, json };
void set_format(Format f);
bool enabled(Level l);
void write(Level l, std::string_view component, std::string_view message);
// The JSON form of one line (with its newline), as write() emits it with Format::json.
std::string json_line(Level l, std::string_view component, std::string_view message);

inline void info(std::string_view c, std::string_view m) { write(Level::info, c, m); }
inline void warn(std::string_view c, std::string_view m) { write(Level::warn, c, m); }
inline void error(std::string_view c, std::string_view m) { write(Level::error, c, m); }
inline void debug(std::string_view c, std::string_view m) { if (enabled(Level::debug)) write(Level::debug, c, m); }

}  // namespace tellonce::log
