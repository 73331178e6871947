// MLLP load generator for bench/mllp/run.py (not a test). N connections, each in a closed loop:
// send one ADT^A01 (unique MSH-10 and hospital number), wait for its ACK, send the next. Prints
// one JSON line: ACKs by code, messages/s acknowledged AA, ACK latency p50/p99.
//
// usage: mllp_loadgen --port P [--connections 8] [--seconds 10]
// One thread: the generator shares the machine with the broker and should cost little.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

struct Totals {
  std::uint64_t aa = 0, ae = 0, ar = 0, other = 0, failed_connections = 0;
  std::vector<double> latencies_ms;
};

std::string adt(int conn, std::uint64_t seq) {
  std::string id = "L" + std::to_string(conn) + "N" + std::to_string(seq);
  return "\x0bMSH|^~\\&|PAS|RTX|TELLONCE|BROKER|20261130120000||ADT^A01^ADT_A01|" + id +
         "|P|2.4\rEVN|A01|20261130120000\rPID|1||9449306753^^^NHS^NH~" + id +
         "^^^RTX^MR||SMITH^JOHN^^^MR||19800101|1|||1 HIGH STREET^^LEEDS^^LS1 1AA^GBR^H\r"
         "PD1|||DENSHAM SURGERY^^A81001\rPV1|1|I|RTX^WARD1^BED1||||C1234567^DARWIN^SAMUEL^^^DR|||300|||||||||V" +
         id + "^^^RTX^VN\r\x1c\r";
}

asio::awaitable<void> client(int conn, unsigned short port, Clock::time_point until, Totals& totals) {
  auto ex = co_await asio::this_coro::executor;
  tcp::socket socket(ex);
  auto [cec] = co_await socket.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port),
                                             asio::as_tuple(asio::use_awaitable));
  if (cec) {
    ++totals.failed_connections;
    co_return;
  }
  socket.set_option(tcp::no_delay(true));
  std::string in;
  for (std::uint64_t seq = 0; Clock::now() < until; ++seq) {
    auto message = adt(conn, seq);
    auto start = Clock::now();
    auto [wec, wn] = co_await asio::async_write(socket, asio::buffer(message), asio::as_tuple(asio::use_awaitable));
    if (wec) break;
    auto [rec, rn] = co_await asio::async_read_until(socket, asio::dynamic_buffer(in), std::string("\x1c\r"),
                                                     asio::as_tuple(asio::use_awaitable));
    if (rec) break;
    totals.latencies_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    std::string_view ack(in.data(), rn);
    auto msa = ack.find("MSA|");
    auto code = msa == std::string_view::npos ? std::string_view() : ack.substr(msa + 4, 2);
    if (code == "AA" || code == "CA") ++totals.aa;
    else if (code == "AE") ++totals.ae;
    else if (code == "AR") ++totals.ar;
    else ++totals.other;
    in.erase(0, rn);
  }
}

double pct(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

}  // namespace

int main(int argc, char** argv) {
  unsigned short port = 0;
  int connections = 8;
  double seconds = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--port")) port = static_cast<unsigned short>(std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--connections")) connections = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--seconds")) seconds = std::atof(argv[i + 1]);
  }
  if (!port) {
    std::cerr << "usage: mllp_loadgen --port P [--connections 8] [--seconds 10]\n";
    return 2;
  }
  asio::io_context io;
  Totals totals;
  auto t0 = Clock::now();
  auto until = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  for (int c = 0; c < connections; ++c)
    asio::co_spawn(io, client(c, port, until, totals), [](std::exception_ptr e) {
      if (e) std::cerr << "mllp_loadgen: a connection ended by an exception\n";
    });
  io.run();
  double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("{\"aa\":%llu,\"ae\":%llu,\"ar\":%llu,\"other\":%llu,\"failed_connections\":%llu,"
              "\"aa_per_s\":%.1f,\"ack_p50_ms\":%.3f,\"ack_p99_ms\":%.3f}\n",
              static_cast<unsigned long long>(totals.aa), static_cast<unsigned long long>(totals.ae),
              static_cast<unsigned long long>(totals.ar), static_cast<unsigned long long>(totals.other),
              static_cast<unsigned long long>(totals.failed_connections), static_cast<double>(totals.aa) / elapsed,
              pct(totals.latencies_ms, 0.5), pct(totals.latencies_ms, 0.99));
  return 0;
}
