// The web console (console/ in the repository): its static files, served under /console/ on the
// API listener.
//
// Contract: ConsoleFiles::load reads the whole folder once, at start-up, on the calling thread
// (blocking reads; it throws std::runtime_error naming the folder when it cannot be used). The
// handler then answers from that in-memory snapshot: no file I/O on the io threads, and a
// request can only ever name a file that was loaded, so "..", encoded slashes, backslashes and
// absolute paths find nothing (404). Symbolic links and hidden files are not loaded. Each file
// carries a strong ETag (FNV-1a of its bytes) and "Cache-Control: no-cache": browsers keep it
// and revalidate cheaply (304), and a new release is seen on the next load. GET and HEAD only.
// A ConsoleFiles is immutable after load; the handler may run on any thread.
#pragma once

#include "tellonce/http_server.hpp"

#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace tellonce {

struct ConsoleFile {
  std::string content_type;
  std::string body;
  std::string etag;  // quoted, as sent
};

class ConsoleFiles {
 public:
  // Limits on what load() accepts: the console is a few small files, anything far larger is a
  // wrong folder (a home directory, a data folder), refused rather than read into memory.
  static constexpr std::size_t kMaxFiles = 200;
  static constexpr std::size_t kMaxTotalBytes = 8 * 1024 * 1024;

  // Every regular file under `dir` with a known type (html, css, js, mjs, svg, png, ico, json,
  // txt, webmanifest), by its path relative to `dir` with '/' separators. Needs index.html.
  static ConsoleFiles load(const std::filesystem::path& dir);

  const ConsoleFile* find(std::string_view relative_path) const;
  std::size_t size() const { return files_.size(); }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  std::map<std::string, ConsoleFile, std::less<>> files_;
};

// Where the console's files are: `configured` when set (api.console_dir; relative to the config
// file's folder, resolved by the caller), else <executable's folder>/../share/tellonce/console
// when that folder exists (an installed layout: bin/tellonce beside share/), else `built_in`
// (the source tree's console/, compiled in, which is what a build tree uses).
std::filesystem::path find_console_dir(const std::filesystem::path& configured,
                                       const std::filesystem::path& executable,
                                       const std::filesystem::path& built_in);

// This process's executable (/proc/self/exe); empty when it cannot be read.
std::filesystem::path current_executable();

// Mounts "/console" on `server`: "/console" redirects to "/console/", "/console/" is index.html.
void mount_console(HttpServer& server, std::shared_ptr<const ConsoleFiles> files);

}  // namespace tellonce
