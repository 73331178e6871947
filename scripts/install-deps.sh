#!/usr/bin/env bash
# Installs the Debian 12 packages Tellonce builds and tests with. Idempotent: does nothing
# when everything is already there. Needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(
  build-essential cmake g++ pkg-config git
  libboost1.81-dev            # Asio + Beast (header-only); the default libboost-dev is 1.74
  libssl-dev                  # TLS for libcurl, SHA-256 content hashes
  rapidjson-dev               # FHIR JSON parsing (DOM + SAX)
  libcurl4-openssl-dev        # outbound FHIR REST delivery
  libsqlite3-dev sqlite3      # the embedded store
  libpq-dev                   # the postgresql store (engines/postgres_store): libpq, PostgreSQL's own client library
  postgresql-15               # its tests start a throwaway server from its binaries (scripts/postgres.sh); no service is used
  librabbitmq-dev             # the rabbitmq queue (engines/rabbitmq_queue): rabbitmq-c, the C AMQP 0-9-1 client
  rabbitmq-server             # its tests start a throwaway node (or a 3-node cluster) from its binaries (scripts/rabbitmq.sh); no service is used
  libyaml-cpp-dev             # the configuration file
  libgoogle-perftools-dev     # tcmalloc: 7-19 % more records/s than glibc malloc (bench/load)
  libgtest-dev libgmock-dev   # tests
  python3                     # bench/load/run.py (benchmarks only)
  python3-hl7                 # the MLLP integration tests' partners: mllp_send and hl7.mllp (not ours)
  curl                        # the quick start sends records with it
  openssl                     # the TLS tests make throwaway certificates with it (tests/integration/tls/make_certs.sh)
  prometheus                  # promtool: the suite checks ops/ alert rules and a real /metrics scrape with it
  clang libclang-rt-14-dev    # libFuzzer + ASan/UBSan for scripts/fuzz.sh (fuzz/)
  chromium                    # the web console's end-to-end test (tests/console) drives it headless
  nodejs                      # runs that test with playwright-core (installed by scripts/test.sh: npm ci)
)
# Debian's nodejs comes without npm (NodeSource's bundles it); npm ci needs it.
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "installing: ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
