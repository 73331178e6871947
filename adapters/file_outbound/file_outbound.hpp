// Outbound `file`: each delivered record becomes one file in the partner's outbox folder,
// for partners that have no endpoint and collect files instead (a folder synced to them, or
// read by a script of theirs). A delivery counts as done only once the file is durable:
// written under a temporary name, flushed, renamed to its final name, and the folder flushed.
//
// File names are "<message id>.<ext>" (".json" for FHIR JSON): message ids sort in the order
// the broker accepted the records, and a redelivery after a crash replaces the same file, so
// the outbox never holds a record twice.
//
// Threading: file I/O blocks, so each adapter has one writer thread of its own; deliver()
// resumes the awaiting coroutine on that coroutine's own executor.
#pragma once

#include "tellonce/registry.hpp"

#include <filesystem>

namespace tellonce {

struct FileOutboundSettings {
  std::filesystem::path directory;  // the partner's outbox; must exist and be writable
  bool fsync = true;                // false only for throwaway test rigs: a crash may lose files
};

OutboundAdapterType file_outbound_type();

// The adapter itself, for tests and embedding.
std::unique_ptr<OutboundAdapter> make_file_outbound(const FileOutboundSettings& settings);

}  // namespace tellonce
