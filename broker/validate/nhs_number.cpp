#include "broker/validate/rules.hpp"
#include "broker/validate/rules_formats.hpp"

#include <array>
#include <cstdint>

namespace tellonce {

namespace {
bool ascii_digit(char c) { return c >= '0' && c <= '9'; }
}  // namespace

bool nhs_number_well_formed(std::string_view value) {
  if (value.size() != 10) return false;
  for (char c : value)
    if (!ascii_digit(c)) return false;
  return true;
}

bool nhs_number_valid(std::string_view digits) {
  if (!nhs_number_well_formed(digits)) return false;
  int sum = 0;
  for (int i = 0; i < 9; ++i) sum += (digits[i] - '0') * (10 - i);
  int check = 11 - sum % 11;
  if (check == 11) check = 0;
  // A computed check digit of 10 means no valid NHS number has these first nine digits.
  if (check == 10) return false;
  return check == digits[9] - '0';
}

namespace {
// Verhoeff tables: multiplication in the dihedral group D5 and the position permutation.
constexpr std::array<std::array<std::uint8_t, 10>, 10> verhoeff_d{{
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 2, 3, 4, 0, 6, 7, 8, 9, 5},
    {2, 3, 4, 0, 1, 7, 8, 9, 5, 6}, {3, 4, 0, 1, 2, 8, 9, 5, 6, 7},
    {4, 0, 1, 2, 3, 9, 5, 6, 7, 8}, {5, 9, 8, 7, 6, 0, 4, 3, 2, 1},
    {6, 5, 9, 8, 7, 1, 0, 4, 3, 2}, {7, 6, 5, 9, 8, 2, 1, 0, 4, 3},
    {8, 7, 6, 5, 9, 3, 2, 1, 0, 4}, {9, 8, 7, 6, 5, 4, 3, 2, 1, 0},
}};
constexpr std::array<std::array<std::uint8_t, 10>, 8> verhoeff_p{{
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 5, 7, 6, 2, 8, 3, 0, 9, 4},
    {5, 8, 0, 3, 7, 9, 6, 1, 4, 2}, {8, 9, 1, 6, 0, 4, 3, 5, 2, 7},
    {9, 4, 5, 3, 1, 2, 6, 8, 7, 0}, {4, 2, 8, 6, 5, 7, 3, 9, 0, 1},
    {2, 7, 9, 3, 8, 0, 6, 4, 1, 5}, {7, 0, 4, 6, 9, 1, 3, 2, 5, 8},
}};

bool verhoeff_valid(std::string_view digits) {
  unsigned c = 0;
  std::size_t n = digits.size();
  for (std::size_t i = 0; i < n; ++i) {
    unsigned digit = static_cast<unsigned>(digits[n - 1 - i] - '0');
    c = verhoeff_d[c][verhoeff_p[i % 8][digit]];
  }
  return c == 0;
}
}  // namespace

bool snomed_concept_id_valid(std::string_view value) {
  if (value.size() < 6 || value.size() > 18 || value[0] == '0') return false;
  for (char c : value)
    if (!ascii_digit(c)) return false;
  // Partition: the two digits before the check digit; "x0" is a concept, x = 0 short, 1 long format.
  char format = value[value.size() - 3];
  char kind = value[value.size() - 2];
  if ((format != '0' && format != '1') || kind != '0') return false;
  return verhoeff_valid(value);
}

bool snomed_expression_p(std::string_view value) {
  return value.find_first_of(":=+{") != std::string_view::npos;
}

}  // namespace tellonce
