#include "broker/console/console_files.hpp"

#include "support/io_thread.hpp"
#include "support/temp_dir.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <gtest/gtest.h>

#include <fstream>
#include <stdexcept>

namespace tellonce {
namespace {

namespace fs = std::filesystem;
using tcp = asio::ip::tcp;

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

constexpr const char* kSecret = "SECRET-OUTSIDE-THE-CONSOLE";

class ConsoleFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // <tmp>/secret.txt sits beside the console folder <tmp>/console: what traversal would reach.
    write(tmp_ / "secret.txt", kSecret);
    write(tmp_ / "console" / "index.html", "<!doctype html><title>Tellonce</title>");
    write(tmp_ / "console" / "app.js", "export const answer = 42;\n");
    write(tmp_ / "console" / "css" / "site.css", "body { margin: 0 }\n");
    write(tmp_ / "console" / ".hidden.js", "hidden");
    write(tmp_ / "console" / ".git" / "config.txt", "hidden folder");
    write(tmp_ / "console" / "notes.md", "not a console file type");
    fs::create_symlink(tmp_ / "secret.txt", tmp_ / "console" / "link.txt");
    files_ = std::make_shared<const ConsoleFiles>(ConsoleFiles::load(tmp_ / "console"));
    server_ = std::make_unique<HttpServer>(io_thread_.io, "127.0.0.1:0", HttpLimits{});
    mount_console(*server_, files_);
    server_->start();
    io_thread_.start();
  }
  void TearDown() override {
    server_->stop();
    io_thread_.stop();
  }

  HttpResponse get(const std::string& target, http::verb verb = http::verb::get,
                   const std::string& if_none_match = "") {
    asio::io_context io;
    tcp::socket s(io);
    s.connect({asio::ip::make_address("127.0.0.1"), server_->port()});
    HttpRequest req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    if (!if_none_match.empty()) req.set(http::field::if_none_match, if_none_match);
    req.prepare_payload();
    http::write(s, req);
    boost::beast::flat_buffer buf;
    http::response_parser<http::string_body> parser;
    parser.skip(verb == http::verb::head);  // a HEAD answer has a length but no body
    http::read(s, buf, parser);
    return parser.release();
  }

  test::TempDir tmp_{"console-files"};
  std::shared_ptr<const ConsoleFiles> files_;
  test::IoThread io_thread_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(ConsoleFilesTest, LoadsOnlyRegularFilesOfKnownTypesThatAreNotHidden) {
  EXPECT_EQ(files_->size(), 3u);  // index.html, app.js, css/site.css
  EXPECT_NE(files_->find("css/site.css"), nullptr);
  EXPECT_EQ(files_->find("link.txt"), nullptr);
  EXPECT_EQ(files_->find(".hidden.js"), nullptr);
  EXPECT_EQ(files_->find("notes.md"), nullptr);
}

TEST_F(ConsoleFilesTest, RootIsIndexWithTypeValidatorAndCacheHeaders) {
  auto res = get("/console/");
  EXPECT_EQ(res.result(), http::status::ok);
  EXPECT_EQ(res.body(), "<!doctype html><title>Tellonce</title>");
  EXPECT_EQ(res[http::field::content_type], "text/html; charset=utf-8");
  EXPECT_EQ(res[http::field::cache_control], "no-cache");
  EXPECT_EQ(res[http::field::etag], files_->find("index.html")->etag);
  EXPECT_EQ(res["X-Content-Type-Options"], "nosniff");
  EXPECT_NE(std::string(res["Content-Security-Policy"]).find("default-src 'self'"), std::string::npos);
}

TEST_F(ConsoleFilesTest, BarePrefixRedirectsToTheFolder) {
  auto res = get("/console");
  EXPECT_EQ(res.result(), http::status::moved_permanently);
  EXPECT_EQ(res[http::field::location], "/console/");
}

TEST_F(ConsoleFilesTest, ServesFilesWithTheirContentTypesAndIgnoresTheQuery) {
  auto js = get("/console/app.js?v=2");
  EXPECT_EQ(js.result(), http::status::ok);
  EXPECT_EQ(js[http::field::content_type], "text/javascript; charset=utf-8");
  EXPECT_EQ(js.body(), "export const answer = 42;\n");
  auto css = get("/console/css/site.css");
  EXPECT_EQ(css.result(), http::status::ok);
  EXPECT_EQ(css[http::field::content_type], "text/css; charset=utf-8");
  EXPECT_EQ(get("/console/css/").result(), http::status::not_found);  // no index there
}

TEST_F(ConsoleFilesTest, TraversalAndOddNamesFindNothing) {
  for (const char* target : {
           "/console/../secret.txt", "/console/%2e%2e/secret.txt", "/console/%2E%2E%2Fsecret.txt",
           "/console/css/../../secret.txt", "/console/css/%2e%2e/%2e%2e/secret.txt", "/console/..%5csecret.txt",
           "/console/..\\secret.txt", "/console//etc/passwd", "/console/%2fetc%2fpasswd",
           "/console/link.txt", "/console/.hidden.js", "/console/.git/config.txt", "/console/notes.md",
           "/console/app.js%00.html", "/console/%zz", "/console/app.js%", "/console/./app.js",
           "/console/css/../app.js", "/console/css//site.css"}) {
    auto res = get(target);
    EXPECT_EQ(res.result(), http::status::not_found) << target;
    EXPECT_EQ(res.body().find(kSecret), std::string::npos) << target;
  }
}

TEST_F(ConsoleFilesTest, MatchingEtagAnswersNotModifiedWithoutBody) {
  const auto& etag = files_->find("app.js")->etag;
  auto res = get("/console/app.js", http::verb::get, "\"other\", W/" + etag);
  EXPECT_EQ(res.result(), http::status::not_modified);
  EXPECT_TRUE(res.body().empty());
  EXPECT_EQ(res[http::field::etag], etag);
  EXPECT_EQ(get("/console/app.js", http::verb::get, "\"other\"").result(), http::status::ok);
}

TEST_F(ConsoleFilesTest, HeadGivesTheLengthWithoutTheBody) {
  auto res = get("/console/app.js", http::verb::head);
  EXPECT_EQ(res.result(), http::status::ok);
  EXPECT_EQ(res[http::field::content_length], std::to_string(files_->find("app.js")->body.size()));
  EXPECT_TRUE(res.body().empty());
}

TEST_F(ConsoleFilesTest, OtherMethodsAreRefused) {
  auto res = get("/console/app.js", http::verb::post);
  EXPECT_EQ(res.result(), http::status::method_not_allowed);
  EXPECT_EQ(res[http::field::allow], "GET, HEAD");
}

TEST(ConsoleFilesLoad, RefusesAMissingFolderOrOneWithoutIndex) {
  test::TempDir tmp("console-load");
  EXPECT_THROW(ConsoleFiles::load(tmp / "absent"), std::runtime_error);
  write(tmp / "app.js", "x");
  EXPECT_THROW(ConsoleFiles::load(tmp.path()), std::runtime_error);
}

TEST(ConsoleFilesLoad, RefusesAFolderFarLargerThanTheConsole) {
  test::TempDir tmp("console-load");
  write(tmp / "index.html", "x");
  for (std::size_t i = 0; i < ConsoleFiles::kMaxFiles; ++i) write(tmp / ("f" + std::to_string(i) + ".txt"), "x");
  EXPECT_THROW(ConsoleFiles::load(tmp.path()), std::runtime_error);
}

TEST(ConsoleFilesDir, ConfiguredThenInstalledThenBuiltIn) {
  test::TempDir tmp("console-dir");
  fs::create_directories(tmp / "prefix" / "bin");
  auto exe = tmp / "prefix" / "bin" / "tellonce";
  // Nothing installed beside the binary: the source tree's folder.
  EXPECT_EQ(find_console_dir("", exe, "/src/console"), fs::path("/src/console"));
  EXPECT_EQ(find_console_dir("", "", "/src/console"), fs::path("/src/console"));
  fs::create_directories(tmp / "prefix" / "share" / "tellonce" / "console");
  EXPECT_EQ(find_console_dir("", exe, "/src/console"), (tmp / "prefix" / "share" / "tellonce" / "console").lexically_normal());
  EXPECT_EQ(find_console_dir("/etc/tellonce/console", exe, "/src/console"), fs::path("/etc/tellonce/console"));
}

TEST(ConsoleFilesDir, CurrentExecutableIsThisTest) {
  EXPECT_EQ(current_executable().filename(), "console_files_test");
}

}  // namespace
}  // namespace tellonce
