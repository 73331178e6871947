#include "sqlite_files.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <vector>

namespace tellonce::store_detail {
namespace fs = std::filesystem;

namespace {

std::string errno_text() { return std::strerror(errno); }

void fsync_path(const fs::path& p, int flags) {
  int fd = ::open(p.c_str(), flags | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open " + p.string() + " to sync it: " + errno_text());
  int rc = ::fsync(fd);
  int saved = errno;
  ::close(fd);
  if (rc != 0) throw std::runtime_error("cannot sync " + p.string() + ": " + std::strerror(saved));
}

// The WAL format (sqlite.org/fileformat2.html#walformat): a 32-byte header, then frames of a
// 24-byte header and one page. Header and frame fields are big-endian; the checksums run over
// 32-bit words in the byte order the magic number names.
constexpr std::uint32_t wal_magic_le = 0x377f0682;
constexpr std::uint32_t wal_magic_be = 0x377f0683;
constexpr std::size_t wal_header_bytes = 32;
constexpr std::size_t frame_header_bytes = 24;

std::uint32_t big_endian(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}
std::uint32_t little_endian(const unsigned char* p) {
  return (std::uint32_t{p[3]} << 24) | (std::uint32_t{p[2]} << 16) | (std::uint32_t{p[1]} << 8) | p[0];
}

struct Checksum {
  bool big = false;
  std::uint32_t s0 = 0, s1 = 0;
  void add(const unsigned char* p, std::size_t n) {  // n is a multiple of 8
    for (std::size_t i = 0; i < n; i += 8) {
      std::uint32_t a = big ? big_endian(p + i) : little_endian(p + i);
      std::uint32_t b = big ? big_endian(p + i + 4) : little_endian(p + i + 4);
      s0 += a + s1;
      s1 += b + s0;
    }
  }
};

}  // namespace

fs::path marker_path(const fs::path& db) { return fs::path(db.string() + ".id"); }
fs::path wal_path(const fs::path& db) { return fs::path(db.string() + "-wal"); }

std::optional<std::string> read_marker(const fs::path& marker) {
  std::error_code ec;
  if (!fs::exists(marker, ec)) return std::nullopt;
  std::ifstream in(marker);
  std::string id;
  if (!in || !std::getline(in, id) || id.empty())
    throw std::runtime_error("the store marker " + marker.string() +
                             " cannot be read or holds no store id; it is written when the store is created");
  return id;
}

void write_marker(const fs::path& marker, const std::string& store_id) {
  const fs::path temp = marker.string() + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << store_id << "\n"
        << "Tellonce message store marker: the store " << marker.stem().string() << " beside this file has id "
        << store_id << ".\nWhile this file exists the broker refuses to start if that store is missing, empty "
        << "or holds another id.\nSee engines/sqlite_store/README.md (\"Refusing a lost store\") before deleting it.\n";
    out.flush();
    if (!out) throw std::runtime_error("cannot write the store marker " + temp.string());
  }
  fsync_path(temp, O_RDONLY);
  std::error_code ec;
  fs::rename(temp, marker, ec);
  if (ec) throw std::runtime_error("cannot put the store marker in place at " + marker.string() + ": " + ec.message());
  auto dir = marker.parent_path();
  fsync_path(dir.empty() ? fs::path(".") : dir, O_RDONLY | O_DIRECTORY);
}

fs::path move_aside(const fs::path& file, const std::string& tag) {
  std::error_code ec;
  if (!fs::exists(file, ec)) return {};
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::system_clock::now().time_since_epoch()).count();
  fs::path to = file.string() + "." + tag + "-" + std::to_string(ms);
  fs::rename(file, to, ec);
  if (ec) throw std::runtime_error("cannot move " + file.string() + " aside to " + to.string() + ": " + ec.message());
  return to;
}

std::string WalScan::describe() const {
  if (!present) return "no write-ahead log";
  std::string s = std::to_string(bytes) + " bytes of write-ahead log";
  if (header_damaged) return s + " whose header is damaged, so SQLite ignores all of it (" + std::to_string(frames) +
                             " frame(s), " + std::to_string(lost_commits) + " of them ending a transaction)";
  s += ", " + std::to_string(frames) + " frame(s) of " + std::to_string(page_size) + " bytes; SQLite recovers " +
       std::to_string(recoverable_frames) + " frame(s) in " + std::to_string(recoverable_commits) +
       " committed transaction(s)";
  if (first_bad_frame)
    s += "; recovery stops at frame " + std::to_string(first_bad_frame) + " (its checksum or salt does not match) and " +
         std::to_string(lost_commits) + " committed transaction(s) from there on would be dropped";
  return s;
}

WalScan scan_wal(const fs::path& wal) {
  WalScan scan;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(wal.c_str(), "rb"), &std::fclose);
  if (!file) return scan;  // no WAL: nothing to recover, nothing to lose
  unsigned char header[wal_header_bytes];
  std::error_code ec;
  scan.bytes = fs::file_size(wal, ec);
  if (std::fread(header, 1, sizeof header, file.get()) != sizeof header) return scan;
  scan.present = true;

  const std::uint32_t magic = big_endian(header);
  scan.page_size = big_endian(header + 8);
  const bool size_ok = scan.page_size >= 512 && scan.page_size <= 65536 && (scan.page_size & (scan.page_size - 1)) == 0;
  Checksum sum;
  sum.big = magic == wal_magic_be;
  if (size_ok) sum.add(header, 24);
  const bool header_ok = (magic == wal_magic_le || magic == wal_magic_be) && size_ok &&
                         sum.s0 == big_endian(header + 24) && sum.s1 == big_endian(header + 28);
  if (!size_ok) {
    // Without a page size the frames cannot even be counted: every byte past the header is lost.
    scan.header_damaged = true;
    scan.lost_commits = scan.bytes > wal_header_bytes ? 1 : 0;
    return scan;
  }
  const std::uint32_t salt1 = big_endian(header + 16), salt2 = big_endian(header + 20);

  std::vector<unsigned char> frame(frame_header_bytes + scan.page_size);
  std::uint64_t log_end = 0;  // the frame where SQLite's recovery stops reading; 0 while inside the log
  std::uint64_t valid_frames = 0;
  while (std::fread(frame.data(), 1, frame.size(), file.get()) == frame.size()) {
    ++scan.frames;
    const bool commit = big_endian(frame.data() + 4) != 0;
    const bool this_generation = big_endian(frame.data() + 8) == salt1 && big_endian(frame.data() + 12) == salt2;
    if (!header_ok) {
      scan.lost_commits += commit;
      continue;
    }
    if (!log_end && this_generation) {
      Checksum next = sum;
      next.add(frame.data(), 8);
      next.add(frame.data() + frame_header_bytes, scan.page_size);
      if (next.s0 == big_endian(frame.data() + 16) && next.s1 == big_endian(frame.data() + 20)) {
        sum = next;
        ++valid_frames;
        if (commit) {
          scan.recoverable_frames = valid_frames;
          ++scan.recoverable_commits;
        }
        continue;
      }
    }
    if (!log_end) log_end = scan.frames;
    // A new generation is written from the first frame on, so a frame of this generation after
    // the end of the log exists only when something in between went bad; a commit frame among
    // them is a transaction that had been committed.
    if (this_generation && commit) {
      ++scan.lost_commits;
      if (!scan.first_bad_frame) scan.first_bad_frame = log_end;
    }
  }
  scan.header_damaged = !header_ok;
  return scan;
}

}  // namespace tellonce::store_detail
