// The audit log's writer: one thread, batches, one fdatasync a batch; the head file after it.
#include "broker/audit/audit_log.hpp"

#include "tellonce/json.hpp"
#include "tellonce/log.hpp"
#include "tellonce/message.hpp"
#include "tellonce/store.hpp"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

namespace tellonce {

namespace asio = boost::asio;
namespace fs = std::filesystem;

const std::string kAuditGenesisHash(64, '0');

namespace {

constexpr std::pair<AuditKind, std::string_view> kKindNames[] = {
    {AuditKind::received, "received"},
    {AuditKind::duplicate, "duplicate"},
    {AuditKind::rejected, "rejected"},
    {AuditKind::delivered, "delivered"},
    {AuditKind::delivery_failed, "delivery-failed"},
    {AuditKind::dead, "dead"},
    {AuditKind::held, "held"},
    {AuditKind::expired, "expired"},
    {AuditKind::withheld, "withheld"},
    {AuditKind::replayed, "replayed"},
    {AuditKind::replay_requested, "replay-requested"},
    {AuditKind::paused, "paused"},
    {AuditKind::resumed, "resumed"},
    {AuditKind::body_viewed, "body-viewed"},
    {AuditKind::original_viewed, "original-viewed"},
    {AuditKind::config_reloaded, "config-reloaded"},
};

std::string errno_text(int e) { return std::strerror(e); }

// The head file: the anchor for the tail. Written (to a temporary name, then renamed over the
// old) after each batch's fdatasync, so it never names an entry that is not on disk.
struct Head {
  std::int64_t seq = 0;
  std::string hash = kAuditGenesisHash;
  std::uint64_t bytes = 0;
  std::int64_t created_ms = 0;
  std::int64_t at_ms = 0;  // of the entry seq
};

std::optional<Head> read_head(const fs::path& log) {
  std::ifstream in(audit_head_path(log), std::ios::binary);
  if (!in) return std::nullopt;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  rapidjson::Document doc;
  doc.Parse(text.c_str(), text.size());
  if (doc.HasParseError() || !doc.IsObject()) return std::nullopt;
  Head h;
  auto* seq = json_member(doc, "seq");
  auto* bytes = json_member(doc, "bytes");
  auto* created = json_member(doc, "created");
  if (!seq || !seq->IsInt64() || !bytes || !bytes->IsUint64()) return std::nullopt;
  h.seq = seq->GetInt64();
  h.bytes = bytes->GetUint64();
  h.hash = std::string(json_string(json_member(doc, "hash")));
  if (created && created->IsInt64()) h.created_ms = created->GetInt64();
  if (auto* at = json_member(doc, "at"); at && at->IsInt64()) h.at_ms = at->GetInt64();
  if (h.hash.size() != 64) return std::nullopt;
  return h;
}

bool write_head(const fs::path& log, const Head& h) {
  const auto path = audit_head_path(log);
  const auto tmp = fs::path(path.string() + ".tmp");
  std::string text = "{\"seq\":" + std::to_string(h.seq) + ",\"hash\":\"" + h.hash + "\",\"bytes\":" +
                     std::to_string(h.bytes) + ",\"at\":" + std::to_string(h.at_ms) +
                     ",\"created\":" + std::to_string(h.created_ms) + "}\n";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok && ::rename(tmp.c_str(), path.c_str()) == 0;
}

std::string fact_key(AuditKind kind, std::string_view message, std::string_view destination) {
  return std::string(to_string(kind)) + "|" + std::string(message) + "|" + std::string(destination);
}

// At most this long between a write and its fdatasync (and the head's update).
constexpr auto kSyncInterval = std::chrono::seconds(1);

class FileAuditLog final : public AuditLog {
 public:
  explicit FileAuditLog(const AuditLogSettings& s) : settings_(s) { open_and_check(); }
  ~FileAuditLog() override { close(); }

  void record(AuditEntry entry) override { enqueue(std::move(entry), nullptr); }

  asio::awaitable<Result<void>> record_durable(AuditEntry entry) override {
    auto initiation = [this](auto handler, AuditEntry e) {
      auto shared = std::make_shared<decltype(handler)>(std::move(handler));
      auto done = [shared](bool ok) {
        auto ex = asio::get_associated_executor(*shared);
        asio::post(ex, [shared, ok]() mutable { (*shared)(ok); });
      };
      if (!enqueue(std::move(e), std::move(done))) {
        auto ex = asio::get_associated_executor(*shared);
        asio::post(ex, [shared]() mutable { (*shared)(false); });
      }
    };
    auto wait = asio::async_initiate<const asio::use_awaitable_t<>, void(bool)>(std::move(initiation),
                                                                                 asio::use_awaitable, std::move(entry));
    const bool ok = co_await std::move(wait);
    if (ok) co_return Result<void>{};
    co_return Failure::retryable(Errc::unavailable, Issue{Severity::error, "transient",
                                                          "the audit log could not record this now; try again later",
                                                          "", ""});
  }

  Result<std::size_t> catch_up(Store& store) override {
    const std::int64_t last = std::max(last_at_ms_, head_created_ms_);
    const std::int64_t since =
        last - std::chrono::duration_cast<std::chrono::milliseconds>(kAuditCatchUpWindow).count();
    auto facts = store.facts_since(since);
    if (!facts) return facts.error();
    // Every entry queued after a fact was stored is timed at or after it, so the entries from
    // `since` on are all that can already show these facts.
    std::set<std::string> known = recorded_facts_since(since);
    std::size_t added = 0;
    for (const auto& f : *facts) {
      AuditEntry e;
      if (f.destination.empty()) {
        e.kind = AuditKind::received;
        e.actor = f.source;
        e.outcome = "ok";
      } else {
        switch (f.status) {
          case DeliveryStatus::delivered: e.kind = AuditKind::delivered; e.outcome = "ok"; break;
          case DeliveryStatus::dead: e.kind = AuditKind::dead; e.outcome = f.partner_code.empty() ? "failed" : f.partner_code; break;
          case DeliveryStatus::held: e.kind = AuditKind::held; e.outcome = "ok"; break;
          case DeliveryStatus::expired: e.kind = AuditKind::expired; e.outcome = "expired"; break;
          case DeliveryStatus::pending: continue;
        }
        // A mailbox collection (partner code "acknowledged") was the partner's act, as logged live.
        const bool collected = f.status == DeliveryStatus::delivered && f.partner_code == "acknowledged";
        e.actor = collected ? f.destination : "tellonce";
        e.destination = f.destination;
      }
      if (known.count(fact_key(e.kind, f.message_id, e.destination))) continue;
      e.source = f.source;
      e.channel = f.channel;
      e.message_id = f.message_id;
      e.resource_type = f.resource_type;
      e.detail = "recovered at start-up from the store (at " + iso8601_utc(f.at_ms) + ")";
      if (!f.destination.empty()) e.detail += ", attempt " + std::to_string(f.attempts);
      known.insert(fact_key(e.kind, f.message_id, e.destination));
      record(std::move(e));
      ++added;
    }
    return added;
  }

  void close() override {
    {
      std::lock_guard lk(mu_);
      if (closed_) return;
      closed_ = true;
      stopping_ = true;
    }
    wake_.notify_all();
    if (writer_.joinable()) writer_.join();
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  std::string describe() const override { return settings_.path.string(); }

 private:
  struct Queued {
    AuditEntry entry;
    std::int64_t at_ms;
    std::function<void(bool)> done;  // record_durable's waiter; empty for record()
  };

  bool enqueue(AuditEntry e, std::function<void(bool)> done) {
    bool was_empty = false;
    {
      std::lock_guard lk(mu_);
      if (stopping_) {
        if (!done) log::error("audit", "audit entry " + std::string(to_string(e.kind)) + " after close: dropped");
        return false;
      }
      // Never earlier than the entry before it (the clock may step back).
      queued_at_ms_ = std::max(queued_at_ms_, now_ms());
      was_empty = queue_.empty();
      queue_.push_back(Queued{std::move(e), queued_at_ms_, std::move(done)});
    }
    // Only the first entry of a batch wakes the writer: one wake-up a batch, not one a record.
    if (was_empty) wake_.notify_one();
    return true;
  }

  void open_and_check() {
    const auto& path = settings_.path;
    if (!path.parent_path().empty()) fs::create_directories(path.parent_path());
    auto head = read_head(path);
    std::error_code ec;
    const bool exists = fs::exists(path, ec);
    const std::uint64_t size = exists ? fs::file_size(path, ec) : 0;
    if (head && size < head->bytes)
      throw std::runtime_error("audit log " + path.string() + " is " + std::to_string(size) +
                               " bytes but its head (" + audit_head_path(path).string() + ") says " +
                               std::to_string(head->bytes) + " were written: its tail was cut. Check it with "
                               "`tellonce audit verify " + path.string() + "`; to start a new log, move both "
                               "files aside (keep them as evidence)");
    std::uint64_t from = head ? head->bytes : 0;
    last_seq_ = head ? head->seq : 0;
    last_hash_ = head ? head->hash : kAuditGenesisHash;
    head_created_ms_ = head ? head->created_ms : 0;
    last_at_ms_ = head ? head->at_ms : 0;
    // Entries after the head (a batch on disk whose head was not yet renamed) are checked and
    // taken; an unfinished line (a batch cut by a crash, never reported durable) is dropped.
    std::uint64_t good_end = from;
    if (size > from) {
      std::ifstream in(path, std::ios::binary);
      in.seekg(static_cast<std::streamoff>(from));
      std::string line;
      std::uint64_t offset = from;
      while (std::getline(in, line)) {
        const bool complete = !in.eof();
        if (!complete) break;
        std::string why;
        auto parsed = parse_audit_line(line, why);
        if (!parsed || parsed->seq != last_seq_ + 1 || parsed->prev != last_hash_)
          throw std::runtime_error("audit log " + path.string() + " fails its check after byte " +
                                   std::to_string(offset) + (parsed ? "" : " (" + why + ")") +
                                   ": run `tellonce audit verify " + path.string() + "`; to start a new log, "
                                   "move it and its head aside (keep them as evidence)");
        last_seq_ = parsed->seq;
        last_hash_ = parsed->hash;
        last_at_ms_ = parsed->at_ms;
        offset += line.size() + 1;
        good_end = offset;
      }
    }
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
    if (fd_ < 0) throw std::runtime_error("cannot open audit log " + path.string() + ": " + errno_text(errno));
    if (size > good_end) {
      log::warn("audit", "audit log " + path.string() + ": dropping an unfinished last line (" +
                             std::to_string(size - good_end) + " bytes) left by a crash");
      if (::ftruncate(fd_, static_cast<off_t>(good_end)) != 0)
        throw std::runtime_error("cannot repair audit log " + path.string() + ": " + errno_text(errno));
    }
    offset_ = good_end;
    if (!head) head_created_ms_ = now_ms();
    if (!write_head(path, Head{last_seq_, last_hash_, offset_, head_created_ms_, last_at_ms_}))
      throw std::runtime_error("cannot write the audit head " + audit_head_path(path).string() + ": " +
                               errno_text(errno));
    queued_at_ms_ = last_at_ms_;
    writer_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "audit-writer");  // for top -H and per-thread profiles
      write_loop();
    });
  }

  // The entries timed at or after since_ms, as fact keys: read backwards from the end in
  // growing chunks until a line older than since_ms (or the start) is reached.
  std::set<std::string> recorded_facts_since(std::int64_t since_ms) const {
    std::set<std::string> keys;
    std::ifstream in(settings_.path, std::ios::binary);
    if (!in || offset_ == 0) return keys;
    std::uint64_t start = offset_;
    std::string tail;
    std::uint64_t chunk = 64 * 1024;
    while (true) {
      const std::uint64_t from = start > chunk ? start - chunk : 0;
      std::string piece(start - from, '\0');
      in.seekg(static_cast<std::streamoff>(from));
      in.read(piece.data(), static_cast<std::streamsize>(piece.size()));
      tail = piece + tail;
      start = from;
      // The first line may be partial unless we are at the start of the file.
      std::size_t first = 0;
      if (start > 0) {
        auto nl = tail.find('\n');
        if (nl == std::string::npos) { chunk *= 2; continue; }
        first = nl + 1;
      }
      std::string why;
      auto end = tail.find('\n', first);
      auto oldest = end == std::string::npos ? std::nullopt
                                              : parse_audit_line(std::string_view(tail).substr(first, end - first), why);
      if (start == 0 || (oldest && oldest->at_ms < since_ms)) {
        std::size_t pos = first;
        while (pos < tail.size()) {
          auto nl = tail.find('\n', pos);
          if (nl == std::string::npos) break;
          auto parsed = parse_audit_line(std::string_view(tail).substr(pos, nl - pos), why);
          if (parsed && parsed->at_ms >= since_ms)
            keys.insert(fact_key(parsed->entry.kind, parsed->entry.message_id, parsed->entry.destination));
          pos = nl + 1;
        }
        return keys;
      }
      chunk *= 2;
    }
  }

  void write_loop() {
    std::vector<Queued> batch;
    while (true) {
      bool sync_alone = false;
      {
        std::unique_lock lk(mu_);
        auto ready = [&] { return !queue_.empty() || stopping_; };
        // Entries written but not yet synced are synced after a quiet interval at the latest.
        if (unsynced_) sync_alone = !wake_.wait_for(lk, kSyncInterval, ready);
        else wake_.wait(lk, ready);
        if (!sync_alone) {
          if (queue_.empty() && stopping_) {
            lk.unlock();
            if (unsynced_) sync_written();
            return;
          }
          if (settings_.flush_delay.count() > 0 && !stopping_)
            wake_.wait_for(lk, settings_.flush_delay, [&] { return stopping_; });
          batch.swap(queue_);
        }
      }
      if (sync_alone) {
        sync_written();
        continue;
      }
      write_batch(batch);
      batch.clear();
    }
  }

  // Makes what was written durable and moves the head up to it.
  bool sync_written() {
    if (::fdatasync(fd_) != 0) {
      log::warn("audit", "could not sync the audit log " + settings_.path.string() + ": " + errno_text(errno));
      return false;
    }
    unsynced_ = false;
    last_sync_ = std::chrono::steady_clock::now();
    if (!write_head(settings_.path, Head{last_seq_, last_hash_, offset_, head_created_ms_, last_at_ms_}))
      log::warn("audit", "could not update the audit head " + audit_head_path(settings_.path).string() + ": " +
                             errno_text(errno));
    return true;
  }

  void write_batch(std::vector<Queued>& batch) {
    // A batch is synced at once when someone waits for it (record_durable) or the last sync is
    // an interval old; otherwise only written. The store is the truth for what record() logs, and
    // start-up catches the log up from it (docs/audit.md), so syncing those can wait: at 50
    // syncs a second the log's fdatasync queued behind and in front of the store's, and cost
    // bench/load about 7 %.
    bool waited_for = false;
    for (const auto& q : batch) waited_for = waited_for || static_cast<bool>(q.done);
    for (int tries = 0;; ++tries) {
      std::string bytes;
      std::int64_t seq = last_seq_;
      std::string hash = last_hash_;
      const std::string hash_before = last_hash_;
      const std::int64_t at_before = last_at_ms_;
      const std::int64_t at = batch.empty() ? last_at_ms_ : batch.back().at_ms;
      for (const auto& q : batch) {
        auto line = audit_line(++seq, q.at_ms, q.entry, hash);
        hash = line.substr(line.size() - 2 - 1 - 64, 64);
        bytes += line;
      }
      const bool sync = waited_for || stopping_now() ||
                        std::chrono::steady_clock::now() - last_sync_ >= kSyncInterval;
      if (write_all(bytes)) {
        last_seq_ = seq;
        last_hash_ = hash;
        last_at_ms_ = at;
        offset_ += bytes.size();
        unsynced_ = true;
        if (!sync || sync_written()) {
          for (auto& q : batch)
            if (q.done) q.done(true);
          return;
        }
        // Written but not durable: answered as not on disk below, and written again after the
        // good end (the rewrite replaces these bytes).
        offset_ -= bytes.size();
        last_seq_ -= static_cast<std::int64_t>(batch.size());
        last_hash_ = hash_before;
        last_at_ms_ = at_before;
      }
      // Not on disk: the file goes back to its last good end; waiters are told now, and the
      // batch is tried again (a durable entry is never skipped or reordered).
      const int err = errno;
      if (::ftruncate(fd_, static_cast<off_t>(offset_)) != 0) { /* the next write's check catches it */ }
      log::error("audit", "could not write " + std::to_string(batch.size()) + " audit entries to " +
                              settings_.path.string() + ": " + errno_text(err) + "; retrying");
      for (auto& q : batch)
        if (q.done) std::exchange(q.done, nullptr)(false);
      {
        std::unique_lock lk(mu_);
        if (stopping_ && tries >= 3) {
          log::error("audit", std::to_string(batch.size()) + " audit entries not written at shutdown");
          return;
        }
        wake_.wait_for(lk, std::chrono::seconds(1), [&] { return stopping_; });
      }
    }
  }

  bool write_all(const std::string& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::pwrite(fd_, bytes.data() + done, bytes.size() - done, static_cast<off_t>(offset_ + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      done += static_cast<std::size_t>(n);
    }
    return true;
  }

  bool stopping_now() {
    std::lock_guard lk(mu_);
    return stopping_;
  }

  AuditLogSettings settings_;
  int fd_ = -1;
  // Writer thread only (and open_and_check before it starts).
  std::int64_t last_seq_ = 0;
  std::string last_hash_;
  std::int64_t last_at_ms_ = 0;
  std::int64_t head_created_ms_ = 0;
  std::uint64_t offset_ = 0;
  bool unsynced_ = false;  // entries written after the last fdatasync (the head names none of them)
  std::chrono::steady_clock::time_point last_sync_{};

  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<Queued> queue_;       // under mu_
  std::int64_t queued_at_ms_ = 0;   // under mu_
  bool stopping_ = false;           // under mu_
  bool closed_ = false;             // under mu_
  std::thread writer_;
};

}  // namespace

std::string_view to_string(AuditKind k) {
  for (const auto& [kind, name] : kKindNames)
    if (kind == k) return name;
  return "unknown";
}

bool audit_kind_from(std::string_view s, AuditKind& out) {
  for (const auto& [kind, name] : kKindNames)
    if (name == s) {
      out = kind;
      return true;
    }
  return false;
}

fs::path audit_head_path(const fs::path& log) { return fs::path(log.string() + ".head"); }

std::string audit_line(std::int64_t seq, std::int64_t at_ms, const AuditEntry& e, const std::string& prev_hash) {
  std::string body;
  body.reserve(256);
  body += "{\"seq\":";
  body += std::to_string(seq);
  body += ",\"at\":";
  body += std::to_string(at_ms);
  body += ",\"kind\":\"";
  body += to_string(e.kind);
  body += '"';
  auto field = [&body](std::string_view key, const std::string& value) {
    if (value.empty()) return;
    body += ",\"";
    body += key;
    body += "\":";
    append_json_string(body, value);
  };
  field("actor", e.actor);
  field("source", e.source);
  field("channel", e.channel);
  field("message", e.message_id);
  field("resourceType", e.resource_type);
  field("destination", e.destination);
  field("outcome", e.outcome);
  field("detail", e.detail);
  field("reason", e.reason);
  body += ",\"prev\":\"";
  body += prev_hash;
  body += "\"}";
  const std::string hash = sha256_hex(body);
  body.pop_back();  // the closing brace: the hash goes last
  body += ",\"hash\":\"";
  body += hash;
  body += "\"}\n";
  return body;
}

std::optional<AuditLine> parse_audit_line(std::string_view line, std::string& why) {
  constexpr std::string_view marker = ",\"hash\":\"";
  const std::size_t suffix = marker.size() + 64 + 2;
  if (line.size() < suffix + 2 || line.substr(line.size() - suffix, marker.size()) != marker ||
      line.substr(line.size() - 2) != "\"}") {
    why = "not an audit entry (it does not end with its hash)";
    return std::nullopt;
  }
  AuditLine out;
  out.hash = std::string(line.substr(line.size() - 66, 64));
  std::string body(line.substr(0, line.size() - suffix));
  body += '}';
  if (sha256_hex(body) != out.hash) {
    why = "changed: its hash does not match its content";
    return std::nullopt;
  }
  rapidjson::Document doc;
  doc.Parse(body.c_str(), body.size());
  if (doc.HasParseError() || !doc.IsObject()) {
    why = "not JSON";
    return std::nullopt;
  }
  auto* seq = json_member(doc, "seq");
  auto* at = json_member(doc, "at");
  if (!seq || !seq->IsInt64() || !at || !at->IsInt64()) {
    why = "no seq or time";
    return std::nullopt;
  }
  out.seq = seq->GetInt64();
  out.at_ms = at->GetInt64();
  out.prev = std::string(json_string(json_member(doc, "prev")));
  if (!audit_kind_from(json_string(json_member(doc, "kind")), out.entry.kind)) {
    why = "unknown kind";
    return std::nullopt;
  }
  auto text = [&doc](const char* key) { return std::string(json_string(json_member(doc, key))); };
  out.entry.actor = text("actor");
  out.entry.source = text("source");
  out.entry.channel = text("channel");
  out.entry.message_id = text("message");
  out.entry.resource_type = text("resourceType");
  out.entry.destination = text("destination");
  out.entry.outcome = text("outcome");
  out.entry.detail = text("detail");
  out.entry.reason = text("reason");
  return out;
}

std::unique_ptr<AuditLog> open_audit_log(const AuditLogSettings& settings) {
  return std::make_unique<FileAuditLog>(settings);
}

}  // namespace tellonce
