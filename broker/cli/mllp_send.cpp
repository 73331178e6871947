// tellonce mllp-send: the MLLP test client integration engineers reach for. Frames and sends
// each message, waits for the ACK that answers it (MSA-2 = its MSH-10), prints it, and exits 1
// when any message was not answered AA/CA (AE, AR, no ACK in time, or only ACKs for other
// control ids), 2 on a usage error or an unreadable file.
#include "broker/cli/commands.hpp"

#include "adapters/mllp_outbound/mllp_client.hpp"
#include "adapters/mllp_outbound/mllp_outbound.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <charconv>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

namespace tellonce {
namespace {

constexpr const char* kUsage =
    "usage: tellonce mllp-send --to HOST:PORT [--timeout 10s] FILE...|-\n"
    "  Sends each HL7 v2 message (a file may hold several, each starting with MSH; LF and CRLF\n"
    "  are sent as CR) over MLLP, waits for its ACK and prints it. Exit 0 when every message was\n"
    "  answered AA (or CA), 1 otherwise (AE, AR, no ACK within the timeout), 2 on usage errors.\n";

struct Input {
  std::string name;    // file name and message number, for the report
  std::string er7;     // segments ended by CR
};

// "10s", "500ms", "2m" or a number of seconds; 0 when unreadable.
std::chrono::milliseconds parse_timeout(std::string_view text) {
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  long long n = 0;
  if (digits == 0 || std::from_chars(text.data(), text.data() + digits, n).ec != std::errc()) return {};
  auto unit = text.substr(digits);
  if (unit.empty() || unit == "s") return std::chrono::seconds(n);
  if (unit == "ms") return std::chrono::milliseconds(n);
  if (unit == "m") return std::chrono::minutes(n);
  return {};
}

// Splits a file into messages: every segment starting with MSH begins a new one.
std::vector<Input> split_messages(const std::string& name, std::string text) {
  std::string normalised;
  normalised.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') continue;
    normalised += text[i] == '\n' ? '\r' : text[i];
  }
  if (normalised.starts_with("\xEF\xBB\xBF")) normalised.erase(0, 3);
  std::vector<Input> out;
  std::size_t pos = 0;
  while (pos < normalised.size()) {
    auto end = normalised.find('\r', pos);
    if (end == std::string::npos) end = normalised.size();
    std::string_view segment(normalised.data() + pos, end - pos);
    bool blank = segment.find_first_not_of(" \t") == std::string_view::npos;
    if (!blank) {
      // Anything before the first MSH becomes a "message" of its own, reported as not sent.
      if (out.empty() || segment.starts_with("MSH"))
        out.push_back(Input{name + " [" + std::to_string(out.size() + 1) + "]", ""});
      out.back().er7 += segment;
      out.back().er7 += '\r';
    }
    pos = end + 1;
  }
  return out;
}

std::string printable(std::string_view er7) {
  std::string s(er7);
  for (auto& c : s)
    if (c == '\r') c = '\n';
  if (!s.empty() && s.back() != '\n') s += '\n';
  return s;
}

asio::awaitable<int> send_all(MllpConnection& connection, std::vector<Input> inputs, std::chrono::milliseconds timeout) {
  int failures = 0;
  for (auto& input : inputs) {
    std::string control_id;
    auto readdressed = readdress_original(input.er7, "", "", control_id);
    if (!readdressed) {
      std::cout << input.name << ": not sent: it does not start with an MSH segment\n";
      ++failures;
      continue;
    }
    auto result = co_await connection.exchange(std::move(*readdressed), control_id);
    std::cout << input.name << " MSH-10 '" << control_id << "': ";
    if (!result.ok()) {
      std::cout << (result.status == MllpExchange::Status::timed_out
                        ? "no ACK within " + std::to_string(timeout.count()) + " ms"
                        : result.detail);
      if (result.discarded) std::cout << " (" << result.discarded << " frame(s) with another MSA-2 or unreadable discarded)";
      std::cout << "\n";
      ++failures;
      continue;
    }
    auto code = hl7v2::to_string(result.ack.code);
    std::cout << code << "\n" << printable(result.ack_er7);  // MSA-3 and ERR-8 are in it
    if (code != "AA" && code != "CA") ++failures;
  }
  co_return failures;
}

}  // namespace

int run_mllp_send_command(int argc, char** argv) {
  std::string to;
  std::chrono::milliseconds timeout{10000};
  std::vector<std::string> files;
  for (int i = 0; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--to" && i + 1 < argc) {
      to = argv[++i];
    } else if (arg == "--timeout" && i + 1 < argc) {
      timeout = parse_timeout(argv[++i]);
      if (timeout.count() <= 0) {
        std::cerr << "tellonce mllp-send: --timeout must be like 10s, 500ms or 2m\n";
        return 2;
      }
    } else if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      return 0;
    } else if (arg.starts_with("--")) {
      std::cerr << "tellonce mllp-send: unknown option " << arg << "\n" << kUsage;
      return 2;
    } else {
      files.emplace_back(arg);
    }
  }
  MllpClientOptions options;
  if (to.empty() || files.empty() || !split_host_port(to, options.host, options.port)) {
    std::cerr << kUsage;
    return 2;
  }
  options.connect_timeout = timeout;
  options.ack_timeout = timeout;

  std::vector<Input> inputs;
  for (const auto& file : files) {
    std::string text;
    if (file == "-") {
      text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    } else {
      std::ifstream in(file, std::ios::binary);
      if (!in) {
        std::cerr << "tellonce mllp-send: cannot read " << file << "\n";
        return 2;
      }
      std::ostringstream buf;
      buf << in.rdbuf();
      text = buf.str();
    }
    auto messages = split_messages(file == "-" ? "stdin" : file, std::move(text));
    if (messages.empty()) {
      std::cerr << "tellonce mllp-send: no message in " << file << "\n";
      return 2;
    }
    for (auto& m : messages) inputs.push_back(std::move(m));
  }

  asio::io_context io;
  MllpConnection connection(io.get_executor(), options);
  int failures = -1;
  std::exception_ptr error;
  asio::co_spawn(io, send_all(connection, std::move(inputs), timeout), [&](std::exception_ptr e, int n) {
    error = e;
    failures = n;
    connection.close();
  });
  io.run();
  if (error) std::rethrow_exception(error);
  return failures == 0 ? 0 : 1;
}

}  // namespace tellonce
