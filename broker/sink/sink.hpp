// `tellonce demo-sink`: a stand-in partner FHIR endpoint for demos, tests and benchmarks.
#pragma once

namespace tellonce {

// argv holds the options after the command name:
//   --listen HOST:PORT [--record FILE [--record-ids-only] [--fsync]] [--fail-status 503 --fail-first N] [--quiet]
// With --record, each request is written to FILE (one NDJSON line) before it is answered, so a
// sink killed with SIGKILL has recorded everything it acknowledged; --fsync also syncs the file
// before answering (survives power loss; costs throughput, see bench/load/RESULTS.md).
// Returns the process exit code. Runs until SIGINT or SIGTERM.
int run_sink_command(int argc, char** argv);

}  // namespace tellonce
