#include "tellonce/error.hpp"

#include <stdexcept>

namespace tellonce {

std::string_view to_string(Severity s) {
  switch (s) {
    case Severity::fatal: return "fatal";
    case Severity::error: return "error";
    case Severity::warning: return "warning";
    case Severity::information: return "information";
  }
  return "error";
}

bool has_errors(const std::vector<Issue>& issues) {
  for (const auto& i : issues)
    if (i.is_error()) return true;
  return false;
}

std::string_view to_string(Errc c) {
  switch (c) {
    case Errc::malformed: return "malformed";
    case Errc::invalid: return "invalid";
    case Errc::unauthenticated: return "unauthenticated";
    case Errc::forbidden: return "forbidden";
    case Errc::not_found: return "not-found";
    case Errc::conflict: return "conflict";
    case Errc::too_large: return "too-large";
    case Errc::unsupported: return "unsupported";
    case Errc::unavailable: return "unavailable";
    case Errc::internal: return "internal";
  }
  return "internal";
}

Failure Failure::permanent(Errc code, Issue issue) {
  return Failure{code, Kind::permanent, {std::move(issue)}};
}

Failure Failure::retryable(Errc code, Issue issue) {
  return Failure{code, Kind::retryable, {std::move(issue)}};
}

std::string Failure::summary() const {
  std::string out(to_string(code));
  // The broker's own failures are described in its own words, which carry no record data.
  const bool own = code == Errc::unavailable || code == Errc::internal || code == Errc::conflict ||
                   code == Errc::not_found;
  if (own && !issues.empty()) return out + ": " + issues.front().diagnostics;
  std::size_t shown = 0;
  for (const auto& i : issues) {
    if (!i.is_error()) continue;
    if (++shown > 3) {
      out += " ...";
      break;
    }
    out += shown == 1 ? " " : ", ";
    out += i.rule.empty() ? i.code : i.rule;
    if (!i.location.empty()) out += "@" + i.location;
  }
  if (issues.size() > 1) out += " (" + std::to_string(issues.size()) + " issues)";
  return out;
}

void throw_exception_from_error(const Failure& f, const boost::source_location&) {
  throw std::runtime_error("unchecked Failure: " + f.summary());
}

}  // namespace tellonce
