// The real broker under a low descriptor limit (ulimit -n 300), flooded with idle connections:
// the listener stops at its cap, and the descriptors kept in reserve still carry a record to
// its partner. Before the cap, the flood took every descriptor and healthy partners had their
// records dead-lettered.
#include "harness.hpp"
#include "records.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

namespace tellonce::itest {
namespace {

using namespace std::chrono_literals;

// A connected TCP socket that sends nothing; -1 when connect failed.
int open_idle_connection(unsigned short port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Reads whatever the server sends until it closes (or 10 s pass).
std::string read_until_closed(int fd) {
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string got;
  char buf[4096];
  for (;;) {
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

TEST(DescriptorLimits, IdleConnectionFloodNeitherStarvesDeliveryNorBlamesThePartner) {
  TempDir dir;
  Sink gp(dir.path(), "gp-a", 0);
  std::string config = one_route_config(gp.port(), "  concurrency_per_destination: 4\n"
                                                  "  retry: { keep_trying_for: 1m, initial_backoff: 100ms, max_backoff: 200ms }\n");
  write_file(dir.path() / "tellonce.yaml", config + "\n" + kTestOperatorsYaml);  // operators to sign in with
  // ulimit -n sets the hard limit too, so the broker cannot raise itself past 300.
  Process broker({"/bin/sh", "-c",
                  "ulimit -n 300 && exec \"$0\" serve --config \"$1\"", tellonce_binary().string(),
                  (dir.path() / "tellonce.yaml").string()},
                 dir.path() / "broker.log");
  auto listening = broker.wait_for_line("  listening 127.0.0.1:", 30s);
  ASSERT_TRUE(listening) << broker.output();
  auto port = static_cast<unsigned short>(std::stoi(listening->substr(listening->rfind(':') + 1)));

  // The partner's own connection is open before the flood, as an engine's pooled one would be.
  Client partner;
  std::string base = "http://127.0.0.1:" + std::to_string(port);
  ASSERT_EQ(partner.request("GET", base + "/fhir/metadata").status, 200);

  std::vector<int> idle;
  for (int i = 0; i < 400; ++i) {
    int fd = open_idle_connection(port);
    if (fd >= 0) idle.push_back(fd);
  }
  // Accepting is sequential: once a fresh connection is refused, the flood has been seen.
  int probe = open_idle_connection(port);
  ASSERT_GE(probe, 0);
  std::string request = "GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n\r\n";
  (void)::send(probe, request.data(), request.size(), MSG_NOSIGNAL);
  std::string refused = read_until_closed(probe);
  ::close(probe);
  // The 503 is best effort (the close may reset it away), but nothing else may be answered.
  EXPECT_EQ(refused.find("200 OK"), std::string::npos) << refused;
  if (!refused.empty()) {
    EXPECT_NE(refused.find("503"), std::string::npos) << refused;
  }

  auto r = partner.post_fhir(base + "/fhir/Patient", patient(nhs_number(7), "A81001"), "rtx");
  ASSERT_EQ(r.status, 202) << r.body;
  EXPECT_EQ(r.new_connections, 0) << "the pre-opened connection carried the record";
  std::string id = r.headers["x-tellonce-message-id"];
  ASSERT_TRUE(gp.wait_for(1, 20s)) << broker.output();
  EXPECT_EQ(gp.received_message_ids(), std::vector<std::string>{id});
  auto view = wait_for_state(partner, base, id, "delivered", 10s);
  EXPECT_EQ(json_string_at(view, "/state"), "delivered") << view;
  EXPECT_EQ(view.find("\"dead\""), std::string::npos) << view;

  auto log = broker.output();
  EXPECT_NE(log.find("open descriptor limit 300"), std::string::npos) << log;
  EXPECT_NE(log.find("refusing new ones"), std::string::npos) << log;
  for (int fd : idle) ::close(fd);
}

}  // namespace
}  // namespace tellonce::itest
