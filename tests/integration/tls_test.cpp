// TLS end to end on the real broker, with clients nobody here wrote: curl and `openssl s_client`
// (for MLLP too: a frame piped through s_client). Certificates are made at test time by
// tests/integration/tls/make_certs.sh with the openssl command; none is committed.
#include "harness.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <thread>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;

struct Ran {
  int status = -1;     // exit status of the shell command
  std::string output;  // stdout and stderr
};

// Runs a shell command (each one bounded by `timeout` so that a stuck client fails the test).
Ran sh(const std::string& command) {
  Ran r;
  std::string full = "timeout 30 bash -c '" + command + "' 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

// Polls until `pred` holds (a condition, not a timing assertion).
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 20s) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return pred();
}

class Tls : public ::testing::Test {
 protected:
  void SetUp() override {
    certs_ = dir_.path() / "certs";
    auto made = sh((source_dir() / "tests/integration/tls/make_certs.sh").string() + " " + certs_.string());
    ASSERT_EQ(made.status, 0) << made.output;
  }
  std::string cert(const std::string& name) const { return (certs_ / name).string(); }
  std::string fingerprint(const std::string& name) const {
    auto r = sh("openssl x509 -in " + cert(name) + " -noout -fingerprint -sha256 | cut -d= -f2");
    return "sha256:" + r.output.substr(0, r.output.find('\n'));
  }
  std::string hash_key(const std::string& key) const {
    auto r = sh("printf %s " + key + " | " + tellonce_binary().string() + " hash-key 2>/dev/null");
    return r.output.substr(0, r.output.find('\n'));
  }
  std::string tls_block(const std::string& mode, const std::string& extra = "") const {
    return "{ cert: " + cert("server.pem") + ", key: " + cert("server.key") + ", client_ca: " + cert("ca.pem") +
           ", client_certificates: " + mode + extra + " }";
  }
  // curl against the broker, trusting the test CA; prints the HTTP status last.
  Ran curl(const std::string& args) const {
    return sh("curl -s -S --cacert " + cert("ca.pem") + " -w \"\\n%{http_code}\" " + args);
  }
  static std::string status_of(const Ran& r) { return r.output.substr(r.output.rfind('\n') + 1); }
  // Sends `request` and keeps the input open until an answer or an alert has come (s_client
  // would otherwise stop at the end of its input, before TLS 1.3's late alerts arrive).
  Ran s_client(unsigned short port, const std::string& args, const std::string& request) const {
    const auto out = (dir_.path() / "s_client.out").string();
    std::filesystem::remove(out);
    sh("(printf \"" + request + "\"; for i in $(seq 200); do grep -q -e HTTP/1.1 -e alert " + out +
       " 2>/dev/null && break; sleep 0.05; done) | openssl s_client -quiet -no_ign_eof -connect 127.0.0.1:" +
       std::to_string(port) + " -CAfile " + cert("ca.pem") + " " + args + " > " + out + " 2>&1");
    Ran r;
    r.status = 0;
    r.output = read_file(out);
    return r;
  }

  TempDir dir_;
  std::filesystem::path certs_;
  ReservedPort api_port_, fhir_port_, mllp_port_;
};

constexpr const char* kHealth = "GET /api/health HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n";

TEST_F(Tls, ListenersIdentifyPartnersAndRefuseWhatTheyMust) {
  const std::string A = std::to_string(api_port_.port()), B = std::to_string(fhir_port_.port());
  const std::string carers_key = "it-carers-key-0123456789abcdef0123";
  Broker broker(dir_.path(), "api:\n  listen: 127.0.0.1:" + A + R"(
store:
  path: data/tellonce.db
listeners:
  - listen: 127.0.0.1:)" + A + "\n    tls: " + tls_block("required") + R"(
  - listen: 127.0.0.1:)" + B + "\n    tls: " + tls_block("optional", ", handshake_timeout: 1s") + R"(
partners:
  - id: rtx
    kind: trust
    ods: RTX
    certificates: [")" + fingerprint("rtx.pem") + R"("]
  - id: carers
    kind: vcse
    ods: 8JK98
    certificates: ["subject:CN=carers-app,O=Example Carers Centre"]
    api_key_hashes: [")" + hash_key(carers_key) + R"("]
    endpoint: { type: mailbox }
  - id: gp-a
    kind: primary-care
    ods: A81001
    endpoint: { type: fhir-rest, url: "https://127.0.0.1:)" + B + R"(/fhir", ca_file: )" + cert("ca.pem") +
                     ", client_cert: " + cert("carers.pem") + ", client_key: " + cert("carers.key") + R"( }
inbound:
  - { id: fhir, type: fhir-rest, listen: "127.0.0.1:)" + B + R"(", base_path: /fhir }
routes:
  - id: from-rtx
    match: { source: rtx }
    to: [gp-a]
)", api_port_.port());
  broker.start();
  const std::string fhir = "https://127.0.0.1:" + B + "/fhir/Patient";
  const std::string post = " -X POST -H \"Content-Type: application/fhir+json\" --data @" +
                           (source_dir() / "config/examples/patient-a81001.json").string() + " ";
  const std::string rtx = " --cert " + cert("rtx.pem") + " --key " + cert("rtx.key") + " ";
  const std::string carers = " --cert " + cert("carers.pem") + " --key " + cert("carers.key") + " ";

  // The trust by its certificate's fingerprint: accepted.
  auto sent = curl(rtx + post + fhir);
  EXPECT_EQ(status_of(sent), "202") << sent.output;
  // No certificate and no key; a forged identity header; a certificate and another partner's key.
  EXPECT_EQ(status_of(curl(post + fhir)), "401");
  auto forged = curl(post + "-H \"X-Tellonce-Client-Cert-Sha256: " + fingerprint("rtx.pem") + "\" " + fhir);
  EXPECT_EQ(status_of(forged), "401") << forged.output;
  auto mixed = curl(rtx + post + "-H \"Authorization: Bearer " + carers_key + "\" " + fhir);
  EXPECT_EQ(status_of(mixed), "401") << mixed.output;
  EXPECT_TRUE(contains(mixed.output, "another partner")) << mixed.output;

  // The mailbox on the listener that requires certificates: the carers by subject; the trust's
  // certificate never opens it.
  const std::string inbox = "https://127.0.0.1:" + A + "/mailbox/carers/inbox";
  EXPECT_EQ(status_of(curl(carers + inbox)), "200");
  EXPECT_EQ(status_of(curl(rtx + inbox)), "403");
  // The API key (stored hashed) still works where a certificate is optional... the mailbox is on
  // the required listener, so a key alone cannot even connect there.
  auto key_only = curl("-H \"Authorization: Bearer " + carers_key + "\" " + inbox);
  EXPECT_NE(key_only.status, 0) << key_only.output;

  // openssl s_client: the positive control, then each refusal.
  EXPECT_TRUE(contains(s_client(api_port_, "-cert " + cert("carers.pem") + " -key " + cert("carers.key"), kHealth).output,
                       "HTTP/1.1 200"));
  auto no_cert = s_client(api_port_, "", kHealth);
  EXPECT_FALSE(contains(no_cert.output, "HTTP/1.1")) << no_cert.output;
  EXPECT_TRUE(contains(no_cert.output, "alert certificate required")) << no_cert.output;
  auto rogue = s_client(api_port_, "-cert " + cert("rogue.pem") + " -key " + cert("rogue.key"), kHealth);
  EXPECT_FALSE(contains(rogue.output, "HTTP/1.1")) << rogue.output;
  EXPECT_TRUE(contains(rogue.output, "alert unknown ca")) << rogue.output;
  auto expired = s_client(api_port_, "-cert " + cert("expired.pem") + " -key " + cert("expired.key"), kHealth);
  EXPECT_FALSE(contains(expired.output, "HTTP/1.1")) << expired.output;
  EXPECT_TRUE(contains(expired.output, "alert certificate expired")) << expired.output;
  // TLS 1.1 offered by a client willing to use it (security level 0) is refused by the server.
  auto old = s_client(fhir_port_, "-tls1_1 -cipher DEFAULT:@SECLEVEL=0", kHealth);
  EXPECT_FALSE(contains(old.output, "HTTP/1.1")) << old.output;
  EXPECT_TRUE(contains(old.output, "alert protocol version")) << old.output;
  // TLS 1.2 without forward secrecy (static RSA key exchange) is not offered.
  auto weak = s_client(fhir_port_, "-tls1_2 -cipher AES128-SHA", kHealth);
  EXPECT_TRUE(contains(weak.output, "handshake failure")) << weak.output;

  // A client that connects and never starts the handshake is dropped after handshake_timeout.
  auto idle = sh("exec 3<>/dev/tcp/127.0.0.1/" + B + "; cat <&3 >/dev/null; echo closed-by-server");
  EXPECT_EQ(idle.status, 0) << idle.output;
  EXPECT_TRUE(contains(idle.output, "closed-by-server"));
  EXPECT_TRUE(eventually([&] { return contains(broker.output(), "TLS handshake with 127.0.0.1 timed out"); }));

  // Outbound: the delivery to gp-a goes over TLS with the carers' client certificate, so the
  // broker's own listener takes it as a record from partner carers.
  EXPECT_TRUE(eventually([&] {
    auto listed = curl(carers + "-H \"" + bearer(kAdminToken) + "\" \"https://127.0.0.1:" + A + "/api/messages?source=carers\"");
    return contains(listed.output, "\"id\"");
  })) << broker.output();
  // Neither keys nor key hashes are logged.
  EXPECT_FALSE(contains(broker.output(), carers_key));
  EXPECT_FALSE(contains(broker.output(), hash_key(carers_key)));
}

// Operators sign in to the admin API by client certificate (operators[].certificates, README
// "Operators and roles"), on an API listener that asks for one: alice (operator, listed by
// fingerprint) acts and the action is recorded with her name; bob (viewer, listed by subject) may
// look but not act; a partner's certificate, and no certificate nor token at all, are 401.
TEST_F(Tls, OperatorsSignInToTheApiByClientCertificateAndPartnersCertificatesDoNot) {
  const std::string A = std::to_string(api_port_.port());
  ReservedPort gp;  // gp-a's endpoint: nothing is sent to it here, it is only a destination to pause
  Broker broker(dir_.path(), "api:\n  listen: 127.0.0.1:" + A + R"(
store:
  path: data/tellonce.db
listeners:
  - listen: 127.0.0.1:)" + A + "\n    tls: " + tls_block("optional") + R"(
partners:
  - id: rtx
    kind: trust
    ods: RTX
    certificates: [")" + fingerprint("rtx.pem") + R"("]
  - id: gp-a
    kind: primary-care
    ods: A81001
    endpoint: { type: fhir-rest, url: "http://127.0.0.1:)" + std::to_string(gp.port()) + R"(/fhir" }
operators:
  - { name: alice, role: operator, certificates: [")" + fingerprint("alice.pem") + R"("] }
  - { name: bob, role: viewer, certificates: ["subject:CN=bob,O=Example Trust IT"] }
)", api_port_.port());
  broker.start();
  const std::string api = "https://127.0.0.1:" + A;
  auto as = [&](const std::string& who) { return " --cert " + cert(who + ".pem") + " --key " + cert(who + ".key") + " "; };

  // alice by her certificate: who she is, then an operator's action, recorded with her name.
  auto whoami = curl(as("alice") + api + "/api/whoami");
  EXPECT_EQ(status_of(whoami), "200") << whoami.output;
  EXPECT_TRUE(contains(whoami.output, R"({"name":"alice","role":"operator"})")) << whoami.output;
  auto paused = curl(as("alice") + "-X POST -H \"X-Tellonce-Reason: ticket 7\" " + api + "/api/destinations/gp-a/pause");
  EXPECT_EQ(status_of(paused), "200") << paused.output;
  EXPECT_TRUE(contains(paused.output, R"("paused":true)")) << paused.output;
  EXPECT_TRUE(contains(paused.output, R"("changedBy":"alice")")) << paused.output;
  // The audit entry is on disk before the answer (AdminApi::audited).
  const auto audit_log = read_file(dir_.path() / "data/audit.ndjson");
  std::string audited;
  for (std::size_t at = 0; at < audit_log.size();) {
    auto end = std::min(audit_log.find('\n', at), audit_log.size());
    auto line = audit_log.substr(at, end - at);
    if (contains(line, R"("kind":"paused")")) audited = line;
    at = end + 1;
  }
  EXPECT_TRUE(contains(audited, R"("actor":"alice")")) << audited;
  EXPECT_TRUE(contains(audited, R"("reason":"ticket 7")")) << audited;
  EXPECT_TRUE(contains(audited, R"("destination":"gp-a")")) << audited;

  // bob by his certificate's subject: a viewer's endpoint, where alice's action is on the trail
  // by name; an operator's action is 403 naming him and his role.
  auto trail = curl(as("bob") + api + "/api/destinations/gp-a");
  EXPECT_EQ(status_of(trail), "200") << trail.output;
  EXPECT_TRUE(contains(trail.output, R"("action":"paused","actor":"alice")")) << trail.output;
  auto bob_acts = curl(as("bob") + "-X POST " + api + "/api/destinations/gp-a/resume");
  EXPECT_EQ(status_of(bob_acts), "403") << bob_acts.output;
  EXPECT_TRUE(contains(bob_acts.output, "operator 'bob' is viewer")) << bob_acts.output;

  // A partner's certificate (valid, from the same CA) is not an operator's: 401 everywhere.
  for (const char* path : {"/api/whoami", "/api/destinations", "/api/messages"}) {
    auto partner = curl(as("rtx") + api + path);
    EXPECT_EQ(status_of(partner), "401") << path << "\n" << partner.output;
    EXPECT_TRUE(contains(partner.output, "an operator's client certificate")) << partner.output;
  }
  EXPECT_EQ(status_of(curl(as("rtx") + "-X POST " + api + "/api/destinations/gp-a/resume")), "401");
  // Neither a certificate nor a token: 401 asking to sign in.
  auto anonymous = curl("-D - " + api + "/api/destinations");
  EXPECT_EQ(status_of(anonymous), "401") << anonymous.output;
  EXPECT_TRUE(contains(anonymous.output, "Bearer realm=\"tellonce\"")) << anonymous.output;
  EXPECT_EQ(status_of(curl("-X POST " + api + "/api/destinations/gp-a/resume")), "401");
  // A bearer token decides even on a connection with alice's certificate: a wrong one is 401.
  auto wrong = curl(as("alice") + "-H \"Authorization: Bearer not-an-operator-token-0000\" " + api + "/api/whoami");
  EXPECT_EQ(status_of(wrong), "401") << wrong.output;

  // None of those refusals resumed it; alice does.
  auto resumed = curl(as("alice") + "-X POST " + api + "/api/destinations/gp-a/resume");
  EXPECT_EQ(status_of(resumed), "200") << resumed.output;
  EXPECT_TRUE(contains(resumed.output, R"("paused":false)")) << resumed.output;
  EXPECT_TRUE(contains(resumed.output, R"("changedBy":"alice")")) << resumed.output;
}

TEST_F(Tls, HashKeyPrintsTheSha256OfTheKey) {
  auto mine = hash_key("a-partner-key-made-by-openssl-rand");
  auto theirs = sh("printf %s a-partner-key-made-by-openssl-rand | sha256sum | cut -d\" \" -f1");
  EXPECT_EQ(mine, "sha256:" + theirs.output.substr(0, 64));
  auto empty = sh("printf \"\" | " + tellonce_binary().string() + " hash-key");
  EXPECT_EQ(empty.status, 1) << empty.output;
}

TEST_F(Tls, SighupReloadsTheCertificateAndKeepsOpenConnections) {
  const std::string B = std::to_string(fhir_port_.port());
  // The broker reads its certificate from files that are replaced below.
  std::filesystem::copy_file(certs_ / "server.pem", certs_ / "live.pem");
  std::filesystem::copy_file(certs_ / "server.key", certs_ / "live.key");
  Broker broker(dir_.path(), "api:\n  listen: 127.0.0.1:" + B + R"(
store:
  path: data/tellonce.db
listeners:
  - listen: 127.0.0.1:)" + B + "\n    tls: { cert: " + cert("live.pem") + ", key: " + cert("live.key") + R"( }
partners:
  - { id: rtx, kind: trust, ods: RTX }
)", fhir_port_.port());
  broker.start();
  auto served_fingerprint = [&] {
    auto r = sh("openssl s_client -connect 127.0.0.1:" + B + " </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256 | cut -d= -f2");
    return "sha256:" + r.output.substr(0, r.output.find('\n'));
  };
  ASSERT_EQ(served_fingerprint(), fingerprint("server.pem"));

  // A keep-alive connection: one request now, the second after the reload.
  const auto out = dir_.path() / "keepalive.out", go = dir_.path() / "go";
  std::thread client([&] {
    sh("(printf \"GET /api/health HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n\"; while [ ! -e " + go.string() +
       " ]; do sleep 0.05; done; printf \"GET /api/health HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n\"; "
       "for i in $(seq 200); do [ $(grep -c \"HTTP/1.1 200\" " + out.string() + ") -ge 2 ] && break; sleep 0.05; done)"
       " | openssl s_client -quiet -no_ign_eof -connect 127.0.0.1:" + B + " -CAfile " + cert("ca.pem") + " > " +
       out.string() + " 2>&1");
  });
  auto answers = [&] {
    auto text = read_file(out);
    std::size_t n = 0;
    for (auto at = text.find("HTTP/1.1 200"); at != std::string::npos; at = text.find("HTTP/1.1 200", at + 1)) ++n;
    return n;
  };
  EXPECT_TRUE(eventually([&] { return std::filesystem::exists(out) && answers() == 1; }));

  std::filesystem::copy_file(certs_ / "server2.pem", certs_ / "live.pem", std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(certs_ / "server2.key", certs_ / "live.key", std::filesystem::copy_options::overwrite_existing);
  broker.process().signal(SIGHUP);
  EXPECT_TRUE(broker.process().wait_for_line("reloaded TLS certificates (0 failed)", 20s)) << broker.output();
  EXPECT_EQ(served_fingerprint(), fingerprint("server2.pem"));  // new handshakes: the new certificate

  write_file(go, "");
  client.join();
  EXPECT_EQ(answers(), 2u) << read_file(out);  // the connection opened before the reload still served

  // A reload that fails (the key no longer matches) keeps the working certificate.
  std::filesystem::copy_file(certs_ / "other.key", certs_ / "live.key", std::filesystem::copy_options::overwrite_existing);
  broker.process().signal(SIGHUP);
  EXPECT_TRUE(broker.process().wait_for_line("reloaded TLS certificates (1 failed)", 20s)) << broker.output();
  EXPECT_EQ(served_fingerprint(), fingerprint("server2.pem"));
  EXPECT_TRUE(contains(broker.output(), "does not match certificate"));
}

// Start-up refuses each kind of bad certificate or key, naming the file and the config path.
TEST_F(Tls, StartupRefusesMissingUnreadableExpiredOrMismatchedFiles) {
  auto config = [&](const std::string& cert_file, const std::string& key_file) {
    return "api:\n  listen: 127.0.0.1:" + std::to_string(fhir_port_.port()) +
           "\nstore:\n  path: data/tellonce.db\nlisteners:\n  - listen: 127.0.0.1:" + std::to_string(fhir_port_.port()) +
           "\n    tls: { cert: " + cert_file + ", key: " + key_file + " }\npartners:\n  - { id: rtx, kind: trust, ods: RTX }\n";
  };
  std::filesystem::create_directory(certs_ / "a-folder");
  write_file(certs_ / "not-pem.pem", "this is not a certificate\n");
  std::filesystem::copy_file(certs_ / "server.key", certs_ / "locked.key");
  ::chmod((certs_ / "locked.key").c_str(), 0);
  struct Case {
    std::string cert, key, path, says;
  } cases[] = {
      {cert("missing.pem"), cert("server.key"), "listeners[0].tls.cert", "does not exist"},
      {cert("a-folder"), cert("server.key"), "listeners[0].tls.cert", "is not a regular file"},
      {cert("not-pem.pem"), cert("server.key"), "listeners[0].tls.cert", "holds no PEM certificate"},
      {cert("server-expired.pem"), cert("server-expired.key"), "listeners[0].tls.cert", "has expired"},
      {cert("server.pem"), cert("other.key"), "listeners[0].tls.key", "does not match certificate"},
  };
  for (const auto& c : cases) {
    write_file(dir_.path() / "bad.yaml", config(c.cert, c.key));
    auto checked = sh(tellonce_binary().string() + " check-config " + (dir_.path() / "bad.yaml").string());
    EXPECT_EQ(checked.status, 1) << checked.output;
    EXPECT_TRUE(contains(checked.output, "bad.yaml:7: " + c.path + ": ")) << checked.output;
    EXPECT_TRUE(contains(checked.output, c.says)) << checked.output;
    auto served = sh(tellonce_binary().string() + " serve --config " + (dir_.path() / "bad.yaml").string());
    EXPECT_NE(served.status, 0) << served.output;
    EXPECT_TRUE(contains(served.output, c.says)) << served.output;
  }
  // Unreadable: only meaningful when not root (root reads a file whatever its mode).
  if (::geteuid() != 0) {
    write_file(dir_.path() / "bad.yaml", config(cert("server.pem"), cert("locked.key")));
    auto checked = sh(tellonce_binary().string() + " check-config " + (dir_.path() / "bad.yaml").string());
    EXPECT_TRUE(contains(checked.output, "cannot be read")) << checked.output;
  }
}

// MLLP over TLS: a frame piped through s_client. The connection's certificate must belong to
// the partner MSH-4 names.
TEST_F(Tls, MllpOverTlsChecksMsh4AgainstTheCertificate) {
  const std::string M = std::to_string(mllp_port_.port());
  Broker broker(dir_.path(), "api:\n  listen: 127.0.0.1:" + std::to_string(api_port_.port()) + R"(
store:
  path: data/tellonce.db
partners:
  - id: rtx
    kind: trust
    ods: RTX
    certificates: [")" + fingerprint("rtx.pem") + R"("]
  - id: carers
    kind: vcse
    ods: 8JK98
    certificates: ["subject:CN=carers-app,O=Example Carers Centre"]
  - id: legacy-pas
    kind: trust
    ods: RYX
    endpoint:
      type: mllp
      address: 127.0.0.1:)" + M + R"(
      sending_facility: RTX
      tls: { ca_file: )" + cert("ca.pem") + ", client_cert: " + cert("rtx.pem") + ", client_key: " + cert("rtx.key") + R"( }
inbound:
  - { id: fhir, type: fhir-rest, listen: "127.0.0.1:)" + std::to_string(api_port_.port()) + R"(", base_path: /fhir, allow_partner_header: true }
  - id: v2
    type: mllp
    listen: 127.0.0.1:)" + M + "\n    tls: " + tls_block("optional") + R"(
routes:
  - id: carers-to-legacy
    match: { source: carers, resource_type: Patient }
    to: [legacy-pas]
)", api_port_.port());
  broker.start();
  const auto message = (source_dir() / "config/examples/adt-a01-a81001.hl7").string();
  auto send = [&](const std::string& client_args) {
    const auto out = (dir_.path() / "ack.out").string();
    std::filesystem::remove(out);
    sh("(printf \"\\x0b\"; tr \"\\n\" \"\\r\" < " + message + "; printf \"\\x1c\\r\"; for i in $(seq 200); do "
       "grep -q MSA " + out + " 2>/dev/null && break; sleep 0.05; done) | openssl s_client -quiet -no_ign_eof "
       "-connect 127.0.0.1:" + M + " -CAfile " + cert("ca.pem") + " " + client_args + " > " + out + " 2>&1");
    auto text = read_file(out);
    for (auto& ch : text)
      if (ch == '\r') ch = '\n';
    return text;
  };
  auto own = send("-cert " + cert("rtx.pem") + " -key " + cert("rtx.key"));
  EXPECT_TRUE(contains(own, "MSA|AA|DEMO00001")) << own;
  auto other = send("-cert " + cert("carers.pem") + " -key " + cert("carers.key"));
  EXPECT_TRUE(contains(other, "MSA|AR|DEMO00001")) << other;
  EXPECT_TRUE(contains(other, "client certificate is partner 'carers''s")) << other;
  auto none = send("");  // no certificate: the sender is known by MSH-4, as over plain TCP
  EXPECT_TRUE(contains(none, "MSA|AA|DEMO00001")) << none;

  // Outbound MLLP over TLS: a Patient from the carers goes to the legacy PAS as an ADT^A31 over
  // TLS with the trust's client certificate, here the broker's own MLLP listener, which takes it
  // as the trust's (MSH-4 RTX matches the certificate) and answers AA: the delivery is delivered.
  const std::string api = "http://127.0.0.1:" + std::to_string(api_port_.port());
  auto posted = sh("curl -s -o /dev/null -w %{http_code} -X POST -H \"Content-Type: application/fhir+json\" -H \"X-Tellonce-Partner: carers\" --data @" +
                   (source_dir() / "config/examples/patient-a81001.json").string() + " " + api + "/fhir/Patient");
  EXPECT_EQ(posted.output, "202");
  EXPECT_TRUE(eventually([&] {
    return contains(sh("curl -s -H \"" + bearer(kAdminToken) + "\" \"" + api + "/api/messages?source=carers&state=delivered\"").output, "\"id\"");
  })) << broker.output();
}

}  // namespace
}  // namespace tellonce::itest
