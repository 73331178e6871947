#include "broker/consent/consent.hpp"

#include "broker/validate/rules.hpp"
#include "tellonce/json.hpp"
#include "tellonce/log.hpp"
#include "tellonce/store.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace tellonce {

namespace {

constexpr std::string_view nhs_number_system = "https://fhir.nhs.uk/Id/nhs-number";

std::string_view text_at(const rapidjson::Value& v, std::string_view name) { return json_string(json_member(v, name)); }

template <class F>
void each_item(const rapidjson::Value* array, F f) {
  if (!array || !array->IsArray()) return;
  for (const auto& item : array->GetArray()) f(item);
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

int digits(std::string_view s, std::size_t at, std::size_t n) {
  if (at + n > s.size()) return -1;
  int v = 0;
  for (std::size_t i = at; i < at + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

// A FHIR date or dateTime as ms since the epoch (UTC). A date without a time is its first ms,
// or with `end_of_day` its last; a year or year-month likewise. 0 when unreadable.
std::int64_t fhir_time_ms(std::string_view s, bool end_of_day) {
  int year = digits(s, 0, 4);
  if (year < 0) return 0;
  int month = s.size() >= 7 ? digits(s, 5, 2) : (end_of_day ? 12 : 1);
  int day = s.size() >= 10 ? digits(s, 8, 2) : 1;
  if (month < 1 || month > 12 || day < 1 || day > 31) return 0;
  if (s.size() < 10 && end_of_day) {  // the end of a year or month: the first day after it, less 1 ms
    int next_year = month == 12 ? year + 1 : year, next_month = month == 12 ? 1 : month + 1;
    return days_from_civil(next_year, static_cast<unsigned>(next_month), 1) * 86'400'000 - 1;
  }
  std::int64_t ms = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) * 86'400'000;
  if (s.size() < 16 || s[10] != 'T') return end_of_day ? ms + 86'400'000 - 1 : ms;
  int hour = digits(s, 11, 2), minute = digits(s, 14, 2), second = s.size() >= 19 ? digits(s, 17, 2) : 0;
  if (hour < 0 || minute < 0 || second < 0) return 0;
  ms += (hour * 3600 + minute * 60 + second) * 1000LL;
  std::size_t zone = s.find_first_of("Z+-", 19);
  if (zone != std::string_view::npos && s[zone] != 'Z') {
    int zh = digits(s, zone + 1, 2), zm = digits(s, zone + 4, 2);
    if (zh >= 0 && zm >= 0) ms -= (s[zone] == '+' ? 1 : -1) * (zh * 60 + zm) * 60'000LL;
  }
  return ms;
}

// Purpose codes (README "Consent and data protection"). v3-ActReason: treatment, emergency
// treatment, care management, coverage and patient administration are direct care; research,
// public and population health, operations, quality, marketing, payment and records management
// are secondary use. consentcategorycodes / consentscope "research" are secondary use,
// consentscope "treatment" direct care. Anything else does not narrow the rule: the deny then
// applies to both purposes (withholding more, never less).
std::optional<RoutePurpose> purpose_of_code(std::string_view code) {
  static const std::unordered_set<std::string_view> direct = {"TREAT", "ETREAT", "CAREMGT", "POPHLTH_NO", "PATADMIN",
                                                             "COVERAGE", "treatment", "TREATDS"};
  static const std::unordered_set<std::string_view> secondary = {
      "HRESCH", "CLINTRCH", "BIORCH", "PUBHLTH", "POPHLTH", "HOPERAT", "HQUALIMP", "HMARKT", "HPAYMT", "HSYSADMIN",
      "METAMGT", "RECORDMGT", "HDIRECT", "HLEGAL", "research", "rsdid", "rsreid", "hipaa-research", "TRAIN"};
  if (direct.contains(code)) return RoutePurpose::direct_care;
  if (secondary.contains(code)) return RoutePurpose::secondary_use;
  return std::nullopt;
}

// Purposes named by codings (a Coding array, or CodeableConcepts' codings); `unknown` is set
// when a code maps to neither.
void add_purposes(const rapidjson::Value& coding, std::vector<RoutePurpose>& out, bool& unknown) {
  auto code = text_at(coding, "code");
  if (code.empty()) return;
  if (auto p = purpose_of_code(code)) {
    if (std::find(out.begin(), out.end(), *p) == out.end()) out.push_back(*p);
  } else {
    unknown = true;
  }
}

struct ConsentContext {
  std::string consent;
  std::vector<RoutePurpose> consent_purposes;  // from category and scope
  std::int64_t start_ms = 0, end_ms = 0;       // the top provision's period
  std::vector<DenyRule>* out;
};

void read_period(const rapidjson::Value* period, std::int64_t& start, std::int64_t& end) {
  if (!period || !period->IsObject()) return;
  if (auto s = text_at(*period, "start"); !s.empty()) start = fhir_time_ms(s, false);
  if (auto e = text_at(*period, "end"); !e.empty()) end = fhir_time_ms(e, true);
}

void read_provision(const rapidjson::Value& p, const std::string& where, const ConsentContext& ctx) {
  if (!p.IsObject()) return;
  if (text_at(p, "type") == "deny") {
    DenyRule rule;
    rule.consent = ctx.consent;
    rule.provision = where;
    rule.start_ms = ctx.start_ms;
    rule.end_ms = ctx.end_ms;
    read_period(json_member(p, "period"), rule.start_ms, rule.end_ms);
    bool unknown = false;
    each_item(json_member(p, "purpose"), [&](const rapidjson::Value& c) { add_purposes(c, rule.purposes, unknown); });
    if (rule.purposes.empty() && !unknown) rule.purposes = ctx.consent_purposes;
    if (unknown) rule.purposes.clear();  // an unmapped purpose: deny for every purpose
    each_item(json_member(p, "actor"), [&](const rapidjson::Value& actor) {
      const auto* ref = json_member(actor, "reference");
      if (!ref) return;
      if (const auto* id = json_member(*ref, "identifier"))
        if (auto v = text_at(*id, "value"); !v.empty()) rule.recipients.emplace_back(v);
      auto r = text_at(*ref, "reference");
      if (auto slash = r.rfind('/'); slash != std::string_view::npos && slash + 1 < r.size())
        rule.recipients.emplace_back(r.substr(slash + 1));
    });
    ctx.out->push_back(std::move(rule));
  }
  int i = 0;
  each_item(json_member(p, "provision"), [&](const rapidjson::Value& nested) {
    read_provision(nested, where + ".provision[" + std::to_string(i++) + "]", ctx);
  });
}

std::string read_file(const std::filesystem::path& path, bool& ok) {
  std::ifstream in(path, std::ios::binary);
  ok = static_cast<bool>(in);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

template <class F>
void each_line(std::string_view text, F f) {
  std::size_t line = 0;
  while (!text.empty()) {
    auto nl = text.find('\n');
    auto l = text.substr(0, nl);
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    f(++line, l);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

bool DenyRule::applies(RoutePurpose purpose, const Partner* recipient, std::int64_t at_ms) const {
  if (start_ms != 0 && at_ms < start_ms) return false;
  if (end_ms != 0 && at_ms > end_ms) return false;
  if (!purposes.empty() && std::find(purposes.begin(), purposes.end(), purpose) == purposes.end()) return false;
  if (recipients.empty()) return true;
  if (!recipient) return false;
  for (const auto& r : recipients)
    if (r == recipient->ods_code || r == recipient->id) return true;
  return false;
}

std::string DenyRule::describe() const {
  std::string out = consent + " " + provision + " deny";
  if (!purposes.empty()) {
    out += " purpose=";
    for (std::size_t i = 0; i < purposes.size(); ++i) out += (i ? "," : "") + std::string(to_string(purposes[i]));
  }
  if (!recipients.empty()) {
    out += " recipient=";
    for (std::size_t i = 0; i < recipients.size(); ++i) out += (i ? "," : "") + recipients[i];
  }
  return out;
}

std::optional<ConsentRules> read_consent(const rapidjson::Value& c, std::string* problem) {
  ConsentRules out;
  const auto* patient = json_member(c, "patient");
  if (patient) {
    if (const auto* id = json_member(*patient, "identifier"); id && text_at(*id, "system") == nhs_number_system)
      out.patient_key = text_at(*id, "value");
    if (out.patient_key.empty()) out.patient_key = text_at(*patient, "reference");
  }
  if (out.patient_key.empty()) {
    if (problem) *problem = "names no patient (patient.identifier with an NHS number, or patient.reference)";
    return std::nullopt;
  }
  if (text_at(c, "status") != "active") return out;  // draft, proposed, rejected, inactive: nothing denied
  ConsentContext ctx;
  auto id = text_at(c, "id");
  ctx.consent = id.empty() ? "Consent (no id)" : "Consent/" + std::string(id);
  each_item(json_member(c, "category"), [&](const rapidjson::Value& concept_) {
    each_item(json_member(concept_, "coding"), [&](const rapidjson::Value& coding) {
      // A general "patient consent" category says nothing about purpose.
      bool ignored = false;
      add_purposes(coding, ctx.consent_purposes, ignored);
    });
  });
  if (const auto* scope = json_member(c, "scope"))
    each_item(json_member(*scope, "coding"), [&](const rapidjson::Value& coding) {
      bool ignored = false;
      add_purposes(coding, ctx.consent_purposes, ignored);
    });
  ctx.out = &out.rules;
  if (const auto* provision = json_member(c, "provision")) {
    read_provision(*provision, "provision", ctx);
    // A nested deny inherits the top provision's period when it has none of its own.
    std::int64_t top_start = 0, top_end = 0;
    read_period(json_member(*provision, "period"), top_start, top_end);
    for (auto& r : out.rules) {
      if (r.start_ms == 0) r.start_ms = top_start;
      if (r.end_ms == 0) r.end_ms = top_end;
    }
  }
  return out;
}

OptOutList parse_opt_out(std::string_view text) {
  OptOutList out;
  each_line(text, [&out](std::size_t line, std::string_view l) {
    if (auto hash = l.find('#'); hash != std::string_view::npos) l = l.substr(0, hash);
    l = trim(l);
    if (l.empty()) return;
    std::string number;
    for (char ch : l)
      if (ch != ' ') number.push_back(ch);  // "943 476 5919" as printed on letters
    if (!nhs_number_valid(number)) {
      out.problems.push_back("line " + std::to_string(line) +
                             ": not an NHS number (10 digits with a valid check digit); line ignored");
      return;
    }
    out.nhs_numbers.insert(std::move(number));
  });
  return out;
}

ConsentFile parse_consents_ndjson(std::string_view text) {
  ConsentFile out;
  each_line(text, [&out](std::size_t line, std::string_view l) {
    l = trim(l);
    if (l.empty()) return;
    auto doc = parse_json(l);
    std::string at = "line " + std::to_string(line) + ": ";
    if (!doc) {
      out.problems.push_back(at + "not JSON");
      return;
    }
    if (text_at(*doc, "resourceType") != "Consent") {
      out.problems.push_back(at + "not a Consent resource");
      return;
    }
    std::string problem;
    auto rules = read_consent(*doc, &problem);
    if (!rules) out.problems.push_back(at + problem);
    else out.consents.push_back(std::move(*rules));
  });
  return out;
}

// ---- the gate ----

struct ConsentGate::Snapshot {
  std::shared_ptr<const std::unordered_set<std::string>> opt_out;
  // From the consents file and from accepted records: patient key -> rules.
  std::shared_ptr<const std::unordered_map<std::string, std::vector<DenyRule>>> from_file;
  // Learnt Consents by key (source partner + Consent id, or a fresh key when it has no id).
  std::shared_ptr<const std::map<std::string, ConsentRules>> learnt;
  std::shared_ptr<const std::unordered_map<std::string, std::vector<DenyRule>>> learnt_by_patient;
};

ConsentGate::ConsentGate(const Config& config) {
  for (const auto& r : config.routes) route_purposes_.emplace(r.id, r.purpose);
  for (const auto& p : config.partners) partners_.emplace(p.id, p);
  auto s = std::make_shared<Snapshot>();
  s->opt_out = std::make_shared<const std::unordered_set<std::string>>();
  s->from_file = std::make_shared<const std::unordered_map<std::string, std::vector<DenyRule>>>();
  s->learnt = std::make_shared<const std::map<std::string, ConsentRules>>();
  s->learnt_by_patient = std::make_shared<const std::unordered_map<std::string, std::vector<DenyRule>>>();
  snapshot_ = std::move(s);
}

std::shared_ptr<const ConsentGate::Snapshot> ConsentGate::snapshot() const {
  std::lock_guard lock(mutex_);
  return snapshot_;
}

void ConsentGate::withhold(std::string_view patient_key, std::vector<RouteMatch>& matches, std::int64_t now,
                           std::vector<Withholding>& withheld) const {
  if (patient_key.empty() || matches.empty()) return;
  auto s = snapshot();
  const std::string key(patient_key);
  const bool opted_out = s->opt_out->contains(key);
  const std::vector<DenyRule>* file_rules = nullptr;
  const std::vector<DenyRule>* learnt_rules = nullptr;
  if (auto it = s->from_file->find(key); it != s->from_file->end()) file_rules = &it->second;
  if (auto it = s->learnt_by_patient->find(key); it != s->learnt_by_patient->end()) learnt_rules = &it->second;
  if (!opted_out && !file_rules && !learnt_rules) return;  // the usual case: nothing to check

  // Per destination: every route reaching it, and whether each is denied (and by what).
  struct Verdict {
    bool any_allowed = false;
    Withholding first;
  };
  std::map<std::string, Verdict> verdicts;
  for (const auto& m : matches) {
    auto pit = route_purposes_.find(m.route_id);
    const RoutePurpose purpose = pit == route_purposes_.end() ? RoutePurpose::direct_care : pit->second;
    for (const auto& d : m.destinations) {
      auto& v = verdicts[d];
      if (v.any_allowed) continue;
      const Partner* recipient = nullptr;
      if (auto p = partners_.find(d); p != partners_.end()) recipient = &p->second;
      std::optional<Withholding> denied;
      const std::string why_route = " (purpose " + std::string(to_string(purpose)) + ", route " + m.route_id + ")";
      if (opted_out && purpose == RoutePurpose::secondary_use)
        denied = Withholding{d, "opt-out", "national data opt-out" + why_route};
      for (const auto* rules : {learnt_rules, file_rules}) {
        if (denied || !rules) continue;
        for (const auto& r : *rules)
          if (r.applies(purpose, recipient, now)) {
            denied = Withholding{d, "consent", r.describe() + why_route};
            break;
          }
      }
      if (!denied) v.any_allowed = true;
      else if (v.first.destination.empty()) v.first = std::move(*denied);
    }
  }
  for (auto& [d, v] : verdicts) {
    if (v.any_allowed) continue;
    for (auto& m : matches) std::erase(m.destinations, d);
    withheld.push_back(std::move(v.first));
  }
}

void ConsentGate::learn_one(ConsentRules rules, std::string key) {
  std::lock_guard lock(mutex_);
  auto learnt = std::make_shared<std::map<std::string, ConsentRules>>(*snapshot_->learnt);
  (*learnt)[key] = std::move(rules);
  auto by_patient = std::make_shared<std::unordered_map<std::string, std::vector<DenyRule>>>();
  for (const auto& [k, c] : *learnt)
    if (!c.rules.empty()) {
      auto& v = (*by_patient)[c.patient_key];
      v.insert(v.end(), c.rules.begin(), c.rules.end());
    }
  auto s = std::make_shared<Snapshot>(*snapshot_);
  s->learnt = std::move(learnt);
  s->learnt_by_patient = std::move(by_patient);
  snapshot_ = std::move(s);
}

std::size_t ConsentGate::learn(const rapidjson::Value& record, std::string_view source) {
  std::size_t n = 0;
  auto one = [&](const rapidjson::Value& resource) {
    if (text_at(resource, "resourceType") != "Consent") return;
    std::string problem;
    auto rules = read_consent(resource, &problem);
    if (!rules) {
      log::warn("consent", "a Consent from " + std::string(source) + " was not applied: it " + problem);
      return;
    }
    auto id = text_at(resource, "id");
    // Without an id a Consent cannot be replaced later; it is kept under a key of its own.
    static std::atomic<std::uint64_t> anonymous{0};
    std::string key = std::string(source) + "|" + (id.empty() ? "#" + std::to_string(++anonymous) : std::string(id));
    learn_one(std::move(*rules), std::move(key));
    ++n;
  };
  one(record);
  if (text_at(record, "resourceType") == "Bundle")
    each_item(json_member(record, "entry"), [&](const rapidjson::Value& e) {
      if (const auto* r = json_member(e, "resource")) one(*r);
    });
  return n;
}

void ConsentGate::set_opt_out(std::shared_ptr<const std::unordered_set<std::string>> numbers) {
  std::lock_guard lock(mutex_);
  auto s = std::make_shared<Snapshot>(*snapshot_);
  s->opt_out = std::move(numbers);
  snapshot_ = std::move(s);
}

void ConsentGate::set_file_consents(std::vector<ConsentRules> consents) {
  auto by_patient = std::make_shared<std::unordered_map<std::string, std::vector<DenyRule>>>();
  for (auto& c : consents)
    for (auto& r : c.rules) (*by_patient)[c.patient_key].push_back(std::move(r));
  std::lock_guard lock(mutex_);
  auto s = std::make_shared<Snapshot>(*snapshot_);
  s->from_file = std::move(by_patient);
  snapshot_ = std::move(s);
}

std::size_t ConsentGate::opt_out_size() const { return snapshot()->opt_out->size(); }
std::size_t ConsentGate::patients_with_rules() const {
  auto s = snapshot();
  return s->learnt_by_patient->size() + s->from_file->size();
}

namespace {

template <class T>
T run_once(asio::awaitable<T> work, const char* what) {
  asio::io_context once;
  std::optional<T> got;
  asio::co_spawn(once, std::move(work), [&got](std::exception_ptr e, T r) {
    if (!e) got = std::move(r);
  });
  once.run();
  if (!got) throw std::runtime_error(std::string("cannot rebuild the consent rules: ") + what + " did not answer");
  return std::move(*got);
}

}  // namespace

std::size_t ConsentGate::rebuild_from_store(Store& store) {
  // Ids newest first per type; learnt oldest first overall, so a later Consent replaces an earlier one.
  std::vector<MessageSummary> found;
  for (const char* type : {"Consent", "Bundle"}) {
    MessageQuery q;
    q.resource_type = type;
    q.limit = 1000;
    for (;;) {
      auto page = run_once(store.list(q), "the store's listing");
      if (!page) throw std::runtime_error("cannot rebuild the consent rules: " + page.error().summary());
      if (page->size() < static_cast<std::size_t>(q.limit)) q.cursor.clear();
      else q.cursor = page->back().cursor;  // before the rows are moved out below
      for (auto& m : *page) found.push_back(std::move(m));
      if (q.cursor.empty()) break;
    }
  }
  std::sort(found.begin(), found.end(), [](const MessageSummary& a, const MessageSummary& b) { return a.id < b.id; });
  std::size_t learnt = 0;
  for (const auto& m : found) {
    auto body = run_once(store.body(m.id), "the store's body read");
    if (!body) throw std::runtime_error("cannot rebuild the consent rules: " + body.error().summary());
    if (m.resource_type == "Bundle" && body->find("\"Consent\"") == std::string::npos) continue;
    auto doc = parse_json(*body);
    if (!doc) continue;
    learnt += learn(*doc, m.source);
  }
  return learnt;
}

// ---- the file watcher ----

ConsentFileWatcher::ConsentFileWatcher(ConsentGate& gate, ConsentSettings settings)
    : gate_(gate), settings_(std::move(settings)) {
  opt_out_.path = settings_.opt_out_file;
  consents_.path = settings_.consents_file;
  if (!opt_out_.path.empty()) load_if_changed(opt_out_, true, true);
  if (!consents_.path.empty()) load_if_changed(consents_, false, true);
}

ConsentFileWatcher::~ConsentFileWatcher() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ConsentFileWatcher::start() {
  if (opt_out_.path.empty() && consents_.path.empty()) return;
  thread_ = std::thread([this] { run(); });
}

bool ConsentFileWatcher::load_if_changed(Watched& w, bool opt_out, bool at_start) {
  const char* what = opt_out ? "opt-out file" : "consents file";
  std::error_code ec;
  auto mtime = std::filesystem::last_write_time(w.path, ec);
  auto size = ec ? 0 : std::filesystem::file_size(w.path, ec);
  if (ec) {
    if (at_start) throw std::runtime_error(std::string("cannot read the ") + what + " " + w.path.string() + ": " + ec.message());
    if (w.seen) log::warn("consent", std::string(what) + " " + w.path.string() + " cannot be read (" + ec.message() + "); the last one loaded stays in force");
    w.seen = false;
    return false;
  }
  if (w.seen && mtime == w.mtime && size == w.size) return false;
  bool ok = false;
  std::string text = read_file(w.path, ok);
  if (!ok) {
    if (at_start) throw std::runtime_error(std::string("cannot read the ") + what + " " + w.path.string());
    return false;
  }
  w.mtime = mtime;
  w.size = size;
  w.seen = true;
  std::vector<std::string> problems;
  std::size_t count = 0;
  if (opt_out) {
    auto list = parse_opt_out(text);
    problems = std::move(list.problems);
    count = list.nhs_numbers.size();
    gate_.set_opt_out(std::make_shared<const std::unordered_set<std::string>>(std::move(list.nhs_numbers)));
  } else {
    auto file = parse_consents_ndjson(text);
    problems = std::move(file.problems);
    count = file.consents.size();
    gate_.set_file_consents(std::move(file.consents));
  }
  for (const auto& p : problems) log::warn("consent", std::string(what) + " " + w.path.string() + " " + p);
  log::info("consent", std::string(what) + " " + w.path.string() + " loaded: " + std::to_string(count) +
                           (opt_out ? " NHS numbers" : " Consents") +
                           (problems.empty() ? "" : ", " + std::to_string(problems.size()) + " bad line(s) ignored"));
  loads_.fetch_add(1);
  return true;
}

void ConsentFileWatcher::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, settings_.poll_every, [this] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    try {
      if (!opt_out_.path.empty()) load_if_changed(opt_out_, true, false);
      if (!consents_.path.empty()) load_if_changed(consents_, false, false);
    } catch (const std::exception& e) {
      log::error("consent", std::string("reloading consent files failed: ") + e.what());
    }
    lock.lock();
  }
}

}  // namespace tellonce
