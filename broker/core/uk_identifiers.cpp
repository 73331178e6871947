#include "broker/core/uk_identifiers.hpp"

namespace tellonce {

bool ods_code_valid(std::string_view value) {
  if (value.size() < 3 || value.size() > 10) return false;
  for (char c : value) {
    bool upper = c >= 'A' && c <= 'Z';
    bool digit = c >= '0' && c <= '9';
    if (!upper && !digit) return false;
  }
  return true;
}

}  // namespace tellonce
