#include "broker/config/config.hpp"

namespace tellonce {

std::string_view to_string(PartnerKind k) {
  switch (k) {
    case PartnerKind::trust: return "trust";
    case PartnerKind::primary_care: return "primary-care";
    case PartnerKind::vcse: return "vcse";
  }
  return "trust";
}

std::string ConfigProblem::to_string() const {
  std::string out = file;
  out += ':';
  out += std::to_string(line);
  out += ": ";
  if (!path.empty()) {
    out += path;
    out += ": ";
  }
  out += message;
  return out;
}

std::size_t Config::descriptors_reserved() const {
  if (reserved_descriptors > 0) return reserved_descriptors;
  std::size_t n = 64;
  for (const auto& p : partners)
    if (p.endpoint) n += static_cast<std::size_t>(delivery.concurrency_per_destination) + 16;
  return n;
}

const Partner* Config::partner(std::string_view id) const {
  for (const auto& p : partners)
    if (p.id == id) return &p;
  return nullptr;
}

// Every stored key is compared, each in constant time, so the time taken says nothing about
// which partner's key came close.
const Partner* Config::partner_by_api_key(std::string_view key) const {
  if (key.empty()) return nullptr;
  const Partner* found = nullptr;
  const std::string hash = api_key_hash(key);
  for (const auto& p : partners) {
    for (const auto& h : p.api_key_hashes)
      if (constant_time_equal(h, hash) && !found) found = &p;
    for (const auto& k : p.api_keys)
      if (constant_time_equal(k, key) && !found) found = &p;
  }
  return found;
}

namespace {
// A verified certificate's owner among `owners` (partners or operators): by fingerprint first,
// then by subject, so a pinned fingerprint wins over a subject another entry names.
template <class T>
const T* by_certificate(const std::vector<T>& owners, std::string_view fingerprint, std::string_view subject) {
  if (fingerprint.empty()) return nullptr;
  for (const auto& p : owners)
    for (const auto& c : p.certificates)
      if (c == fingerprint) return &p;
  if (subject.empty()) return nullptr;
  for (const auto& p : owners)
    for (const auto& c : p.certificates)
      if (c.starts_with("subject:") && std::string_view(c).substr(8) == subject) return &p;
  return nullptr;
}
}  // namespace

const Partner* Config::partner_by_certificate(std::string_view fingerprint, std::string_view subject) const {
  return by_certificate(partners, fingerprint, subject);
}

const OperatorAccount* Config::operator_by_certificate(std::string_view fingerprint, std::string_view subject) const {
  return by_certificate(operators, fingerprint, subject);
}

const OperatorAccount* Config::operator_by_token(std::string_view token) const {
  if (token.empty()) return nullptr;
  const OperatorAccount* found = nullptr;
  const std::string hash = api_key_hash(token);
  for (const auto& o : operators)
    for (const auto& h : o.token_hashes)
      if (constant_time_equal(h, hash) && !found) found = &o;
  return found;
}

std::string_view to_string(OperatorRole r) {
  switch (r) {
    case OperatorRole::metrics: return "metrics";
    case OperatorRole::viewer: return "viewer";
    case OperatorRole::operator_: return "operator";
    case OperatorRole::admin: return "admin";
  }
  return "viewer";
}

const Partner* Config::partner_by_hl7v2_facility(std::string_view facility) const {
  if (facility.empty()) return nullptr;
  for (const auto& p : partners)
    for (const auto& f : p.hl7v2_facilities)
      if (f == facility) return &p;
  for (const auto& p : partners)
    if (p.ods_code == facility) return &p;
  return nullptr;
}

const MinimisationList* Config::minimisation_list(std::string_view id) const {
  for (const auto& m : minimisation)
    if (m.id == id) return &m;
  return nullptr;
}

}  // namespace tellonce
