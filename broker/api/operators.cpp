#include "broker/api/operators.hpp"

#include "tellonce/error.hpp"
#include "tellonce/message.hpp"

namespace tellonce {
namespace {

HttpResponse unauthorised(const HttpRequest& req, bool bad_token, std::string why) {
  auto res = outcome_response(req, http::status::unauthorized,
                              {Issue{Severity::error, "login", std::move(why), "", ""}});
  res.set(http::field::www_authenticate,
          bad_token ? R"(Bearer realm="tellonce", error="invalid_token")" : R"(Bearer realm="tellonce")");
  return res;
}

std::string_view bearer_token(const HttpRequest& req) {
  std::string_view auth = req[http::field::authorization];
  constexpr std::string_view scheme = "Bearer ";
  if (auth.size() <= scheme.size()) return {};
  for (std::size_t i = 0; i < scheme.size(); ++i)  // the scheme is case-insensitive (RFC 7235)
    if (std::tolower(static_cast<unsigned char>(auth[i])) != std::tolower(static_cast<unsigned char>(scheme[i])))
      return {};
  auto token = auth.substr(scheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  return token;
}

}  // namespace

OperatorRole role_needed(http::verb method, std::string_view path) {
  if (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  if (path == "/metrics") return OperatorRole::metrics;
  if (path == "/api/config" || path.starts_with("/api/config/")) return OperatorRole::admin;
  constexpr std::string_view messages = "/api/messages/";
  if (path.starts_with(messages)) {
    auto rest = path.substr(messages.size());
    auto slash = rest.find('/');
    auto action = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    if (action == "body" || action == "original") return OperatorRole::operator_;
  }
  if (method != http::verb::get && method != http::verb::head) return OperatorRole::operator_;
  return OperatorRole::viewer;
}

HttpHandler guard_operators(const Config& config, HttpHandler inner) {
  return [&config, inner = std::move(inner)](HttpRequest& req) -> asio::awaitable<HttpResponse> {
    req.erase(kOperatorHeader);
    std::string_view target = req.target();
    std::string_view path = target.substr(0, target.find('?'));
    if (path == "/api/health" || path == "/api/health/") co_return co_await inner(req);

    const OperatorAccount* who = nullptr;
    if (req.find(http::field::authorization) != req.end()) {
      // A bearer given decides, even on a connection with a certificate.
      who = config.operator_by_token(bearer_token(req));
      if (!who)
        co_return unauthorised(req, true,
                               "the token is not an operator's (partners' keys do not open the admin API); "
                               "sign in with an operator token: Authorization: Bearer <token>");
    } else {
      who = config.operator_by_certificate(req[kClientCertFingerprintHeader], req[kClientCertSubjectHeader]);
      if (!who)
        co_return unauthorised(req, false,
                               "sign in: send Authorization: Bearer <operator token> or an operator's client certificate");
    }
    const OperatorRole needed = role_needed(req.method(), path);
    if (who->role < needed) {
      std::string why = std::string(req.method_string()) + " " + std::string(path) + " needs the " +
                        std::string(to_string(needed)) + " role" +
                        (needed == OperatorRole::operator_ ? " (or admin)" : "") + "; operator '" + who->name +
                        "' is " + std::string(to_string(who->role));
      co_return outcome_response(req, http::status::forbidden,
                                 {Issue{Severity::error, "forbidden", std::move(why), "", ""}});
    }
    req.set(kOperatorHeader, who->name);
    co_return co_await inner(req);
  };
}

}  // namespace tellonce
