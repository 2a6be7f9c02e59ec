// tlsresume/asio.hpp with standalone Asio: an Asio TLS server on 127.0.0.1 (its own io_context
// thread) and clients using blocking, callback and C++20 coroutine handshakes. Every resumption is
// confirmed by the server side (`SSL_session_reused` on its SSL) and by the cache's counters.

#include <asio/connect.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/read_until.hpp>
#include <asio/redirect_error.hpp>
#include <asio/ssl.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

namespace test_net = ::asio;

#include <openssl/ssl.h>

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tlsresume/asio.hpp>
#include <tlsresume/testing.hpp>
#include <tlsresume/tlsresume.hpp>

#include "client.hpp"
#include "server.hpp"

namespace {

using namespace test_asio;
using tlsresume::ProtocolVersion;

/// One exchange in a C++20 coroutine: `co_await` connect, handshake, write, read, shutdown.
template <class C, class K>
asio::awaitable<void> exchange_coroutine(asio::ssl::context& asio_ctx, const C& ctx, K& cache, std::string host,
                                         std::uint16_t port, Exchange& out) {
  auto executor = co_await asio::this_coro::executor;
  Stream stream(executor, asio_ctx);
  co_await stream.next_layer().async_connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port),
                                             asio::use_awaitable);
  auto r = tlsresume::asio::resume_from(stream, ctx, cache, host, port);
  out.offered = r.offered();
  co_await stream.async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
  co_await asio::async_write(stream, asio::buffer(request), asio::use_awaitable);
  asio::error_code ec;
  co_await asio::async_read(stream, asio::dynamic_buffer(out.response), asio::redirect_error(asio::use_awaitable, ec));
  if (ec != asio::error::eof) {
    throw asio::system_error(ec, "async_read");
  }
  co_await stream.async_shutdown(asio::use_awaitable);
  out.reused = r.session_reused();
  out.received = r.sessions_received();
  out.version = r.protocol_version();
}

template <class C, class K>
Exchange run_coroutine(asio::io_context& io, asio::ssl::context& asio_ctx, const C& ctx, K& cache, std::string_view host,
                       std::uint16_t port) {
  Exchange out;
  std::exception_ptr failure;
  asio::co_spawn(io, exchange_coroutine(asio_ctx, ctx, cache, std::string(host), port, out),
                 [&failure](std::exception_ptr e) { failure = e; });
  io.restart();
  io.run();
  if (failure) {
    std::rethrow_exception(failure);
  }
  return out;
}

const auto blocking = [](asio::io_context& io, asio::ssl::context& asio_ctx, const Ctx& ctx, Cache& cache,
                         std::uint16_t port) { return exchange_blocking(io, asio_ctx, ctx, cache, "localhost", port); };
const auto callback = [](asio::io_context& io, asio::ssl::context& asio_ctx, const Ctx& ctx, Cache& cache,
                         std::uint16_t port) { return exchange_callback(io, asio_ctx, ctx, cache, "localhost", port); };
const auto coroutine = [](asio::io_context& io, asio::ssl::context& asio_ctx, const Ctx& ctx, Cache& cache,
                          std::uint16_t port) { return run_coroutine(io, asio_ctx, ctx, cache, "localhost", port); };

// A client set up for `server`: its Asio context, the shared tlsresume context, a cache.
struct Setup {
  explicit Setup(const AsioServer& server, asio::ssl::context::method method = asio::ssl::context::tls_client)
      : asio_ctx(client_asio_context(server, method)), ctx(tlsresume::asio::share_context<Tag>(asio_ctx)) {}
  asio::io_context io;
  asio::ssl::context asio_ctx;
  Ctx ctx;
  Cache cache;
};

tlsresume::testing::ServerOptions up_to(ProtocolVersion max) {
  tlsresume::testing::ServerOptions options;
  options.max_version = max;
  return options;
}

// resume_from is callable only with a stream, a tlsresume Context and a cache of the same tag.
template <class S, class C, class K>
concept can_resume = requires(S& s, const C& c, K& k) { tlsresume::asio::resume_from(s, c, k, "localhost", 443); };

}  // namespace

TEST_CASE("asio: blocking handshake, the second connection resumes (server and cache confirm)", "[asio]") {
  const auto version = GENERATE(ProtocolVersion::tls1_3, ProtocolVersion::tls1_2);
  INFO("server up to " << tlsresume::to_string(version));
  check_second_connection_resumes(version, blocking);
}

TEST_CASE("asio: callback async_handshake, the second connection resumes (server and cache confirm)", "[asio]") {
  const auto version = GENERATE(ProtocolVersion::tls1_3, ProtocolVersion::tls1_2);
  INFO("server up to " << tlsresume::to_string(version));
  check_second_connection_resumes(version, callback);
}

TEST_CASE("asio: coroutine async_handshake, the second connection resumes (server and cache confirm)", "[asio]") {
  const auto version = GENERATE(ProtocolVersion::tls1_3, ProtocolVersion::tls1_2);
  INFO("server up to " << tlsresume::to_string(version));
  check_second_connection_resumes(version, coroutine);
}

TEST_CASE("asio: no TLS 1.3 ticket is offered twice over five connections of mixed styles", "[asio][tls13]") {
  AsioServer server;
  Setup c(server);
  const std::vector<Exchange> rows = {
      blocking(c.io, c.asio_ctx, c.ctx, c.cache, server.port()),
      callback(c.io, c.asio_ctx, c.ctx, c.cache, server.port()),
      coroutine(c.io, c.asio_ctx, c.ctx, c.cache, server.port()),
      blocking(c.io, c.asio_ctx, c.ctx, c.cache, server.port()),
      coroutine(c.io, c.asio_ctx, c.ctx, c.cache, server.port()),
  };
  const auto records = server.records();
  REQUIRE(records.size() == rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    INFO("connection " << i + 1);
    CHECK(rows[i].offered == (i > 0));
    CHECK(rows[i].reused == (i > 0));
    CHECK(records[i].reused == (i > 0));
  }
  const auto offers = server.offers();
  CHECK(offers.tls13_tickets == 4);  // one per connection after the first
  CHECK(offers.distinct == 4);
  CHECK(offers.offered_more_than_once == 0);
  CHECK(offers.max_times_offered == 1);
  const auto s = c.cache.stats();
  CHECK(s.hits == 4);
  CHECK(s.taken == 4);
  CHECK(s.misses == 1);
}

TEST_CASE("asio: sessions are filed under Context::key_for(host, port)", "[asio]") {
  AsioServer server;
  Setup c(server);
  {
    Stream stream(c.io, c.asio_ctx);
    stream.next_layer().connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()));
    const auto r = tlsresume::asio::resume_from(stream, c.ctx, c.cache, "LocalHost.", server.port());
    CHECK(r.key() == c.ctx.key_for("localhost", server.port()));
    CHECK(r.key().sni() == "localhost");
    stream.handshake(asio::ssl::stream_base::client);
    asio::write(stream, asio::buffer(request));
    std::string response;
    asio::error_code ec;
    asio::read(stream, asio::dynamic_buffer(response), ec);
    stream.shutdown(ec);
    CHECK(r.sessions_received() == 2);
  }
  const auto key = c.ctx.key_for("localhost", server.port());
  std::size_t filed = 0;
  c.cache.for_each([&](const tlsresume::PeerKey& k, const Cache::session_type&, auto) {
    CHECK(k == key);
    ++filed;
  });
  CHECK(filed == 2);

  // Another name for the same server and port is another key: not offered, a full handshake.
  const Exchange by_ip = exchange_blocking(c.io, c.asio_ctx, c.ctx, c.cache, "127.0.0.1", server.port());
  CHECK_FALSE(by_ip.offered);
  CHECK_FALSE(by_ip.reused);
  CHECK_FALSE(server.records().back().reused);
  // And the key's own sessions are still there.
  const Exchange again = blocking(c.io, c.asio_ctx, c.ctx, c.cache, server.port());
  CHECK(again.offered);
  CHECK(again.reused);
  CHECK(server.records().back().reused);
}

TEST_CASE("asio: a stream of another SSL_CTX is refused, and the stream is left untouched", "[asio][contract]") {
  AsioServer server;
  Setup c(server);
  auto other_asio_ctx = client_asio_context(server);
  Stream stream(c.io, other_asio_ctx);
  CHECK_FALSE(tlsresume::asio::uses_context(stream, c.ctx));
  try {
    (void)tlsresume::asio::resume_from(stream, c.ctx, c.cache, "localhost", server.port());
    FAIL("resume_from accepted a stream of another SSL_CTX");
  } catch (const tlsresume::Error& e) {
    CHECK(e.code() == tlsresume::errc::context_mismatch);
    CHECK_THAT(e.what(), Catch::Contains("another SSL_CTX") && Catch::Contains("share_context"));
  }
  CHECK(SSL_get_servername(stream.native_handle(), TLSEXT_NAMETYPE_host_name) == nullptr);
  CHECK(SSL_get_session(stream.native_handle()) == nullptr);
  const auto s = c.cache.stats();
  CHECK(s.hits + s.misses == 0);
  CHECK_FALSE(c.cache.bound_context().has_value());
  CHECK(ERR_peek_error() == 0);

  // The same stream with the context that shares its own Asio context works.
  auto other_ctx = tlsresume::asio::share_context<Tag>(other_asio_ctx);
  CHECK(tlsresume::asio::uses_context(stream, other_ctx));
  tlsresume::SessionCache<Tag> other_cache;
  const auto r = tlsresume::asio::resume_from(stream, other_ctx, other_cache, "localhost", server.port());
  CHECK_FALSE(r.offered());
}

TEST_CASE("asio: one cache serves one context, one Asio context has one tag", "[asio][contract]") {
  AsioServer server;
  Setup c(server);
  (void)blocking(c.io, c.asio_ctx, c.ctx, c.cache, server.port());  // binds the cache to c.ctx

  auto other_asio_ctx = client_asio_context(server);
  auto other_ctx = tlsresume::asio::share_context<Tag>(other_asio_ctx);
  Stream stream(c.io, other_asio_ctx);
  CHECK_THROWS_MATCHES(tlsresume::asio::resume_from(stream, other_ctx, c.cache, "localhost", server.port()),
                       tlsresume::Error, Catch::Predicate<tlsresume::Error>([](const tlsresume::Error& e) {
                         return e.code() == tlsresume::errc::wrong_context;
                       }));

  CHECK_THROWS_MATCHES(tlsresume::asio::share_context<OtherTag>(c.asio_ctx), tlsresume::Error,
                       Catch::Predicate<tlsresume::Error>([](const tlsresume::Error& e) {
                         return e.code() == tlsresume::errc::context_mismatch;
                       }));
  // Sharing again with the same tag is the same context.
  CHECK(tlsresume::asio::share_context<Tag>(c.asio_ctx).id() == c.ctx.id());

  // Compile-time rules: a cache of another tag, or a plain socket, does not compile.
  STATIC_REQUIRE(can_resume<Stream, Ctx, Cache>);
  STATIC_REQUIRE_FALSE(can_resume<Stream, Ctx, tlsresume::SessionCache<OtherTag>>);
  STATIC_REQUIRE_FALSE(can_resume<asio::ip::tcp::socket, Ctx, Cache>);
  STATIC_REQUIRE(tlsresume::asio::ssl_stream<Stream>);
  STATIC_REQUIRE(tlsresume::asio::ssl_context<asio::ssl::context>);
}

TEST_CASE("asio: resume_from is refused once the handshake started, or twice", "[asio][contract]") {
  AsioServer server;
  Setup c(server);
  Stream stream(c.io, c.asio_ctx);
  stream.next_layer().connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()));
  const auto r = tlsresume::asio::resume_from(stream, c.ctx, c.cache, "localhost", server.port());
  CHECK_THROWS_AS(tlsresume::asio::resume_from(stream, c.ctx, c.cache, "localhost", server.port()), tlsresume::Error);
  // A key made for another configuration is refused.
  auto other_asio_ctx = client_asio_context(server);
  auto other_ctx = tlsresume::asio::share_context<OtherTag>(other_asio_ctx);
  other_ctx.set_protocol_range(ProtocolVersion::tls1_3, ProtocolVersion::tls1_3);
  Stream fresh(c.io, c.asio_ctx);
  CHECK_THROWS_AS(tlsresume::asio::resume_from(fresh, c.ctx, c.cache, other_ctx.key_for("localhost", server.port())),
                  tlsresume::Error);
  stream.handshake(asio::ssl::stream_base::client);
  CHECK(r.key() == c.ctx.key_for("localhost", server.port()));
  asio::error_code ec;
  stream.shutdown(ec);
  CHECK_THROWS_AS(tlsresume::asio::resume_from(stream, c.ctx, c.cache, "localhost", server.port()), tlsresume::Error);
  CHECK(ERR_peek_error() == 0);
}

TEST_CASE("asio: a Resumption may outlive its stream, and a Context its Asio context", "[asio][ownership]") {
  AsioServer server;
  asio::io_context io;
  Cache cache;
  std::optional<Ctx> ctx;
  std::optional<tlsresume::asio::Resumption<Ctx>> kept;
  {
    auto asio_ctx = client_asio_context(server);
    ctx.emplace(tlsresume::asio::share_context<Tag>(asio_ctx));
    Stream stream(io, asio_ctx);
    stream.next_layer().connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()));
    kept.emplace(tlsresume::asio::resume_from(stream, *ctx, cache, "localhost", server.port()));
    stream.handshake(asio::ssl::stream_base::client);
    asio::write(stream, asio::buffer(request));
    std::string response;
    asio::error_code ec;
    asio::read(stream, asio::dynamic_buffer(response), ec);
    stream.shutdown(ec);
  }  // the stream and the Asio context are gone; the SSL and the SSL_CTX live on in our references
  CHECK_FALSE(kept->session_reused());
  CHECK(kept->sessions_received() == 2);
  CHECK(SSL_get_SSL_CTX(kept->native_handle()) == ctx->native_handle());
  CHECK(kept->client().session().has_value());
  kept.reset();  // the last SSL_free: a clean close, nothing invalidated
  const auto s = cache.stats();
  CHECK(s.sessions == 2);
  CHECK(s.invalidated == 0);
  CHECK(ctx->key_for("localhost", server.port()).config() == ctx->fingerprint());
}

TEST_CASE("asio: a generic tls context (SSL in server mode until the handshake) resumes as a client", "[asio]") {
  AsioServer server;
  Setup c(server, asio::ssl::context::tls);
  {
    Stream probe(c.io, c.asio_ctx);
    REQUIRE(SSL_is_server(probe.native_handle()) == 1);  // what the generic method gives
  }
  const Exchange first = blocking(c.io, c.asio_ctx, c.ctx, c.cache, server.port());
  const Exchange second = coroutine(c.io, c.asio_ctx, c.ctx, c.cache, server.port());
  CHECK_FALSE(first.reused);
  CHECK(second.offered);
  CHECK(second.reused);
  CHECK(server.records().back().reused);
}

TEST_CASE("asio: Asio's verify callback (its app data) and tlsresume's ex_data coexist", "[asio]") {
  AsioServer server;
  Setup c(server);
  const auto run = [&](int& calls) {
    Stream stream(c.io, c.asio_ctx);
    stream.set_verify_callback([&calls](bool preverified, asio::ssl::verify_context&) {
      ++calls;
      return preverified;
    });
    REQUIRE(SSL_get_app_data(stream.native_handle()) != nullptr);  // Asio's slot
    stream.next_layer().connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()));
    const auto r = tlsresume::asio::resume_from(stream, c.ctx, c.cache, "localhost", server.port());
    CHECK(SSL_get_app_data(stream.native_handle()) != nullptr);  // left alone
    stream.handshake(asio::ssl::stream_base::client);
    asio::write(stream, asio::buffer(request));
    std::string response;
    asio::error_code ec;
    asio::read(stream, asio::dynamic_buffer(response), ec);
    stream.shutdown(ec);
    return r.session_reused();
  };
  int full_calls = 0;
  int resumed_calls = 0;
  CHECK_FALSE(run(full_calls));
  CHECK(full_calls >= 2);  // the CA and the leaf
  CHECK(run(resumed_calls));
  CHECK(resumed_calls == 0);  // resumption verifies nothing (docs/cache.md, section 7)
  CHECK(server.records().back().reused);
}

TEST_CASE("asio: an unclean close loses the TLS 1.2 session, and the last TLS 1.3 ticket only", "[asio]") {
  const auto version = GENERATE(ProtocolVersion::tls1_3, ProtocolVersion::tls1_2);
  const bool tls13 = version == ProtocolVersion::tls1_3;
  INFO("server up to " << tlsresume::to_string(version));
  AsioServer server(up_to(version));
  Setup c(server);
  // The response is read (the server's close_notify arrives) but no close_notify is sent: the
  // stream and the Resumption are destroyed without shutdown. OpenSSL then invalidates the
  // connection's current session: the TLS 1.2 session, or under TLS 1.3 the last ticket received
  // (each NewSessionTicket becomes the client's current session).
  const Exchange first = exchange_blocking(c.io, c.asio_ctx, c.ctx, c.cache, "localhost", server.port(), Ending::no_client_notify);
  CHECK(first.received == (tls13 ? 2U : 1U));
  const auto s = c.cache.stats();
  CHECK(s.stored == (tls13 ? 2U : 1U));
  CHECK(s.invalidated == 1);
  CHECK(s.sessions == (tls13 ? 1U : 0U));
  const Exchange second = blocking(c.io, c.asio_ctx, c.ctx, c.cache, server.port());
  CHECK(second.offered == tls13);
  CHECK(second.reused == tls13);
  CHECK(server.records().back().reused == tls13);
}

TEST_CASE("asio: a server that closes without close_notify: the read is truncated, the session stays",
          "[asio]") {
  const auto version = GENERATE(ProtocolVersion::tls1_3, ProtocolVersion::tls1_2);
  INFO("server up to " << tlsresume::to_string(version));
  AsioServer server(up_to(version), false);
  Setup c(server);
  // Asio maps the TCP end to `ssl::error::stream_truncated` itself and never shows OpenSSL an
  // unexpected EOF, so no session is invalidated, provided the client sends its close_notify.
  const Exchange first = exchange_blocking(c.io, c.asio_ctx, c.ctx, c.cache, "localhost", server.port(), Ending::truncated);
  CHECK_FALSE(first.reused);
  CHECK(server_said_resumed(first.response) == false);
  CHECK(c.cache.stats().invalidated == 0);
  const Exchange second = exchange_blocking(c.io, c.asio_ctx, c.ctx, c.cache, "localhost", server.port(), Ending::truncated);
  CHECK(second.offered);
  CHECK(second.reused);
  CHECK(server.records().back().reused);
  CHECK(c.cache.stats().invalidated == 0);
}

TEST_CASE("asio: a handshake whose verification failed files nothing", "[asio][verify]") {
  AsioServer server;
  asio::io_context io;
  Cache cache;
  SECTION("verify_none: the connection proceeds, its sessions are not kept") {
    asio::ssl::context asio_ctx(asio::ssl::context::tls_client);  // Asio's default: verify_none
    asio_ctx.set_verify_mode(asio::ssl::verify_none);
    auto ctx = tlsresume::asio::share_context<Tag>(asio_ctx);  // the CA is not trusted
    const Exchange first = exchange_blocking(io, asio_ctx, ctx, cache, "localhost", server.port());
    CHECK(first.received == 2);
    CHECK(ctx.stats().sessions_unverified == 2);
    CHECK(cache.stats().stored == 0);
    const Exchange second = exchange_blocking(io, asio_ctx, ctx, cache, "localhost", server.port());
    CHECK_FALSE(second.offered);
    CHECK_FALSE(server.records().back().reused);
  }
  SECTION("verify_peer: a wrong host name fails the handshake") {
    auto asio_ctx = client_asio_context(server);
    auto ctx = tlsresume::asio::share_context<Tag>(asio_ctx);
    Stream stream(io, asio_ctx);
    stream.next_layer().connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), server.port()));
    (void)tlsresume::asio::resume_from(stream, ctx, cache, "not-localhost.example", server.port());
    asio::error_code ec;
    stream.handshake(asio::ssl::stream_base::client, ec);
    REQUIRE(ec);
    CHECK_THAT(ec.message(), Catch::Contains("certificate verify failed"));
    CHECK(SSL_get_verify_result(stream.native_handle()) == X509_V_ERR_HOSTNAME_MISMATCH);
    CHECK(cache.stats().stored == 0);
  }
}
