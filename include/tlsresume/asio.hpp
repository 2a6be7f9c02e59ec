#pragma once
// Asio integration: session resumption for `asio::ssl::stream` and `boost::asio::ssl::stream`.
//
// Asio owns its `SSL_CTX` (`ssl::context`) and each stream's `SSL`. tlsresume only takes
// references (`SSL_CTX_up_ref`, `SSL_up_ref`), never ownership, and keeps its state in ex_data
// slots of its own (Asio uses the app data slot, index 0, for its verify callback; tlsresume
// never touches it). Usage, before the handshake:
//
//     asio::ssl::context asio_ctx(asio::ssl::context::tls_client);
//     asio_ctx.set_verify_mode(asio::ssl::verify_peer);          // configure first ...
//     asio_ctx.set_default_verify_paths();
//     auto ctx = tlsresume::asio::share_context<Api>(asio_ctx);   // ... then share
//     tlsresume::SessionCache<Api> cache;
//     // per connection:
//     asio::ssl::stream<asio::ip::tcp::socket> stream(io, asio_ctx);
//     // ... connect stream.next_layer() ...
//     auto r = tlsresume::asio::resume_from(stream, ctx, cache, "example.com", 443);
//     stream.handshake(asio::ssl::stream_base::client);          // or async_handshake
//     // write the request, read the response (TLS 1.3 tickets are processed while reading),
//     // then stream.shutdown() / async_shutdown(): an unclean close loses a TLS 1.2 session.
//
// The functions are templates over the stream and context types, so the same code serves
// standalone Asio and Boost.Asio; this header includes neither (include the one you use).
// See docs/asio.md.

#include <openssl/ssl.h>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>

#include "tlsresume/client.hpp"
#include "tlsresume/context.hpp"
#include "tlsresume/error.hpp"
#include "tlsresume/peer_key.hpp"
#include "tlsresume/session.hpp"

namespace tlsresume::asio {

/// An Asio SSL context (`asio::ssl::context`, `boost::asio::ssl::context`): anything whose
/// `native_handle()` is the `SSL_CTX*` it owns.
template <class C>
concept ssl_context = requires(C& c) {
  { c.native_handle() } -> std::convertible_to<SSL_CTX*>;
};

/// An Asio SSL stream (`asio::ssl::stream<Next>`, `boost::asio::ssl::stream<Next>`): anything
/// whose `native_handle()` is the `SSL*` it owns and that has a `next_layer()`.
template <class S>
concept ssl_stream = requires(S& s) {
  { s.native_handle() } -> std::same_as<SSL*>;
  s.next_layer();
};

/// A tlsresume `Context<Tag>` type.
template <class Ctx>
concept tlsresume_context = std::same_as<Ctx, Context<typename Ctx::tag_type>>;

/// What `resume_from` attached to a stream: a shared reference to the stream's `SSL`
/// (`SSL_up_ref`), the peer key, and whether a session was offered. Keeping it is optional:
/// sessions are filed into the cache by the `SSL` itself (its ex_data), whether or not this object
/// lives. It exposes only what is safe next to Asio (no I/O: Asio drives the `SSL`). Movable, not
/// copyable; a moved-from object may only be destroyed or assigned.
///
/// While it lives, the `SSL` lives: destroy it with the stream. OpenSSL's unclean-close rule (a
/// connection freed without a close_notify sent loses its session) applies when the last
/// reference goes, the stream's or this one's.
template <class Ctx> class Resumption {
 public:
  using context_type = Ctx;
  using client_type = Client<Ctx>;
  using session_type = typename Ctx::session_type;

  Resumption(const Resumption&) = delete;
  Resumption& operator=(const Resumption&) = delete;
  Resumption(Resumption&&) noexcept = default;
  Resumption& operator=(Resumption&&) noexcept = default;
  /// Releases the reference to the `SSL` (`SSL_free`); the stream keeps its own.
  ~Resumption() = default;

  /// Whether a session from the cache was offered (`SSL_set_session` was called).
  [[nodiscard]] bool offered() const noexcept { return offered_; }
  /// After the handshake: whether the server resumed the offered session (`SSL_session_reused`).
  [[nodiscard]] bool session_reused() const noexcept { return client_.session_reused(); }
  /// Sessions (TLS 1.2 session, TLS 1.3 tickets) this connection has received so far; TLS 1.3
  /// tickets count once the application has read past them (no OpenSSL call).
  [[nodiscard]] std::size_t sessions_received() const noexcept { return client_.sessions_received(); }
  /// The key sessions are taken from and filed under (no OpenSSL call).
  [[nodiscard]] const PeerKey& key() const noexcept { return *client_.cache_key(); }
  /// The negotiated protocol (`SSL_version`), after the handshake.
  [[nodiscard]] ProtocolVersion protocol_version() const noexcept { return client_.protocol_version(); }
  /// Says the connection failed the caller's own checks (pinning, OCSP, CT): removes what it filed
  /// and its current session from the cache and keeps nothing it receives later
  /// (`Client::veto_caching`). Never throws.
  void veto_caching() noexcept { client_.veto_caching(); }
  /// The connection as a `Client` (const: its queries only, e.g. `session()`, `cipher_name()`).
  /// Do not drive I/O on `native_handle()` behind Asio's back.
  [[nodiscard]] const client_type& client() const noexcept { return client_; }
  /// The stream's `SSL`, borrowed (no reference added).
  [[nodiscard]] SSL* native_handle() const noexcept { return client_.native_handle(); }

 private:
  template <class C, class Cache, ssl_stream Stream>
    requires tlsresume_context<C> && cache_for_context<Cache, C>
  friend Resumption<C> resume_from(Stream& stream, const C& ctx, Cache& cache, const PeerKey& key);

  Resumption(client_type client, bool offered) : client_(std::move(client)), offered_(offered) {}

  client_type client_;
  bool offered_ = false;
};

/// Shares the `SSL_CTX` of an Asio SSL context (`native_handle()`) as a `Context<Tag>`
/// (`Context<Tag>::share`: `SSL_CTX_up_ref`, never ownership; the Asio context stays the owner
/// and may be destroyed first). Installs tlsresume's client session caching on it
/// (`SSL_CTX_set_session_cache_mode(SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE)`,
/// `SSL_CTX_sess_set_new_cb`, `SSL_CTX_sess_set_remove_cb`; it replaces callbacks set before),
/// and computes the configuration fingerprint now (`Context::refresh_fingerprint`): configure the
/// Asio context (verify mode, trust, client certificate, options) *before* sharing it, or call
/// `refresh_fingerprint()` after a later change. Sharing the same Asio context again with the
/// same `Tag` gives a copy of the same context (same `ContextId`); with another `Tag` throws
/// `Error(errc::context_mismatch)`. ALPN: set it with `Context::set_alpn_protocols`, which
/// records it for the key; `resume_from` offers exactly the key's list.
template <class Tag, ssl_context AsioContext> [[nodiscard]] Context<Tag> share_context(AsioContext& context) {
  SSL_CTX* native = context.native_handle();
  if (native == nullptr) {
    throw_error(errc::invalid_argument, "tlsresume::asio::share_context", "the Asio context has no SSL_CTX");
  }
  auto ctx = Context<Tag>::share(native);
  ctx.refresh_fingerprint();
  return ctx;
}

/// Whether `stream` was made from `ctx`'s `SSL_CTX` (`SSL_get_SSL_CTX`), i.e. from the Asio
/// context `ctx` shares.
template <ssl_stream Stream, class Ctx>
  requires tlsresume_context<Ctx>
[[nodiscard]] bool uses_context(Stream& stream, const Ctx& ctx) noexcept {
  SSL* ssl = stream.native_handle();
  return ssl != nullptr && SSL_get_SSL_CTX(ssl) == ctx.native_handle();
}

/// Attaches `cache` to a client `stream` before its handshake (`handshake` / `async_handshake`
/// with `stream_base::client`), for the peer `key` (made with `ctx.key_for`):
///   - checks that the stream was made from the Asio context `ctx` shares (`SSL_get_SSL_CTX`):
///     otherwise throws `Error(errc::context_mismatch)` and leaves the stream untouched; this is
///     the one-context rule of SSL_set_session(3) for Asio's `SSL_CTX`;
///   - puts the `SSL` in client mode if it is not yet (`SSL_set_connect_state`: an Asio context
///     made with the generic `tls` / `sslv23` method starts its `SSL`s in server mode; the client
///     handshake would set it too);
///   - takes a reference to the stream's `SSL` (`Client<Ctx>::share`: `SSL_up_ref`, never
///     ownership) and runs `Client::resume_from(cache, key)`: SNI and host name check from the
///     key (`SSL_set_tlsext_host_name`, `SSL_set1_host` or the IP check), the key's ALPN list
///     (`SSL_set_alpn_protos`), a session from the cache if there is one (`SSL_set_session`; a
///     TLS 1.3 ticket leaves the cache for good), and every session the connection receives filed
///     under `key` if verification passed. State lives in the `SSL`'s ex_data, never its app data.
/// Throws `Error` as `Client::resume_from` does: a key made for another configuration
/// (`errc::invalid_argument`), a cache serving another context (`errc::wrong_context`), a handshake
/// already started, or a second call for the same stream. A cache of another `Tag` does not compile.
/// TLS 1.3 tickets arrive after the handshake and are processed when the application reads: read
/// the response, then shut down (`shutdown` / `async_shutdown`) so the session stays resumable.
template <class Ctx, class Cache, ssl_stream Stream>
  requires tlsresume_context<Ctx> && cache_for_context<Cache, Ctx>
Resumption<Ctx> resume_from(Stream& stream, const Ctx& ctx, Cache& cache, const PeerKey& key) {
  constexpr std::string_view op = "tlsresume::asio::resume_from";
  SSL* ssl = stream.native_handle();
  if (ssl == nullptr) {
    throw_error(errc::invalid_argument, op, "the stream has no SSL");
  }
  if (SSL_get_SSL_CTX(ssl) != ctx.native_handle()) {
    throw_error(errc::context_mismatch, op,
                "the stream was made from another SSL_CTX than this Context's; make the stream from the "
                "Asio ssl::context given to share_context (sessions may only be used with the SSL_CTX they came from)");
  }
  if (SSL_in_before(ssl) == 1 && SSL_is_server(ssl) == 1) {
    SSL_set_connect_state(ssl);
  }
  auto client = Client<Ctx>::share(ctx, ssl);
  const bool offered = client.resume_from(cache, key);
  return Resumption<Ctx>(std::move(client), offered);
}

/// As above for the peer `host`:`port`, with the key `ctx.key_for(host, port)` (which throws
/// `Error(errc::invalid_argument)` for a malformed host or port 0). `host` is the name the
/// certificate must match (or an IP literal, which sends no SNI); `port` is part of the key.
template <class Ctx, class Cache, ssl_stream Stream>
  requires tlsresume_context<Ctx> && cache_for_context<Cache, Ctx>
Resumption<Ctx> resume_from(Stream& stream, const Ctx& ctx, Cache& cache, std::string_view host, std::uint16_t port) {
  return resume_from(stream, ctx, cache, ctx.key_for(host, port));
}

}  // namespace tlsresume::asio
