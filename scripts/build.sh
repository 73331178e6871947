#!/usr/bin/env bash
# Configures and builds into build/ (Release: the figures in README come from this build).
# SANITIZE=address,undefined (or thread) builds an instrumented tree instead, for the tests:
# -O1 with debug info, no tcmalloc (it replaces the allocator the sanitizers intercept), no
# benchmarks. BUILD_DIR, BUILD_TYPE and JOBS override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
CMAKE_ARGS=(-DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}")
if [[ -n "${SANITIZE:-}" ]]; then
  CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g" -DTELLONCE_SANITIZE="$SANITIZE"
              -DTELLONCE_TCMALLOC=OFF -DTELLONCE_BUILD_BENCH=OFF)
fi
cmake -S . -B "$BUILD_DIR" "${CMAKE_ARGS[@]}" >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" ${TARGETS:+--target $TARGETS}
