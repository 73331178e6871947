// `tellonce validate [--schemas DIR] [--text] [--ndjson] FILE...|-`: checks records offline
// with the same validator the broker uses, so partners can test before sending.
#pragma once

#include <filesystem>

namespace tellonce {

// argv holds the arguments after `validate`. Exit status: 0 no errors, 1 any error,
// 2 usage error (bad option, no input, unreadable file or schemas).
int run_validate_command(int argc, char** argv, const std::filesystem::path& default_schema_dir);

}  // namespace tellonce
