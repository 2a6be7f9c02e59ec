// The cache wired into Context and Client: `Client::resume_from(cache, key)` offers a session for
// the key and files what the connection receives under that key; OpenSSL's remove callback
// invalidates; a failed verification or a veto keeps nothing; a full TLS 1.3 handshake drops the
// TLS 1.2 session. Then the lessons of public clients' CVEs, each with a twin that changes nothing
// and must resume (so a cache that always misses fails them), and 1,000 interleaved connections
// over three servers, confirmed by the servers.
//
// Every handshake is a real one with a LocalServer over an in-memory BIO pair.

#include "support.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <tlsresume/cache.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using test::ClientA;
using test::CtxA;
using test::Mode;
using test::TagA;
using tlsresume::PeerKey;
using tlsresume::ProtocolVersion;
using tlsresume::SessionCache;
using tlsresume::testing::LocalServer;
using tlsresume::testing::ServerOptions;
using Cache = SessionCache<TagA>;

using test::connect_with;
using test::named;
using test::Result;

/// Whether a connection as `key` fails its handshake (certificate verification, most often).
template <class C> bool handshake_fails(const CtxA& ctx, C& cache, LocalServer& server, const PeerKey& key) {
  ClientA client(ctx);
  (void)client.resume_from(cache, key);
  try {
    (void)server.handshake(client);
  } catch (const tlsresume::Error&) {
    REQUIRE_ERROR_QUEUE_EMPTY();
    return true;
  }
  return false;
}

void require_resumed(const Result& r) {
  CHECK(r.offered);
  CHECK(r.client_reused);
  CHECK(r.server_reused);
}

void require_full(const Result& r) {
  CHECK_FALSE(r.offered);
  CHECK_FALSE(r.client_reused);
  CHECK_FALSE(r.server_reused);
}

void check_invariant(const tlsresume::CacheStats& s) {
  CHECK(s.stored == s.taken + s.expired + s.evicted + s.superseded + s.invalidated + s.erased + s.sessions);
  CHECK(s.hits == s.taken + s.reused);
}

const std::array<Mode, 3> all_modes{Mode::tls13, Mode::tls12_tickets, Mode::tls12_session_ids};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Wiring

TEST_CASE("resume_from: the first connection files sessions, the next one resumes from them", "[wiring]") {
  for (Mode mode : all_modes) {
    INFO(test::to_string(mode));
    LocalServer server(test::server_options(mode));
    auto ctx = test::client_context_for(server);
    Cache cache;
    const PeerKey key = ctx.key_for("localhost", 443);

    const Result first = connect_with(ctx, cache, server, key);
    require_full(first);
    const auto after_first = cache.stats();
    CHECK(after_first.stored == (mode == Mode::tls13 ? 2U : 1U));
    CHECK(after_first.misses == 1);
    CHECK(ctx.stats().recent_sessions == 0);  // filed into the cache, not the context's own store

    for (int i = 0; i < 5; ++i) {
      require_resumed(connect_with(ctx, cache, server, key));
    }
    const auto s = cache.stats();
    CHECK(s.hits == 5);
    if (mode == Mode::tls13) {
      CHECK(s.taken == 5);
    } else {
      CHECK(s.reused == 5);
    }
    check_invariant(s);
  }
}

TEST_CASE("resume_from names the server and offers the key's ALPN list", "[wiring]") {
  auto options = test::server_options(Mode::tls13);
  options.alpn = "h2";
  LocalServer server(options);
  auto ctx = test::client_context_for(server);
  Cache cache;
  const std::vector<std::string> alpn{"h2", "http/1.1"};
  const PeerKey key = PeerKey::make("LocalHost.", 443, ctx.fingerprint(), alpn);
  ClientA client(ctx);
  REQUIRE_FALSE(client.resume_from(cache, key));
  CHECK(client.requested_server_name() == "localhost");
  CHECK(client.peer_name() == "localhost");
  REQUIRE(client.cache_key() != nullptr);
  CHECK(*client.cache_key() == key);
  auto conn = server.handshake(client);
  const unsigned char* selected = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(client.native_handle(), &selected, &len);
  CHECK(std::string(reinterpret_cast<const char*>(selected), len) == "h2");
  client.await_tickets(0ms, 2);
  cache.for_each([](const PeerKey&, const tlsresume::BoundSession<TagA>& s, auto) {
    CHECK(s.alpn() == "h2");
    CHECK(s.requested_server_name() == "localhost");
  });
  CHECK(cache.stats().sessions == 2);
}

TEST_CASE("resume_from misuse is refused with a clear error", "[wiring][errors]") {
  LocalServer server(test::server_options(Mode::tls13));
  auto ctx = test::client_context_for(server);
  auto other_ctx = test::client_context_for(server);  // same configuration, another instance
  Cache cache;
  const PeerKey key = ctx.key_for("localhost", 443);

  SECTION("a key made for another configuration") {
    const PeerKey foreign = PeerKey::make("localhost", 443, tlsresume::ConfigFingerprint{});
    ClientA client(ctx);
    test::require_error([&] { (void)client.resume_from(cache, foreign); }, tlsresume::errc::invalid_argument);
  }
  SECTION("a key made before the configuration changed") {
    ctx.set_verify_peer(false);
    ClientA client(ctx);
    test::require_error([&] { (void)client.resume_from(cache, key); }, tlsresume::errc::invalid_argument);
  }
  SECTION("a cache that served another context instance") {
    REQUIRE_FALSE(connect_with(ctx, cache, server, key).offered);
    REQUIRE(cache.bound_context() == ctx.id());
    tlsresume::Client<CtxA> client(other_ctx);
    test::require_error([&] { (void)client.resume_from(cache, other_ctx.key_for("localhost", 443)); },
                        tlsresume::errc::wrong_context);
  }
  SECTION("set_server_name or a second resume_from after resume_from") {
    ClientA client(ctx);
    (void)client.resume_from(cache, key);
    test::require_error([&] { client.set_server_name("localhost"); }, tlsresume::errc::invalid_argument);
    test::require_error([&] { (void)client.resume_from(cache, key); }, tlsresume::errc::invalid_argument);
  }
  SECTION("resume_from after the handshake started") {
    ClientA client(ctx);
    client.set_server_name("localhost");
    auto conn = server.handshake(client);
    test::require_error([&] { (void)client.resume_from(cache, key); }, tlsresume::errc::invalid_argument);
  }
  CHECK(cache.stats().sessions <= 2);
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("an unclean close drops the connection's session from the cache (remove callback)", "[wiring][tls12]") {
  for (Mode mode : {Mode::tls12_tickets, Mode::tls12_session_ids}) {
    INFO(test::to_string(mode));
    LocalServer server(test::server_options(mode));
    auto ctx = test::client_context_for(server);
    Cache cache;
    const PeerKey key = ctx.key_for("localhost", 443);
    {
      ClientA client(ctx);
      client.resume_from(cache, key);
      auto conn = server.handshake(client);
      REQUIRE(cache.stats().sessions == 1);
      // no shutdown(): SSL_free marks the session bad and calls the remove callback
    }
    const auto s = cache.stats();
    CHECK(s.sessions == 0);
    CHECK(s.invalidated == 1);
    CHECK(ctx.stats().sessions_removed >= 1);
    require_full(connect_with(ctx, cache, server, key));
    check_invariant(cache.stats());
  }
}

TEST_CASE("an unclean close of a resumed TLS 1.2 connection drops the reused session", "[wiring][tls12]") {
  LocalServer server(test::server_options(Mode::tls12_session_ids));
  auto ctx = test::client_context_for(server);
  Cache cache;
  const PeerKey key = ctx.key_for("localhost", 443);
  require_full(connect_with(ctx, cache, server, key));
  {
    ClientA client(ctx);
    REQUIRE(client.resume_from(cache, key));
    auto conn = server.handshake(client);
    REQUIRE(conn.session_reused());
  }
  CHECK(cache.stats().sessions == 0);
  CHECK(cache.stats().invalidated == 1);
}

TEST_CASE("veto_caching drops what the connection filed and keeps what arrives later", "[wiring][veto]") {
  SECTION("TLS 1.2: the session filed during the handshake is removed") {
    LocalServer server(test::server_options(Mode::tls12_tickets));
    auto ctx = test::client_context_for(server);
    Cache cache;
    const PeerKey key = ctx.key_for("localhost", 443);
    ClientA client(ctx);
    client.resume_from(cache, key);
    auto conn = server.handshake(client);
    REQUIRE(cache.stats().sessions == 1);
    client.veto_caching();
    CHECK(client.caching_vetoed());
    const auto s = cache.stats();
    CHECK(s.sessions == 0);
    CHECK(s.vetoed == 1);
    CHECK(s.invalidated == 1);
    client.shutdown();
    conn.shutdown();
  }
  SECTION("TLS 1.3: tickets that arrive after the veto are not kept") {
    LocalServer server(test::server_options(Mode::tls13));
    auto ctx = test::client_context_for(server);
    Cache cache;
    const PeerKey key = ctx.key_for("localhost", 443);
    ClientA client(ctx);
    client.resume_from(cache, key);
    auto conn = server.handshake(client);
    client.veto_caching();
    CHECK(client.await_tickets(0ms, 2) == 2);
    CHECK(cache.stats().sessions == 0);
    CHECK(cache.stats().stored == 0);
    CHECK(ctx.stats().sessions_vetoed == 2);
  }
  SECTION("TLS 1.3: tickets filed before the veto are removed") {
    LocalServer server(test::server_options(Mode::tls13));
    auto ctx = test::client_context_for(server);
    Cache cache;
    const PeerKey key = ctx.key_for("localhost", 443);
    ClientA client(ctx);
    client.resume_from(cache, key);
    auto conn = server.handshake(client);
    REQUIRE(client.await_tickets(0ms, 2) == 2);
    REQUIRE(cache.stats().sessions == 2);
    client.veto_caching();
    CHECK(cache.stats().sessions == 0);
    CHECK(cache.stats().invalidated == 2);
    // The twin: an unvetoed connection to the same peer is kept and resumes.
    require_full(connect_with(ctx, cache, server, key));
    require_resumed(connect_with(ctx, cache, server, key));
  }
}

TEST_CASE("a full TLS 1.3 handshake drops the peer's TLS 1.2 session (no downgrade by resumption)",
          "[wiring][tls12][tls13]") {
  // The same peer name and port, first served with TLS 1.2 only, then upgraded to TLS 1.3.
  LocalServer old_server(test::server_options(Mode::tls12_tickets));
  LocalServer new_server(test::server_options(Mode::tls13));
  auto ctx = test::client_context_for(old_server);
  ctx.add_trusted_certificate(new_server.ca_certificate());
  Cache cache;
  const PeerKey key = ctx.key_for("localhost", 443);
  require_full(connect_with(ctx, cache, old_server, key));
  REQUIRE(cache.stats().sessions == 1);

  const Result upgraded = connect_with(ctx, cache, new_server, key);
  CHECK(upgraded.offered);  // the TLS 1.2 session was offered ...
  CHECK_FALSE(upgraded.server_reused);  // ... and not used: a full TLS 1.3 handshake
  CHECK(upgraded.version == ProtocolVersion::tls1_3);
  const auto s = cache.stats();
  CHECK(s.superseded == 1);
  CHECK(s.sessions == 2);  // the two TLS 1.3 tickets only
  std::size_t tls12 = 0;
  cache.for_each([&](const PeerKey&, const tlsresume::BoundSession<TagA>& session, auto) {
    tls12 += session.protocol_version() == ProtocolVersion::tls1_2 ? 1 : 0;
  });
  CHECK(tls12 == 0);
  require_resumed(connect_with(ctx, cache, new_server, key));
}

TEST_CASE("tickets from a resumed connection inherit the original full handshake's time", "[wiring][tls13][expiry]") {
  LocalServer server(test::server_options(Mode::tls13));
  auto ctx = test::client_context_for(server);
  Cache cache;
  const PeerKey key = ctx.key_for("localhost", 443);
  require_full(connect_with(ctx, cache, server, key));
  std::set<Cache::time_point> originals;
  cache.for_each([&](const PeerKey&, const auto&, Cache::time_point t) { originals.insert(t); });
  REQUIRE(originals.size() == 1);
  const auto original = *originals.begin();
  for (int i = 0; i < 3; ++i) {
    require_resumed(connect_with(ctx, cache, server, key));
  }
  std::size_t seen = 0;
  cache.for_each([&](const PeerKey&, const tlsresume::BoundSession<TagA>& s, Cache::time_point t) {
    ++seen;
    CHECK(t == original);
    CHECK(s.creation_time() >= std::chrono::floor<std::chrono::seconds>(original));
  });
  CHECK(seen >= 2);
}

TEST_CASE("a cache destroyed while its connections run is safe", "[wiring][lifetime]") {
  LocalServer server(test::server_options(Mode::tls13));
  auto ctx = test::client_context_for(server);
  ClientA client(ctx);
  std::weak_ptr<tlsresume::detail::CacheSink> sink;
  {
    Cache cache;
    client.resume_from(cache, ctx.key_for("localhost", 443));
    sink = cache.attach(ctx.id());
  }
  auto conn = server.handshake(client);
  CHECK(client.await_tickets(0ms, 2) == 2);  // filed into the orphaned store
  CHECK_FALSE(sink.expired());               // kept alive by the connection
  client.reset();                            // the connection's state goes, and the store with it
  CHECK(sink.expired());
}

TEST_CASE("a moved cache keeps filing and serving", "[wiring]") {
  LocalServer server(test::server_options(Mode::tls13));
  auto ctx = test::client_context_for(server);
  Cache first;
  const PeerKey key = ctx.key_for("localhost", 443);
  require_full(connect_with(ctx, first, server, key));
  Cache second = std::move(first);
  require_resumed(connect_with(ctx, second, server, key));
  CHECK(second.stats().stored >= 3);
}

// ---------------------------------------------------------------------------------------------
// Lessons. Each: a first connection fills the cache, something changes (or, in the twin,
// nothing does), and the next connection must not (twin: must) resume, as the server confirms.

TEST_CASE("why the name is in the key: OpenSSL resumes with no verification at all", "[lesson]") {
  // The fact the cache is built on, shown with raw OpenSSL: a session verified for "localhost"
  // resumes after SSL_set1_host("evil.example"), and the verify callback is not even called.
  LocalServer server(test::server_options(Mode::tls13));
  auto ctx = test::client_context_for(server);
  Cache cache;
  require_full(connect_with(ctx, cache, server, ctx.key_for("localhost", 443)));
  auto session = cache.take(ctx.key_for("localhost", 443));
  REQUIRE(session);

  static std::atomic<int> verify_calls{0};
  verify_calls = 0;
  ClientA client(ctx);
  SSL_set_verify(client.native_handle(), SSL_VERIFY_PEER, [](int ok, X509_STORE_CTX*) {
    ++verify_calls;
    return ok;
  });
  client.set_server_name("evil.example");
  client.set_session(*session);
  auto conn = server.handshake(client);
  CHECK(conn.session_reused());
  CHECK(verify_calls == 0);
  // Through the cache, "evil.example" is another key: no session, a full handshake, which fails.
  CHECK(handshake_fails(ctx, cache, server, ctx.key_for("evil.example", 443)));
}

TEST_CASE("lesson: port", "[lesson]") {
  LocalServer server(test::server_options(Mode::tls13));
  auto ctx = test::client_context_for(server);
  Cache cache;
  require_full(connect_with(ctx, cache, server, ctx.key_for("localhost", 443)));
  SECTION("another port does not resume") { require_full(connect_with(ctx, cache, server, ctx.key_for("localhost", 8443))); }
  SECTION("twin: the same port resumes") { require_resumed(connect_with(ctx, cache, server, ctx.key_for("localhost", 443))); }
}

TEST_CASE("lesson: SNI", "[lesson]") {
  // The same server reached by name (SNI "localhost") and by address (no SNI: an IP literal).
  LocalServer server(test::server_options(Mode::tls13));
  auto ctx = test::client_context_for(server);
  Cache cache;
  require_full(connect_with(ctx, cache, server, ctx.key_for("localhost", 443)));
  SECTION("no SNI (IP literal) does not resume the session asked for with SNI") {
    require_full(connect_with(ctx, cache, server, ctx.key_for("127.0.0.1", 443)));
  }
  SECTION("twin: the same SNI, written differently, resumes") {
    require_resumed(connect_with(ctx, cache, server, ctx.key_for("LOCALHOST.", 443)));
  }
}

TEST_CASE("lesson: verified host name", "[lesson]") {
  // One server whose certificate names "a.test" only; the client knows it by two names.
  LocalServer server(named("a.test"));
  auto ctx = test::client_context_for(server);
  Cache cache;
  require_full(connect_with(ctx, cache, server, ctx.key_for("a.test", 443)));
  SECTION("a session verified for a.test is not offered to b.test, whose full handshake fails") {
    CHECK(handshake_fails(ctx, cache, server, ctx.key_for("b.test", 443)));
    CHECK(cache.stats().hits == 0);
  }
  SECTION("twin: a.test again resumes") { require_resumed(connect_with(ctx, cache, server, ctx.key_for("a.test", 443))); }
}

TEST_CASE("lesson: ALPN", "[lesson]") {
  auto options = test::server_options(Mode::tls13);
  options.alpn = "h2";
  LocalServer server(options);
  auto ctx = test::client_context_for(server);
  Cache cache;
  const std::vector<std::string> h2{"h2"};
  const std::vector<std::string> both{"h2", "http/1.1"};
  const std::vector<std::string> reversed{"http/1.1", "h2"};
  require_full(connect_with(ctx, cache, server, PeerKey::make("localhost", 443, ctx.fingerprint(), h2)));
  SECTION("another offered list does not resume") {
    require_full(connect_with(ctx, cache, server, PeerKey::make("localhost", 443, ctx.fingerprint(), both)));
  }
  SECTION("another order does not resume") {
    require_full(connect_with(ctx, cache, server, PeerKey::make("localhost", 443, ctx.fingerprint(), reversed)));
  }
  SECTION("no ALPN does not resume") {
    require_full(connect_with(ctx, cache, server, PeerKey::make("localhost", 443, ctx.fingerprint())));
  }
  SECTION("twin: the same list resumes, set through the context too") {
    ctx.set_alpn_protocols({"h2"});
    require_resumed(connect_with(ctx, cache, server, ctx.key_for("localhost", 443)));
  }
}

TEST_CASE("lesson: verify mode", "[lesson]") {
  LocalServer server(test::server_options(Mode::tls13));
  auto ctx = test::client_context_for(server);
  ctx.set_verify_peer(false);  // a session made while verification was off ...
  Cache cache;
  require_full(connect_with(ctx, cache, server, ctx.key_for("localhost", 443)));
  REQUIRE(cache.stats().sessions == 2);  // (the chain did verify: it is kept, under VERIFY_NONE)
  SECTION("... is not offered once verification is on") {
    ctx.set_verify_peer(true);
    require_full(connect_with(ctx, cache, server, ctx.key_for("localhost", 443)));
  }
  SECTION("twin: setting the same mode again resumes") {
    ctx.set_verify_peer(false);
    require_resumed(connect_with(ctx, cache, server, ctx.key_for("localhost", 443)));
  }
}

TEST_CASE("lesson: trust store contents", "[lesson]") {
  LocalServer server(test::server_options(Mode::tls13));
  auto ctx = test::client_context_for(server);
  Cache cache;
  require_full(connect_with(ctx, cache, server, ctx.key_for("localhost", 443)));
  SECTION("one more trusted CA does not resume") {
    auto extra = tlsresume::testing::make_ca("an extra CA");
    ctx.add_trusted_certificate(extra.cert.get());
    require_full(connect_with(ctx, cache, server, ctx.key_for("localhost", 443)));
  }
  SECTION("a store holding the same certificates is the same: twin resumes") {
    X509_STORE* fresh = X509_STORE_new();
    REQUIRE(fresh != nullptr);
    REQUIRE(X509_STORE_add_cert(fresh, server.ca_certificate()) == 1);
    REQUIRE(X509_STORE_set_default_paths(fresh) == 1);  // as Context::create loads them
    SSL_CTX_set_cert_store(ctx.native_handle(), fresh);  // takes ownership
    ctx.refresh_fingerprint();
    require_resumed(connect_with(ctx, cache, server, ctx.key_for("localhost", 443)));
  }
}

TEST_CASE("lesson: client certificate", "[lesson]") {
  auto client_ca = tlsresume::testing::make_ca("client CA for the lesson");
  auto alice = tlsresume::testing::make_leaf(client_ca, "alice");
  auto bob = tlsresume::testing::make_leaf(client_ca, "bob");
  LocalServer server(test::requesting_client_certificate(client_ca));
  auto ctx = test::client_context_for(server, alice);
  Cache cache;
  require_full(connect_with(ctx, cache, server, ctx.key_for("localhost", 443)));
  SECTION("another client certificate does not resume (curl CVE-2016-5419)") {
    ctx.use_client_certificate(bob.cert.get(), bob.key.get());
    require_full(connect_with(ctx, cache, server, ctx.key_for("localhost", 443)));
  }
  SECTION("twin: the same certificate set again resumes") {
    ctx.use_client_certificate(alice.cert.get(), alice.key.get());
    require_resumed(connect_with(ctx, cache, server, ctx.key_for("localhost", 443)));
  }
}

TEST_CASE("lesson: min version", "[lesson]") {
  LocalServer server(test::server_options(Mode::tls12_tickets));
  auto ctx = test::client_context_for(server);
  ctx.set_protocol_range(ProtocolVersion::tls1_2, ProtocolVersion::unknown);
  Cache cache;
  require_full(connect_with(ctx, cache, server, ctx.key_for("localhost", 443)));
  SECTION("a TLS 1.2 session is not offered once TLS 1.3 is required") {
    ctx.set_protocol_range(ProtocolVersion::tls1_3, ProtocolVersion::unknown);
    CHECK(handshake_fails(ctx, cache, server, ctx.key_for("localhost", 443)));  // server is TLS 1.2 only
    CHECK(cache.stats().hits == 0);
  }
  SECTION("twin: the same range set again resumes") {
    ctx.set_protocol_range(ProtocolVersion::tls1_2, ProtocolVersion::unknown);
    require_resumed(connect_with(ctx, cache, server, ctx.key_for("localhost", 443)));
  }
}

TEST_CASE("lesson: failed verification", "[lesson]") {
  // curl CVE-2024-0853: a handshake that completed although verification failed must not be
  // cached. A verify callback that returns 1 lets the handshake complete with a failed result.
  LocalServer server(test::server_options(Mode::tls13));
  LocalServer stranger(test::server_options(Mode::tls13));  // its CA is not trusted
  auto ctx = test::client_context_for(server);
  SSL_CTX_set_verify(ctx.native_handle(), SSL_VERIFY_PEER, [](int, X509_STORE_CTX*) { return 1; });
  ctx.refresh_fingerprint();
  Cache cache;
  SECTION("an unverified server's sessions are not kept") {
    const PeerKey key = ctx.key_for("localhost", 8443);
    const Result r = connect_with(ctx, cache, stranger, key);
    CHECK(r.sessions == 2);  // the tickets arrived ...
    CHECK(cache.stats().stored == 0);  // ... and none was kept
    CHECK(ctx.stats().sessions_unverified == 2);
    require_full(connect_with(ctx, cache, stranger, key));
  }
  SECTION("SSL_VERIFY_NONE with a failed chain keeps nothing either") {
    ctx.set_verify_peer(false);
    const PeerKey key = ctx.key_for("localhost", 8443);
    CHECK(connect_with(ctx, cache, stranger, key).sessions == 2);
    CHECK(cache.stats().stored == 0);
    require_full(connect_with(ctx, cache, stranger, key));
  }
  SECTION("twin: the verified server's sessions are kept and resume") {
    const PeerKey key = ctx.key_for("localhost", 443);
    require_full(connect_with(ctx, cache, server, key));
    CHECK(ctx.stats().sessions_unverified == 0);
    require_resumed(connect_with(ctx, cache, server, key));
  }
}

TEST_CASE("lesson: ticket filed under the connection's own key", "[lesson]") {
  // curl CVE-2021-22890: a TLS 1.3 ticket arrives after the handshake; a cache that files it under
  // "the last host connected to" gives a proxy's ticket to the origin. Two connections are
  // interleaved: both handshakes finish, then the *first* one reads its tickets last.
  LocalServer proxy(named("proxy.test"));
  LocalServer origin(named("origin.test"));
  auto ctx = test::client_context_for(proxy);
  ctx.add_trusted_certificate(origin.ca_certificate());
  Cache cache;
  const PeerKey proxy_key = ctx.key_for("proxy.test", 3128);
  const PeerKey origin_key = ctx.key_for("origin.test", 443);

  ClientA to_proxy(ctx);
  to_proxy.resume_from(cache, proxy_key);
  auto proxy_conn = proxy.handshake(to_proxy);
  ClientA to_origin(ctx);
  to_origin.resume_from(cache, origin_key);
  auto origin_conn = origin.handshake(to_origin);
  REQUIRE(to_origin.await_tickets(0ms, 2) == 2);
  REQUIRE(to_proxy.await_tickets(0ms, 2) == 2);  // arrives last

  auto names_of = [&](const PeerKey& key) {
    std::set<std::string> names;
    cache.for_each([&](const PeerKey& k, const tlsresume::BoundSession<TagA>& s, auto) {
      if (k == key) {
        X509* peer = SSL_SESSION_get0_peer(s.native_handle());
        REQUIRE(peer != nullptr);
        REQUIRE(X509_check_host(peer, "origin.test", 0, 0, nullptr) + X509_check_host(peer, "proxy.test", 0, 0, nullptr) == 1);
        names.insert(X509_check_host(peer, "origin.test", 0, 0, nullptr) == 1 ? "origin.test" : "proxy.test");
      }
    });
    return names;
  };
  CHECK(names_of(proxy_key) == std::set<std::string>{"proxy.test"});
  CHECK(names_of(origin_key) == std::set<std::string>{"origin.test"});
  to_proxy.shutdown();
  to_origin.shutdown();
  // Twin: each key resumes with its own server.
  require_resumed(connect_with(ctx, cache, origin, origin_key));
  require_resumed(connect_with(ctx, cache, proxy, proxy_key));
}

TEST_CASE("lesson: trust store changed after the key was made", "[lesson]") {
  // Go CVE-2025-68121: trust settings changed after the configuration was built, and resumption
  // still succeeded where a full handshake would fail.
  LocalServer server(test::server_options(Mode::tls13));
  auto ctx = test::client_context_for(server);
  Cache cache;
  const PeerKey old_key = ctx.key_for("localhost", 443);
  require_full(connect_with(ctx, cache, server, old_key));
  SECTION("a store that no longer trusts the server: no resumption, and the full handshake fails") {
    X509_STORE* distrusting = X509_STORE_new();  // trusts nothing
    REQUIRE(distrusting != nullptr);
    SSL_CTX_set_cert_store(ctx.native_handle(), distrusting);
    ctx.refresh_fingerprint();
    ClientA stale(ctx);
    test::require_error([&] { (void)stale.resume_from(cache, old_key); }, tlsresume::errc::invalid_argument);
    CHECK(handshake_fails(ctx, cache, server, ctx.key_for("localhost", 443)));
    CHECK(cache.stats().hits == 0);
  }
  SECTION("twin: refreshing without a change resumes with the old key") {
    ctx.refresh_fingerprint();
    require_resumed(connect_with(ctx, cache, server, old_key));
  }
}

// ---------------------------------------------------------------------------------------------
// 1,000 connections interleaved over three servers.

namespace {

struct RunCounts {
  std::size_t connections = 0;
  std::size_t offered = 0;
  std::size_t client_reused = 0;
  std::size_t server_reused = 0;
};

template <class C> RunCounts run_thousand(Mode mode, C& cache, std::array<LocalServer*, 3> servers, const CtxA& ctx) {
  const std::array<PeerKey, 3> keys{ctx.key_for("a.test", 443), ctx.key_for("b.test", 8443), ctx.key_for("c.test", 9443)};
  RunCounts counts;
  for (std::size_t i = 0; i < 1000; ++i) {
    const std::size_t s = (i * 7 + i / 3) % 3;  // interleaved, not round-robin
    const Result r = connect_with(ctx, cache, *servers[s], keys[s]);
    ++counts.connections;
    counts.offered += r.offered ? 1 : 0;
    counts.client_reused += r.client_reused ? 1 : 0;
    counts.server_reused += r.server_reused ? 1 : 0;
    if (mode == Mode::tls13) {
      REQUIRE(r.version == ProtocolVersion::tls1_3);
    } else {
      REQUIRE(r.version == ProtocolVersion::tls1_2);
    }
  }
  return counts;
}

}  // namespace

TEMPLATE_TEST_CASE("1,000 connections over 3 servers resume at least 997, as the servers confirm",
                   "[wiring][integration]", tlsresume::ThreadSafePolicy, tlsresume::ShardedPolicy,
                   tlsresume::SingleThreadPolicy) {
  for (Mode mode : all_modes) {
    INFO(test::to_string(mode));
    LocalServer a(named("a.test", mode));
    LocalServer b(named("b.test", mode));
    LocalServer c(named("c.test", mode));
    auto ctx = test::client_context_for(a);
    ctx.add_trusted_certificate(b.ca_certificate());
    ctx.add_trusted_certificate(c.ca_certificate());
    SessionCache<TagA, TestType> cache;

    const RunCounts counts = run_thousand(mode, cache, {&a, &b, &c}, ctx);
    const auto s = cache.stats();
    std::size_t server_resumed = 0;
    std::size_t offers = 0;
    std::size_t repeated = 0;
    for (LocalServer* server : {&a, &b, &c}) {
      server_resumed += server->resumed_handshakes();
      const auto o = server->offers();
      offers += mode == Mode::tls13 ? o.tls13_tickets : mode == Mode::tls12_tickets ? o.tls12_tickets : o.session_ids;
      repeated += o.offered_more_than_once;
      CHECK(o.malformed == 0);
    }
    UNSCOPED_INFO("client " << counts.client_reused << " server " << counts.server_reused << " offered "
                            << counts.offered << " hits " << s.hits << " taken " << s.taken << " reused "
                            << s.reused << " misses " << s.misses << " stored " << s.stored << " offers seen by servers "
                            << offers << " offered twice " << repeated);
    CHECK(counts.server_reused >= 997);
    CHECK(counts.client_reused == counts.server_reused);
    CHECK(server_resumed == counts.server_reused);
    CHECK(s.hits == counts.offered);
    CHECK(s.hits + s.misses == 1000);
    CHECK(offers == counts.offered);
    if (mode == Mode::tls13) {
      CHECK(s.taken == counts.server_reused);
      CHECK(repeated == 0);  // no ticket was ever offered twice
    } else {
      CHECK(s.reused == counts.server_reused);
    }
    check_invariant(s);
    CHECK(s.peers == 3);
    // Print the counts once for the closing note.
    WARN(tlsresume::to_string(mode == Mode::tls13 ? ProtocolVersion::tls1_3 : ProtocolVersion::tls1_2)
         << " " << test::to_string(mode) << ": client resumed " << counts.client_reused << ", server resumed "
         << counts.server_reused << ", cache hits " << s.hits << " (taken " << s.taken << ", reused " << s.reused
         << "), misses " << s.misses << ", stored " << s.stored << ", offers seen by servers " << offers
         << ", offered more than once " << repeated);
  }
}

TEMPLATE_TEST_CASE("threads share one context and one cache: tickets never go to two connections",
                   "[wiring][threads]", tlsresume::ThreadSafePolicy, tlsresume::ShardedPolicy) {
  // 4 threads x 150 connections over 3 servers, one shared Context and SessionCache. Under
  // ThreadSanitizer this covers the callbacks' path (new-session, remove) into the cache.
  LocalServer a(named("a.test"));
  LocalServer b(named("b.test"));
  LocalServer c(named("c.test"));
  auto ctx = test::client_context_for(a);
  ctx.add_trusted_certificate(b.ca_certificate());
  ctx.add_trusted_certificate(c.ca_certificate());
  SessionCache<TagA, TestType> cache;
  const std::array<LocalServer*, 3> servers{&a, &b, &c};
  const std::array<PeerKey, 3> keys{ctx.key_for("a.test", 443), ctx.key_for("b.test", 443), ctx.key_for("c.test", 443)};
  // One handshake per server first, in this thread: OpenSSL 3.0 caches a certificate's parsed
  // extensions (key identifiers) on its first use, writing under the X509's lock while other
  // threads may read them unlocked (ossl_x509v3_cache_extensions / X509_check_akid), which
  // ThreadSanitizer reports. Not our code; warming the certificates up avoids it.
  for (std::size_t s = 0; s < servers.size(); ++s) {
    require_full(connect_with(ctx, cache, *servers[s], keys[s]));
  }
  constexpr int threads = 4;
  constexpr int per_thread = 150;
  std::atomic<std::size_t> resumed{0};
  std::atomic<std::size_t> offered{0};
  std::atomic<std::size_t> failures{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        const std::size_t s = static_cast<std::size_t>(i + t) % 3;
        try {
          ClientA client(ctx);
          offered += client.resume_from(cache, keys[s]) ? 1 : 0;
          auto conn = servers[s]->handshake(client);
          resumed += conn.session_reused() ? 1 : 0;
          client.await_tickets(0ms, 2);
          client.shutdown();
          conn.shutdown();
        } catch (...) {
          ++failures;
        }
      }
    });
  }
  for (auto& th : pool) {
    th.join();
  }
  const auto s = cache.stats();
  std::size_t repeated = 0;
  std::size_t server_resumed = 0;
  for (LocalServer* server : servers) {
    repeated += server->offers().offered_more_than_once;
    server_resumed += server->resumed_handshakes();
  }
  INFO("resumed " << resumed << " offered " << offered << " hits " << s.hits << " taken " << s.taken);
  CHECK(failures == 0);
  CHECK(repeated == 0);  // no ticket offered twice, even across threads
  CHECK(server_resumed == resumed);
  CHECK(s.taken == offered);
  // A miss happens only while a peer's queue is empty (at the start, or when the threads drain
  // it faster than tickets arrive); every offered ticket resumes.
  CHECK(resumed == offered);
  CHECK(resumed >= threads * per_thread * 9 / 10);
  check_invariant(s);
}

TEST_CASE("imported sessions wait under their key id until a connection for that key claims them",
          "[wiring][import]") {
  for (Mode mode : {Mode::tls13, Mode::tls12_tickets}) {
    INFO(test::to_string(mode));
    LocalServer server(test::server_options(mode));
    auto ctx = test::client_context_for(server);
    const PeerKey key = ctx.key_for("localhost", 443);
    const PeerKey other = ctx.key_for("localhost", 8443);
    // Sessions exported from one cache ...
    Cache source;
    require_full(connect_with(ctx, source, server, key));
    std::vector<std::pair<tlsresume::BoundSession<TagA>, Cache::time_point>> exported;
    source.for_each([&](const PeerKey&, const tlsresume::BoundSession<TagA>& s, Cache::time_point original) {
      exported.emplace_back(ctx.copy_session(s), original);  // distinct objects, as a file load makes
    });
    REQUIRE_FALSE(exported.empty());
    // ... imported into another one under their key id (HMAC-SHA-256 under a salt).
    tlsresume::KeyIdSecret salt;
    salt.bytes[0] = std::byte{42};
    Cache cache;
    for (auto& [session, original] : exported) {
      CHECK(cache.import(salt, tlsresume::key_id(salt, key), session, original));
    }
    auto s = cache.stats();
    CHECK(s.imported == exported.size());
    CHECK(s.pending == exported.size());
    CHECK(s.sessions == 0);
    std::size_t visited = 0;
    cache.for_each_import([&](const tlsresume::KeyIdSecret& secret, const tlsresume::KeyId& id, const auto&, auto) {
      ++visited;
      CHECK(secret == salt);
      CHECK(id == tlsresume::key_id(salt, key));
    });
    CHECK(visited == exported.size());

    // Another key's id does not claim them: a full handshake.
    require_full(connect_with(ctx, cache, server, other));
    CHECK(cache.stats().pending == exported.size());
    // The key itself claims them all, and resumes (the server confirms).
    require_resumed(connect_with(ctx, cache, server, key));
    s = cache.stats();
    CHECK(s.claimed == exported.size());
    CHECK(s.pending == 0);
    CHECK(s.imported == s.claimed + s.import_dropped + s.pending);
    check_invariant(s);

    // clear() drops waiting imports too.
    CHECK(cache.import(salt, tlsresume::key_id(salt, other), ctx.copy_session(exported.front().first),
                       exported.front().second));
    cache.clear();
    s = cache.stats();
    CHECK(s.pending == 0);
    CHECK(s.import_dropped == 1);
    CHECK(s.imported == s.claimed + s.import_dropped + s.pending);
  }
}

TEST_CASE("key ids differ per secret and per key, and hold no host name", "[wiring][import]") {
  auto ctx = CtxA::create();
  tlsresume::KeyIdSecret a;
  tlsresume::KeyIdSecret b;
  b.bytes[31] = std::byte{1};
  const PeerKey k1 = ctx.key_for("localhost", 443);
  const PeerKey k2 = ctx.key_for("localhost", 444);
  CHECK(tlsresume::key_id(a, k1) == tlsresume::key_id(a, ctx.key_for("LOCALHOST.", 443)));
  CHECK(tlsresume::key_id(a, k1) != tlsresume::key_id(b, k1));
  CHECK(tlsresume::key_id(a, k1) != tlsresume::key_id(a, k2));
  const auto id = tlsresume::key_id(a, k1);
  const std::string bytes(reinterpret_cast<const char*>(id.data()), id.size());
  CHECK(bytes.find("localhost") == std::string::npos);
  CHECK(k1.encode().find("localhost") != std::string::npos);  // the input did hold it
  REQUIRE_ERROR_QUEUE_EMPTY();
}
