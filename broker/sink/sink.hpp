// `tellonce demo-sink`: a stand-in partner FHIR endpoint for demos, tests and benchmarks.
#pragma once

namespace tellonce {

// argv holds the options after the command name:
//   --listen HOST:PORT [--record FILE] [--fail-status 503 --fail-first N] [--quiet]
// Returns the process exit code. Runs until SIGINT or SIGTERM.
int run_sink_command(int argc, char** argv);

}  // namespace tellonce
