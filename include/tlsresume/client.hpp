#pragma once
// `Client<Ctx>`: one TLS connection's `SSL`, made from (or checked against) a `Context`.
//
// The SSL_set_session(3) contract, as this class enforces it:
//   - `set_session` takes a reference (OpenSSL's `SSL_set_session` up-refs; the caller's
//     `Session` keeps its own); a session set earlier is released when replaced; a session the
//     server did not resume is released by OpenSSL during the handshake.
//   - only a session bound to this client's context may be set: another tag does not compile
//     (concept `session_from_this_context`), another instance is refused at run time.
//   - a connection that was not shut down cleanly makes its current session bad: when the last
//     reference to the `SSL` goes (`~Client`, `reset`), OpenSSL's `SSL_free` invalidates it and
//     calls the context's remove callback, which drops it from the context's store.

#include <fcntl.h>
#include <poll.h>

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <arpa/inet.h>

#include <cerrno>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "tlsresume/context.hpp"
#include "tlsresume/error.hpp"
#include "tlsresume/handle.hpp"
#include "tlsresume/peer_key.hpp"
#include "tlsresume/session.hpp"

namespace tlsresume {

/// The rule of SSL_set_session(3) that one session belongs to one `SSL_CTX`, checked at compile
/// time: `S` must be a `Session` bound to a context of the same type (same `Tag`) as `Ctx`.
template <class S, class Ctx>
concept session_from_this_context =
    bound_session<S> && std::same_as<typename std::remove_cvref_t<S>::context_tag, typename Ctx::tag_type>;

/// A session cache that can serve clients of context type `Ctx`: a `SessionCache` whose sessions
/// are bound to the same `Tag` (a cache of another tag does not compile with `resume_from`).
template <class Cache, class Ctx>
concept cache_for_context =
    std::same_as<typename Cache::session_type, typename Ctx::session_type> &&  // same Tag
    requires(Cache& cache, const PeerKey& key, ContextId id) {
      { cache.attach(id) } -> std::same_as<std::shared_ptr<detail::CacheSink>>;  // checks the instance
      cache.take_with_origin(key).has_value();                                  // single-use take
    };

/// Progress of a non-blocking TLS operation.
enum class IoStatus {
  done,        ///< the operation completed
  want_read,   ///< call again when the transport has data to read
  want_write,  ///< call again when the transport can take more data
};

namespace detail {
/// Sets `O_NONBLOCK` on a file descriptor for the lifetime of the guard, then restores it.
class NonBlockingGuard {
 public:
  explicit NonBlockingGuard(int fd) noexcept : fd_(fd), flags_(::fcntl(fd, F_GETFL)) {
    if (flags_ >= 0 && (flags_ & O_NONBLOCK) == 0) {
      changed_ = ::fcntl(fd_, F_SETFL, flags_ | O_NONBLOCK) == 0;
    }
  }
  ~NonBlockingGuard() {
    if (changed_) {
      ::fcntl(fd_, F_SETFL, flags_);
    }
  }
  NonBlockingGuard(const NonBlockingGuard&) = delete;
  NonBlockingGuard& operator=(const NonBlockingGuard&) = delete;

 private:
  int fd_;
  int flags_;
  bool changed_ = false;
};

inline bool is_ip_literal(const std::string& host) noexcept {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 || ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}
}  // namespace detail

/// One client connection of context type `Ctx` (a `Context<Tag>`). Movable, not copyable: a
/// connection has one owner. A moved-from client may only be destroyed or assigned.
template <class Ctx> class Client {
 public:
  using context_type = Ctx;
  using session_type = typename Ctx::session_type;

  /// Creates a new connection with `SSL_new(ctx.native_handle())`.
  explicit Client(const Ctx& ctx) : ctx_(ctx), ssl_(detail::Handle<SSL>::adopt(SSL_new(ctx.native_handle()))) {
    if (!ssl_) {
      throw_openssl_error("SSL_new");
    }
    attach_state();
  }
  /// Takes over the caller's reference to `ssl` (no `SSL_up_ref`) after checking that it was
  /// made from `ctx`'s `SSL_CTX` (`SSL_get_SSL_CTX`); throws `Error(errc::context_mismatch)`
  /// otherwise, and the reference is then released.
  [[nodiscard]] static Client adopt(const Ctx& ctx, SSL* ssl) { return Client(ctx, detail::Handle<SSL>::adopt(ssl)); }
  /// Shares an `SSL` owned elsewhere (e.g. by `asio::ssl::stream`): takes a reference with
  /// `SSL_up_ref`, never ownership, after the same check as `adopt`.
  [[nodiscard]] static Client share(const Ctx& ctx, SSL* ssl) { return Client(ctx, detail::Handle<SSL>::share(ssl)); }

  /// Not copyable: a connection has one owner.
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  /// Moves the `SSL` reference and the context handle (no `SSL_up_ref`); the moved-from client
  /// may only be destroyed or assigned. Move assignment releases the `SSL` held before
  /// (`SSL_free`, with the clean/unclean rule of `~Client`).
  Client(Client&&) noexcept = default;
  Client& operator=(Client&&) noexcept = default;
  /// Releases the `SSL` (`SSL_free`). If this was the last reference and the connection was
  /// established but not shut down (`shutdown()` not called), OpenSSL invalidates its current
  /// session and calls the context's remove callback.
  ~Client() = default;

  /// The `SSL`, borrowed (no reference added).
  [[nodiscard]] SSL* native_handle() const noexcept { return ssl_.get(); }
  /// The context this connection was made from, borrowed (the client holds its own copy of the
  /// `Context` handle, so the `SSL_CTX` lives as long as the client). No OpenSSL call.
  [[nodiscard]] const Ctx& context() const noexcept { return ctx_; }

  /// Names the server: sends it as SNI (`SSL_set_tlsext_host_name`; not for an IP literal, as
  /// RFC 6066 requires) and verifies the certificate against it (`SSL_set1_host`, or
  /// `X509_VERIFY_PARAM_set1_ip_asc` for an IP literal). A second call replaces the first.
  /// Sessions received on this connection record the SNI as `requested_server_name()` and the
  /// name as given as `peer_name()`.
  /// Throws `Error(errc::invalid_argument)` after `resume_from`, which named the server already.
  void set_server_name(std::string_view host) {
    require_before_handshake("set_server_name");
    if (state_->key) {
      throw_error(errc::invalid_argument, "set_server_name",
                  "resume_from already named the server from its PeerKey; use a key for the new name");
    }
    apply_server_name(host);
  }

  /// Starts this connection for the peer `key` with `cache` (a `SessionCache` of this context's
  /// tag; another tag does not compile):
  ///   - names the server from the key: SNI unless an IP literal, and the name the certificate is
  ///     verified against (`SSL_set_tlsext_host_name`, `SSL_set1_host` / IP check, as
  ///     `set_server_name`), and offers exactly the key's ALPN list (`SSL_set_alpn_protos`);
  ///   - takes a session for the key from the cache, if one is there, and offers it
  ///     (`SSL_set_session`, its own reference; a TLS 1.3 ticket leaves the cache for good);
  ///   - files every session this connection receives (TLS 1.2 at the end of the handshake, TLS 1.3
  ///     tickets whenever they arrive) into the cache under `key`, if verification passed and
  ///     `veto_caching` was not called; after a full TLS 1.3 handshake, drops the peer's TLS 1.2
  ///     session.
  /// The key must have been made for this context's current configuration (`Context::key_for`):
  /// otherwise throws `Error(errc::invalid_argument)`. A cache serves one context instance:
  /// throws `Error(errc::wrong_context)` if it served another. Throws once the handshake started,
  /// or if called twice. Returns whether a session is offered.
  template <class Cache>
    requires cache_for_context<Cache, Ctx>
  bool resume_from(Cache& cache, const PeerKey& key) {
    require_before_handshake("resume_from");
    if (state_->key) {
      throw_error(errc::invalid_argument, "resume_from", "this connection was already started for a peer");
    }
    if (key.config() != ctx_.fingerprint()) {
      throw_error(errc::invalid_argument, "resume_from",
                  "the key was made for another configuration (make it with Context::key_for, after the "
                  "context's last change)");
    }
    std::shared_ptr<detail::CacheSink> sink = cache.attach(ctx_.id());
    apply_server_name(key.host());
    std::string wire;
    for (const std::string& p : key.alpn()) {
      wire += static_cast<char>(p.size());
      wire += p;
    }
    if (SSL_set_alpn_protos(ssl_.get(), wire.empty() ? nullptr : reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned int>(wire.size())) != 0) {
      throw_openssl_error("SSL_set_alpn_protos");
    }
    auto taken = cache.take_with_origin(key);
    if (taken) {
      set_session(taken->session);
      state_->original_full_handshake = taken->original_full_handshake;
    }
    state_->sink = std::move(sink);
    state_->key = key;
    return taken.has_value();
  }

  /// The key given to `resume_from`, or null.
  [[nodiscard]] const PeerKey* cache_key() const noexcept { return state_->key ? &*state_->key : nullptr; }

  /// Says that this connection failed the caller's own checks after the handshake (pinning,
  /// OCSP, CT, an application check): the sessions it already filed into the cache and the
  /// session it uses (`SSL_get_session`) are removed from it (counted as a veto), and sessions
  /// that arrive later are not kept. Without `resume_from`, only the latter. Never throws.
  void veto_caching() noexcept {
    state_->vetoed = true;
    if (!state_->sink || !state_->key) {
      return;
    }
    std::vector<const SSL_SESSION*> sessions;
    try {
      sessions.reserve(state_->filed.size() + 1);
      for (const auto& s : state_->filed) {
        sessions.push_back(s.get());
      }
      if (const SSL_SESSION* current = SSL_get_session(ssl_.get())) {
        sessions.push_back(current);
      }
    } catch (...) {
      // Without memory for the list, veto the current session at least (no allocation needed).
      sessions.clear();
    }
    if (sessions.empty()) {
      const SSL_SESSION* current = SSL_get_session(ssl_.get());
      state_->sink->veto(*state_->key, std::span<const SSL_SESSION* const>(&current, current != nullptr ? 1 : 0));
    } else {
      state_->sink->veto(*state_->key, sessions);
    }
    state_->filed.clear();
  }
  /// Whether `veto_caching` was called on this connection.
  [[nodiscard]] bool caching_vetoed() const noexcept { return state_->vetoed; }

 private:
  void apply_server_name(std::string_view host) {
    std::string name(host);
    if (name.empty()) {
      throw_error(errc::invalid_argument, "set_server_name", "empty host name");
    }
    const bool ip = detail::is_ip_literal(name);
    // A second call replaces the first: clear the SNI, host and IP set before.
    char* sni = ip ? nullptr : name.data();
    if (SSL_set_tlsext_host_name(ssl_.get(), sni) != 1) {
      throw_openssl_error("SSL_set_tlsext_host_name");
    }
    if (SSL_set1_host(ssl_.get(), ip ? nullptr : name.c_str()) != 1) {
      throw_openssl_error("SSL_set1_host");
    }
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_.get());
    if ((ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) : X509_VERIFY_PARAM_set1_ip(param, nullptr, 0)) != 1) {
      throw_openssl_error("X509_VERIFY_PARAM_set1_ip");
    }
    state_->requested_server_name = ip ? std::string() : name;
    state_->peer_name = std::move(name);
  }

 public:
  /// The SNI this connection asks for (empty if none).
  [[nodiscard]] std::string_view requested_server_name() const noexcept { return state_->requested_server_name; }
  /// The name given to `set_server_name` (host name or IP literal; empty if none).
  [[nodiscard]] std::string_view peer_name() const noexcept { return state_->peer_name; }

  /// Offers `session` for resumption on the next handshake (`SSL_set_session`, which takes its
  /// own reference; `session` keeps the caller's). A session set before is released. Only a
  /// session bound to this client's context type compiles; one bound to another instance of it
  /// throws `Error(errc::wrong_context)`. Throws `Error(errc::invalid_argument)` for an empty
  /// session or once the handshake has started.
  template <class S>
    requires session_from_this_context<S, Ctx>
  void set_session(const S& session) {
    require_before_handshake("set_session");
    if (!session) {
      throw_error(errc::invalid_argument, "set_session", "empty session");
    }
    if (session.context_id() != ctx_.id()) {
      throw_error(errc::wrong_context, "set_session",
                  "a session may only be used with the SSL_CTX it came from; use Context::copy_session to move it");
    }
    if (SSL_set_session(ssl_.get(), session.native_handle()) != 1) {
      throw_openssl_error("SSL_set_session");
    }
  }

  /// Removes a session set with `set_session` (`SSL_set_session(ssl, NULL)`, which frees
  /// OpenSSL's reference); the next handshake is a full one. Throws once the handshake started.
  void clear_session() {
    require_before_handshake("clear_session");
    if (SSL_set_session(ssl_.get(), nullptr) != 1) {
      throw_openssl_error("SSL_set_session");
    }
  }

  /// Uses file descriptor `fd` (a connected socket) for I/O (`SSL_set_fd`); the caller keeps
  /// owning and closing it.
  void set_fd(int fd) {
    if (SSL_set_fd(ssl_.get(), fd) != 1) {
      throw_openssl_error("SSL_set_fd");
    }
  }
  /// Uses `bio` for reading and writing (`SSL_set_bio`). Shares it: takes a reference of its own
  /// (`BIO_up_ref`), the caller keeps theirs.
  void set_bio(BIO* bio) {
    if (bio == nullptr || BIO_up_ref(bio) != 1) {
      throw_openssl_error("BIO_up_ref");
    }
    SSL_set_bio(ssl_.get(), bio, bio);
  }

  /// Runs the client handshake (`SSL_connect`). On a blocking transport it returns `done` or
  /// throws; on a non-blocking one it may return `want_read`/`want_write` (call again). Throws
  /// `Error` with the OpenSSL error queue (and the verification error, if any) on failure.
  IoStatus connect() {
    const int r = SSL_connect(ssl_.get());
    if (r == 1) {
      detail::report_full_handshake(ssl_.get(), *state_);
      return IoStatus::done;
    }
    return io_status(r, "SSL_connect");
  }

  /// Sends close_notify (`SSL_shutdown`), which makes this a clean close: the session stays
  /// resumable. Does not wait for the peer's close_notify. Returns `want_write`/`want_read` on a
  /// non-blocking transport that is not ready (call again).
  IoStatus shutdown() {
    if ((SSL_get_shutdown(ssl_.get()) & SSL_SENT_SHUTDOWN) != 0) {
      return IoStatus::done;
    }
    const int r = SSL_shutdown(ssl_.get());
    if (r >= 0) {
      return IoStatus::done;
    }
    return io_status(r, "SSL_shutdown");
  }

  /// Processes post-handshake messages (TLS 1.3 NewSessionTicket) that have arrived, without
  /// consuming application data, until at least `want` sessions were received on this connection,
  /// application data is pending, the peer closed, or `timeout` has passed. Returns the number
  /// of sessions received on this connection so far.
  ///
  /// Uses `SSL_peek` (which never consumes application data). On a socket (`SSL_get_rfd`) it
  /// waits with `poll`, and puts the socket in non-blocking mode for the duration of the call, so
  /// it never hangs on a blocking socket (TLS 1.2, or a server that sends no ticket); on a BIO
  /// pair or memory BIO it processes what is buffered and returns without waiting. OpenSSL 3.0
  /// has no `SSL_handle_events`. Throws `Error` on a protocol error.
  std::size_t await_tickets(std::chrono::milliseconds timeout, std::size_t want = 1) {
    if (SSL_is_init_finished(ssl_.get()) != 1) {
      throw_error(errc::handshake_not_done, "await_tickets");
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    const int fd = SSL_get_rfd(ssl_.get());
    std::optional<detail::NonBlockingGuard> nonblocking;
    if (fd >= 0) {
      nonblocking.emplace(fd);
    }
    for (;;) {
      if (sessions_received() >= want) {
        break;
      }
      char byte = 0;
      const int r = SSL_peek(ssl_.get(), &byte, 1);
      if (r > 0) {
        break;  // application data is next: tickets after it cannot be reached without reading it
      }
      const int error = SSL_get_error(ssl_.get(), r);
      if (error == SSL_ERROR_ZERO_RETURN) {
        break;
      }
      if (error != SSL_ERROR_WANT_READ) {
        if (error == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
          break;  // the transport closed without close_notify: nothing more will arrive
        }
        io_status(r, "SSL_peek");
      }
      if (fd < 0 || sessions_received() >= want) {
        break;  // nothing to wait on (memory BIO: what was buffered is processed), or done
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        break;
      }
      pollfd p{fd, POLLIN, 0};
      const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
      if (ready == 0) {
        break;
      }
      if (ready < 0 && errno != EINTR) {
        break;
      }
    }
    return sessions_received();
  }

  /// `SSL_session_reused`: whether the last handshake resumed the session that was set.
  [[nodiscard]] bool session_reused() const noexcept { return SSL_session_reused(ssl_.get()) == 1; }
  /// The connection's current session (`SSL_get1_session`, a reference of the returned handle's
  /// own), bound to this client's context; `std::nullopt` before a handshake.
  [[nodiscard]] std::optional<session_type> session() const {
    SSL_SESSION* s = SSL_get1_session(ssl_.get());
    if (s == nullptr) {
      return std::nullopt;
    }
    return session_type::adopt({s, ctx_.id()});
  }
  /// How many sessions (TLS 1.2 session, TLS 1.3 tickets) this connection has received.
  [[nodiscard]] std::size_t sessions_received() const noexcept {
    return state_->sessions_received.load(std::memory_order_relaxed);
  }
  /// The negotiated protocol (`SSL_version`).
  [[nodiscard]] ProtocolVersion protocol_version() const noexcept {
    return static_cast<ProtocolVersion>(SSL_version(ssl_.get()));
  }
  /// The negotiated cipher suite's name (`SSL_get_cipher_name`).
  [[nodiscard]] std::string_view cipher_name() const noexcept {
    const char* name = SSL_get_cipher_name(ssl_.get());
    return name != nullptr ? name : "";
  }

  /// Ends this connection (`SSL_free` of our reference, with the clean/unclean rule above) and
  /// starts a fresh one from the same context (`SSL_new`), ready for `set_session` and `connect`.
  void reset() {
    auto fresh = detail::Handle<SSL>::adopt(SSL_new(ctx_.native_handle()));
    if (!fresh) {
      throw_openssl_error("SSL_new");
    }
    ssl_ = std::move(fresh);
    attach_state();
  }

 private:
  Client(const Ctx& ctx, detail::Handle<SSL> ssl) : ctx_(ctx), ssl_(std::move(ssl)) {
    if (!ssl_) {
      throw_error(errc::invalid_argument, "Client", "null SSL");
    }
    if (SSL_is_server(ssl_.get()) == 1) {
      throw_error(errc::context_mismatch, "Client", "the SSL is in server mode; SSL_set_session is for clients");
    }
    if (SSL_get_SSL_CTX(ssl_.get()) != ctx_.native_handle()) {
      throw_error(errc::context_mismatch, "Client", "the SSL was not made from this context's SSL_CTX");
    }
    attach_state();
  }

  void attach_state() {
    state_ = detail::client_state(ssl_.get());
    if (state_ != nullptr) {
      return;  // a shared SSL already attached by another Client
    }
    auto state = std::make_unique<detail::ClientState>();
    if (SSL_set_ex_data(ssl_.get(), detail::client_state_index(), state.get()) != 1) {
      throw_openssl_error("SSL_set_ex_data");
    }
    state_ = state.release();
  }

  void require_before_handshake(const char* operation) const {
    if (SSL_in_before(ssl_.get()) != 1) {
      throw_error(errc::invalid_argument, operation, "the handshake has already started");
    }
  }

  IoStatus io_status(int r, const char* operation) {
    switch (SSL_get_error(ssl_.get(), r)) {
      case SSL_ERROR_WANT_READ: return IoStatus::want_read;
      case SSL_ERROR_WANT_WRITE: return IoStatus::want_write;
      case SSL_ERROR_ZERO_RETURN: throw_error(errc::connection_closed, operation, "close_notify received");
      case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0) {
          throw_error(errc::connection_closed, operation,
                      errno != 0 ? std::error_code(errno, std::system_category()).message() : "unexpected EOF");
        }
        break;
      default: break;
    }
    if (const long v = SSL_get_verify_result(ssl_.get()); v != X509_V_OK) {
      throw_openssl_error(std::string(operation) + " (certificate verification: " + X509_verify_cert_error_string(v) + ")");
    }
    throw_openssl_error(operation);
  }

  Ctx ctx_;
  detail::Handle<SSL> ssl_;
  detail::ClientState* state_ = nullptr;  // owned by ssl_'s ex_data
};

}  // namespace tlsresume
