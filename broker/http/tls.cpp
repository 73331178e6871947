#include "tellonce/tls.hpp"

#include "tellonce/log.hpp"
#include "tellonce/settings_reader.hpp"

#include <boost/asio/ssl/context.hpp>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace tellonce {

namespace ssl = boost::asio::ssl;

namespace {

// TLS 1.2: forward secrecy and authenticated encryption only. TLS 1.3 suites are all AEAD.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

struct BioFree { void operator()(BIO* b) const { BIO_free(b); } };
struct X509Free { void operator()(X509* x) const { X509_free(x); } };
struct PkeyFree { void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); } };
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// A key protected by a passphrase is refused rather than prompted for on the terminal.
int no_passphrase(char*, int, int, void*) { return 0; }

std::string asn1_time_text(const ASN1_TIME* t) {
  BioPtr mem(BIO_new(BIO_s_mem()));
  ASN1_TIME_print(mem.get(), t);
  char* data = nullptr;
  long n = BIO_get_mem_data(mem.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

// Opens a file for PEM reading, or says why it cannot.
BioPtr open_pem(const std::string& what, const std::string& path, std::string& why) {
  std::error_code ec;
  auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    why = what + " file '" + path + "' does not exist";
    return nullptr;
  }
  if (!std::filesystem::is_regular_file(status)) {
    why = what + " file '" + path + "' is not a regular file";
    return nullptr;
  }
  errno = 0;
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) why = what + " file '" + path + "' cannot be read: " + std::strerror(errno ? errno : EACCES);
  ERR_clear_error();
  return bio;
}

std::string validity_problem(const std::string& what, const std::string& path, X509* x) {
  if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0)
    return what + " '" + path + "' has expired (not after " + asn1_time_text(X509_get0_notAfter(x)) + ")";
  if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0)
    return what + " '" + path + "' is not valid yet (not before " + asn1_time_text(X509_get0_notBefore(x)) + ")";
  return {};
}

struct FileProblem {
  std::string key;
  std::string message;
};

std::vector<FileProblem> file_problems(const TlsSettings& s) {
  std::vector<FileProblem> out;
  std::string why;
  X509Ptr cert;
  PkeyPtr key;
  if (auto bio = open_pem("certificate", s.cert, why)) {
    cert.reset(PEM_read_bio_X509(bio.get(), nullptr, &no_passphrase, nullptr));
    if (!cert) out.push_back({"cert", "certificate file '" + s.cert + "' holds no PEM certificate"});
    else if (auto p = validity_problem("certificate", s.cert, cert.get()); !p.empty()) out.push_back({"cert", p});
  } else {
    out.push_back({"cert", why});
  }
  if (auto bio = open_pem("key", s.key, why)) {
    key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, &no_passphrase, nullptr));
    if (!key) out.push_back({"key", "key file '" + s.key + "' holds no unencrypted PEM private key"});
  } else {
    out.push_back({"key", why});
  }
  if (cert && key && X509_check_private_key(cert.get(), key.get()) != 1)
    out.push_back({"key", "key '" + s.key + "' does not match certificate '" + s.cert + "'"});
  if (!s.client_ca.empty()) {
    if (auto bio = open_pem("client CA", s.client_ca, why)) {
      int n = 0;
      while (X509Ptr ca{PEM_read_bio_X509(bio.get(), nullptr, &no_passphrase, nullptr)}) ++n;
      if (n == 0) out.push_back({"client_ca", "client CA file '" + s.client_ca + "' holds no PEM certificate"});
    } else {
      out.push_back({"client_ca", why});
    }
  }
  ERR_clear_error();
  return out;
}

std::string hex(const unsigned char* md, unsigned n, bool colons, bool upper) {
  static const char* lower_digits = "0123456789abcdef";
  static const char* upper_digits = "0123456789ABCDEF";
  const char* digits = upper ? upper_digits : lower_digits;
  std::string out;
  for (unsigned i = 0; i < n; ++i) {
    if (colons && i) out += ':';
    out += digits[md[i] >> 4];
    out += digits[md[i] & 15];
  }
  return out;
}

std::shared_ptr<ssl::context> build_server_context(const TlsSettings& s) {
  auto problems = file_problems(s);
  if (!problems.empty()) {
    std::string all;
    for (auto& p : problems) all += (all.empty() ? "" : "; ") + p.message;
    throw std::runtime_error(all);
  }
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* h = ctx->native_handle();
  SSL_CTX_set_min_proto_version(h, s.tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION);
  SSL_CTX_set_options(h, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_set_cipher_list(h, kTls12Ciphers) != 1) throw std::runtime_error("cannot set the TLS 1.2 cipher list");
  try {
    ctx->use_certificate_chain_file(s.cert);
    ctx->use_private_key_file(s.key, ssl::context::pem);
    if (!s.client_ca.empty()) {
      ctx->load_verify_file(s.client_ca);
      SSL_CTX_set_client_CA_list(h, SSL_load_client_CA_file(s.client_ca.c_str()));
    }
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error("cannot load " + s.cert + " / " + s.key + ": " + e.code().message());
  }
  switch (s.client_certificates) {
    case ClientCertificates::none: ctx->set_verify_mode(ssl::verify_none); break;
    case ClientCertificates::optional: ctx->set_verify_mode(ssl::verify_peer); break;
    case ClientCertificates::required:
      ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
      break;
  }
  // Resumed sessions with client certificates need an id context, else the resumption fails.
  static const unsigned char sid[] = "tellonce";
  SSL_CTX_set_session_id_context(h, sid, sizeof sid - 1);
  return ctx;
}

std::mutex registry_mu;
std::vector<TlsServerContext*>& registry() {
  static std::vector<TlsServerContext*> all;
  return all;
}

}  // namespace

std::optional<TlsSettings> read_tls_settings(SettingsReader& parent, const std::string& key) {
  auto s = parent.child(key);
  if (!s) return std::nullopt;
  TlsSettings t;
  t.cert = s->file_path("cert", "");
  t.key = s->file_path("key", "");
  t.client_ca = s->file_path("client_ca", "");
  if (t.cert.empty()) s->problem("cert", "a TLS listener needs its certificate file (cert)");
  if (t.key.empty()) s->problem("key", "a TLS listener needs its private key file (key)");
  auto mode = s->string("client_certificates", "none");
  if (mode == "none") t.client_certificates = ClientCertificates::none;
  else if (mode == "optional") t.client_certificates = ClientCertificates::optional;
  else if (mode == "required") t.client_certificates = ClientCertificates::required;
  else s->problem("client_certificates", "must be none, optional or required, found '" + mode + "'");
  if (t.client_certificates != ClientCertificates::none && t.client_ca.empty())
    s->problem("client_ca", "client certificates are checked against a CA bundle: set client_ca");
  auto version = s->string("min_version", "1.2");
  if (version == "1.3") t.tls13_only = true;
  else if (version != "1.2") s->problem("min_version", "must be \"1.2\" or \"1.3\" (older versions are not offered), found '" + version + "'");
  t.handshake_timeout = s->duration("handshake_timeout", t.handshake_timeout);
  if (t.handshake_timeout.count() <= 0) s->problem("handshake_timeout", "must be more than 0");
  if (!t.cert.empty() && !t.key.empty()) {
    for (auto& p : file_problems(t)) s->problem(p.key, p.message);
  }
  s->finish();
  if (!s->ok()) return std::nullopt;
  return t;
}

std::vector<std::string> check_tls_files(const TlsSettings& settings) {
  std::vector<std::string> out;
  for (auto& p : file_problems(settings)) out.push_back(std::move(p.message));
  return out;
}

TlsServerContext::TlsServerContext(TlsSettings settings, std::string listen)
    : settings_(std::move(settings)), listen_(std::move(listen)) {
  try {
    ctx_ = build_server_context(settings_);
  } catch (const std::exception& e) {
    throw std::runtime_error("TLS on " + listen_ + ": " + e.what());
  }
  std::lock_guard lk(registry_mu);
  registry().push_back(this);
}

TlsServerContext::~TlsServerContext() {
  std::lock_guard lk(registry_mu);
  auto& all = registry();
  std::erase(all, this);
}

std::shared_ptr<ssl::context> TlsServerContext::current() const {
  std::lock_guard lk(mu_);
  return ctx_;
}

std::string TlsServerContext::reload() {
  std::shared_ptr<ssl::context> fresh;
  try {
    fresh = build_server_context(settings_);
  } catch (const std::exception& e) {
    return e.what();
  }
  std::lock_guard lk(mu_);
  ctx_ = std::move(fresh);
  return {};
}

int reload_all_tls_contexts() {
  std::lock_guard lk(registry_mu);
  int failed = 0;
  for (auto* c : registry()) {
    auto why = c->reload();
    if (why.empty()) {
      log::info("tls", c->listen() + ": certificate and key reloaded; new connections use them");
    } else {
      ++failed;
      log::error("tls", c->listen() + ": reload failed, keeping the previous certificate: " + why);
    }
  }
  return failed;
}

std::shared_ptr<ssl::context> make_tls_client_context(const std::string& ca_file, const std::string& cert_file,
                                                      const std::string& key_file) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  SSL_CTX_set_options(ctx->native_handle(), SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_cipher_list(ctx->native_handle(), kTls12Ciphers);
  ctx->set_verify_mode(ssl::verify_peer);
  try {
    if (ca_file.empty()) ctx->set_default_verify_paths();
    else ctx->load_verify_file(ca_file);
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error("CA bundle '" + ca_file + "': " + e.code().message());
  }
  if (!cert_file.empty() || !key_file.empty()) {
    TlsSettings s{cert_file, key_file, {}, ClientCertificates::none, false, {}};
    auto problems = file_problems(s);
    if (!problems.empty()) throw std::runtime_error(problems.front().message);
    ctx->use_certificate_chain_file(cert_file);
    ctx->use_private_key_file(key_file, ssl::context::pem);
  }
  return ctx;
}

std::string certificate_fingerprint(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  if (!cert || X509_digest(cert, EVP_sha256(), md, &n) != 1) return {};
  return "sha256:" + hex(md, n, true, true);
}

std::string certificate_subject(X509* cert) {
  if (!cert) return {};
  BioPtr mem(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(mem.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long n = BIO_get_mem_data(mem.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

std::string api_key_hash(std::string_view key) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  EVP_Digest(key.data(), key.size(), md, &n, EVP_sha256(), nullptr);
  return "sha256:" + hex(md, n, false, false);
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace tellonce
