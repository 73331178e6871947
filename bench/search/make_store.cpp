// Builds a big, realistic message store for bench/search/run.py: N messages (default 1,000,000)
// committed through the real SQLite store engine (Store::commit and Store::record_attempt, in
// large concurrent batches), so the schema and every index are the engine's own.
//
// usage: make_store PATH [COUNT]   (PATH must not exist yet; prints progress and a summary)
//
// The mix (deterministic: a fixed seed): five ordinary sources on three channels and one rare
// source (0.05 %), eight resource types, FHIR message events and HL7 v2 events, six
// destinations (one to three per message), received times one after another over 30 days
// ending now, about 200,000 distinct synthetic NHS numbers (valid mod-11 check digits; 10 % of
// records name a patient by reference instead). States: mostly delivered (5 % after a retry),
// 1 % unroutable, 1 % pending (a retry due), some held in the mailbox (4 % of its records), 1.5 % dead after
// retries, plus a dead-letter burst: every record to lab-ice for two hours on day 12.
// Every destination is left paused (see main). Bench data only: no real patient appears here.
#include "../../engines/sqlite_store/sqlite_store.hpp"

#include "tellonce/message.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace tellonce;

namespace {

constexpr std::int64_t day_ms = 24ll * 3600 * 1000;

struct Source {
  const char* id;
  const char* channel;
  int weight;  // per 10,000
};
// rare-vcse is the selective source: 5 records in 10,000.
const Source sources[] = {{"rtx", "http", 3800}, {"rgt", "http", 2400}, {"gp-a81001", "http", 1500},
                          {"pas-mllp", "mllp", 1595}, {"lab-csv", "files", 700}, {"rare-vcse", "http", 5}};

const char* const fhir_types[] = {"Bundle", "Patient", "Observation", "Encounter", "ServiceRequest",
                                  "DiagnosticReport", "Appointment", "Immunization"};
const char* const fhir_events[] = {"https://fhir.nhs.uk/CodeSystem/message-events-bars|servicerequest-request",
                                   "https://fhir.nhs.uk/CodeSystem/message-events-bars|booking-request",
                                   "https://fhir.nhs.uk/CodeSystem/message-events|transfer-of-care",
                                   "https://fhir.nhs.uk/CodeSystem/message-events|discharge-summary"};
const char* const v2_events[] = {"ADT^A01", "ADT^A03", "ADT^A08", "ADT^A04", "ORU^R01"};
const char* const destinations[] = {"gp-a81001", "ehr-main", "lab-ice", "spine-pds", "audit-archive", "mailbox-vcse"};

// A 10-digit number whose last digit is the NHS mod-11 check digit of the first nine.
std::string nhs_number(std::mt19937_64& rng) {
  for (;;) {
    char d[11];
    std::uniform_int_distribution<int> digit(0, 9);
    int sum = 0;
    d[0] = static_cast<char>('4' + digit(rng) % 6);  // 4..9: not a test range, not 0-leading
    for (int i = 1; i < 9; ++i) d[i] = static_cast<char>('0' + digit(rng));
    for (int i = 0; i < 9; ++i) sum += (d[i] - '0') * (10 - i);
    int check = 11 - sum % 11;
    if (check == 11) check = 0;
    if (check == 10) continue;
    d[9] = static_cast<char>('0' + check);
    d[10] = 0;
    return d;
  }
}

struct Planned {
  NewMessage msg;
  enum class Fate { delivered, retried, pending, held, dead } fate = Fate::delivered;
  bool burst = false;  // dead because lab-ice was down: only its delivery died
};

struct Generator {
  std::mt19937_64 rng{20261130};
  std::vector<std::string> patients;
  std::int64_t start_ms = 0;
  std::int64_t step_ms = 0;
  std::int64_t burst_from = 0, burst_to = 0;

  Generator(std::size_t count, std::int64_t now_ms) {
    patients.reserve(200000);
    for (int i = 0; i < 200000; ++i) patients.push_back(nhs_number(rng));
    start_ms = now_ms - 30 * day_ms;
    step_ms = std::max<std::int64_t>(1, 30 * day_ms / static_cast<std::int64_t>(count));
    burst_from = start_ms + 12 * day_ms + 9 * 3600 * 1000;
    burst_to = burst_from + 2 * 3600 * 1000;
  }

  int pick(int n) { return static_cast<int>(std::uniform_int_distribution<int>(0, n - 1)(rng)); }

  Planned next(std::size_t i) {
    Planned p;
    auto& m = p.msg;
    m.id = new_message_id();
    int w = pick(10000);
    const Source* src = &sources[0];
    for (const auto& s : sources) {
      if (w < s.weight) { src = &s; break; }
      w -= s.weight;
    }
    m.source = src->id;
    m.channel = src->channel;
    m.idempotency_key = "bench-" + std::to_string(i);
    const bool v2 = std::string_view(m.channel) == "mllp";
    if (v2) {
      m.resource_type = "Bundle";
      m.event = v2_events[pick(5)];
      m.original_content_type = "x-application/hl7-v2+er7";
    } else {
      m.resource_type = fhir_types[pick(8)];
      if (m.resource_type == "Bundle") m.event = fhir_events[pick(4)];
    }
    const bool by_reference = pick(10) == 0;
    m.patient_key = by_reference ? "Patient/" + std::to_string(pick(1000000)) : patients[pick(200000)];
    m.content_type = "application/fhir+json";
    char hash[65];
    std::snprintf(hash, sizeof hash, "%064zx", i * 2654435761u);
    m.content_hash = hash;
    m.received_at_ms = start_ms + static_cast<std::int64_t>(i) * step_ms + pick(static_cast<int>(step_ms));
    m.body = R"({"resourceType":")" + m.resource_type + R"(","id":"bench-)" + std::to_string(i) +
             R"(","subject":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" + m.patient_key +
             R"("}},"meta":{"source":")" + m.source + R"("},"text":{"status":"generated","div":"<div>bench record</div>"}})";
    if (v2) m.original_bytes = "MSH|^~\\&|PAS|RTX|TELLONCE|X|20261130||" + m.event + "|" + std::to_string(i) + "|P|2.4\r";

    const int r = pick(1000);
    if (r < 10) return p;  // unroutable: no route, no destination
    const int fan = 1 + (pick(10) < 3) + (pick(10) < 1);
    int first = pick(5);
    if (m.source == "rare-vcse") first = 5;  // the VCSE's records go to its mailbox
    for (int k = 0; k < fan; ++k) {
      std::string d = destinations[(first + k) % 6];
      m.destinations.push_back(d);
      m.route_ids.push_back("to-" + d);
    }
    const bool in_burst = m.received_at_ms >= burst_from && m.received_at_ms < burst_to;
    bool to_lab = false, to_mailbox = false;
    for (const auto& d : m.destinations) {
      to_lab = to_lab || d == "lab-ice";
      to_mailbox = to_mailbox || d == "mailbox-vcse";
    }
    if (in_burst && to_lab) {
      p.fate = Planned::Fate::dead;
      p.burst = true;
    }
    else if (r < 20) p.fate = Planned::Fate::pending;
    else if (r < 60 && to_mailbox) p.fate = Planned::Fate::held;
    else if (r < 40) p.fate = Planned::Fate::dead;
    else if (r < 90) p.fate = Planned::Fate::retried;
    return p;
  }
};

std::atomic<std::size_t> next_index{0};
std::atomic<std::size_t> done{0}, failures{0};
std::atomic<bool> finished{false};

asio::awaitable<void> worker(Store& store, Generator& gen, std::size_t count) {
  for (;;) {
    const std::size_t i = next_index.fetch_add(1);
    if (i >= count) co_return;
    auto planned = gen.next(i);  // one thread runs every worker: the generator needs no lock
    const auto received = planned.msg.received_at_ms;
    auto committed = co_await store.commit(std::move(planned.msg));
    if (!committed) {
      failures.fetch_add(1);
      continue;
    }
    int job_index = 0;
    for (const auto& job : committed->jobs) {
      DeliveryAttempt a;
      a.delivery_id = job.delivery_id;
      a.message_id = job.message_id;
      a.destination = job.destination;
      a.at_ms = received + 400;
      // Only one delivery of a stuck record is stuck (the burst's lab-ice one, the held one in the
      // mailbox, else the first); the others went through.
      auto fate = planned.fate;
      const bool stuck = planned.burst                         ? job.destination == "lab-ice"
                         : fate == Planned::Fate::held ? job.destination == "mailbox-vcse"
                                                       : job_index == 0;
      ++job_index;
      if (!stuck) fate = Planned::Fate::delivered;
      int attempts = fate == Planned::Fate::retried ? 2 : fate == Planned::Fate::dead ? 4 : 1;
      for (int n = 1; n <= attempts; ++n) {
        a.attempt = n;
        a.at_ms += 30000 * (n - 1);
        a.outcome = DeliveryOutcome::ok;
        a.partner_code = "HTTP 200";
        a.detail.clear();
        a.dead = false;
        a.next_attempt_ms = 0;
        const bool last = n == attempts;
        if (fate == Planned::Fate::held) {
          a.outcome = DeliveryOutcome::held;
          a.partner_code = "mailbox";
        } else if (fate == Planned::Fate::pending || !last || fate == Planned::Fate::dead) {
          a.outcome = fate == Planned::Fate::dead && last ? DeliveryOutcome::permanent : DeliveryOutcome::retryable;
          a.partner_code = "HTTP 503";
          a.detail = "Service Unavailable";
          a.dead = fate == Planned::Fate::dead && last;
          a.next_attempt_ms = a.dead ? 0 : a.at_ms + 30000;
        }
        auto recorded = co_await store.record_attempt(a);
        if (!recorded) failures.fetch_add(1);
      }
    }
    done.fetch_add(1);
  }
}

asio::awaitable<void> pause_all(Store& store) {
  for (const char* d : destinations)
    if (!co_await store.set_paused(d, true, "bench/search make_store")) failures.fetch_add(1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: make_store PATH [COUNT]\n");
    return 2;
  }
  const std::filesystem::path path = argv[1];
  const std::size_t count = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1000000;
  if (std::filesystem::exists(path)) {
    std::fprintf(stderr, "%s exists: remove it first (this tool only builds new stores)\n", path.c_str());
    return 2;
  }
  try {
    SqliteStoreSettings settings;
    settings.path = path;
    settings.max_batch = 4096;
    settings.synchronous_full = false;  // a bench rig: survives a crash of the process, not power loss
    settings.integrity_check = SqliteStoreSettings::IntegrityCheck::off;
    auto store = make_sqlite_store(settings);
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
    Generator gen(count, now);
    asio::io_context io;
    const auto started = std::chrono::steady_clock::now();
    constexpr int concurrent = 2048;
    for (int k = 0; k < concurrent; ++k)
      asio::co_spawn(io, worker(*store, gen, count), [](std::exception_ptr e) {
        if (e) std::fprintf(stderr, "worker failed\n");
      });
    std::thread progress([&] {
      for (int tick = 1; !finished.load(); ++tick) {
        std::this_thread::sleep_for(std::chrono::seconds(1));
        if (tick % 10 != 0) continue;
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        std::printf("%zu messages in %.0f s (%.0f/s)\n", done.load(), s, done.load() / s);
        std::fflush(stdout);
      }
    });
    io.run();
    // Every destination paused: a broker serving this store for the benchmark then holds the
    // pending deliveries instead of sending them, so the store does not change while measured.
    io.restart();
    asio::co_spawn(io, pause_all(*store), [](std::exception_ptr e) {
      if (e) std::fprintf(stderr, "pausing failed\n");
    });
    io.run();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    store->close();
    finished.store(true);
    progress.join();
    std::printf("built %s: %zu messages in %.0f s, %zu failures\n", path.c_str(), done.load(), seconds,
                failures.load());
    return failures.load() == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_store: %s\n", e.what());
    return 1;
  }
}
