#include "mailbox.hpp"

#include "tellonce/audit.hpp"
#include "tellonce/http_server.hpp"
#include "tellonce/json.hpp"
#include "tellonce/limits.hpp"
#include "tellonce/log.hpp"
#include "tellonce/settings_reader.hpp"
#include "tellonce/store.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <stdexcept>

namespace tellonce {
namespace {

constexpr int max_listed = 500;  // per GET /inbox; the partner calls again for more

Issue error_issue(std::string code, std::string diagnostics) {
  return Issue{Severity::error, std::move(code), std::move(diagnostics), "", ""};
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// What the partner asked for, from the path after /mailbox/<partner>.
struct Route {
  enum class Kind { list, read, acknowledge, unknown } kind = Kind::unknown;
  std::string message_id;
};

Route route_of(std::string_view rest) {
  auto segments = [](std::string_view path) {
    std::vector<std::string_view> out;
    while (!path.empty()) {
      if (path.front() == '/') {
        path.remove_prefix(1);
        continue;
      }
      auto end = std::min(path.find('/'), path.size());
      out.push_back(path.substr(0, end));
      path.remove_prefix(end);
    }
    return out;
  };
  auto parts = segments(rest);
  Route r;
  if (parts.empty() || parts[0] != "inbox") return r;
  if (parts.size() == 1) r.kind = Route::Kind::list;
  else if (parts.size() == 2) r.kind = Route::Kind::read;
  else if (parts.size() == 4 && parts[2] == "status" && parts[3] == "acknowledged") r.kind = Route::Kind::acknowledge;
  if (parts.size() >= 2) r.message_id = std::string(parts[1]);
  return r;
}

// Shared by the adapter, its HTTP handler and its expiry timer, so neither outlives what it uses.
struct MailboxState {
  MailboxState(const MailboxSettings& settings, OutboundContext& ctx)
      : settings(settings),
        listen(settings.listen.empty() ? ctx.api_listen : settings.listen),
        partner(ctx.partner_id),
        prefix("/mailbox/" + ctx.partner_id),
        partners(*ctx.partners),
        store(*ctx.mailbox),
        audit(ctx.audit),
        timer(ctx.io) {}

  const MailboxSettings settings;
  const std::string listen;
  const std::string partner;
  const std::string prefix;
  const PartnerDirectory& partners;
  MailboxStore& store;
  Audit* const audit;        // null: not audited
  asio::steady_timer timer;  // only touched on the io_context (expiry loop, and stop() posted there)
  std::atomic<bool> stopped{false};
  std::atomic<std::uint64_t> held{0};

  HttpResponse refuse(const HttpRequest& req, http::status status, std::string code, std::string why) {
    auto res = outcome_response(req, status, {error_issue(std::move(code), std::move(why))});
    if (status == http::status::unauthorized) res.set(http::field::www_authenticate, "Bearer");
    return res;
  }

  HttpResponse failed(const HttpRequest& req, const Failure& f) {
    return outcome_response(req, http_status_for(f.code), f.issues);
  }

  asio::awaitable<HttpResponse> handle(HttpRequest& req) {
    // Who is asking comes first: without a valid key nothing, not even whether an id exists, is said.
    auto auth = trim(std::string_view(req[http::field::authorization]));
    // A client certificate the TLS handshake verified (the server sets the header) names the
    // caller as a key does.
    std::string_view caller = partners.by_certificate(req[kClientCertFingerprintHeader], req[kClientCertSubjectHeader]);
    if (caller.empty() && auth.size() > 7 && (auth.substr(0, 7) == "Bearer " || auth.substr(0, 7) == "bearer "))
      caller = partners.by_api_key(trim(auth.substr(7)));
    if (caller.empty())
      co_return refuse(req, http::status::unauthorized, "security",
                       "send 'Authorization: Bearer <api key>' with the API key you were given, or connect with your client certificate");
    if (caller != partner)
      co_return refuse(req, http::status::forbidden, "forbidden",
                       "this is the mailbox of another partner; use /mailbox/" + std::string(caller) + "/inbox");
    // Reads count against the partner's rate as records sent do (channel "mailbox").
    if (auto* limits = partners.limits())
      if (auto throttle = limits->admit(caller, "mailbox")) co_return throttled_response(req, *throttle);

    std::string_view target(req.target().data(), req.target().size());
    target = target.substr(0, std::min(target.find('?'), target.size()));
    const auto route = route_of(target.substr(std::min(prefix.size(), target.size())));
    const auto method = req.method();
    switch (route.kind) {
      case Route::Kind::unknown:
        co_return refuse(req, http::status::not_found, "not-found",
                         "no such mailbox resource; use " + prefix + "/inbox, " + prefix + "/inbox/{id} or PUT " +
                             prefix + "/inbox/{id}/status/acknowledged");
      case Route::Kind::list: {
        if (method != http::verb::get) co_return not_allowed(req, "GET");
        auto held_records = co_await store.mailbox(partner, max_listed);
        if (!held_records) co_return failed(req, held_records.error());
        std::string body = "{\"messages\":[";
        for (std::size_t i = 0; i < held_records->size(); ++i) {
          if (i) body += ',';
          append_json_string(body, (*held_records)[i].message_id);
        }
        body += "]}";
        co_return json_response(req, http::status::ok, std::move(body));
      }
      case Route::Kind::read: {
        if (method != http::verb::get) co_return not_allowed(req, "GET");
        auto record = co_await store.held(partner, route.message_id);
        if (!record) co_return failed(req, record.error());
        auto res = json_response(req, http::status::ok, std::move(record->body), record->content_type);
        res.set("X-Tellonce-Message-Id", record->message_id);
        res.set("X-Tellonce-Source", record->source);
        res.set("X-Tellonce-Resource-Type", record->resource_type);
        co_return res;
      }
      case Route::Kind::acknowledge: {
        if (method != http::verb::put) co_return not_allowed(req, "PUT");
        auto collected = co_await store.collect(partner, route.message_id);
        if (!collected) co_return failed(req, collected.error());
        // A collection is a disclosure: queued for the audit once durable, before the partner hears.
        audit_settled(AuditKind::delivered, route.message_id);
        std::string body = "{\"messageId\":";
        append_json_string(body, route.message_id);
        body += ",\"status\":\"acknowledged\"}";
        co_return json_response(req, http::status::ok, std::move(body));
      }
    }
    co_return refuse(req, http::status::not_found, "not-found", "no such mailbox resource");
  }

  // A held delivery settled here rather than by the dispatcher: collected by the partner
  // (delivered, the partner the actor) or expired. Kind, message and destination as the
  // start-up catch-up keys them, so it does not add them again.
  void audit_settled(AuditKind kind, const std::string& message_id) {
    if (!audit) return;
    AuditEntry e;
    e.kind = kind;
    e.message_id = message_id;
    e.destination = partner;
    if (kind == AuditKind::delivered) {
      e.actor = partner;
      e.outcome = "ok";
      e.detail = "collected from the mailbox";
    } else {
      e.actor = "tellonce";
      e.outcome = "expired";
      e.detail = "not acknowledged within expire_after (" +
                 std::to_string(settings.expire_after.count() / 1000) + " s)";
    }
    audit->record(std::move(e));
  }

  HttpResponse not_allowed(const HttpRequest& req, const char* allow) {
    auto res = refuse(req, http::status::method_not_allowed, "not-supported",
                      std::string("this resource takes ") + allow);
    res.set(http::field::allow, allow);
    return res;
  }

  // Expires what waited longer than expire_after, then sleeps; ends when stopped.
  static asio::awaitable<void> expire_loop(std::shared_ptr<MailboxState> self) {
    const auto interval = mailbox_expiry_interval(self->settings.expire_after);
    while (!self->stopped) {
      const auto held_before = now_ms() - self->settings.expire_after.count();
      for (;;) {
        auto expired = co_await self->store.expire_held(self->partner, held_before);
        if (!expired) {
          log::warn("mailbox", "expiry check failed partner=" + self->partner + " store=\"" +
                                   expired.error().summary() + "\"; trying again later");
          break;
        }
        for (const auto& id : *expired) self->audit_settled(AuditKind::expired, id);
        if (!expired->empty())
          log::info("mailbox", "expired " + std::to_string(expired->size()) +
                                   " record(s) not acknowledged in time partner=" + self->partner + " event=mailbox.expired");
        if (expired->size() < MailboxStore::max_expire_batch || self->stopped) break;
      }
      if (self->stopped) break;
      self->timer.expires_after(interval);
      auto [ec] = co_await self->timer.async_wait(asio::as_tuple(asio::use_awaitable));
      if (ec) break;  // cancelled by stop()
    }
  }
};

class MailboxOutbound final : public OutboundAdapter {
 public:
  MailboxOutbound(const MailboxSettings& settings, OutboundContext& ctx) {
    if (!ctx.http || !ctx.partners || !ctx.mailbox || (settings.listen.empty() && ctx.api_listen.empty()))
      throw std::logic_error("mailbox partner '" + ctx.partner_id + "' needs the HTTP listener facility, the partner "
                             "directory, the store's mailbox and a listen address");
    state_ = std::make_shared<MailboxState>(settings, ctx);
    std::weak_ptr<MailboxState> weak = state_;
    ctx.http->mount(state_->listen, state_->prefix, [weak](HttpRequest& req) -> asio::awaitable<HttpResponse> {
      auto self = weak.lock();
      if (!self)
        co_return outcome_response(req, http::status::service_unavailable,
                                   {Issue{Severity::error, "transient", "the mailbox is closing", "", ""}});
      co_return co_await self->handle(req);
    });
    auto on_done = [partner = ctx.partner_id](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        log::error("mailbox", "expiry timer ended partner=" + partner + " error=\"" + x.what() + "\"");
      }
    };
    asio::co_spawn(ctx.io, MailboxState::expire_loop(state_), std::move(on_done));
    io_ = &ctx.io;
  }

  asio::awaitable<DeliveryResult> deliver(const DeliveryJob&) override {
    state_->held.fetch_add(1, std::memory_order_relaxed);
    co_return DeliveryResult{DeliveryOutcome::held, "mailbox", "placed in the mailbox",
                             false};
  }

  std::string describe() const override {
    return "mailbox at http://" + state_->listen + state_->prefix + "/inbox (expires after " +
           std::to_string(state_->settings.expire_after.count() / 1000) + " s)";
  }

  void stop() override {
    if (state_->stopped.exchange(true)) return;
    // The timer belongs to the io_context's threads: cancel it there.
    asio::post(*io_, [state = state_] { state->timer.cancel(); });
  }

 private:
  std::shared_ptr<MailboxState> state_;
  asio::io_context* io_ = nullptr;
};

AdapterSettings parse_settings(SettingsReader& r) {
  auto s = std::make_shared<MailboxSettings>();
  s->listen = r.string("listen", s->listen);
  s->expire_after = r.duration("expire_after", s->expire_after);
  if (s->expire_after < std::chrono::seconds(1))
    r.problem("expire_after", "must be at least 1s (records not acknowledged within it expire)");
  // Without `listen` it shares the API's address, already declared (its /mailbox paths cannot
  // clash with /api). Each mailbox mounts /mailbox/<partner id>; the id is not known here, so
  // the declared path names this section instead, which is unique.
  if (!s->listen.empty()) {
    if (auto why = check_listen_address(s->listen); !why.empty()) r.problem("listen", why);
    else r.declare_listener("listen", s->listen, "http", "/mailbox (" + r.path() + ")");
  }
  r.finish();
  return s;
}

}  // namespace

std::chrono::milliseconds mailbox_expiry_interval(std::chrono::milliseconds expire_after) {
  return std::clamp<std::chrono::milliseconds>(expire_after / 4, std::chrono::milliseconds(250),
                                               std::chrono::minutes(1));
}

std::unique_ptr<OutboundAdapter> make_mailbox_outbound(const MailboxSettings& settings, OutboundContext& ctx) {
  return std::make_unique<MailboxOutbound>(settings, ctx);
}

OutboundAdapterType mailbox_outbound_type() {
  OutboundAdapterType t;
  t.name = "mailbox";
  t.summary = "holds records in the partner's mailbox; the partner lists, reads and acknowledges them over HTTP";
  t.parse = &parse_settings;
  t.create = [](const AdapterSettings& p, OutboundContext& ctx) -> std::unique_ptr<OutboundAdapter> {
    return make_mailbox_outbound(settings_as<MailboxSettings>(p), ctx);
  };
  return t;
}

}  // namespace tellonce
