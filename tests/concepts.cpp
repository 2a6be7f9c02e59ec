// The type-level rules of tlsresume, stated as truth tables: every STATIC_REQUIRE that something
// compiles sits next to the STATIC_REQUIRE_FALSE that its misuse does not. The compile-fail suite
// (tests/compile_fail/) proves the same rules with real diagnostics; this file proves them with
// detection concepts, so a rule that stops holding (in either direction) fails the build.
// The runtime cases check that what the concepts accept is really accepted, and that what only
// the run-time check can see (another instance of the same context type) is refused.

#include <openssl/ssl.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <optional>
#include <span>
#include <system_error>
#include <type_traits>
#include <utility>

#include <tlsresume/testing.hpp>
#include <tlsresume/tlsresume.hpp>

#include "support.hpp"

namespace {

using test::ClientA;
using test::ClientB;
using test::CtxA;
using test::CtxB;
using test::TagA;
using test::TagB;
using tlsresume::BoundSession;
using tlsresume::UnboundSession;

/// Whether `c.set_session(s)` compiles for a client `C` and a session (or anything) `S`.
template <class C, class S>
concept can_set = requires(C& c, const S& s) { c.set_session(s); };

/// Whether `ctx.bind(s)` compiles.
template <class Ctx, class S>
concept can_bind = requires(const Ctx& ctx, const S& s) { ctx.bind(s); };

/// Whether `S::from_der(bytes)` compiles.
template <class S>
concept can_from_der = requires(std::span<const std::byte> der) { S::from_der(der); };

/// Whether `ctx.copy_session(s)` compiles.
template <class Ctx, class S>
concept can_copy_session = requires(const Ctx& ctx, const S& s) { ctx.copy_session(s); };

/// A fresh resumable session of `ctx` from a full handshake with `server` (the newest ticket or
/// TLS 1.2 session, taken from the context's store).
BoundSession<TagA> fresh_session(tlsresume::testing::LocalServer& server, const CtxA& ctx) {
  ClientA client(ctx);
  client.set_server_name("localhost");
  auto server_side = server.handshake(client);
  client.await_tickets(std::chrono::milliseconds(100));
  REQUIRE_FALSE(client.session_reused());
  client.shutdown();
  server_side.shutdown();
  auto session = ctx.take_recent_session("localhost");
  REQUIRE(session.has_value());
  REQUIRE(session->is_resumable());
  return std::move(*session);
}

}  // namespace

TEST_CASE("Client::set_session accepts only sessions bound to a context of its tag", "[concepts]") {
  STATIC_REQUIRE(can_set<ClientA, BoundSession<TagA>>);
  STATIC_REQUIRE_FALSE(can_set<ClientA, BoundSession<TagB>>);
  STATIC_REQUIRE(can_set<ClientB, BoundSession<TagB>>);
  STATIC_REQUIRE_FALSE(can_set<ClientB, BoundSession<TagA>>);

  // A reference to a bound session is the same session.
  STATIC_REQUIRE(can_set<ClientA, const BoundSession<TagA>&>);
  STATIC_REQUIRE(can_set<ClientA, BoundSession<TagA>&&>);
  STATIC_REQUIRE_FALSE(can_set<ClientA, const BoundSession<TagB>&>);

  // Unbound: bind it first (Context::bind).
  STATIC_REQUIRE(can_set<ClientA, decltype(std::declval<const CtxA&>().bind(std::declval<const UnboundSession&>()))>);
  STATIC_REQUIRE_FALSE(can_set<ClientA, UnboundSession>);

  // Raw pointer: wrap it with the context it belongs to (Context::share_session / adopt_session).
  STATIC_REQUIRE(can_set<ClientA, decltype(std::declval<const CtxA&>().share_session(nullptr))>);
  STATIC_REQUIRE_FALSE(can_set<ClientA, SSL_SESSION*>);
  STATIC_REQUIRE_FALSE(can_set<ClientA, const SSL_SESSION*>);
  STATIC_REQUIRE_FALSE(can_set<ClientA, std::nullptr_t>);

  // The tagged pointer and the bare handle are not sessions either.
  STATIC_REQUIRE(can_set<ClientA, tlsresume::Session<tlsresume::Bound<TagA>>>);
  STATIC_REQUIRE_FALSE(can_set<ClientA, tlsresume::Bound<TagA>>);
  STATIC_REQUIRE_FALSE(can_set<ClientA, tlsresume::detail::Handle<SSL_SESSION>>);

  // set_session changes the connection: not on a const client.
  STATIC_REQUIRE(can_set<ClientA, BoundSession<TagA>>);
  STATIC_REQUIRE_FALSE(can_set<const ClientA, BoundSession<TagA>>);
}

TEST_CASE("session_from_this_context truth table", "[concepts]") {
  using tlsresume::session_from_this_context;
  STATIC_REQUIRE(session_from_this_context<BoundSession<TagA>, CtxA>);
  STATIC_REQUIRE_FALSE(session_from_this_context<BoundSession<TagB>, CtxA>);
  STATIC_REQUIRE(session_from_this_context<BoundSession<TagB>, CtxB>);
  STATIC_REQUIRE_FALSE(session_from_this_context<BoundSession<TagA>, CtxB>);

  STATIC_REQUIRE(session_from_this_context<const BoundSession<TagA>&, CtxA>);
  STATIC_REQUIRE(session_from_this_context<BoundSession<TagA>&&, CtxA>);
  STATIC_REQUIRE(session_from_this_context<const volatile BoundSession<TagA>, CtxA>);
  STATIC_REQUIRE_FALSE(session_from_this_context<const BoundSession<TagB>&, CtxA>);

  STATIC_REQUIRE(session_from_this_context<CtxA::session_type, CtxA>);
  STATIC_REQUIRE_FALSE(session_from_this_context<UnboundSession, CtxA>);
  STATIC_REQUIRE_FALSE(session_from_this_context<SSL_SESSION*, CtxA>);
  STATIC_REQUIRE_FALSE(session_from_this_context<tlsresume::Bound<TagA>, CtxA>);
  STATIC_REQUIRE_FALSE(session_from_this_context<int, CtxA>);
}

TEST_CASE("bound_session truth table", "[concepts]") {
  using tlsresume::bound_session;
  STATIC_REQUIRE(bound_session<BoundSession<TagA>>);
  STATIC_REQUIRE_FALSE(bound_session<UnboundSession>);
  STATIC_REQUIRE(bound_session<BoundSession<TagB>>);
  STATIC_REQUIRE_FALSE(bound_session<SSL_SESSION*>);
  STATIC_REQUIRE(bound_session<const BoundSession<TagA>&>);
  STATIC_REQUIRE_FALSE(bound_session<const UnboundSession&>);
  STATIC_REQUIRE(bound_session<BoundSession<TagA>&&>);
  STATIC_REQUIRE_FALSE(bound_session<tlsresume::Bound<TagA>>);
  STATIC_REQUIRE_FALSE(bound_session<tlsresume::detail::Handle<SSL_SESSION>>);
  STATIC_REQUIRE_FALSE(bound_session<std::nullptr_t>);

  STATIC_REQUIRE(BoundSession<TagA>::is_bound);
  STATIC_REQUIRE_FALSE(UnboundSession::is_bound);
  STATIC_REQUIRE(std::same_as<BoundSession<TagA>::context_tag, TagA>);
  STATIC_REQUIRE_FALSE(std::same_as<BoundSession<TagA>::context_tag, TagB>);
  STATIC_REQUIRE(std::same_as<UnboundSession::context_tag, void>);
  STATIC_REQUIRE(std::same_as<CtxA::session_type, BoundSession<TagA>>);
  STATIC_REQUIRE(std::same_as<ClientA::session_type, BoundSession<TagA>>);
  STATIC_REQUIRE_FALSE(std::same_as<ClientA::session_type, BoundSession<TagB>>);
}

TEST_CASE("tlsresume_session truth table", "[concepts]") {
  using tlsresume::tlsresume_session;
  STATIC_REQUIRE(tlsresume_session<UnboundSession>);
  STATIC_REQUIRE_FALSE(tlsresume_session<SSL_SESSION*>);
  STATIC_REQUIRE(tlsresume_session<BoundSession<TagA>>);
  STATIC_REQUIRE_FALSE(tlsresume_session<tlsresume::Bound<TagA>>);
  STATIC_REQUIRE(tlsresume_session<const UnboundSession&>);
  STATIC_REQUIRE_FALSE(tlsresume_session<const SSL_SESSION*>);
  STATIC_REQUIRE(tlsresume_session<BoundSession<TagB>&&>);
  STATIC_REQUIRE_FALSE(tlsresume_session<tlsresume::detail::Handle<SSL_SESSION>>);
  STATIC_REQUIRE(tlsresume_session<const volatile BoundSession<TagA>>);
  STATIC_REQUIRE_FALSE(tlsresume_session<std::nullptr_t>);
  STATIC_REQUIRE_FALSE(tlsresume_session<CtxA>);
  STATIC_REQUIRE_FALSE(tlsresume_session<int>);
}

TEST_CASE("Client: one owner, movable, not copyable", "[concepts]") {
  STATIC_REQUIRE(std::is_nothrow_move_constructible_v<ClientA>);
  STATIC_REQUIRE_FALSE(std::is_copy_constructible_v<ClientA>);
  STATIC_REQUIRE(std::is_nothrow_move_assignable_v<ClientA>);
  STATIC_REQUIRE_FALSE(std::is_copy_assignable_v<ClientA>);
  STATIC_REQUIRE(std::movable<ClientA>);
  STATIC_REQUIRE_FALSE(std::copyable<ClientA>);

  // Made from its own context type only, and only explicitly.
  STATIC_REQUIRE(std::is_constructible_v<ClientA, const CtxA&>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<ClientA, const CtxB&>);
  STATIC_REQUIRE_FALSE(std::is_convertible_v<const CtxA&, ClientA>);
  STATIC_REQUIRE_FALSE(std::is_default_constructible_v<ClientA>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<ClientA, SSL*>);
}

TEST_CASE("Session: copyable (reference counted), nothrow movable", "[concepts]") {
  STATIC_REQUIRE(std::is_copy_constructible_v<BoundSession<TagA>>);
  STATIC_REQUIRE(std::is_copy_assignable_v<BoundSession<TagA>>);
  STATIC_REQUIRE(std::is_nothrow_move_constructible_v<BoundSession<TagA>>);
  STATIC_REQUIRE(std::is_nothrow_move_assignable_v<BoundSession<TagA>>);
  STATIC_REQUIRE(std::copyable<BoundSession<TagA>>);
  STATIC_REQUIRE(std::copyable<UnboundSession>);
  STATIC_REQUIRE(std::is_nothrow_move_constructible_v<UnboundSession>);
  STATIC_REQUIRE(std::is_nothrow_move_assignable_v<UnboundSession>);
  STATIC_REQUIRE(std::equality_comparable<BoundSession<TagA>>);
  STATIC_REQUIRE(std::equality_comparable<UnboundSession>);
}

TEST_CASE("Session: ownership is spelled out, never implied by a pointer", "[concepts]") {
  // Default (empty) is fine; a pointer must go through adopt/share (or a context's wrappers).
  STATIC_REQUIRE(std::is_nothrow_default_constructible_v<UnboundSession>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<UnboundSession, SSL_SESSION*>);
  STATIC_REQUIRE(std::is_default_constructible_v<BoundSession<TagA>>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<BoundSession<TagA>, SSL_SESSION*>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<UnboundSession, std::nullptr_t>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<BoundSession<TagA>, std::nullptr_t>);
  STATIC_REQUIRE_FALSE(std::is_convertible_v<SSL_SESSION*, UnboundSession>);
  STATIC_REQUIRE_FALSE(std::is_convertible_v<std::nullptr_t, BoundSession<TagA>>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<BoundSession<TagA>, tlsresume::Bound<TagA>>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<UnboundSession, tlsresume::detail::Handle<SSL_SESSION>>);

  // No conversion between bindings: a session changes context only through bind/copy_session.
  STATIC_REQUIRE(std::is_convertible_v<BoundSession<TagA>, BoundSession<TagA>>);
  STATIC_REQUIRE_FALSE(std::is_convertible_v<BoundSession<TagA>, BoundSession<TagB>>);
  STATIC_REQUIRE_FALSE(std::is_convertible_v<UnboundSession, BoundSession<TagA>>);
  STATIC_REQUIRE_FALSE(std::is_convertible_v<BoundSession<TagA>, UnboundSession>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<BoundSession<TagA>, UnboundSession>);

  // A session does not decay back to a raw pointer (native_handle() is explicit).
  STATIC_REQUIRE(std::same_as<decltype(std::declval<const BoundSession<TagA>&>().native_handle()), SSL_SESSION*>);
  STATIC_REQUIRE_FALSE(std::is_convertible_v<BoundSession<TagA>, SSL_SESSION*>);
  STATIC_REQUIRE_FALSE(std::is_convertible_v<UnboundSession, bool>);  // operator bool is explicit
  STATIC_REQUIRE(std::is_constructible_v<bool, UnboundSession>);
}

TEST_CASE("Context::bind takes only an UnboundSession", "[concepts]") {
  STATIC_REQUIRE(can_bind<CtxA, UnboundSession>);
  STATIC_REQUIRE_FALSE(can_bind<CtxA, BoundSession<TagA>>);
  STATIC_REQUIRE(can_bind<CtxB, UnboundSession>);
  STATIC_REQUIRE_FALSE(can_bind<CtxA, BoundSession<TagB>>);
  STATIC_REQUIRE(can_bind<CtxA, const UnboundSession&>);
  STATIC_REQUIRE_FALSE(can_bind<CtxA, SSL_SESSION*>);
  STATIC_REQUIRE_FALSE(can_bind<CtxA, std::nullptr_t>);
  STATIC_REQUIRE(std::same_as<decltype(std::declval<const CtxA&>().bind(std::declval<const UnboundSession&>())),
                              BoundSession<TagA>>);

  // Moving a session across contexts is explicit: copy_session takes any session.
  STATIC_REQUIRE(can_copy_session<CtxA, BoundSession<TagB>>);
  STATIC_REQUIRE_FALSE(can_copy_session<CtxA, SSL_SESSION*>);
  STATIC_REQUIRE(can_copy_session<CtxA, UnboundSession>);
  STATIC_REQUIRE(can_copy_session<CtxA, BoundSession<TagA>>);
}

TEST_CASE("Session::from_der exists only for unbound sessions", "[concepts]") {
  STATIC_REQUIRE(can_from_der<UnboundSession>);
  STATIC_REQUIRE_FALSE(can_from_der<BoundSession<TagA>>);
  STATIC_REQUIRE(std::same_as<decltype(UnboundSession::from_der(std::span<const std::byte>())), UnboundSession>);
  STATIC_REQUIRE_FALSE(can_from_der<BoundSession<TagB>>);
}

TEST_CASE("Handle and Context are copyable handles", "[concepts]") {
  using tlsresume::detail::Handle;
  STATIC_REQUIRE(std::copyable<Handle<SSL_SESSION>>);
  STATIC_REQUIRE(std::is_nothrow_move_constructible_v<Handle<SSL_SESSION>>);
  STATIC_REQUIRE(std::is_nothrow_move_assignable_v<Handle<SSL_SESSION>>);
  STATIC_REQUIRE(std::copyable<Handle<SSL_CTX>>);
  STATIC_REQUIRE(std::copyable<Handle<SSL>>);
  STATIC_REQUIRE(std::is_nothrow_default_constructible_v<Handle<SSL_SESSION>>);
  // A pointer becomes a handle only through adopt/share.
  STATIC_REQUIRE(std::same_as<decltype(Handle<SSL_SESSION>::adopt(nullptr)), Handle<SSL_SESSION>>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<Handle<SSL_SESSION>, SSL_SESSION*>);
  STATIC_REQUIRE_FALSE(std::is_convertible_v<Handle<SSL_SESSION>, bool>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<Handle<SSL_SESSION>, SSL_CTX*>);

  STATIC_REQUIRE(std::copyable<CtxA>);
  STATIC_REQUIRE(std::is_nothrow_move_constructible_v<CtxA>);
  STATIC_REQUIRE(std::is_nothrow_move_assignable_v<CtxA>);
  STATIC_REQUIRE(std::same_as<CtxA::tag_type, TagA>);
  STATIC_REQUIRE_FALSE(std::same_as<CtxA, CtxB>);
  // A context is made by create/adopt/share, never from a bare pointer or out of nothing.
  STATIC_REQUIRE_FALSE(std::is_default_constructible_v<CtxA>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<CtxA, SSL_CTX*>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<CtxA, CtxB>);
}

TEST_CASE("What compiles is accepted at run time: a BoundSession<A> resumes on a Client<Context<A>>",
          "[concepts]") {
  tlsresume::testing::LocalServer server;
  const CtxA ctx = test::client_context_for<CtxA>(server);

  SECTION("a session taken from the context") {
    const BoundSession<TagA> session = fresh_session(server, ctx);
    STATIC_REQUIRE(can_set<ClientA, decltype(session)>);
    ClientA client(ctx);
    client.set_server_name("localhost");
    client.set_session(session);
    auto server_side = server.handshake(client);
    CHECK(client.session_reused());
    CHECK(server_side.session_reused());
    CHECK(session.context_id() == ctx.id());
    REQUIRE_ERROR_QUEUE_EMPTY();
  }

  SECTION("an unbound session (DER round trip) after Context::bind") {
    const tlsresume::SecretBytes der = fresh_session(server, ctx).to_der();
    const UnboundSession unbound = UnboundSession::from_der(der);
    STATIC_REQUIRE_FALSE(can_set<ClientA, decltype(unbound)>);
    const auto bound = ctx.bind(unbound);
    STATIC_REQUIRE(can_set<ClientA, decltype(bound)>);
    CHECK(bound.context_id() == ctx.id());
    ClientA client(ctx);
    client.set_server_name("localhost");
    client.set_session(bound);
    auto server_side = server.handshake(client);
    CHECK(client.session_reused());
    CHECK(server_side.session_reused());
    REQUIRE_ERROR_QUEUE_EMPTY();
  }

  SECTION("a raw pointer wrapped with Context::share_session") {
    const BoundSession<TagA> session = fresh_session(server, ctx);
    SSL_SESSION* raw = session.native_handle();
    STATIC_REQUIRE_FALSE(can_set<ClientA, decltype(raw)>);
    const auto wrapped = ctx.share_session(raw);
    STATIC_REQUIRE(can_set<ClientA, decltype(wrapped)>);
    ClientA client(ctx);
    client.set_server_name("localhost");
    client.set_session(wrapped);
    auto server_side = server.handshake(client);
    CHECK(client.session_reused());
    CHECK(server_side.session_reused());
    REQUIRE_ERROR_QUEUE_EMPTY();
  }
}

TEST_CASE("What only the run-time check can see: another instance of the same context type",
          "[concepts]") {
  tlsresume::testing::LocalServer server;
  const CtxA ctx = test::client_context_for<CtxA>(server);
  const CtxA other = test::client_context_for<CtxA>(server);
  REQUIRE(ctx.id() != other.id());

  const BoundSession<TagA> session = fresh_session(server, ctx);
  ClientA client(other);
  // Same tag: the type system accepts it...
  STATIC_REQUIRE(can_set<ClientA, BoundSession<TagA>>);
  // ...and the context id refuses it.
  try {
    client.set_session(session);
    FAIL("set_session accepted a session bound to another Context<TagA> instance");
  } catch (const tlsresume::Error& e) {
    CHECK(e.code() == tlsresume::errc::wrong_context);
  }
  REQUIRE_ERROR_QUEUE_EMPTY();

  // The explicit way across instances: copy_session binds a copy to `other`.
  const auto copied = other.copy_session(session);
  CHECK(copied.context_id() == other.id());
  client.set_session(copied);
  auto server_side = server.handshake(client);
  CHECK(client.session_reused());
  CHECK(server_side.session_reused());
  REQUIRE_ERROR_QUEUE_EMPTY();
}
