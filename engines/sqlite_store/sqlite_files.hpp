// The files of the SQLite store beside the database, checked before SQLite touches them.
//
//   <db>.id   the store's marker: its id on the first line, written (atomically, fsynced) when
//             the store is created. A marker with no database, or an empty one, means the store
//             was lost, not that there never was one: the store refuses to start.
//   <db>-wal  SQLite's write-ahead log. scan_wal reads it the way SQLite's recovery does and
//             also counts committed transactions that recovery would silently drop (a frame
//             whose checksum fails hides every commit after it).
//
// Internal to the SQLite engine. Every function is blocking and meant for start-up; errors are
// thrown as std::runtime_error (start-up is where exceptions are allowed).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace tellonce::store_detail {

std::filesystem::path marker_path(const std::filesystem::path& db);  // "<db>.id"
std::filesystem::path wal_path(const std::filesystem::path& db);     // "<db>-wal"

// The id on the marker's first line; nullopt when there is no marker. Throws when it exists but
// cannot be read or holds no id.
std::optional<std::string> read_marker(const std::filesystem::path& marker);

// Writes the marker through a temporary file, fsyncs it, renames it into place and fsyncs the
// directory, so a crash leaves either the old marker or the new one.
void write_marker(const std::filesystem::path& marker, const std::string& store_id);

// Renames a file to "<file>.<tag>-<unix ms>" so nothing is deleted silently; returns the new
// name, or an empty path when there was no such file.
std::filesystem::path move_aside(const std::filesystem::path& file, const std::string& tag);

struct WalScan {
  bool present = false;                   // a WAL file with at least a header's worth of bytes
  std::uint64_t bytes = 0;
  bool header_damaged = false;            // SQLite ignores the whole file
  std::uint64_t page_size = 0;
  std::uint64_t frames = 0;               // whole frames in the file, of every generation
  std::uint64_t recoverable_frames = 0;   // what SQLite's recovery keeps: up to the last good commit
  std::uint64_t recoverable_commits = 0;
  std::uint64_t first_bad_frame = 0;      // 1-based frame where recovery stops, when commits follow it
  // Commit frames of the current WAL generation (same salts as the header) from the frame where
  // recovery stops on: transactions that were committed but that recovery would drop.
  std::uint64_t lost_commits = 0;

  bool loses_commits() const { return lost_commits > 0; }
  std::string describe() const;
};

// Reads the whole WAL file (about 32 MB in normal running, at most the store's WAL bound).
WalScan scan_wal(const std::filesystem::path& wal);

}  // namespace tellonce::store_detail
