// `tellonce check-config FILE`: loads the config as the broker would and prints every problem.
#pragma once

#include "tellonce/adapter_settings.hpp"

#include <iosfwd>

namespace tellonce {

// argv may start with the program name and/or "check-config"; the one remaining argument is
// the file. Prints problems one per line then a summary; returns 0 when OK, 1 on problems,
// 2 on bad usage.
int run_check_config_command(int argc, char** argv, const AdapterCatalog& registry);

// The same, writing to the given streams (for tests).
int run_check_config_command(int argc, char** argv, const AdapterCatalog& registry, std::ostream& out,
                             std::ostream& err);

}  // namespace tellonce
