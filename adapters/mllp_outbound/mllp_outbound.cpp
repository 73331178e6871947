#include "mllp_outbound.hpp"
#include "tellonce/tls.hpp"

#include "mllp_client.hpp"

#include "hl7v2/ack.hpp"
#include "hl7v2/er7.hpp"
#include "tellonce/log.hpp"
#include "tellonce/store.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <vector>

namespace tellonce {
namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
using SlotChannel = asio::experimental::concurrent_channel<void(boost::system::error_code, std::size_t)>;

DeliveryResult from_ack(const hl7v2::ReceivedAck& ack) {
  DeliveryResult r;
  using hl7v2::AckCode;
  switch (ack.code) {
    case AckCode::AA:
    case AckCode::CA:
      r.outcome = DeliveryOutcome::ok;
      break;
    case AckCode::AE:
    case AckCode::CE:
      r.outcome = DeliveryOutcome::retryable;
      break;
    case AckCode::AR:
    case AckCode::CR:
      r.outcome = DeliveryOutcome::permanent;
      break;
  }
  r.partner_code = "ACK " + std::string(hl7v2::to_string(ack.code));
  r.detail = ack.text;
  return r;
}

class MllpOutbound final : public OutboundAdapter {
 public:
  MllpOutbound(const MllpOutboundSettings& settings, asio::any_io_executor executor,
               std::shared_ptr<const hl7v2::FhirToV2> renderer, OriginalReader* originals)
      : settings_(settings), renderer_(std::move(renderer)), originals_(originals),
        free_(executor, static_cast<std::size_t>(std::max(1, settings.connections))) {
    if (!renderer_) throw std::logic_error("mllp outbound without a renderer");
    if (settings_.send == MllpOutboundSettings::Send::original && !originals_)
      throw std::logic_error("mllp outbound with send: original but no store to read originals from");
    MllpClientOptions options;
    if (!split_host_port(settings_.address, options.host, options.port))
      throw std::runtime_error("mllp outbound: address '" + settings_.address + "' is not host:port");
    options.connect_timeout = settings_.connect_timeout;
    options.ack_timeout = settings_.ack_timeout;
    options.max_frame_bytes = settings_.max_ack_bytes;
    if (settings_.tls) options.tls = make_tls_client_context(settings_.ca_file, settings_.client_cert, settings_.client_key);
    addressing_.sending_application = settings_.sending_application;
    addressing_.sending_facility = settings_.sending_facility;
    addressing_.receiving_application = settings_.receiving_application;
    addressing_.receiving_facility = settings_.receiving_facility;
    addressing_.processing_id = settings_.processing_id;
    addressing_.patient_as_a28 = settings_.patient_as_a28;
    for (int i = 0; i < std::max(1, settings_.connections); ++i) {
      slots_.push_back(std::make_unique<MllpConnection>(executor, options));
      free_.try_send(boost::system::error_code{}, static_cast<std::size_t>(i));
    }
  }

  ~MllpOutbound() override { stop(); }

  asio::awaitable<DeliveryResult> deliver(const DeliveryJob& job) override {
    if (stopping_) co_return DeliveryResult{DeliveryOutcome::retryable, "", "the broker is stopping", false};
    std::string er7, control_id;
    if (settings_.send == MllpOutboundSettings::Send::original) {
      auto original = co_await originals_->original(job.message_id);
      if (!original) {
        const Failure& f = original.error();
        co_return DeliveryResult{f.is_retryable() ? DeliveryOutcome::retryable : DeliveryOutcome::permanent, "",
                                 "cannot read the original message: " + f.summary(), f.is_retryable()};
      }
      if (*original && (*original)->content_type == kHl7v2ContentType) {
        auto readdressed = readdress_original((*original)->bytes, settings_.receiving_application,
                                              settings_.receiving_facility, control_id);
        if (!readdressed)
          co_return DeliveryResult{DeliveryOutcome::permanent, "",
                                   "the original message cannot be sent: " + readdressed.error().summary(), false};
        er7 = std::move(*readdressed);
      }
    }
    if (er7.empty()) {
      auto rendered = renderer_->render(job.body, addressing_,
                                        std::to_string(job.delivery_id) + "-" + std::to_string(job.attempts + 1),
                                        hl7v2::hl7_timestamp_now());
      if (!rendered)
        co_return DeliveryResult{DeliveryOutcome::permanent, "",
                                 "cannot be sent as HL7 v2: " + rendered.error().summary(), false};
      er7 = std::move(rendered->er7);
      control_id = std::move(rendered->control_id);
    }

    auto [ec, slot] = co_await free_.async_receive(use_tuple);
    if (ec) co_return DeliveryResult{DeliveryOutcome::retryable, "", "the broker is stopping", false};
    struct Return {  // the connection goes back to the pool however this ends
      SlotChannel& free;
      std::size_t slot;
      ~Return() { free.try_send(boost::system::error_code{}, slot); }
    } give_back{free_, slot};

    auto exchanged = co_await slots_[slot]->exchange(std::move(er7), control_id);
    if (exchanged.ok()) {
      auto result = from_ack(exchanged.ack);
      ++(result.outcome == DeliveryOutcome::ok ? acked_ : refused_);
      co_return result;
    }
    ++failed_;
    DeliveryResult r{DeliveryOutcome::retryable, "", std::move(exchanged.detail), exchanged.broker_fault};
    if (exchanged.status == MllpExchange::Status::timed_out && exchanged.discarded)
      r.detail += " (" + std::to_string(exchanged.discarded) + " ACK(s) for other messages discarded)";
    co_return r;
  }

  std::string describe() const override {
    return "mllp to " + settings_.address + " (" + std::to_string(slots_.size()) + " connection" +
           (slots_.size() == 1 ? "" : "s") + ", ACK AA " + std::to_string(acked_.load()) + ", refused " +
           std::to_string(refused_.load()) + ", no ACK " + std::to_string(failed_.load()) + ")";
  }

  void stop() override {
    if (stopping_.exchange(true)) return;
    free_.close();
    for (auto& s : slots_) s->close();
  }

 private:
  MllpOutboundSettings settings_;
  std::shared_ptr<const hl7v2::FhirToV2> renderer_;
  OriginalReader* originals_;
  hl7v2::V2Addressing addressing_;
  std::vector<std::unique_ptr<MllpConnection>> slots_;
  SlotChannel free_;  // indexes of idle connections
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> acked_{0}, refused_{0}, failed_{0};
};

}  // namespace

Result<std::string> readdress_original(std::string_view er7, const std::string& receiving_application,
                                       const std::string& receiving_facility, std::string& control_id) {
  if (er7.starts_with("\xEF\xBB\xBF")) er7.remove_prefix(3);
  while (!er7.empty() && (er7.front() == '\r' || er7.front() == '\n')) er7.remove_prefix(1);
  if (er7.size() < 8 || !er7.starts_with("MSH"))
    return Failure::permanent(Errc::malformed, Issue{Severity::error, "structure",
                                                     "the stored original does not start with an MSH segment",
                                                     "MSH^1", "hl7v2-msh"});
  const char field_sep = er7[3];
  auto end = er7.find_first_of("\r\n");
  std::string_view msh = er7.substr(0, end);
  std::string_view rest = end == std::string_view::npos ? std::string_view() : er7.substr(end);
  std::vector<std::string> fields;  // fields[k] is MSH-(k+1), but fields[0] is "MSH"
  std::size_t start = 0;
  for (;;) {
    auto sep = msh.find(field_sep, start);
    fields.emplace_back(msh.substr(start, sep == std::string_view::npos ? std::string_view::npos : sep - start));
    if (sep == std::string_view::npos) break;
    start = sep + 1;
  }
  hl7v2::Encoding enc;
  enc.field = field_sep;
  if (fields.size() > 1) {
    const std::string& chars = fields[1];
    if (chars.size() > 0) enc.component = chars[0];
    if (chars.size() > 1) enc.repetition = chars[1];
    if (chars.size() > 2) enc.escape = chars[2];
    if (chars.size() > 3) enc.subcomponent = chars[3];
  }
  if (fields.size() < 10) fields.resize(10);
  if (!receiving_application.empty()) fields[4] = hl7v2::escape(receiving_application, enc);
  if (!receiving_facility.empty()) fields[5] = hl7v2::escape(receiving_facility, enc);
  control_id = hl7v2::unescape(fields[9].substr(0, fields[9].find(enc.component)), enc);
  std::string out;
  out.reserve(er7.size() + receiving_application.size() + receiving_facility.size());
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (i) out += field_sep;
    out += fields[i];
  }
  out += rest;
  return out;
}

std::unique_ptr<OutboundAdapter> make_mllp_outbound(const MllpOutboundSettings& settings,
                                                    asio::any_io_executor executor,
                                                    std::shared_ptr<const hl7v2::FhirToV2> renderer,
                                                    OriginalReader* originals) {
  return std::make_unique<MllpOutbound>(settings, std::move(executor), std::move(renderer), originals);
}

OutboundAdapterType mllp_outbound_type() {
  OutboundAdapterType t;
  t.name = "mllp";
  t.summary = "HL7 v2 over MLLP: records rendered as ADT v2.4, delivered once the receiver's ACK AA comes";
  t.parse = [](SettingsReader& r) -> AdapterSettings {
    auto s = std::make_shared<MllpOutboundSettings>();
    s->address = r.required_string("address");
    std::string host, port;
    if (!s->address.empty() && !split_host_port(s->address, host, port))
      r.problem("address", "'" + s->address + "' must be host:port, e.g. 127.0.0.1:2576");
    s->connect_timeout = r.duration("connect_timeout", s->connect_timeout);
    s->ack_timeout = r.duration("ack_timeout", s->ack_timeout);
    if (s->connect_timeout.count() <= 0) r.problem("connect_timeout", "must be more than 0, e.g. 3s");
    if (s->ack_timeout.count() <= 0) r.problem("ack_timeout", "must be more than 0, e.g. 10s");
    s->receiving_application = r.string("receiving_application", "");
    s->receiving_facility = r.string("receiving_facility", "");
    s->sending_application = r.string("sending_application", s->sending_application);
    s->sending_facility = r.string("sending_facility", "");
    s->processing_id = r.string("processing_id", s->processing_id);
    if (s->processing_id != "P" && s->processing_id != "T" && s->processing_id != "D")
      r.problem("processing_id", "must be P (production), T (training) or D (debugging)");
    s->patient_as_a28 = r.boolean("patient_as_a28", false);
    auto send = r.string("send", "converted");
    if (send == "original") s->send = MllpOutboundSettings::Send::original;
    else if (send != "converted") r.problem("send", "must be converted or original, found '" + send + "'");
    s->connections = static_cast<int>(r.integer("connections", 1, 1, 64));
    s->max_ack_bytes = static_cast<std::size_t>(r.byte_size("max_ack_bytes", s->max_ack_bytes, 1024, 64u << 20));
    s->tables_dir = hl7v2::read_tables_setting(r);
    if (auto t = r.child("tls")) {
      s->tls = true;
      s->ca_file = t->file_path("ca_file", "");
      s->client_cert = t->file_path("client_cert", "");
      s->client_key = t->file_path("client_key", "");
      if (s->client_cert.empty() != s->client_key.empty())
        t->problem(s->client_cert.empty() ? "client_cert" : "client_key", "a client certificate needs both client_cert and client_key");
      else if (!s->client_cert.empty())
        for (auto& why : check_tls_files(TlsSettings{s->client_cert, s->client_key, {}, ClientCertificates::none, false, {}}))
          t->problem("client_cert", why);
      t->finish();
    }
    return s;
  };
  t.create = [](const AdapterSettings& p, OutboundContext& ctx) -> std::unique_ptr<OutboundAdapter> {
    const auto& s = settings_as<MllpOutboundSettings>(p);
    std::shared_ptr<const hl7v2::FhirToV2> renderer =
        hl7v2::FhirToV2::load(s.tables_dir);
    return make_mllp_outbound(s, ctx.io.get_executor(), std::move(renderer), &ctx.originals);
  };
  return t;
}

}  // namespace tellonce
