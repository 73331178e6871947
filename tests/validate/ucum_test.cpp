// The UCUM unit expression parser (broker/validate/ucum.*): units partners send, and the
// mistakes they make.
#include "broker/validate/ucum.hpp"

#include <gtest/gtest.h>

namespace tellonce::ucum {
namespace {

TEST(Ucum, AcceptsCommonUnits) {
  for (const char* unit :
       {"mg", "g", "kg", "mL", "L", "mmol", "mol", "h", "min", "s", "d", "wk", "mo", "a", "%", "[IU]",
        "mm[Hg]", "/min", "kg/m2", "10*3/uL", "10*9/L", "10^6", "mg/dL", "umol/L", "ng/mL", "mmol/mol", "[iU]/L",
        "meq/L", "mL/min/{1.73_m2}", "{cells}/uL", "{beats}/min", "1", "cm[H2O]", "[degF]", "Cel", "[lb_av]",
        "[in_i]", "[ft_i]", "kcal", "kg.m/s2", "m2", "s-1", "10*-3", "(mg/L)/h", "mL{total}", "{score}",
        "[arb'U]/mL", "U/L", "mU/L", "[ppm]", "[pH]", "dB[SPL]", "ug/(kg.min)", "/[HPF]", "[drp]", "[foz_us]",
        "fL", "pg", "mosm/kg", "K", "mbar", "{}", "10.uN"}) {
    auto problem = check_unit(unit);
    EXPECT_FALSE(problem.has_value()) << unit << ": " << (problem ? problem->what : "");
  }
}

struct Bad {
  const char* unit;
  std::size_t offset;
  const char* what;  // part of the message
};

TEST(Ucum, ReportsUnknownAtomsAndBadSyntax) {
  for (const Bad& c : std::initializer_list<Bad>{
           {"", 0, "empty"},
           {"mgg", 0, "unknown unit 'mgg'"},
           {"mg/DL", 3, "unknown unit 'DL'"},   // UCUM is case-sensitive: dL (dl is fine too)
           {"mcg", 0, "unknown unit 'mcg'"},      // micrograms are ug
           {"kh", 0, "unknown unit 'kh'"},       // h takes no prefix
           {"k%", 0, "unknown unit 'k%'"},
           {"mmol/", 5, "missing at the end"},
           {"mg//L", 3, "missing before"},
           {"(mg/L", 0, "unbalanced '('"},
           {"mg/L)", 4, "unbalanced ')'"},
           {"mg{x", 2, "unbalanced '{'"},
           {"[IU", 0, "unbalanced '['"},
           {"mg L", 2, "without spaces"},
           {"2mg", 0, "unknown unit '2mg'"},
           {"mg{a{b}}", 4, "'{' inside"},
           {"µg", 0, "printable ASCII"},
       }) {
    auto problem = check_unit(c.unit);
    ASSERT_TRUE(problem.has_value()) << c.unit;
    EXPECT_EQ(problem->offset, c.offset) << c.unit << ": " << problem->what;
    EXPECT_NE(problem->what.find(c.what), std::string::npos) << c.unit << ": " << problem->what;
  }
}

TEST(Ucum, DeepNestingIsBounded) {
  std::string deep(10000, '(');
  auto problem = check_unit(deep + "m" + std::string(10000, ')'));
  ASSERT_TRUE(problem.has_value());
  EXPECT_NE(problem->what.find("nested too deeply"), std::string::npos);
  EXPECT_FALSE(check_unit("((((m))))").has_value());
}

TEST(Ucum, AtomTable) {
  bool metric = false;
  EXPECT_TRUE(is_atom("g", &metric));
  EXPECT_TRUE(metric);
  EXPECT_TRUE(is_atom("h", &metric));
  EXPECT_FALSE(metric);
  EXPECT_FALSE(is_atom("mg"));  // prefixed: a unit, not an atom
}

}  // namespace
}  // namespace tellonce::ucum
