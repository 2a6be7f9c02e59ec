#pragma once
// Test support: certificates made at run time and a local TLS server that talks to a `Client`
// over an in-memory BIO pair (one thread, no network). For tests, demos and benchmarks only; not
// part of the umbrella header, and not meant for production servers.
//
// The server also records what each ClientHello offers for resumption (TLS 1.3 PSK identities,
// TLS 1.2 session tickets, TLS 1.2 session ids), so a test can see what a client *offered*, not
// only whether the server resumed.

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tlsresume/client.hpp"
#include "tlsresume/error.hpp"
#include "tlsresume/handle.hpp"
#include "tlsresume/session.hpp"

namespace tlsresume::testing {

/// The key of a test certificate: ECDSA on P-256 (`EVP_EC_gen("P-256")`) or 2048-bit RSA
/// (`EVP_RSA_gen(2048)`).
enum class KeyType { ecdsa_p256, rsa_2048 };

/// A certificate with its private key.
struct Certificate {
  detail::Handle<X509> cert;      ///< one reference to the certificate
  detail::Handle<EVP_PKEY> key;   ///< one reference to its private key
};

namespace detail_testing {
inline detail::Handle<EVP_PKEY> make_key(KeyType type) {
  EVP_PKEY* key = type == KeyType::ecdsa_p256 ? EVP_EC_gen("P-256") : EVP_RSA_gen(2048);
  if (key == nullptr) {
    throw_openssl_error("EVP_PKEY keygen");
  }
  return detail::Handle<EVP_PKEY>::adopt(key);
}

inline void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value);
  if (ext == nullptr) {
    throw_openssl_error("X509V3_EXT_conf_nid");
  }
  const int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) {
    throw_openssl_error("X509_add_ext");
  }
}

inline Certificate make_certificate(std::string_view common_name, KeyType type, const Certificate* issuer,
                                    bool is_ca, const char* subject_alt_names) {
  static std::atomic<long> serial{1};
  Certificate out{detail::Handle<X509>::adopt(X509_new()), make_key(type)};
  X509* x = out.cert.get();
  const std::string cn(common_name);
  if (x == nullptr || X509_set_version(x, 2) != 1 ||
      ASN1_INTEGER_set(X509_get_serialNumber(x), serial.fetch_add(1)) != 1 ||
      X509_gmtime_adj(X509_getm_notBefore(x), -3600) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(x), 30L * 24 * 3600) == nullptr || X509_set_pubkey(x, out.key.get()) != 1 ||
      X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0) != 1 ||
      X509_set_issuer_name(x, X509_get_subject_name(issuer != nullptr ? issuer->cert.get() : x)) != 1) {
    throw_openssl_error("make_certificate");
  }
  X509* signer = issuer != nullptr ? issuer->cert.get() : x;
  add_extension(x, signer, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  add_extension(x, signer, NID_key_usage, is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature,keyEncipherment");
  add_extension(x, signer, NID_subject_key_identifier, "hash");
  if (issuer != nullptr) {
    add_extension(x, signer, NID_authority_key_identifier, "keyid:always");
  }
  if (!is_ca) {
    add_extension(x, signer, NID_ext_key_usage, "serverAuth,clientAuth");
    add_extension(x, signer, NID_subject_alt_name, subject_alt_names);
  }
  EVP_PKEY* signing_key = issuer != nullptr ? issuer->key.get() : out.key.get();
  if (X509_sign(x, signing_key, EVP_sha256()) <= 0) {
    throw_openssl_error("X509_sign");
  }
  detail::fill_extension_cache(x);  // before any thread shares it
  return out;
}
}  // namespace detail_testing

/// A self-signed CA certificate.
inline Certificate make_ca(std::string_view common_name = "tlsresume test CA", KeyType type = KeyType::ecdsa_p256) {
  return detail_testing::make_certificate(common_name, type, nullptr, true, nullptr);
}
/// A leaf certificate signed by `ca`, valid for `subject_alt_names` (OpenSSL syntax), by
/// default localhost, 127.0.0.1 and ::1.
inline Certificate make_leaf(const Certificate& ca, std::string_view common_name = "localhost",
                             KeyType type = KeyType::ecdsa_p256,
                             const char* subject_alt_names = "DNS:localhost,IP:127.0.0.1,IP:::1") {
  return detail_testing::make_certificate(common_name, type, &ca, false, subject_alt_names);
}

/// How a `LocalServer` behaves.
struct ServerOptions {
  ProtocolVersion min_version = ProtocolVersion::tls1_2;  ///< lowest version accepted (SSL_CTX_set_min_proto_version)
  ProtocolVersion max_version = ProtocolVersion::tls1_3;  ///< highest version accepted (SSL_CTX_set_max_proto_version)
  KeyType key_type = KeyType::ecdsa_p256;                 ///< key of the server's CA and leaf certificates
  bool tickets = true;          ///< TLS 1.2 session tickets; false = session ids in the server cache
  std::size_t tls13_tickets = 2;  ///< NewSessionTickets per full TLS 1.3 handshake (SSL_CTX_set_num_tickets)
  bool request_client_certificate = false;  ///< require and verify a client certificate
  const Certificate* client_ca = nullptr;   ///< trust anchor for client certificates
  std::string alpn;                         ///< protocol to select if the client offers it
  /// The leaf certificate's CN and DNS subject alternative name (besides IP:127.0.0.1 and
  /// IP:::1): a DNS name of letters, digits, '.', '-', '_' and '*'.
  std::string host = "localhost";
};

/// What ClientHellos offered a `LocalServer` for resumption, since construction or the last
/// `LocalServer::clear_offers()`. Each offered identity (a TLS 1.3 PSK identity, a TLS 1.2
/// ticket, a TLS 1.2 session id) is counted once per ClientHello that carried it.
struct OfferStats {
  std::size_t hellos = 0;                  ///< ClientHellos seen (two for a HelloRetryRequest handshake)
  std::size_t tls13_tickets = 0;           ///< PSK identities offered in pre_shared_key extensions
  std::size_t tls12_tickets = 0;           ///< non-empty session_ticket extensions
  std::size_t session_ids = 0;             ///< legacy session ids that were resumption offers (see LocalServer)
  std::size_t distinct = 0;                ///< distinct identities (kind and bytes) offered
  std::size_t offered_more_than_once = 0;  ///< distinct identities offered more than once
  std::size_t max_times_offered = 0;       ///< the most times one identity was offered
  std::size_t malformed = 0;               ///< pre_shared_key / supported_versions extensions not well formed
};

/// The kind of a resumption offer recorded by `LocalServer`.
enum class OfferKind : char { tls13_ticket = 'p', tls12_ticket = 't', session_id = 's' };

/// One server-side connection of a `LocalServer`, connected to a client over a BIO pair.
class ServerConnection {
 public:
  /// Takes over the reference `ssl` holds (no `SSL_up_ref`); `client_cpu` is what
  /// `client_handshake_cpu()` reports. Made by `LocalServer::handshake`.
  ServerConnection(detail::Handle<SSL> ssl, std::chrono::nanoseconds client_cpu)
      : ssl_(std::move(ssl)), client_cpu_(client_cpu) {}
  /// `SSL_session_reused` on the server side: the authority on whether resumption happened.
  [[nodiscard]] bool session_reused() const noexcept { return SSL_session_reused(ssl_.get()) == 1; }
  /// The server side's `SSL`, borrowed (no reference added).
  [[nodiscard]] SSL* native_handle() const noexcept { return ssl_.get(); }
  /// CPU time the client spent in `connect()` during the handshake (this thread's CPU clock).
  [[nodiscard]] std::chrono::nanoseconds client_handshake_cpu() const noexcept { return client_cpu_; }
  /// Sends the server's close_notify.
  void shutdown() noexcept {
    if (SSL_shutdown(ssl_.get()) < 0) {
      ERR_clear_error();
    }
  }

 private:
  detail::Handle<SSL> ssl_;
  std::chrono::nanoseconds client_cpu_{0};
};

namespace detail_testing {
inline std::chrono::nanoseconds thread_cpu_now() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

/// Bounds-checked big-endian reads from extension bytes; every read fails (returns false, and
/// keeps failing) rather than run past the end.
class WireReader {
 public:
  WireReader(const unsigned char* data, std::size_t size) noexcept : p_(data), n_(data != nullptr ? size : 0) {}
  [[nodiscard]] std::size_t remaining() const noexcept { return n_; }
  bool uint(std::size_t bytes, std::uint32_t& out) noexcept {
    if (n_ < bytes) {
      return false;
    }
    out = 0;
    for (std::size_t i = 0; i < bytes; ++i) {
      out = (out << 8) | p_[i];
    }
    p_ += bytes;
    n_ -= bytes;
    return true;
  }
  /// A sub-reader over the next `bytes` bytes, which are consumed.
  bool take(std::size_t bytes, WireReader& out) noexcept {
    if (n_ < bytes) {
      return false;
    }
    out = WireReader(p_, bytes);
    p_ += bytes;
    n_ -= bytes;
    return true;
  }
  /// A sub-reader over a vector with a `prefix`-byte length.
  bool prefixed(std::size_t prefix, WireReader& out) noexcept {
    std::uint32_t len = 0;
    return uint(prefix, len) && take(len, out);
  }
  [[nodiscard]] std::string_view view() const noexcept { return {reinterpret_cast<const char*>(p_), n_}; }

 private:
  const unsigned char* p_;
  std::size_t n_;
};

/// The identities of a pre_shared_key ClientHello extension (RFC 8446 §4.2.11): a u16-prefixed
/// list of {u16-prefixed identity, u32 obfuscated_ticket_age}, then a u16-prefixed list of
/// u8-prefixed binders, one per identity, and nothing after. Returns false (and `out` empty) if
/// the bytes are not exactly that, or an identity is empty.
inline bool parse_psk_identities(const unsigned char* data, std::size_t size, std::vector<std::string_view>& out) {
  out.clear();
  WireReader ext(data, size);
  WireReader ids(nullptr, 0);
  WireReader binders(nullptr, 0);
  if (!ext.prefixed(2, ids) || !ext.prefixed(2, binders) || ext.remaining() != 0 || ids.remaining() == 0) {
    return false;
  }
  while (ids.remaining() != 0) {
    WireReader id(nullptr, 0);
    std::uint32_t age = 0;
    if (!ids.prefixed(2, id) || id.remaining() == 0 || !ids.uint(4, age)) {
      out.clear();
      return false;
    }
    out.push_back(id.view());
  }
  std::size_t binder_count = 0;
  while (binders.remaining() != 0) {
    WireReader binder(nullptr, 0);
    if (!binders.prefixed(1, binder) || binder.remaining() == 0) {
      out.clear();
      return false;
    }
    ++binder_count;
  }
  if (binder_count != out.size()) {
    out.clear();
    return false;
  }
  return true;
}

/// Whether a supported_versions ClientHello extension (a u8-prefixed list of u16 versions, and
/// nothing after) lists TLS 1.3; `malformed` is set if the bytes are not that.
inline bool lists_tls13(const unsigned char* data, std::size_t size, bool& malformed) noexcept {
  WireReader ext(data, size);
  WireReader versions(nullptr, 0);
  malformed = !ext.prefixed(1, versions) || ext.remaining() != 0 || versions.remaining() == 0 ||
              versions.remaining() % 2 != 0;
  bool found = false;
  for (std::uint32_t v = 0; !malformed && versions.uint(2, v);) {
    found = found || v == TLS1_3_VERSION;
  }
  return found;
}
}  // namespace detail_testing

/// A TLS server for tests: its own CA and leaf certificate, made at construction.
///
/// It records what every ClientHello offers for resumption (`offers()`), from a client hello
/// callback (`SSL_CTX_set_client_hello_cb`) that never fails a handshake:
///   - each identity of a pre_shared_key extension (TLS 1.3 tickets);
///   - a non-empty session_ticket extension (TLS 1.2 ticket);
///   - the legacy session id, only when it is a TLS 1.2 session-id offer: it is non-empty, the
///     hello carries neither a pre_shared_key extension nor a non-empty ticket (with a ticket the
///     id only echoes it, RFC 5077 §3.4), and either the hello does not offer TLS 1.3 (no
///     supported_versions extension listing it), or the id is one this server issued for a
///     TLS 1.2 session (seen by its new-session callback, `SSL_CTX_sess_set_new_cb`). A client
///     that offers TLS 1.3 sends a random 32-byte id in middlebox-compatibility mode even in a
///     full handshake, and even to a TLS 1.2-only server, so an unknown id from such a client is
///     not counted.
/// A HelloRetryRequest makes the client send a second ClientHello, recorded again (its offers
/// count twice). Replacing the client hello or new-session callback through `native_handle()`
/// stops the recording.
class LocalServer {
 public:
  /// Makes a CA and a leaf certificate for `options.host` (`EVP_EC_gen` / `EVP_RSA_gen`,
  /// `X509_sign`) and a server `SSL_CTX` (`SSL_CTX_new(TLS_server_method())`, owned) set up from
  /// `options`, with a server-side session cache. Throws `Error` if OpenSSL fails, or
  /// `Error(errc::invalid_argument)` if `options.host` is not a DNS name.
  explicit LocalServer(ServerOptions options = {})
      : options_(std::move(options)),
        ca_(make_ca(unique_ca_name(), options_.key_type)),
        leaf_(make_leaf(ca_, options_.host, options_.key_type, leaf_names(options_.host).c_str())),
        ctx_(detail::Handle<SSL_CTX>::adopt(SSL_CTX_new(TLS_server_method()))) {
    SSL_CTX* c = ctx_.get();
    if (c == nullptr || SSL_CTX_set_min_proto_version(c, static_cast<int>(options_.min_version)) != 1 ||
        SSL_CTX_set_max_proto_version(c, static_cast<int>(options_.max_version)) != 1 ||
        SSL_CTX_use_certificate(c, leaf_.cert.get()) != 1 || SSL_CTX_use_PrivateKey(c, leaf_.key.get()) != 1 ||
        SSL_CTX_set_num_tickets(c, options_.tls13_tickets) != 1) {
      throw_openssl_error("LocalServer");
    }
    static const unsigned char sid_ctx[] = "tlsresume-test-server";
    if (SSL_CTX_set_session_id_context(c, sid_ctx, sizeof sid_ctx - 1) != 1) {
      throw_openssl_error("SSL_CTX_set_session_id_context");
    }
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_SERVER);
    if (!options_.tickets) {
      SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    }
    if (options_.request_client_certificate) {
      SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
      if (options_.client_ca != nullptr &&
          X509_STORE_add_cert(SSL_CTX_get_cert_store(c), options_.client_ca->cert.get()) != 1) {
        throw_openssl_error("X509_STORE_add_cert");
      }
    }
    if (!options_.alpn.empty()) {
      SSL_CTX_set_alpn_select_cb(c, &select_alpn, this);
    }
    if (server_index() < 0 || SSL_CTX_set_ex_data(c, server_index(), this) != 1) {
      throw_openssl_error("SSL_CTX_set_ex_data");
    }
    SSL_CTX_set_client_hello_cb(c, &on_client_hello, this);
    SSL_CTX_sess_set_new_cb(c, &on_new_session);
  }
  /// Not copyable (nor movable): OpenSSL's callbacks point at this object.
  LocalServer(const LocalServer&) = delete;
  LocalServer& operator=(const LocalServer&) = delete;
  /// Unhooks the callbacks that point at this object (`SSL_CTX_set_client_hello_cb`,
  /// `SSL_CTX_sess_set_new_cb`, `SSL_CTX_set_alpn_select_cb`, `SSL_CTX_set_ex_data`): a
  /// `ServerConnection` that outlives the server keeps the `SSL_CTX` alive.
  ~LocalServer() {
    SSL_CTX* c = ctx_.get();
    if (c != nullptr) {
      SSL_CTX_set_client_hello_cb(c, nullptr, nullptr);
      SSL_CTX_sess_set_new_cb(c, nullptr);
      if (!options_.alpn.empty()) {
        SSL_CTX_set_alpn_select_cb(c, nullptr, nullptr);
      }
      (void)SSL_CTX_set_ex_data(c, server_index(), nullptr);
    }
  }

  /// The CA that signed the server certificate: what a client must trust.
  [[nodiscard]] X509* ca_certificate() const noexcept { return ca_.cert.get(); }
  /// The server's `SSL_CTX`, borrowed (no reference added).
  [[nodiscard]] SSL_CTX* native_handle() const noexcept { return ctx_.get(); }
  /// The options the server was made with (no OpenSSL call).
  [[nodiscard]] const ServerOptions& options() const noexcept { return options_; }

  /// What ClientHellos offered for resumption since construction or `clear_offers()`, as seen by
  /// the server's `SSL_CTX_set_client_hello_cb` callback (`SSL_client_hello_get0_ext`,
  /// `SSL_client_hello_get0_session_id`).
  [[nodiscard]] OfferStats offers() const {
    std::lock_guard lock(mutex_);
    OfferStats s = counts_;
    s.distinct = offered_.size();
    for (const auto& [identity, times] : offered_) {
      s.offered_more_than_once += times > 1 ? 1 : 0;
      s.max_times_offered = std::max(s.max_times_offered, times);
    }
    return s;
  }
  /// How many ClientHellos offered exactly this identity (ticket or session id bytes) of `kind`
  /// (no OpenSSL call; the bytes are as recorded by `SSL_client_hello_get0_ext` /
  /// `SSL_client_hello_get0_session_id`).
  [[nodiscard]] std::size_t times_offered(OfferKind kind, std::string_view identity) const {
    std::lock_guard lock(mutex_);
    const auto it = offered_.find(offer_key(kind, identity));
    return it == offered_.end() ? 0 : it->second;
  }
  /// Forgets the offers recorded so far (no OpenSSL call); the handshake counters are kept.
  void clear_offers() {
    std::lock_guard lock(mutex_);
    offered_.clear();
    counts_ = OfferStats{};
  }
  /// Handshakes `handshake()` completed (no OpenSSL call).
  [[nodiscard]] std::size_t handshakes() const {
    std::lock_guard lock(mutex_);
    return handshakes_;
  }
  /// Handshakes `handshake()` completed that resumed a session, by the server side's
  /// `SSL_session_reused`.
  [[nodiscard]] std::size_t resumed_handshakes() const {
    std::lock_guard lock(mutex_);
    return resumed_handshakes_;
  }

  /// Connects `client` to a new server connection over an in-memory BIO pair and runs both
  /// handshakes to completion in this thread (`SSL_do_handshake` on the server side), then counts
  /// it in `handshakes()` and, if `SSL_session_reused`, in `resumed_handshakes()`. Throws `Error`
  /// if either side fails or stalls.
  template <class Ctx> ServerConnection handshake(Client<Ctx>& client) {
    BIO* client_bio = nullptr;
    BIO* server_bio = nullptr;
    if (BIO_new_bio_pair(&client_bio, 0, &server_bio, 0) != 1) {
      throw_openssl_error("BIO_new_bio_pair");
    }
    auto client_end = detail::Handle<BIO>::adopt(client_bio);
    auto server_ssl = detail::Handle<SSL>::adopt(SSL_new(ctx_.get()));
    if (!server_ssl) {
      BIO_free(server_bio);
      throw_openssl_error("SSL_new");
    }
    SSL_set_bio(server_ssl.get(), server_bio, server_bio);
    SSL_set_accept_state(server_ssl.get());
    client.set_bio(client_end.get());
    bool client_done = false;
    bool server_done = false;
    std::chrono::nanoseconds client_cpu{0};
    for (int round = 0; round < 64 && !(client_done && server_done); ++round) {
      if (!client_done) {
        const auto start = detail_testing::thread_cpu_now();
        client_done = client.connect() == IoStatus::done;
        client_cpu += detail_testing::thread_cpu_now() - start;
      }
      if (!server_done) {
        const int r = SSL_do_handshake(server_ssl.get());
        if (r == 1) {
          server_done = true;
        } else if (const int e = SSL_get_error(server_ssl.get(), r); e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
          throw_openssl_error("LocalServer handshake");
        }
      }
    }
    if (!(client_done && server_done)) {
      throw_error(errc::invalid_argument, "LocalServer::handshake", "handshake did not complete");
    }
    const bool reused = SSL_session_reused(server_ssl.get()) == 1;
    {
      std::lock_guard lock(mutex_);
      ++handshakes_;
      resumed_handshakes_ += reused ? 1 : 0;
    }
    return ServerConnection(std::move(server_ssl), client_cpu);
  }

 private:
  static int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                         unsigned int inlen, void* arg) {
    const auto* self = static_cast<const LocalServer*>(arg);
    for (unsigned int i = 0; i < inlen;) {
      const unsigned int len = in[i];
      if (i + 1 + len > inlen) {
        break;
      }
      if (std::string_view(reinterpret_cast<const char*>(in + i + 1), len) == self->options_.alpn) {
        *out = in + i + 1;
        *outlen = static_cast<unsigned char>(len);
        return SSL_TLSEXT_ERR_OK;
      }
      i += 1 + len;
    }
    return SSL_TLSEXT_ERR_NOACK;
  }

  // Each server's CA has its own name, so one client trust store can hold several of them.
  static std::string unique_ca_name() {
    static std::atomic<unsigned> counter{0};
    return "tlsresume test CA " + std::to_string(counter.fetch_add(1) + 1);
  }

  // The leaf's subject alternative names, in X509V3 configuration syntax.
  static std::string leaf_names(const std::string& host) {
    const bool valid = !host.empty() && std::all_of(host.begin(), host.end(), [](char ch) {
      return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
             ch == '-' || ch == '_' || ch == '*';
    });
    if (!valid) {
      throw_error(errc::invalid_argument, "LocalServer", "ServerOptions::host must be a DNS name");
    }
    return "DNS:" + host + ",IP:127.0.0.1,IP:::1";
  }

  // The SSL_CTX ex_data slot that points back at the server, for the new-session callback
  // (which has no argument of its own); -1 if OpenSSL could not make one.
  static int server_index() noexcept {
    static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
  }

  static std::string offer_key(OfferKind kind, std::string_view identity) {
    std::string key(1, static_cast<char>(kind));
    key += identity;
    return key;
  }

  // Called with mutex_ held.
  void record_locked(OfferKind kind, std::string_view identity) {
    ++offered_[offer_key(kind, identity)];
    switch (kind) {
      case OfferKind::tls13_ticket: ++counts_.tls13_tickets; break;
      case OfferKind::tls12_ticket: ++counts_.tls12_tickets; break;
      case OfferKind::session_id: ++counts_.session_ids; break;
    }
  }

  // Records the ClientHello's offers; never fails the handshake.
  static int on_client_hello(SSL* ssl, int*, void* arg) noexcept {
    auto* self = static_cast<LocalServer*>(arg);
    try {
      std::vector<std::string_view> psk_identities;
      bool psk_malformed = false;
      const unsigned char* ext = nullptr;
      std::size_t ext_len = 0;
      const bool has_psk = SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_psk, &ext, &ext_len) == 1;
      if (has_psk) {
        psk_malformed = !detail_testing::parse_psk_identities(ext, ext_len, psk_identities);
      }
      std::string_view ticket;
      if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_session_ticket, &ext, &ext_len) == 1 && ext != nullptr) {
        ticket = std::string_view(reinterpret_cast<const char*>(ext), ext_len);
      }
      bool offers_tls13 = false;
      bool versions_malformed = false;
      if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_supported_versions, &ext, &ext_len) == 1) {
        offers_tls13 = detail_testing::lists_tls13(ext, ext_len, versions_malformed);
        offers_tls13 = offers_tls13 || versions_malformed;  // cannot rule out a compat-mode id
      }
      const unsigned char* sid = nullptr;
      const std::size_t sid_len = SSL_client_hello_get0_session_id(ssl, &sid);
      const std::string_view session_id =
          sid != nullptr ? std::string_view(reinterpret_cast<const char*>(sid), sid_len) : std::string_view();

      std::lock_guard lock(self->mutex_);
      ++self->counts_.hellos;
      self->counts_.malformed += (psk_malformed ? 1 : 0) + (versions_malformed ? 1 : 0);
      for (const auto identity : psk_identities) {
        self->record_locked(OfferKind::tls13_ticket, identity);
      }
      if (!ticket.empty()) {
        self->record_locked(OfferKind::tls12_ticket, ticket);
      }
      if (!session_id.empty() && !has_psk && ticket.empty() &&
          (!offers_tls13 || self->issued_ids_.find(session_id) != self->issued_ids_.end())) {
        self->record_locked(OfferKind::session_id, session_id);
      }
    } catch (...) {
      // Out of memory: the offer goes unrecorded, the handshake goes on.
    }
    return SSL_CLIENT_HELLO_SUCCESS;
  }

  // Remembers the ids of TLS 1.2 sessions this server put in its cache (bounded; oldest first
  // out). Returns 0: OpenSSL keeps its own reference.
  static int on_new_session(SSL* ssl, SSL_SESSION* session) noexcept {
    try {
      auto* self = static_cast<LocalServer*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), server_index()));
      unsigned int len = 0;
      const unsigned char* id = SSL_SESSION_get_id(session, &len);
      if (self == nullptr || id == nullptr || len == 0 ||
          SSL_SESSION_get_protocol_version(session) >= TLS1_3_VERSION) {
        return 0;
      }
      std::lock_guard lock(self->mutex_);
      std::string key(reinterpret_cast<const char*>(id), len);
      if (self->issued_ids_.insert(key).second) {
        self->issued_order_.push_back(std::move(key));
        if (self->issued_order_.size() > max_issued_ids) {
          self->issued_ids_.erase(self->issued_order_.front());
          self->issued_order_.pop_front();
        }
      }
    } catch (...) {
      // Out of memory: a later offer of this id may go unrecorded.
    }
    return 0;
  }

  static constexpr std::size_t max_issued_ids = 1U << 16;

  ServerOptions options_;
  Certificate ca_;
  Certificate leaf_;
  detail::Handle<SSL_CTX> ctx_;

  mutable std::mutex mutex_;
  std::map<std::string, std::size_t, std::less<>> offered_;  // OfferKind byte + identity -> times offered
  OfferStats counts_;                                        // hellos, per-kind counts, malformed
  std::set<std::string, std::less<>> issued_ids_;            // TLS 1.2 session ids this server cached
  std::deque<std::string> issued_order_;                     // issued_ids_ in insertion order, for the bound
  std::size_t handshakes_ = 0;
  std::size_t resumed_handshakes_ = 0;
};

}  // namespace tlsresume::testing
