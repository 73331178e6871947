#!/usr/bin/env bash
# Agreement with another validator's verdicts (e.g. the HL7 reference validator's expected error
# counts from its test manifest) on "has errors or not". The cases are yours: nothing is shipped.
#   bench/validate/agreement.sh FOLDER VERDICTS [TELLONCE_BINARY]
# VERDICTS: one line per case, "FILE errors" or "FILE clean" (FILE relative to FOLDER; "#" lines
# and blank lines ignored). Prints each disagreement with tellonce's first error, then the figure.
# Exit status 0 whatever the figure; 2 on a usage error.
set -euo pipefail
folder=${1:?usage: agreement.sh FOLDER VERDICTS [TELLONCE_BINARY]}
verdicts=${2:?usage: agreement.sh FOLDER VERDICTS [TELLONCE_BINARY]}
tellonce=${3:-build/broker/cli/tellonce}
[[ -x $tellonce ]] || { echo "no $tellonce: build the tellonce target first" >&2; exit 2; }

total=0 agree=0 missed=0 extra=0
while read -r file expected _; do
  [[ -z ${file:-} || $file == \#* ]] && continue
  [[ $expected == errors || $expected == clean ]] || { echo "bad verdict '$expected' for $file" >&2; exit 2; }
  [[ -f $folder/$file ]] || { echo "missing case $folder/$file" >&2; exit 2; }
  total=$((total + 1))
  status=0
  output=$("$tellonce" validate --text "$folder/$file" 2>&1) || status=$?
  ((status <= 1)) || { echo "tellonce failed on $file (status $status)" >&2; exit 2; }
  got=clean
  ((status == 1)) && got=errors
  if [[ $got == "$expected" ]]; then
    agree=$((agree + 1))
  elif [[ $expected == errors ]]; then
    missed=$((missed + 1))
    echo "MISSED  $file (expected errors; tellonce found none)"
  else
    extra=$((extra + 1))
    echo "EXTRA   $file (expected clean): $(grep -m1 ': error ' <<<"$output" | cut -c1-200)"
  fi
done <"$verdicts"
((total)) || { echo "no cases in $verdicts" >&2; exit 2; }
echo "cases=$total agree=$agree missed=$missed extra=$extra agreement=$(awk "BEGIN {printf \"%.1f\", 100 * $agree / $total}")%"
