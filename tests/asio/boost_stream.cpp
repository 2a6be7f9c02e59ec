// tlsresume/asio.hpp with Boost.Asio: the same server as the standalone test (written once, in
// tests/asio/server.hpp), and clients with blocking and callback handshakes. Boost 1.74's
// coroutine support does not compile with g++ 12 in C++20, so this file includes no coroutine
// header (not <boost/asio.hpp>, which includes them all).

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>

namespace test_net = ::boost::asio;

#include <openssl/ssl.h>

#include <catch2/catch.hpp>

#include <cstdint>

#include <tlsresume/asio.hpp>
#include <tlsresume/tlsresume.hpp>

#include "client.hpp"
#include "server.hpp"

namespace {

using namespace test_asio;
using tlsresume::ProtocolVersion;
namespace net = boost::asio;

const auto blocking = [](net::io_context& io, net::ssl::context& asio_ctx, const Ctx& ctx, Cache& cache,
                         std::uint16_t port) { return exchange_blocking(io, asio_ctx, ctx, cache, "localhost", port); };
const auto callback = [](net::io_context& io, net::ssl::context& asio_ctx, const Ctx& ctx, Cache& cache,
                         std::uint16_t port) { return exchange_callback(io, asio_ctx, ctx, cache, "localhost", port); };

}  // namespace

TEST_CASE("boost.asio: blocking handshake, the second connection resumes (server and cache confirm)", "[asio][boost]") {
  const auto version = GENERATE(ProtocolVersion::tls1_3, ProtocolVersion::tls1_2);
  INFO("server up to " << tlsresume::to_string(version));
  check_second_connection_resumes(version, blocking);
}

TEST_CASE("boost.asio: callback async_handshake, the second connection resumes (server and cache confirm)",
          "[asio][boost]") {
  const auto version = GENERATE(ProtocolVersion::tls1_3, ProtocolVersion::tls1_2);
  INFO("server up to " << tlsresume::to_string(version));
  check_second_connection_resumes(version, callback);
}

TEST_CASE("boost.asio: three connections, no TLS 1.3 ticket offered twice", "[asio][boost][tls13]") {
  AsioServer server;
  net::io_context io;
  auto asio_ctx = client_asio_context(server);
  auto ctx = tlsresume::asio::share_context<Tag>(asio_ctx);
  Cache cache;
  const Exchange a = blocking(io, asio_ctx, ctx, cache, server.port());
  const Exchange b = callback(io, asio_ctx, ctx, cache, server.port());
  const Exchange c = blocking(io, asio_ctx, ctx, cache, server.port());
  CHECK_FALSE(a.reused);
  CHECK(b.reused);
  CHECK(c.reused);
  const auto records = server.records();
  REQUIRE(records.size() == 3);
  CHECK_FALSE(records[0].reused);
  CHECK(records[1].reused);
  CHECK(records[2].reused);
  CHECK(server.offers().tls13_tickets == 2);
  CHECK(server.offers().offered_more_than_once == 0);
  CHECK(filed_only_under(cache, ctx.key_for("localhost", server.port())));
}

TEST_CASE("boost.asio: a stream of another SSL_CTX is refused", "[asio][boost][contract]") {
  AsioServer server;
  net::io_context io;
  auto asio_ctx = client_asio_context(server);
  auto other_asio_ctx = client_asio_context(server);
  auto ctx = tlsresume::asio::share_context<Tag>(asio_ctx);
  Cache cache;
  Stream stream(io, other_asio_ctx);
  STATIC_REQUIRE(tlsresume::asio::ssl_stream<Stream>);
  STATIC_REQUIRE(tlsresume::asio::ssl_context<net::ssl::context>);
  CHECK_FALSE(tlsresume::asio::uses_context(stream, ctx));
  CHECK_THROWS_MATCHES(tlsresume::asio::resume_from(stream, ctx, cache, "localhost", server.port()), tlsresume::Error,
                       Catch::Predicate<tlsresume::Error>([](const tlsresume::Error& e) {
                         return e.code() == tlsresume::errc::context_mismatch;
                       }));
  CHECK(SSL_get_servername(stream.native_handle(), TLSEXT_NAMETYPE_host_name) == nullptr);
  CHECK(cache.stats().misses == 0);
}
