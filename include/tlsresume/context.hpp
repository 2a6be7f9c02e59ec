#pragma once
// `Context<Tag>`: a client `SSL_CTX` set up for session resumption.
//
// A `Context` is a reference-counted handle: copies share one `SSL_CTX` and one state (its
// `ContextId`, its recent sessions). The state lives in the `SSL_CTX`'s ex_data under an index of
// our own and is freed with the `SSL_CTX`, so OpenSSL's callbacks always find it, even after
// every `Context` handle is gone while a connection still runs. `Tag` is any type the caller
// names the configuration with; sessions bound to a `Context<A>` cannot be given to a
// `Client<Context<B>>` (compile time), nor to a client of another `Context<A>` instance (run time).

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tlsresume/error.hpp"
#include "tlsresume/handle.hpp"
#include "tlsresume/peer_key.hpp"
#include "tlsresume/session.hpp"

namespace tlsresume {

template <class Ctx> class Client;

namespace detail {

/// One address per tag type: identifies which `Context<Tag>` type an `SSL_CTX` is attached to.
template <class Tag> inline constexpr char tag_marker = 0;

inline ContextId next_context_id() noexcept {
  static std::atomic<std::uint64_t> counter{0};
  return ContextId{counter.fetch_add(1, std::memory_order_relaxed) + 1};
}

/// Where a connection files the sessions it receives: the type-erased side of a
/// `SessionCache`, shared (`std::shared_ptr`) by the cache and each connection started with
/// `Client::resume_from`, so a callback that runs after the cache is gone finds nothing to call.
/// Every function is called from inside OpenSSL callbacks or noexcept paths: none may throw.
struct CacheSink {
  using time_point = std::chrono::system_clock::time_point;
  CacheSink() = default;
  CacheSink(const CacheSink&) = delete;
  CacheSink& operator=(const CacheSink&) = delete;
  virtual ~CacheSink() = default;
  /// Files `session` (a reference the sink takes over) received on a connection to `key` of the
  /// context `id`; `original` is the full handshake that started the resumption chain, if the
  /// connection was resumed. Returns whether it was stored.
  virtual bool file(const PeerKey& key, Handle<SSL_SESSION> session, ContextId id,
                    std::optional<time_point> original) noexcept = 0;
  /// Removes `session` if stored (OpenSSL's remove callback). `key_hash` (0 = unknown) says
  /// where to look first.
  virtual bool invalidate(const SSL_SESSION* session, std::size_t key_hash) noexcept = 0;
  /// A full handshake with `key` completed at `version` (drops a TLS 1.2 session after TLS 1.3).
  virtual void full_handshake(const PeerKey& key, ProtocolVersion version) noexcept = 0;
  /// The caller vetoed a connection to `key`: removes `sessions` (counted once as a veto).
  virtual std::size_t veto(const PeerKey& key, std::span<const SSL_SESSION* const> sessions) noexcept = 0;
};

/// Counters a context keeps; read with `Context::stats()`.
struct ContextCounters {
  std::atomic<std::uint64_t> sessions_received{0};    ///< new-session callbacks
  std::atomic<std::uint64_t> sessions_removed{0};     ///< remove-session callbacks
  std::atomic<std::uint64_t> sessions_unverified{0};  ///< not kept: the handshake's verification failed
  std::atomic<std::uint64_t> sessions_vetoed{0};      ///< not kept: the connection was vetoed
};

/// What the context records of its configuration for `PeerKey`s: the settings OpenSSL 3.0
/// cannot read back (ALPN list, policy id) and the fingerprint, recomputed lazily after a change.
struct ContextConfig {
  std::vector<std::string> alpn;           // offered ALPN list, as set through Context
  std::string policy_id;                   // names settings made outside our API
  std::optional<ConfigFingerprint> fingerprint;  // nullopt: to be recomputed
  std::uint64_t generation = 0;            // bumped by every change
};

/// The state behind every copy of one `Context`, owned by the `SSL_CTX`'s ex_data.
struct ContextState {
  ContextState(ContextId i, const void* marker) : id(i), tag(marker) {}
  const ContextId id;
  const void* const tag;
  ContextCounters counters;
  std::mutex mutex;                               // guards `recent` and `max_recent` only
  std::deque<Handle<SSL_SESSION>> recent;         // newest first; one reference each
  std::size_t max_recent = 8;
  mutable std::mutex config_mutex;                // guards `config` only
  ContextConfig config;
};

/// Per-connection state, owned by the `SSL`'s ex_data. Used by the thread driving the `SSL`.
struct ClientState {
  std::string requested_server_name;  // SNI
  std::string peer_name;              // host name or IP literal
  std::atomic<std::size_t> sessions_received{0};
  // Set by `Client::resume_from`: received sessions are filed into `sink` under `key`.
  std::shared_ptr<CacheSink> sink;
  std::optional<PeerKey> key;
  std::optional<std::chrono::system_clock::time_point> original_full_handshake;  // of the session offered
  std::vector<Handle<SSL_SESSION>> filed;  // what this connection filed, for `veto_caching`
  bool vetoed = false;
  bool full_handshake_reported = false;
};

/// Reports a completed full (not resumed) handshake of a connection attached to a cache, once.
inline void report_full_handshake(SSL* ssl, ClientState& client) noexcept {
  if (client.full_handshake_reported || !client.sink || !client.key || SSL_is_init_finished(ssl) != 1 ||
      SSL_session_reused(ssl) == 1) {
    return;
  }
  client.full_handshake_reported = true;
  client.sink->full_handshake(*client.key, static_cast<ProtocolVersion>(SSL_version(ssl)));
}

inline int context_state_index() {
  static const int index = [] {
    CRYPTO_EX_free* free = [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
      delete static_cast<ContextState*>(ptr);
    };
    return SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free);
  }();
  if (index < 0) {
    throw_openssl_error("SSL_CTX_get_ex_new_index");
  }
  return index;
}

inline int client_state_index() {
  static const int index = [] {
    CRYPTO_EX_dup* dup = [](CRYPTO_EX_DATA*, const CRYPTO_EX_DATA*, void** from_d, int, long, void*) -> int {
      if (*from_d == nullptr) {
        return 1;
      }
      try {
        const auto* from = static_cast<const ClientState*>(*from_d);
        auto* copy = new ClientState;
        copy->requested_server_name = from->requested_server_name;
        copy->peer_name = from->peer_name;
        *from_d = copy;
        return 1;
      } catch (...) {
        *from_d = nullptr;
        return 0;
      }
    };
    CRYPTO_EX_free* free = [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
      delete static_cast<ClientState*>(ptr);
    };
    return SSL_get_ex_new_index(0, nullptr, nullptr, dup, free);
  }();
  if (index < 0) {
    throw_openssl_error("SSL_get_ex_new_index");
  }
  return index;
}

inline ContextState* context_state(const SSL_CTX* ctx) noexcept {
  return static_cast<ContextState*>(SSL_CTX_get_ex_data(ctx, context_state_index()));
}
inline ClientState* client_state(const SSL* ssl) noexcept {
  return static_cast<ClientState*>(SSL_get_ex_data(ssl, client_state_index()));
}

/// `SSL_CTX_sess_set_new_cb`: OpenSSL hands us a session it just received (TLS 1.2 at the end of
/// the handshake; TLS 1.3 once per NewSessionTicket, after the handshake). We take our own
/// reference and return 0, so OpenSSL releases its one: nothing can leak or be freed twice if
/// anything below fails. Never throws into OpenSSL.
inline int on_new_session(SSL* ssl, SSL_SESSION* session) noexcept {
  try {
    ContextState* state = context_state(SSL_get_SSL_CTX(ssl));
    if (state == nullptr) {
      return 0;
    }
    state->counters.sessions_received.fetch_add(1, std::memory_order_relaxed);
    ClientState* client = client_state(ssl);
    SessionInfo info;
    if (client != nullptr) {
      client->sessions_received.fetch_add(1, std::memory_order_relaxed);
      info.requested_server_name = client->requested_server_name;
      info.peer_name = client->peer_name;
      if (client->sink && client->key) {
        info.sink = client->sink;
        info.key_hash = client->key->hash();
      }
    }
    // Not yet published: the only moment we write to the session (our own ex_data).
    session_backend<SSL_SESSION>::set_info(session, std::move(info));
    if (SSL_SESSION_is_resumable(session) != 1) {
      return 0;
    }
    if (client != nullptr && client->vetoed) {
      state->counters.sessions_vetoed.fetch_add(1, std::memory_order_relaxed);
      return 0;
    }
    // Resumption skips certificate verification: keep only what a verified handshake made. This
    // also refuses a handshake completed despite a failed verification (a verify callback that
    // returned 1, or SSL_VERIFY_NONE). A resumed connection inherits its session's result.
    if (SSL_get_verify_result(ssl) != X509_V_OK) {
      state->counters.sessions_unverified.fetch_add(1, std::memory_order_relaxed);
      return 0;
    }
    if (client != nullptr && client->sink && client->key) {
      report_full_handshake(ssl, *client);  // before filing: a TLS 1.3 ticket may supersede TLS 1.2
      client->filed.reserve(client->filed.size() + 1);
      auto mine = Handle<SSL_SESSION>::share(session);
      const bool reused = SSL_session_reused(ssl) == 1;
      if (client->sink->file(*client->key, Handle<SSL_SESSION>::share(session), state->id,
                             reused ? client->original_full_handshake : std::nullopt)) {
        client->filed.push_back(std::move(mine));
      }
      return 0;
    }
    auto ref = Handle<SSL_SESSION>::share(session);
    std::vector<Handle<SSL_SESSION>> evicted;  // freed after the lock is released
    {
      std::lock_guard lock(state->mutex);
      state->recent.push_front(std::move(ref));
      while (state->recent.size() > state->max_recent) {
        evicted.push_back(std::move(state->recent.back()));
        state->recent.pop_back();
      }
    }
  } catch (...) {
    ERR_clear_error();  // nothing of ours to report from inside OpenSSL's callback
  }
  return 0;
}

/// `SSL_CTX_sess_set_remove_cb`: OpenSSL invalidated `session` (an unclean close, a fatal alert,
/// a TLS 1.3 ticket just used). Drop our reference; the free happens after our lock is released.
inline void on_remove_session(SSL_CTX* ctx, SSL_SESSION* session) noexcept {
  ContextState* state = context_state(ctx);
  if (state == nullptr) {
    return;
  }
  state->counters.sessions_removed.fetch_add(1, std::memory_order_relaxed);
  try {
    if (const auto* info = static_cast<const SessionInfo*>(SSL_SESSION_get_ex_data(session, session_info_index()))) {
      if (auto sink = info->sink.lock()) {
        sink->invalidate(session, info->key_hash);
      }
    }
  } catch (...) {
    ERR_clear_error();
  }
  Handle<SSL_SESSION> victim;
  {
    std::lock_guard lock(state->mutex);
    for (auto it = state->recent.begin(); it != state->recent.end(); ++it) {
      if (it->get() == session) {
        victim = std::move(*it);
        state->recent.erase(it);
        break;
      }
    }
  }
}

/// Attaches (or finds) the state of `ctx` for `Context<Tag>` and installs the session callbacks.
/// Serialises attaching state to an `SSL_CTX` (two threads sharing one `SSL_CTX` at once).
inline std::mutex& attach_mutex() noexcept {
  static std::mutex mutex;
  return mutex;
}

template <class Tag> ContextState* attach_context_state(SSL_CTX* ctx) {
  std::lock_guard lock(attach_mutex());
  if (ContextState* existing = context_state(ctx)) {
    if (existing->tag != &tag_marker<Tag>) {
      throw_error(errc::context_mismatch, "Context::share",
                  "this SSL_CTX is already attached to a Context with another tag");
    }
    return existing;
  }
  auto state = std::make_unique<ContextState>(next_context_id(), &tag_marker<Tag>);
  if (SSL_CTX_set_ex_data(ctx, context_state_index(), state.get()) != 1) {
    throw_openssl_error("SSL_CTX_set_ex_data");
  }
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, &on_new_session);
  SSL_CTX_sess_set_remove_cb(ctx, &on_remove_session);
  return state.release();
}

}  // namespace detail

/// What a context has seen; all values count since the context was created.
struct ContextStats {
  std::uint64_t sessions_received = 0;    ///< sessions OpenSSL handed to the new-session callback
  std::uint64_t sessions_removed = 0;     ///< sessions OpenSSL invalidated (remove callback)
  std::uint64_t sessions_unverified = 0;  ///< received but not kept: certificate verification had failed
  std::uint64_t sessions_vetoed = 0;      ///< received but not kept: `Client::veto_caching` was called
  std::size_t recent_sessions = 0;      ///< sessions currently kept by the context
};

/// A client `SSL_CTX` configured for session resumption, tagged with `Tag`.
template <class Tag> class Context {
 public:
  using tag_type = Tag;
  using session_type = BoundSession<Tag>;
  using client_type = Client<Context>;

  /// Creates a new client context with `SSL_CTX_new(TLS_client_method())`: TLS 1.2 at least,
  /// peer verification on (`SSL_VERIFY_PEER`) with the system trust store
  /// (`SSL_CTX_set_default_verify_paths`), client session caching through tlsresume. Like every
  /// way of making a `Context` (`adopt`, `share`), it fills the extension caches of the trusted
  /// certificates now (`X509_check_purpose(cert, -1, 0)`): OpenSSL 3.0 fills them on first use,
  /// and two threads verifying against the same root for the first time race on it.
  [[nodiscard]] static Context create() {
    auto ctx = detail::Handle<SSL_CTX>::adopt(SSL_CTX_new(TLS_client_method()));
    if (!ctx) {
      throw_openssl_error("SSL_CTX_new");
    }
    if (SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) != 1) {
      throw_openssl_error("SSL_CTX_set_min_proto_version");
    }
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    if (SSL_CTX_set_default_verify_paths(ctx.get()) != 1) {
      throw_openssl_error("SSL_CTX_set_default_verify_paths");
    }
    return Context(std::move(ctx));
  }
  /// Takes over the caller's reference to `ctx` (no `SSL_CTX_up_ref`) and sets it up for session
  /// resumption (cache mode, new/remove callbacks). Throws `Error(errc::context_mismatch)` if the
  /// `SSL_CTX` is already attached to a `Context` of another tag; the reference is then released.
  [[nodiscard]] static Context adopt(SSL_CTX* ctx) {
    return Context(detail::Handle<SSL_CTX>::adopt(ctx));
  }
  /// Shares an `SSL_CTX` owned elsewhere (e.g. by `asio::ssl::context`): takes a reference with
  /// `SSL_CTX_up_ref`, never ownership, then sets it up as `adopt` does.
  [[nodiscard]] static Context share(SSL_CTX* ctx) {
    return Context(detail::Handle<SSL_CTX>::share(ctx));
  }

  /// The `SSL_CTX`, borrowed (no reference added).
  [[nodiscard]] SSL_CTX* native_handle() const noexcept { return ctx_.get(); }
  /// The id shared by every copy of this context; sessions bound to it carry the same id.
  [[nodiscard]] ContextId id() const noexcept { return state_->id; }

  /// `SSL_CTX_set_min_proto_version` / `SSL_CTX_set_max_proto_version`.
  /// `ProtocolVersion::unknown` means "no limit" on that side.
  void set_protocol_range(ProtocolVersion min, ProtocolVersion max) {
    if (SSL_CTX_set_min_proto_version(ctx_.get(), static_cast<int>(min)) != 1 ||
        SSL_CTX_set_max_proto_version(ctx_.get(), static_cast<int>(max)) != 1) {
      throw_openssl_error("SSL_CTX_set_{min,max}_proto_version");
    }
    configuration_changed();
  }
  /// `SSL_CTX_set_verify(SSL_VERIFY_PEER or SSL_VERIFY_NONE)`.
  void set_verify_peer(bool on) {
    SSL_CTX_set_verify(ctx_.get(), on ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
    configuration_changed();
  }
  /// Trusts `cert` (`X509_STORE_add_cert`, which takes its own reference; the caller keeps theirs).
  /// Fills `cert`'s extension cache now (`X509_check_purpose(cert, -1, 0)`), so that handshakes
  /// on several threads only read it (OpenSSL 3.0 fills it on first use, racing).
  void add_trusted_certificate(X509* cert) {
    if (cert == nullptr || X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx_.get()), cert) != 1) {
      throw_openssl_error("X509_STORE_add_cert");
    }
    detail::fill_extension_cache(cert);
    configuration_changed();
  }
  /// Trusts the PEM certificates of `path` (`SSL_CTX_load_verify_file`), and fills their
  /// extension caches now, as `add_trusted_certificate` does.
  void load_verify_file(const std::string& path) {
    if (SSL_CTX_load_verify_file(ctx_.get(), path.c_str()) != 1) {
      throw_openssl_error("SSL_CTX_load_verify_file(" + path + ")");
    }
    detail::fill_extension_caches(SSL_CTX_get_cert_store(ctx_.get()));
    configuration_changed();
  }
  /// Presents `cert` with `key` as the client certificate (`SSL_CTX_use_certificate`,
  /// `SSL_CTX_use_PrivateKey`, `SSL_CTX_check_private_key`; each takes its own reference).
  void use_client_certificate(X509* cert, EVP_PKEY* key) {
    if (SSL_CTX_use_certificate(ctx_.get(), cert) != 1 || SSL_CTX_use_PrivateKey(ctx_.get(), key) != 1 ||
        SSL_CTX_check_private_key(ctx_.get()) != 1) {
      throw_openssl_error("use_client_certificate");
    }
    configuration_changed();
  }
  /// Offers ALPN protocols, in preference order (`SSL_CTX_set_alpn_protos`), and records them
  /// for `key_for` (OpenSSL 3.0 cannot read them back). An empty list offers none.
  void set_alpn_protocols(std::initializer_list<std::string_view> protocols) {
    set_alpn_protocols(std::span<const std::string_view>(protocols.begin(), protocols.size()));
  }
  /// As above, from any contiguous list.
  void set_alpn_protocols(std::span<const std::string_view> protocols) {
    std::string wire;
    std::vector<std::string> list;
    for (std::string_view p : protocols) {
      list.emplace_back(p);
      if (p.empty() || p.size() > 255) {
        throw_error(errc::invalid_argument, "set_alpn_protocols", "each protocol must be 1..255 bytes");
      }
      wire += static_cast<char>(p.size());
      wire += p;
    }
    if (SSL_CTX_set_alpn_protos(ctx_.get(), wire.empty() ? nullptr : reinterpret_cast<const unsigned char*>(wire.data()),
                                static_cast<unsigned int>(wire.size())) != 0) {
      throw_openssl_error("SSL_CTX_set_alpn_protos");
    }
    std::lock_guard lock(state_->config_mutex);
    state_->config.alpn = std::move(list);
  }
  /// The ALPN list recorded by `set_alpn_protocols` (empty if none).
  [[nodiscard]] std::vector<std::string> alpn_protocols() const {
    std::lock_guard lock(state_->config_mutex);
    return state_->config.alpn;
  }

  /// Names the settings of this context that OpenSSL 3.0 cannot read back and that were made
  /// outside this API (groups, signature algorithms, which verify callback, a CA directory; see
  /// peer_key.hpp). The id joins the fingerprint: change it whenever such a setting changes.
  void set_policy_id(std::string_view id) {
    std::lock_guard lock(state_->config_mutex);
    state_->config.policy_id = std::string(id);
    state_->config.fingerprint.reset();
    ++state_->config.generation;
  }
  /// The policy id given to `set_policy_id` (empty if none), copied out under the context's
  /// configuration lock. No OpenSSL call.
  [[nodiscard]] std::string policy_id() const {
    std::lock_guard lock(state_->config_mutex);
    return state_->config.policy_id;
  }

  /// The configuration fingerprint (`ConfigFingerprint::of(native_handle(), policy_id())`),
  /// computed on first use after a change made through this class and then kept: it hashes
  /// every trusted certificate, far too costly per connection. After changing the `SSL_CTX`
  /// through `native_handle()`, call `refresh_fingerprint()`.
  [[nodiscard]] ConfigFingerprint fingerprint() const {
    std::uint64_t generation = 0;
    std::string policy;
    {
      std::lock_guard lock(state_->config_mutex);
      if (state_->config.fingerprint) {
        return *state_->config.fingerprint;
      }
      generation = state_->config.generation;
      policy = state_->config.policy_id;
    }
    // Computed without our lock held (~0.4 ms with the system trust store); kept only if no
    // change happened meanwhile.
    ConfigFingerprint computed = ConfigFingerprint::of(ctx_.get(), policy);
    std::lock_guard lock(state_->config_mutex);
    if (state_->config.generation == generation) {
      state_->config.fingerprint = computed;
    }
    return computed;
  }
  /// Recomputes the fingerprint now: call after any change made through `native_handle()`
  /// (trust store, verify settings, client certificate, options, ciphers). Sessions filed under
  /// the old fingerprint stay in the cache but are no longer found by new keys. Also fills the
  /// extension caches of the trusted certificates, as `add_trusted_certificate` does.
  void refresh_fingerprint() {
    detail::fill_extension_caches(SSL_CTX_get_cert_store(ctx_.get()));
    configuration_changed();
    (void)fingerprint();
  }

  /// The cache key of a connection to `host`:`port` under this context's current configuration:
  /// `PeerKey::make(host, port, fingerprint(), alpn_protocols(), connection_policy_id)`. Give
  /// `connection_policy_id` when the connection's `SSL` gets settings of its own beyond the
  /// server name and ALPN that `Client::resume_from` sets. Throws as `PeerKey::make` does.
  [[nodiscard]] PeerKey key_for(std::string_view host, std::uint16_t port, std::string_view connection_policy_id = {}) const {
    // Runs once per connection: one lock, and the ALPN list and fingerprint read in place
    // rather than copied out first (bench/handshake).
    {
      std::lock_guard lock(state_->config_mutex);
      if (state_->config.fingerprint) {
        return PeerKey::make(host, port, *state_->config.fingerprint, state_->config.alpn, connection_policy_id);
      }
    }
    const ConfigFingerprint config = fingerprint();  // first use after a change: computed now
    return PeerKey::make(host, port, config, alpn_protocols(), connection_policy_id);
  }

  /// Binds an unbound session (e.g. parsed from DER) to this context. The result is a new
  /// `SSL_SESSION` (`SSL_SESSION_dup`), so one session object is never bound to two contexts
  /// even if the caller kept copies of `session`. Throws `Error` on an empty session.
  [[nodiscard]] session_type bind(const UnboundSession& session) const {
    if (!session) {
      throw_error(errc::invalid_argument, "Context::bind", "empty session");
    }
    SSL_SESSION* copy = SSL_SESSION_dup(session.native_handle());
    if (copy == nullptr) {
      throw_openssl_error("SSL_SESSION_dup");
    }
    return session_type::adopt({copy, id()});
  }
  /// Copies a session from any context into a new `SSL_SESSION` bound to this one, through DER
  /// (`i2d_SSL_SESSION`, `d2i_SSL_SESSION`): the explicit way to move a session across contexts.
  /// The requested server name and peer name recorded by tlsresume are carried over.
  template <class Ptr> [[nodiscard]] session_type copy_session(const Session<Ptr>& session) const {
    const SecretBytes der = session.to_der();
    auto copy = session_type::adopt({detail::session_backend<SSL_SESSION>::from_der(der), id()});
    detail::SessionInfo info;
    info.requested_server_name = session.requested_server_name();
    info.peer_name = session.peer_name();
    detail::session_backend<SSL_SESSION>::set_info(copy.native_handle(), std::move(info));
    return copy;
  }
  /// Wraps a raw session that the caller knows was received on this context's connections:
  /// `adopt_session` takes over the caller's reference (no `SSL_SESSION_up_ref`), `share_session`
  /// adds one.
  [[nodiscard]] session_type adopt_session(SSL_SESSION* session) const { return session_type::adopt({session, id()}); }
  /// As `adopt_session`, but for a borrowed session: takes a reference of its own with
  /// `SSL_SESSION_up_ref` (throws `Error` if that fails); the caller keeps theirs.
  [[nodiscard]] session_type share_session(SSL_SESSION* session) const { return session_type::share({session, id()}); }

  /// The most recent resumable, unexpired session this context received on a connection whose
  /// `Client::set_server_name` was `peer_name` (a host name or IP literal; empty = no name was
  /// set), or `std::nullopt`. A TLS 1.3 session is removed (tickets are single
  /// use); a TLS 1.2 session stays and may be reused. Interim store until `SessionCache`: it is
  /// keyed only by peer name and keeps at most `max_recent_sessions()` sessions.
  [[nodiscard]] std::optional<session_type> take_recent_session(std::string_view peer_name = {}) const {
    detail::Handle<SSL_SESSION> found;
    std::vector<detail::Handle<SSL_SESSION>> stale;  // freed after the lock is released
    const auto now = std::chrono::system_clock::now();
    {
      std::lock_guard lock(state_->mutex);
      auto& recent = state_->recent;
      for (auto it = recent.begin(); it != recent.end();) {
        SSL_SESSION* s = it->get();
        if (SSL_SESSION_is_resumable(s) != 1 || detail::session_backend<SSL_SESSION>::expiry(s) <= now) {
          stale.push_back(std::move(*it));
          it = recent.erase(it);
          continue;
        }
        if (detail::session_backend<SSL_SESSION>::peer_name(s) != peer_name) {
          ++it;
          continue;
        }
        if (SSL_SESSION_get_protocol_version(s) >= TLS1_3_VERSION) {
          found = std::move(*it);
          recent.erase(it);
        } else {
          found = *it;  // SSL_SESSION_up_ref: no callback, safe under our lock
        }
        break;
      }
    }
    if (!found) {
      return std::nullopt;
    }
    return session_type::adopt({found.release(), id()});
  }
  /// How many sessions `take_recent_session` keeps at most (default 8); older ones are released.
  void set_max_recent_sessions(std::size_t n) {
    std::vector<detail::Handle<SSL_SESSION>> evicted;
    std::lock_guard lock(state_->mutex);
    state_->max_recent = n;
    while (state_->recent.size() > n) {
      evicted.push_back(std::move(state_->recent.back()));
      state_->recent.pop_back();
    }
  }
  /// The limit set by `set_max_recent_sessions` (default 8). No OpenSSL call.
  [[nodiscard]] std::size_t max_recent_sessions() const {
    std::lock_guard lock(state_->mutex);
    return state_->max_recent;
  }

  /// Counters of the new- and remove-session callbacks and the number of sessions kept.
  [[nodiscard]] ContextStats stats() const {
    ContextStats s;
    s.sessions_received = state_->counters.sessions_received.load(std::memory_order_relaxed);
    s.sessions_removed = state_->counters.sessions_removed.load(std::memory_order_relaxed);
    s.sessions_unverified = state_->counters.sessions_unverified.load(std::memory_order_relaxed);
    s.sessions_vetoed = state_->counters.sessions_vetoed.load(std::memory_order_relaxed);
    std::lock_guard lock(state_->mutex);
    s.recent_sessions = state_->recent.size();
    return s;
  }

 private:
  void configuration_changed() {
    std::lock_guard lock(state_->config_mutex);
    state_->config.fingerprint.reset();
    ++state_->config.generation;
  }

  explicit Context(detail::Handle<SSL_CTX> ctx) : ctx_(std::move(ctx)) {
    if (!ctx_) {
      throw_error(errc::invalid_argument, "Context", "null SSL_CTX");
    }
    state_ = detail::attach_context_state<Tag>(ctx_.get());
    // ~1.7 ms for the 144 certificates of Debian's system store; handshakes then only read them.
    detail::fill_extension_caches(SSL_CTX_get_cert_store(ctx_.get()));
  }

  detail::Handle<SSL_CTX> ctx_;
  detail::ContextState* state_ = nullptr;  // owned by ctx_'s ex_data, lives as long as ctx_
};

}  // namespace tlsresume
