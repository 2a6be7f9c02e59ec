// Session<Ptr>: ownership (copy = up-ref, destroy = free, move = no reference-count traffic),
// bound/unbound type facts, accessors after real TLS 1.3 and TLS 1.2 handshakes, DER round trips,
// binding and copying across contexts (proved by real resumption), and from_der's failures.

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "support.hpp"

namespace {

using namespace std::chrono_literals;
using tlsresume::BoundSession;
using tlsresume::ProtocolVersion;
using tlsresume::UnboundSession;
using tlsresume::testing::LocalServer;
using tlsresume::testing::ServerOptions;
using test::TagA;
using test::TagB;

ServerOptions server_options(ProtocolVersion max_version, bool tickets = true, std::string alpn = {}) {
  ServerOptions options;
  options.max_version = max_version;
  options.tickets = tickets;
  options.alpn = std::move(alpn);
  return options;
}

/// Connects a fresh client of `ctx` to `server` as `host`, collects the tickets that arrived,
/// closes cleanly (so the session stays resumable) and returns the session the context kept for
/// that peer name.
template <class Ctx>
typename Ctx::session_type handshake_and_take(LocalServer& server, const Ctx& ctx, std::string_view host = "localhost") {
  typename Ctx::client_type client(ctx);
  client.set_server_name(host);
  auto connection = server.handshake(client);
  client.await_tickets(0ms, 2);
  REQUIRE(client.shutdown() == tlsresume::IoStatus::done);
  auto session = ctx.take_recent_session(host);
  REQUIRE(session.has_value());
  REQUIRE(*session);
  return std::move(*session);
}

/// Offers `session` on a new connection to `server`; returns {client resumed, server resumed}.
template <class Ctx> std::pair<bool, bool> resumes(LocalServer& server, const Ctx& ctx,
                                                   const typename Ctx::session_type& session) {
  typename Ctx::client_type client(ctx);
  client.set_server_name("localhost");
  client.set_session(session);
  auto connection = server.handshake(client);
  client.await_tickets(0ms, 2);
  REQUIRE(client.shutdown() == tlsresume::IoStatus::done);
  return {client.session_reused(), connection.session_reused()};
}

/// A DER-encoded session from a real handshake with a server of the given maximum version.
tlsresume::SecretBytes real_der(ProtocolVersion max_version = ProtocolVersion::tls1_3) {
  LocalServer server(server_options(max_version));
  auto ctx = test::client_context_for(server);
  auto der = handshake_and_take(server, ctx).to_der();
  REQUIRE_FALSE(der.empty());
  return der;
}

/// `d2i_SSL_SESSION` by hand: a raw session carrying one reference owned by the caller.
SSL_SESSION* raw_from_der(std::span<const std::byte> der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  SSL_SESSION* s = d2i_SSL_SESSION(nullptr, &p, static_cast<long>(der.size()));
  REQUIRE(s != nullptr);
  return s;
}

std::vector<std::byte> bytes_of(std::span<const std::byte> s) { return {s.begin(), s.end()}; }

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

/// Calls `f`, which must throw `tlsresume::Error` with `expected`; returns the error's what().
template <class F> std::string require_error(F&& f, tlsresume::errc expected) {
  try {
    f();
  } catch (const tlsresume::Error& e) {
    INFO(e.what());
    REQUIRE(e.code() == expected);
    REQUIRE(e.code().category().name() == std::string_view("tlsresume"));
    REQUIRE_ERROR_QUEUE_EMPTY();
    return e.what();
  }
  FAIL("no tlsresume::Error was thrown");
  return {};
}

/// Every accessor of an empty session throws Error(invalid_argument) and leaves the queue empty.
template <class S> void require_accessors_throw_on_empty(const S& s) {
  REQUIRE_FALSE(s);
  REQUIRE(s.native_handle() == nullptr);
  const auto invalid = tlsresume::errc::invalid_argument;
  const std::string what = require_error([&] { (void)s.protocol_version(); }, invalid);
  REQUIRE(contains(what, "empty"));
  require_error([&] { (void)s.cipher_name(); }, invalid);
  require_error([&] { (void)s.creation_time(); }, invalid);
  require_error([&] { (void)s.expiry(); }, invalid);
  require_error([&] { (void)s.is_resumable(); }, invalid);
  require_error([&] { (void)s.has_ticket(); }, invalid);
  require_error([&] { (void)s.ticket_lifetime_hint(); }, invalid);
  require_error([&] { (void)s.max_early_data(); }, invalid);
  require_error([&] { (void)s.alpn(); }, invalid);
  require_error([&] { (void)s.requested_server_name(); }, invalid);
  require_error([&] { (void)s.peer_name(); }, invalid);
  require_error([&] { (void)s.id(); }, invalid);
  require_error([&] { (void)s.to_der(); }, invalid);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Ownership
// ---------------------------------------------------------------------------------------------

TEST_CASE("a copied session is freed only when its last copy is destroyed", "[session]") {
  const auto der = real_der();
  auto original = UnboundSession::from_der(der);
  auto token = test::FreeObserver::watch(original.native_handle());
  SSL_SESSION* const native = original.native_handle();
  {
    UnboundSession copy = original;  // copy construction: up-ref
    REQUIRE(copy.native_handle() == native);
    REQUIRE(copy == original);
    UnboundSession assigned;
    assigned = copy;  // copy assignment: up-ref
    REQUIRE(assigned.native_handle() == native);
    original = UnboundSession();  // the first handle gives its reference back
    REQUIRE_FALSE(original);
    REQUIRE_FALSE(token->freed);
    REQUIRE(copy.protocol_version() == ProtocolVersion::tls1_3);  // still usable through the copies
    {
      const UnboundSession& alias = assigned;
      assigned = alias;  // self-assignment keeps the reference
    }
    REQUIRE(assigned.native_handle() == native);
    REQUIRE_FALSE(token->freed);
    copy = UnboundSession();
    REQUIRE_FALSE(token->freed);
    REQUIRE(assigned.cipher_name() == std::string_view(SSL_CIPHER_get_name(SSL_SESSION_get0_cipher(native))));
  }
  // The last copy (`assigned`) went out of scope: exactly one free reached zero.
  REQUIRE(token->freed);
}

TEST_CASE("a session from a handshake outlives its client and context and is freed with its last copy",
          "[session][tls13]") {
  std::optional<BoundSession<TagA>> kept;
  std::shared_ptr<test::FreeObserver::Token> token;
  {
    LocalServer server;
    auto ctx = test::client_context_for(server);
    kept = handshake_and_take(server, ctx);
    token = test::FreeObserver::watch(kept->native_handle());
  }
  // Client, context and server are gone: the session only lives through `kept`.
  REQUIRE_FALSE(token->freed);
  REQUIRE(kept->protocol_version() == ProtocolVersion::tls1_3);
  REQUIRE(kept->is_resumable());
  auto copy = *kept;
  kept.reset();
  REQUIRE_FALSE(token->freed);
  REQUIRE_FALSE(copy.cipher_name().empty());
  copy = BoundSession<TagA>();
  REQUIRE(token->freed);
}

TEST_CASE("moving a session transfers its one reference and leaves the source empty", "[session]") {
  const auto der = real_der();
  auto source = UnboundSession::from_der(der);
  SSL_SESSION* const native = source.native_handle();
  auto token = test::FreeObserver::watch(native);

  SECTION("move construction") {
    UnboundSession target(std::move(source));
    REQUIRE(target.native_handle() == native);
    require_accessors_throw_on_empty(source);  // NOLINT(bugprone-use-after-move): the contract under test
    source = UnboundSession();                 // destroying/assigning the moved-from handle frees nothing
    REQUIRE_FALSE(token->freed);
    REQUIRE(target.protocol_version() == ProtocolVersion::tls1_3);
    // If the move had added a reference, this would not be the final free.
    target = UnboundSession();
    REQUIRE(token->freed);
  }
  SECTION("move assignment releases the target's previous session") {
    auto other = UnboundSession::from_der(der);
    auto other_token = test::FreeObserver::watch(other.native_handle());
    other = std::move(source);
    REQUIRE(other_token->freed);  // the session `other` held before is released at once
    REQUIRE(other.native_handle() == native);
    REQUIRE_FALSE(source);  // NOLINT(bugprone-use-after-move)
    REQUIRE_FALSE(token->freed);
    other = UnboundSession();
    REQUIRE(token->freed);
  }
  STATIC_REQUIRE(std::is_nothrow_move_constructible_v<UnboundSession>);
  STATIC_REQUIRE(std::is_nothrow_move_assignable_v<BoundSession<TagA>>);
}

TEST_CASE("a default-constructed session is empty and its accessors throw invalid_argument", "[session][errors]") {
  require_accessors_throw_on_empty(UnboundSession());
  const BoundSession<TagA> bound;
  require_accessors_throw_on_empty(bound);
  // Binding an empty session is refused too.
  auto ctx = test::CtxA::create();
  require_error([&] { (void)ctx.bind(UnboundSession()); }, tlsresume::errc::invalid_argument);
}

TEST_CASE("share adds a reference: the session survives the caller freeing its own", "[session]") {
  const auto der = real_der();
  SSL_SESSION* raw = raw_from_der(der);
  auto token = test::FreeObserver::watch(raw);
  auto shared = UnboundSession::share(raw);
  REQUIRE(shared.native_handle() == raw);
  SSL_SESSION_free(raw);  // the caller's own reference
  REQUIRE_FALSE(token->freed);
  REQUIRE(shared.protocol_version() == ProtocolVersion::tls1_3);
  REQUIRE_FALSE(shared.id().empty());
  shared = UnboundSession();
  REQUIRE(token->freed);
}

TEST_CASE("adopt takes over the caller's reference without adding one", "[session]") {
  const auto der = real_der();
  SSL_SESSION* raw = raw_from_der(der);
  auto token = test::FreeObserver::watch(raw);
  {
    auto adopted = UnboundSession::adopt(raw);
    REQUIRE(adopted.native_handle() == raw);
    REQUIRE(adopted.protocol_version() == ProtocolVersion::tls1_3);
    REQUIRE_FALSE(token->freed);
  }
  // Nobody freed `raw` by hand: the adopted handle's destruction was the final free.
  REQUIRE(token->freed);
}

TEST_CASE("Context::share_session and adopt_session bind with share and adopt semantics", "[session]") {
  const auto der = real_der();
  auto ctx = test::CtxA::create();

  SSL_SESSION* raw_shared = raw_from_der(der);
  auto shared_token = test::FreeObserver::watch(raw_shared);
  auto shared = ctx.share_session(raw_shared);
  SSL_SESSION_free(raw_shared);
  REQUIRE_FALSE(shared_token->freed);
  REQUIRE(shared.context_id() == ctx.id());
  REQUIRE(shared.native_handle() == raw_shared);

  SSL_SESSION* raw_adopted = raw_from_der(der);
  auto adopted_token = test::FreeObserver::watch(raw_adopted);
  auto adopted = ctx.adopt_session(raw_adopted);
  REQUIRE(adopted.context_id() == ctx.id());
  REQUIRE(adopted.native_handle() == raw_adopted);

  shared = BoundSession<TagA>();
  adopted = BoundSession<TagA>();
  REQUIRE(shared_token->freed);
  REQUIRE(adopted_token->freed);
}

TEST_CASE("sharing or adopting a null pointer gives an empty session", "[session]") {
  REQUIRE_FALSE(UnboundSession::share(nullptr));
  REQUIRE_FALSE(UnboundSession::adopt(nullptr));
  REQUIRE_ERROR_QUEUE_EMPTY();
}

// ---------------------------------------------------------------------------------------------
// Type facts
// ---------------------------------------------------------------------------------------------

namespace {
template <class S>
concept has_from_der = requires(std::span<const std::byte> der) { S::from_der(der); };
template <class S>
concept has_context_id = requires(const S& s) { s.context_id(); };
}  // namespace

TEST_CASE("UnboundSession and BoundSession<Tag> carry their binding in the type", "[session]") {
  STATIC_REQUIRE_FALSE(UnboundSession::is_bound);
  STATIC_REQUIRE(BoundSession<TagA>::is_bound);
  STATIC_REQUIRE(std::is_same_v<UnboundSession::context_tag, void>);
  STATIC_REQUIRE(std::is_same_v<BoundSession<TagA>::context_tag, TagA>);
  STATIC_REQUIRE(std::is_same_v<BoundSession<TagB>::context_tag, TagB>);
  STATIC_REQUIRE(std::is_same_v<test::CtxA::session_type, BoundSession<TagA>>);
  STATIC_REQUIRE_FALSE(std::is_same_v<BoundSession<TagA>, BoundSession<TagB>>);
  STATIC_REQUIRE(std::is_same_v<UnboundSession::native_type, SSL_SESSION>);
  STATIC_REQUIRE(std::is_same_v<BoundSession<TagA>::pointer, tlsresume::Bound<TagA, SSL_SESSION*>>);

  // No implicit (or explicit) construction from a raw or tagged pointer: ownership must be
  // spelled out with adopt/share.
  STATIC_REQUIRE_FALSE(std::is_constructible_v<UnboundSession, SSL_SESSION*>);
  STATIC_REQUIRE_FALSE(std::is_convertible_v<SSL_SESSION*, UnboundSession>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<BoundSession<TagA>, SSL_SESSION*>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<BoundSession<TagA>, tlsresume::Bound<TagA>>);
  // Bound and unbound sessions, and sessions of different tags, do not convert into each other.
  STATIC_REQUIRE_FALSE(std::is_constructible_v<BoundSession<TagA>, UnboundSession>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<UnboundSession, BoundSession<TagA>>);
  STATIC_REQUIRE_FALSE(std::is_constructible_v<BoundSession<TagA>, BoundSession<TagB>>);
  STATIC_REQUIRE_FALSE(std::is_convertible_v<UnboundSession, bool>);  // explicit operator bool only

  // Concepts.
  STATIC_REQUIRE(tlsresume::tlsresume_session<UnboundSession>);
  STATIC_REQUIRE(tlsresume::tlsresume_session<const BoundSession<TagA>&>);
  STATIC_REQUIRE_FALSE(tlsresume::tlsresume_session<SSL_SESSION*>);
  STATIC_REQUIRE(tlsresume::bound_session<BoundSession<TagA>>);
  STATIC_REQUIRE_FALSE(tlsresume::bound_session<UnboundSession>);
  STATIC_REQUIRE(tlsresume::session_from_this_context<BoundSession<TagA>, test::CtxA>);
  STATIC_REQUIRE_FALSE(tlsresume::session_from_this_context<BoundSession<TagA>, test::CtxB>);
  STATIC_REQUIRE_FALSE(tlsresume::session_from_this_context<UnboundSession, test::CtxA>);

  // from_der only exists for unbound sessions; context_id only for bound ones.
  STATIC_REQUIRE(has_from_der<UnboundSession>);
  STATIC_REQUIRE_FALSE(has_from_der<BoundSession<TagA>>);
  STATIC_REQUIRE(has_context_id<BoundSession<TagA>>);
  STATIC_REQUIRE_FALSE(has_context_id<UnboundSession>);
}

TEST_CASE("a bound session's context_id is the id of the context instance it came from", "[session][tls13]") {
  LocalServer server;
  auto ctx_a = test::client_context_for(server);
  auto other_a = test::client_context_for(server);
  const auto ctx_a_copy = ctx_a;
  REQUIRE(ctx_a_copy.id() == ctx_a.id());  // copies share one instance
  REQUIRE(other_a.id() != ctx_a.id());     // another instance of the same type does not

  test::ClientA client(ctx_a);
  client.set_server_name("localhost");
  auto connection = server.handshake(client);
  client.await_tickets(0ms, 2);
  auto current = client.session();
  REQUIRE(current.has_value());
  REQUIRE(current->context_id() == ctx_a.id());
  REQUIRE(client.shutdown() == tlsresume::IoStatus::done);

  auto taken = ctx_a.take_recent_session("localhost");
  REQUIRE(taken.has_value());
  REQUIRE(taken->context_id() == ctx_a.id());
  REQUIRE(taken->pointer_value().context == ctx_a.id());
  REQUIRE(taken->pointer_value().ptr == taken->native_handle());
  REQUIRE_FALSE(other_a.take_recent_session("localhost").has_value());  // nothing arrived there
}

// ---------------------------------------------------------------------------------------------
// Accessors after a real handshake
// ---------------------------------------------------------------------------------------------

namespace {
/// The accessor checks shared by both protocol versions; `client` is the connection the session
/// arrived on (still open), `before`/`after` bracket the handshake.
template <class S, class C>
void check_common_accessors(const S& s, const C& client, ProtocolVersion expected,
                            std::chrono::system_clock::time_point before, std::chrono::system_clock::time_point after) {
  REQUIRE(s.protocol_version() == expected);
  REQUIRE(s.protocol_version() == client.protocol_version());
  REQUIRE_FALSE(s.cipher_name().empty());
  REQUIRE(s.cipher_name() == client.cipher_name());
  // OpenSSL 3.0 keeps whole seconds: the creation time is within the handshake's second(s).
  REQUIRE(s.creation_time() >= std::chrono::floor<std::chrono::seconds>(before) - 1s);
  REQUIRE(s.creation_time() <= after + 1s);
  REQUIRE(s.expiry() > s.creation_time());
  REQUIRE(s.expiry() > after);  // usable right now
  REQUIRE(s.is_resumable());
  REQUIRE(s.max_early_data() == 0U);  // the server allows no early data
  REQUIRE_FALSE(s.id().empty());
  REQUIRE(s.id().size() <= static_cast<std::size_t>(SSL_MAX_SSL_SESSION_ID_LENGTH));
  REQUIRE(s.alpn().empty());  // nothing offered
}
}  // namespace

TEST_CASE("TLS 1.3 session accessors report the handshake that produced the ticket", "[session][tls13]") {
  LocalServer server;
  auto ctx = test::client_context_for(server);
  test::ClientA client(ctx);
  client.set_server_name("localhost");
  const auto before = std::chrono::system_clock::now();
  auto connection = server.handshake(client);
  REQUIRE(client.await_tickets(0ms, 2) == 2U);  // the server sends two NewSessionTickets
  const auto after = std::chrono::system_clock::now();
  auto s = ctx.take_recent_session("localhost");
  REQUIRE(s.has_value());

  check_common_accessors(*s, client, ProtocolVersion::tls1_3, before, after);
  REQUIRE(s->has_ticket());
  REQUIRE(s->ticket_lifetime_hint() > 0s);
  REQUIRE(s->requested_server_name() == "localhost");
  REQUIRE(s->peer_name() == "localhost");
  // A TLS 1.3 ticket is single use: taking it removed it, the other ticket is still there and
  // is a different session object with its own id.
  auto second = ctx.take_recent_session("localhost");
  REQUIRE(second.has_value());
  REQUIRE(second->native_handle() != s->native_handle());
  REQUIRE_FALSE(std::ranges::equal(second->id(), s->id()));
  REQUIRE_FALSE(ctx.take_recent_session("localhost").has_value());
  REQUIRE(client.shutdown() == tlsresume::IoStatus::done);
}

TEST_CASE("TLS 1.2 session with a ticket: accessors report the handshake", "[session][tls12]") {
  LocalServer server(server_options(ProtocolVersion::tls1_2));
  auto ctx = test::client_context_for(server);
  test::ClientA client(ctx);
  client.set_server_name("localhost");
  const auto before = std::chrono::system_clock::now();
  auto connection = server.handshake(client);
  REQUIRE(client.await_tickets(0ms, 2) == 1U);  // TLS 1.2: one session, at the end of the handshake
  const auto after = std::chrono::system_clock::now();
  auto s = ctx.take_recent_session("localhost");
  REQUIRE(s.has_value());

  check_common_accessors(*s, client, ProtocolVersion::tls1_2, before, after);
  REQUIRE(s->has_ticket());
  REQUIRE(s->ticket_lifetime_hint() > 0s);
  REQUIRE(s->requested_server_name() == "localhost");
  REQUIRE(s->peer_name() == "localhost");
  // The connection's current session is the same TLS 1.2 session object.
  auto current = client.session();
  REQUIRE(current.has_value());
  REQUIRE(current->native_handle() == s->native_handle());
  REQUIRE(client.shutdown() == tlsresume::IoStatus::done);
}

TEST_CASE("TLS 1.2 session without tickets has no ticket and no lifetime hint", "[session][tls12]") {
  LocalServer server(server_options(ProtocolVersion::tls1_2, /*tickets=*/false));
  auto ctx = test::client_context_for(server);
  test::ClientA client(ctx);
  client.set_server_name("localhost");
  const auto before = std::chrono::system_clock::now();
  auto connection = server.handshake(client);
  client.await_tickets(0ms, 2);
  const auto after = std::chrono::system_clock::now();
  auto s = ctx.take_recent_session("localhost");
  REQUIRE(s.has_value());

  check_common_accessors(*s, client, ProtocolVersion::tls1_2, before, after);
  REQUIRE_FALSE(s->has_ticket());
  REQUIRE(s->ticket_lifetime_hint() == 0s);
  // Without a ticket the id is the server's session id, which the server knows too.
  unsigned int server_id_len = 0;
  const unsigned char* server_id = SSL_SESSION_get_id(SSL_get_session(connection.native_handle()), &server_id_len);
  REQUIRE(std::ranges::equal(s->id(), std::span(reinterpret_cast<const std::byte*>(server_id), server_id_len)));
  REQUIRE(client.shutdown() == tlsresume::IoStatus::done);
}

TEST_CASE("alpn() is the protocol the server selected", "[session][tls13][tls12]") {
  const auto version = GENERATE(ProtocolVersion::tls1_3, ProtocolVersion::tls1_2);
  CAPTURE(tlsresume::to_string(version));
  LocalServer server(server_options(version, true, "http/1.1"));
  auto ctx = test::client_context_for(server);
  ctx.set_alpn_protocols({"h2", "http/1.1"});
  auto s = handshake_and_take(server, ctx);
  REQUIRE(s.protocol_version() == version);
  REQUIRE(s.alpn() == "http/1.1");
  // The protocol survives DER (it is part of the encoded session).
  REQUIRE(UnboundSession::from_der(s.to_der()).alpn() == "http/1.1");
}

TEST_CASE("alpn() is empty when the server selects no protocol", "[session][tls13][tls12]") {
  const auto version = GENERATE(ProtocolVersion::tls1_3, ProtocolVersion::tls1_2);
  CAPTURE(tlsresume::to_string(version));
  // The server only speaks "spdy/1", which the client does not offer.
  LocalServer server(server_options(version, true, "spdy/1"));
  auto ctx = test::client_context_for(server);
  ctx.set_alpn_protocols({"h2", "http/1.1"});
  auto s = handshake_and_take(server, ctx);
  REQUIRE(s.protocol_version() == version);
  REQUIRE(s.alpn().empty());
}

TEST_CASE("requested_server_name() is the SNI asked for and empty for an IP literal; peer_name() is the name given",
          "[session][tls13][tls12]") {
  const auto version = GENERATE(ProtocolVersion::tls1_3, ProtocolVersion::tls1_2);
  CAPTURE(tlsresume::to_string(version));
  LocalServer server(server_options(version));
  auto ctx = test::client_context_for(server);

  auto named = handshake_and_take(server, ctx, "localhost");
  REQUIRE(named.requested_server_name() == "localhost");
  REQUIRE(named.peer_name() == "localhost");

  // An IP literal sends no SNI (RFC 6066), but the session remembers which peer it came from.
  auto by_ip = handshake_and_take(server, ctx, "127.0.0.1");
  REQUIRE(by_ip.requested_server_name().empty());
  REQUIRE(by_ip.peer_name() == "127.0.0.1");
  REQUIRE(by_ip.native_handle() != named.native_handle());
  // Sessions are filed by peer name: nothing under the empty name or the other peer's name.
  REQUIRE_FALSE(ctx.take_recent_session("").has_value());
  REQUIRE_FALSE(ctx.take_recent_session("::1").has_value());
  if (version == ProtocolVersion::tls1_2) {  // TLS 1.2 sessions stay after being taken
    REQUIRE(ctx.take_recent_session("127.0.0.1")->native_handle() == by_ip.native_handle());
    REQUIRE(ctx.take_recent_session("localhost")->native_handle() == named.native_handle());
  }
}

TEST_CASE("is_resumable turns false once the connection owning the session is dropped uncleanly",
          "[session][tls13][tls12]") {
  const auto version = GENERATE(ProtocolVersion::tls1_3, ProtocolVersion::tls1_2);
  CAPTURE(tlsresume::to_string(version));
  LocalServer server(server_options(version));
  auto ctx = test::client_context_for(server);
  std::optional<BoundSession<TagA>> current;
  {
    test::ClientA client(ctx);
    client.set_server_name("localhost");
    auto connection = server.handshake(client);
    client.await_tickets(0ms, 2);
    current = client.session();
    REQUIRE(current.has_value());
    REQUIRE(current->is_resumable());
    // no shutdown(): SSL_free invalidates the connection's current session
  }
  REQUIRE_FALSE(current->is_resumable());
  REQUIRE_ERROR_QUEUE_EMPTY();
}

// ---------------------------------------------------------------------------------------------
// DER, bind, copy_session
// ---------------------------------------------------------------------------------------------

TEST_CASE("to_der/from_der round trip keeps the session's fields but not the requested server name",
          "[session][tls13][tls12]") {
  const auto version = GENERATE(ProtocolVersion::tls1_3, ProtocolVersion::tls1_2);
  CAPTURE(tlsresume::to_string(version));
  LocalServer server(server_options(version));
  auto ctx = test::client_context_for(server);
  const auto original = handshake_and_take(server, ctx);
  const auto der = original.to_der();
  REQUIRE_FALSE(der.empty());

  const auto parsed = UnboundSession::from_der(der);
  STATIC_REQUIRE(std::is_same_v<std::remove_cvref_t<decltype(parsed)>, UnboundSession>);
  REQUIRE(parsed);
  REQUIRE(parsed.native_handle() != original.native_handle());
  REQUIRE(parsed.protocol_version() == version);
  REQUIRE(parsed.protocol_version() == original.protocol_version());
  REQUIRE(parsed.cipher_name() == original.cipher_name());
  REQUIRE(std::ranges::equal(parsed.id(), original.id()));
  REQUIRE(parsed.creation_time() == original.creation_time());
  REQUIRE(parsed.expiry() == original.expiry());
  REQUIRE(parsed.has_ticket() == original.has_ticket());
  REQUIRE(parsed.ticket_lifetime_hint() == original.ticket_lifetime_hint());
  REQUIRE(parsed.is_resumable());
  // DER does not carry what tlsresume records in ex_data.
  REQUIRE(original.requested_server_name() == "localhost");
  REQUIRE(original.peer_name() == "localhost");
  REQUIRE(parsed.requested_server_name().empty());
  REQUIRE(parsed.peer_name().empty());
  // Encoding is deterministic: the parsed session encodes to the same bytes.
  REQUIRE(bytes_of(parsed.to_der()) == bytes_of(der));
}

TEST_CASE("bind gives a new session object bound to the context, which really resumes", "[session][tls13][tls12]") {
  const auto version = GENERATE(ProtocolVersion::tls1_3, ProtocolVersion::tls1_2);
  CAPTURE(tlsresume::to_string(version));
  LocalServer server(server_options(version));
  auto ctx = test::client_context_for(server);
  const auto der = handshake_and_take(server, ctx).to_der();

  // A fresh context instance (e.g. a new process) gets the session back from its bytes.
  auto restored_ctx = test::client_context_for(server);
  const auto unbound = UnboundSession::from_der(der);
  const auto bound = restored_ctx.bind(unbound);
  STATIC_REQUIRE(std::is_same_v<std::remove_cvref_t<decltype(bound)>, BoundSession<TagA>>);
  REQUIRE(bound);
  REQUIRE(bound.native_handle() != unbound.native_handle());  // SSL_SESSION_dup
  REQUIRE(bound.context_id() == restored_ctx.id());
  REQUIRE(bound.protocol_version() == unbound.protocol_version());
  REQUIRE(bound.cipher_name() == unbound.cipher_name());
  REQUIRE(std::ranges::equal(bound.id(), unbound.id()));
  REQUIRE(bound.requested_server_name().empty());  // nothing to copy from a DER session
  REQUIRE(bound.peer_name().empty());

  const auto [client_reused, server_reused] = resumes(server, restored_ctx, bound);
  REQUIRE(client_reused);
  REQUIRE(server_reused);
  // The unbound original is untouched by the resumption of its copy.
  REQUIRE(unbound.is_resumable());
}

TEST_CASE("bind keeps the requested server name and peer name recorded on the session", "[session][tls13]") {
  LocalServer server;
  auto ctx = test::client_context_for(server);
  const auto received = handshake_and_take(server, ctx);
  REQUIRE(received.requested_server_name() == "localhost");
  const auto by_ip = handshake_and_take(server, ctx, "127.0.0.1");
  REQUIRE(by_ip.peer_name() == "127.0.0.1");
  // An unbound handle to the very same object (its ex_data carries the name).
  const auto unbound = UnboundSession::share(received.native_handle());
  auto other_ctx = test::client_context_for(server);
  const auto bound = other_ctx.bind(unbound);
  REQUIRE(bound.native_handle() != received.native_handle());
  REQUIRE(bound.requested_server_name() == "localhost");
  REQUIRE(bound.peer_name() == "localhost");
  REQUIRE(bound.context_id() == other_ctx.id());
  const auto bound_ip = other_ctx.bind(UnboundSession::share(by_ip.native_handle()));
  REQUIRE(bound_ip.requested_server_name().empty());
  REQUIRE(bound_ip.peer_name() == "127.0.0.1");
  // The copy's name is its own: the original's is unchanged and both stay readable.
  REQUIRE(received.requested_server_name() == "localhost");
}

TEST_CASE("binding the same unbound session twice gives two distinct session objects", "[session][tls13]") {
  const auto der = real_der();
  const auto unbound = UnboundSession::from_der(der);
  auto ctx = test::CtxA::create();
  const auto first = ctx.bind(unbound);
  const auto second = ctx.bind(unbound);
  REQUIRE(first.native_handle() != second.native_handle());
  REQUIRE_FALSE(first == second);
  REQUIRE(first.context_id() == second.context_id());
  REQUIRE(std::ranges::equal(first.id(), second.id()));
  // Each is an independent object: freeing one leaves the other (and the source) alive.
  auto token = test::FreeObserver::watch(first.native_handle());
  REQUIRE(bytes_of(second.to_der()) == bytes_of(unbound.to_der()));
  REQUIRE_FALSE(token->freed);
}

TEST_CASE("copy_session moves a session across contexts and it resumes against the same server",
          "[session][tls13][tls12]") {
  const auto version = GENERATE(ProtocolVersion::tls1_3, ProtocolVersion::tls1_2);
  CAPTURE(tlsresume::to_string(version));
  LocalServer server(server_options(version));
  auto ctx_b = test::client_context_for<test::CtxB>(server);
  auto ctx_a = test::client_context_for<test::CtxA>(server);
  const auto from_b = handshake_and_take(server, ctx_b);
  REQUIRE(from_b.context_id() == ctx_b.id());

  const auto in_a = ctx_a.copy_session(from_b);
  STATIC_REQUIRE(std::is_same_v<std::remove_cvref_t<decltype(in_a)>, BoundSession<TagA>>);
  REQUIRE(in_a.native_handle() != from_b.native_handle());
  REQUIRE(in_a.context_id() == ctx_a.id());
  REQUIRE(in_a.context_id() != ctx_b.id());
  REQUIRE(in_a.protocol_version() == version);
  REQUIRE(in_a.cipher_name() == from_b.cipher_name());
  REQUIRE(std::ranges::equal(in_a.id(), from_b.id()));
  REQUIRE(in_a.requested_server_name() == "localhost");  // carried over explicitly
  REQUIRE(in_a.peer_name() == "localhost");

  const auto [client_reused, server_reused] = resumes(server, ctx_a, in_a);
  REQUIRE(client_reused);
  REQUIRE(server_reused);
}

TEST_CASE("copy_session carries the peer name of a session received from an IP literal", "[session][tls13]") {
  LocalServer server;
  auto ctx_b = test::client_context_for<test::CtxB>(server);
  auto ctx_a = test::client_context_for<test::CtxA>(server);
  const auto from_b = handshake_and_take(server, ctx_b, "127.0.0.1");
  const auto in_a = ctx_a.copy_session(from_b);
  REQUIRE(in_a.requested_server_name().empty());
  REQUIRE(in_a.peer_name() == "127.0.0.1");

  test::ClientA client(ctx_a);
  client.set_server_name("127.0.0.1");
  client.set_session(in_a);
  auto connection = server.handshake(client);
  REQUIRE(client.session_reused());
  REQUIRE(connection.session_reused());
  REQUIRE(client.shutdown() == tlsresume::IoStatus::done);
}

TEST_CASE("copy_session also binds an unbound session to the context", "[session][tls13]") {
  LocalServer server;
  auto ctx = test::client_context_for(server);
  const auto der = handshake_and_take(server, ctx).to_der();
  const auto unbound = UnboundSession::from_der(der);
  const auto copied = ctx.copy_session(unbound);
  REQUIRE(copied.native_handle() != unbound.native_handle());
  REQUIRE(copied.context_id() == ctx.id());
  REQUIRE(copied.requested_server_name().empty());
  REQUIRE(copied.peer_name().empty());
  const auto [client_reused, server_reused] = resumes(server, ctx, copied);
  REQUIRE(client_reused);
  REQUIRE(server_reused);
}

// ---------------------------------------------------------------------------------------------
// from_der failures
// ---------------------------------------------------------------------------------------------

namespace {
/// Parses `der`; returns "" if it threw Error(invalid_session) and left the queue empty,
/// otherwise what went wrong. `what` receives the message when one was thrown.
std::string expect_invalid(std::span<const std::byte> der, std::string* what = nullptr) {
  try {
    auto s = UnboundSession::from_der(der);
    return "parsed (no exception)";
  } catch (const tlsresume::Error& e) {
    if (what != nullptr) {
      *what = e.what();
    }
    if (e.code() != tlsresume::errc::invalid_session) {
      return "wrong code: " + e.code().message() + " / " + e.what();
    }
    if (ERR_peek_error() != 0) {
      ERR_clear_error();
      return "OpenSSL error queue not empty";
    }
    return {};
  } catch (const std::exception& e) {
    return std::string("other exception: ") + e.what();
  }
}
}  // namespace

TEST_CASE("from_der rejects an empty buffer with invalid_session", "[session][errors]") {
  std::string what;
  REQUIRE(expect_invalid({}, &what).empty());
  REQUIRE(contains(what, "d2i_SSL_SESSION"));
  REQUIRE(contains(what, "empty"));
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("from_der rejects every truncation of a real session with invalid_session", "[session][errors][tls13][tls12]") {
  const auto version = GENERATE(ProtocolVersion::tls1_3, ProtocolVersion::tls1_2);
  CAPTURE(tlsresume::to_string(version));
  const auto der = real_der(version);
  const std::span<const std::byte> all(der);
  REQUIRE(der.size() > 100U);
  std::vector<std::string> problems;
  std::size_t without_openssl_reason = 0;
  for (std::size_t len = 1; len < der.size(); ++len) {
    std::string what;
    if (std::string problem = expect_invalid(all.first(len), &what); !problem.empty()) {
      problems.push_back("prefix " + std::to_string(len) + ": " + problem);
    }
    if (!contains(lower(what), "asn1")) {
      ++without_openssl_reason;
    }
  }
  CAPTURE(der.size());
  INFO((problems.empty() ? std::string() : problems.front()));
  REQUIRE(problems.empty());
  // OpenSSL reports each truncation from its ASN.1 decoder; the message carries that reason.
  REQUIRE(without_openssl_reason == 0U);
  // The whole buffer still parses (the loop above really cut a valid session).
  REQUIRE(UnboundSession::from_der(all).protocol_version() == version);
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("from_der on corrupted bytes either throws invalid_session or parses, never crashes", "[session][errors]") {
  const auto der = real_der();
  std::mt19937 rng(20240601U);  // fixed seed: reproducible corruptions
  std::uniform_int_distribution<int> mask_dist(1, 255);
  std::size_t rejected = 0;
  std::size_t parsed = 0;
  std::vector<std::string> problems;
  for (std::size_t pos = 0; pos < der.size(); ++pos) {
    for (const int mask : {0xFF, mask_dist(rng)}) {
      std::vector<std::byte> bad(der.begin(), der.end());
      bad[pos] ^= static_cast<std::byte>(mask);
      try {
        auto s = UnboundSession::from_der(bad);
        ++parsed;
        // A session that parses must be fully usable.
        (void)s.protocol_version();
        (void)s.cipher_name();
        (void)s.creation_time();
        (void)s.expiry();
        (void)s.is_resumable();
        (void)s.has_ticket();
        (void)s.ticket_lifetime_hint();
        (void)s.max_early_data();
        (void)s.alpn();
        (void)s.requested_server_name();
        (void)s.peer_name();
        (void)s.id();
        try {
          (void)s.to_der();
        } catch (const tlsresume::Error&) {
          // re-encoding a corrupted but parsed session may fail; it must not crash
        }
      } catch (const tlsresume::Error& e) {
        ++rejected;
        if (e.code() != tlsresume::errc::invalid_session) {
          problems.push_back("byte " + std::to_string(pos) + ": wrong code: " + e.what());
        }
      }
      if (ERR_peek_error() != 0) {
        ERR_clear_error();
        problems.push_back("byte " + std::to_string(pos) + ": OpenSSL error queue not empty");
      }
    }
  }
  CAPTURE(der.size(), rejected, parsed);
  INFO((problems.empty() ? std::string() : problems.front()));
  REQUIRE(problems.empty());
  REQUIRE(rejected + parsed == 2 * der.size());
  REQUIRE(rejected > 0U);
  // The outer SEQUENCE tag can never be flipped into a session.
  std::vector<std::byte> bad_tag(der.begin(), der.end());
  bad_tag[0] ^= std::byte{0xFF};
  REQUIRE(expect_invalid(bad_tag).empty());
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("from_der rejects trailing bytes after a session and says how many", "[session][errors]") {
  const auto der = real_der();
  SECTION("a few garbage bytes") {
    std::vector<std::byte> padded(der.begin(), der.end());
    padded.insert(padded.end(), {std::byte{0x00}, std::byte{0x01}, std::byte{0x02}});
    std::string what;
    REQUIRE(expect_invalid(padded, &what).empty());
    CAPTURE(what);
    REQUIRE(contains(what, "trailing"));
    REQUIRE(contains(what, "3 trailing bytes"));
  }
  SECTION("two sessions back to back") {
    std::vector<std::byte> twice(der.begin(), der.end());
    twice.insert(twice.end(), der.begin(), der.end());
    std::string what;
    REQUIRE(expect_invalid(twice, &what).empty());
    CAPTURE(what);
    REQUIRE(contains(what, std::to_string(der.size()) + " trailing bytes"));
  }
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("from_der's error message carries OpenSSL's reason for garbage bytes", "[session][errors]") {
  SECTION("text that is not DER at all") {
    const std::string_view text = "this is not a DER-encoded TLS session";
    std::string what;
    REQUIRE(expect_invalid(std::as_bytes(std::span(text)), &what).empty());
    CAPTURE(what);
    REQUIRE(contains(what, "d2i_SSL_SESSION"));
    REQUIRE(contains(lower(what), "asn1"));
  }
  SECTION("valid DER of something else: a certificate") {
    LocalServer server;
    unsigned char* cert_der = nullptr;
    const int len = i2d_X509(server.ca_certificate(), &cert_der);
    REQUIRE(len > 0);
    std::vector<std::byte> bytes(reinterpret_cast<const std::byte*>(cert_der),
                                 reinterpret_cast<const std::byte*>(cert_der) + len);
    OPENSSL_free(cert_der);
    std::string what;
    REQUIRE(expect_invalid(bytes, &what).empty());
    CAPTURE(what);
    REQUIRE(contains(lower(what), "asn1"));
  }
  REQUIRE_ERROR_QUEUE_EMPTY();
}
