// Context<Tag>: shared state between copies, counters, the recent-session store (size limit,
// expiry, server names), lifetime when every Context handle is gone, and concurrent takes.
//
// Sessions come from real handshakes with a LocalServer (in-memory BIO pair); resumption is always
// confirmed on both sides.

#include "support.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using test::ClientA;
using test::CtxA;
using test::CtxB;
using test::FreeObserver;
using tlsresume::errc;
using tlsresume::ProtocolVersion;
using tlsresume::testing::LocalServer;
using tlsresume::testing::ServerOptions;
using SessionA = tlsresume::BoundSession<test::TagA>;

using test::connect_clean;
using test::Outcome;
using test::server_options;

}  // namespace

TEST_CASE("copies of a Context share one id, one SSL_CTX and one session store", "[context][tls13]") {
  LocalServer server(server_options(ProtocolVersion::tls1_3));
  auto ctx = test::client_context_for(server);
  const CtxA copy = ctx;  // NOLINT(performance-unnecessary-copy-initialization): the copy is the point
  CtxA assigned = test::client_context_for(server);
  const auto other_id = assigned.id();
  assigned = ctx;

  CHECK(copy.id() == ctx.id());
  CHECK(assigned.id() == ctx.id());
  CHECK(copy.native_handle() == ctx.native_handle());
  CHECK(assigned.native_handle() == ctx.native_handle());
  CHECK(other_id != ctx.id());
  CHECK(CtxA::create().id() != ctx.id());  // ids are per instance, never reused
  CHECK(CtxA::share(ctx.native_handle()).id() == ctx.id());

  // Sessions received through one copy are seen and handed out by the others.
  REQUIRE(connect_clean(copy, server).sessions == 2);
  CHECK(ctx.stats().sessions_received == 2);
  CHECK(assigned.stats().recent_sessions == 2);
  auto s = assigned.take_recent_session();
  REQUIRE(s.has_value());
  CHECK(s->context_id() == ctx.id());
  CHECK(copy.stats().recent_sessions == 1);
  const Outcome out = connect_clean(ctx, server, &*s);  // set on a client of the original: same instance
  CHECK(out.client_reused);
  CHECK(out.server_reused);

  // Settings made through a copy apply to the shared SSL_CTX.
  assigned.set_max_recent_sessions(3);
  CHECK(ctx.max_recent_sessions() == 3);
  CHECK(copy.max_recent_sessions() == 3);
}

TEST_CASE("stats count received and removed sessions and the sessions kept", "[context][tls13][tls12]") {
  SECTION("TLS 1.3") {
    LocalServer server(server_options(ProtocolVersion::tls1_3));
    auto ctx = test::client_context_for(server);
    auto st = ctx.stats();
    CHECK(st.sessions_received == 0);
    CHECK(st.sessions_removed == 0);
    CHECK(st.recent_sessions == 0);

    REQUIRE(connect_clean(ctx, server).sessions == 2);
    st = ctx.stats();
    CHECK(st.sessions_received == 2);
    CHECK(st.sessions_removed == 0);
    CHECK(st.recent_sessions == 2);

    auto s = ctx.take_recent_session();
    REQUIRE(s.has_value());
    CHECK(ctx.stats().recent_sessions == 1);  // a taken ticket leaves the store, uncounted as removed
    const Outcome resumed = connect_clean(ctx, server, &*s);
    REQUIRE(resumed.client_reused);
    REQUIRE(resumed.server_reused);
    st = ctx.stats();
    CHECK(st.sessions_received == 3);  // one ticket after a resumed handshake
    CHECK(st.sessions_removed == 1);   // OpenSSL invalidates a TLS 1.3 ticket once it is used
    CHECK_FALSE(s->is_resumable());
    CHECK(st.recent_sessions == 2);

    // An unclean close: the remove callback counts the connection's current session.
    const auto removed_before = st.sessions_removed;
    {
      ClientA client(ctx);
      auto conn = server.handshake(client);
      REQUIRE(client.await_tickets(0ms, 2) == 2);
      conn.shutdown();
    }
    st = ctx.stats();
    CHECK(st.sessions_received == 5);
    CHECK(st.sessions_removed == removed_before + 1);
    CHECK(st.recent_sessions == 3);
  }

  SECTION("TLS 1.2") {
    const bool tickets = GENERATE(true, false);
    CAPTURE(tickets);
    LocalServer server(server_options(ProtocolVersion::tls1_2, tickets));
    auto ctx = test::client_context_for(server);
    REQUIRE(connect_clean(ctx, server).sessions == 1);
    auto st = ctx.stats();
    CHECK(st.sessions_received == 1);
    CHECK(st.sessions_removed == 0);
    CHECK(st.recent_sessions == 1);
    auto s = ctx.take_recent_session();
    REQUIRE(s.has_value());
    CHECK(ctx.stats().recent_sessions == 1);  // a TLS 1.2 session stays
    const Outcome resumed = connect_clean(ctx, server, &*s);
    CHECK(resumed.client_reused);
    CHECK(resumed.server_reused);
    st = ctx.stats();
    CHECK(st.sessions_received == 1);  // resuming a TLS 1.2 session delivers no new session
    CHECK(st.sessions_removed == 0);
    CHECK(st.recent_sessions == 1);
  }
}

TEST_CASE("set_max_recent_sessions evicts the oldest sessions and releases them", "[context][tls12][tls13]") {
  SECTION("TLS 1.2: evicted sessions are freed, the newest are kept") {
    LocalServer server(server_options(ProtocolVersion::tls1_2));
    auto ctx = test::client_context_for(server);
    CHECK(ctx.max_recent_sessions() == 8);  // the default
    std::vector<std::shared_ptr<FreeObserver::Token>> tokens;  // oldest first
    std::vector<SSL_SESSION*> raw;
    for (int n = 0; n < 4; ++n) {
      REQUIRE(connect_clean(ctx, server).sessions == 1);
      auto s = ctx.take_recent_session();  // the newest; a TLS 1.2 session stays in the store
      REQUIRE(s.has_value());
      REQUIRE(std::find(raw.begin(), raw.end(), s->native_handle()) == raw.end());
      raw.push_back(s->native_handle());
      tokens.push_back(FreeObserver::watch(s->native_handle()));
    }
    REQUIRE(ctx.stats().recent_sessions == 4);
    for (const auto& t : tokens) {
      REQUIRE_FALSE(t->freed);  // the store's reference keeps each alive
    }

    ctx.set_max_recent_sessions(2);
    CHECK(ctx.max_recent_sessions() == 2);
    CHECK(ctx.stats().recent_sessions == 2);
    CHECK(tokens[0]->freed);
    CHECK(tokens[1]->freed);
    CHECK_FALSE(tokens[2]->freed);
    CHECK_FALSE(tokens[3]->freed);
    auto newest = ctx.take_recent_session();
    REQUIRE(newest.has_value());
    CHECK(newest->native_handle() == raw[3]);
    newest.reset();

    // A new session pushes out the oldest kept one.
    REQUIRE(connect_clean(ctx, server).sessions == 1);
    CHECK(ctx.stats().recent_sessions == 2);
    CHECK(tokens[2]->freed);
    CHECK_FALSE(tokens[3]->freed);

    ctx.set_max_recent_sessions(0);
    CHECK(tokens[3]->freed);
    CHECK(ctx.stats().recent_sessions == 0);
    CHECK_FALSE(ctx.take_recent_session().has_value());
    REQUIRE(connect_clean(ctx, server).sessions == 1);  // received, but not kept
    CHECK(ctx.stats().recent_sessions == 0);
    CHECK(ctx.stats().sessions_received == 6);
  }

  SECTION("TLS 1.3: the default keeps 8 of 10 tickets, the newest") {
    LocalServer server(server_options(ProtocolVersion::tls1_3));
    auto ctx = test::client_context_for(server);
    std::optional<SessionA> newest;
    for (int n = 0; n < 5; ++n) {
      ClientA client(ctx);
      auto conn = server.handshake(client);
      REQUIRE(client.await_tickets(0ms, 2) == 2);
      newest = client.session();
      client.shutdown();
      conn.shutdown();
    }
    CHECK(ctx.stats().sessions_received == 10);
    CHECK(ctx.stats().recent_sessions == 8);
    auto first = ctx.take_recent_session();
    REQUIRE(first.has_value());
    CHECK(first->native_handle() == newest->native_handle());
    int taken = 1;
    while (taken < 100 && ctx.take_recent_session()) {  // bounded: a ticket handed out twice cannot loop forever
      ++taken;
    }
    CHECK(taken == 8);
  }
}

// The client context's session timeout (SSL_CTX_set_timeout) is what a client session expires by:
// a server's timeout only reaches the client as the ticket lifetime hint. So the client context is
// given a 1 s timeout; SSL_SESSION_get_time has whole seconds, hence the 2 s wait.
TEST_CASE("expired sessions are not handed out", "[context][tls12][tls13]") {
  const auto version = GENERATE(ProtocolVersion::tls1_2, ProtocolVersion::tls1_3);
  CAPTURE(tlsresume::to_string(version));
  LocalServer server(server_options(version));
  auto short_lived = test::client_context_for(server);
  REQUIRE(SSL_CTX_set_timeout(short_lived.native_handle(), 1) >= 0);
  auto long_lived = test::client_context_for(server);  // twin with the default timeout
  {
    ClientA client(short_lived);
    auto conn = server.handshake(client);
    REQUIRE(client.await_tickets(0ms, 2) >= 1);
    auto current = client.session();
    REQUIRE(current.has_value());
    CHECK(current->expiry() - current->creation_time() == 1s);  // the client context's timeout
    client.shutdown();
    conn.shutdown();
  }
  REQUIRE(connect_clean(long_lived, server).sessions >= 1);
  REQUIRE(short_lived.stats().recent_sessions >= 1);  // kept; not looked at before it expires

  std::this_thread::sleep_for(2100ms);

  CHECK_FALSE(short_lived.take_recent_session().has_value());
  CHECK(short_lived.stats().recent_sessions == 0);  // stale sessions are dropped from the store
  auto fresh = long_lived.take_recent_session();
  REQUIRE(fresh.has_value());
  const Outcome out = connect_clean(long_lived, server, &*fresh);
  CHECK(out.client_reused);
  CHECK(out.server_reused);
}

// take_recent_session(name) looks sessions up by the name given to Client::set_server_name: the
// SNI for a host name, the address itself for an IP literal (which sends no SNI).
TEST_CASE("take_recent_session matches the server name the session was received for", "[context][tls12][tls13]") {
  const auto version = GENERATE(ProtocolVersion::tls1_2, ProtocolVersion::tls1_3);
  CAPTURE(tlsresume::to_string(version));
  LocalServer server(server_options(version));
  auto ctx = test::client_context_for(server);

  SECTION("a session for localhost is handed out for localhost only") {
    REQUIRE(connect_clean(ctx, server, nullptr, "localhost").sessions >= 1);
    CHECK_FALSE(ctx.take_recent_session("127.0.0.1").has_value());
    CHECK_FALSE(ctx.take_recent_session("other.example").has_value());
    CHECK_FALSE(ctx.take_recent_session("localhost.").has_value());
    CHECK_FALSE(ctx.take_recent_session().has_value());  // no name is a different name
    auto s = ctx.take_recent_session("localhost");
    REQUIRE(s.has_value());
    CHECK(s->requested_server_name() == "localhost");
    CHECK(s->peer_name() == "localhost");
    const Outcome out = connect_clean(ctx, server, &*s, "localhost");
    CHECK(out.client_reused);
    CHECK(out.server_reused);
  }

  SECTION("the newest session of the requested name is chosen among several names") {
    REQUIRE(connect_clean(ctx, server, nullptr, "localhost").sessions >= 1);
    REQUIRE(connect_clean(ctx, server).sessions >= 1);  // no name
    auto named = ctx.take_recent_session("localhost");
    REQUIRE(named.has_value());
    CHECK(named->requested_server_name() == "localhost");
    auto unnamed = ctx.take_recent_session();
    REQUIRE(unnamed.has_value());
    CHECK(unnamed->requested_server_name().empty());
    CHECK(unnamed->native_handle() != named->native_handle());
  }

  SECTION("a session received over an IP-literal connection is kept under that address") {
    REQUIRE(connect_clean(ctx, server, nullptr, "127.0.0.1").sessions >= 1);
    CHECK_FALSE(ctx.take_recent_session("127.0.0.2").has_value());
    CHECK_FALSE(ctx.take_recent_session("localhost").has_value());
    // Not handed to a connection that names no server (or, through that empty key, any other IP).
    CHECK_FALSE(ctx.take_recent_session().has_value());
    auto s = ctx.take_recent_session("127.0.0.1");
    REQUIRE(s.has_value());
    CHECK(s->peer_name() == "127.0.0.1");
    CHECK(s->requested_server_name().empty());  // no SNI was sent
    const Outcome out = connect_clean(ctx, server, &*s, "127.0.0.1");
    CHECK(out.client_reused);
    CHECK(out.server_reused);
  }
}

TEST_CASE("a Client keeps its SSL_CTX and context state alive after every Context handle is gone",
          "[context][tls13]") {
  LocalServer server(server_options(ProtocolVersion::tls1_3));

  SECTION("the Client's own copy keeps the state; tickets are recorded after the handles are gone") {
    auto ctx = std::make_optional(test::client_context_for(server));
    const auto id = ctx->id();
    ClientA client(*ctx);
    ctx.reset();  // the only Context handle left is the one inside the Client
    auto conn = server.handshake(client);
    CHECK(client.await_tickets(0ms, 2) == 2);
    CHECK(client.context().id() == id);
    CHECK(client.context().stats().sessions_received == 2);
    auto s = client.context().take_recent_session();
    REQUIRE(s.has_value());
    client.shutdown();
    conn.shutdown();

    ClientA again(client.context());
    again.set_session(*s);
    auto again_conn = server.handshake(again);
    CHECK(again.session_reused());
    CHECK(again_conn.session_reused());
    again.shutdown();
    again_conn.shutdown();
  }

  SECTION("an SSL that outlives its Client and every Context still delivers tickets safely") {
    SSL* ssl = nullptr;
    std::optional<tlsresume::testing::ServerConnection> conn;
    tlsresume::ContextId id{};
    {
      auto ctx = test::client_context_for(server);
      id = ctx.id();
      ssl = SSL_new(ctx.native_handle());
      REQUIRE(ssl != nullptr);
      auto client = ClientA::share(ctx, ssl);
      client.set_server_name("localhost");
      conn.emplace(server.handshake(client));
      REQUIRE(client.sessions_received() == 0);  // tickets still unread
    }  // every Context and Client handle is gone; our SSL reference keeps the SSL_CTX

    // Reading now runs the new-session callback, which finds the state through the SSL_CTX.
    char byte = 0;
    const int peeked = SSL_peek(ssl, &byte, 1);
    CHECK(peeked <= 0);
    CHECK(SSL_get_error(ssl, peeked) == SSL_ERROR_WANT_READ);  // tickets processed, no application data
    REQUIRE_ERROR_QUEUE_EMPTY();
    {
      auto reattached = CtxA::share(SSL_get_SSL_CTX(ssl));
      CHECK(reattached.id() == id);  // the same state, alive all along
      CHECK(reattached.stats().sessions_received == 2);
      CHECK(reattached.stats().recent_sessions == 2);
      auto s = reattached.take_recent_session("localhost");
      REQUIRE(s.has_value());
      CHECK(s->requested_server_name() == "localhost");
      REQUIRE(SSL_shutdown(ssl) >= 0);
      SSL_free(ssl);
      conn->shutdown();
      conn.reset();

      ClientA again(reattached);
      again.set_server_name("localhost");
      again.set_session(*s);
      auto again_conn = server.handshake(again);
      CHECK(again.session_reused());
      CHECK(again_conn.session_reused());
      again.shutdown();
      again_conn.shutdown();
    }
  }
}

TEST_CASE("concurrent take_recent_session never hands one TLS 1.3 ticket to two threads", "[context][tls13]") {
  LocalServer server(server_options(ProtocolVersion::tls1_3));
  auto ctx = test::client_context_for(server);
  ctx.set_max_recent_sessions(64);
  std::vector<SessionA> spot_checks;

  for (int round = 0; round < 5; ++round) {
    CAPTURE(round);
    for (int n = 0; n < 10; ++n) {
      REQUIRE(connect_clean(ctx, server).sessions == 2);
    }
    REQUIRE(ctx.stats().recent_sessions == 20);

    std::vector<SessionA> taken[2];
    std::atomic<int> ready{0};
    auto worker = [&ctx, &ready](std::vector<SessionA>& out) {
      ready.fetch_add(1);
      while (ready.load() < 2) {
        std::this_thread::yield();
      }
      while (out.size() < 100) {  // bounded: a ticket handed out twice cannot loop forever
        auto s = ctx.take_recent_session();
        if (!s) {
          break;
        }
        out.push_back(std::move(*s));
      }
    };
    std::thread a(worker, std::ref(taken[0]));
    std::thread b(worker, std::ref(taken[1]));
    a.join();
    b.join();

    std::set<SSL_SESSION*> all;
    for (const auto& list : taken) {
      for (const auto& s : list) {
        all.insert(s.native_handle());
      }
    }
    INFO("thread A took " << taken[0].size() << ", thread B took " << taken[1].size());
    CHECK(taken[0].size() + taken[1].size() == 20);
    CHECK(all.size() == 20);  // no ticket handed out twice
    CHECK(ctx.stats().recent_sessions == 0);
    REQUIRE_ERROR_QUEUE_EMPTY();
    for (auto& list : taken) {
      if (!list.empty()) {
        spot_checks.push_back(std::move(list.front()));
      }
    }
  }

  // The tickets handed out are real ones: the first and the last kept resume on both sides.
  REQUIRE(spot_checks.size() >= 2);
  for (const auto* s : {&spot_checks.front(), &spot_checks.back()}) {
    const Outcome out = connect_clean(ctx, server, s);
    CHECK(out.client_reused);
    CHECK(out.server_reused);
  }
}

// RFC 8446 §4.6.1: a ticket must not be used beyond the lifetime the server gave it. OpenSSL 3.0
// keeps the client context's (longer) timeout on the session, so expiry() and
// take_recent_session honour the shorter ticket lifetime themselves.
TEST_CASE("a TLS 1.3 ticket expires with the server's ticket lifetime", "[context][tls13]") {
  LocalServer server(server_options(ProtocolVersion::tls1_3));
  // ticket_lifetime = 3 s: OpenSSL 3.0 keeps whole seconds, so a ticket may look up to 1 s older.
  REQUIRE(SSL_CTX_set_timeout(server.native_handle(), 3) >= 0);
  LocalServer twin_server(server_options(ProtocolVersion::tls1_3));  // default lifetime
  auto ctx = test::client_context_for(server);
  auto twin_ctx = test::client_context_for(twin_server);
  REQUIRE(connect_clean(ctx, server).sessions == 2);
  REQUIRE(connect_clean(twin_ctx, twin_server).sessions == 2);

  auto peek = ctx.take_recent_session();
  REQUIRE(peek.has_value());
  CHECK(peek->ticket_lifetime_hint() == 3s);
  CHECK(SSL_SESSION_get_timeout(peek->native_handle()) > 3);  // OpenSSL's own timeout is longer
  CHECK(peek->expiry() - peek->creation_time() == 3s);

  std::this_thread::sleep_for(4100ms);

  CHECK_FALSE(ctx.take_recent_session().has_value());  // the other ticket expired too
  auto fresh = twin_ctx.take_recent_session();
  REQUIRE(fresh.has_value());
  CHECK(fresh->expiry() - fresh->creation_time() == fresh->ticket_lifetime_hint());
}

// OpenSSL 3.0 fills a certificate's extension cache on its first use in a verification, and two
// threads verifying against the same fresh trust anchor at once race on it (ThreadSanitizer
// reports it in the tsan configuration). add_trusted_certificate fills it at set-up time.
TEST_CASE("concurrent first handshakes against a freshly trusted CA", "[context][tls13][concurrency]") {
  LocalServer server(server_options(ProtocolVersion::tls1_3));
  constexpr int rounds = 24;  // without the fix, ThreadSanitizer sees the race in about one round in ten
  constexpr int threads = 8;
  for (int round = 0; round < rounds; ++round) {
    CAPTURE(round);
    // A copy of the CA parsed from DER: a new X509 object whose extension cache nobody filled.
    unsigned char* der = nullptr;
    const int der_len = i2d_X509(server.ca_certificate(), &der);
    REQUIRE(der_len > 0);
    const unsigned char* p = der;
    auto ca = tlsresume::detail::Handle<X509>::adopt(d2i_X509(nullptr, &p, der_len));
    OPENSSL_free(der);
    REQUIRE(ca);
    auto ctx = CtxA::create();
    ctx.add_trusted_certificate(ca.get());

    std::atomic<int> ready{0};
    std::atomic<int> verified{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        ready.fetch_add(1);
        while (ready.load() < threads) {
          std::this_thread::yield();
        }
        try {
          const Outcome out = connect_clean(ctx, server);
          verified += out.version == ProtocolVersion::tls1_3 && !out.client_reused ? 1 : 0;
        } catch (const tlsresume::Error&) {
          // not counted: the CHECK below reports it
        }
      });
    }
    for (auto& w : workers) {
      w.join();
    }
    CHECK(verified.load() == threads);
  }
  CHECK(server.handshakes() == rounds * threads);
  REQUIRE_ERROR_QUEUE_EMPTY();
}
