#!/usr/bin/env bash
# Quick start command 1: installs what is missing, builds, starts three demo partner
# endpoints and the broker with config/tellonce.yaml, and says where to send records. Steady demo
# traffic (a record about every second, now and then a broken one) shows flow in the web console
# at http://127.0.0.1:8080/console/ (DEMO_TRAFFIC=0: none). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
BIN=${BUILD_DIR:-build}/broker/cli/tellonce
mkdir -p data/demo data/demo/inbox/linkworkers
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for port in 9101 9102 9103 9104; do
  "$BIN" demo-sink --listen 127.0.0.1:$port --record data/demo/sink-$port.ndjson --quiet > /dev/null &
  pids+=($!)
done
# The community trust's legacy PAS, which only takes HL7 v2 (Debian's python3-hl7 MLLP server).
/usr/bin/python3 tests/integration/mllp_receiver.py --port 2576 --record data/demo/v2-2576.txt > /dev/null &
pids+=($!)
"$BIN" check-config config/tellonce.yaml
cat <<MSG

Demo partners: GP A81001 receives on :9101, GP A81002 on :9102, the VCSE link-worker service on :9103,
the ICB analytics service (a secondary-use route) on :9104.
What each one received is in data/demo/sink-<port>.ndjson. The community trust's HL7 v2 PAS listens
on :2576 (MLLP) and writes what it receives to data/demo/v2-2576.txt.

Send a record from the trust (partner 'rtx') in another terminal:
  curl -s -X POST http://127.0.0.1:8080/fhir/Patient \\
       -H 'Content-Type: application/fhir+json' -H 'X-Tellonce-Partner: rtx' \\
       --data @config/examples/patient-a81001.json
Then follow it (the demo operator's token; DEMO ONLY, see README "Operators and roles"):
  export TELLONCE_TOKEN=demo-operator-token-3c9f1e7a5b2d8c4e6f0a
  curl -s -H "Authorization: Bearer \$TELLONCE_TOKEN" http://127.0.0.1:8080/api/messages/<id>  or  $BIN message <id>
A broken record gets an OperationOutcome:  --data @config/examples/patient-bad-nhs-number.json
HL7 v2 from the trust's PAS over MLLP:  $BIN mllp-send --to 127.0.0.1:2575 config/examples/adt-a01-a81001.hl7

Web console (dashboard, message search, replay, pause/resume): http://127.0.0.1:8080/console/
  sign in with the demo operator token demo-operator-token-3c9f1e7a5b2d8c4e6f0a (demo only)
MSG
"$BIN" serve --config config/tellonce.yaml &
pids+=($!)
broker=$!

# Demo traffic for the console: the trust sends a patient about once a second, a broken record
# every tenth time (a rejection with its reasons), a referral every seventh (to the link workers).
demo_traffic() {
  local api=http://127.0.0.1:8080 n=0 file url
  until curl -sf -o /dev/null "$api/api/health"; do
    kill -0 "$broker" 2>/dev/null || return 0
    sleep 0.5
  done
  while kill -0 "$broker" 2>/dev/null; do
    n=$((n + 1))
    file=config/examples/patient-a81001.json
    if ((n % 10 == 0)); then file=config/examples/patient-bad-nhs-number.json
    elif ((n % 7 == 0)); then file=config/examples/referral-social-prescribing.json; fi
    if [[ $file == *referral* ]]; then url="$api/fhir/\$process-message"; else url="$api/fhir/Patient"; fi
    curl -s --max-time 5 -o /dev/null -X POST "$url" -H 'Content-Type: application/fhir+json' \
         -H 'X-Tellonce-Partner: rtx' --data @"$file" || true
    sleep 1
  done
}
if [[ "${DEMO_TRAFFIC:-1}" != 0 ]]; then
  demo_traffic &
  pids+=($!)
fi
wait "$broker"
