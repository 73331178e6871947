#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang, ASan and UBSan in build-fuzz/, then runs each
# for a bounded time from its seed corpus (fuzz/corpus/<target>).
#   scripts/fuzz.sh [--short | --long SECONDS] [TARGET...]
# --short (default): 10 s per target, for the test suite. --long N: N seconds per target, one
# after the other. Exit status 1 if any target found a crash, leak or timeout; its reproducer is
# in build-fuzz/fuzz-work/<target>/. New interesting inputs stay in build-fuzz/fuzz-work/<target>/corpus.
# TELLONCE_FUZZ_BUILD_WRAPPER (e.g. "flock /work/wt/build.lock") wraps the build command.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=10
targets=()
while (($#)); do
  case "$1" in
    --short) seconds=10 ;;
    --long) seconds="${2:?--long needs SECONDS}"; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) targets+=("$1") ;;
  esac
  shift
done
((${#targets[@]})) || targets=(json_validate config http_request hl7v2 csv ucum)

build=build-fuzz
if [[ ! -f $build/CMakeCache.txt ]]; then
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DTELLONCE_FUZZ=ON \
    -DTELLONCE_BUILD_TESTS=OFF -DTELLONCE_BUILD_BENCH=OFF -DTELLONCE_TCMALLOC=OFF "${launcher[@]}" >/dev/null
fi
${TELLONCE_FUZZ_BUILD_WRAPPER:-} cmake --build "$build" -j2 --target "${targets[@]/#/fuzz_}"

status=0
for t in "${targets[@]}"; do
  work="$build/fuzz-work/$t"
  mkdir -p "$work/corpus"
  echo "== fuzz_$t: ${seconds}s"
  # -rss_limit_mb: a 10 MB body may legitimately take a few hundred MB under ASan.
  if ! "$build/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
       -print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" "fuzz/corpus/$t" 2>"$work/log"; then
    status=1
    echo "fuzz_$t FOUND A PROBLEM: see $work/log"
    grep -E "ERROR|SUMMARY|Test unit written" "$work/log" | head -5
  fi
  grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added|stat::peak_rss_mb" \
    "$work/log" | sed "s/^/  /"
done
exit $status
