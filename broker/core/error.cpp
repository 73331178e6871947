#include "core/error.hpp"

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

Failure Failure::permanent(int http_status, Issue issue) {
  return Failure{Kind::permanent, http_status, {std::move(issue)}};
}

Failure Failure::retryable(int http_status, Issue issue) {
  return Failure{Kind::retryable, http_status, {std::move(issue)}};
}

std::string Failure::summary() const {
  if (issues.empty()) return "failed";
  const auto& i = issues.front();
  return i.location.empty() ? i.diagnostics : i.location + ": " + i.diagnostics;
}

void throw_exception_from_error(const Failure& f, const boost::source_location&) {
  throw std::runtime_error("unchecked Failure: " + f.summary());
}

}  // namespace tellonce
