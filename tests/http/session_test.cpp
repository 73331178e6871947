// The connection loop over Beast's test::stream with a fail count: for every script of requests,
// the n-th stream operation fails, for every n until a run completes untouched. Each run must end
// (no hang, no exception, no leak under ASan), hand each request to the handler at most once,
// and leave the client with a prefix of what an undisturbed run sends: a failure may cut the
// answers short but never garble them or answer something else.
#include "broker/http/session.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <gtest/gtest.h>

#include <string>

namespace tellonce::http_detail {

template <>
struct StreamOps<boost::beast::test::stream> {
  static void close(boost::beast::test::stream& s) { s.close(); }
  static void shutdown_send(boost::beast::test::stream&) {}  // the peer's input simply ends
  static void interrupt(boost::beast::test::stream& s) { s.close(); }
};

namespace {

using TestStream = boost::beast::test::stream;

struct RunResult {
  std::string sent;          // what the client received
  int handled = 0;           // requests that reached the handler
  bool finished = false;     // the session coroutine completed
  bool threw = false;
  std::size_t operations = 0;  // stream reads and writes the session made
};

RunResult run_session(const std::string& input, boost::beast::test::fail_count& fc, const HttpLimits& limits) {
  asio::io_context io;
  TestStream server(io, fc, input);
  server.read_size(23);  // many small reads: more places to fail
  TestStream client(io);
  server.connect(client);
  client.close();  // after the scripted input, the server reads end of stream

  RunResult result;
  std::atomic<bool> stopping{false};
  auto dispatch = [&result](HttpRequest& req) -> asio::awaitable<HttpResponse> {
    ++result.handled;
    HttpResponse res{http::status::ok, req.version()};
    res.set(http::field::content_type, "text/plain");
    res.keep_alive(req.keep_alive());
    res.body() = "echo:" + req.body();
    res.prepare_payload();
    co_return res;
  };
  auto session = std::make_shared<Session<TestStream>>(std::move(server));
  asio::co_spawn(io, serve_session(session, limits, dispatch, stopping), [&](std::exception_ptr e) {
    result.finished = true;
    result.threw = e != nullptr;
  });
  io.run();
  result.sent = std::string(client.str());
  result.operations = session->stream.nread() + session->stream.nwrite();
  return result;
}

struct Script {
  const char* name;
  std::string input;
  int requests;               // how many reach the handler when nothing fails
  const char* must_contain;   // in the undisturbed answer
};

class SessionFailureInjection : public ::testing::TestWithParam<Script> {};

TEST_P(SessionFailureInjection, EveryFailurePointEndsCleanlyWithAPrefixOfTheAnswer) {
  const Script& script = GetParam();
  HttpLimits limits;
  limits.max_body_bytes = 64;
  limits.idle_timeout = std::chrono::hours(1);  // never fires: failures come from the stream

  boost::beast::test::fail_count never(1'000'000);
  auto golden = run_session(script.input, never, limits);
  ASSERT_TRUE(golden.finished);
  ASSERT_FALSE(golden.threw);
  EXPECT_EQ(golden.handled, script.requests);
  EXPECT_NE(golden.sent.find(script.must_contain), std::string::npos) << golden.sent;

  ASSERT_GE(golden.operations, 2u);
  // fail_count(n) fails the n-th operation (counting from 1; 0 fails the first too) and every
  // one after it, like a connection that dies there.
  for (std::size_t n = 0; n <= golden.operations; ++n) {
    boost::beast::test::fail_count fc(n);
    auto run = run_session(script.input, fc, limits);
    ASSERT_TRUE(run.finished) << "failing at operation " << n;
    ASSERT_FALSE(run.threw) << "failing at operation " << n;
    EXPECT_LE(run.handled, script.requests) << "failing at operation " << n;
    ASSERT_TRUE(golden.sent.starts_with(run.sent)) << "failing at operation " << n << ":\n" << run.sent;
    if (n < golden.operations / 2) {
      EXPECT_LT(run.sent.size(), golden.sent.size()) << "failing at operation " << n;
    }
  }
  boost::beast::test::fail_count past_the_end(golden.operations + 1);  // nothing fails
  auto last = run_session(script.input, past_the_end, limits);
  EXPECT_EQ(last.sent, golden.sent);
  EXPECT_EQ(last.handled, golden.handled);
}

const std::string body32 = "0123456789abcdef0123456789abcdef";

INSTANTIATE_TEST_SUITE_P(
    Scripts, SessionFailureInjection,
    ::testing::Values(
        Script{"KeepAliveTwoRequests",
               "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 32\r\n\r\n" + body32 +
                   "GET /y HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
               2, "echo:0123"},
        Script{"ExpectContinue",
               "POST /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello", 1,
               "100 Continue"},
        Script{"ChunkedBody",
               "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
               1, "echo:hello world"},
        Script{"OversizedBodyIs413",
               "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n" + body32 + body32 + body32 + "0123", 0,
               "413"},
        Script{"SmugglingShapeIs400",
               "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
               "GET /y HTTP/1.1\r\nHost: h\r\n\r\n",
               0, "Transfer-Encoding"},
        Script{"GarbageIs400", "NOT HTTP AT ALL\r\n\r\n", 0, "400"}),
    [](const ::testing::TestParamInfo<Script>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace tellonce::http_detail
