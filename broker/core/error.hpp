// Errors that cross a boundary. One Issue type feeds the FHIR OperationOutcome,
// the MLLP ACK, the log line and the console, so every producer fills the same fields.
#pragma once

#include <boost/system/result.hpp>

#include <string>
#include <vector>

namespace tellonce {

enum class Severity { fatal, error, warning, information };

std::string_view to_string(Severity s);

struct Issue {
  Severity severity = Severity::error;
  // FHIR IssueType code: structure, required, value, invariant, code-invalid, not-supported,
  // too-long, too-costly, duplicate, not-found, security, processing, exception, transient ...
  std::string code;
  std::string diagnostics;  // what is wrong and, where we can say, how to fix it
  std::string location;     // FHIRPath-style: Bundle.entry[2].resource.identifier[0].value
  std::string rule;         // rule or constraint id when there is one: "ele-1", "uk-nhs-number"

  bool is_error() const { return severity == Severity::error || severity == Severity::fatal; }
};

bool has_errors(const std::vector<Issue>& issues);

// A failed operation on the data path. Retryable failures (a partner down, a busy store)
// are worth trying again unchanged; permanent ones (bad record, 4xx from partner) are not.
struct Failure {
  enum class Kind { permanent, retryable };
  Kind kind = Kind::permanent;
  int http_status = 400;  // what an HTTP front end answers with
  std::vector<Issue> issues;

  static Failure permanent(int http_status, Issue issue);
  static Failure retryable(int http_status, Issue issue);
  bool retryable_p() const { return kind == Kind::retryable; }
  // First issue's diagnostics, for log lines.
  std::string summary() const;
};

// Lets boost::system::result<T, Failure>::value() throw when misused (a programming error).
[[noreturn]] void throw_exception_from_error(const Failure& f, const boost::source_location& loc);

template <class T>
using Result = boost::system::result<T, Failure>;

}  // namespace tellonce
