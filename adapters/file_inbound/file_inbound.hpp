// Inbound files (type `file`): a channel watches one partner's inbox folder for CSV exports
// (each row turned into FHIR by the channel's `mapping:`) and NDJSON files (one FHIR resource per
// line), and hands each row or line to the pipeline as a record of its own.
//
// Folder protocol (config/README.md, "file inbound"):
// - a file is taken once its size and modification time are unchanged over one poll; names
//   starting with a dot or ending in .tmp or .part are never taken (write under such a name,
//   then rename);
// - each row's record has idempotency key "<sha256 of the file>:<row number>", so processing a
//   file again (after a crash, or a resend of the same file) stores no row twice: rows already
//   stored come back as duplicates and count as done;
// - when every row has had its answer, reports/<file>.report.csv and .report.json name each bad
//   row, the column and what is wrong (never a value), and the file moves to archive/; a file
//   that cannot be read at all (not UTF-8, no header, columns the mapping needs are missing)
//   moves to rejected/ with its two reports beside it. When the broker cannot store records now
//   (a retryable failure) or is stopping, the file stays in the inbox and is taken again later.
//
// Threading: folder listing, reading, hashing, mapping, report writing and moves run on the
// adapter's own thread ("file-in"); the records go to the pipeline from one coroutine on a strand
// of the context's executor, one at a time in row order. Nothing blocks an io thread.
// Lifetimes: start() creates archive/, rejected/ and reports/ (throws when it cannot) and starts
// polling; stop() ends polling after the record in flight. Logs name the file, row numbers and
// counts, never a cell.
#pragma once

#include "mapping.hpp"
#include "tellonce/registry.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tellonce {

enum class FileFormat { by_extension, csv, ndjson };

struct FileInboundSettings {
  std::filesystem::path inbox;
  bool create_inbox = false;                   // start() makes a missing inbox (else it must exist)
  std::string partner;                         // every record's source
  FileFormat format = FileFormat::by_extension;  // .csv, .ndjson/.jsonl
  std::chrono::milliseconds poll_interval{1000};
  std::uint64_t max_file_bytes = 64 * 1024 * 1024;
  std::shared_ptr<const csvmap::Mapping> mapping;  // null: CSV files are rejected
};

InboundAdapterType file_inbound_type();
std::unique_ptr<InboundAdapter> make_file_inbound(const FileInboundSettings& settings, InboundContext& ctx);

// What happened to one file, for its reports.
struct RowReport {
  int row = 0;          // 0: the file as a whole
  std::string column;   // empty: the row as a whole
  std::string problem;
};

struct FileReport {
  std::string file;     // its name
  std::string sha256;
  std::string format;   // "csv", "ndjson"
  bool rejected = false;
  std::size_t rows = 0, accepted = 0, duplicates = 0;
  std::vector<RowReport> problems;
  std::size_t bad_rows() const;
};

// Problems in row order, each said once.
void tidy(FileReport& r);
std::string report_csv(const FileReport& r);
std::string report_json(const FileReport& r);

// One row or line ready for the pipeline.
struct PreparedRecord {
  int row = 0;
  std::string body;                 // FHIR JSON
  std::string original_bytes;       // CSV: header + the row; NDJSON: empty (the body is what came)
  std::string idempotency_key;
  std::vector<csvmap::Placement> placements;
};

struct PreparedFile {
  FileReport report;                // rejected, or the rows the mapping already refused
  std::vector<PreparedRecord> records;
};

// Reads a whole file (no I/O: the bytes are given) into records and the problems found so far.
PreparedFile prepare_file(const FileInboundSettings& settings, const std::string& name, std::string_view bytes);
// Adds what the pipeline (or the validator) refused about one record to the report.
void add_refusal(FileReport& report, const PreparedRecord& record, const std::vector<Issue>& issues);
// Which format a file is read as; nullopt when the settings say nothing and the extension neither.
std::optional<FileFormat> format_of(const FileInboundSettings& settings, const std::string& name);

}  // namespace tellonce
