// `tellonce serve`: parses its arguments, loads the config, and runs a Broker (cli/broker.hpp),
// which owns the components and the shutdown.
#include "broker/cli/commands.hpp"

#include "broker/cli/broker.hpp"
#include "broker/config/config.hpp"
#include "tellonce/log.hpp"

#include <iostream>

namespace tellonce {
namespace {

struct ServeArgs {
  std::filesystem::path config;
  BrokerOptions options;
};

std::optional<ServeArgs> parse_args(int argc, char** argv) {
  ServeArgs a;
  for (int i = 0; i < argc; ++i) {
    std::string_view s = argv[i];
    if (s == "--config" && i + 1 < argc) a.config = argv[++i];
    else if (s == "--accept-new-store") a.options.accept_new_store = true;
    else if (s == "--accept-wal-loss") a.options.accept_wal_loss = true;
    else if (s == "--verbose") log::set_level(log::Level::debug);
    else if (s == "--quiet") log::set_level(log::Level::warn);
    else {
      std::cerr << "tellonce serve: unexpected argument '" << s << "'\nusage: tellonce serve --config FILE [--verbose|--quiet] [--accept-new-store] [--accept-wal-loss]\n";
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

  if (load.config->log_format == "json") log::set_format(log::Format::json);
  Broker broker(*load.config, registry, args->options);
  broker.start(std::cout);
  int rc = broker.run();
  std::cout << "tellonce stopped\n";
  return rc;
}

}  // namespace tellonce
