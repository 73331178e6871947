// UK identifier formats needed outside the validator too (the config checks partners' ODS codes).
#pragma once

#include <string_view>

namespace tellonce {

// ODS organisation or site code: 3-10 uppercase letters and digits.
bool ods_code_valid(std::string_view value);

}  // namespace tellonce
