#include "adapters/fhir_rest_outbound/fhir_rest_outbound.hpp"

#include "broker/config/config.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "support/run_async.hpp"
#include "support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

namespace tellonce {
namespace {

namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

struct Seen {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers;
  std::string body;
};

struct Reply {
  int status = 200;
  std::string body;
  std::chrono::milliseconds delay{0};
  bool hang_up = false;  // close the connection after answering, without saying so first
  bool say_close = false;  // answer "Connection: close" and close
};

// A blocking HTTP/1.1 server on 127.0.0.1 with a thread per connection, answering what the test says.
class TestServer {
 public:
  explicit TestServer(std::function<Reply(const Seen&)> answer)
      : answer_(std::move(answer)), acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { accept_loop(); });
  }

  ~TestServer() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    }
    wake_.notify_all();
    boost::system::error_code ec;
    tcp::socket poke(io_);
    poke.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ec);  // unblocks accept()
    accept_thread_.join();
    for (auto& t : connection_threads_) t.join();
  }

  std::string base() const { return "http://127.0.0.1:" + std::to_string(port_) + "/fhir"; }
  std::vector<Seen> requests() const {
    std::lock_guard lock(mutex_);
    return seen_;
  }
  int connections() const {
    std::lock_guard lock(mutex_);
    return connections_;
  }

 private:
  void accept_loop() {
    for (;;) {
      boost::system::error_code ec;
      tcp::socket socket(io_);
      acceptor_.accept(socket, ec);
      std::lock_guard lock(mutex_);
      if (stopping_ || ec) return;
      ++connections_;
      open_fds_.push_back(socket.native_handle());
      connection_threads_.emplace_back([this, s = std::move(socket)]() mutable { serve(std::move(s)); });
    }
  }

  void serve(tcp::socket socket) {
    boost::beast::flat_buffer buffer;
    for (;;) {
      http::request<http::string_body> req;
      boost::system::error_code ec;
      http::read(socket, buffer, req, ec);
      if (ec) return;
      Seen seen;
      seen.method = std::string(req.method_string());
      seen.target = std::string(req.target());
      for (const auto& field : req) seen.headers[std::string(field.name_string())] = std::string(field.value());
      seen.body = req.body();
      Reply reply = answer_(seen);
      {
        std::unique_lock lock(mutex_);
        seen_.push_back(std::move(seen));
        if (wake_.wait_for(lock, reply.delay, [this] { return stopping_; })) return;
      }
      http::response<http::string_body> res{static_cast<http::status>(reply.status), 11};
      res.set(http::field::content_type, "application/fhir+json");
      res.body() = reply.body;
      res.keep_alive(req.keep_alive() && !reply.say_close);
      res.prepare_payload();
      http::write(socket, res, ec);
      if (ec || !req.keep_alive() || reply.hang_up || reply.say_close) return;
    }
  }

  std::function<Reply(const Seen&)> answer_;
  asio::io_context io_;
  tcp::acceptor acceptor_;
  unsigned short port_ = 0;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  int connections_ = 0;
  std::vector<int> open_fds_;
  std::vector<Seen> seen_;
  std::thread accept_thread_;
  std::vector<std::thread> connection_threads_;
};

DeliveryJob patient_job() {
  DeliveryJob j;
  j.delivery_id = 1;
  j.message_id = "01JD3TESTMESSAGE000000000A";
  j.destination = "gp-a81001";
  j.resource_type = "Patient";
  j.body = R"({"resourceType":"Patient","identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9000000009"}]})";
  return j;
}

DeliveryJob bundle_job(const std::string& type) {
  auto j = patient_job();
  j.resource_type = "Bundle";
  j.body = R"({"resourceType":"Bundle","meta":{"type":"not-this"},"entry":[{"resource":{"type":"nor-this"}}],"type":")" +
           type + R"("})";
  return j;
}

std::string operation_outcome(const std::string& diagnostics) {
  return R"({"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":")" +
         diagnostics + R"("}]})";
}

class FhirRestOutboundTest : public ::testing::Test {
 protected:
  asio::io_context io;

  std::shared_ptr<OutboundAdapter> adapter(const std::string& url, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    FhirRestOutboundSettings s;
    s.url = url;
    s.timeout = timeout;
    s.connect_timeout = std::chrono::seconds(2);
    s.bearer_token = "partner-secret";
    s.max_connections = 4;
    return make_fhir_rest_outbound(s, io.get_executor());
  }

  // The adapter keeps the io_context busy until the result is posted back.
  // Then runs io until the adapter's thread has let go of it too (it holds the io busy until its
  // result is posted), so nothing touches io after the test.
  DeliveryResult deliver(OutboundAdapter& a, const DeliveryJob& job) {
    DeliveryResult r = test::run_async(io, a.deliver(job));
    io.restart();
    io.run();
    return r;
  }
};

TEST_F(FhirRestOutboundTest, PostsResourceToItsTypeWithHeaders) {
  TestServer server([](const Seen&) { return Reply{201, ""}; });
  auto a = adapter(server.base() + "/");
  auto job = patient_job();
  auto r = deliver(*a, job);
  EXPECT_EQ(r.outcome, DeliveryOutcome::ok);
  EXPECT_EQ(r.partner_code, "HTTP 201");

  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].method, "POST");
  EXPECT_EQ(seen[0].target, "/fhir/Patient");
  EXPECT_EQ(seen[0].body, job.body);
  EXPECT_EQ(seen[0].headers["Content-Type"], "application/fhir+json");
  EXPECT_EQ(seen[0].headers["X-Tellonce-Message-Id"], job.message_id);
  EXPECT_EQ(seen[0].headers["X-Request-Id"], job.message_id + "-gp-a81001");
  EXPECT_EQ(seen[0].headers["Authorization"], "Bearer partner-secret");
  EXPECT_EQ(seen[0].headers.count("Expect"), 0u);
  const auto authority = server.base().substr(7, server.base().size() - 7 - 5);  // between http:// and /fhir
  EXPECT_EQ(seen[0].headers["Host"], authority);
}

TEST_F(FhirRestOutboundTest, CredentialsInTheUrlAreSentAsBasicAuthorization) {
  TestServer server([](const Seen&) { return Reply{201, ""}; });
  FhirRestOutboundSettings s;
  s.url = "http://gp%2Dsystem:p%40ss:word@" + server.base().substr(7);  // percent-encoded as URLs need
  auto a = make_fhir_rest_outbound(s, io.get_executor());
  EXPECT_EQ(deliver(*a, patient_job()).outcome, DeliveryOutcome::ok);
  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].headers["Authorization"], "Basic Z3Atc3lzdGVtOnBAc3M6d29yZA==");  // gp-system:p@ss:word
  EXPECT_EQ(seen[0].target, "/fhir/Patient");
}

// A long answer is read to its end (only its start kept), so the connection serves the next one.
TEST_F(FhirRestOutboundTest, LongAnswersAreReadThroughAndTheConnectionKept) {
  std::atomic<int> n{0};
  TestServer server([&n](const Seen&) {
    return n++ == 0 ? Reply{201, std::string(300 * 1024, 'y')} : Reply{500, std::string(200 * 1024, 'z')};
  });
  auto a = adapter(server.base());
  EXPECT_EQ(deliver(*a, patient_job()).outcome, DeliveryOutcome::ok);
  auto r = deliver(*a, patient_job());
  EXPECT_EQ(r.outcome, DeliveryOutcome::retryable);
  EXPECT_EQ(r.partner_code, "HTTP 500");
  EXPECT_EQ(r.detail, std::string(300, 'z'));
  EXPECT_EQ(deliver(*a, patient_job()).outcome, DeliveryOutcome::retryable);
  EXPECT_EQ(server.requests().size(), 3u);
  EXPECT_EQ(server.connections(), 1);
}

TEST_F(FhirRestOutboundTest, TransactionAndMessageBundlesGoToTheBase) {
  TestServer server([](const Seen&) { return Reply{200, ""}; });
  auto a = adapter(server.base());
  EXPECT_EQ(deliver(*a, bundle_job("transaction")).outcome, DeliveryOutcome::ok);
  EXPECT_EQ(deliver(*a, bundle_job("message")).outcome, DeliveryOutcome::ok);
  EXPECT_EQ(deliver(*a, bundle_job("collection")).outcome, DeliveryOutcome::ok);
  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].target, "/fhir");
  EXPECT_EQ(seen[1].target, "/fhir");
  EXPECT_EQ(seen[2].target, "/fhir/Bundle");
}

TEST_F(FhirRestOutboundTest, ServiceUnavailableIsRetryable) {
  TestServer server([](const Seen&) { return Reply{503, operation_outcome("maintenance window")}; });
  auto a = adapter(server.base());
  auto r = deliver(*a, patient_job());
  EXPECT_NE(r.outcome, DeliveryOutcome::ok);
  EXPECT_EQ(r.outcome, DeliveryOutcome::retryable);
  EXPECT_EQ(r.partner_code, "HTTP 503");
  EXPECT_EQ(r.detail, "maintenance window");
}

TEST_F(FhirRestOutboundTest, BadRequestIsPermanentWithDiagnostics) {
  TestServer server([](const Seen&) { return Reply{400, operation_outcome("Patient.identifier[0].value: NHS number check digit")}; });
  auto a = adapter(server.base());
  auto r = deliver(*a, patient_job());
  EXPECT_NE(r.outcome, DeliveryOutcome::ok);
  EXPECT_EQ(r.outcome, DeliveryOutcome::permanent);
  EXPECT_EQ(r.partner_code, "HTTP 400");
  EXPECT_EQ(r.detail, "Patient.identifier[0].value: NHS number check digit");
}

TEST_F(FhirRestOutboundTest, ClassifiesTryLaterStatusesAsRetryable) {
  int status = 0;
  TestServer server([&status](const Seen&) { return Reply{status, "plain text\nreason"}; });
  auto a = adapter(server.base());
  for (int s : {408, 425, 429, 500, 502}) {
    status = s;
    auto r = deliver(*a, patient_job());
    EXPECT_EQ(r.outcome, DeliveryOutcome::retryable) << s;
    EXPECT_EQ(r.partner_code, "HTTP " + std::to_string(s));
  }
  for (int s : {401, 403, 404, 409, 422}) {
    status = s;
    auto r = deliver(*a, patient_job());
    EXPECT_EQ(r.outcome, DeliveryOutcome::permanent) << s;
    EXPECT_EQ(r.detail, "plain text reason");
  }
}

TEST_F(FhirRestOutboundTest, LongErrorBodyIsClipped) {
  TestServer server([](const Seen&) { return Reply{422, std::string(5000, 'x')}; });
  auto a = adapter(server.base());
  auto r = deliver(*a, patient_job());
  EXPECT_EQ(r.outcome, DeliveryOutcome::permanent);
  EXPECT_EQ(r.detail, std::string(300, 'x'));
}

TEST_F(FhirRestOutboundTest, ConnectionRefusedIsRetryable) {
  unsigned short port = 0;
  {
    tcp::acceptor probe(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = probe.local_endpoint().port();
  }  // closed: nothing listens there now
  auto a = adapter("http://127.0.0.1:" + std::to_string(port) + "/fhir");
  auto r = deliver(*a, patient_job());
  EXPECT_NE(r.outcome, DeliveryOutcome::ok);
  EXPECT_EQ(r.outcome, DeliveryOutcome::retryable);
  EXPECT_EQ(r.partner_code, "");
  EXPECT_FALSE(r.detail.empty());
}

// Uses up the process's file descriptors (under a lowered soft limit) while alive.
class DescriptorsExhausted {
 public:
  DescriptorsExhausted() {
    getrlimit(RLIMIT_NOFILE, &saved_);
    rlimit low = saved_;
    low.rlim_cur = std::min<rlim_t>(saved_.rlim_cur, 4096);
    setrlimit(RLIMIT_NOFILE, &low);
    for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) held_.push_back(fd);
    exhausted_ = errno == EMFILE;
  }
  ~DescriptorsExhausted() {
    for (int fd : held_) ::close(fd);
    setrlimit(RLIMIT_NOFILE, &saved_);
  }
  bool exhausted() const { return exhausted_; }

 private:
  rlimit saved_{};
  std::vector<int> held_;
  bool exhausted_ = false;
};

TEST_F(FhirRestOutboundTest, OutOfDescriptorsIsTheBrokersFaultNotThePartners) {
  TestServer server([](const Seen&) { return Reply{201, ""}; });
  auto a = adapter(server.base());
  DeliveryResult r;
  {
    DescriptorsExhausted no_fds;
    ASSERT_TRUE(no_fds.exhausted());
    r = deliver(*a, patient_job());
  }
  EXPECT_EQ(r.outcome, DeliveryOutcome::retryable);
  EXPECT_TRUE(r.broker_fault);
  EXPECT_EQ(r.partner_code, "");
  EXPECT_NE(r.detail.find("broker: out of file descriptors"), std::string::npos) << r.detail;
  EXPECT_TRUE(server.requests().empty());
  // With descriptors back, the same partner takes the record: it was never the partner's failure.
  auto again = deliver(*a, patient_job());
  EXPECT_EQ(again.outcome, DeliveryOutcome::ok);
  EXPECT_FALSE(again.broker_fault);
}

TEST_F(FhirRestOutboundTest, ConnectionRefusedIsNotABrokerFault) {
  unsigned short port = 0;
  {
    tcp::acceptor probe(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = probe.local_endpoint().port();
  }
  auto a = adapter("http://127.0.0.1:" + std::to_string(port) + "/fhir");
  EXPECT_FALSE(deliver(*a, patient_job()).broker_fault);
}

TEST_F(FhirRestOutboundTest, TlsFailureIsRetryable) {
  TestServer server([](const Seen&) { return Reply{200, ""}; });  // speaks plain HTTP only
  auto base = server.base();
  auto a = adapter("https://" + base.substr(std::string("http://").size()));
  auto r = deliver(*a, patient_job());
  EXPECT_NE(r.outcome, DeliveryOutcome::ok);
  EXPECT_EQ(r.outcome, DeliveryOutcome::retryable);
  EXPECT_EQ(r.partner_code, "");
  EXPECT_TRUE(server.requests().empty());
}

TEST_F(FhirRestOutboundTest, TimeoutIsRetryable) {
  TestServer server([](const Seen&) { return Reply{200, "", std::chrono::seconds(30)}; });
  auto a = adapter(server.base(), std::chrono::milliseconds(300));
  auto r = deliver(*a, patient_job());
  EXPECT_NE(r.outcome, DeliveryOutcome::ok);
  EXPECT_EQ(r.outcome, DeliveryOutcome::retryable);
  EXPECT_EQ(r.partner_code, "");
  EXPECT_NE(r.detail.find("imeout"), std::string::npos) << r.detail;
}

TEST_F(FhirRestOutboundTest, ReusesTheConnection) {
  TestServer server([](const Seen&) { return Reply{200, ""}; });
  auto a = adapter(server.base());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(deliver(*a, patient_job()).outcome, DeliveryOutcome::ok);
  EXPECT_EQ(server.requests().size(), 5u);
  EXPECT_EQ(server.connections(), 1);
}

// A partner that closes each connection once it has answered, half the time saying so
// ("Connection: close") and half the time not (the kept-alive connection dies while idle). The
// next delivery must find out and open a new connection, not fail or stall.
TEST_F(FhirRestOutboundTest, PartnerClosingConnectionsDoesNotLoseDeliveries) {
  std::atomic<int> n{0};
  TestServer server([&n](const Seen&) {
    Reply r{200, ""};
    (n++ % 2 ? r.hang_up : r.say_close) = true;
    return r;
  });
  // A stall (a dead connection waited on) becomes a failed delivery at one second.
  auto a = adapter(server.base(), std::chrono::seconds(1));
  for (int i = 0; i < 12; ++i) {
    EXPECT_EQ(deliver(*a, patient_job()).outcome, DeliveryOutcome::ok) << "delivery " << i;
    if (i % 2) std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let the close arrive while idle
  }
  EXPECT_EQ(server.requests().size(), 12u);
  EXPECT_EQ(server.connections(), 12);
}

asio::awaitable<void> call_counting(OutboundAdapter& adapter, DeliveryJob job, int& ok) {
  auto r = co_await adapter.deliver(job);
  if (r.outcome == DeliveryOutcome::ok) ++ok;
}

TEST_F(FhirRestOutboundTest, ManyConcurrentDeliveriesShareFewConnections) {
  TestServer server([](const Seen&) { return Reply{200, ""}; });
  auto a = adapter(server.base());
  int ok = 0;
  auto rethrow = [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  };
  for (int i = 0; i < 40; ++i) {
    auto job = patient_job();
    job.message_id += std::to_string(i);
    asio::co_spawn(io, call_counting(*a, std::move(job), ok), rethrow);
  }
  io.run();
  EXPECT_EQ(ok, 40);
  EXPECT_EQ(server.requests().size(), 40u);
  EXPECT_LE(server.connections(), 4);  // max_connections
}

// stop() ends a delivery waiting on a slow partner, and one waiting for a free connection, at
// once: with a 20 s timeout, only the stop can have ended them.
TEST_F(FhirRestOutboundTest, StopEndsDeliveriesInFlightAndWaiting) {
  TestServer server([](const Seen&) { return Reply{200, "", std::chrono::seconds(30)}; });
  FhirRestOutboundSettings s;
  s.url = server.base();
  s.timeout = std::chrono::seconds(20);
  s.max_connections = 1;
  auto a = make_fhir_rest_outbound(s, io.get_executor());
  std::vector<DeliveryResult> results;
  auto keep = [&results](std::exception_ptr e, DeliveryResult r) {
    if (e) std::rethrow_exception(e);
    results.push_back(std::move(r));
  };
  auto first = patient_job(), second = patient_job();
  asio::co_spawn(io, a->deliver(first), keep);
  asio::co_spawn(io, a->deliver(second), keep);
  asio::steady_timer later(io, std::chrono::milliseconds(300));
  later.async_wait([&a](boost::system::error_code) { a->stop(); });
  io.run();
  ASSERT_EQ(results.size(), 2u);
  for (const auto& r : results) {
    EXPECT_EQ(r.outcome, DeliveryOutcome::retryable);
    EXPECT_EQ(r.detail, "adapter stopped");
  }
  EXPECT_EQ(server.requests().size(), 1u);  // the second never got a connection
}

TEST_F(FhirRestOutboundTest, DeliverAfterStopIsRetryable) {
  TestServer server([](const Seen&) { return Reply{200, ""}; });
  auto a = adapter(server.base());
  a->stop();
  auto r = deliver(*a, patient_job());
  EXPECT_NE(r.outcome, DeliveryOutcome::ok);
  EXPECT_EQ(r.outcome, DeliveryOutcome::retryable);
  EXPECT_EQ(server.requests().size(), 0u);
}

// Settings go through the real config loader, as they do in the broker.
class FhirRestOutboundSettingsTest : public ::testing::Test {
 protected:
  test::TempDir temp{"tellonce-outbound"};
  std::filesystem::path dir = temp.path();

  ConfigLoad load(const std::string& endpoint_lines) {
    auto path = dir / "tellonce.yaml";
    std::ofstream(path) << "partners:\n  - id: gp\n    kind: primary-care\n    ods: A81001\n    endpoint:\n"
                           "      type: fhir-rest\n" << endpoint_lines;
    AdapterRegistry registry;
    register_builtin_engines(registry);  // the config names a store and a queue engine too
    registry.add(fhir_rest_outbound_type());
    return load_config(path, registry);
  }

  static std::string paths(const ConfigLoad& l) {
    std::string out;
    for (const auto& p : l.problems) out += p.to_string() + "\n";
    return out;
  }
};

TEST_F(FhirRestOutboundSettingsTest, DefaultsAndValues) {
  auto l = load("      url: https://gp.example.nhs.uk/fhir/R4\n      timeout: 2s\n      bearer_token: abc\n");
  ASSERT_TRUE(l.config) << paths(l);
  const auto& s = settings_as<FhirRestOutboundSettings>(l.config->partners[0].endpoint->settings);
  EXPECT_EQ(s.url, "https://gp.example.nhs.uk/fhir/R4");
  EXPECT_EQ(s.timeout, std::chrono::seconds(2));
  EXPECT_EQ(s.connect_timeout, std::chrono::seconds(3));
  EXPECT_TRUE(s.verify_tls);
  EXPECT_EQ(s.bearer_token, "abc");
  EXPECT_EQ(s.max_connections, 16);
}

TEST_F(FhirRestOutboundSettingsTest, ReportsBadUrl) {
  auto l = load("      url: ftp://gp.example/fhir\n");
  EXPECT_FALSE(l.config);
  ASSERT_EQ(l.problems.size(), 1u) << paths(l);
  EXPECT_EQ(l.problems[0].path, "partners[0].endpoint.url");
}

TEST_F(FhirRestOutboundSettingsTest, ReportsMissingUrlBadLimitAndUnknownKey) {
  auto l = load("      max_connections: 0\n      verfy_tls: false\n");
  EXPECT_FALSE(l.config);
  auto text = paths(l);
  EXPECT_EQ(l.problems.size(), 3u) << text;
  EXPECT_NE(text.find("partners[0].endpoint.url"), std::string::npos) << text;
  EXPECT_NE(text.find("partners[0].endpoint.max_connections"), std::string::npos) << text;
  EXPECT_NE(text.find("partners[0].endpoint.verfy_tls"), std::string::npos) << text;
}

}  // namespace
}  // namespace tellonce
