#!/usr/bin/env bash
# Makes throwaway test certificates in DIR with the openssl command (nothing is committed):
#   ca.pem/ca.key              the test CA
#   server.pem/server.key      127.0.0.1 and localhost, signed by the CA
#   rtx.pem/rtx.key            partner client certificate (CN=rtx-pas,O=Royal Example NHS Trust)
#   carers.pem/carers.key      another partner's client certificate
#   alice.pem/alice.key        an operator's client certificate (CN=alice,O=Example Trust IT)
#   bob.pem/bob.key            another operator's (CN=bob,O=Example Trust IT)
#   expired.pem/expired.key    a client certificate from the CA that expired in 2020
#   server-expired.pem/.key    a server certificate that expired in 2020
#   rogue-ca.pem, rogue.pem/rogue.key   a client certificate from a CA nobody trusts
#   other.key                  a key that matches none of the certificates
# usage: make_certs.sh DIR
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"
q() { "$@" 2>/dev/null >/dev/null; }

key() { q openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

key ca.key
q openssl req -x509 -new -key ca.key -out ca.pem -days 30 -subj "/CN=Tellonce Test CA" \
  -addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign,cRLSign
key rogue-ca.key
q openssl req -x509 -new -key rogue-ca.key -out rogue-ca.pem -days 30 -subj "/CN=Rogue CA" \
  -addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign,cRLSign

# leaf NAME SUBJECT EXTENSIONS [CA]
leaf() {
  local name=$1 subj=$2 ext=$3 ca=${4:-ca}
  key "$name.key"
  q openssl req -new -key "$name.key" -out "$name.csr" -subj "$subj"
  printf '%s\n' "$ext" > "$name.ext"
  q openssl x509 -req -in "$name.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial -days 30 \
    -extfile "$name.ext" -out "$name.pem"
}
leaf server "/CN=localhost" "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
leaf rtx "/O=Royal Example NHS Trust/CN=rtx-pas" "extendedKeyUsage=clientAuth"
leaf carers "/O=Example Carers Centre/CN=carers-app" "extendedKeyUsage=clientAuth"
leaf alice "/O=Example Trust IT/CN=alice" "extendedKeyUsage=clientAuth"
leaf bob "/O=Example Trust IT/CN=bob" "extendedKeyUsage=clientAuth"
leaf rogue "/CN=rogue-client" "extendedKeyUsage=clientAuth" rogue-ca
key other.key

# Certificates valid only in 2020: `openssl ca` takes an explicit start and end date.
mkdir -p cadb
: > cadb/index.txt
echo 1000 > cadb/serial
cat > cadb/ca.cnf <<CNF
[ca]
default_ca = test_ca
[test_ca]
dir = $PWD/cadb
database = \$dir/index.txt
new_certs_dir = \$dir
serial = \$dir/serial
default_md = sha256
policy = any_name
copy_extensions = copy
unique_subject = no
[any_name]
commonName = supplied
organizationName = optional
CNF
past() {
  local name=$1 subj=$2
  key "$name.key"
  q openssl req -new -key "$name.key" -out "$name.csr" -subj "$subj"
  q openssl ca -batch -config cadb/ca.cnf -cert ca.pem -keyfile ca.key -in "$name.csr" -out "$name.pem" \
    -startdate 20200101000000Z -enddate 20200102000000Z -notext
}
past expired "/O=Royal Example NHS Trust/CN=rtx-old"
past server-expired "/CN=localhost"
# The renewed server certificate a reload (SIGHUP) picks up.
leaf server2 "/CN=localhost" "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
