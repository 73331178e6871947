// `tellonce validate [--schemas DIR] [--text] [--ndjson] FILE...|-`: checks records offline
// with the same validator the broker uses, so partners can test before sending.
#pragma once

#include <filesystem>
#include <string>

namespace tellonce {

// argv holds the arguments after `validate`. Exit status: 0 no errors, 1 any error,
// 2 usage error (bad option, no input, unreadable file or schemas).
int run_validate_command(int argc, char** argv, const std::filesystem::path& default_schema_dir);

// A command's input: the file `name`, or standard input for "-". False when it cannot be read.
bool read_command_input(const std::string& name, std::string& content);

}  // namespace tellonce
