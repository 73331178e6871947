#!/usr/bin/env bash
# Quick start command 2: installs what is missing, builds build-asan (AddressSanitizer +
# UndefinedBehaviorSanitizer) and runs the whole test suite there (unit tests and integration
# tests that start the real broker on 127.0.0.1; any sanitizer finding fails the test that hit
# it), then gives each libFuzzer target a short bounded run from its seed corpus (FUZZ=0 skips
# it; scripts/fuzz.sh --long N for real runs).
# RELEASE=1 first builds build/ (Release, what the benchmarks use) and runs the suite there too;
# SANITIZERS=0 runs it only there. On 2 cores each pass costs a full build, so CI runs one: the
# sanitizer pass, which checks everything the Release pass does and more.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
# The console's end-to-end test drives chromium with playwright-core, pinned by its lock file;
# installed here so that the tests themselves download nothing.
(cd tests/console && npm ci --no-audit --no-fund --prefer-offline --loglevel=error)

if [[ "${RELEASE:-0}" != 0 || "${SANITIZERS:-1}" == 0 ]]; then
  ./scripts/build.sh
  ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "${JOBS:-$(nproc)}" --timeout 600
fi

if [[ "${SANITIZERS:-1}" != 0 ]]; then
  BUILD_DIR=build-asan SANITIZE=address,undefined ./scripts/build.sh
  # Any finding fails the test that hit it: UB halts with a stack, ASan aborts, and leaks are
  # reported when each test program (or broker started by a test) exits.
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
    ctest --test-dir build-asan --output-on-failure -j "${JOBS:-$(nproc)}" --timeout 600
fi

if [[ "${FUZZ:-1}" != 0 ]]; then
  ./scripts/fuzz.sh --short
fi
