// Durable file writes for the `file` outbound adapter (private to adapters/file_outbound).
// Blocking POSIX calls: call only from the adapter's writer thread.
#pragma once

#include "tellonce/adapter.hpp"

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace tellonce::file_outbound {

// A failed system call as a delivery result: retryable (an operator can fix every cause: space,
// permissions, a missing folder), partner code "file <ERRNO NAME>", detail "<step>: <description>".
DeliveryResult os_failure(const char* step, int err);

// Writes `bytes` into `dir`/`final_name` so that it is either wholly there or not at all:
// written as `dir`/`temp_name`, flushed (fdatasync), renamed, and the folder flushed (fsync), the
// flushes only when `fsync` is set. Returns nothing on success; on failure the temporary file is
// removed and the result says which step failed.
std::optional<DeliveryResult> write_file_durably(const std::filesystem::path& dir, const std::string& temp_name,
                                                 const std::string& final_name, std::string_view bytes, bool fsync);

}  // namespace tellonce::file_outbound
