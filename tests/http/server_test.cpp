#include "tellonce/http_server.hpp"

#include "tellonce/error.hpp"
#include "support/io_thread.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

namespace tellonce {
namespace {

using tcp = asio::ip::tcp;

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HttpLimits limits;
    limits.max_body_bytes = 1024;
    limits.idle_timeout = std::chrono::seconds(30);
    server_ = std::make_unique<HttpServer>(io_, "127.0.0.1:0", limits);
    server_->mount("/echo", [](HttpRequest& req) -> asio::awaitable<HttpResponse> {
      co_return json_response(req, http::status::ok, req.body(), "text/plain");
    });
    server_->mount("/a", [](HttpRequest& req) -> asio::awaitable<HttpResponse> {
      co_return json_response(req, http::status::ok, "short", "text/plain");
    });
    server_->mount("/a/b", [](HttpRequest& req) -> asio::awaitable<HttpResponse> {
      co_return json_response(req, http::status::ok, "long", "text/plain");
    });
    server_->mount("/boom", [](HttpRequest&) -> asio::awaitable<HttpResponse> {
      throw std::runtime_error("handler blew up");
      co_return HttpResponse{};
    });
    // Answers once the test sets release_; entered_ says the request is being handled.
    server_->mount("/slow", [this](HttpRequest& req) -> asio::awaitable<HttpResponse> {
      entered_ = true;
      asio::steady_timer tick(co_await asio::this_coro::executor);
      while (!release_) {
        tick.expires_after(std::chrono::milliseconds(5));
        co_await tick.async_wait(asio::use_awaitable);
      }
      co_return json_response(req, http::status::ok, "finished", "text/plain");
    });
    server_->start();
    io_thread_.start();
  }

  void TearDown() override {
    server_->stop();
    io_thread_.stop();
  }

  tcp::socket connect() {
    tcp::socket s(client_io_);
    s.connect({asio::ip::make_address("127.0.0.1"), server_->port()});
    return s;
  }

  HttpResponse roundtrip(tcp::socket& s, boost::beast::flat_buffer& buf, http::verb verb,
                         std::string target, std::string body = {}) {
    HttpRequest req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.body() = std::move(body);
    req.prepare_payload();
    http::write(s, req);
    HttpResponse res;
    http::read(s, buf, res);
    return res;
  }

  std::atomic<bool> entered_{false}, release_{false};
  test::IoThread io_thread_;
  asio::io_context& io_ = io_thread_.io;
  std::unique_ptr<HttpServer> server_;
  asio::io_context client_io_;
};

TEST_F(ServerTest, KeepAliveServesTwoRequestsOnOneConnection) {
  auto s = connect();
  boost::beast::flat_buffer buf;
  auto first = roundtrip(s, buf, http::verb::post, "/echo", "one");
  auto second = roundtrip(s, buf, http::verb::post, "/echo/x?y=1", "two");
  EXPECT_EQ(first.result(), http::status::ok);
  EXPECT_EQ(first.body(), "one");
  EXPECT_EQ(second.body(), "two");
  EXPECT_TRUE(second.keep_alive());
  EXPECT_EQ(second[http::field::server], "tellonce");
}

TEST_F(ServerTest, LongestPrefixWinsAndPrefixNeedsABoundary) {
  auto s = connect();
  boost::beast::flat_buffer buf;
  EXPECT_EQ(roundtrip(s, buf, http::verb::get, "/a/b/c").body(), "long");
  EXPECT_EQ(roundtrip(s, buf, http::verb::get, "/a/bc").body(), "short");
  EXPECT_EQ(roundtrip(s, buf, http::verb::get, "/ab").result(), http::status::not_found);
}

TEST_F(ServerTest, UnknownPathIs404OperationOutcome) {
  auto s = connect();
  boost::beast::flat_buffer buf;
  auto res = roundtrip(s, buf, http::verb::get, "/nowhere");
  EXPECT_EQ(res.result(), http::status::not_found);
  EXPECT_EQ(res[http::field::content_type], "application/fhir+json");
  EXPECT_NE(res.body().find("\"OperationOutcome\""), std::string::npos);
  EXPECT_NE(res.body().find("not-found"), std::string::npos);
}

TEST_F(ServerTest, HandlerExceptionIs500AndConnectionSurvives) {
  auto s = connect();
  boost::beast::flat_buffer buf;
  auto res = roundtrip(s, buf, http::verb::post, "/boom", "x");
  EXPECT_EQ(res.result(), http::status::internal_server_error);
  EXPECT_NE(res.body().find("\"exception\""), std::string::npos);
  EXPECT_TRUE(res.keep_alive());
  auto after = roundtrip(s, buf, http::verb::post, "/echo", "still here");
  EXPECT_EQ(after.body(), "still here");
}

TEST_F(ServerTest, OversizedContentLengthIs413WithoutReadingTheBody) {
  auto s = connect();
  std::string head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: 5000\r\n\r\n";
  asio::write(s, asio::buffer(head));
  boost::beast::flat_buffer buf;
  HttpResponse res;
  http::read(s, buf, res);
  EXPECT_EQ(res.result(), http::status::payload_too_large);
  EXPECT_FALSE(res.keep_alive());
  EXPECT_NE(res.body().find("too-long"), std::string::npos);
}

TEST_F(ServerTest, OversizedChunkedBodyIs413) {
  auto s = connect();
  std::string chunk(2000, 'x');
  std::string msg = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n" + chunk +
                    "\r\n0\r\n\r\n";
  asio::write(s, asio::buffer(msg));
  boost::beast::flat_buffer buf;
  HttpResponse res;
  http::read(s, buf, res);
  EXPECT_EQ(res.result(), http::status::payload_too_large);
}

TEST_F(ServerTest, MalformedRequestIs400AndClosed) {
  auto s = connect();
  std::string garbage = "THIS IS NOT HTTP\r\n\r\n";
  asio::write(s, asio::buffer(garbage));
  boost::beast::flat_buffer buf;
  HttpResponse res;
  http::read(s, buf, res);
  EXPECT_EQ(res.result(), http::status::bad_request);
  EXPECT_FALSE(res.keep_alive());
  char c;
  boost::system::error_code ec;
  asio::read(s, asio::buffer(&c, 1), ec);
  EXPECT_EQ(ec, asio::error::eof);
}

// Sends raw bytes and reads one response.
HttpResponse raw_roundtrip(tcp::socket& s, const std::string& bytes) {
  asio::write(s, asio::buffer(bytes));
  boost::beast::flat_buffer buf;
  HttpResponse res;
  http::read(s, buf, res);
  return res;
}

// Every smuggling shape is refused with a 400 OperationOutcome that names the header, and
// the connection is closed rather than reading what follows as another request.
void expect_framing_refusal(tcp::socket& s, const std::string& request, std::string_view header) {
  auto res = raw_roundtrip(s, request);
  EXPECT_EQ(res.result(), http::status::bad_request) << request;
  EXPECT_FALSE(res.keep_alive());
  EXPECT_EQ(res[http::field::content_type], "application/fhir+json");
  EXPECT_NE(res.body().find("OperationOutcome"), std::string::npos);
  EXPECT_NE(res.body().find(header), std::string::npos) << res.body();
  char c;
  boost::system::error_code ec;
  asio::read(s, asio::buffer(&c, 1), ec);
  EXPECT_EQ(ec, asio::error::eof) << "the smuggled request must not be answered";
}

const std::string smuggled = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";

TEST_F(ServerTest, TransferEncodingChunkedIdentityIsRefused) {
  auto s = connect();
  expect_framing_refusal(s, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
                            "5\r\nhello\r\n0\r\n\r\n" + smuggled, "Transfer-Encoding 'chunked, identity'");
}

TEST_F(ServerTest, TransferEncodingXchunkedIsRefused) {
  auto s = connect();
  expect_framing_refusal(s, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"
                            "5\r\nhello\r\n0\r\n\r\n" + smuggled, "Transfer-Encoding 'xchunked'");
}

TEST_F(ServerTest, TransferEncodingSentTwiceIsRefused) {
  auto s = connect();
  expect_framing_refusal(s, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + smuggled,
                         "Transfer-Encoding");
}

TEST_F(ServerTest, TransferEncodingWithContentLengthIsRefusedInEitherOrder) {
  {
    auto s = connect();
    expect_framing_refusal(s, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                              "Transfer-Encoding: chunked\r\n\r\nhello" + smuggled, "Transfer-Encoding");
  }
  {
    auto s = connect();
    expect_framing_refusal(s, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                              "Content-Length: 5\r\n\r\nhello" + smuggled, "Content-Length");
  }
  {
    auto s = connect();  // a coding Beast does not frame, then a length
    expect_framing_refusal(s, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n"
                              "Content-Length: 5\r\n\r\nhello" + smuggled, "Transfer-Encoding");
  }
}

TEST_F(ServerTest, ContentLengthTwiceWithDifferentValuesIsRefused) {
  auto s = connect();
  expect_framing_refusal(s, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
                            "hello!" + smuggled, "Content-Length");
}

TEST_F(ServerTest, PlainChunkedAndRepeatedEqualContentLengthStillWork) {
  auto s = connect();
  auto res = raw_roundtrip(s, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n"
                              "5\r\nhello\r\n0\r\n\r\n");
  EXPECT_EQ(res.result(), http::status::ok);
  EXPECT_EQ(res.body(), "hello");
  res = raw_roundtrip(s, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc");
  EXPECT_EQ(res.result(), http::status::ok);
  EXPECT_EQ(res.body(), "abc");
}

// A server whose requests must arrive within 200 ms.
class ShortDeadlineServerTest : public ServerTest {
 protected:
  void SetUp() override {
    HttpLimits limits;
    limits.idle_timeout = std::chrono::milliseconds(200);
    server_ = std::make_unique<HttpServer>(io_, "127.0.0.1:0", limits);
    server_->mount("/echo", [](HttpRequest& req) -> asio::awaitable<HttpResponse> {
      co_return json_response(req, http::status::ok, req.body(), "text/plain");
    });
    server_->start();
    io_thread_.start();
  }
};

TEST_F(ShortDeadlineServerTest, HalfSentHeaderIsAnswered408ThenClosed) {
  auto s = connect();
  asio::write(s, asio::buffer(std::string("POST /echo HTTP/1.1\r\nHost: x\r\nContent-")));
  boost::beast::flat_buffer buf;
  HttpResponse res;
  http::read(s, buf, res);  // blocks until the server's deadline passes
  EXPECT_EQ(res.result(), http::status::request_timeout);
  EXPECT_FALSE(res.keep_alive());
  EXPECT_NE(res.body().find("OperationOutcome"), std::string::npos);
  char c;
  boost::system::error_code ec;
  asio::read(s, asio::buffer(&c, 1), ec);
  EXPECT_EQ(ec, asio::error::eof);
}

TEST_F(ShortDeadlineServerTest, HalfSentBodyIsAnswered408) {
  auto s = connect();
  asio::write(s, asio::buffer(std::string("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")));
  boost::beast::flat_buffer buf;
  HttpResponse res;
  http::read(s, buf, res);
  EXPECT_EQ(res.result(), http::status::request_timeout);
  EXPECT_NE(res.body().find("timeout"), std::string::npos);
}

TEST_F(ShortDeadlineServerTest, IdleKeepAliveConnectionClosesWithoutAnAnswer) {
  auto s = connect();
  boost::beast::flat_buffer buf;
  EXPECT_EQ(roundtrip(s, buf, http::verb::post, "/echo", "one").body(), "one");
  char c;
  boost::system::error_code ec;
  auto n = asio::read(s, asio::buffer(&c, 1), ec);  // nothing sent: the server closes at its deadline
  EXPECT_EQ(n, 0u);
  EXPECT_EQ(ec, asio::error::eof);
}

TEST_F(ServerTest, ManyConnectionsAtOnce) {
  std::vector<tcp::socket> sockets;
  for (int i = 0; i < 50; ++i) sockets.push_back(connect());
  for (int i = 0; i < 50; ++i) {
    boost::beast::flat_buffer buf;
    auto res = roundtrip(sockets[i], buf, http::verb::post, "/echo", std::to_string(i));
    EXPECT_EQ(res.body(), std::to_string(i));
  }
}

// stop() keeps its promise: a request being handled finishes and is answered (with
// Connection: close), an idle connection is closed, and then nothing is left open.
TEST_F(ServerTest, StopLetsABusyRequestFinishAndClosesIdleConnections) {
  auto busy = connect();
  HttpRequest req{http::verb::post, "/slow", 11};
  req.set(http::field::host, "127.0.0.1");
  req.body() = "record";
  req.prepare_payload();
  http::write(busy, req);
  auto idle = connect();
  for (int i = 0; i < 2000 && !entered_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(entered_);

  server_->stop();
  // The idle connection is closed by the server: reading it ends without data.
  char byte;
  boost::system::error_code ec;
  std::size_t n = asio::read(idle, asio::buffer(&byte, 1), ec);
  EXPECT_EQ(n, 0u);
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
  for (int i = 0; i < 2000 && server_->open_connections() > 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(server_->open_connections(), 1u);  // the busy one is still there

  release_ = true;
  boost::beast::flat_buffer buf;
  HttpResponse res;
  http::read(busy, buf, res);
  EXPECT_EQ(res.result(), http::status::ok);
  EXPECT_EQ(res.body(), "finished");
  EXPECT_FALSE(res.keep_alive());
  n = asio::read(busy, asio::buffer(&byte, 1), ec);  // and then it is closed
  EXPECT_EQ(n, 0u);
  for (int i = 0; i < 2000 && server_->open_connections() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(server_->open_connections(), 0u);
}

}  // namespace
}  // namespace tellonce
