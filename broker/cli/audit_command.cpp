// `tellonce audit verify [PATH]` and `tellonce audit export --fhir [--since TIME] [PATH]`: the
// audit log named, or the one the config names (--config, default config/tellonce.yaml).
#include "broker/audit/audit_log.hpp"
#include "broker/cli/commands.hpp"
#include "broker/config/config.hpp"

#include <charconv>
#include <ctime>
#include <iostream>
#include <optional>
#include <string>

namespace tellonce {

namespace {

constexpr const char* kAuditUsage =
    "usage: tellonce audit verify [PATH] [--config FILE]\n"
    "       tellonce audit export --fhir [--since TIME] [PATH] [--config FILE]\n"
    "PATH: the audit log (default: audit.path of the config). TIME: 2026-11-30T09:00:00Z or ms since 1970.\n";

// "2026-11-30T10:00:00Z", "...T10:00:00.250Z" or ms since the epoch; nullopt when neither.
std::optional<std::int64_t> parse_time(const std::string& v) {
  std::int64_t ms = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), ms);
  if (ec == std::errc() && end == v.data() + v.size()) return ms;
  std::tm tm{};
  const char* rest = strptime(v.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!rest) return std::nullopt;
  int frac = 0;
  if (*rest == '.') {
    int digits = 0;
    for (++rest; *rest >= '0' && *rest <= '9'; ++rest)
      if (digits++ < 3) frac = frac * 10 + (*rest - '0');
    while (digits++ < 3) frac *= 10;
  }
  if (std::string_view(rest) != "Z") return std::nullopt;
  return static_cast<std::int64_t>(timegm(&tm)) * 1000 + frac;
}

}  // namespace

int run_audit_command(int argc, char** argv, const AdapterRegistry& registry) {
  if (argc < 1) {
    std::cerr << kAuditUsage;
    return 2;
  }
  const std::string action = argv[0];
  std::string path, config, since;
  bool fhir = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) config = argv[++i];
    else if (a == "--since" && i + 1 < argc) since = argv[++i];
    else if (a == "--fhir") fhir = true;
    else if (!a.starts_with("--") && path.empty()) path = a;
    else {
      std::cerr << "unknown argument '" << a << "'\n" << kAuditUsage;
      return 2;
    }
  }
  if (path.empty()) {
    auto load = load_config(config.empty() ? "config/tellonce.yaml" : config, registry);
    if (!load.config) {
      for (const auto& p : load.problems) std::cerr << p.to_string() << "\n";
      return 2;
    }
    path = load.config->audit.path.string();
  }
  if (action == "verify") {
    auto report = verify_audit_log(path);
    if (!report.warning.empty()) std::cerr << path << ": warning: " << report.warning << "\n";
    if (!report.ok) {
      std::cout << path << ":" << report.bad_line << ": " << report.problem << "\n";
      return 1;
    }
    std::cout << path << ": ok, " << report.entries << " entries, chain and head agree\n";
    return 0;
  }
  if (action == "export") {
    if (!fhir) {
      std::cerr << "export needs --fhir (the only format)\n" << kAuditUsage;
      return 2;
    }
    std::int64_t since_ms = 0;
    if (!since.empty()) {
      auto t = parse_time(since);
      if (!t) {
        std::cerr << "--since must be a UTC time such as 2026-11-30T09:00:00Z, or ms since 1970\n";
        return 2;
      }
      since_ms = *t;
    }
    export_audit_fhir(path, since_ms, std::cout, std::cerr);
    return 0;
  }
  std::cerr << kAuditUsage;
  return 2;
}

}  // namespace tellonce
