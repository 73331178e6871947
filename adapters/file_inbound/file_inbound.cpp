#include "file_inbound.hpp"

#include "tellonce/json.hpp"
#include "tellonce/log.hpp"
#include "tellonce/pipeline.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <sstream>

namespace tellonce {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view kComponent = "file-in";

bool ends_with_ci(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && csv::same_column(s.substr(s.size() - suffix.size()), suffix);
}

void log_exception(const std::string& what, std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log::error(kComponent, what + " ended by an exception: " + ex.what());
  } catch (...) {
    log::error(kComponent, what + " ended by an unknown exception");
  }
}

// Written whole under a temporary name and renamed, so a partner never reads half a report.
bool write_whole(const fs::path& path, const std::string& text) {
  auto temp = path.parent_path() / ("." + path.filename().string() + ".tmp");
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) return false;
  }
  std::error_code ec;
  fs::rename(temp, path, ec);
  return !ec;
}

}  // namespace
namespace {

// What the polling coroutine, the worker thread and the adapter share.
struct Core {
  Core(const FileInboundSettings& s, InboundContext& ctx)
      : settings(s), pipeline(ctx.pipeline), channel(ctx.channel_id), strand(asio::make_strand(ctx.executor)),
        timer(strand) {}

  FileInboundSettings settings;
  Pipeline& pipeline;
  std::string channel;
  asio::strand<asio::any_io_executor> strand;
  asio::steady_timer timer;  // on the strand
  std::atomic<bool> stopping{false};
  std::atomic<std::uint64_t> files{0}, accepted{0}, refused{0};
  asio::thread_pool* worker = nullptr;  // the adapter's; outlives every call made while it runs
  // Worker thread only: what each inbox file looked like at the last poll.
  std::map<std::string, std::pair<std::uintmax_t, fs::file_time_type>> last_seen;

  // Runs f on the worker thread; resumes the caller on its own executor.
  template <class F>
  asio::awaitable<std::invoke_result_t<F>> on_worker(F f) {
    using R = std::invoke_result_t<F>;
    auto initiation = [pool = worker](auto handler, F fn) {
      auto guard = asio::make_work_guard(asio::get_associated_executor(handler));
      asio::post(*pool, [handler = std::move(handler), guard = std::move(guard), fn = std::move(fn)]() mutable {
        R result = fn();
        auto ex = guard.get_executor();
        asio::post(ex, [handler = std::move(handler), result = std::move(result)]() mutable {
          std::move(handler)(std::move(result));
        });
        guard.reset();
      });
    };
    auto op = asio::async_initiate<const asio::use_awaitable_t<>, void(R)>(initiation, asio::use_awaitable, std::move(f));
    co_return co_await std::move(op);
  }

  // Worker thread: the files that have stayed the same since the last poll, oldest name first.
  std::vector<std::string> scan() {
    std::vector<std::string> ready;
    std::map<std::string, std::pair<std::uintmax_t, fs::file_time_type>> now;
    std::error_code ec;
    for (fs::directory_iterator it(settings.inbox, ec), end; !ec && it != end; it.increment(ec)) {
      std::string name = it->path().filename().string();
      if (name.starts_with(".") || ends_with_ci(name, ".tmp") || ends_with_ci(name, ".part")) continue;
      std::error_code e2;
      if (!it->is_regular_file(e2)) continue;
      auto size = it->file_size(e2);
      auto mtime = it->last_write_time(e2);
      if (e2) continue;
      now[name] = {size, mtime};
      auto was = last_seen.find(name);
      if (was != last_seen.end() && was->second == now[name]) ready.push_back(name);
    }
    if (ec) log::warn(kComponent, channel + ": cannot list " + settings.inbox.string() + ": " + ec.message());
    last_seen = std::move(now);
    return ready;
  }

  // Worker thread: the file's records, or its rejection.
  PreparedFile prepare(const std::string& name) {
    auto path = settings.inbox / name;
    std::error_code ec;
    auto size = fs::file_size(path, ec);
    if (ec) {
      PreparedFile gone;
      gone.report.file = name;
      gone.report.format = "gone";
      return gone;
    }
    if (size > settings.max_file_bytes) {
      PreparedFile big;
      big.report.file = name;
      big.report.rejected = true;
      big.report.problems.push_back({0, "", "the file is larger than this channel takes (" +
                                                std::to_string(settings.max_file_bytes / (1024 * 1024)) +
                                                " MB): split it into smaller files"});
      return big;
    }
    std::ifstream in(path, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    return prepare_file(settings, name, bytes.str());
  }

  // Worker thread: reports, then the move (so a crash in between only repeats the reports).
  bool finish(FileReport report) {
    tidy(report);
    const auto& name = report.file;
    fs::path to_dir = settings.inbox / (report.rejected ? "rejected" : "archive");
    fs::path report_dir = report.rejected ? to_dir : settings.inbox / "reports";
    std::error_code ec;
    fs::create_directories(to_dir, ec);
    fs::create_directories(report_dir, ec);
    bool ok = write_whole(report_dir / (name + ".report.csv"), report_csv(report)) &&
              write_whole(report_dir / (name + ".report.json"), report_json(report));
    fs::path target = to_dir / name;
    if (fs::exists(target, ec)) target = to_dir / (name + "." + report.sha256.substr(0, 12));
    fs::rename(settings.inbox / name, target, ec);
    if (ec) {
      log::error(kComponent, channel + ": cannot move " + name + " to " + to_dir.string() + ": " + ec.message());
      return false;
    }
    last_seen.erase(name);
    return ok;
  }
};

// One coroutine per channel: poll, then each ready file in turn, its records one at a time.
asio::awaitable<void> poll_loop(std::shared_ptr<Core> core) {
  while (!core->stopping) {
    auto scan = [c = core.get()] { return c->scan(); };
    auto ready = co_await core->on_worker(std::move(scan));
    for (const auto& name : ready) {
      if (core->stopping) break;
      auto read = [c = core.get(), name] { return c->prepare(name); };
      PreparedFile file = co_await core->on_worker(std::move(read));
      if (file.report.format == "gone") continue;
      bool complete = !file.report.rejected;
      if (complete) {
        for (auto& rec : file.records) {
          if (core->stopping) {
            complete = false;
            break;
          }
          InboundRecord r;
          r.source = core->settings.partner;
          r.channel = core->channel;
          r.content_type = "application/fhir+json";
          r.body = rec.body;
          if (file.report.format == "csv") {
            r.original_content_type = "text/csv";
            r.original_bytes = rec.original_bytes;
          }
          r.idempotency_key = rec.idempotency_key;
          auto accepted = co_await core->pipeline.accept(std::move(r));
          if (accepted) {
            if (accepted->duplicate) ++file.report.duplicates;
            else ++file.report.accepted;
            ++core->accepted;
            continue;
          }
          if (accepted.error().is_retryable()) {
            log::warn(kComponent, core->channel + ": " + name + " row " + std::to_string(rec.row) +
                                      " not stored now (" + accepted.error().summary() +
                                      "); the file stays in the inbox and is taken again");
            complete = false;
            break;
          }
          ++core->refused;
          add_refusal(file.report, rec, accepted.error().issues);
        }
        if (!complete) break;  // taken again at a later poll: stored rows come back as duplicates
      }
      auto done = [c = core.get(), report = file.report] { return c->finish(report); };
      bool written = co_await core->on_worker(std::move(done));
      ++core->files;
      const auto& rep = file.report;
      // The pairs before the file's name: a partner names its files.
      const std::string outcome = rep.rejected ? "rejected" : "processed";
      log::info(kComponent, "file " + outcome + " channel=" + core->channel + " partner=" + core->settings.partner +
                                " event=file." + outcome + ": " + name + ": " + std::to_string(rep.rows) + " rows, " +
                                std::to_string(rep.accepted) + " stored, " + std::to_string(rep.duplicates) +
                                " already stored, " + std::to_string(rep.bad_rows()) + " bad" +
                                (written ? "" : " (a report could not be written)"));
    }
    if (core->stopping) break;
    core->timer.expires_after(core->settings.poll_interval);
    co_await core->timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

class FileInbound final : public InboundAdapter {
 public:
  FileInbound(const FileInboundSettings& settings, InboundContext& ctx)
      : core_(std::make_shared<Core>(settings, ctx)) {
    core_->worker = &worker_;
    if (ctx.partners.by_id(settings.partner).empty())
      throw std::runtime_error("file inbound '" + ctx.channel_id + "': partner '" + settings.partner + "' is not known");
  }

  ~FileInbound() override {
    stop();
    worker_.join();
  }

  void start() override {
    std::error_code ec;
    if (core_->settings.create_inbox) fs::create_directories(core_->settings.inbox, ec);
    if (!fs::is_directory(core_->settings.inbox, ec))
      throw std::runtime_error("file inbound '" + core_->channel + "': inbox " + core_->settings.inbox.string() +
                               " is not a folder");
    for (const char* sub : {"archive", "rejected", "reports"}) {
      fs::create_directories(core_->settings.inbox / sub, ec);
      if (ec)
        throw std::runtime_error("file inbound '" + core_->channel + "': cannot create " +
                                 (core_->settings.inbox / sub).string() + ": " + ec.message());
    }
    asio::co_spawn(core_->strand, poll_loop(core_),
                   [what = "file inbound " + core_->channel](std::exception_ptr e) { log_exception(what, e); });
  }

  void stop() override {
    if (core_->stopping.exchange(true)) return;
    asio::post(core_->strand, [core = core_] { core->timer.cancel(); });
  }

  std::string describe() const override {
    return "file from " + core_->settings.inbox.string() + " for partner " + core_->settings.partner + " (files " +
           std::to_string(core_->files.load()) + ", records stored " + std::to_string(core_->accepted.load()) +
           ", refused " + std::to_string(core_->refused.load()) + ")";
  }

 private:
  std::shared_ptr<Core> core_;
  asio::thread_pool worker_{1};
};

AdapterSettings parse_settings(SettingsReader& r) {
  auto s = std::make_shared<FileInboundSettings>();
  s->inbox = r.file_path("inbox", "");
  if (s->inbox.empty()) r.problem("inbox", "required: the folder the partner drops files into");
  s->create_inbox = r.boolean("create_inbox", false);
  if (!s->inbox.empty() && !s->create_inbox && !fs::is_directory(s->inbox))
    r.problem("inbox", "'" + s->inbox.string() + "' is not a folder (create it first, or set create_inbox: true)");
  if (!s->inbox.empty() && s->create_inbox && fs::exists(s->inbox) && !fs::is_directory(s->inbox))
    r.problem("inbox", "'" + s->inbox.string() + "' is a file, not a folder");
  s->partner = r.required_string("partner");
  if (!s->partner.empty()) r.declare_partner_reference("partner", s->partner);
  std::string format = r.string("format", "");
  if (format == "csv") s->format = FileFormat::csv;
  else if (format == "ndjson") s->format = FileFormat::ndjson;
  else if (!format.empty()) r.problem("format", "must be csv or ndjson (or left out: by the file's extension)");
  s->poll_interval = r.duration("poll_interval", s->poll_interval);
  if (s->poll_interval.count() <= 0) r.problem("poll_interval", "must be more than 0, e.g. 1s");
  s->max_file_bytes = r.byte_size("max_file_bytes", s->max_file_bytes, 1024, std::uint64_t{1024} * 1024 * 1024);
  if (auto m = r.child("mapping")) {
    if (auto mapping = csvmap::parse_mapping(*m)) s->mapping = std::make_shared<const csvmap::Mapping>(std::move(*mapping));
  } else if (s->format == FileFormat::csv) {
    r.problem("format", "CSV needs a `mapping:` (which FHIR each row becomes)");
  }
  return s;
}

}  // namespace

std::unique_ptr<InboundAdapter> make_file_inbound(const FileInboundSettings& settings, InboundContext& ctx) {
  return std::make_unique<FileInbound>(settings, ctx);
}

InboundAdapterType file_inbound_type() {
  InboundAdapterType t;
  t.name = "file";
  t.summary = "a partner's inbox folder: CSV rows through a mapping, or NDJSON lines, each a record; reports, archive";
  t.parse = &parse_settings;
  t.create = [](const AdapterSettings& p, InboundContext& ctx) -> std::unique_ptr<InboundAdapter> {
    return make_file_inbound(settings_as<FileInboundSettings>(p), ctx);
  };
  return t;
}

}  // namespace tellonce
