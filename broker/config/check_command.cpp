#include "broker/config/check_command.hpp"

#include "broker/config/config.hpp"

#include <iostream>
#include <string>
#include <vector>

namespace tellonce {

namespace {

std::string count_of(std::size_t n, const char* singular, const char* plural) {
  return std::to_string(n) + " " + (n == 1 ? singular : plural);
}

}  // namespace

int run_check_config_command(int argc, char** argv, const AdapterCatalog& registry, std::ostream& out,
                             std::ostream& err) {
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "check-config" && files.empty()) continue;
    files.push_back(std::move(arg));
  }
  if (files.size() != 1 || files[0].starts_with("-")) {
    err << "usage: tellonce check-config FILE\n";
    return 2;
  }
  const std::string& file = files[0];
  auto load = load_config(file, registry);
  if (!load.problems.empty()) {
    for (const auto& p : load.problems) out << p.to_string() << '\n';
    out << count_of(load.problems.size(), "problem", "problems") << " in " << file << '\n';
    return 1;
  }
  const Config& c = *load.config;
  out << file << ": OK \u2014 " << count_of(c.partners.size(), "partner", "partners") << ", "
      << count_of(c.inbound.size(), "inbound channel", "inbound channels") << ", "
      << count_of(c.routes.size(), "route", "routes") << '\n';
  return 0;
}

int run_check_config_command(int argc, char** argv, const AdapterCatalog& registry) {
  return run_check_config_command(argc, argv, registry, std::cout, std::cerr);
}

}  // namespace tellonce
