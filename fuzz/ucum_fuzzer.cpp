// libFuzzer target: a partner's Quantity.code through the UCUM unit parser. The parser must
// never crash, loop or recurse without bound, and a problem's offset must lie inside the input.
#include "broker/validate/ucum.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view code(reinterpret_cast<const char*>(data), size);
  auto problem = tellonce::ucum::check_unit(code);
  if (problem && problem->offset > code.size()) __builtin_trap();
  if (problem && problem->what.empty()) __builtin_trap();
  return 0;
}
