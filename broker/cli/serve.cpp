// `tellonce serve`: wires the components together and runs them on one io_context.
#include "cli/commands.hpp"

#include "api/api.hpp"
#include "config/config.hpp"
#include "core/log.hpp"
#include "delivery/delivery.hpp"
#include "http/server.hpp"
#include "ingest/pipeline.hpp"
#include "queue/queue.hpp"
#include "route/router.hpp"
#include "store/store.hpp"
#include "validate/validator.hpp"

#include <boost/asio/signal_set.hpp>

#include <chrono>
#include <deque>
#include <iostream>
#include <thread>

namespace tellonce {
namespace {

struct ServeArgs {
  std::filesystem::path config;
};

std::optional<ServeArgs> parse_args(int argc, char** argv) {
  ServeArgs a;
  for (int i = 0; i < argc; ++i) {
    std::string_view s = argv[i];
    if (s == "--config" && i + 1 < argc) a.config = argv[++i];
    else if (s == "--verbose") log::set_level(log::Level::debug);
    else if (s == "--quiet") log::set_level(log::Level::warn);
    else {
      std::cerr << "tellonce serve: unexpected argument '" << s << "'\nusage: tellonce serve --config FILE [--verbose|--quiet]\n";
      return std::nullopt;
    }
  }
  if (a.config.empty()) {
    std::cerr << "usage: tellonce serve --config FILE [--verbose|--quiet]\n";
    return std::nullopt;
  }
  return a;
}

}  // namespace

int run_serve_command(int argc, char** argv, const AdapterRegistry& registry) {
  auto args = parse_args(argc, argv);
  if (!args) return 2;

  auto load = load_config(args->config, registry);
  if (!load.config) {
    for (const auto& p : load.problems) std::cerr << p.to_string() << "\n";
    std::cerr << "tellonce: not starting: " << load.problems.size() << " problem(s) in "
              << args->config.string() << "\n";
    return 2;
  }
  const Config& cfg = *load.config;

  auto started = std::chrono::steady_clock::now();
  auto validator = make_fhir_validator(ValidatorSettings{
      cfg.validation.schema_dir.empty() ? std::filesystem::path(TELLONCE_SCHEMA_DIR) : cfg.validation.schema_dir,
      cfg.validation.nhs_number_check_digit_is_error});
  auto compile_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - started).count();
  auto router = make_router(cfg);
  std::filesystem::create_directories(cfg.store.path.parent_path().empty() ? "." : cfg.store.path.parent_path());
  auto store = make_sqlite_store(SqliteStoreSettings{cfg.store.path, cfg.store.max_commit_delay, cfg.store.max_batch});

  int threads = cfg.io_threads > 0 ? cfg.io_threads
                                   : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  asio::io_context io(threads);
  auto queue = make_memory_queue(io.get_executor(), static_cast<std::size_t>(cfg.delivery.max_queued_body_bytes));

  std::map<std::string, std::shared_ptr<OutboundAdapter>> outbound;
  for (const auto& p : cfg.partners) {
    if (!p.endpoint) continue;
    const auto* type = registry.outbound(p.endpoint->type);
    OutboundContext octx{io, p.id};
    outbound[p.id] = type->create(p.endpoint->settings, octx);
  }
  Dispatcher dispatcher(io, *store, *queue, cfg.delivery, outbound);
  auto pipeline = make_pipeline(*validator, *router, *store, *queue,
                                JsonLimits{cfg.max_body_bytes, cfg.max_json_depth});

  HttpServers http(io, HttpLimits{cfg.max_body_bytes, std::chrono::seconds(60), 16 * 1024});
  std::deque<InboundContext> contexts;  // adapters may keep a reference for their lifetime
  std::vector<std::unique_ptr<InboundAdapter>> inbound;
  for (const auto& ch : cfg.inbound) {
    contexts.push_back(InboundContext{io, *pipeline, http, *store, cfg, ch.id});
    inbound.push_back(registry.inbound(ch.type)->create(ch.settings, contexts.back()));
  }
  mount_api(http.at(cfg.api.listen), *store, *pipeline, cfg);

  // Resume before accepting anything new, so redelivery keeps acceptance order.
  auto pending = store->load_pending(static_cast<std::size_t>(cfg.delivery.max_queued_body_bytes));
  if (!pending) throw std::runtime_error("cannot read pending deliveries: " + pending.error().summary());
  std::size_t resumed = pending->size();
  for (auto& job : *pending) queue->push(std::move(job));

  for (auto& a : inbound) a->start();
  http.start_all();
  dispatcher.start();

  std::cout << "tellonce " << TELLONCE_VERSION << " serving (" << threads << " io threads, schemas compiled in "
            << compile_ms << " ms)\n";
  for (auto& a : inbound) std::cout << "  inbound  " << a->describe() << "\n";
  for (auto& [id, a] : outbound) std::cout << "  outbound " << id << ": " << a->describe() << "\n";
  std::cout << "  api      http://" << cfg.api.listen << "/api/messages/{id}\n"
            << "  store    " << cfg.store.path.string() << " (" << resumed << " pending deliveries resumed)\n"
            << std::flush;

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    log::info("serve", "signal " + std::to_string(sig) + ": stopping");
    for (auto& a : inbound) a->stop();
    http.stop_all();
    dispatcher.stop();
    queue->stop();
    for (auto& [id, a] : outbound) a->stop();
    io.stop();
  });

  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : pool) t.join();
  store->close();
  std::cout << "tellonce stopped\n";
  return 0;
}

}  // namespace tellonce
