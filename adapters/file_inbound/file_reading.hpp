// Reading one inbound file into records and writing its reports: the part of the `file` inbound
// adapter that needs no I/O, shared with `tellonce csv-check` and the fuzz target. Pure functions,
// safe from any thread; report words never quote a cell.
#pragma once

#include "mapping.hpp"
#include "tellonce/error.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
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
