// libFuzzer target: bytes from a client through Beast's request parser configured as
// HttpServer::serve configures it (string body, the server's default header and body limits,
// read_header then read on one reused buffer, keep-alive requests back to back).
#include "tellonce/http_server.hpp"

#include <boost/beast/_experimental/test/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <cstddef>
#include <cstdint>

namespace beast = boost::beast;
namespace http = boost::beast::http;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const tellonce::HttpLimits limits;
  boost::asio::io_context io;
  beast::test::stream client(io);
  client.append(beast::string_view(reinterpret_cast<const char*>(data), size));
  client.close_remote();  // the peer has sent everything: reads end with eof
  beast::flat_buffer buffer;
  for (int requests = 0; requests < 64; ++requests) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
    parser.body_limit(limits.max_body_bytes);
    beast::error_code ec;
    http::read_header(client, buffer, parser, ec);
    if (!ec && !parser.is_done()) http::read(client, buffer, parser, ec);
    if (ec) break;
    const auto& req = parser.get();
    volatile std::size_t seen = req.target().size() + req.body().size() + req.method_string().size();
    (void)seen;
    if (parser.content_length() && *parser.content_length() != req.body().size()) __builtin_trap();
    if (!req.keep_alive()) break;
  }
  return 0;
}
