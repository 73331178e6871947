// Test support: a blocking HTTP client for servers on 127.0.0.1 (Beast, one connection per
// call, on the calling thread). Throws boost::system::system_error when the connection fails.
#pragma once

#include "tellonce/http_server.hpp"
#include "support/io_thread.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <string>

namespace tellonce::test {

inline HttpRequest make_request(http::verb verb, std::string target, std::string body = {},
                                std::string content_type = "application/fhir+json") {
  HttpRequest req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  if (!body.empty() || verb == http::verb::post) req.set(http::field::content_type, content_type);
  req.body() = std::move(body);
  req.prepare_payload();
  return req;
}

// One request on a fresh connection.
inline HttpResponse send(unsigned short port, const HttpRequest& req) {
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  s.connect({asio::ip::make_address("127.0.0.1"), port});
  http::write(s, req);
  boost::beast::flat_buffer buf;
  HttpResponse res;
  http::read(s, buf, res);
  return res;
}

}  // namespace tellonce::test
