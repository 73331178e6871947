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

// What went wrong, in the broker's own words. Each adapter maps a code to its wire: the
// fhir-rest adapter to an HTTP status (http/outcome.hpp), an MLLP adapter to AA/AE/AR, a file
// adapter to a row report. Nothing below the adapters knows any wire code.
enum class Errc {
  malformed,        // cannot be read at all: bad JSON, bad UTF-8, not a resource
  invalid,          // read, but breaks a FHIR or UK Core rule
  unauthenticated,  // the sender is not known
  forbidden,        // the sender is known but may not do this
  not_found,        // no such message (or resource)
  conflict,         // the store refused a write that would contradict what it holds
  too_large,        // over a size limit
  unsupported,      // a content type, method or operation the broker does not take
  unavailable,      // the broker cannot take it now (store down, disk full, shutting down)
  internal,         // a bug: the broker failed in a way it did not expect
};
std::string_view to_string(Errc c);

// A failed operation on the data path. Retryable failures (a partner down, a busy store)
// are worth trying again unchanged; permanent ones (bad record, refused by a partner) are not.
struct Failure {
  enum class Kind { permanent, retryable };
  Errc code = Errc::invalid;
  Kind kind = Kind::permanent;
  std::vector<Issue> issues;

  static Failure permanent(Errc code, Issue issue);
  static Failure retryable(Errc code, Issue issue);
  bool is_retryable() const { return kind == Kind::retryable; }
  // For log lines: the code, then each issue's rule and location. A record's problems never
  // show their diagnostics, which may quote its values (a name, an NHS number, a birth date);
  // the broker's own failures (unavailable, internal, conflict, not found) show the first.
  std::string summary() const;
};

// Lets boost::system::result<T, Failure>::value() throw when misused (a programming error).
[[noreturn]] void throw_exception_from_error(const Failure& f, const boost::source_location& loc);

template <class T>
using Result = boost::system::result<T, Failure>;

}  // namespace tellonce
