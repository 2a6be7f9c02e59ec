#pragma once
// `Session<Ptr>`: an RAII handle to one TLS session, bound to a context or not.
//
// `Ptr` says what the handle points to and whether it is bound:
//   - `Session<SSL_SESSION*>` (alias `UnboundSession`): a session that belongs to no context
//     yet, e.g. one parsed from DER. It can be inspected and serialised, never set on a client.
//   - `Session<Bound<Tag>>` (alias `BoundSession<Tag>`): a session that came from, or was bound
//     to, a `Context<Tag>`. `Bound<Tag>` is a tagged pointer: the native pointer plus the id of
//     the context instance; the tag is checked at compile time, the id at run time.
// The backend is chosen by the native pointer type through `detail::session_backend<T>`; OpenSSL
// (`SSL_SESSION`) is the one provided.

#if defined(__SANITIZE_THREAD__)
#define TLSRESUME_DETAIL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TLSRESUME_DETAIL_TSAN 1
#endif
#endif
#if defined(TLSRESUME_DETAIL_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

#include <openssl/ssl.h>

#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "tlsresume/error.hpp"
#include "tlsresume/handle.hpp"

namespace tlsresume {

/// Bytes that hold secrets (a DER session carries its resumption secret); wiped on release.
using SecretBytes = std::vector<std::byte, detail::cleansing_allocator<std::byte>>;

/// Identifies one `Context` instance (all copies of a `Context` share it). Never reused within
/// a process, unlike an `SSL_CTX*` address.
enum class ContextId : std::uint64_t {};

/// TLS protocol versions, with OpenSSL's wire values.
enum class ProtocolVersion : int {
  unknown = 0,
  tls1_0 = TLS1_VERSION,
  tls1_1 = TLS1_1_VERSION,
  tls1_2 = TLS1_2_VERSION,
  tls1_3 = TLS1_3_VERSION,
};

/// "TLSv1.3" and so on; "unknown" for anything else.
constexpr std::string_view to_string(ProtocolVersion v) noexcept {
  switch (v) {
    case ProtocolVersion::tls1_0: return "TLSv1";
    case ProtocolVersion::tls1_1: return "TLSv1.1";
    case ProtocolVersion::tls1_2: return "TLSv1.2";
    case ProtocolVersion::tls1_3: return "TLSv1.3";
    case ProtocolVersion::unknown: break;
  }
  return "unknown";
}

/// The tagged pointer of a bound session: the native session pointer, the context's type (`Tag`)
/// and the context instance (`context`).
template <class Tag, class Native = SSL_SESSION*> struct Bound {
  Native ptr;         ///< the native session; `Session::adopt` / `share` decide the ownership
  ContextId context;  ///< the context instance the session is bound to
};

namespace detail {

struct no_binding {
  friend bool operator==(no_binding, no_binding) noexcept = default;
};

/// What a `Ptr` of `Session<Ptr>` means: the native object, and the binding it carries.
template <class Ptr> struct session_ptr_traits;
template <class T> struct session_ptr_traits<T*> {
  using native_type = T;
  using context_tag = void;
  using binding_type = no_binding;
  static constexpr bool is_bound = false;
  static T* native(T* p) noexcept { return p; }
  static no_binding binding(T*) noexcept { return {}; }
  static T* make(T* p, no_binding) noexcept { return p; }
};
template <class Tag, class T> struct session_ptr_traits<Bound<Tag, T*>> {
  using native_type = T;
  using context_tag = Tag;
  using binding_type = ContextId;
  static constexpr bool is_bound = true;
  static T* native(const Bound<Tag, T*>& p) noexcept { return p.ptr; }
  static ContextId binding(const Bound<Tag, T*>& p) noexcept { return p.context; }
  static Bound<Tag, T*> make(T* p, ContextId id) noexcept { return {p, id}; }
};

/// What tlsresume records on a session beyond OpenSSL's own fields (kept in the session's
/// ex_data, so it travels with the `SSL_SESSION` object and is copied by `SSL_SESSION_dup`).
struct CacheSink;  // context.hpp: where a connection files the sessions it receives

struct SessionInfo {
  std::string requested_server_name;  // the SNI sent (empty for an IP literal)
  std::string peer_name;              // the host name or IP literal given to set_server_name
  std::weak_ptr<CacheSink> sink;      // the cache this session was filed into by its connection
  std::size_t key_hash = 0;           // PeerKey::hash() it was filed under (if `sink` was set)
};

// OpenSSL orders a session's last SSL_SESSION_free after every other holder's release with an
// atomic reference count inside libcrypto, which ThreadSanitizer does not see (libcrypto is not
// instrumented). So a thread that read our SessionInfo while OpenSSL duplicated the session, and
// another that dropped the last reference later, look unordered to it. These two calls tell it
// the order OpenSSL guarantees; without ThreadSanitizer they are nothing.
inline void tsan_release([[maybe_unused]] const void* sync) noexcept {
#if defined(TLSRESUME_DETAIL_TSAN)
  __tsan_release(const_cast<void*>(sync));
#endif
}
inline void tsan_acquire([[maybe_unused]] const void* sync) noexcept {
#if defined(TLSRESUME_DETAIL_TSAN)
  __tsan_acquire(const_cast<void*>(sync));
#endif
}

inline int session_info_index() {
  static const int index = [] {
    // `from` and `ad` are the session's own CRYPTO_EX_DATA: the address both calls synchronise on.
    CRYPTO_EX_dup* dup = [](CRYPTO_EX_DATA*, const CRYPTO_EX_DATA* from, void** from_d, int, long, void*) -> int {
      if (*from_d == nullptr) {
        return 1;
      }
      try {
        *from_d = new SessionInfo(*static_cast<SessionInfo*>(*from_d));
        tsan_release(from);
        return 1;
      } catch (...) {
        *from_d = nullptr;
        return 0;
      }
    };
    CRYPTO_EX_free* free = [](void*, void* ptr, CRYPTO_EX_DATA* ad, int, long, void*) {
      tsan_acquire(ad);
      delete static_cast<SessionInfo*>(ptr);
    };
    return CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL_SESSION, 0, nullptr, nullptr, dup, free);
  }();
  if (index < 0) {
    throw_openssl_error("CRYPTO_get_ex_new_index(SSL_SESSION)");
  }
  return index;
}

/// Backend operations on a native session type. OpenSSL's is below; another backend specialises
/// this template for its own session type.
template <class T> struct session_backend;

template <> struct session_backend<SSL_SESSION> {
  static ProtocolVersion protocol(const SSL_SESSION* s) noexcept {
    return static_cast<ProtocolVersion>(SSL_SESSION_get_protocol_version(s));
  }
  static std::string_view cipher_name(const SSL_SESSION* s) noexcept {
    const SSL_CIPHER* c = SSL_SESSION_get0_cipher(s);
    const char* name = c != nullptr ? SSL_CIPHER_get_name(c) : nullptr;
    return name != nullptr ? name : "";
  }
  static std::chrono::system_clock::time_point creation_time(const SSL_SESSION* s) noexcept {
    return std::chrono::system_clock::time_point(std::chrono::seconds(SSL_SESSION_get_time(s)));
  }
  static std::chrono::seconds timeout(const SSL_SESSION* s) noexcept {
    return std::chrono::seconds(SSL_SESSION_get_timeout(s));
  }
  /// Creation time plus the session timeout, or plus the ticket lifetime if the server gave a
  /// shorter one (RFC 8446 §4.6.1: a client must not use a ticket beyond it; OpenSSL 3.0 keeps
  /// the context's timeout on the session).
  static std::chrono::system_clock::time_point expiry(const SSL_SESSION* s) noexcept {
    auto lifetime = timeout(s);
    if (const auto hint = ticket_lifetime_hint(s); has_ticket(s) && hint.count() > 0 && hint < lifetime) {
      lifetime = hint;
    }
    return creation_time(s) + lifetime;
  }
  static bool is_resumable(const SSL_SESSION* s) noexcept { return SSL_SESSION_is_resumable(s) == 1; }
  static bool has_ticket(const SSL_SESSION* s) noexcept { return SSL_SESSION_has_ticket(s) == 1; }
  static std::chrono::seconds ticket_lifetime_hint(const SSL_SESSION* s) noexcept {
    return std::chrono::seconds(SSL_SESSION_get_ticket_lifetime_hint(s));
  }
  static std::uint32_t max_early_data(const SSL_SESSION* s) noexcept { return SSL_SESSION_get_max_early_data(s); }
  static std::string_view alpn(const SSL_SESSION* s) noexcept {
    const unsigned char* data = nullptr;
    std::size_t len = 0;
    SSL_SESSION_get0_alpn_selected(s, &data, &len);
    return data != nullptr ? std::string_view(reinterpret_cast<const char*>(data), len) : std::string_view();
  }
  static std::string_view requested_server_name(const SSL_SESSION* s) {
    const auto* info = static_cast<const SessionInfo*>(SSL_SESSION_get_ex_data(s, session_info_index()));
    return info != nullptr ? std::string_view(info->requested_server_name) : std::string_view();
  }
  static std::string_view peer_name(const SSL_SESSION* s) {
    const auto* info = static_cast<const SessionInfo*>(SSL_SESSION_get_ex_data(s, session_info_index()));
    return info != nullptr ? std::string_view(info->peer_name) : std::string_view();
  }
  static std::span<const std::byte> id(const SSL_SESSION* s) noexcept {
    unsigned int len = 0;
    const unsigned char* data = SSL_SESSION_get_id(s, &len);
    return {reinterpret_cast<const std::byte*>(data), len};
  }
  static SecretBytes to_der(const SSL_SESSION* s) {
    const int len = i2d_SSL_SESSION(const_cast<SSL_SESSION*>(s), nullptr);
    if (len <= 0) {
      throw_openssl_error("i2d_SSL_SESSION");
    }
    SecretBytes out(static_cast<std::size_t>(len));
    auto* p = reinterpret_cast<unsigned char*>(out.data());
    if (i2d_SSL_SESSION(const_cast<SSL_SESSION*>(s), &p) != len) {
      throw_openssl_error("i2d_SSL_SESSION");
    }
    return out;
  }
  static SSL_SESSION* from_der(std::span<const std::byte> der) {
    if (der.empty()) {
      throw_error(errc::invalid_session, "d2i_SSL_SESSION", "empty buffer");
    }
    if (der.size() > static_cast<std::size_t>(LONG_MAX)) {
      throw_error(errc::invalid_session, "d2i_SSL_SESSION", "buffer too large");
    }
    const auto* begin = reinterpret_cast<const unsigned char*>(der.data());
    const unsigned char* p = begin;
    SSL_SESSION* s = d2i_SSL_SESSION(nullptr, &p, static_cast<long>(der.size()));
    if (s == nullptr) {
      throw_error(errc::invalid_session, "d2i_SSL_SESSION", "not a valid DER-encoded session");
    }
    if (const auto used = static_cast<std::size_t>(p - begin); used != der.size()) {
      SSL_SESSION_free(s);
      throw_error(errc::invalid_session, "d2i_SSL_SESSION",
                  std::to_string(der.size() - used) + " trailing bytes after the session");
    }
    return s;
  }
  /// Records what tlsresume knows of the peer; only before the session is published.
  static void set_info(SSL_SESSION* s, SessionInfo value) {
    auto info = std::make_unique<SessionInfo>(std::move(value));
    auto* old = static_cast<SessionInfo*>(SSL_SESSION_get_ex_data(s, session_info_index()));
    if (SSL_SESSION_set_ex_data(s, session_info_index(), info.get()) != 1) {
      throw_openssl_error("SSL_SESSION_set_ex_data");
    }
    info.release();
    delete old;
  }
};

}  // namespace detail

/// A reference-counted handle to one TLS session. Copy = up-ref (checked), destroy = free,
/// move = no reference-count traffic. A moved-from session is empty: it may be destroyed,
/// assigned or tested with `operator bool`; its accessors throw `Error(errc::invalid_argument)`.
/// Every accessor is read-only: a session handed out by tlsresume is never mutated by it.
template <class Ptr> class Session {
  using ptr_traits = detail::session_ptr_traits<Ptr>;

 public:
  using pointer = Ptr;
  using native_type = typename ptr_traits::native_type;
  using backend = detail::session_backend<native_type>;
  /// The `Tag` of the `Context<Tag>` this session is bound to; `void` when unbound.
  using context_tag = typename ptr_traits::context_tag;
  static constexpr bool is_bound = ptr_traits::is_bound;

  /// An empty session, holding no reference (no OpenSSL call): like a moved-from one, it may be
  /// destroyed, assigned or tested; its accessors throw `Error(errc::invalid_argument)`.
  Session() = default;

  /// Takes over the reference `p` carries (an `SSL_get1_session` or `d2i_SSL_SESSION` result).
  [[nodiscard]] static Session adopt(Ptr p) noexcept {
    return Session(detail::Handle<native_type>::adopt(ptr_traits::native(p)), ptr_traits::binding(p));
  }
  /// Adds a reference to `p` with `SSL_SESSION_up_ref` (for a borrowed `get0` pointer); throws
  /// `Error` if that fails.
  [[nodiscard]] static Session share(Ptr p) {
    return Session(detail::Handle<native_type>::share(ptr_traits::native(p)), ptr_traits::binding(p));
  }

  /// Parses a DER-encoded session with `d2i_SSL_SESSION` into a new, unbound session. Throws
  /// `Error(errc::invalid_session)` with OpenSSL's reason for an empty, truncated or corrupted
  /// buffer, or one with trailing bytes.
  [[nodiscard]] static Session from_der(std::span<const std::byte> der) requires(!is_bound) {
    return adopt(backend::from_der(der));
  }

  /// Serialises the session with `i2d_SSL_SESSION`. The bytes hold the session's secret and are
  /// wiped when released.
  [[nodiscard]] SecretBytes to_der() const { return backend::to_der(get()); }

  /// The native pointer, borrowed (no reference is added); null for an empty session.
  [[nodiscard]] native_type* native_handle() const noexcept { return handle_.get(); }
  /// The tagged pointer (`Ptr`) this session wraps, borrowed.
  [[nodiscard]] Ptr pointer_value() const noexcept { return ptr_traits::make(handle_.get(), binding_); }
  /// The context instance this session is bound to.
  [[nodiscard]] ContextId context_id() const noexcept requires is_bound { return binding_; }

  /// Whether the handle holds a session (false when default-constructed or moved from). No
  /// OpenSSL call.
  explicit operator bool() const noexcept { return static_cast<bool>(handle_); }

  /// `SSL_SESSION_get_protocol_version`.
  [[nodiscard]] ProtocolVersion protocol_version() const { return backend::protocol(get()); }
  /// `SSL_CIPHER_get_name(SSL_SESSION_get0_cipher())`; empty if unknown.
  [[nodiscard]] std::string_view cipher_name() const { return backend::cipher_name(get()); }
  /// `SSL_SESSION_get_time`: when the session was created (OpenSSL 3.0 keeps whole seconds).
  [[nodiscard]] std::chrono::system_clock::time_point creation_time() const { return backend::creation_time(get()); }
  /// When the session stops being usable: `SSL_SESSION_get_time` + `SSL_SESSION_get_timeout`,
  /// or + `SSL_SESSION_get_ticket_lifetime_hint` when the server's ticket lifetime is shorter.
  [[nodiscard]] std::chrono::system_clock::time_point expiry() const { return backend::expiry(get()); }
  /// `SSL_SESSION_is_resumable`: false once OpenSSL has invalidated the session (unclean close,
  /// a TLS 1.3 ticket already used).
  [[nodiscard]] bool is_resumable() const { return backend::is_resumable(get()); }
  /// `SSL_SESSION_has_ticket`.
  [[nodiscard]] bool has_ticket() const { return backend::has_ticket(get()); }
  /// `SSL_SESSION_get_ticket_lifetime_hint`.
  [[nodiscard]] std::chrono::seconds ticket_lifetime_hint() const { return backend::ticket_lifetime_hint(get()); }
  /// `SSL_SESSION_get_max_early_data`: 0 when the server allows no early data.
  [[nodiscard]] std::uint32_t max_early_data() const { return backend::max_early_data(get()); }
  /// `SSL_SESSION_get0_alpn_selected`: the negotiated ALPN protocol, or empty.
  [[nodiscard]] std::string_view alpn() const { return backend::alpn(get()); }
  /// The server name (SNI) the client asked for, as recorded by tlsresume when the session
  /// arrived; empty for a session not received through a tlsresume `Client`, or parsed from DER.
  /// (`SSL_SESSION_get0_hostname` is empty on a client unless the server acknowledged SNI.)
  [[nodiscard]] std::string_view requested_server_name() const { return backend::requested_server_name(get()); }
  /// The host name or IP literal the client named with `Client::set_server_name` when the session
  /// arrived (equal to `requested_server_name()` except for IP literals, which send no SNI);
  /// empty when unknown, as for a session parsed from DER.
  [[nodiscard]] std::string_view peer_name() const { return backend::peer_name(get()); }
  /// `SSL_SESSION_get_id`: the session id bytes (for TLS 1.3 and tickets, OpenSSL derives them).
  [[nodiscard]] std::span<const std::byte> id() const { return backend::id(get()); }

  /// Two handles are equal when they hold the same session object and binding.
  friend bool operator==(const Session& a, const Session& b) noexcept {
    return a.handle_ == b.handle_ && a.binding_ == b.binding_;
  }

 private:
  Session(detail::Handle<native_type> h, typename ptr_traits::binding_type b) noexcept
      : handle_(std::move(h)), binding_(b) {}

  const native_type* get() const {
    if (!handle_) {
      throw_error(errc::invalid_argument, "Session", "empty (moved-from or default-constructed) session");
    }
    return handle_.get();
  }

  detail::Handle<native_type> handle_;
  [[no_unique_address]] typename ptr_traits::binding_type binding_{};
};

/// A session that belongs to no context (e.g. parsed from DER).
using UnboundSession = Session<SSL_SESSION*>;
/// A session bound to a `Context<Tag>` instance.
template <class Tag> using BoundSession = Session<Bound<Tag, SSL_SESSION*>>;

namespace detail {
template <class T> struct is_session : std::false_type {};
template <class Ptr> struct is_session<Session<Ptr>> : std::true_type {};
}  // namespace detail

/// Satisfied by any `Session<Ptr>` (not by a raw `SSL_SESSION*`).
template <class S>
concept tlsresume_session = detail::is_session<std::remove_cvref_t<S>>::value;

/// Satisfied by a session that is bound to a context (not by an `UnboundSession`).
template <class S>
concept bound_session = tlsresume_session<S> && std::remove_cvref_t<S>::is_bound;

}  // namespace tlsresume
