// The broker's Audit (tellonce/audit.hpp): an append-only NDJSON file of hash-chained entries,
// written in batches by its own thread (group append, one fdatasync a batch), with a head file
// (PATH.head: the last durable seq, hash and size) as the anchor that makes a cut tail visible.
// Format, guarantees and limits: docs/audit.md.
//
// Threading: AuditLog's record()/record_durable() from any thread (the seam's contract);
// open_audit_log, catch_up and close from one thread at start-up/shutdown. verify_audit_log and
// export_audit_fhir are plain blocking functions (the CLI; tests), reading the file as a stream.
// Errors: open_audit_log throws std::runtime_error (start-up) for an unwritable path, or a log
// that fails its check (a cut tail, a broken chain since the head): the broker refuses to
// append to a log it cannot vouch for. verify and export report problems as values.
#pragma once

#include "tellonce/audit.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>

namespace tellonce {

class Store;

struct AuditLogSettings {
  std::filesystem::path path;
  // How long the writer gathers entries before a batch is written (0: as soon as any wait).
  std::chrono::milliseconds flush_delay{0};
};

class AuditLog : public Audit {
 public:
  // Start-up, before serving: appends an entry for every receipt and settled delivery the
  // store holds from shortly before the log's last durable entry onwards that the log lacks
  // (lost when the process died between the store's commit and the audit's batch). Blocking.
  // Returns how many were appended; Errc::unsupported when the store cannot list its facts.
  virtual Result<std::size_t> catch_up(Store& store) = 0;
  // Writes what is queued, then stops the writer; later record_durable() calls fail.
  virtual void close() = 0;
  virtual std::string describe() const = 0;
};

std::unique_ptr<AuditLog> open_audit_log(const AuditLogSettings& settings);

// How far back catch_up looks before the last durable entry: longer than any commit can take
// between the store stamping a record and the audit queueing it (docs/audit.md).
inline constexpr std::chrono::minutes kAuditCatchUpWindow{10};

std::filesystem::path audit_head_path(const std::filesystem::path& log);

// One line of the log, parsed and its own hash checked.
struct AuditLine {
  std::int64_t seq = 0;
  std::int64_t at_ms = 0;
  std::string prev, hash;
  AuditEntry entry;
};
// The line without its newline. nullopt with `why` when it is not a well-formed entry or its
// hash does not match its content.
std::optional<AuditLine> parse_audit_line(std::string_view line, std::string& why);
// The line for an entry (with its newline); the hash covers every byte before `,"hash"`.
std::string audit_line(std::int64_t seq, std::int64_t at_ms, const AuditEntry& entry, const std::string& prev_hash);
extern const std::string kAuditGenesisHash;  // 64 zeros: the first entry's prev

struct AuditVerifyReport {
  bool ok = true;
  std::int64_t entries = 0;
  std::int64_t bad_line = 0;  // 1-based line of the first bad entry (0: none, or the end)
  std::string problem;        // "changed: ...", "removed: ...", "reordered: ...", "truncated: ..."
  std::string warning;        // not a failure: no head file, an unfinished last line
};
AuditVerifyReport verify_audit_log(const std::filesystem::path& log);

// FHIR R4 AuditEvent resources, one a line, for the entries at or after since_ms.
// Returns how many were written; problems (an unreadable line) go to `errors`.
std::size_t export_audit_fhir(const std::filesystem::path& log, std::int64_t since_ms, std::ostream& out,
                              std::ostream& errors);
std::string audit_event_json(const AuditLine& line);

}  // namespace tellonce
