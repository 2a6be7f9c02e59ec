#pragma once
// Shared test support: context tags, a client context that trusts a LocalServer, and an observer
// that sees when OpenSSL really frees a session (reference count reaching zero).

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <tlsresume/testing.hpp>
#include <tlsresume/tlsresume.hpp>

namespace test {

struct TagA {};
struct TagB {};
using CtxA = tlsresume::Context<TagA>;
using CtxB = tlsresume::Context<TagB>;
using ClientA = tlsresume::Client<CtxA>;
using ClientB = tlsresume::Client<CtxB>;

/// A client context that trusts `server`'s CA.
template <class Ctx = CtxA> Ctx client_context_for(const tlsresume::testing::LocalServer& server) {
  auto ctx = Ctx::create();
  ctx.add_trusted_certificate(server.ca_certificate());
  return ctx;
}

/// Observes the final free of sessions: `watch(s)` attaches a token to `s` through an ex_data
/// index of the test's own; its free callback runs only when OpenSSL's reference count of `s`
/// reaches zero (SSL_SESSION_free of the last reference).
class FreeObserver {
 public:
  struct Token {
    std::atomic<bool> freed{false};
  };

  /// Returns a token whose `freed` turns true when `s` is finally freed.
  static std::shared_ptr<Token> watch(SSL_SESSION* s) {
    auto token = std::make_shared<Token>();
    auto* holder = new std::shared_ptr<Token>(token);
    REQUIRE(SSL_SESSION_set_ex_data(s, index(), holder) == 1);
    return token;
  }

 private:
  static int index() {
    static const int idx = CRYPTO_get_ex_new_index(
        CRYPTO_EX_INDEX_SSL_SESSION, 0, nullptr, nullptr,
        // SSL_SESSION_dup copies ex_data: the copy gets no token of its own.
        [](CRYPTO_EX_DATA*, const CRYPTO_EX_DATA*, void** from_d, int, long, void*) -> int {
          *from_d = nullptr;
          return 1;
        },
        [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
          if (auto* holder = static_cast<std::shared_ptr<Token>*>(ptr)) {
            (*holder)->freed = true;
            delete holder;
          }
        });
    return idx;
  }
};

/// The three kinds of resumable session a LocalServer can hand out.
enum class Mode { tls13, tls12_tickets, tls12_session_ids };

inline const char* to_string(Mode m) {
  switch (m) {
    case Mode::tls13: return "TLS 1.3 tickets";
    case Mode::tls12_tickets: return "TLS 1.2 tickets";
    case Mode::tls12_session_ids: return "TLS 1.2 session ids";
  }
  return "?";
}

inline tlsresume::testing::ServerOptions server_options(tlsresume::ProtocolVersion max_version, bool tickets = true) {
  tlsresume::testing::ServerOptions options;
  options.max_version = max_version;
  options.tickets = tickets;
  return options;
}

inline tlsresume::testing::ServerOptions server_options(
    Mode mode, tlsresume::testing::KeyType key = tlsresume::testing::KeyType::ecdsa_p256) {
  auto options = server_options(mode == Mode::tls13 ? tlsresume::ProtocolVersion::tls1_3 : tlsresume::ProtocolVersion::tls1_2,
                                mode != Mode::tls12_session_ids);
  options.key_type = key;
  return options;
}

/// What one connection reported.
struct Outcome {
  bool client_reused = false;
  bool server_reused = false;
  tlsresume::ProtocolVersion version = tlsresume::ProtocolVersion::unknown;
  std::string cipher;
  std::size_t sessions = 0;  ///< sessions received on the connection
};

/// One connection closed cleanly on both sides: names the server `name` (if not empty), offers
/// `session` (if given), reads every ticket the server sent, then both sides send close_notify (a
/// session-id server keeps its session only then).
inline Outcome connect_clean(const CtxA& ctx, tlsresume::testing::LocalServer& server,
                             const tlsresume::BoundSession<TagA>* session = nullptr, std::string_view name = {}) {
  using namespace std::chrono_literals;
  ClientA client(ctx);
  if (!name.empty()) {
    client.set_server_name(name);
  }
  if (session != nullptr) {
    client.set_session(*session);
  }
  auto conn = server.handshake(client);
  Outcome out;
  out.client_reused = client.session_reused();
  out.server_reused = conn.session_reused();
  out.version = client.protocol_version();
  out.cipher = std::string(client.cipher_name());
  out.sessions = client.await_tickets(0ms, 2);
  client.shutdown();
  conn.shutdown();
  return out;
}

/// Runs `f`, which must throw a tlsresume::Error with code `expected` and leave OpenSSL's error
/// queue empty.
template <class F> void require_error(F&& f, tlsresume::errc expected) {
  bool thrown = false;
  try {
    std::forward<F>(f)();
  } catch (const tlsresume::Error& e) {
    thrown = true;
    CHECK(e.code() == tlsresume::make_error_code(expected));
    CHECK(e.code().category().name() == std::string_view("tlsresume"));
  }
  REQUIRE(thrown);
  REQUIRE(ERR_peek_error() == 0UL);
}


/// What one connection through a cache did.
struct Result {
  bool offered = false;        ///< resume_from found a session to offer
  bool client_reused = false;  ///< SSL_session_reused on the client
  bool server_reused = false;  ///< SSL_session_reused on the server: the authority
  tlsresume::ProtocolVersion version = tlsresume::ProtocolVersion::unknown;
  std::size_t sessions = 0;    ///< sessions the connection received
};

/// One connection to `server` through `cache` as the peer `key`, closed cleanly on both sides
/// after reading the tickets the server sent.
template <class C>
Result connect_with(const CtxA& ctx, C& cache, tlsresume::testing::LocalServer& server, const tlsresume::PeerKey& key) {
  using namespace std::chrono_literals;
  ClientA client(ctx);
  Result r;
  r.offered = client.resume_from(cache, key);
  auto conn = server.handshake(client);
  r.client_reused = client.session_reused();
  r.server_reused = conn.session_reused();
  r.version = client.protocol_version();
  r.sessions = client.await_tickets(0ms, 2);
  client.shutdown();
  conn.shutdown();
  return r;
}

/// `server_options(mode)` for a server whose certificate names `host`.
inline tlsresume::testing::ServerOptions named(std::string host, Mode mode = Mode::tls13) {
  auto options = server_options(mode);
  options.host = std::move(host);
  return options;
}

/// `server_options(mode)` for a server that requires and verifies a client certificate issued by
/// `client_ca` (kept by pointer: it must outlive the server).
inline tlsresume::testing::ServerOptions requesting_client_certificate(const tlsresume::testing::Certificate& client_ca,
                                                                       Mode mode = Mode::tls13) {
  auto options = server_options(mode);
  options.request_client_certificate = true;
  options.client_ca = &client_ca;
  return options;
}

/// A client context that trusts `server`'s CA and presents `leaf` as its client certificate.
template <class Ctx = CtxA>
Ctx client_context_for(const tlsresume::testing::LocalServer& server, const tlsresume::testing::Certificate& leaf) {
  auto ctx = client_context_for<Ctx>(server);
  ctx.use_client_certificate(leaf.cert.get(), leaf.key.get());
  return ctx;
}

}  // namespace test

/// Every error path must leave OpenSSL's error queue empty.
#define REQUIRE_ERROR_QUEUE_EMPTY() REQUIRE(ERR_peek_error() == 0UL)
