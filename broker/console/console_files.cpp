#include "broker/console/console_files.hpp"

#include <boost/beast/http.hpp>

#include <array>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace tellonce {
namespace {

constexpr std::string_view kPrefix = "/console";

struct Type {
  std::string_view extension;
  std::string_view content_type;
};
constexpr std::array kTypes{
    Type{".html", "text/html; charset=utf-8"},
    Type{".css", "text/css; charset=utf-8"},
    Type{".js", "text/javascript; charset=utf-8"},
    Type{".mjs", "text/javascript; charset=utf-8"},
    Type{".json", "application/json"},
    Type{".svg", "image/svg+xml"},
    Type{".png", "image/png"},
    Type{".ico", "image/x-icon"},
    Type{".txt", "text/plain; charset=utf-8"},
    Type{".webmanifest", "application/manifest+json"},
};

std::optional<std::string_view> content_type_for(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  for (const auto& t : kTypes)
    if (ext == t.extension) return t.content_type;
  return std::nullopt;
}

std::string etag_of(std::string_view bytes) {
  std::uint64_t h = 14695981039346656037ull;  // FNV-1a, 64 bit: stable across runs and builds
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[24];
  std::snprintf(buf, sizeof buf, "\"%016llx\"", static_cast<unsigned long long>(h));
  return buf;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The file a request path names, relative to the console folder, or nothing when it cannot name
// one. Lookups are in the loaded map only; these checks just say "no" early and plainly.
std::optional<std::string> relative_name(std::string_view rest) {
  std::string out;
  for (std::size_t i = 0; i < rest.size(); ++i) {
    char c = rest[i];
    if (c == '%') {
      if (i + 2 >= rest.size()) return std::nullopt;
      int hi = hex_digit(rest[i + 1]), lo = hex_digit(rest[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    }
    out.push_back(c);
  }
  if (out.empty()) return std::string("index.html");
  if (out.front() == '/' || out.find('\0') != std::string::npos || out.find('\\') != std::string::npos)
    return std::nullopt;
  std::string_view segments = out;
  while (!segments.empty()) {
    auto slash = segments.find('/');
    auto segment = segments.substr(0, slash);
    if (segment.empty() || segment == "." || segment == ".." || segment.front() == '.') return std::nullopt;
    segments = slash == std::string_view::npos ? std::string_view() : segments.substr(slash + 1);
  }
  if (out.back() == '/') out += "index.html";  // a folder: its index
  return out;
}

HttpResponse plain(const HttpRequest& req, http::status status, std::string text) {
  auto res = json_response(req, status, std::move(text), "text/plain; charset=utf-8");
  res.set(http::field::cache_control, "no-store");
  return res;
}

bool etag_matches(std::string_view if_none_match, std::string_view etag) {
  // A list of tags, or "*"; weak tags compare equal by their opaque part (RFC 9110 13.1.2).
  while (!if_none_match.empty()) {
    auto comma = if_none_match.find(',');
    auto tag = if_none_match.substr(0, comma);
    while (!tag.empty() && (tag.front() == ' ' || tag.front() == '\t')) tag.remove_prefix(1);
    while (!tag.empty() && (tag.back() == ' ' || tag.back() == '\t')) tag.remove_suffix(1);
    if (tag.starts_with("W/")) tag.remove_prefix(2);
    if (tag == "*" || tag == etag) return true;
    if_none_match = comma == std::string_view::npos ? std::string_view() : if_none_match.substr(comma + 1);
  }
  return false;
}

HttpResponse serve(const ConsoleFiles& files, const HttpRequest& req) {
  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    auto res = plain(req, http::status::method_not_allowed, "the console is read with GET or HEAD\n");
    res.set(http::field::allow, "GET, HEAD");
    return res;
  }
  std::string_view target = req.target();
  std::string_view path = target.substr(0, target.find_first_of("?#"));
  if (path == kPrefix) {
    auto res = plain(req, http::status::moved_permanently, "the console is at /console/\n");
    res.set(http::field::location, "/console/");
    return res;
  }
  auto name = relative_name(path.substr(kPrefix.size() + 1));
  const ConsoleFile* file = name ? files.find(*name) : nullptr;
  if (!file) return plain(req, http::status::not_found, "no such console page\n");

  bool not_modified = etag_matches(req[http::field::if_none_match], file->etag);
  HttpResponse res{not_modified ? http::status::not_modified : http::status::ok, req.version()};
  res.set(http::field::server, "tellonce");
  res.set(http::field::etag, file->etag);
  res.set(http::field::cache_control, "no-cache");
  res.keep_alive(req.keep_alive());
  if (not_modified) return res;
  res.set(http::field::content_type, file->content_type);
  res.set("X-Content-Type-Options", "nosniff");
  res.set("Referrer-Policy", "no-referrer");
  // Only our own files and our own API: no inline script, nothing from elsewhere, no framing.
  res.set("Content-Security-Policy",
          "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
          "form-action 'self'; frame-ancestors 'none'");
  if (req.method() == http::verb::head) {
    res.content_length(file->body.size());  // what a GET would send; the session sends no body
  } else {
    res.body() = file->body;
    res.prepare_payload();
  }
  return res;
}

}  // namespace

ConsoleFiles ConsoleFiles::load(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  ConsoleFiles out;
  out.dir_ = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw std::runtime_error("console folder " + dir.string() + " is not a readable folder (api.console_dir)");
  std::size_t total = 0;
  fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec), end;
  if (ec) throw std::runtime_error("cannot read console folder " + dir.string() + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) throw std::runtime_error("cannot read console folder " + dir.string() + ": " + ec.message());
    const fs::path& p = it->path();
    if (p.filename().string().starts_with(".")) {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_symlink(ec) || !it->is_regular_file(ec)) continue;
    auto type = content_type_for(p);
    if (!type) continue;
    if (out.files_.size() == kMaxFiles)
      throw std::runtime_error("console folder " + dir.string() + " has more than " + std::to_string(kMaxFiles) +
                               " files: not the console (api.console_dir)");
    std::ifstream in(p, std::ios::binary);
    std::ostringstream bytes;
    bytes << in.rdbuf();
    if (!in) throw std::runtime_error("cannot read " + p.string());
    ConsoleFile file{std::string(*type), std::move(bytes).str(), ""};
    total += file.body.size();
    if (total > kMaxTotalBytes)
      throw std::runtime_error("console folder " + dir.string() + " holds more than " +
                               std::to_string(kMaxTotalBytes / (1024 * 1024)) + " MB: not the console (api.console_dir)");
    file.etag = etag_of(file.body);
    out.files_.emplace(p.lexically_relative(dir).generic_string(), std::move(file));
  }
  if (!out.find("index.html"))
    throw std::runtime_error("console folder " + dir.string() + " has no index.html (api.console_dir)");
  return out;
}

const ConsoleFile* ConsoleFiles::find(std::string_view relative_path) const {
  auto it = files_.find(relative_path);
  return it == files_.end() ? nullptr : &it->second;
}

std::filesystem::path find_console_dir(const std::filesystem::path& configured,
                                       const std::filesystem::path& executable,
                                       const std::filesystem::path& built_in) {
  if (!configured.empty()) return configured;
  if (!executable.empty()) {
    std::error_code ec;
    auto installed = executable.parent_path() / ".." / "share" / "tellonce" / "console";
    if (std::filesystem::is_directory(installed, ec)) return installed.lexically_normal();
  }
  return built_in;
}

std::filesystem::path current_executable() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path() : p;
}

namespace {
// A coroutine taking its state by value: the frame owns what it uses.
asio::awaitable<HttpResponse> serve_async(std::shared_ptr<const ConsoleFiles> files, HttpRequest& req) {
  co_return serve(*files, req);
}
}  // namespace

void mount_console(HttpServer& server, std::shared_ptr<const ConsoleFiles> files) {
  server.mount(std::string(kPrefix), [files](HttpRequest& req) { return serve_async(files, req); });
}

}  // namespace tellonce
