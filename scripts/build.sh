#!/usr/bin/env bash
# Configures and builds into build/ (Release: the figures in README come from this build).
# SANITIZE=address,undefined (or thread) builds an instrumented tree instead, for the tests:
# -O1 with line tables only (-g1: enough for the sanitizers' stacks, and quicker to build than
# full debug info), no tcmalloc (it replaces the allocator the sanitizers intercept); the
# benchmarks are built too, as the crash-durability test drives bench/load/loadgen.
# BUILD_DIR, BUILD_TYPE, JOBS and TARGETS override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
CMAKE_ARGS=(-DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}")
if [[ -n "${SANITIZE:-}" ]]; then
  CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g1" -DTELLONCE_SANITIZE="$SANITIZE"
              -DTELLONCE_TCMALLOC=OFF -DTELLONCE_BUILD_BENCH=ON)
fi
cmake -S . -B "$BUILD_DIR" "${CMAKE_ARGS[@]}" >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" ${TARGETS:+--target $TARGETS}
