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

#include "file_reading.hpp"
#include "tellonce/registry.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tellonce {

InboundAdapterType file_inbound_type();
std::unique_ptr<InboundAdapter> make_file_inbound(const FileInboundSettings& settings, InboundContext& ctx);

}  // namespace tellonce
