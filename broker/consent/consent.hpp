// Consent at routing time: which of a record's destinations the patient's wishes withhold.
//
// Rules come from three places, kept apart in one immutable snapshot that is swapped whole:
// - the national data opt-out list (`consent.opt_out_file`: NHS numbers, one a line, `#`
//   comments): the patient gets no secondary-use deliveries; direct care is unaffected;
// - FHIR Consent resources from `consent.consents_file` (NDJSON), replaced whole on each reload;
// - Consent resources the broker accepted (a Consent, or Consents inside a Bundle), learnt after
//   their commit. A later Consent with the same id (same source partner) replaces the earlier
//   one's rules, so a Consent sent again as inactive lifts them. At start-up they are rebuilt
//   from the store (rebuild_from_store), so they survive a restart with the records themselves.
// A Consent counts when its status is active and it has a provision of type deny (the top one or
// a nested one), for a patient named by NHS number (patient.identifier) or by reference. A deny
// provision may be narrowed by purpose (provision.purpose, Consent.category, Consent.scope:
// mapping in purposes_of below and in README "Consent and data protection"), by recipient
// (provision.actor[].reference: an identifier value or an Organization/<id> reference, matched
// to a partner's ODS code or id) and by period (provision.period, else Consent.provision.period).
// A destination reached by several routes is withheld only when every route's purpose is denied.
//
// Threading: every method may be called from any thread at once. withhold() (the hot path)
// takes a snapshot pointer under a mutex held for a copy of a shared_ptr; writers build a new
// snapshot and swap it. File loading happens on the watcher's own thread, never on the I/O
// threads. Errors: bad lines and unusable Consents are reported as text that never quotes an NHS
// number or any value of the record.
#pragma once

#include "broker/config/config.hpp"
#include "tellonce/router.hpp"

#include <rapidjson/document.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace tellonce {

class Store;

// One deny provision of an active Consent, as routing applies it.
struct DenyRule {
  std::string consent;                     // "Consent/<id>" (or "Consent (no id)"), for the trail
  std::string provision;                   // "provision" or "provision.provision[1]"
  std::vector<RoutePurpose> purposes;      // empty: every purpose
  std::vector<std::string> recipients;     // ODS codes or partner ids; empty: every recipient
  std::int64_t start_ms = 0, end_ms = 0;   // 0: open at that end
  bool applies(RoutePurpose purpose, const Partner* recipient, std::int64_t at_ms) const;
  std::string describe() const;            // for the trail: no patient data
};

// The deny rules of one Consent resource, keyed by its patient.
struct ConsentRules {
  std::string patient_key;                 // NHS number, else the patient reference as written
  std::vector<DenyRule> rules;             // empty: the Consent denies nothing (inactive, permit...)
};

// Reads a Consent resource. nullopt (with `problem` set) when it names no patient.
std::optional<ConsentRules> read_consent(const rapidjson::Value& consent, std::string* problem = nullptr);

// The opt-out file's content: valid NHS numbers, and one problem per bad line ("line 7: ...").
struct OptOutList {
  std::unordered_set<std::string> nhs_numbers;
  std::vector<std::string> problems;
};
OptOutList parse_opt_out(std::string_view text);

// Consents NDJSON (consents_file): one Consent a line; problems by line.
struct ConsentFile {
  std::vector<ConsentRules> consents;
  std::vector<std::string> problems;
};
ConsentFile parse_consents_ndjson(std::string_view text);

// A delivery consent withheld, for the trail and the metric.
struct Withholding {
  std::string destination;
  std::string reason;   // metric label: "opt-out" or "consent"
  std::string rule;     // the trail's words: which rule, purpose and route
};

class ConsentGate {
 public:
  explicit ConsentGate(const Config& config);  // route purposes and partners copied

  // Removes from `matches` every destination consent withholds for this patient now; each one
  // removed is appended to `withheld`. A record without a patient key is never withheld.
  void withhold(std::string_view patient_key, std::vector<RouteMatch>& matches, std::int64_t now_ms,
                std::vector<Withholding>& withheld) const;

  // The Consents in an accepted record (a Consent or a Bundle's entries); `source` is the
  // partner that sent it (a Consent id is that partner's). Returns how many were read.
  std::size_t learn(const rapidjson::Value& record, std::string_view source);
  void set_opt_out(std::shared_ptr<const std::unordered_set<std::string>> numbers);
  void set_file_consents(std::vector<ConsentRules> consents);

  // Start-up, before listeners open: learns every stored Consent, oldest first (records of type
  // Consent, and Bundles whose body mentions Consent). Blocking; runs its own io_context.
  // Returns the number of Consent resources learnt; throws std::runtime_error when the store
  // cannot be read.
  std::size_t rebuild_from_store(Store& store);

  std::size_t opt_out_size() const;
  std::size_t patients_with_rules() const;

 private:
  struct Snapshot;
  std::shared_ptr<const Snapshot> snapshot() const;
  void learn_one(ConsentRules rules, std::string key);

  std::map<std::string, RoutePurpose, std::less<>> route_purposes_;
  std::map<std::string, Partner, std::less<>> partners_;
  mutable std::mutex mutex_;                    // guards snapshot_ (and serialises writers)
  std::shared_ptr<const Snapshot> snapshot_;
};

// Polls the opt-out and consents files (mtime and size) on its own thread and loads a changed
// one into the gate; the first load happens in the constructor (throws std::runtime_error when
// a configured file cannot be read then). A file that becomes unreadable keeps the last list.
class ConsentFileWatcher {
 public:
  ConsentFileWatcher(ConsentGate& gate, ConsentSettings settings);
  ~ConsentFileWatcher();  // stops and joins the thread
  ConsentFileWatcher(const ConsentFileWatcher&) = delete;
  ConsentFileWatcher& operator=(const ConsentFileWatcher&) = delete;
  void start();
  std::uint64_t loads() const { return loads_.load(); }  // successful loads so far

 private:
  struct Watched {
    std::filesystem::path path;
    std::filesystem::file_time_type mtime{};
    std::uintmax_t size = 0;
    bool seen = false;
  };
  bool load_if_changed(Watched& w, bool opt_out, bool at_start);
  void run();

  ConsentGate& gate_;
  ConsentSettings settings_;
  Watched opt_out_, consents_;
  std::atomic<std::uint64_t> loads_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tellonce
