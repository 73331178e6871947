#include "sink/sink.hpp"

#include "core/json.hpp"
#include "core/log.hpp"
#include "core/message.hpp"
#include "http/server.hpp"

#include <boost/asio/signal_set.hpp>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace tellonce {
namespace {

struct SinkOptions {
  std::string listen = "127.0.0.1:9101";
  std::string record_file;
  int fail_status = 503;
  long fail_first = 0;
  bool quiet = false;
  bool record_bodies = true;  // --record-ids-only: benchmarks need ids and times, not megabytes of bodies
};

std::optional<SinkOptions> parse_options(int argc, char** argv) {
  SinkOptions o;
  int i = 0;
  if (i < argc && std::string_view(argv[i]) == "demo-sink") ++i;
  for (; i < argc; ++i) {
    std::string_view a = argv[i];
    bool has_value = i + 1 < argc;
    try {
      if (a == "--listen" && has_value) o.listen = argv[++i];
      else if (a == "--record" && has_value) o.record_file = argv[++i];
      else if (a == "--fail-status" && has_value) o.fail_status = std::stoi(argv[++i]);
      else if (a == "--fail-first" && has_value) o.fail_first = std::stol(argv[++i]);
      else if (a == "--quiet") o.quiet = true;
      else if (a == "--record-ids-only") o.record_bodies = false;
      else {
        std::cerr << "demo-sink: unknown or incomplete option '" << a << "'\n";
        return std::nullopt;
      }
    } catch (const std::exception&) {
      std::cerr << "demo-sink: " << a << " needs a number\n";
      return std::nullopt;
    }
  }
  if (o.fail_status < 100 || o.fail_status > 599) {
    std::cerr << "demo-sink: --fail-status must be an HTTP status (100-599)\n";
    return std::nullopt;
  }
  return o;
}

// NDJSON lines collect in memory and a writer thread appends them every 100 ms, so request
// handlers never wait on the disk.
class Recorder {
 public:
  explicit Recorder(const std::string& path) : file_(std::fopen(path.c_str(), "a")) {
    if (!file_) throw std::runtime_error("cannot open " + path + " for appending");
    writer_ = std::thread([this] { run(); });
  }
  ~Recorder() {
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
    }
    wake_.notify_one();
    writer_.join();
    std::fclose(file_);
  }
  void append(std::string line) {
    std::lock_guard lk(mu_);
    pending_ += line;
  }

 private:
  void run() {
    std::string batch;
    std::unique_lock lk(mu_);
    for (;;) {
      wake_.wait_for(lk, std::chrono::milliseconds(100), [this] { return stopping_; });
      batch.swap(pending_);
      bool last = stopping_;
      lk.unlock();
      if (!batch.empty()) {
        std::fwrite(batch.data(), 1, batch.size(), file_);
        std::fflush(file_);
        batch.clear();
      }
      if (last) return;
      lk.lock();
    }
  }

  std::FILE* file_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::string pending_;
  bool stopping_ = false;
  std::thread writer_;
};

bool is_json(std::string_view body) {
  rapidjson::Reader reader;
  rapidjson::BaseReaderHandler<> ignore;
  rapidjson::MemoryStream in(body.data(), body.size());
  return !body.empty() && !reader.Parse<rapidjson::kParseValidateEncodingFlag>(in, ignore).IsError();
}

struct Sink {
  SinkOptions options;
  std::unique_ptr<Recorder> recorder;
  std::atomic<long> received{0};
  std::atomic<long> failed{0};

  asio::awaitable<HttpResponse> receive(HttpRequest& req) {
    if (req.method() != http::verb::post) {
      auto res = outcome_response(req, http::status::method_not_allowed,
          {Issue{Severity::error, "not-supported", "the demo sink takes POST", "", ""}});
      res.set(http::field::allow, "POST");
      co_return res;
    }
    long n = ++received;
    bool fail = n <= options.fail_first;
    int status = fail ? options.fail_status : 201;
    if (fail) ++failed;
    if (recorder) recorder->append(record_line(req, status, options.record_bodies));
    if (fail) {
      co_return outcome_response(req, static_cast<http::status>(status),
          {Issue{Severity::error, "transient", "demo sink told to fail the first " +
                                                  std::to_string(options.fail_first) + " requests", "", ""}});
    }
    // The same few bytes every time: built once (a benchmark's sink should cost little).
    static const std::string received_body = operation_outcome_json(
        {Issue{Severity::information, "informational", "received by demo sink", "", ""}});
    co_return json_response(req, http::status::created, received_body, "application/fhir+json");
  }

  asio::awaitable<HttpResponse> stats(HttpRequest& req) {
    co_return json_response(req, http::status::ok, R"({"received":)" + std::to_string(received.load()) +
                                                       R"(,"failed":)" + std::to_string(failed.load()) + "}");
  }

  static std::string record_line(const HttpRequest& req, int status, bool with_body) {
    std::string line;
    line.reserve(req.body().size() + 200);
    line += R"({"at":)";
    line += std::to_string(now_ms());
    line += R"(,"path":)";
    append_json_string(line, req.target());
    line += R"(,"status":)";
    line += std::to_string(status);
    line += R"(,"messageId":)";
    append_json_string(line, req["X-Tellonce-Message-Id"]);
    auto request_id = req["X-Request-Id"];
    if (request_id.empty()) request_id = req["Idempotency-Key"];
    line += R"(,"requestId":)";
    append_json_string(line, request_id);
    line += R"(,"bytes":)";
    line += std::to_string(req.body().size());
    if (!with_body) {
      line += "}\n";
      return line;
    }
    line += R"(,"body":)";
    // Embedded as JSON so the file reads as records; anything else is kept as a string.
    if (is_json(req.body())) {
      for (char c : req.body())
        if (c != '\n' && c != '\r') line.push_back(c);
    } else {
      append_json_string(line, req.body());
    }
    line += "}\n";
    return line;
  }
};

}  // namespace

int run_sink_command(int argc, char** argv) {
  auto options = parse_options(argc, argv);
  if (!options) {
    std::cerr << "usage: tellonce demo-sink --listen HOST:PORT [--record FILE] "
                 "[--record-ids-only] [--fail-status 503 --fail-first N] [--quiet]\n";
    return 2;
  }
  if (options->quiet) log::set_level(log::Level::warn);
  try {
    auto sink = std::make_shared<Sink>();
    sink->options = *options;
    if (!options->record_file.empty()) sink->recorder = std::make_unique<Recorder>(options->record_file);

    asio::io_context io;
    HttpServer server(io, options->listen, HttpLimits{});
    server.mount("/_stats", [sink](HttpRequest& req) { return sink->stats(req); });
    server.mount("/", [sink](HttpRequest& req) { return sink->receive(req); });
    server.start();

    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      server.stop();
      io.stop();
    });

    auto host = options->listen.substr(0, options->listen.rfind(':'));
    std::cout << "demo-sink listening on " << host << ":" << server.port() << std::endl;

    unsigned threads = std::max(1u, std::min(2u, std::thread::hardware_concurrency()));
    std::vector<std::thread> extra;
    for (unsigned i = 1; i < threads; ++i) extra.emplace_back([&io] { io.run(); });
    io.run();
    for (auto& t : extra) t.join();
    if (!options->quiet)
      std::cerr << "demo-sink: received " << sink->received << ", failed " << sink->failed << "\n";
    sink->recorder.reset();  // writes what is left
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "demo-sink: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace tellonce
