// Reads the YAML config section by section, then cross-checks references between sections.
// Every problem is collected; nothing stops at the first one.
#include "broker/config/config.hpp"
#include "broker/config/settings_reader_impl.hpp"
#include "broker/core/uk_identifiers.hpp"
#include "broker/minimise/minimise.hpp"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

namespace tellonce {

namespace {

namespace fs = std::filesystem;
using Located = SettingsReader::Located;

bool valid_id(std::string_view id) {
  return !id.empty() && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

bool looks_like_resource_type(std::string_view t) {
  return !t.empty() && t.front() >= 'A' && t.front() <= 'Z' && std::all_of(t.begin(), t.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  });
}

std::string joined(const std::vector<std::string>& names) {
  if (names.empty()) return "none";
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

fs::path beside(const fs::path& config_dir, const std::string& value) {
  fs::path p(value);
  if (p.is_relative() && !config_dir.empty()) p = config_dir / p;
  return p.lexically_normal();
}

// Records "duplicate ... id" once per repeated id, pointing back at the first.
class IdRegistry {
 public:
  explicit IdRegistry(std::string what) : what_(std::move(what)) {}
  // Reads the section's required `id`, checks its spelling and that it is not taken.
  std::string read(SettingsReader& section) {
    auto id = section.required_string("id");
    if (!id.empty() && !valid_id(id)) section.problem("id", "'" + id + "' must use only a-z, 0-9 and '-'");
    add(section, id);
    return id;
  }

 private:
  void add(SettingsReader& section, const std::string& id) {
    if (id.empty()) return;
    auto [it, fresh] = first_line_.emplace(id, section.line("id"));
    if (!fresh)
      section.problem("id", "duplicate " + what_ + " id '" + id + "' (first at line " + std::to_string(it->second) + ")");
  }

  std::string what_;
  std::map<std::string, int, std::less<>> first_line_;
};

// References checked once every partner is known: the file may list routes before partners.
struct PendingChecks {
  std::vector<Located> route_targets;
  std::vector<Located> route_sources;
  std::vector<std::pair<Located, std::string>> api_keys;  // key, owning partner id
  std::vector<std::pair<Located, std::string>> facilities;  // MSH-4 value, owning partner id
  std::vector<std::pair<Located, std::string>> certificates;  // fingerprint or subject, owning partner id
  std::set<std::string, std::less<>> partners_with_endpoint_section;
  std::vector<Located> minimise_refs;  // partners' and routes' `minimise:` list ids
  std::vector<Located> permitted_channels;  // partners' may.channels
};

// `minimise: ID` on a partner or route: kept for the cross-check (the list may come later).
std::string read_minimise_ref(SettingsReader& section, PendingChecks& pending) {
  if (!section.has("minimise")) return {};
  auto id = section.string("minimise", "");
  if (id.empty()) section.problem("minimise", "must name an allow-list of minimisation:");
  else pending.minimise_refs.push_back(Located{id, section.path() + ".minimise", section.line("minimise")});
  return id;
}

// Runs an adapter's parse; an exception there is a problem in its section, not a crash.
AdapterSettings parse_adapter_section(const std::string& type, const AdapterSettingsParser& parse,
                                      SettingsReader& section) {
  try {
    return parse(section);
  } catch (const std::exception& e) {
    section.problem("", "type '" + type + "' rejected these settings: " + e.what());
    return {};
  }
}

void read_broker(SettingsReader& top, Config& c) {
  auto s = top.child("broker");
  if (!s) return;
  c.max_body_bytes = s->byte_size("max_body_bytes", c.max_body_bytes, 1024, 1024ull * 1024 * 1024);
  c.max_json_depth = static_cast<unsigned>(s->integer("max_json_depth", c.max_json_depth, 1, 1000));
  c.io_threads = static_cast<int>(s->integer("io_threads", c.io_threads, 0, 256));
  c.max_connections_per_listener = static_cast<std::size_t>(
      s->integer("max_connections_per_listener", static_cast<std::int64_t>(c.max_connections_per_listener), 1, 1'000'000));
  c.reserved_descriptors = static_cast<std::size_t>(
      s->integer("reserved_descriptors", static_cast<std::int64_t>(c.reserved_descriptors), 0, 1'000'000));
  s->finish();
}

// log: format: text (default) or json (one JSON object a line; tellonce/log.hpp).
void read_log(SettingsReader& top, Config& c) {
  auto s = top.child("log");
  if (!s) return;
  c.log_format = s->string("format", c.log_format);
  if (c.log_format != "text" && c.log_format != "json") s->problem("format", "must be text or json");
  s->finish();
}

// `listeners:` TLS per HTTP listen address (an address nothing else names serves only 404s).
void read_listeners(SettingsReader& top, Config& c) {
  for (auto& r : top.sequence("listeners")) {
    ListenerSettings l;
    l.line = r.line();
    l.listen = r.required_string("listen");
    if (auto err = check_listen_address(l.listen); !l.listen.empty() && !err.empty()) r.problem("listen", err);
    for (const auto& other : c.listeners)
      if (other.listen == l.listen) r.problem("listen", "listener " + l.listen + " is already configured at line " + std::to_string(other.line));
    l.tls = read_tls_settings(r, "tls");
    r.finish();
    c.listeners.push_back(std::move(l));
  }
}

void read_api(SettingsReader& top, Config& c, const fs::path& dir) {
  auto s = top.child("api");
  if (!s) {
    top.declare_listener("api", c.api.listen, "http", "/api");  // the default address
    return;
  }
  c.api.listen = s->string("listen", c.api.listen);
  c.api.line = s->line("listen");
  if (auto err = check_listen_address(c.api.listen); !err.empty()) s->problem("listen", err);
  else s->declare_listener("listen", c.api.listen, "http", "/api");
  auto console_dir = s->string("console_dir", "");
  if (!console_dir.empty()) c.api.console_dir = beside(dir, console_dir);
  s->finish();
}

// audit: enabled, path (an NDJSON file; its head beside it as PATH.head), flush_delay.
void read_audit(SettingsReader& top, Config& c) {
  auto s = top.child("audit");
  const std::string fallback = "data/audit.ndjson";
  if (!s) {
    c.audit.path = (c.file.parent_path() / fallback).lexically_normal();
    return;
  }
  c.audit.enabled = s->boolean("enabled", c.audit.enabled);
  c.audit.path = s->file_path("path", fallback);
  auto delay = s->duration("flush_delay", c.audit.flush_delay);
  if (delay > std::chrono::seconds(10)) s->problem("flush_delay", "must be at most 10s");
  else c.audit.flush_delay = delay;
  s->finish();
}

// "host:port" split at the last colon; brackets kept off an IPv6 host.
std::pair<std::string_view, std::string_view> host_and_port(std::string_view address) {
  auto colon = address.rfind(':');
  if (colon == std::string_view::npos) return {address, {}};
  auto host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return {host, address.substr(colon + 1)};
}

bool wildcard_host(std::string_view host) { return host.empty() || host == "0.0.0.0" || host == "::"; }

// Two sockets cannot both bind these addresses (port 0 is a fresh port each time).
bool addresses_overlap(std::string_view a, std::string_view b) {
  auto [ha, pa] = host_and_port(a);
  auto [hb, pb] = host_and_port(b);
  if (pa != pb || pa == "0") return false;
  return ha == hb || wildcard_host(ha) || wildcard_host(hb);
}

// Every listener of every kind against every other, in file order: the later one is reported.
void check_listeners(const std::vector<DeclaredListener>& listeners, ProblemLog& log) {
  for (std::size_t i = 0; i < listeners.size(); ++i) {
    const auto& later = listeners[i];
    for (std::size_t j = 0; j < i; ++j) {
      const auto& earlier = listeners[j];
      if (!addresses_overlap(later.address, earlier.address)) continue;
      bool shared_http = later.protocol == "http" && earlier.protocol == "http" && later.address == earlier.address;
      if (shared_http && later.mount != earlier.mount) continue;  // one server, two path prefixes
      std::string what = shared_http ? "path " + later.mount + " on " + later.address + " is already served by "
                                     : later.protocol + " listener on " + later.address + " overlaps ";
      log.add(later.line, later.path, what + earlier.path + " (" + earlier.protocol + " " + earlier.address +
                                          earlier.mount + ", line " + std::to_string(earlier.line) + ")");
      break;
    }
  }
}

// `store:` or `queue:`: the engine its `type` names (default `fallback`) parses the rest; an
// absent section is that engine with its defaults.
void read_engine(SettingsReader& top, const char* key, EngineChoice& choice, const AdapterCatalog& registry) {
  const bool store = std::string_view(key) == "store";
  auto s = top.section(key);
  choice.line = s.line();
  choice.type = s.string("type", choice.type);
  const auto* parse = store ? registry.store_parser(choice.type) : registry.queue_parser(choice.type);
  if (!parse) {
    s.problem("type", std::string(key) + " type '" + choice.type + "' is not available (available: " +
                          joined(store ? registry.store_names() : registry.queue_names()) + ")");
    return;
  }
  choice.settings = parse_adapter_section(choice.type, *parse, s);
  s.finish();
}

void read_validation(SettingsReader& top, Config& c, const fs::path& dir) {
  auto s = top.child("validation");
  if (!s) return;
  auto schema_dir = s->string("schema_dir", "");
  if (!schema_dir.empty()) c.validation.schema_dir = beside(dir, schema_dir);
  auto check = s->string("nhs_number_check_digit", "error");
  if (check == "error") c.validation.nhs_number_check_digit_is_error = true;
  else if (check == "warning") c.validation.nhs_number_check_digit_is_error = false;
  else s->problem("nhs_number_check_digit", "must be error or warning, found '" + check + "'");
  s->finish();
}

void read_delivery(SettingsReader& top, Config& c) {
  auto s = top.child("delivery");
  if (!s) return;
  auto& d = c.delivery;
  d.concurrency_per_destination =
      static_cast<int>(s->integer("concurrency_per_destination", d.concurrency_per_destination, 1, 1024));
  d.max_queued_body_bytes =
      s->byte_size("max_queued_body_bytes", d.max_queued_body_bytes, 0, 64ull * 1024 * 1024 * 1024);
  auto requeue = s->duration("requeue_unconfirmed_after", d.requeue_unconfirmed_after);
  if (requeue < std::chrono::seconds(1) || requeue > std::chrono::hours(1))
    s->problem("requeue_unconfirmed_after", "must be from 1s to 1h");
  else
    d.requeue_unconfirmed_after = requeue;
  auto failing = s->duration("failing_after", d.failing_after);
  if (failing < std::chrono::seconds(1) || failing > std::chrono::hours(24))
    s->problem("failing_after", "must be from 1s to 24h");
  else
    d.failing_after = failing;
  if (auto r = s->child("retry")) {
    auto& p = d.retry;
    if (r->has("max_attempts")) {
      (void)r->string("max_attempts", "");  // known, so it is reported once, here
      r->problem("max_attempts",
                 "no longer supported: deliveries are retried by time, not by count; use keep_trying_for "
                 "(default 3d: how long after its first failed attempt a delivery is still tried)");
    }
    auto keep = r->duration("keep_trying_for", p.keep_trying_for);
    if (keep < std::chrono::seconds(1) || keep > std::chrono::hours(24 * 365))
      r->problem("keep_trying_for", "must be from 1s to 365d");
    else
      p.keep_trying_for = keep;
    auto initial = r->duration("initial_backoff", p.initial_backoff);
    auto max = r->duration("max_backoff", p.max_backoff);
    if (initial < std::chrono::milliseconds(1) || initial > std::chrono::hours(1))
      r->problem("initial_backoff", "must be from 1ms to 1h");
    else
      p.initial_backoff = initial;
    if (max > std::chrono::hours(24))
      r->problem("max_backoff", "must be at most 24h");
    else if (max < p.initial_backoff)
      r->problem("max_backoff", "must not be less than initial_backoff");
    else
      p.max_backoff = max;
    p.multiplier = r->number("multiplier", p.multiplier, 1.0, 10.0);
    p.jitter = r->number("jitter", p.jitter, 0.0, 1.0);
    r->finish();
  }
  s->finish();
}

// consent: opt_out_file, consents_file (relative to the config's folder), poll_every.
void read_consent(SettingsReader& top, Config& c, const fs::path& dir) {
  auto s = top.child("consent");
  if (!s) return;
  auto opt_out = s->string("opt_out_file", "");
  if (!opt_out.empty()) c.consent.opt_out_file = beside(dir, opt_out);
  auto consents = s->string("consents_file", "");
  if (!consents.empty()) c.consent.consents_file = beside(dir, consents);
  auto poll = s->duration("poll_every", c.consent.poll_every);
  if (poll < std::chrono::milliseconds(50) || poll > std::chrono::hours(1)) s->problem("poll_every", "must be from 50ms to 1h");
  else c.consent.poll_every = poll;
  s->finish();
}

// A `limits:` section's rate and connection cap (the broker's or a partner's).
RateLimit read_rate_limit(SettingsReader& s) {
  RateLimit l;
  l.records_per_second = s.number("records_per_second", 0, 0, 1e9);
  l.burst = s.number("burst", 0, 0, 1e9);
  if (l.burst > 0 && l.burst < 1) s.problem("burst", "must be at least 1 record (or 0: as many as records_per_second)");
  if (l.burst > 0 && l.records_per_second == 0) s.problem("burst", "needs records_per_second");
  l.max_connections = static_cast<std::size_t>(s.integer("max_connections", 0, 0, 1'000'000));
  return l;
}

// `limits:` the broker-wide default for partners, and the per-address connection cap.
void read_limits(SettingsReader& top, Config& c) {
  auto s = top.child("limits");
  if (!s) return;
  c.default_limits = read_rate_limit(*s);
  c.max_connections_per_address = static_cast<std::size_t>(s->integer("max_connections_per_address", 0, 0, 1'000'000));
  c.request_timeout = s->duration("request_timeout", c.request_timeout);
  if (c.request_timeout.count() <= 0) s->problem("request_timeout", "must be more than 0, e.g. 60s");
  s->finish();
}

// A stored key or token hash: what `tellonce hash-key` prints.
void check_key_hash(const Located& h, ProblemLog& log) {
  bool hex64 = h.value.size() == 7 + 64 && h.value.starts_with("sha256:") &&
               h.value.find_first_not_of("0123456789abcdef", 7) == std::string::npos;
  if (!hex64) log.add(h.line, h.path, "must be 'sha256:' and 64 lowercase hex digits, as `tellonce hash-key` prints");
}

// A client certificate entry (partners and operators): a fingerprint, stored in upper case as
// the server reports it, or a subject.
std::string certificate_form(const Located& cert, ProblemLog& log) {
  const auto& v = cert.value;
  bool fingerprint = v.size() == 7 + 95 && v.starts_with("sha256:");
  for (std::size_t i = 7; fingerprint && i < v.size(); ++i)
    fingerprint = (i - 7) % 3 == 2 ? v[i] == ':' : std::isxdigit(static_cast<unsigned char>(v[i])) != 0;
  bool subject = v.starts_with("subject:") && v.size() > 8;
  if (!fingerprint && !subject)
    log.add(cert.line, cert.path,
            "must be 'sha256:AB:CD:...' (32 hex pairs, as `openssl x509 -noout -fingerprint -sha256` prints) "
            "or 'subject:CN=...' (RFC 2253, as `openssl x509 -noout -subject -nameopt RFC2253` prints)");
  std::string stored = v;
  if (fingerprint)
    for (std::size_t i = 7; i < stored.size(); ++i) stored[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(stored[i])));
  return stored;
}

// `may:` on a partner; channel ids are checked once every channel is known.
std::optional<Partner::Permissions> read_permissions(SettingsReader& partner, PendingChecks& pending) {
  auto s = partner.child("may");
  if (!s) return std::nullopt;
  Partner::Permissions may;
  if (s->has("channels")) {
    may.channels.emplace();
    for (auto& ch : s->located_strings("channels")) {
      may.channels->push_back(ch.value);
      pending.permitted_channels.push_back(ch);
    }
  }
  if (s->has("resource_types")) may.resource_types = s->strings("resource_types");
  if (s->has("events")) may.events = s->strings("events");
  s->finish();
  return may;
}

// `operators:` who may use the admin API and console, and as what.
void read_operators(SettingsReader& top, Config& c, PendingChecks& pending, ProblemLog& log) {
  std::map<std::string, int, std::less<>> names;
  for (auto& r : top.sequence("operators")) {
    OperatorAccount o;
    o.line = r.line();
    o.name = r.required_string("name");
    bool printable = !o.name.empty() && o.name.size() <= 64;
    for (char ch : o.name)
      printable = printable && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.' || ch == '@');
    if (!o.name.empty() && !printable) r.problem("name", "'" + o.name + "' must be 1 to 64 of a-z, A-Z, 0-9, '-', '_', '.', '@'");
    if (!o.name.empty()) {
      auto [it, fresh] = names.emplace(o.name, o.line);
      if (!fresh) r.problem("name", "duplicate operator '" + o.name + "' (first at line " + std::to_string(it->second) + ")");
    }
    auto role = r.required_string("role");
    if (role == "viewer") o.role = OperatorRole::viewer;
    else if (role == "operator") o.role = OperatorRole::operator_;
    else if (role == "admin") o.role = OperatorRole::admin;
    else if (role == "metrics") o.role = OperatorRole::metrics;
    else if (!role.empty()) r.problem("role", "must be viewer, operator, admin or metrics, found '" + role + "'");
    for (auto& h : r.located_strings("token_hashes")) {
      check_key_hash(h, log);
      o.token_hashes.push_back(h.value);
      pending.api_keys.emplace_back(h, "operator " + o.name);
    }
    for (auto& cert : r.located_strings("certificates")) {
      o.certificates.push_back(certificate_form(cert, log));
      pending.certificates.emplace_back(cert, "operator " + o.name);
    }
    if (o.token_hashes.empty() && o.certificates.empty())
      r.problem("", "an operator needs token_hashes or certificates to sign in with");
    r.finish();
    c.operators.push_back(std::move(o));
  }
}

// The admin API beyond loopback needs TLS on its listener and operators to sign in: without
// them tokens and bodies would cross the network in clear, or anyone could read them.
void check_api_exposure(const Config& c, ProblemLog& log) {
  if (loopback_listen_address(c.api.listen)) return;
  bool tls = false;
  for (const auto& l : c.listeners)
    if (l.listen == c.api.listen && l.tls) tls = true;
  if (!tls || c.operators.empty())
    log.add(c.api.line, "api.listen",
            "the admin API listens beyond loopback (" + c.api.listen + ") but " +
                (!tls ? std::string("its listener has no TLS (listeners: - listen: ") + c.api.listen + ", tls: ...)"
                      : std::string("")) +
                (!tls && c.operators.empty() ? " and " : "") +
                (c.operators.empty() ? "no operators are configured (operators:)" : "") +
                "; use 127.0.0.1 or configure both");
}

void check_permitted_channels(const Config& c, const PendingChecks& pending, ProblemLog& log) {
  for (const auto& ch : pending.permitted_channels) {
    bool known = false;
    for (const auto& in : c.inbound) known = known || in.id == ch.value;
    if (!known) log.add(ch.line, ch.path, "unknown inbound channel '" + ch.value + "'");
  }
}

void read_partners(SettingsReader& top, Config& c, const AdapterCatalog& registry, PendingChecks& pending,
                   ProblemLog& log) {
  IdRegistry ids("partner");
  for (auto& r : top.sequence("partners")) {
    Partner p;
    p.line = r.line();
    p.id = ids.read(r);
    p.name = r.string("name", p.id);
    auto kind = r.required_string("kind");
    if (kind == "trust") p.kind = PartnerKind::trust;
    else if (kind == "primary-care") p.kind = PartnerKind::primary_care;
    else if (kind == "vcse") p.kind = PartnerKind::vcse;
    else if (!kind.empty()) r.problem("kind", "must be trust, primary-care or vcse, found '" + kind + "'");
    p.ods_code = r.required_string("ods");
    if (!p.ods_code.empty() && !ods_code_valid(p.ods_code))
      r.problem("ods", "ODS code '" + p.ods_code + "' must be 3 to 10 uppercase letters or digits");
    for (auto& key : r.located_strings("api_keys")) {
      if (key.value.empty()) log.add(key.line, key.path, "api key must not be empty");
      else if (!c.insecure_clear_api_keys)
        log.add(key.line, key.path, "api keys are stored hashed: put `tellonce hash-key` of it under api_key_hashes "
                                    "(clear keys only with insecure_clear_api_keys: true, for demos and tests)");
      p.api_keys.push_back(key.value);
      pending.api_keys.emplace_back(key, p.id);
    }
    for (auto& h : r.located_strings("api_key_hashes")) {
      check_key_hash(h, log);
      p.api_key_hashes.push_back(h.value);
      pending.api_keys.emplace_back(h, p.id);
    }
    for (auto& cert : r.located_strings("certificates")) {
      p.certificates.push_back(certificate_form(cert, log));
      pending.certificates.emplace_back(cert, p.id);
    }
    p.may = read_permissions(r, pending);
    for (auto& f : r.located_strings("hl7v2_facilities")) {
      if (f.value.empty()) log.add(f.line, f.path, "sending facility must not be empty");
      p.hl7v2_facilities.push_back(f.value);
      pending.facilities.emplace_back(f, p.id);
    }
    if (auto ep = r.child("endpoint")) {
      pending.partners_with_endpoint_section.insert(p.id);
      auto type_name = ep->required_string("type");
      if (!type_name.empty()) {
        if (const auto* parse = registry.outbound_parser(type_name)) {
          auto settings = parse_adapter_section(type_name, *parse, *ep);
          if (ep->ok()) p.endpoint = PartnerEndpoint{type_name, std::move(settings)};
        } else {
          ep->problem("type", "unknown outbound adapter type '" + type_name +
                                  "' (registered: " + joined(registry.outbound_names()) + ")");
        }
      }
      ep->finish();
    }
    p.minimise = read_minimise_ref(r, pending);
    if (r.has("restricted_records")) {
      auto entitled = r.string("restricted_records", "");
      if (entitled == "entitled") p.restricted_records_entitled = true;
      else if (entitled != "not-entitled")
        r.problem("restricted_records", "must be entitled or not-entitled, found '" + entitled + "'");
    }
    if (auto l = r.child("limits")) {
      p.limits = read_rate_limit(*l);
      l->finish();
    }
    r.finish();
    c.partners.push_back(std::move(p));
  }
}

void read_inbound(SettingsReader& top, Config& c, const AdapterCatalog& registry) {
  IdRegistry ids("inbound channel");
  for (auto& r : top.sequence("inbound")) {
    InboundChannel ch;
    ch.line = r.line();
    ch.id = ids.read(r);
    ch.type = r.required_string("type");
    if (!ch.type.empty()) {
      if (const auto* parse = registry.inbound_parser(ch.type)) {
        ch.settings = parse_adapter_section(ch.type, *parse, r);
      } else {
        r.problem("type", "unknown inbound adapter type '" + ch.type + "' (registered: " +
                              joined(registry.inbound_names()) + ")");
      }
    }
    r.finish();
    c.inbound.push_back(std::move(ch));
  }
}

void read_where(SettingsReader& match, Route& route) {
  for (auto& w : match.sequence("where")) {
    FieldPredicate f;
    f.path = w.required_string("path");
    if (!f.path.empty()) {
      auto dot = f.path.find('.');
      auto first = std::string_view(f.path).substr(0, dot);
      if (!looks_like_resource_type(first) || dot == std::string::npos || dot + 1 == f.path.size() ||
          f.path.find("..") != std::string::npos)
        w.problem("path", "path '" + f.path + "' must start with a resource type, e.g. Patient.gender");
    }
    bool has_equals = w.has("equals"), has_in = w.has("in");
    if (has_equals && has_in) w.problem("", "use either equals or in, not both");
    if (has_equals) f.any_of.push_back(w.string("equals", ""));
    if (has_in) {
      auto values = w.strings("in");
      f.any_of.insert(f.any_of.end(), values.begin(), values.end());
      if (values.empty()) w.problem("in", "needs at least one value");
    }
    if (!has_equals && !has_in) w.problem("", "needs equals: VALUE or in: [VALUES]");
    w.finish();
    route.where.push_back(std::move(f));
  }
}

void read_routes(SettingsReader& top, Config& c, PendingChecks& pending, ProblemLog& log) {
  IdRegistry ids("route");
  for (auto& r : top.sequence("routes")) {
    Route route;
    route.line = r.line();
    route.id = ids.read(r);
    if (auto m = r.child("match")) {
      for (auto& t : m->located_strings("resource_type")) {
        if (!looks_like_resource_type(t.value))
          log.add(t.line, t.path, "'" + t.value + "' is not a FHIR resource type name");
        route.resource_types.push_back(t.value);
      }
      for (auto& s : m->located_strings("source")) {
        route.sources.push_back(s.value);
        pending.route_sources.push_back(std::move(s));
      }
      route.events = m->strings("event");
      for (const auto& e : route.events)
        if (e.empty() || e.front() == '|' || e.back() == '|')
          m->problem("event", "event '" + e + "' must be system|code or a bare code");
      read_where(*m, route);
      m->finish();
    }
    route.require_consent = r.boolean("require_consent", false);
    if (r.has("purpose")) {
      auto purpose = r.string("purpose", "");
      if (purpose == "secondary-use") route.purpose = RoutePurpose::secondary_use;
      else if (purpose != "direct-care")
        r.problem("purpose", "must be direct-care or secondary-use, found '" + purpose + "'");
    }
    auto problems_before = log.problems.size();
    for (auto& t : r.located_strings("to")) {
      route.to.push_back(t.value);
      pending.route_targets.push_back(std::move(t));
    }
    if (route.to.empty() && log.problems.size() == problems_before)
      r.problem("to", "required: at least one partner id to deliver to");
    route.minimise = read_minimise_ref(r, pending);
    r.finish();
    c.routes.push_back(std::move(route));
  }
}

// `minimisation:` named allow-lists. Here only their shape: a path must be Type.element[.element...];
// whether FHIR has it and what it would remove is broker/minimise's check (it needs the definitions).
void read_minimisation(SettingsReader& top, Config& c, ProblemLog& log) {
  IdRegistry ids("minimisation");
  for (auto& r : top.sequence("minimisation")) {
    MinimisationList list;
    list.line = r.line();
    list.id = ids.read(r);
    for (auto& a : r.located_strings("allow")) {
      auto dot = a.value.find('.');
      auto first = std::string_view(a.value).substr(0, dot);
      if (!looks_like_resource_type(first) || dot == std::string::npos || dot + 1 == a.value.size() ||
          a.value.find("..") != std::string::npos || a.value.find(' ') != std::string::npos)
        log.add(a.line, a.path, "path '" + a.value + "' must be a resource type and its elements, e.g. Patient.name");
      else
        list.allow.push_back(AllowedPath{a.value, a.path, a.line});
    }
    if (!r.has("allow")) r.problem("allow", "required: at least one FHIR element path to keep");
    r.finish();
    c.minimisation.push_back(std::move(list));
  }
}

// Owners are partner ids or "operator NAME".
std::string owner_text(const std::string& owner) {
  return owner.starts_with("operator ") ? owner : "partner '" + owner + "'";
}

void cross_check(const Config& c, const PendingChecks& pending, ProblemLog& log) {
  for (const auto& m : pending.minimise_refs)
    if (!c.minimisation_list(m.value))
      log.add(m.line, m.path, "unknown allow-list '" + m.value + "' (minimisation: " + [&c] {
        std::vector<std::string> ids;
        for (const auto& l : c.minimisation) ids.push_back(l.id);
        return joined(ids);
      }() + ")");
  for (const auto& t : pending.route_targets) {
    const Partner* p = c.partner(t.value);
    if (!p)
      log.add(t.line, t.path, "unknown partner '" + t.value + "'");
    else if (!p->endpoint && !pending.partners_with_endpoint_section.contains(p->id))
      log.add(t.line, t.path, "partner '" + t.value + "' has no endpoint to deliver to");
  }
  for (const auto& s : pending.route_sources)
    if (!c.partner(s.value)) log.add(s.line, s.path, "unknown partner '" + s.value + "'");
  for (const auto& ref : log.partner_references)
    if (!c.partner(ref.partner_id)) log.add(ref.line, ref.path, "unknown partner '" + ref.partner_id + "'");
  check_listeners(log.listeners, log);
  std::map<std::string, std::string, std::less<>> key_owner;
  for (const auto& [key, owner] : pending.api_keys) {
    auto [it, fresh] = key_owner.emplace(key.value, owner);
    // The key itself is a secret: name the partners, never the key.
    if (!fresh) log.add(key.line, key.path, "api key already used by " + owner_text(it->second));
  }
  std::map<std::string, std::string, std::less<>> cert_owner;
  for (const auto& [cert, owner] : pending.certificates) {
    auto [it, fresh] = cert_owner.emplace(cert.value, owner);
    if (!fresh && it->second != owner)
      log.add(cert.line, cert.path, "certificate already identifies " + owner_text(it->second));
  }
  // A sending facility names one sender: listed twice, or listed by one partner while it is
  // another partner's ODS code, a message could not be told apart.
  std::map<std::string, std::string, std::less<>> facility_owner;
  for (const auto& [f, owner] : pending.facilities) {
    auto [it, fresh] = facility_owner.emplace(f.value, owner);
    if (!fresh && it->second != owner)
      log.add(f.line, f.path, "sending facility '" + f.value + "' is already partner '" + it->second + "''s");
    for (const auto& p : c.partners)
      if (p.id != owner && p.ods_code == f.value)
        log.add(f.line, f.path, "sending facility '" + f.value + "' is partner '" + p.id + "''s ODS code");
  }
}

}  // namespace

ConfigLoad load_config(const std::filesystem::path& file, const AdapterCatalog& registry) {
  auto log = std::make_shared<ProblemLog>();
  log->file = file.string();
  ConfigLoad out;

  YAML::Node root;
  try {
    root = YAML::LoadFile(file.string());
  } catch (const YAML::BadFile&) {
    log->add(0, "", "cannot read the file");
  } catch (const YAML::Exception& e) {
    log->add(e.mark.line >= 0 ? e.mark.line + 1 : 0, "", "YAML syntax: " + e.msg);
  }
  if (!log->problems.empty()) {
    out.problems = std::move(log->problems);
    return out;
  }
  if (!root.IsMap() && !root.IsNull()) {
    log->add(line_of(root), "", "expected a mapping of sections (broker, partners, routes, ...)");
    out.problems = std::move(log->problems);
    return out;
  }

  auto impl = std::make_shared<SettingsReader::Impl>();
  impl->node = root;
  impl->log = log;
  impl->fallback_line = 1;
  SettingsReader top(impl);

  Config c;
  c.file = file;
  const auto dir = file.parent_path();
  PendingChecks pending;
  read_broker(top, c);
  read_api(top, c, dir);
  read_log(top, c);
  read_listeners(top, c);
  read_limits(top, c);
  c.insecure_clear_api_keys = top.boolean("insecure_clear_api_keys", false);
  read_audit(top, c);
  read_engine(top, "store", c.store, registry);
  read_engine(top, "queue", c.queue, registry);
  read_validation(top, c, dir);
  read_delivery(top, c);
  read_consent(top, c, dir);
  read_partners(top, c, registry, pending, *log);
  read_inbound(top, c, registry);
  read_routes(top, c, pending, *log);
  read_minimisation(top, c, *log);
  read_operators(top, c, pending, *log);
  top.finish();
  cross_check(c, pending, *log);
  check_api_exposure(c, *log);
  check_permitted_channels(c, pending, *log);
  // Allow-lists against the FHIR definitions (what exists, what FHIR requires).
  auto compiled = compile_minimisation(c, std::filesystem::path(TELLONCE_SCHEMA_DIR));
  for (auto& p : compiled.problems) log->problems.push_back(std::move(p));
  c.allow_lists = std::move(compiled.lists);

  out.problems = std::move(log->problems);
  std::stable_sort(out.problems.begin(), out.problems.end(),
                   [](const ConfigProblem& a, const ConfigProblem& b) { return a.line < b.line; });
  if (out.problems.empty()) out.config = std::move(c);
  return out;
}

}  // namespace tellonce
