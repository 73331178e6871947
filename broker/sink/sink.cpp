#include "broker/sink/sink.hpp"

#include "tellonce/json.hpp"
#include "tellonce/log.hpp"
#include "tellonce/message.hpp"
#include "tellonce/http_server.hpp"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
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
  bool fsync = false;         // --fsync: also fdatasync before answering
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
      else if (a == "--fsync") o.fsync = true;
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

// Records NDJSON lines before the sink answers, so a sink killed after its 201 still has the
// record. Without sync_each a line is appended with one write(2) on the handler's own thread
// (into the page cache: microseconds, and the kernel keeps it if the sink is killed); a hop to
// the writer thread and back would hold every answer for a scheduling round on a busy machine,
// which capped bench/load at (deliveries in flight / that delay). The writer thread then only
// fdatasyncs every 100 ms. With sync_each (--fsync) a handler hands its line to the writer thread
// and is resumed (on its own executor) once the line is written and fdatasync'ed, so it survives
// a power failure too; lines that arrive meanwhile go out together in the next write (group commit).
class Recorder {
 public:
  Recorder(const std::string& path, bool sync_each)
      : path_(path), sync_each_(sync_each),
        fd_(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) {
    if (fd_ < 0) throw std::runtime_error("cannot open " + path + " for appending: " + std::strerror(errno));
    writer_ = std::thread([this] { run(); });
  }
  ~Recorder() {
    {
      std::lock_guard lk(mu_);
      stopping_ = true;
    }
    wake_.notify_one();
    writer_.join();
    ::close(fd_);
  }

  // Completes with true once the line is on disk, false if it could not be written.
  asio::awaitable<bool> record(std::string line) {
    if (!sync_each_) {
      bool ok;
      {
        std::lock_guard lk(append_mu_);
        ok = write_all(line);
      }
      unsynced_.store(true, std::memory_order_relaxed);
      if (!ok) std::cerr << "demo-sink: cannot record to " << path_ << ": " << std::strerror(errno) << "\n";
      co_return ok;
    }
    auto initiate = [this, &line](auto handler) {
      auto waiter = std::make_unique<WaiterFor<decltype(handler)>>(std::move(handler));
      {
        std::lock_guard lk(mu_);
        pending_ += line;
        waiters_.push_back(std::move(waiter));
      }
      wake_.notify_one();
    };
    co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(bool)>(initiate, asio::use_awaitable);
  }

 private:
  struct Waiter {
    virtual ~Waiter() = default;
    virtual void done(bool ok) = 0;
  };
  template <class Handler>
  struct WaiterFor final : Waiter {
    explicit WaiterFor(Handler h) : handler(std::move(h)), guard(asio::get_associated_executor(handler)) {}
    void done(bool ok) override {
      auto resume = [h = std::move(handler), ok]() mutable { std::move(h)(ok); };
      asio::post(guard.get_executor(), std::move(resume));
      guard.reset();
    }
    Handler handler;
    asio::executor_work_guard<asio::associated_executor_t<Handler>> guard;
  };

  bool write_all(const std::string& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return !sync_each_ || ::fdatasync(fd_) == 0;
  }

  void run() {
    std::string batch;
    std::vector<std::unique_ptr<Waiter>> waiting;
    std::unique_lock lk(mu_);
    for (;;) {
      if (!wake_.wait_for(lk, std::chrono::milliseconds(100), [this] { return stopping_ || !pending_.empty(); })) {
        if (!sync_each_ && unsynced_.exchange(false, std::memory_order_relaxed)) {
          lk.unlock();
          ::fdatasync(fd_);
          lk.lock();
        }
        continue;
      }
      batch.swap(pending_);
      waiting.swap(waiters_);
      const bool last = stopping_;
      lk.unlock();
      if (!batch.empty()) {
        const bool ok = write_all(batch);
        if (!ok) std::cerr << "demo-sink: cannot record to " << path_ << ": " << std::strerror(errno) << "\n";
        for (auto& w : waiting) w->done(ok);
        batch.clear();
        waiting.clear();
      }
      lk.lock();
      if (last && pending_.empty()) return;
    }
  }

  std::string path_;
  bool sync_each_;
  std::atomic<bool> unsynced_{false};  // written since the last fdatasync (without sync_each)
  std::mutex append_mu_;               // one line's write at a time (without sync_each)
  int fd_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::string pending_;
  std::vector<std::unique_ptr<Waiter>> waiters_;
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
    // Recorded before answering: a sink killed after its 201 must still have the record.
    if (recorder && !co_await recorder->record(record_line(req, status, options.record_bodies)))
      co_return outcome_response(req, http::status::service_unavailable,
          {Issue{Severity::error, "transient", "demo sink could not record the request; send it again", "", ""}});
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
                 "[--record-ids-only] [--fsync] [--fail-status 503 --fail-first N] [--quiet]\n";
    return 2;
  }
  if (options->quiet) log::set_level(log::Level::warn);
  try {
    auto sink = std::make_shared<Sink>();
    sink->options = *options;
    if (!options->record_file.empty())
      sink->recorder = std::make_unique<Recorder>(options->record_file, options->fsync);

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
    sink->recorder.reset();  // anything still queued was never answered; it is written anyway
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "demo-sink: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace tellonce
