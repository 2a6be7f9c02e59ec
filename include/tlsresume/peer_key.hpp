#pragma once
// `PeerKey` and `ConfigFingerprint`: what a cached session is filed under.
//
// A session may be offered again only to the peer it was made with *and* under the client
// configuration that made it: a session made while verification was off, or with another trust
// store, must not skip the checks the current configuration would make. A `PeerKey` therefore
// holds the normalised peer (host, port, SNI, the name the certificate is checked against), the
// offered ALPN list, a per-connection policy id, and the `ConfigFingerprint` of the `SSL_CTX`.
// Keys hold no secrets: no private key, no session, no ticket.
//
// `ConfigFingerprint::of(ctx)` is SHA-256 over a canonical encoding of every security-relevant
// setting OpenSSL 3.0 can read back from an `SSL_CTX` (listed at `ConfigFingerprint::encode`). It
// hashes every trusted certificate, so compute it once per configuration, not per connection
// (about 0.4 ms for Debian 12's 144 system CAs: ~2 us of SHA-256 per certificate), and call it
// again after changing the `SSL_CTX`, in particular after changes made through
// `Context::native_handle()`.
//
// What OpenSSL 3.0 cannot read back, the caller names in a *policy id* string. Give
// `ConfigFingerprint::of` the id of per-context settings and `PeerKey::make` the id of
// per-connection ones (settings made on the `SSL`). Use a new id whenever such a setting changes:
//   - groups (`SSL_CTX_set1_groups*`) and signature algorithms (`SSL_CTX_set1_sigalgs*`,
//     `SSL_CTX_set1_client_sigalgs*`);
//   - *which* verify callback is installed (the fingerprint records only whether one is), a
//     `SSL_CTX_set_cert_verify_callback`, a security callback, DANE, custom extensions;
//   - verification purpose, trust setting and policies of the `X509_VERIFY_PARAM`;
//   - CA directories and stores (`SSL_CTX_load_verify_dir`, `SSL_CTX_load_verify_store`, the
//     directory part of `SSL_CTX_set_default_verify_paths`): they are looked up lazily and cannot
//     be enumerated. Certificates loaded from *files* are in the store at once and are hashed;
//     a certificate a directory lookup finds is cached in the store and joins fingerprints
//     computed after that, one more reason to compute the fingerprint at configuration time.
// The ALPN list is not read from the context either: pass the offered list to `PeerKey::make`.

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/tls1.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#if defined(_WIN32)
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#endif

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tlsresume/error.hpp"
#include "tlsresume/handle.hpp"

namespace tlsresume {

namespace detail {

using Sha256 = std::array<std::byte, 32>;

/// Frees a buffer OpenSSL allocated for us (`OPENSSL_free`).
inline void free_openssl_buffer(char* p) noexcept { OPENSSL_free(p); }

/// Appends a self-delimiting, typed encoding: every field starts with its tag byte, integers are
/// 8 bytes big-endian, byte strings carry a 4-byte length, lists a 4-byte count. The fields of a
/// record are always written in one fixed order, so two different records never encode alike.
class CanonicalEncoder {
 public:
  explicit CanonicalEncoder(std::string_view domain) { bytes(domain); }

  void tag(std::uint8_t t) { out_ += static_cast<char>(t); }
  void u64(std::uint64_t v) {
    for (int shift = 56; shift >= 0; shift -= 8) {
      out_ += static_cast<char>((v >> shift) & 0xffU);
    }
  }
  void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
  void u32(std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) {
      out_ += static_cast<char>((v >> shift) & 0xffU);
    }
  }
  void bytes(std::string_view s) {
    u32(static_cast<std::uint32_t>(s.size()));
    out_ += s;
  }
  void bytes(std::span<const std::byte> s) {
    bytes(std::string_view(reinterpret_cast<const char*>(s.data()), s.size()));
  }
  /// A nullable C string: presence flag, then the bytes.
  void c_string(const char* s) {
    u64(s != nullptr ? 1 : 0);
    bytes(s != nullptr ? std::string_view(s) : std::string_view());
  }
  void count(std::size_t n) { u32(static_cast<std::uint32_t>(n)); }

  [[nodiscard]] const std::string& str() const noexcept { return out_; }
  [[nodiscard]] std::string take() noexcept { return std::move(out_); }

 private:
  std::string out_;
};

/// The SHA-256 message digest, fetched once per process (`EVP_MD_fetch(NULL, "SHA256", NULL)`;
/// never freed: it lives as long as the default library context).
inline const EVP_MD* sha256_md() {
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  if (md == nullptr) {
    throw_openssl_error("EVP_MD_fetch(SHA256)");
  }
  return md;
}

/// SHA-256 of `data` (`EVP_Digest`).
inline Sha256 sha256(std::span<const std::byte> data) {
  Sha256 out{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), reinterpret_cast<unsigned char*>(out.data()), &len, sha256_md(),
                 nullptr) != 1 ||
      len != out.size()) {
    throw_openssl_error("EVP_Digest(SHA256)");
  }
  return out;
}
/// SHA-256 of the bytes of `data` (`EVP_Digest`).
inline Sha256 sha256(std::string_view data) { return sha256(std::as_bytes(std::span(data))); }

/// HMAC-SHA-256 of `data` under the 32-byte `key` (`EVP_Q_mac`). Throws `Error` if OpenSSL fails.
inline Sha256 hmac_sha256(std::span<const std::byte, 32> key, std::span<const std::byte> data) {
  Sha256 out{};
  std::size_t len = 0;
  if (EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, key.data(), key.size(),
                reinterpret_cast<const unsigned char*>(data.data()), data.size(),
                reinterpret_cast<unsigned char*>(out.data()), out.size(), &len) == nullptr ||
      len != out.size()) {
    throw_openssl_error("EVP_Q_mac(HMAC-SHA256)");
  }
  return out;
}

/// SHA-256 of a certificate's DER (`X509_digest`).
inline Sha256 der_sha256(const X509* cert) {
  Sha256 out{};
  unsigned int len = 0;
  if (X509_digest(cert, sha256_md(), reinterpret_cast<unsigned char*>(out.data()), &len) != 1 || len != out.size()) {
    throw_openssl_error("X509_digest");
  }
  return out;
}

/// SHA-256 of a CRL's DER (`X509_CRL_digest`).
inline Sha256 der_sha256(const X509_CRL* crl) {
  Sha256 out{};
  unsigned int len = 0;
  if (X509_CRL_digest(crl, sha256_md(), reinterpret_cast<unsigned char*>(out.data()), &len) != 1 ||
      len != out.size()) {
    throw_openssl_error("X509_CRL_digest");
  }
  return out;
}

/// Holds `X509_STORE_lock` until destroyed.
class StoreLock {
 public:
  explicit StoreLock(X509_STORE* store) : store_(store) {
    if (X509_STORE_lock(store_) != 1) {
      throw_openssl_error("X509_STORE_lock");
    }
  }
  StoreLock(const StoreLock&) = delete;
  StoreLock& operator=(const StoreLock&) = delete;
  ~StoreLock() { X509_STORE_unlock(store_); }

 private:
  X509_STORE* store_;
};

/// Fills `cert`'s extension cache now (`X509_check_purpose(cert, -1, 0)`). OpenSSL 3.0 fills
/// it lazily on a certificate's first use in a verification, and two threads verifying against
/// the same trust anchor for the first time race on it (one may free the key identifier the
/// other is comparing; ThreadSanitizer reports it). Filled while the context is configured,
/// later verifications only read it. A malformed extension leaves nothing in the error queue
/// here: verification reports it.
inline void fill_extension_cache(X509* cert) {
  ERR_set_mark();
  (void)X509_check_purpose(cert, -1, 0);
  ERR_pop_to_mark();
}

/// `fill_extension_cache` for every certificate in `store` (under `X509_STORE_lock`).
inline void fill_extension_caches(X509_STORE* store) {
  StoreLock lock(store);
  STACK_OF(X509_OBJECT)* objects = X509_STORE_get0_objects(store);
  const int n = objects != nullptr ? sk_X509_OBJECT_num(objects) : 0;
  for (int i = 0; i < n; ++i) {
    if (X509* cert = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objects, i))) {
      fill_extension_cache(cert);
    }
  }
}

/// The sorted, de-duplicated DER SHA-256 of every certificate and of every CRL in `store`.
/// The objects are up-ref'd under `X509_STORE_lock` and hashed after it is released, so
/// handshakes on other threads are not held up while we hash.
inline std::pair<std::vector<Sha256>, std::vector<Sha256>> trust_store_digests(X509_STORE* store) {
  std::vector<Handle<X509>> certs;
  std::vector<Unique<X509_CRL, &X509_CRL_free>> crls;
  {
    StoreLock lock(store);
    STACK_OF(X509_OBJECT)* objects = X509_STORE_get0_objects(store);
    const int n = objects != nullptr ? sk_X509_OBJECT_num(objects) : 0;
    certs.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      const X509_OBJECT* object = sk_X509_OBJECT_value(objects, i);
      if (X509* cert = X509_OBJECT_get0_X509(object)) {
        certs.push_back(Handle<X509>::share(cert));
      } else if (X509_CRL* crl = X509_OBJECT_get0_X509_CRL(object)) {
        if (X509_CRL_up_ref(crl) != 1) {
          throw_openssl_error("X509_CRL_up_ref");
        }
        crls.emplace_back(crl);
      }
    }
  }
  std::pair<std::vector<Sha256>, std::vector<Sha256>> out;
  out.first.reserve(certs.size());
  for (const auto& cert : certs) {
    out.first.push_back(der_sha256(cert.get()));
  }
  for (const auto& crl : crls) {
    out.second.push_back(der_sha256(crl.get()));
  }
  for (auto* list : {&out.first, &out.second}) {
    std::sort(list->begin(), list->end());
    list->erase(std::unique(list->begin(), list->end()), list->end());
  }
  return out;
}

/// Field tags of the configuration encoding. Never renumber; add new fields at the end and bump
/// the domain string's version.
enum class ConfigField : std::uint8_t {
  min_version = 1,
  max_version,
  verify_mode,
  verify_depth,
  options,
  security_level,
  ciphers,
  verify_param,
  verify_callback,
  client_cert_callback,
  ct_validation,
  status_request,
  trusted_certificates,
  crls,
  client_certificate,
  client_chain,
  policy_id,
};

}  // namespace detail

/// SHA-256 over a canonical encoding of an SSL_CTX's security-relevant settings (+ policy id).
/// A default-constructed fingerprint is all zeros: "unknown configuration".
class ConfigFingerprint {
 public:
  /// The `SSL_CTX_get_options` bits that join the fingerprint: those that change what a
  /// handshake (full or resumed) proves or protects on a client. Protocol versions
  /// (`SSL_OP_NO_SSLv3` ... `SSL_OP_NO_TLSv1_3`), `SSL_OP_ALLOW_NO_DHE_KEX` (TLS 1.3 resumption
  /// without forward secrecy), `SSL_OP_NO_EXTENDED_MASTER_SECRET`, `SSL_OP_NO_ENCRYPT_THEN_MAC`,
  /// `SSL_OP_NO_COMPRESSION`, `SSL_OP_LEGACY_SERVER_CONNECT`,
  /// `SSL_OP_ALLOW_UNSAFE_LEGACY_RENEGOTIATION`, `SSL_OP_NO_RENEGOTIATION`,
  /// `SSL_OP_IGNORE_UNEXPECTED_EOF` (truncation), `SSL_OP_DONT_INSERT_EMPTY_FRAGMENTS` (CBC in
  /// TLS 1.0) and `SSL_OP_TLS_ROLLBACK_BUG`.
  /// Left out: how sessions are obtained (`SSL_OP_NO_TICKET`: a TLS 1.2 session made with or
  /// without a ticket proves the same), transport and performance bits (`SSL_OP_ENABLE_KTLS`,
  /// `SSL_OP_ENABLE_MIDDLEBOX_COMPAT`, `SSL_OP_TLSEXT_PADDING`, `SSL_OP_CLEANSE_PLAINTEXT`, DTLS
  /// bits) and server-only bits (`SSL_OP_CIPHER_SERVER_PREFERENCE`, `SSL_OP_PRIORITIZE_CHACHA`,
  /// `SSL_OP_NO_ANTI_REPLAY`, `SSL_OP_ALLOW_CLIENT_RENEGOTIATION`, ...).
  static constexpr std::uint64_t option_mask =
      SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 | SSL_OP_NO_TLSv1_2 | SSL_OP_NO_TLSv1_3 |
      SSL_OP_ALLOW_NO_DHE_KEX | SSL_OP_NO_EXTENDED_MASTER_SECRET | SSL_OP_NO_ENCRYPT_THEN_MAC |
      SSL_OP_NO_COMPRESSION | SSL_OP_LEGACY_SERVER_CONNECT | SSL_OP_ALLOW_UNSAFE_LEGACY_RENEGOTIATION |
      SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_DONT_INSERT_EMPTY_FRAGMENTS |
      SSL_OP_TLS_ROLLBACK_BUG;

  /// The all-zero digest: "unknown configuration".
  ConfigFingerprint() = default;

  /// Computes the fingerprint of `ctx` (borrowed; not modified, no reference kept) joined with
  /// `policy_id`: SHA-256 (`EVP_Digest`) of the canonical encoding `encode` returns. Throws
  /// `Error(errc::invalid_argument)` for a null `ctx` and `Error` if an OpenSSL call fails.
  /// Hashes every trusted certificate: call once per configuration change, not per connection.
  /// Must not race with changes to `ctx` (the same rule OpenSSL sets for configuring an
  /// `SSL_CTX`); the trust store is read under `X509_STORE_lock`.
  static ConfigFingerprint of(SSL_CTX* ctx, std::string_view policy_id = {}) {
    ConfigFingerprint f;
    f.digest_ = detail::sha256(encode(ctx, policy_id));
    f.client_identity_ = SSL_CTX_get0_certificate(ctx) != nullptr || SSL_CTX_get_client_cert_cb(ctx) != nullptr;
    return f;
  }

  /// The canonical encoding `of` hashes, for tests and audits. It starts with the domain string
  /// "tlsresume/config-fingerprint/v1" and holds, each under its own tag, in this order:
  /// `SSL_CTX_get_min_proto_version`, `SSL_CTX_get_max_proto_version` (0 = no limit),
  /// `SSL_CTX_get_verify_mode`, `SSL_CTX_get_verify_depth`, `SSL_CTX_get_options & option_mask`,
  /// `SSL_CTX_get_security_level`, the names (`SSL_CIPHER_get_name`) of `SSL_CTX_get_ciphers` in
  /// order (TLS 1.3 ciphersuites included), the `X509_VERIFY_PARAM` of `SSL_CTX_get0_param`
  /// (flags, inherit flags, host flags, auth level, the check time when
  /// `X509_V_FLAG_USE_CHECK_TIME` is set, the hosts, e-mail and IP it checks), whether
  /// `SSL_CTX_get_verify_callback` and `SSL_CTX_get_client_cert_cb` are set,
  /// `SSL_CTX_ct_is_enabled`, `SSL_CTX_get_tlsext_status_type`, the sorted set of DER SHA-256
  /// of the trusted certificates and of the CRLs (`X509_STORE_get0_objects` of
  /// `SSL_CTX_get_cert_store`), the DER SHA-256 of the client certificate
  /// (`SSL_CTX_get0_certificate`, the current one only) and of its chain
  /// (`SSL_CTX_get0_chain_certs`, in order), and `policy_id`. Never the private key.
  static std::string encode(SSL_CTX* ctx, std::string_view policy_id = {}) {
    using detail::ConfigField;
    if (ctx == nullptr) {
      throw_error(errc::invalid_argument, "ConfigFingerprint::of", "null SSL_CTX");
    }
    detail::CanonicalEncoder e("tlsresume/config-fingerprint/v1");
    auto field = [&e](ConfigField f) { e.tag(static_cast<std::uint8_t>(f)); };

    field(ConfigField::min_version);
    e.i64(SSL_CTX_get_min_proto_version(ctx));
    field(ConfigField::max_version);
    e.i64(SSL_CTX_get_max_proto_version(ctx));
    field(ConfigField::verify_mode);
    e.i64(SSL_CTX_get_verify_mode(ctx));
    field(ConfigField::verify_depth);
    e.i64(SSL_CTX_get_verify_depth(ctx));
    field(ConfigField::options);
    e.u64(SSL_CTX_get_options(ctx) & option_mask);
    field(ConfigField::security_level);
    e.i64(SSL_CTX_get_security_level(ctx));

    field(ConfigField::ciphers);
    const STACK_OF(SSL_CIPHER)* ciphers = SSL_CTX_get_ciphers(ctx);
    const int cipher_count = ciphers != nullptr ? sk_SSL_CIPHER_num(ciphers) : 0;
    e.count(static_cast<std::size_t>(cipher_count));
    for (int i = 0; i < cipher_count; ++i) {
      e.c_string(SSL_CIPHER_get_name(sk_SSL_CIPHER_value(ciphers, i)));
    }

    field(ConfigField::verify_param);
    X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx);
    const unsigned long flags = X509_VERIFY_PARAM_get_flags(param);
    e.u64(flags);
    e.u64(X509_VERIFY_PARAM_get_inh_flags(param));
    e.u64(X509_VERIFY_PARAM_get_hostflags(param));
    e.i64(X509_VERIFY_PARAM_get_auth_level(param));
    e.i64((flags & X509_V_FLAG_USE_CHECK_TIME) != 0 ? static_cast<std::int64_t>(X509_VERIFY_PARAM_get_time(param)) : 0);
    std::vector<const char*> hosts;
    for (int i = 0; const char* host = X509_VERIFY_PARAM_get0_host(param, i); ++i) {
      hosts.push_back(host);
    }
    e.count(hosts.size());
    for (const char* host : hosts) {
      e.c_string(host);
    }
    e.c_string(X509_VERIFY_PARAM_get0_email(param));
    {
      // NULL when no IP is set, and then OpenSSL 3.0 also queues "passed a null parameter":
      // drop that one error (and only that one) so the queue stays as it was.
      ERR_set_mark();
      char* ip = X509_VERIFY_PARAM_get1_ip_asc(param);
      const detail::Unique<char, &detail::free_openssl_buffer> owned(ip);
      if (ip == nullptr) {
        const unsigned long last = ERR_peek_last_error();
        if (last != 0 && ERR_GET_REASON(last) != ERR_R_PASSED_NULL_PARAMETER) {
          ERR_clear_last_mark();
          throw_openssl_error("X509_VERIFY_PARAM_get1_ip_asc");
        }
        ERR_pop_to_mark();
      } else {
        ERR_clear_last_mark();
      }
      e.c_string(ip);
    }

    field(ConfigField::verify_callback);
    e.u64(SSL_CTX_get_verify_callback(ctx) != nullptr ? 1 : 0);
    field(ConfigField::client_cert_callback);
    e.u64(SSL_CTX_get_client_cert_cb(ctx) != nullptr ? 1 : 0);
    field(ConfigField::ct_validation);
    e.u64(SSL_CTX_ct_is_enabled(ctx) == 1 ? 1 : 0);
    field(ConfigField::status_request);
    e.i64(SSL_CTX_get_tlsext_status_type(ctx));

    auto [trusted, crls] = detail::trust_store_digests(SSL_CTX_get_cert_store(ctx));
    field(ConfigField::trusted_certificates);
    e.count(trusted.size());
    for (const auto& d : trusted) {
      e.bytes(d);
    }
    field(ConfigField::crls);
    e.count(crls.size());
    for (const auto& d : crls) {
      e.bytes(d);
    }

    field(ConfigField::client_certificate);
    if (const X509* cert = SSL_CTX_get0_certificate(ctx)) {
      e.count(1);
      e.bytes(detail::der_sha256(cert));
    } else {
      e.count(0);
    }
    field(ConfigField::client_chain);
    STACK_OF(X509)* chain = nullptr;
    if (SSL_CTX_get0_chain_certs(ctx, &chain) != 1) {
      throw_openssl_error("SSL_CTX_get0_chain_certs");
    }
    const int chain_count = chain != nullptr ? sk_X509_num(chain) : 0;
    e.count(static_cast<std::size_t>(chain_count));
    for (int i = 0; i < chain_count; ++i) {
      e.bytes(detail::der_sha256(sk_X509_value(chain, i)));
    }

    field(ConfigField::policy_id);
    e.bytes(policy_id);
    return e.take();
  }

  /// The 32 digest bytes.
  [[nodiscard]] std::span<const std::byte, 32> digest() const noexcept { return digest_; }
  /// The digest as 64 lowercase hex characters.
  [[nodiscard]] std::string hex() const {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(2 * digest_.size());
    for (std::byte b : digest_) {
      out += digits[std::to_integer<unsigned>(b) >> 4];
      out += digits[std::to_integer<unsigned>(b) & 0xfU];
    }
    return out;
  }
  /// True unless this is the default (all-zero, "unknown configuration") fingerprint.
  [[nodiscard]] bool known() const noexcept { return digest_ != detail::Sha256{}; }
  /// Whether the configuration presents a client certificate (`SSL_CTX_get0_certificate`) or
  /// may (`SSL_CTX_get_client_cert_cb`): its sessions carry a client identity, which
  /// persistence does not save unless asked to.
  [[nodiscard]] bool has_client_identity() const noexcept { return client_identity_; }

  /// Equal digests (one `memcmp`: compared on every cache lookup whose hash matches).
  friend bool operator==(const ConfigFingerprint& a, const ConfigFingerprint& b) noexcept {
    return a.client_identity_ == b.client_identity_ && std::memcmp(a.digest_.data(), b.digest_.data(), a.digest_.size()) == 0;
  }

 private:
  detail::Sha256 digest_{};
  bool client_identity_ = false;
};

namespace detail {

inline bool is_ascii_digit(char c) noexcept { return c >= '0' && c <= '9'; }

/// A host name or IP literal in canonical form.
struct NormalisedHost {
  std::string text;
  bool is_ip = false;
};

/// `inet_pton` then `inet_ntop` for `family`: the canonical text of an IP literal, or empty if
/// `text` is not one.
inline std::string canonical_ip(int family, std::string_view text) {
  if (text.size() >= INET6_ADDRSTRLEN) {
    return {};
  }
  char in[INET6_ADDRSTRLEN] = {};
  std::copy(text.begin(), text.end(), in);
  unsigned char addr[sizeof(in6_addr)] = {};
  if (::inet_pton(family, in, addr) != 1) {
    return {};
  }
  char out[INET6_ADDRSTRLEN] = {};
  if (::inet_ntop(family, addr, out, sizeof out) == nullptr) {
    return {};
  }
  return out;
}

/// See `PeerKey::make`.
inline NormalisedHost normalise_host(std::string_view host) {
  constexpr std::string_view op = "PeerKey::make";
  if (host.empty()) {
    throw_error(errc::invalid_argument, op, "empty host");
  }
  if (host.find('\0') != std::string_view::npos) {
    throw_error(errc::invalid_argument, op, "host contains a NUL byte");
  }
  if (host.size() > 254) {
    throw_error(errc::invalid_argument, op, "host longer than 253 characters");
  }
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') {
      throw_error(errc::invalid_argument, op, "bracketed host must be an IPv6 literal");
    }
    std::string ip = canonical_ip(AF_INET6, host.substr(1, host.size() - 2));
    if (ip.empty()) {
      throw_error(errc::invalid_argument, op, "bracketed host must be an IPv6 literal");
    }
    return {std::move(ip), true};
  }
  if (std::string ip = canonical_ip(AF_INET6, host); !ip.empty()) {
    return {std::move(ip), true};
  }
  if (std::string ip = canonical_ip(AF_INET, host); !ip.empty()) {
    return {std::move(ip), true};
  }
  if (host.back() == '.') {
    host.remove_suffix(1);
  }
  if (host.empty() || host.size() > 253) {
    throw_error(errc::invalid_argument, op, host.empty() ? "empty host" : "host longer than 253 characters");
  }
  std::string name;
  name.reserve(host.size());
  std::size_t label_start = 0;
  for (std::size_t i = 0; i <= host.size(); ++i) {
    if (i == host.size() || host[i] == '.') {
      const std::size_t label_size = i - label_start;
      if (label_size == 0 || label_size > 63) {
        throw_error(errc::invalid_argument, op, "empty host label or label longer than 63 characters");
      }
      if (i < host.size()) {
        name += '.';
      }
      label_start = i + 1;
      continue;
    }
    const char c = host[i];
    if (c >= 'A' && c <= 'Z') {
      name += static_cast<char>(c - 'A' + 'a');
    } else if ((c >= 'a' && c <= 'z') || is_ascii_digit(c) || c == '-' || c == '_') {
      name += c;
    } else {
      throw_error(errc::invalid_argument, op,
                  "host must be an IP literal or an ASCII name of letters, digits, '-', '_' and '.' "
                  "(convert internationalised names to A-labels first)");
    }
  }
  // A name whose last label is numeric ("127.1", "010.0.0.1", "0x7f000001") is read as an
  // address by some resolvers (inet_aton) and as a name by others: refuse the ambiguity.
  const std::string_view last = std::string_view(name).substr(name.rfind('.') + 1);
  const bool numeric = std::all_of(last.begin(), last.end(), is_ascii_digit) ||
                       (last.size() > 2 && last[0] == '0' && last[1] == 'x' &&
                        std::all_of(last.begin() + 2, last.end(), [](char c) {
                          return is_ascii_digit(c) || (c >= 'a' && c <= 'f');
                        }));
  if (numeric) {
    throw_error(errc::invalid_argument, op, "numeric host that is not a canonical IPv4 or IPv6 literal");
  }
  return {std::move(name), false};
}

}  // namespace detail

/// Identifies a peer *and* the client configuration a session was made under. Immutable; cheap
/// to compare (the hash is compared first) and to hash (precomputed). Holds no secrets.
class PeerKey {
 public:
  /// Makes a key. `host` is normalised:
  ///   - an IPv6 literal, bare or in brackets ("[::1]"), becomes its `inet_ntop` form ("::1");
  ///     an IPv4-mapped address stays in IPv6 form ("::ffff:192.0.2.1", a different key from
  ///     "192.0.2.1"); zone ids ("fe80::1%eth0") are refused;
  ///   - an IPv4 literal in dotted-quad form becomes its `inet_ntop` form;
  ///   - otherwise it is a DNS name in A-labels (IDNA is the caller's job): ASCII letters are
  ///     lower-cased and one trailing dot is removed; it must be 1..253 characters of letters,
  ///     digits, '-', '_' in dot-separated labels of 1..63 characters, and its last label must
  ///     not be numeric (no "127.1", "0x7f000001").
  /// IP literals send no SNI (`sni()` is empty); the certificate is checked against
  /// `verified_name()`, the normalised host. `alpn` is the ALPN list offered, in order (order
  /// matters: it is a preference); `policy_id` names per-connection settings OpenSSL cannot read
  /// back (see the top of this header). Makes no OpenSSL call. Throws
  /// `Error(errc::invalid_argument)` for an empty, overlong or malformed host, a NUL byte, port
  /// 0, an ALPN entry that is empty or longer than 255 bytes, or an ALPN list longer than 65535
  /// bytes on the wire; OpenSSL's error queue is left empty.
  static PeerKey make(std::string_view host, std::uint16_t port, const ConfigFingerprint& config,
                      std::span<const std::string> alpn = {}, std::string_view policy_id = {}) {
    constexpr std::string_view op = "PeerKey::make";
    if (port == 0) {
      throw_error(errc::invalid_argument, op, "port 0");
    }
    std::size_t wire = 0;
    for (const std::string& p : alpn) {
      if (p.empty() || p.size() > 255) {
        throw_error(errc::invalid_argument, op, "each ALPN protocol must be 1..255 bytes");
      }
      wire += 1 + p.size();
    }
    if (wire > 65535) {
      throw_error(errc::invalid_argument, op, "ALPN list longer than 65535 bytes");
    }
    detail::NormalisedHost h = detail::normalise_host(host);
    PeerKey key;
    key.host_ = std::move(h.text);
    key.is_ip_ = h.is_ip;
    key.port_ = port;
    key.alpn_.assign(alpn.begin(), alpn.end());
    key.config_ = config;
    key.policy_id_ = std::string(policy_id);
    key.hash_ = key.compute_hash();
    return key;
  }

  /// The normalised host: a lower-case DNS name or a canonical IP literal (IPv6 without brackets).
  [[nodiscard]] std::string_view host() const noexcept { return host_; }
  /// The port given to `make` (never 0).
  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
  /// The SNI to send: the host for names, empty for IP literals.
  [[nodiscard]] std::string_view sni() const noexcept { return is_ip_ ? std::string_view() : host_; }
  /// The host name or canonical IP the server certificate is checked against.
  [[nodiscard]] std::string_view verified_name() const noexcept { return host_; }
  /// Whether the host is an IP literal (then `sni()` is empty), as `make` found with
  /// `inet_pton`.
  [[nodiscard]] bool is_ip_literal() const noexcept { return is_ip_; }
  /// The ALPN protocols offered, in preference order.
  [[nodiscard]] std::span<const std::string> alpn() const noexcept { return alpn_; }
  /// The fingerprint of the configuration the key was made under (as given to `make`), borrowed
  /// from the key.
  [[nodiscard]] const ConfigFingerprint& config() const noexcept { return config_; }
  /// The per-connection policy id given to `make`.
  [[nodiscard]] std::string_view policy_id() const noexcept { return policy_id_; }
  /// A hash of every field, computed once by `make` (field hashes combined; not a digest, not
  /// stable across builds: persistence uses `key_id`).
  [[nodiscard]] std::size_t hash() const noexcept { return hash_; }

  /// "host:port cfg=<first 16 hex digits of the fingerprint>", IPv6 in brackets, for logs.
  /// Holds nothing secret (the ALPN list and policy id are left out to keep it short).
  [[nodiscard]] std::string to_string() const {
    std::string out;
    if (is_ip_ && host_.find(':') != std::string::npos) {
      out += '[';
      out += host_;
      out += ']';
    } else {
      out += host_;
    }
    out += ':';
    out += std::to_string(port_);
    out += " cfg=";
    out += config_.hex().substr(0, 16);
    return out;
  }

  /// Equal when every field is equal.
  friend bool operator==(const PeerKey& a, const PeerKey& b) noexcept {
    return a.hash_ == b.hash_ && a.port_ == b.port_ && a.is_ip_ == b.is_ip_ && a.host_ == b.host_ &&
           a.config_ == b.config_ && a.policy_id_ == b.policy_id_ && a.alpn_ == b.alpn_;
  }

 private:
  PeerKey() = default;

  /// Combines a hash of each field, in `encode()`'s order, with no allocation: `make` runs once
  /// per connection (`Context::key_for`), so building the encoding just to hash it showed up in
  /// the handshake benchmark (bench/handshake, issue 5).
  std::size_t compute_hash() const noexcept {
    std::uint64_t h = 0x9e3779b97f4a7c15ULL;
    const auto mix = [&h](std::uint64_t v) {
      h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
      h *= 0xff51afd7ed558ccdULL;
      h ^= h >> 33;
    };
    const auto str = [&mix](std::string_view s) {
      mix(s.size());
      mix(std::hash<std::string_view>{}(s));
    };
    str(host_);
    mix((is_ip_ ? 1ULL << 16 : 0) | port_);
    mix(alpn_.size());
    for (const std::string& p : alpn_) {
      str(p);
    }
    std::uint64_t fp = 0;  // the fingerprint is a SHA-256 digest: its first 8 bytes are uniform
    for (std::size_t i = 0; i < sizeof fp; ++i) {
      fp = (fp << 8) | std::to_integer<std::uint64_t>(config_.digest()[i]);
    }
    mix(fp);
    str(policy_id_);
    return static_cast<std::size_t>(h);
  }

 public:
  /// The canonical encoding of every field (domain string "tlsresume/peer-key/v1", then host,
  /// IP flag, port, ALPN list, fingerprint digest, policy id, each length-prefixed): equal keys
  /// have equal encodings. Persistence hashes it with HMAC-SHA-256 into a key id. No secrets.
  [[nodiscard]] std::string encode() const {
    detail::CanonicalEncoder e("tlsresume/peer-key/v1");
    e.bytes(host_);
    e.u64(is_ip_ ? 1 : 0);
    e.u64(port_);
    e.count(alpn_.size());
    for (const std::string& p : alpn_) {
      e.bytes(p);
    }
    e.bytes(config_.digest());
    e.bytes(policy_id_);
    return e.take();
  }

 private:
  std::string host_;
  bool is_ip_ = false;
  std::uint16_t port_ = 0;
  std::vector<std::string> alpn_;
  ConfigFingerprint config_;
  std::string policy_id_;
  std::size_t hash_ = 0;
};

/// The 32-byte HMAC key under which `key_id` hashes peer keys: a file's random salt, or a key
/// derived from an encryption key (persistence). Not a secret when it is a salt.
struct KeyIdSecret {
  std::array<std::byte, 32> bytes{};  ///< the HMAC key
  /// Equal bytes (a plain comparison, not constant-time; no OpenSSL call).
  friend bool operator==(const KeyIdSecret&, const KeyIdSecret&) = default;
};

/// A peer key as persistence stores it: HMAC-SHA-256 of `PeerKey::encode()`.
using KeyId = std::array<std::byte, 32>;

/// HMAC-SHA-256(`secret`, `key.encode()`) (`EVP_Q_mac`). Throws `Error` if OpenSSL fails.
inline KeyId key_id(const KeyIdSecret& secret, const PeerKey& key) {
  const std::string data = key.encode();
  return detail::hmac_sha256(secret.bytes, std::as_bytes(std::span(data)));
}

namespace detail {
/// Hashes a `KeyId` (already uniformly distributed) for unordered containers.
struct KeyIdHash {
  std::size_t operator()(const KeyId& id) const noexcept {
    std::size_t h = 0;
    for (std::size_t i = 0; i < sizeof h; ++i) {
      h = (h << 8) | std::to_integer<std::size_t>(id[i]);
    }
    return h;
  }
};
}  // namespace detail

}  // namespace tlsresume

/// Hashes a `PeerKey` for unordered containers.
template <> struct std::hash<tlsresume::PeerKey> {
  /// `PeerKey::hash()`, precomputed by `PeerKey::make` (no OpenSSL call).
  std::size_t operator()(const tlsresume::PeerKey& k) const noexcept { return k.hash(); }
};
