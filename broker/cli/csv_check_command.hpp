// `tellonce csv-check --config FILE --channel ID DATA.csv [--row N]`: runs a `file` inbound
// channel's mapping and the broker's validator over a file offline, so a partner can test an
// export before sending it. Prints the report the broker would write (reports/<file>.report.csv)
// and a summary line; with --row N, also the FHIR record that row becomes.
#pragma once

#include "tellonce/registry.hpp"

#include <filesystem>

namespace tellonce {

// argv holds the arguments after `csv-check`. Output on stdout. Exit status: 0 every row is good,
// 1 a row is bad or the file would be rejected, 2 usage error (bad option, config problems, no
// such channel, unreadable file or schemas).
int run_csv_check_command(int argc, char** argv, const AdapterRegistry& registry,
                          const std::filesystem::path& default_schema_dir);

}  // namespace tellonce
