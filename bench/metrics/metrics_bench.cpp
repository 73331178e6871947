// The metrics' cost per record on the hot path: what the pipeline and the dispatcher call for
// one accepted and delivered record (received, accepted, one delivery attempt), on 1 and on 2
// threads at once (the same label sets: the contended case). Prints ns per record.
//   build/bench/metrics/metrics_bench [records per thread]
#include "broker/metrics/broker_metrics.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

using namespace tellonce;

namespace {

double ns_per_record(BrokerMetrics& m, int threads, long records) {
  const std::string channel = "fhir-http", partner = "rtx", destination = "gp-a";
  const char* types[] = {"Patient", "Observation", "Encounter"};
  const auto received_at = now_ms();
  auto work = [&] {
    for (long i = 0; i < records; ++i) {
      m.received(channel, partner);
      m.accepted(channel, partner, types[i % 3], false, 0.004);
      m.attempt(destination, DeliveryOutcome::ok, false, received_at);
    }
  };
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  const auto elapsed = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
  return elapsed / static_cast<double>(records);  // wall time per record on each thread
}

}  // namespace

int main(int argc, char** argv) {
  const long records = argc > 1 ? std::atol(argv[1]) : 2'000'000;
  BrokerMetrics m("bench", {"gp-a"});
  ns_per_record(m, 1, 10'000);  // warm the per-thread tables
  for (int threads : {1, 2}) {
    double best = 1e18;
    for (int run = 0; run < 5; ++run) best = std::min(best, ns_per_record(m, threads, records));
    std::printf("threads=%d: %.0f ns per record per thread (best of 5, %ld records each)\n", threads, best, records);
  }
  return 0;
}
