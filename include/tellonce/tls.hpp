// TLS for the broker's listeners and clients, on OpenSSL 3 through Asio, and the credential
// helpers partners are identified with (certificate fingerprints, hashed API keys).
//
// Contract:
// - read_tls_settings() parses a `tls:` section and checks its files (missing, unreadable, not PEM,
//   expired or not yet valid, a key that does not match its certificate) as config problems with
//   the section's file, line and path; it never throws.
// - TlsServerContext builds a server context (TLS 1.2 minimum; for 1.2 only ECDHE with AEAD
//   ciphers; 1.3 with OpenSSL's defaults) and swaps in a fresh one on reload(). current() may be
//   called from any thread; a connection keeps the context it started its handshake with, so a
//   reload never affects connections already open. Construction throws std::runtime_error with
//   a message naming the file when the files are bad; reload() returns the error instead and
//   keeps the previous context.
// - reload_all_tls_contexts() reloads every TlsServerContext alive in the process (SIGHUP).
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

typedef struct x509_st X509;
namespace boost::asio::ssl { class context; }

namespace tellonce {

class SettingsReader;

enum class ClientCertificates { none, optional, required };

struct TlsSettings {
  std::string cert;        // PEM certificate chain, leaf first
  std::string key;         // PEM private key (unencrypted)
  std::string client_ca;   // PEM CA bundle client certificates are checked against; empty: none
  ClientCertificates client_certificates = ClientCertificates::none;
  bool tls13_only = false;  // min_version "1.3"
  std::chrono::milliseconds handshake_timeout{10'000};
};

// Reads parent[key] when present (std::nullopt when absent or bad; problems are recorded).
std::optional<TlsSettings> read_tls_settings(SettingsReader& parent, const std::string& key);

// The files' problems in words ("cert /x/y.pem has expired (not after 2020-01-02 00:00:00 UTC)"),
// empty when they are usable. Also used at start-up and on reload.
std::vector<std::string> check_tls_files(const TlsSettings& settings);

class TlsServerContext {
 public:
  explicit TlsServerContext(TlsSettings settings, std::string listen);
  ~TlsServerContext();
  std::shared_ptr<boost::asio::ssl::context> current() const;
  std::string reload();  // "" on success, else why (the old context stays)
  const TlsSettings& settings() const { return settings_; }
  const std::string& listen() const { return listen_; }

 private:
  TlsSettings settings_;
  std::string listen_;
  mutable std::mutex mu_;
  std::shared_ptr<boost::asio::ssl::context> ctx_;
};

// Reloads every live TlsServerContext; logs each outcome. Returns how many failed.
int reload_all_tls_contexts();

// A client context for outbound TLS: verification on against `ca_file` (empty: the system's
// store), and a client certificate and key when given. Throws std::runtime_error naming the file.
std::shared_ptr<boost::asio::ssl::context> make_tls_client_context(const std::string& ca_file,
                                                                   const std::string& cert_file,
                                                                   const std::string& key_file);

// "sha256:AB:CD:..." (uppercase hex, colon separated, as `openssl x509 -fingerprint -sha256` prints).
std::string certificate_fingerprint(X509* cert);
// The subject in RFC 2253 form, e.g. "CN=rtx-pas,O=Example Trust".
std::string certificate_subject(X509* cert);

// API keys are stored as "sha256:<64 lowercase hex>" of the key's bytes. The keys are random
// tokens of at least 128 bits (hash-key refuses shorter ones), so a salt would add nothing
// against guessing and would make lookup try every partner's salt.
std::string api_key_hash(std::string_view key);
// Constant time in the length of `a` (CRYPTO_memcmp); false when the lengths differ.
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace tellonce
