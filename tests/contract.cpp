// The SSL_set_session(3) contract, one TEST_CASE per sentence of the manual page, each checked with
// real OpenSSL handshakes against a LocalServer (in-memory BIO pair, certificates made at run time).
//
// Resumption is always confirmed on both sides: `Client::session_reused()` and the server's
// `ServerConnection::session_reused()`. When a session is freed is observed with
// `test::FreeObserver` (the free callback of an ex_data index runs only when OpenSSL's reference
// count of the session reaches zero).

#include "support.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>

namespace {

using namespace std::chrono_literals;
using test::ClientA;
using test::CtxA;
using test::CtxB;
using test::FreeObserver;
using test::TagA;
using test::TagB;
using tlsresume::errc;
using tlsresume::ProtocolVersion;
using tlsresume::testing::LocalServer;
using tlsresume::testing::ServerOptions;
using SessionA = tlsresume::BoundSession<TagA>;

using test::connect_clean;
using test::Outcome;
using test::require_error;
using test::server_options;

/// Whether `C::set_session(S)` is a valid expression (the compile-time half of "one session
/// belongs to one context").
template <class C, class S>
concept can_set = requires(C& c, const S& s) { c.set_session(s); };

}  // namespace

// "When the session is set, the reference count of session is incremented by 1." The client holds
// its own reference, so the session outlives every tlsresume handle until the client goes.
TEST_CASE("SSL_set_session takes a reference", "[contract][tls13]") {
  LocalServer server(server_options(ProtocolVersion::tls1_3));
  auto ctx = test::client_context_for(server);
  REQUIRE(connect_clean(ctx, server).sessions == 2);

  // A TLS 1.3 ticket is removed from the context's store when taken: `s` holds the only reference.
  auto s = ctx.take_recent_session();
  REQUIRE(s.has_value());
  SSL_SESSION* const raw = s->native_handle();
  auto token = FreeObserver::watch(raw);

  auto client = std::make_optional<ClientA>(ctx);
  client->set_session(*s);
  REQUIRE(SSL_get0_session(client->native_handle()) == raw);
  {
    auto copy = *s;  // one more handle, dropped with the others
    s.reset();
  }
  CHECK_FALSE(token->freed);
  CHECK(SSL_get0_session(client->native_handle()) == raw);  // still the client's, still alive

  client.reset();  // ~Client before any handshake: SSL_free drops the reference it took
  CHECK(token->freed);
}

// "If the session is not reused, the reference count is decremented again during SSL_connect()."
TEST_CASE("a session that is not reused is released during connect", "[contract][tls13][tls12]") {
  const bool tls13 = GENERATE(true, false);
  const auto version = tls13 ? ProtocolVersion::tls1_3 : ProtocolVersion::tls1_2;
  CAPTURE(tls13);
  LocalServer issuer(server_options(version));
  LocalServer stranger(server_options(version));  // other ticket keys: cannot resume issuer's sessions
  auto ctx = test::client_context_for(issuer);
  REQUIRE(connect_clean(ctx, issuer).sessions >= 1);

  auto s = ctx.take_recent_session();
  REQUIRE(s.has_value());
  REQUIRE(s->protocol_version() == version);
  ctx.set_max_recent_sessions(0);  // the store drops its references (a TLS 1.2 session stays there)
  REQUIRE(ctx.stats().recent_sessions == 0);
  auto token = FreeObserver::watch(s->native_handle());

  ClientA client(ctx);
  client.set_session(*s);
  s.reset();
  REQUIRE_FALSE(token->freed);  // only the client holds it now
  // Both test CAs have the same subject name (and leaves carry no authority key id), so one store
  // cannot trust both: this connection trusts the stranger's CA only.
  {
    X509_STORE* store = X509_STORE_new();
    REQUIRE(store != nullptr);
    const bool ok = X509_STORE_add_cert(store, stranger.ca_certificate()) == 1 &&
                    SSL_set1_verify_cert_store(client.native_handle(), store) == 1;
    X509_STORE_free(store);
    REQUIRE(ok);
  }

  auto conn = stranger.handshake(client);
  CHECK_FALSE(client.session_reused());
  CHECK_FALSE(conn.session_reused());
  CHECK(token->freed);  // released during the handshake, while the client lives on
  CHECK(client.native_handle() != nullptr);
  CHECK(SSL_get0_session(client.native_handle()) != nullptr);  // the connection's new session
  client.shutdown();
  conn.shutdown();
}

// "If there is already a session set inside ssl (because it was set with SSL_set_session() before
// or because the same ssl was already used for a connection), SSL_SESSION_free() will be called
// for that session."
TEST_CASE("a session already set is freed when replaced", "[contract][tls13]") {
  LocalServer server(server_options(ProtocolVersion::tls1_3));
  auto ctx = test::client_context_for(server);
  REQUIRE(connect_clean(ctx, server).sessions == 2);

  auto s2 = ctx.take_recent_session();
  auto s1 = ctx.take_recent_session();
  REQUIRE(s1.has_value());
  REQUIRE(s2.has_value());
  REQUIRE(s1->native_handle() != s2->native_handle());
  REQUIRE(ctx.stats().recent_sessions == 0);
  SSL_SESSION* const raw2 = s2->native_handle();
  auto token1 = FreeObserver::watch(s1->native_handle());
  auto token2 = FreeObserver::watch(raw2);

  ClientA client(ctx);
  client.set_session(*s1);
  client.set_session(*s2);
  s1.reset();
  s2.reset();
  CHECK(token1->freed);  // replaced: the client's reference to s1 was given back at once
  CHECK_FALSE(token2->freed);
  CHECK(SSL_get0_session(client.native_handle()) == raw2);

  auto conn = server.handshake(client);
  CHECK(client.session_reused());
  CHECK(conn.session_reused());
  CHECK(SSL_get0_session(client.native_handle()) == raw2);  // resumed s2 itself (no ticket read yet)
  CHECK(client.await_tickets(0ms, 1) == 1);
  client.shutdown();
  conn.shutdown();
}

namespace {

using test::Mode;
enum class Close { destroy, reset, clean_shutdown };

/// One connection that ends with `how`; checks what became of its current session.
void check_close(Mode mode, Close how) {
  LocalServer server(server_options(mode == Mode::tls13 ? ProtocolVersion::tls1_3 : ProtocolVersion::tls1_2,
                                    mode != Mode::tls12_session_ids));
  auto ctx = test::client_context_for(server);
  const std::size_t expected_sessions = mode == Mode::tls13 ? 2 : 1;

  auto client = std::make_optional<ClientA>(ctx);
  auto conn = server.handshake(*client);
  REQUIRE_FALSE(client->session_reused());
  REQUIRE(client->await_tickets(0ms, 2) == expected_sessions);
  auto current = client->session();
  REQUIRE(current.has_value());
  REQUIRE(current->is_resumable());
  REQUIRE(current->protocol_version() == (mode == Mode::tls13 ? ProtocolVersion::tls1_3 : ProtocolVersion::tls1_2));
  conn.shutdown();  // the server closes cleanly: a session-id server keeps its session
  const auto before = ctx.stats();
  REQUIRE(before.recent_sessions == expected_sessions);

  switch (how) {
    case Close::destroy: client.reset(); break;
    case Close::reset: client->reset(); break;
    case Close::clean_shutdown:
      REQUIRE(client->shutdown() == tlsresume::IoStatus::done);
      client.reset();
      break;
  }
  const auto after = ctx.stats();

  if (how == Close::clean_shutdown) {
    CHECK(current->is_resumable());
    CHECK(after.sessions_removed == before.sessions_removed);
    CHECK(after.recent_sessions == expected_sessions);
    auto taken = ctx.take_recent_session();
    REQUIRE(taken.has_value());
    CHECK(taken->native_handle() == current->native_handle());  // the newest one is handed out
    const Outcome again = connect_clean(ctx, server, &*taken);
    CHECK(again.client_reused);
    CHECK(again.server_reused);
    return;
  }

  CHECK_FALSE(current->is_resumable());
  CHECK(after.sessions_removed == before.sessions_removed + 1);
  CHECK(after.recent_sessions == expected_sessions - 1);

  // The context no longer offers it; for TLS 1.3 it offers the connection's other ticket.
  auto other = ctx.take_recent_session();
  if (mode == Mode::tls13) {
    REQUIRE(other.has_value());
    CHECK(other->native_handle() != current->native_handle());
    CHECK(other->is_resumable());
    CHECK_FALSE(ctx.take_recent_session().has_value());
  } else {
    CHECK_FALSE(other.has_value());
  }

  // Offered anyway, the invalidated session only gets a full handshake.
  {
    ClientA probe(ctx);
    probe.set_session(*current);
    auto probe_conn = server.handshake(probe);
    CHECK_FALSE(probe.session_reused());
    CHECK_FALSE(probe_conn.session_reused());
    probe.await_tickets(0ms, 2);
    probe.shutdown();
    probe_conn.shutdown();
  }
  ctx.set_max_recent_sessions(0);  // forget the probe's sessions
  ctx.set_max_recent_sessions(8);

  if (other) {
    // The other TLS 1.3 ticket of the unclean connection stays usable.
    const Outcome resumed = connect_clean(ctx, server, &*other);
    CHECK(resumed.client_reused);
    CHECK(resumed.server_reused);
  }

  if (how == Close::reset) {
    // The same Client object is a fresh, usable connection.
    REQUIRE(client.has_value());
    CHECK(client->native_handle() != nullptr);
    CHECK_FALSE(client->session().has_value());
    CHECK(client->sessions_received() == 0);
    const Outcome full = connect_clean(ctx, server);  // something to resume
    REQUIRE_FALSE(full.client_reused);
    auto fresh_session = ctx.take_recent_session();
    REQUIRE(fresh_session.has_value());
    client->set_session(*fresh_session);
    auto fresh_conn = server.handshake(*client);
    CHECK(client->session_reused());
    CHECK(fresh_conn.session_reused());
    CHECK(client->await_tickets(0ms, 1) >= (mode == Mode::tls13 ? 1U : 0U));
    client->shutdown();
    fresh_conn.shutdown();
  }
}

}  // namespace

// "If that old session is still open, it is considered bad and will be removed from the session
// cache (if used). A session is considered open, if SSL_shutdown(3) was not called for the
// connection." tlsresume's cache is the context's store, fed by the new-session callback and
// pruned by the remove callback, which OpenSSL calls when the last reference to the SSL goes.
TEST_CASE("a connection not shut down cleanly invalidates its current session", "[contract][tls13][tls12]") {
  SECTION("TLS 1.2 tickets: destroyed without shutdown") { check_close(Mode::tls12_tickets, Close::destroy); }
  SECTION("TLS 1.2 session ids: destroyed without shutdown") { check_close(Mode::tls12_session_ids, Close::destroy); }
  SECTION("TLS 1.3: destroyed without shutdown, the other ticket stays usable") {
    check_close(Mode::tls13, Close::destroy);
  }
  SECTION("TLS 1.2 tickets: reset() ends the connection like destruction") { check_close(Mode::tls12_tickets, Close::reset); }
  SECTION("TLS 1.2 session ids: reset() ends the connection like destruction") {
    check_close(Mode::tls12_session_ids, Close::reset);
  }
  SECTION("TLS 1.3: reset() ends the connection like destruction") { check_close(Mode::tls13, Close::reset); }
  SECTION("twin, TLS 1.2 tickets: after shutdown() the session stays resumable") {
    check_close(Mode::tls12_tickets, Close::clean_shutdown);
  }
  SECTION("twin, TLS 1.2 session ids: after shutdown() the session stays resumable") {
    check_close(Mode::tls12_session_ids, Close::clean_shutdown);
  }
  SECTION("twin, TLS 1.3: after shutdown() the session stays resumable") { check_close(Mode::tls13, Close::clean_shutdown); }
}

// "SSL_SESSION objects keep internal link information about the session cache list when being
// inserted into one SSL_CTX object's session cache. One SSL_SESSION object, regardless of its
// reference count, must therefore only be used with one SSL_CTX object (and the SSL objects
// created from this SSL_CTX object)."
TEST_CASE("one session belongs to one context", "[contract][tls13]") {
  // Compile time: only a session bound to a context of the client's own tag can be set.
  STATIC_REQUIRE(can_set<ClientA, tlsresume::BoundSession<TagA>>);
  STATIC_REQUIRE_FALSE(can_set<ClientA, tlsresume::BoundSession<TagB>>);
  STATIC_REQUIRE_FALSE(can_set<ClientA, tlsresume::UnboundSession>);
  STATIC_REQUIRE_FALSE(can_set<ClientA, SSL_SESSION*>);

  LocalServer server(server_options(ProtocolVersion::tls1_3));
  auto ctx_a1 = test::client_context_for(server);
  auto ctx_a2 = test::client_context_for(server);
  REQUIRE(ctx_a1.id() != ctx_a2.id());
  REQUIRE(connect_clean(ctx_a1, server).sessions == 2);
  auto s = ctx_a1.take_recent_session();
  REQUIRE(s.has_value());
  REQUIRE(s->context_id() == ctx_a1.id());

  SECTION("a session of another instance of the same Context type is refused at run time") {
    ClientA client(ctx_a2);
    require_error([&] { client.set_session(*s); }, errc::wrong_context);
    CHECK(SSL_get0_session(client.native_handle()) == nullptr);  // nothing was set
    auto conn = server.handshake(client);
    CHECK_FALSE(client.session_reused());
    CHECK_FALSE(conn.session_reused());
    client.shutdown();
    conn.shutdown();
  }

  SECTION("copy_session moves it to the other instance, where it resumes") {
    auto copy = ctx_a2.copy_session(*s);
    CHECK(copy.context_id() == ctx_a2.id());
    CHECK(copy.native_handle() != s->native_handle());
    const Outcome out = connect_clean(ctx_a2, server, &copy);
    CHECK(out.client_reused);
    CHECK(out.server_reused);
  }

  SECTION("Client::adopt and Client::share refuse an SSL made from another SSL_CTX") {
    SSL* foreign = SSL_new(ctx_a2.native_handle());
    REQUIRE(foreign != nullptr);
    // adopt takes over the reference even when it throws: `foreign` is released (LSan checks).
    require_error([&] { (void)ClientA::adopt(ctx_a1, foreign); }, errc::context_mismatch);

    SSL* borrowed = SSL_new(ctx_a2.native_handle());
    REQUIRE(borrowed != nullptr);
    require_error([&] { (void)ClientA::share(ctx_a1, borrowed); }, errc::context_mismatch);
    // share took no reference of ours: the SSL is still ours to free, exactly once.
    SSL_free(borrowed);

    // Twins: an SSL made from the right SSL_CTX is accepted.
    SSL* own = SSL_new(ctx_a1.native_handle());
    REQUIRE(own != nullptr);
    auto shared = ClientA::share(ctx_a1, own);
    CHECK(shared.native_handle() == own);
    SSL_free(own);  // our reference; the Client keeps its own
    auto adopted = ClientA::adopt(ctx_a1, SSL_new(ctx_a1.native_handle()));
    adopted.set_session(*s);
    auto conn = server.handshake(adopted);
    CHECK(adopted.session_reused());
    CHECK(conn.session_reused());
    adopted.shutdown();
    conn.shutdown();
  }

  SECTION("Context::share of an SSL_CTX attached with another tag is refused; the same tag shares state") {
    SSL_CTX* raw = SSL_CTX_new(TLS_client_method());
    REQUIRE(raw != nullptr);
    {
      auto first = CtxA::share(raw);
      auto second = CtxA::share(raw);
      CHECK(first.id() == second.id());
      CHECK(first.native_handle() == raw);
      CHECK(second.native_handle() == raw);
      require_error([&] { (void)CtxB::share(raw); }, errc::context_mismatch);
      REQUIRE(SSL_CTX_up_ref(raw) == 1);
      require_error([&] { (void)CtxB::adopt(raw); }, errc::context_mismatch);  // releases that reference
      auto third = CtxA::adopt([&] {
        REQUIRE(SSL_CTX_up_ref(raw) == 1);
        return raw;
      }());
      CHECK(third.id() == first.id());
    }
    SSL_CTX_free(raw);
  }
}

// Not spelled out by SSL_set_session(3): a session whose protocol the client may no longer use.
// OpenSSL accepts it in SSL_set_session and, at SSL_connect, does not offer it: the handshake is
// a full one in the client's range, not an error.
TEST_CASE("setting a session with a non-matching protocol range", "[contract][tls13][tls12]") {
  LocalServer server(server_options(ProtocolVersion::tls1_3));  // TLS 1.2 and 1.3
  auto ctx = test::client_context_for(server);

  SECTION("a TLS 1.2 session on a client restricted to TLS 1.3: a full TLS 1.3 handshake") {
    ctx.set_protocol_range(ProtocolVersion::tls1_2, ProtocolVersion::tls1_2);
    REQUIRE(connect_clean(ctx, server).version == ProtocolVersion::tls1_2);
    auto s = ctx.take_recent_session();
    REQUIRE(s.has_value());
    REQUIRE(s->protocol_version() == ProtocolVersion::tls1_2);

    ctx.set_protocol_range(ProtocolVersion::tls1_3, ProtocolVersion::tls1_3);
    {
      ClientA client(ctx);
      REQUIRE_NOTHROW(client.set_session(*s));
      REQUIRE_ERROR_QUEUE_EMPTY();
      auto conn = server.handshake(client);
      CHECK(client.protocol_version() == ProtocolVersion::tls1_3);
      CHECK(SSL_version(conn.native_handle()) == TLS1_3_VERSION);
      CHECK_FALSE(client.session_reused());
      CHECK_FALSE(conn.session_reused());
      CHECK(client.await_tickets(0ms, 2) == 2);
      client.shutdown();
      conn.shutdown();
    }
    // The TLS 1.2 session was not spoiled by being passed over: back in range, it resumes.
    CHECK(s->is_resumable());
    ctx.set_protocol_range(ProtocolVersion::tls1_2, ProtocolVersion::tls1_2);
    const Outcome back = connect_clean(ctx, server, &*s);
    CHECK(back.version == ProtocolVersion::tls1_2);
    CHECK(back.client_reused);
    CHECK(back.server_reused);
  }

  SECTION("a TLS 1.3 ticket on a client restricted to TLS 1.2: a full TLS 1.2 handshake") {
    REQUIRE(connect_clean(ctx, server).version == ProtocolVersion::tls1_3);
    auto s = ctx.take_recent_session();
    REQUIRE(s.has_value());
    REQUIRE(s->protocol_version() == ProtocolVersion::tls1_3);

    ctx.set_protocol_range(ProtocolVersion::tls1_2, ProtocolVersion::tls1_2);
    ClientA client(ctx);
    REQUIRE_NOTHROW(client.set_session(*s));
    auto conn = server.handshake(client);
    CHECK(client.protocol_version() == ProtocolVersion::tls1_2);
    CHECK(SSL_version(conn.native_handle()) == TLS1_2_VERSION);
    CHECK_FALSE(client.session_reused());
    CHECK_FALSE(conn.session_reused());
    client.shutdown();
    conn.shutdown();
  }
}

// take_recent_session follows the single-use rule of TLS 1.3 tickets (RFC 8446, appendix C.4)
// and reuses a TLS 1.2 session as SSL_set_session(3) allows.
TEST_CASE("take_recent_session hands a TLS 1.3 ticket out once and keeps a TLS 1.2 session",
          "[contract][tls13][tls12]") {
  SECTION("TLS 1.3: two tickets, two takes, then nothing") {
    LocalServer server(server_options(ProtocolVersion::tls1_3));
    auto ctx = test::client_context_for(server);
    ClientA client(ctx);
    auto conn = server.handshake(client);
    REQUIRE(client.await_tickets(0ms, 2) == 2);
    auto last = client.session();
    client.shutdown();
    conn.shutdown();

    auto first = ctx.take_recent_session();
    auto second = ctx.take_recent_session();
    auto third = ctx.take_recent_session();
    REQUIRE(first.has_value());
    REQUIRE(second.has_value());
    CHECK(first->native_handle() == last->native_handle());  // newest first
    CHECK(second->native_handle() != first->native_handle());
    CHECK_FALSE(third.has_value());
    CHECK(ctx.stats().recent_sessions == 0);

    // Both were real, distinct tickets: each resumes.
    for (const auto* s : {&*first, &*second}) {
      const Outcome out = connect_clean(ctx, server, s);
      CHECK(out.client_reused);
      CHECK(out.server_reused);
      CHECK_FALSE(s->is_resumable());  // OpenSSL marks a used TLS 1.3 ticket non-resumable
    }
  }

  SECTION("TLS 1.2: the session stays and resumes five times") {
    const bool tickets = GENERATE(true, false);
    CAPTURE(tickets);
    LocalServer server(server_options(ProtocolVersion::tls1_2, tickets));
    auto ctx = test::client_context_for(server);
    REQUIRE(connect_clean(ctx, server).sessions == 1);
    for (int n = 0; n < 5; ++n) {
      CAPTURE(n);
      auto s = ctx.take_recent_session();
      REQUIRE(s.has_value());
      CHECK(s->protocol_version() == ProtocolVersion::tls1_2);
      const Outcome out = connect_clean(ctx, server, &*s);
      CHECK(out.client_reused);
      CHECK(out.server_reused);
      CHECK(ctx.stats().recent_sessions == 1);
    }
  }
}

// "This is also the case when session is a NULL pointer": clear_session() drops the session set,
// and the next handshake is a full one on both sides.
TEST_CASE("clearing a session set on a client frees it and makes the handshake full", "[contract][tls13]") {
  LocalServer server(server_options(ProtocolVersion::tls1_3));
  auto ctx = test::client_context_for(server);
  REQUIRE(connect_clean(ctx, server).sessions == 2);
  auto s = ctx.take_recent_session();
  REQUIRE(s.has_value());
  auto token = FreeObserver::watch(s->native_handle());

  ClientA client(ctx);
  client.set_session(*s);
  s.reset();
  CHECK_FALSE(token->freed);
  client.clear_session();
  CHECK(token->freed);
  CHECK(SSL_get0_session(client.native_handle()) == nullptr);
  auto conn = server.handshake(client);
  CHECK_FALSE(client.session_reused());
  CHECK_FALSE(conn.session_reused());
  require_error([&] { client.clear_session(); }, errc::invalid_argument);  // after the handshake
}

// "SSL_set_session() is only useful for TLS/SSL clients": a Client refuses an SSL in server mode.
TEST_CASE("a Client refuses an SSL in server mode", "[contract]") {
  LocalServer server(server_options(ProtocolVersion::tls1_3));
  auto ctx = test::client_context_for(server);
  SSL* ssl = SSL_new(ctx.native_handle());
  REQUIRE(ssl != nullptr);
  SSL_set_accept_state(ssl);
  require_error([&] { (void)ClientA::share(ctx, ssl); }, errc::context_mismatch);
  SSL_free(ssl);
  // Twin: the same SSL in client mode is accepted.
  SSL* client_ssl = SSL_new(ctx.native_handle());
  REQUIRE(client_ssl != nullptr);
  auto client = ClientA::adopt(ctx, client_ssl);
  CHECK(client.native_handle() == client_ssl);
}
