#!/usr/bin/env bash
# Quick start command 2: installs what is missing, builds, and runs the whole test suite
# (unit tests and integration tests that start the real broker on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "${JOBS:-$(nproc)}" --timeout 600
