#include "broker/config/partner_directory.hpp"

#include "broker/config/config.hpp"
#include "tellonce/limits.hpp"

namespace tellonce {
namespace {

class ConfigPartnerDirectory final : public PartnerDirectory {
 public:
  explicit ConfigPartnerDirectory(const Config& config) : config_(config) {
    // Built only when something is limited: with no `limits:` anywhere adapters skip it entirely.
    std::unordered_map<std::string, RateLimit> per_partner;
    bool any = config.max_connections_per_address > 0;
    for (const auto& p : config.partners) {
      RateLimit l = p.limits ? *p.limits : config.default_limits;
      if (l.records_per_second > 0 || l.max_connections > 0) {
        per_partner.emplace(p.id, l);
        any = true;
      }
    }
    if (any) limits_ = std::make_unique<PartnerLimits>(std::move(per_partner), config.max_connections_per_address);
  }

  PartnerLimits* limits() const override { return limits_.get(); }

  std::string_view by_api_key(std::string_view key) const override {
    const Partner* p = config_.partner_by_api_key(key);
    return p ? std::string_view(p->id) : std::string_view();
  }
  std::string_view by_id(std::string_view partner_id) const override {
    const Partner* p = config_.partner(partner_id);
    return p ? std::string_view(p->id) : std::string_view();
  }
  std::string_view by_certificate(std::string_view fingerprint, std::string_view subject) const override {
    const Partner* p = config_.partner_by_certificate(fingerprint, subject);
    return p ? std::string_view(p->id) : std::string_view();
  }
  std::string_view by_hl7v2_facility(std::string_view facility) const override {
    const Partner* p = config_.partner_by_hl7v2_facility(facility);
    return p ? std::string_view(p->id) : std::string_view();
  }

 private:
  const Config& config_;
  std::unique_ptr<PartnerLimits> limits_;
};

}  // namespace

std::unique_ptr<PartnerDirectory> make_partner_directory(const Config& config) {
  return std::make_unique<ConfigPartnerDirectory>(config);
}

}  // namespace tellonce
