// Load generator for the broker: keep-alive HTTP/1.1 connections, each sending one record at a
// time (closed loop), a configurable mix of realistic 1-5 KB UK Core records and message Bundles,
// drawn from a pool of 512 pre-built records per kind (message ids patched per send).
// Prints accepted records/s and accept latency percentiles; with --sent FILE it writes
// "message-id send-ms" lines so run.sh can compute end-to-end delivery latency from the sinks;
// with --acked FILE it writes the id of every record answered 202 (accepted and stored: the
// broker's promise), one a line, for the crash-durability run to check against the partner.
// A connection whose broker goes away (killed) ends; the run ends when every connection has.
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  std::string host = "127.0.0.1";
  std::string port = "8080";
  int connections = 32;
  double seconds = 10;
  std::uint64_t records = 0;  // stop after sending this many in all (0: no limit, only --seconds)
  std::string partner = "rtx";
  std::string mix = "patient:3,observation:4,encounter:2,message:1";
  std::vector<std::string> gps = {"A81001"};
  std::string sent_file;
  std::string acked_file;
  int threads = 1;
};

std::string nhs_number(std::uint64_t n) {
  for (;; ++n) {
    std::string d = std::to_string(400000000 + n % 599999999).substr(0, 9);
    int sum = 0;
    for (int i = 0; i < 9; ++i) sum += (d[i] - '0') * (10 - i);
    int check = 11 - sum % 11;
    if (check == 11) check = 0;
    if (check != 10) return d + std::to_string(check);
  }
}

std::string padding_note(std::mt19937_64& rng) {
  // Free-text narrative makes records 1-5 KB, as real clinical records are.
  static const char* words[] = {"patient", "reports", "improved", "sleep", "and", "appetite", "since", "last",
                                "review", "discussed", "support", "options", "with", "family", "carer", "agreed",
                                "plan", "follow-up", "in", "two", "weeks"};
  std::size_t n = 100 + rng() % 600;
  std::string s;
  for (std::size_t i = 0; i < n; ++i) {
    if (i) s += ' ';
    s += words[rng() % std::size(words)];
  }
  return s;
}

std::string patient(const std::string& nhs, const std::string& gp, std::mt19937_64& rng) {
  return R"({"resourceType":"Patient","meta":{"profile":["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]},
"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">)" + padding_note(rng) + R"(</div>"},
"identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" + nhs + R"("}],
"name":[{"use":"official","family":"Example","given":["Sam","Alex"],"prefix":["Mx"]}],
"telecom":[{"system":"phone","value":"01632 960587","use":"home"},{"system":"email","value":"sam@example.org"}],
"gender":"unknown","birthDate":"1975-06-21",
"address":[{"use":"home","line":["1 Example Road"],"city":"Leeds","postalCode":"LS1 4AP","country":"GB"}],
"generalPractitioner":[{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":")" + gp + R"("}}]})";
}

std::string observation(const std::string& nhs, std::mt19937_64& rng) {
  return R"({"resourceType":"Observation","status":"final",
"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
"code":{"coding":[{"system":"http://snomed.info/sct","code":"364075005","display":"Heart rate"}]},
"subject":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" + nhs + R"("}},
"effectiveDateTime":"2026-11-20T09:30:00+00:00",
"note":[{"text":")" + padding_note(rng) + R"("}],
"valueQuantity":{"value":)" + std::to_string(50 + rng() % 60) + R"(,"unit":"beats/minute","system":"http://unitsofmeasure.org","code":"/min"}})";
}

std::string encounter(const std::string& nhs, std::mt19937_64& rng) {
  return R"({"resourceType":"Encounter","status":"finished",
"class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"IMP","display":"inpatient encounter"},
"type":[{"coding":[{"system":"http://snomed.info/sct","code":"183452005","display":"Emergency hospital admission"}]}],
"subject":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":")" + nhs + R"("}},
"period":{"start":"2026-11-18T10:00:00Z","end":"2026-11-20T16:30:00Z"},
"serviceProvider":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"RTX"}},
"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">)" + padding_note(rng) + R"(</div>"}})";
}

// Message Bundles must carry a fresh Bundle.id and MessageHeader.id on every send (the broker
// treats a repeat as a duplicate), so the pool keeps them as fixed-width slots patched per send.
constexpr std::string_view id_slot = "@@@@@@@@@@@@";  // 12 hex digits

std::string message(const std::string& nhs, const std::string& gp, std::mt19937_64& rng) {
  char prefix[16];
  std::snprintf(prefix, sizeof prefix, "%08llx", static_cast<unsigned long long>(rng() & 0xffffffff));
  std::string mh = std::string(prefix) + "-0000-4000-8000-" + std::string(id_slot);
  return R"({"resourceType":"Bundle","id":"b)" + std::string(id_slot) + R"(","type":"message","timestamp":"2026-11-20T09:30:00Z",
"entry":[{"fullUrl":"urn:uuid:)" + mh + R"(","resource":{"resourceType":"MessageHeader","id":")" + mh + R"(",
"eventCoding":{"system":"https://fhir.nhs.uk/CodeSystem/message-events-bars","code":"servicerequest-request"},
"source":{"endpoint":"https://trust.example.nhs.uk/fhir"},"focus":[{"reference":"urn:uuid:11111111-0000-4000-8000-000000000002"}]}},
{"fullUrl":"urn:uuid:11111111-0000-4000-8000-000000000002","resource":{"resourceType":"ServiceRequest","status":"active","intent":"order",
"code":{"coding":[{"system":"http://snomed.info/sct","code":"183452005","display":"Emergency hospital admission"}]},
"subject":{"reference":"urn:uuid:11111111-0000-4000-8000-000000000003"}}},
{"fullUrl":"urn:uuid:11111111-0000-4000-8000-000000000003","resource":)" + patient(nhs, gp, rng) + R"(}]})";
}

// Records are built before the clock starts: generating 1-5 KB of text per request would
// spend the loadgen's share of the two cores on string building instead of load.
// Each is kept as the whole HTTP request, header and body, so a send is one write of
// ready bytes (as wrk and h2load do); only message ids are patched in.
struct PooledRecord {
  std::string wire;
  std::size_t body_bytes = 0;
  std::vector<std::size_t> id_slots;  // offsets in wire where a per-send id goes (message Bundles only)
};

std::string request_bytes(const std::string& target, const std::string& body, const std::string& host,
                          const std::string& partner) {
  return "POST " + target + " HTTP/1.1\r\nHost: " + host +
         "\r\nContent-Type: application/fhir+json\r\nX-Tellonce-Partner: " + partner +
         "\r\nConnection: keep-alive\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

std::vector<PooledRecord> build_pool(const std::string& kind, const std::vector<std::string>& gps,
                                     std::size_t size, std::uint64_t seed, const std::string& host,
                                     const std::string& partner) {
  std::mt19937_64 rng(seed);
  std::vector<PooledRecord> pool;
  for (std::size_t i = 0; i < size; ++i) {
    // ~4000 patients, so records about one patient interleave and per-patient order is exercised.
    std::string nhs = nhs_number(rng() % 4000);
    const std::string& gp = gps[rng() % gps.size()];
    std::string target, body;
    if (kind == "patient") { target = "/fhir/Patient"; body = patient(nhs, gp, rng); }
    else if (kind == "observation") { target = "/fhir/Observation"; body = observation(nhs, rng); }
    else if (kind == "encounter") { target = "/fhir/Encounter"; body = encounter(nhs, rng); }
    else { target = "/fhir/$process-message"; body = message(nhs, gp, rng); }
    PooledRecord r;
    r.body_bytes = body.size();
    r.wire = request_bytes(target, body, host, partner);
    for (auto at = r.wire.find(id_slot); at != std::string::npos; at = r.wire.find(id_slot, at + id_slot.size()))
      r.id_slots.push_back(at);
    pool.push_back(std::move(r));
  }
  return pool;
}

struct Kind {
  std::string name;
  int weight;
  std::vector<PooledRecord> pool;
};

struct Stats {
  std::mutex mu;
  std::vector<double> latencies_ms;
  std::uint64_t ok = 0, rejected = 0, errors = 0, bytes = 0;
  std::vector<std::pair<std::string, std::int64_t>> sent;  // message id, wall ms
  std::vector<std::string> acked;                         // ids answered 202
};

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

asio::awaitable<void> connection(Options& opt, std::vector<Kind>& kinds, int index, Clock::time_point end,
                                 Stats& stats, std::atomic<std::uint64_t>& counter) {
  auto ex = co_await asio::this_coro::executor;
  tcp::resolver resolver(ex);
  auto endpoints = co_await resolver.async_resolve(opt.host, opt.port, asio::use_awaitable);
  tcp::socket stream(ex);
  co_await asio::async_connect(stream, endpoints, asio::use_awaitable);
  stream.set_option(tcp::no_delay(true));
  std::string patched;
  std::mt19937_64 rng(index * 7919 + 17);
  int total_weight = 0;
  for (auto& k : kinds) total_weight += k.weight;
  beast::flat_buffer buffer;
  std::vector<double> local;
  std::vector<std::pair<std::string, std::int64_t>> sent;
  std::vector<std::string> acked;
  std::uint64_t ok = 0, rejected = 0, errors = 0, bytes = 0;
  while (Clock::now() < end) {
    std::uint64_t n = counter.fetch_add(1);
    if (opt.records != 0 && n >= opt.records) break;
    int pick = static_cast<int>(rng() % total_weight);
    const Kind* kind = &kinds.front();
    for (auto& k : kinds) {
      if (pick < k.weight) { kind = &k; break; }
      pick -= k.weight;
    }
    const PooledRecord& record = kind->pool[rng() % kind->pool.size()];
    const std::string* wire = &record.wire;
    if (!record.id_slots.empty()) {
      char id[16];
      std::snprintf(id, sizeof id, "%012llx", static_cast<unsigned long long>(n));
      patched = record.wire;
      for (auto at : record.id_slots) patched.replace(at, id_slot.size(), id);
      wire = &patched;
    }
    bytes += record.body_bytes;
    auto t0 = Clock::now();
    auto send_ms = wall_ms();
    auto [ec1, w] = co_await asio::async_write(stream, asio::buffer(*wire), asio::as_tuple(asio::use_awaitable));
    http::response<http::string_body> res;
    auto [ec2, r] = co_await http::async_read(stream, buffer, res, asio::as_tuple(asio::use_awaitable));
    if (ec1 || ec2) {
      ++errors;
      break;
    }
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (res.result_int() == 202 || res.result_int() == 200) {
      ++ok;
      local.push_back(ms);
      if (!opt.sent_file.empty()) sent.emplace_back(std::string(res["X-Tellonce-Message-Id"]), send_ms);
      if (!opt.acked_file.empty() && res.result_int() == 202) acked.emplace_back(res["X-Tellonce-Message-Id"]);
    } else {
      ++rejected;
      if (rejected <= 3) std::cerr << "rejected " << res.result_int() << ": " << res.body().substr(0, 400) << "\n";
    }
  }
  std::lock_guard lk(stats.mu);
  stats.latencies_ms.insert(stats.latencies_ms.end(), local.begin(), local.end());
  stats.sent.insert(stats.sent.end(), sent.begin(), sent.end());
  stats.acked.insert(stats.acked.end(), acked.begin(), acked.end());
  stats.ok += ok;
  stats.rejected += rejected;
  stats.errors += errors;
  stats.bytes += bytes;
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::size_t i = static_cast<std::size_t>(p * (v.size() - 1));
  std::nth_element(v.begin(), v.begin() + i, v.end());
  return v[i];
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--host") opt.host = next();
    else if (a == "--port") opt.port = next();
    else if (a == "--connections") opt.connections = std::stoi(next());
    else if (a == "--seconds") opt.seconds = std::stod(next());
    else if (a == "--records") opt.records = std::stoull(next());
    else if (a == "--partner") opt.partner = next();
    else if (a == "--mix") opt.mix = next();
    else if (a == "--sent") opt.sent_file = next();
    else if (a == "--acked") opt.acked_file = next();
    else if (a == "--threads") opt.threads = std::stoi(next());
    else if (a == "--gps") {
      opt.gps.clear();
      std::string s = next();
      for (std::size_t p = 0; p != std::string::npos;) {
        auto q = s.find(',', p);
        opt.gps.push_back(s.substr(p, q == std::string::npos ? q : q - p));
        p = q == std::string::npos ? q : q + 1;
      }
    } else {
      std::cerr << "usage: loadgen [--host H] [--port P] [--connections N] [--seconds S] [--records N] [--mix kind:w,...]\n"
                   "               [--gps ODS,ODS] [--partner ID] [--sent FILE] [--acked FILE] [--threads N]\n"
                   "kinds: patient observation encounter message\n";
      return 2;
    }
  }
  std::vector<Kind> kinds;
  for (std::size_t p = 0; p != std::string::npos;) {
    auto q = opt.mix.find(',', p);
    std::string part = opt.mix.substr(p, q == std::string::npos ? q : q - p);
    auto colon = part.find(':');
    std::string name = part.substr(0, colon);
    if (name != "patient" && name != "observation" && name != "encounter" && name != "message") {
      std::cerr << "unknown record kind '" << name << "' in --mix\n";
      return 2;
    }
    kinds.push_back({name, colon == std::string::npos ? 1 : std::stoi(part.substr(colon + 1)),
                     build_pool(name, opt.gps, 512, 17 + kinds.size(), opt.host, opt.partner)});
    p = q == std::string::npos ? q : q + 1;
  }

  asio::io_context io;
  Stats stats;
  std::atomic<std::uint64_t> counter{0};
  auto start = Clock::now();
  auto end = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opt.seconds));
  for (int i = 0; i < opt.connections; ++i) {
    asio::co_spawn(io, connection(opt, kinds, i, end, stats, counter), [](std::exception_ptr e) {
      if (e) {
        try { std::rethrow_exception(e); } catch (const std::exception& ex) { std::cerr << "connection: " << ex.what() << "\n"; }
      }
    });
  }
  std::vector<std::thread> pool;
  for (int i = 1; i < opt.threads; ++i) pool.emplace_back([&] { io.run(); });
  io.run();
  for (auto& t : pool) t.join();
  double secs = std::chrono::duration<double>(Clock::now() - start).count();

  if (!opt.sent_file.empty()) {
    std::ofstream out(opt.sent_file);
    for (auto& [id, ms] : stats.sent) out << id << ' ' << ms << '\n';
  }
  if (!opt.acked_file.empty()) {
    std::ofstream out(opt.acked_file);
    for (auto& id : stats.acked) out << id << '\n';
  }
  auto p50 = percentile(stats.latencies_ms, 0.50);
  auto p99 = percentile(stats.latencies_ms, 0.99);
  std::printf("{\"accepted\":%llu,\"rejected\":%llu,\"errors\":%llu,\"seconds\":%.3f,\"accepted_per_s\":%.1f,"
              "\"mb_per_s\":%.2f,\"accept_p50_ms\":%.3f,\"accept_p99_ms\":%.3f,\"connections\":%d}\n",
              static_cast<unsigned long long>(stats.ok), static_cast<unsigned long long>(stats.rejected),
              static_cast<unsigned long long>(stats.errors), secs, stats.ok / secs, stats.bytes / secs / 1e6, p50,
              p99, opt.connections);
  return stats.errors > 0 && stats.ok == 0 ? 1 : 0;
}
