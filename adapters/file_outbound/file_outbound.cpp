#include "file_outbound.hpp"

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

namespace tellonce {
namespace {

// What a failed system call means for the delivery. The outbox is a folder on the broker's
// machine, so every failure is one an operator can fix (space, permissions, a missing
// folder): all are retryable, none is the record's fault.
DeliveryResult os_failure(const char* step, int err) {
  DeliveryResult r;
  r.outcome = DeliveryOutcome::retryable;
  const char* name = strerrordesc_np(err);
  r.partner_code = std::string("file ") + (strerrorname_np(err) ? strerrorname_np(err) : "error");
  r.detail = std::string(step) + ": " + (name ? name : "unknown error");
  return r;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

std::string extension_for(const std::string& content_type) {
  return content_type.find("json") != std::string::npos ? ".json" : ".dat";
}

// Runs on the writer thread.
DeliveryResult write_durably(const FileOutboundSettings& s, const std::string& message_id,
                             const std::string& content_type, const std::string& body) {
  const auto final_path = s.directory / (message_id + extension_for(content_type));
  const auto temp_path = s.directory / (".partial-" + message_id);
  Fd file(::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
  if (file.get() < 0) return os_failure("create", errno);
  for (std::size_t done = 0; done < body.size();) {
    ssize_t n = ::write(file.get(), body.data() + done, body.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::unlink(temp_path.c_str());
      return os_failure("write", err);
    }
    done += static_cast<std::size_t>(n);
  }
  if (s.fsync && ::fdatasync(file.get()) != 0) {
    int err = errno;
    ::unlink(temp_path.c_str());
    return os_failure("flush", err);
  }
  if (::close(file.release()) != 0) return os_failure("close", errno);
  if (::rename(temp_path.c_str(), final_path.c_str()) != 0) {
    int err = errno;
    ::unlink(temp_path.c_str());
    return os_failure("rename", err);
  }
  // The rename is durable only once the folder's own entry list is on disk.
  if (s.fsync) {
    Fd dir(::open(s.directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.get() < 0) return os_failure("open folder", errno);
    if (::fsync(dir.get()) != 0) return os_failure("flush folder", errno);
  }
  DeliveryResult ok;
  ok.outcome = DeliveryOutcome::ok;
  ok.partner_code = "file written";
  return ok;
}

class FileOutbound final : public OutboundAdapter {
 public:
  explicit FileOutbound(FileOutboundSettings settings) : settings_(std::move(settings)) {}
  ~FileOutbound() override { writer_.join(); }

  asio::awaitable<DeliveryResult> deliver(const DeliveryJob& job) override {
    // The job outlives this call, but the writer thread gets its own copies so the contract
    // does not depend on it.
    auto initiation = [this](auto handler, std::string id, std::string type, std::string body) {
      auto guard = asio::make_work_guard(asio::get_associated_executor(handler));
      asio::post(writer_, [this, handler = std::move(handler), guard = std::move(guard), id = std::move(id),
                           type = std::move(type), body = std::move(body)]() mutable {
        DeliveryResult result = write_durably(settings_, id, type, body);
        auto ex = guard.get_executor();
        asio::post(ex, [handler = std::move(handler), result = std::move(result)]() mutable {
          std::move(handler)(std::move(result));
        });
        guard.reset();
      });
    };
    auto written = asio::async_initiate<const asio::use_awaitable_t<>, void(DeliveryResult)>(
        initiation, asio::use_awaitable, job.message_id, job.content_type, job.body);
    co_return co_await std::move(written);
  }

  std::string describe() const override { return "file into " + settings_.directory.string(); }

  // stop() is the default no-op: a write in progress takes milliseconds and completes; the
  // destructor waits for it.

 private:
  FileOutboundSettings settings_;
  asio::thread_pool writer_{1};
};

AdapterSettings parse_settings(SettingsReader& reader) {
  auto s = std::make_shared<FileOutboundSettings>();
  s->directory = reader.required_string("directory");
  s->fsync = reader.boolean("fsync", s->fsync);
  if (!s->directory.empty() && !std::filesystem::is_directory(s->directory))
    reader.problem("directory", "'" + s->directory.string() + "' is not a folder (create it first)");
  else if (!s->directory.empty() && ::access(s->directory.c_str(), W_OK) != 0)
    reader.problem("directory", "the broker may not write into '" + s->directory.string() + "'");
  reader.finish();
  return s;
}

}  // namespace

std::unique_ptr<OutboundAdapter> make_file_outbound(const FileOutboundSettings& settings) {
  return std::make_unique<FileOutbound>(settings);
}

OutboundAdapterType file_outbound_type() {
  OutboundAdapterType type;
  type.name = "file";
  type.summary = "writes each record as one file into the partner's outbox folder, durably";
  type.parse = &parse_settings;
  type.create = [](const AdapterSettings& settings, OutboundContext&) -> std::unique_ptr<OutboundAdapter> {
    return make_file_outbound(settings_as<FileOutboundSettings>(settings));
  };
  return type;
}

}  // namespace tellonce
