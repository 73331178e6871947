#include "broker/validate/ucum.hpp"

#include <algorithm>
#include <array>
#include <iterator>

namespace tellonce::ucum {
namespace {

struct Atom {
  std::string_view code;
  bool metric;
};

// UCUM's case-sensitive codes (c/s). Metric atoms take prefixes.
constexpr Atom atoms_unsorted[] = {
    // base units
    {"m", true}, {"s", true}, {"g", true}, {"rad", true}, {"K", true}, {"C", true}, {"cd", true},
    // dimensionless
    {"10*", false}, {"10^", false}, {"[pi]", false}, {"%", false}, {"[ppth]", false}, {"[ppm]", false},
    {"[ppb]", false}, {"[pptr]", false},
    // SI
    {"mol", true}, {"sr", true}, {"Hz", true}, {"N", true}, {"Pa", true}, {"J", true}, {"W", true},
    {"A", true}, {"V", true}, {"F", true}, {"Ohm", true}, {"S", true}, {"Wb", true}, {"Cel", true},
    {"T", true}, {"H", true}, {"lm", true}, {"lx", true}, {"Bq", true}, {"Gy", true}, {"Sv", true},
    // ISO 1000 and others accepted with SI
    {"gon", false}, {"deg", false}, {"'", false}, {"''", false}, {"l", true}, {"L", true}, {"ar", true},
    {"min", false}, {"h", false}, {"d", false}, {"a_t", false}, {"a_j", false}, {"a_g", false},
    {"a", false}, {"wk", false}, {"mo_s", false}, {"mo_j", false}, {"mo_g", false}, {"mo", false},
    {"t", true}, {"bar", true}, {"u", true}, {"eV", true}, {"AU", false}, {"pc", true},
    // natural constants
    {"[c]", true}, {"[h]", true}, {"[k]", true}, {"[eps_0]", true}, {"[mu_0]", true}, {"[e]", true},
    {"[m_e]", true}, {"[m_p]", true}, {"[G]", true}, {"[g]", true}, {"atm", false}, {"[ly]", true},
    {"gf", true},
    // CGS
    {"[lbf_av]", false}, {"Ky", true}, {"Gal", true}, {"dyn", true}, {"erg", true}, {"P", true},
    {"Bi", true}, {"St", true}, {"Mx", true}, {"G", true}, {"Oe", true}, {"Gb", true}, {"sb", true},
    {"Lmb", true}, {"ph", true}, {"Ci", true}, {"R", true}, {"RAD", true}, {"REM", true},
    // customary: international, US survey, British, avoirdupois, troy, apothecaries', typography
    {"[in_i]", false}, {"[ft_i]", false}, {"[yd_i]", false}, {"[mi_i]", false}, {"[fth_i]", false},
    {"[nmi_i]", false}, {"[kn_i]", false}, {"[sin_i]", false}, {"[sft_i]", false}, {"[syd_i]", false},
    {"[cin_i]", false}, {"[cft_i]", false}, {"[cyd_i]", false}, {"[bf_i]", false}, {"[cr_i]", false},
    {"[mil_i]", false}, {"[cml_i]", false}, {"[hd_i]", false}, {"[ft_us]", false}, {"[yd_us]", false},
    {"[in_us]", false}, {"[rd_us]", false}, {"[ch_us]", false}, {"[lk_us]", false}, {"[rch_us]", false},
    {"[rlk_us]", false}, {"[fth_us]", false}, {"[fur_us]", false}, {"[mi_us]", false}, {"[acr_us]", false},
    {"[srd_us]", false}, {"[smi_us]", false}, {"[sct]", false}, {"[twp]", false}, {"[mil_us]", false},
    {"[in_br]", false}, {"[ft_br]", false}, {"[rd_br]", false}, {"[ch_br]", false}, {"[lk_br]", false},
    {"[fth_br]", false}, {"[pc_br]", false}, {"[yd_br]", false}, {"[mi_br]", false}, {"[nmi_br]", false},
    {"[kn_br]", false}, {"[acr_br]", false}, {"[gal_us]", false}, {"[bbl_us]", false}, {"[qt_us]", false},
    {"[pt_us]", false}, {"[gil_us]", false}, {"[foz_us]", false}, {"[fdr_us]", false}, {"[min_us]", false},
    {"[crd_us]", false}, {"[bu_us]", false}, {"[gal_wi]", false}, {"[pk_us]", false}, {"[dqt_us]", false},
    {"[dpt_us]", false}, {"[tbs_us]", false}, {"[tsp_us]", false}, {"[cup_us]", false}, {"[foz_m]", false},
    {"[cup_m]", false}, {"[tsp_m]", false}, {"[tbs_m]", false}, {"[gal_br]", false}, {"[pk_br]", false},
    {"[bu_br]", false}, {"[qt_br]", false}, {"[pt_br]", false}, {"[gil_br]", false}, {"[foz_br]", false},
    {"[fdr_br]", false}, {"[min_br]", false}, {"[gr]", false}, {"[lb_av]", false}, {"[oz_av]", false},
    {"[dr_av]", false}, {"[scwt_av]", false}, {"[lcwt_av]", false}, {"[ston_av]", false},
    {"[lton_av]", false}, {"[stone_av]", false}, {"[pwt_tr]", false}, {"[oz_tr]", false}, {"[lb_tr]", false},
    {"[sc_ap]", false}, {"[dr_ap]", false}, {"[oz_ap]", false}, {"[lb_ap]", false}, {"[oz_m]", false},
    {"[lne]", false}, {"[pnt]", false}, {"[pca]", false}, {"[pnt_pr]", false}, {"[pca_pr]", false},
    {"[pied]", false}, {"[pouce]", false}, {"[ligne]", false}, {"[didot]", false}, {"[cicero]", false},
    // heat, clinical, chemical, biological activity
    {"[degF]", false}, {"[degR]", false}, {"[degRe]", false}, {"cal_[15]", true}, {"cal_[20]", true},
    {"cal_m", true}, {"cal_IT", true}, {"cal_th", true}, {"cal", true}, {"[Cal]", false},
    {"[Btu_39]", false}, {"[Btu_59]", false}, {"[Btu_60]", false}, {"[Btu_m]", false}, {"[Btu_IT]", false},
    {"[Btu_th]", false}, {"[Btu]", false}, {"[HP]", false}, {"tex", true}, {"[den]", false},
    {"m[H2O]", true}, {"m[Hg]", true}, {"[in_i'H2O]", false}, {"[in_i'Hg]", false}, {"[PRU]", false},
    {"[wood'U]", false}, {"[diop]", false}, {"[p'diop]", false}, {"%[slope]", false}, {"[mesh_i]", false},
    {"[Ch]", false}, {"[drp]", false}, {"[hnsf'U]", false}, {"[MET]", false}, {"[hp'_X]", false},
    {"[hp'_C]", false}, {"[hp'_M]", false}, {"[hp'_Q]", false}, {"[hp_X]", false}, {"[hp_C]", false},
    {"[hp_M]", false}, {"[hp_Q]", false}, {"[kp_X]", false}, {"[kp_C]", false}, {"[kp_M]", false},
    {"[kp_Q]", false}, {"eq", true}, {"osm", true}, {"[pH]", false}, {"g%", true}, {"[S]", false},
    {"[HPF]", false}, {"[LPF]", false}, {"kat", true}, {"U", true}, {"[iU]", true}, {"[IU]", true},
    {"[arb'U]", false}, {"[USP'U]", false}, {"[GPL'U]", false}, {"[MPL'U]", false}, {"[APL'U]", false},
    {"[beth'U]", false}, {"[anti'Xa'U]", false}, {"[todd'U]", false}, {"[dye'U]", false},
    {"[smgy'U]", false}, {"[bdsk'U]", false}, {"[ka'U]", false}, {"[knk'U]", false}, {"[mclg'U]", false},
    {"[tb'U]", false}, {"[CCID_50]", false}, {"[TCID_50]", false}, {"[EID_50]", false}, {"[PFU]", false},
    {"[FFU]", false}, {"[CFU]", false}, {"[IR]", false}, {"[BAU]", false}, {"[AU]", false},
    {"[Amb'a'1'U]", false}, {"[PNU]", false}, {"[Lf]", false}, {"[D'ag'U]", false}, {"[FEU]", false},
    {"[ELU]", false}, {"[EU]", false},
    // levels, legacy, information
    {"Np", true}, {"B", true}, {"B[SPL]", true}, {"B[V]", true}, {"B[mV]", true}, {"B[uV]", true},
    {"B[10.nV]", true}, {"B[W]", true}, {"B[kW]", true}, {"st", true}, {"Ao", false}, {"b", false},
    {"att", false}, {"mho", true}, {"[psi]", false}, {"circ", false}, {"sph", false}, {"[car_m]", false},
    {"[car_Au]", false}, {"[smoot]", false}, {"[m/s2/Hz^(1/2)]", false}, {"bit_s", false}, {"bit", true},
    {"By", true}, {"Bd", true},
};

constexpr std::size_t atom_count = std::size(atoms_unsorted);

const std::array<Atom, atom_count>& atoms() {
  static const auto sorted = [] {
    std::array<Atom, atom_count> a{};
    std::copy(std::begin(atoms_unsorted), std::end(atoms_unsorted), a.begin());
    std::sort(a.begin(), a.end(), [](const Atom& x, const Atom& y) { return x.code < y.code; });
    return a;
  }();
  return sorted;
}

const Atom* find_atom(std::string_view code) {
  const auto& a = atoms();
  auto it = std::lower_bound(a.begin(), a.end(), code, [](const Atom& x, std::string_view c) { return x.code < c; });
  return it != a.end() && it->code == code ? &*it : nullptr;
}

// SI and binary prefixes; two-letter ones first so "da" wins over "d".
constexpr std::string_view prefixes[] = {"da", "Ki", "Mi", "Gi", "Ti", "Y", "Z", "E", "P", "T", "G", "M",
                                         "k", "h", "d", "c", "m", "u", "n", "p", "f", "a", "z", "y"};

bool known_simple_unit(std::string_view symbol) {
  if (find_atom(symbol)) return true;
  for (std::string_view p : prefixes) {
    if (symbol.size() <= p.size() || !symbol.starts_with(p)) continue;
    const Atom* a = find_atom(symbol.substr(p.size()));
    if (a && a->metric) return true;
  }
  return false;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string quoted(std::string_view s) {
  constexpr std::size_t longest = 40;
  std::string out = "'";
  out += s.size() > longest ? std::string(s.substr(0, longest)) + "..." : std::string(s);
  return out + "'";
}

class Parser {
 public:
  explicit Parser(std::string_view text) : s_(text) {}

  std::optional<SyntaxProblem> run() {
    if (s_.empty()) return fail(0, "empty unit");
    if (s_[0] == '/') {  // "/min": a leading division
      ++pos_;
    }
    if (!term(0)) return problem_;
    if (pos_ != s_.size()) {
      if (s_[pos_] == ')') return fail(pos_, "unbalanced ')'");
      return fail(pos_, "unexpected " + quoted(s_.substr(pos_, 1)));
    }
    return std::nullopt;
  }

 private:
  static constexpr int max_depth = 16;

  bool fail_bool(std::size_t at, std::string what) {
    if (!problem_) problem_ = SyntaxProblem{at, std::move(what)};
    return false;
  }
  std::optional<SyntaxProblem> fail(std::size_t at, std::string what) {
    fail_bool(at, std::move(what));
    return problem_;
  }

  // term := component (('.' | '/') component)*
  bool term(int depth) {
    if (!component(depth)) return false;
    while (pos_ < s_.size() && (s_[pos_] == '.' || s_[pos_] == '/')) {
      ++pos_;
      if (!component(depth)) return false;
    }
    return true;
  }

  // component := '(' term ')' | annotation | factor | simple-unit exponent? annotation?
  bool component(int depth) {
    if (pos_ >= s_.size()) return fail_bool(pos_, "a unit is missing at the end");
    char c = s_[pos_];
    if (c == '(') {
      if (depth >= max_depth) return fail_bool(pos_, "parentheses nested too deeply");
      std::size_t open = pos_++;
      if (!term(depth + 1)) return false;
      if (pos_ >= s_.size() || s_[pos_] != ')') return fail_bool(open, "unbalanced '('");
      ++pos_;
      return pos_ >= s_.size() || s_[pos_] != '{' || annotation();  // "(...)" takes no annotation in UCUM,
    }                                                                    // but ucum-java accepts it
    if (c == '{') return annotation();
    if (c == '.' || c == '/') return fail_bool(pos_, "a unit is missing before " + quoted(s_.substr(pos_, 1)));
    if (c == ')') return fail_bool(pos_, "a unit is missing before ')'");
    std::size_t start = pos_;
    // A symbol runs to the next operator, parenthesis or annotation; [..] is taken whole.
    while (pos_ < s_.size()) {
      char d = s_[pos_];
      if (d == '.' || d == '/' || d == '(' || d == ')' || d == '{') break;
      if (d == '[') {
        std::size_t close = s_.find(']', pos_);
        if (close == std::string_view::npos) return fail_bool(pos_, "unbalanced '['");
        pos_ = close + 1;
        continue;
      }
      if (d == ']') return fail_bool(pos_, "unbalanced ']'");
      if (static_cast<unsigned char>(d) <= 32 || static_cast<unsigned char>(d) >= 127)
        return fail_bool(pos_, "UCUM units are printable ASCII without spaces");
      ++pos_;
    }
    std::string_view symbol = s_.substr(start, pos_ - start);
    if (std::all_of(symbol.begin(), symbol.end(), is_digit)) return true;  // a factor: "1", "24"
    // Exponent: trailing digits with an optional sign ("m2", "s-1", "10*-3").
    std::size_t cut = symbol.size();
    while (cut > 0 && is_digit(symbol[cut - 1])) --cut;
    if (cut < symbol.size() && cut > 0 && (symbol[cut - 1] == '+' || symbol[cut - 1] == '-')) --cut;
    std::string_view unit = symbol.substr(0, cut);
    if (unit.empty()) unit = symbol;
    if (!known_simple_unit(unit)) {
      // "10*" written with its exponent is the common case; otherwise try the whole symbol.
      if (unit == symbol || !known_simple_unit(symbol)) return fail_bool(start, "unknown unit " + quoted(unit));
    }
    if (pos_ < s_.size() && s_[pos_] == '{') return annotation();
    return true;
  }

  // annotation := '{' printable ASCII but braces '}'
  bool annotation() {
    std::size_t open = pos_++;
    while (pos_ < s_.size() && s_[pos_] != '}') {
      auto c = static_cast<unsigned char>(s_[pos_]);
      if (c == '{') return fail_bool(pos_, "'{' inside an annotation");
      if (c < 32 || c >= 127) return fail_bool(pos_, "an annotation holds printable ASCII only");
      ++pos_;
    }
    if (pos_ >= s_.size()) return fail_bool(open, "unbalanced '{'");
    ++pos_;
    return true;
  }

  std::string_view s_;
  std::size_t pos_ = 0;
  std::optional<SyntaxProblem> problem_;
};

}  // namespace

bool is_atom(std::string_view atom, bool* metric) {
  const Atom* a = find_atom(atom);
  if (a && metric) *metric = a->metric;
  return a != nullptr;
}

std::optional<SyntaxProblem> check_unit(std::string_view code) { return Parser(code).run(); }

}  // namespace tellonce::ucum
