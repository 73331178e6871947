#include "durable_file.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>
#include <utility>

namespace tellonce::file_outbound {
namespace {

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

}  // namespace

DeliveryResult os_failure(const char* step, int err) {
  DeliveryResult r;
  r.outcome = DeliveryOutcome::retryable;
  const char* name = strerrordesc_np(err);
  r.partner_code = std::string("file ") + (strerrorname_np(err) ? strerrorname_np(err) : "error");
  r.detail = std::string(step) + ": " + (name ? name : "unknown error");
  return r;
}

std::optional<DeliveryResult> write_file_durably(const std::filesystem::path& dir, const std::string& temp_name,
                                                 const std::string& final_name, std::string_view bytes,
                                                 bool fsync) {
  const auto temp_path = dir / temp_name;
  const auto final_path = dir / final_name;
  Fd file(::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
  if (file.get() < 0) return os_failure("create", errno);
  for (std::size_t done = 0; done < bytes.size();) {
    ssize_t n = ::write(file.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::unlink(temp_path.c_str());
      return os_failure("write", err);
    }
    done += static_cast<std::size_t>(n);
  }
  if (fsync && ::fdatasync(file.get()) != 0) {
    int err = errno;
    ::unlink(temp_path.c_str());
    return os_failure("flush", err);
  }
  if (::close(file.release()) != 0) {
    int err = errno;
    ::unlink(temp_path.c_str());
    return os_failure("close", err);
  }
  if (::rename(temp_path.c_str(), final_path.c_str()) != 0) {
    int err = errno;
    ::unlink(temp_path.c_str());
    return os_failure("rename", err);
  }
  // The rename is durable only once the folder's own entry list is on disk.
  if (fsync) {
    Fd folder(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (folder.get() < 0) return os_failure("open folder", errno);
    if (::fsync(folder.get()) != 0) return os_failure("flush folder", errno);
  }
  return std::nullopt;
}

}  // namespace tellonce::file_outbound
