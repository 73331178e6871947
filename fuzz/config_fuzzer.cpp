// libFuzzer target: a configuration file through load_config with the real adapter registry
// (the adapters' own settings parsers included). Problems are values; nothing may throw.
#include "tellonce/registry.hpp"
#include "broker/config/config.hpp"

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

const tellonce::AdapterRegistry& registry() {
  static tellonce::AdapterRegistry r = [] {
    tellonce::AdapterRegistry reg;
    tellonce::register_builtin_adapters(reg);
    tellonce::register_builtin_engines(reg);
    return reg;
  }();
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // load_config reads a file: one per fuzzing process, rewritten for each input.
  static const std::filesystem::path file =
      std::filesystem::temp_directory_path() / ("tellonce-fuzz-config-" + std::to_string(getpid()) + ".yaml");
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  auto load = tellonce::load_config(file, registry());
  for (auto& p : load.problems) (void)p.to_string();
  return 0;
}
