#include "batch_outbound.hpp"

#include "durable_file.hpp"
#include "tellonce/json.hpp"
#include "tellonce/log.hpp"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <condition_variable>
#include <ctime>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_set>

namespace tellonce::file_outbound {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// One awaiting deliver(): completed exactly once, by whoever takes it out of the adapter's lists
// (under its mutex), resuming the coroutine on its own executor.
class Waiter {
 public:
  virtual ~Waiter() = default;
  virtual void complete(DeliveryResult result) = 0;
};

template <class Handler>
class HandlerWaiter final : public Waiter {
 public:
  explicit HandlerWaiter(Handler handler)
      : handler_(std::move(handler)), guard_(asio::make_work_guard(asio::get_associated_executor(handler_))) {}
  void complete(DeliveryResult result) override {
    auto ex = guard_.get_executor();
    asio::post(ex, [handler = std::move(handler_), result = std::move(result)]() mutable {
      std::move(handler)(std::move(result));
    });
    guard_.reset();
  }

 private:
  Handler handler_;
  asio::executor_work_guard<asio::associated_executor_t<Handler>> guard_;
};

struct Entry {
  std::string message_id;
  std::string line;  // the record's NDJSON line or CSV row, with its line end
  std::unique_ptr<Waiter> waiter;
  Clock::time_point arrived;
};

constexpr std::string_view batch_prefix = "batch-";
constexpr std::string_view manifest_suffix = ".manifest.json";
constexpr std::size_t batch_number_digits = 16;

std::string batch_name(std::uint64_t number) {
  auto digits = std::to_string(number);
  return std::string(batch_prefix) + std::string(batch_number_digits - std::min(batch_number_digits, digits.size()), '0') + digits;
}

// The 16-digit number of "batch-<digits>..." or nullopt.
std::optional<std::uint64_t> batch_number(const std::string& file_name) {
  if (!file_name.starts_with(batch_prefix) || file_name.size() < batch_prefix.size() + batch_number_digits)
    return std::nullopt;
  std::uint64_t n = 0;
  for (std::size_t i = batch_prefix.size(); i < batch_prefix.size() + batch_number_digits; ++i) {
    if (file_name[i] < '0' || file_name[i] > '9') return std::nullopt;
    n = n * 10 + static_cast<std::uint64_t>(file_name[i] - '0');
  }
  return n;
}

std::string utc_now_iso() {
  const auto now = std::chrono::system_clock::now();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

DeliveryResult stopping_result() {
  DeliveryResult r;
  r.outcome = DeliveryOutcome::retryable;
  r.partner_code = "file not written";
  r.detail = "the broker stopped before the batch was written";
  return r;
}

class BatchOutbound final : public OutboundAdapter {
 public:
  BatchOutbound(FileOutboundSettings settings, CsvMapping mapping)
      : settings_(std::move(settings)), mapping_(std::move(mapping)) {
    extension_ = settings_.format == FileOutboundFormat::csv ? ".csv" : ".ndjson";
    read_outbox();
    writer_ = std::thread([this] { run(); });
  }
  ~BatchOutbound() override {
    stop();
    writer_.join();
  }

  asio::awaitable<DeliveryResult> deliver(const DeliveryJob& job) override {
    if (written_before_.contains(job.message_id)) {  // read-only after construction
      DeliveryResult ok;
      ok.outcome = DeliveryOutcome::ok;
      ok.partner_code = "file written";
      ok.detail = "already in a batch of the outbox (a manifest lists it)";
      co_return ok;
    }
    std::string line;
    if (settings_.format == FileOutboundFormat::csv) {
      auto rendered = render_csv_row(mapping_, job.body);
      if (!rendered.row) {
        DeliveryResult refused;
        refused.outcome = DeliveryOutcome::permanent;
        refused.partner_code = "file not renderable";
        refused.detail = std::move(rendered.why);
        co_return refused;
      }
      line = std::move(*rendered.row);
    } else {
      if (job.content_type.find("json") == std::string::npos) {
        DeliveryResult refused;
        refused.outcome = DeliveryOutcome::permanent;
        refused.partner_code = "file not renderable";
        refused.detail = "ndjson takes JSON records, not " + job.content_type;
        co_return refused;
      }
      // One record per line: in valid JSON a raw CR or LF can only be whitespace between tokens.
      line = job.body;
      std::replace_if(line.begin(), line.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
      line += '\n';
    }
    auto initiation = [this](auto handler, std::string id, std::string text) {
      enqueue(Entry{std::move(id), std::move(text),
                    std::make_unique<HandlerWaiter<decltype(handler)>>(std::move(handler)), Clock::now()});
    };
    auto written = asio::async_initiate<const asio::use_awaitable_t<>, void(DeliveryResult)>(
        initiation, asio::use_awaitable, job.message_id, std::move(line));
    co_return co_await std::move(written);
  }

  std::string describe() const override {
    return std::string("file (") + (settings_.format == FileOutboundFormat::csv ? "csv" : "ndjson") +
           " batches) into " + settings_.directory.string();
  }

  void stop() override {
    std::vector<std::unique_ptr<Waiter>> ended;
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      for (auto& e : pending_) ended.push_back(std::move(e.waiter));
      pending_.clear();
      for (auto& w : writing_) ended.push_back(std::move(w));
      writing_.clear();
    }
    cv_.notify_all();
    for (auto& w : ended) w->complete(stopping_result());
  }

 private:
  void enqueue(Entry entry) {
    std::unique_lock lock(mu_);
    if (stopping_) {
      lock.unlock();
      entry.waiter->complete(stopping_result());
      return;
    }
    pending_.push_back(std::move(entry));
    const bool wake = pending_.size() == 1 || pending_.size() >= settings_.batch_max_records;
    lock.unlock();
    if (wake) cv_.notify_one();
  }

  // The writer thread: closes a batch when it is full or its first record has waited long enough.
  void run() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      if (pending_.empty()) {
        cv_.wait(lock);
        continue;
      }
      const auto deadline = pending_.front().arrived + settings_.batch_max_wait;
      if (pending_.size() < settings_.batch_max_records && Clock::now() < deadline) {
        cv_.wait_until(lock, deadline);
        continue;
      }
      const auto n = std::min(pending_.size(), settings_.batch_max_records);
      std::vector<std::string> ids, lines;
      for (std::size_t i = 0; i < n; ++i) {
        ids.push_back(std::move(pending_[i].message_id));
        lines.push_back(std::move(pending_[i].line));
        writing_.push_back(std::move(pending_[i].waiter));
      }
      pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
      lock.unlock();
      DeliveryResult result = write_batch(ids, lines);
      lock.lock();
      auto done = std::move(writing_);  // empty if stop() ended them meanwhile
      writing_.clear();
      lock.unlock();
      for (auto& w : done) w->complete(result);
      lock.lock();
    }
  }

  DeliveryResult write_batch(const std::vector<std::string>& ids, const std::vector<std::string>& lines) {
    const auto now_number = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
    last_batch_ = std::max(now_number, last_batch_ + 1);  // names sort in batch order, even across restarts
    const auto name = batch_name(last_batch_);
    const auto data_name = name + extension_;
    std::string data;
    if (settings_.format == FileOutboundFormat::csv) data = csv_header(mapping_);
    for (const auto& l : lines) data += l;

    if (auto failed = write_file_durably(settings_.directory, data_name + ".tmp", data_name, data, settings_.fsync))
      return *failed;

    std::string manifest = "{\"file\":";
    append_json_string(manifest, data_name);
    manifest += ",\"format\":";
    append_json_string(manifest, settings_.format == FileOutboundFormat::csv ? "csv" : "ndjson");
    manifest += ",\"records\":" + std::to_string(ids.size()) + ",\"bytes\":" + std::to_string(data.size()) +
                ",\"sha256\":\"" + sha256_hex(data) + "\",\"created\":\"" + utc_now_iso() + "\",\"message_ids\":[";
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (i) manifest += ',';
      append_json_string(manifest, ids[i]);
    }
    manifest += "]}\n";
    const auto manifest_name = name + std::string(manifest_suffix);
    if (auto failed =
            write_file_durably(settings_.directory, manifest_name + ".tmp", manifest_name, manifest, settings_.fsync)) {
      // Without its manifest the data file is never read; take it away so the outbox stays clean.
      std::error_code ignored;
      fs::remove(settings_.directory / data_name, ignored);
      return *failed;
    }
    DeliveryResult ok;
    ok.outcome = DeliveryOutcome::ok;
    ok.partner_code = "file written";
    ok.detail = data_name + " (" + std::to_string(ids.size()) + " records)";
    return ok;
  }

  // At start-up: the ids the outbox's manifests list (a redelivery after a crash is answered
  // from them), the highest batch number, and our own leftovers removed.
  void read_outbox() {
    std::error_code ec;
    std::unordered_set<std::string> named;
    std::vector<fs::path> data_files;
    for (const auto& e : fs::directory_iterator(settings_.directory, ec)) {
      const auto file_name = e.path().filename().string();
      const auto number = batch_number(file_name);
      if (!number) continue;
      if (file_name.ends_with(".tmp")) {
        fs::remove(e.path(), ec);
        continue;
      }
      last_batch_ = std::max(last_batch_, *number);
      if (!file_name.ends_with(manifest_suffix)) {
        data_files.push_back(e.path());
        continue;
      }
      auto doc = parse_json(slurp(e.path()));
      if (!doc) continue;
      named.insert(std::string(json_string(json_member(*doc, "file"))));
      if (auto* list = json_member(*doc, "message_ids"); list && list->IsArray())
        for (const auto& id : list->GetArray()) written_before_.insert(std::string(json_string(&id)));
    }
    for (const auto& p : data_files)
      if (!named.contains(p.filename().string())) fs::remove(p, ec);  // its manifest was never written
    if (!written_before_.empty())
      log::info("file-outbound", "outbox " + settings_.directory.string() + ": " +
                                     std::to_string(written_before_.size()) + " message ids already in batches");
  }

  const FileOutboundSettings settings_;
  const CsvMapping mapping_;
  std::string extension_;
  std::unordered_set<std::string> written_before_;  // filled before the writer starts; then read-only
  std::uint64_t last_batch_ = 0;                     // writer thread only (after construction)

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::vector<Entry> pending_;                       // in arrival order
  std::vector<std::unique_ptr<Waiter>> writing_;     // the batch on its way to disk
  std::thread writer_;
};

}  // namespace

std::unique_ptr<OutboundAdapter> make_batch_outbound(const FileOutboundSettings& settings, CsvMapping mapping) {
  return std::make_unique<BatchOutbound>(settings, std::move(mapping));
}

}  // namespace tellonce::file_outbound
