#pragma once
// Client side of the Asio tests, for standalone Asio and Boost.Asio (see server.hpp for how the
// including file selects `test_net`): a client configuration that trusts an `AsioServer`, and one
// HTTP-like exchange over a blocking or a callback handshake. The coroutine flavour is in
// tests/asio/asio_stream.cpp (standalone Asio only).

#include <openssl/ssl.h>

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <tlsresume/asio.hpp>
#include <tlsresume/tlsresume.hpp>

#include "server.hpp"

namespace test_asio {

struct Tag {};
struct OtherTag {};
using Ctx = tlsresume::Context<Tag>;
using Cache = tlsresume::SessionCache<Tag>;
using Stream = test_net::ssl::stream<test_net::ip::tcp::socket>;

/// What the client saw on one exchange.
struct Exchange {
  bool offered = false;         ///< a session from the cache was offered
  bool reused = false;          ///< the client's `SSL_session_reused`
  std::size_t received = 0;     ///< sessions this connection received
  tlsresume::ProtocolVersion version = tlsresume::ProtocolVersion::unknown;
  std::string response;         ///< the whole response (up to the server's close_notify)
  bool verify_callback_called = false;
};

inline const std::string request = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

/// An Asio client context that verifies the server (`verify_peer`) and trusts `server`'s CA
/// (`add_certificate_authority`), made with the `method` given (a client method by default).
inline test_net::ssl::context client_asio_context(const AsioServer& server,
                                                  test_net::ssl::context::method method = test_net::ssl::context::tls_client) {
  test_net::ssl::context asio_ctx(method);
  asio_ctx.set_verify_mode(test_net::ssl::verify_peer);
  const std::string pem = server.ca_pem();
  asio_ctx.add_certificate_authority(test_net::buffer(pem));
  return asio_ctx;
}

/// How a blocking exchange ends.
enum class Ending {
  clean,             ///< the server's close_notify is read (`eof`), then `shutdown` sends ours
  no_client_notify,  ///< the server's close_notify is read, the stream is dropped without `shutdown`
  truncated,         ///< the server closes without close_notify (`stream_truncated`), then `shutdown`
};

/// One exchange with a blocking handshake: connect, `resume_from`, `handshake`, write the request,
/// read to the end of the response, and close as `ending` says.
template <class C, class K>
Exchange exchange_blocking(test_net::io_context& io, test_net::ssl::context& asio_ctx, const C& ctx, K& cache,
                           std::string_view host, std::uint16_t port, Ending ending = Ending::clean) {
  Stream stream(io, asio_ctx);
  stream.next_layer().connect(test_net::ip::tcp::endpoint(test_net::ip::make_address("127.0.0.1"), port));
  auto r = tlsresume::asio::resume_from(stream, ctx, cache, host, port);
  Exchange out;
  out.offered = r.offered();
  stream.handshake(test_net::ssl::stream_base::client);
  test_net::write(stream, test_net::buffer(request));
  auto ec = test_net::error::make_error_code(test_net::error::eof);
  ec.clear();
  test_net::read(stream, test_net::dynamic_buffer(out.response), ec);
  if (ending == Ending::truncated) {
    CHECK(ec == test_net::ssl::error::stream_truncated);  // Asio's word for a TCP close without close_notify
  } else {
    CHECK(ec == test_net::error::eof);  // the server's close_notify
  }
  if (ending == Ending::clean) {
    stream.shutdown(ec);
    CHECK_FALSE(ec);
  } else if (ending == Ending::truncated) {
    stream.shutdown(ec);  // sends close_notify; the peer is gone, so an error is expected and harmless
  }
  out.reused = r.session_reused();
  out.received = r.sessions_received();
  out.version = r.protocol_version();
  return out;
}

/// The same exchange with completion callbacks on `io` (run by the caller).
template <class C, class K> class CallbackExchange : public std::enable_shared_from_this<CallbackExchange<C, K>> {
 public:
  CallbackExchange(test_net::io_context& io, test_net::ssl::context& asio_ctx, const C& ctx, K& cache,
                   std::string host, std::uint16_t port, Exchange& out)
      : stream_(io, asio_ctx), ctx_(ctx), cache_(cache), host_(std::move(host)), port_(port), out_(out) {}

  void start() {
    auto self = this->shared_from_this();
    stream_.next_layer().async_connect(
        test_net::ip::tcp::endpoint(test_net::ip::make_address("127.0.0.1"), port_), [self](const auto& ec) {
          REQUIRE_FALSE(ec);
          self->r_.emplace(tlsresume::asio::resume_from(self->stream_, self->ctx_, self->cache_, self->host_, self->port_));
          self->out_.offered = self->r_->offered();
          self->stream_.async_handshake(test_net::ssl::stream_base::client, [self](const auto& ec2) {
            REQUIRE_FALSE(ec2);
            self->write();
          });
        });
  }

 private:
  void write() {
    auto self = this->shared_from_this();
    test_net::async_write(stream_, test_net::buffer(request), [self](const auto& ec, std::size_t) {
      REQUIRE_FALSE(ec);
      test_net::async_read(self->stream_, test_net::dynamic_buffer(self->out_.response),
                           [self](const auto& ec2, std::size_t) {
                             CHECK(ec2 == test_net::error::eof);
                             self->stream_.async_shutdown([self](const auto& ec3) {
                               CHECK_FALSE(ec3);
                               self->out_.reused = self->r_->session_reused();
                               self->out_.received = self->r_->sessions_received();
                               self->out_.version = self->r_->protocol_version();
                             });
                           });
    });
  }

  Stream stream_;
  const C& ctx_;
  K& cache_;
  std::string host_;
  std::uint16_t port_;
  Exchange& out_;
  std::optional<tlsresume::asio::Resumption<C>> r_;
};

template <class C, class K>
Exchange exchange_callback(test_net::io_context& io, test_net::ssl::context& asio_ctx, const C& ctx, K& cache,
                           std::string_view host, std::uint16_t port) {
  Exchange out;
  std::make_shared<CallbackExchange<C, K>>(io, asio_ctx, ctx, cache, std::string(host), port, out)->start();
  io.restart();
  io.run();
  return out;
}

/// Whether `cache` holds at least one session, and every one under `key`.
inline bool filed_only_under(const Cache& cache, const tlsresume::PeerKey& key) {
  std::size_t under_key = 0;
  std::size_t other = 0;
  cache.for_each([&](const tlsresume::PeerKey& k, const Cache::session_type&, auto) { ++(k == key ? under_key : other); });
  return under_key > 0 && other == 0;
}

/// The server's verdict as it wrote it into the response body.
inline bool server_said_resumed(const std::string& response) {
  REQUIRE(response.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  const bool yes = response.find("server resumed=yes") != std::string::npos;
  const bool no = response.find("server resumed=no") != std::string::npos;
  REQUIRE(yes != no);
  return yes;
}

/// Checks the server's own record of the last connection against the client's view.
inline void check_server_record(const AsioServer& server, std::size_t connections, bool resumed, int version) {
  const auto records = server.records();
  REQUIRE(records.size() == connections);
  const ServerRecord& last = records.back();
  CHECK(last.handshake_ok);
  CHECK(last.reused == resumed);
  CHECK(last.version == version);
}

/// The whole check of one handshake style: a full handshake, then a resumed one, confirmed by
/// the client, the server (its SSL_session_reused, in its record and in its answer) and the cache.
template <class Fetch> void check_second_connection_resumes(tlsresume::ProtocolVersion max, Fetch fetch) {
  tlsresume::testing::ServerOptions options;
  options.max_version = max;
  AsioServer server(options);
  test_net::io_context io;
  auto asio_ctx = client_asio_context(server);
  auto ctx = tlsresume::asio::share_context<Tag>(asio_ctx);
  Cache cache;
  const bool tls13 = max == tlsresume::ProtocolVersion::tls1_3;
  const int version = static_cast<int>(max);

  const Exchange first = fetch(io, asio_ctx, ctx, cache, server.port());
  CHECK_FALSE(first.offered);
  CHECK_FALSE(first.reused);
  CHECK_FALSE(server_said_resumed(first.response));
  check_server_record(server, 1, false, version);
  CHECK(static_cast<int>(first.version) == version);
  // TLS 1.3: the LocalServer's two tickets, processed while the response was read.
  CHECK(first.received == (tls13 ? 2U : 1U));
  auto s = cache.stats();
  CHECK(s.misses == 1);
  CHECK(s.hits == 0);
  CHECK(s.stored == (tls13 ? 2U : 1U));
  CHECK(s.sessions == (tls13 ? 2U : 1U));

  const Exchange second = fetch(io, asio_ctx, ctx, cache, server.port());
  CHECK(second.offered);
  CHECK(second.reused);
  CHECK(server_said_resumed(second.response));
  check_server_record(server, 2, true, version);
  s = cache.stats();
  CHECK(s.misses == 1);
  CHECK(s.hits == 1);
  CHECK(s.taken == (tls13 ? 1U : 0U));
  CHECK(s.reused == (tls13 ? 0U : 1U));
  CHECK(s.invalidated == 0);
  CHECK(server.offers().offered_more_than_once == 0);
}

}  // namespace test_asio
