// The `file` outbound adapter's batching formats, ndjson and csv (see file_outbound.hpp for what
// a batch and its manifest are, and the reader's contract). Private to adapters/file_outbound.
#pragma once

#include "csv_mapping.hpp"
#include "file_outbound.hpp"

#include <memory>

namespace tellonce::file_outbound {

// `mapping` is used only for csv. Reads the outbox's manifests and removes leftovers at once
// (blocking: call at start-up), then starts its writer thread.
std::unique_ptr<OutboundAdapter> make_batch_outbound(const FileOutboundSettings& settings, CsvMapping mapping);

}  // namespace tellonce::file_outbound
