#!/usr/bin/env bash
# Builds the images of docker/compose.yaml (tellonce, PostgreSQL, RabbitMQ: all from Debian
# packages), starts two broker nodes, PostgreSQL, RabbitMQ and a practice's endpoint, sends a FHIR
# Patient to node 1, and shows node 2 answering for it once the practice has it.
#
#   docker/demo.sh          build, start, send, check; the stack keeps running
#   docker/demo.sh down     stop it and delete its volumes
#
# Needs a Docker engine with docker-compose (Debian: docker.io, docker-compose) that can build
# with host networking. Ports used on 127.0.0.1: 5442, 5682, 8091, 8092, 9191.
set -euo pipefail
cd "$(dirname "$0")"
compose=(docker-compose -p tellonce -f compose.yaml)
if [[ ${1:-} == down ]]; then
  "${compose[@]}" down -v
  exit 0
fi
command -v docker >/dev/null && command -v docker-compose >/dev/null \
  || { echo "demo.sh: needs docker and docker-compose (Debian: apt-get install docker.io docker-compose)" >&2; exit 2; }

echo "== building the images (the first build compiles tellonce: a few minutes)"
"${compose[@]}" build
echo "== starting PostgreSQL, RabbitMQ, the practice and two broker nodes"
"${compose[@]}" up -d

ready() { curl -fs "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; }
for port in 8091 8092; do
  for _ in $(seq 120); do ready "$port" && break; sleep 1; done
  ready "$port" || { echo "node on $port is not ready:" >&2; "${compose[@]}" logs --tail 30 >&2; exit 1; }
done
echo "== both nodes ready"

patient='{"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9449306753"}],
"name":[{"family":"Example","given":["Demo"]}],"gender":"female","birthDate":"1970-01-01",
"generalPractitioner":[{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"A81001"}}]}'
headers=$(mktemp)
trap 'rm -f "$headers"' EXIT
status=$(curl -s -o /dev/null -D "$headers" -w '%{http_code}' -X POST http://127.0.0.1:8091/fhir/Patient \
  -H 'Content-Type: application/fhir+json' -H 'Authorization: Bearer demo-rtx-key' --data-binary "$patient")
id=$(awk -F': ' 'tolower($1) == "x-tellonce-message-id" {gsub(/\r/, "", $2); print $2}' "$headers")
echo "== node 1 answered $status for message $id"
[[ $status == 202 && -n $id ]] || exit 1

token='Authorization: Bearer demo-operator-token-3c9f1e7a5b2d8c4e6f0a'  # DEMO ONLY (docker/nodes/*.yaml)
for _ in $(seq 60); do
  state=$(curl -s -H "$token" "http://127.0.0.1:8092/api/messages/$id" | grep -o '"state":"[a-z]*"' | head -1 || true)
  [[ $state == '"state":"delivered"' ]] && break
  sleep 1
done
echo "== node 2 says: $state"
[[ $state == '"state":"delivered"' ]] || { "${compose[@]}" logs --tail 30 >&2; exit 1; }
echo "== the practice received: $("${compose[@]}" exec -T practice grep -c . /var/lib/tellonce/practice.ndjson) record(s)"
echo "stop and delete it all with: docker/demo.sh down"
