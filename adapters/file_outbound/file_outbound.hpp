// Outbound `file`: delivered records go into the partner's outbox folder, for partners that have
// no endpoint and collect files instead (a folder synced to them, or read by a script of theirs).
// A delivery counts as done only once what holds it is durable: written under a temporary name,
// flushed, renamed to its final name, and the folder flushed.
//
// Formats (`format:`):
// - json-per-record (the default): each record is "<message id>.json" (".dat" for non-JSON):
//   message ids sort in the order the broker accepted the records, and a redelivery after a crash
//   replaces the same file, so the outbox never holds a record twice.
// - ndjson / csv: records are gathered into batches, closed at `batch_max_records` records or
//   `batch_max_wait` after the batch's first record, whichever comes first. A batch is one file
//   "batch-<16 digits>.ndjson" (or ".csv": a header row, then one row per record through the
//   `csv` reverse mapping) and, written after it, "batch-<16 digits>.manifest.json" naming the
//   file, its record count, byte size, sha256, the message ids in order and when it was made.
//   Names sort in batch order. Every delivery in a batch completes once both are durable: all ok,
//   or all with the same retryable failure. A record the CSV mapping cannot render (not the
//   mapping's resource type, not JSON) fails permanently on its own and joins no batch.
//   Reader's contract: read only files a manifest names, never "*.tmp"; remove the data file
//   before its manifest. At start-up the adapter reads the manifests in the outbox and answers ok
//   at once for a message id one of them lists (a redelivery after a crash writes nothing), and
//   removes its own leftovers ("*.tmp", batch files no manifest names).
//
// Threading: file I/O blocks, so each adapter has one writer thread of its own; deliver()
// resumes the awaiting coroutine on that coroutine's own executor. stop() (any thread) ends the
// deliveries still waiting for their batch as retryable; later deliveries are retryable at once.
// Errors: every failed system call is retryable with the errno's name as partner code
// ("file ENOSPC").
#pragma once

#include "tellonce/registry.hpp"

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace tellonce {

enum class FileOutboundFormat { json_per_record, ndjson, csv };

// One CSV column: its header and the FHIR path of its value (see csv_mapping.hpp for the paths).
struct CsvColumn {
  std::string header;
  std::string path;
};

struct FileOutboundSettings {
  std::filesystem::path directory;  // the partner's outbox; must exist and be writable
  bool fsync = true;                // false only for throwaway test rigs: a crash may lose files
  FileOutboundFormat format = FileOutboundFormat::json_per_record;
  std::size_t batch_max_records = 500;                 // ndjson/csv: a batch closes at this many
  std::chrono::milliseconds batch_max_wait{5000};      // ... or this long after its first record
  std::string csv_resource_type;                       // csv: the one resource type it renders
  std::vector<CsvColumn> csv_columns;                  // csv: the columns, in order
};

OutboundAdapterType file_outbound_type();

// The adapter itself, for tests and embedding. Throws std::invalid_argument for a CSV mapping
// whose paths do not parse (parse_settings reports those as config problems first).
std::unique_ptr<OutboundAdapter> make_file_outbound(const FileOutboundSettings& settings);

}  // namespace tellonce
