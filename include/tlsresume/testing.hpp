#pragma once
// Test support: certificates made at run time and a local TLS server that talks to a `Client`
// over an in-memory BIO pair (one thread, no network). For tests, demos and benchmarks only; not
// part of the umbrella header, and not meant for production servers.

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "tlsresume/client.hpp"
#include "tlsresume/error.hpp"
#include "tlsresume/handle.hpp"
#include "tlsresume/session.hpp"

namespace tlsresume::testing {

enum class KeyType { ecdsa_p256, rsa_2048 };

/// A certificate with its private key.
struct Certificate {
  detail::Handle<X509> cert;
  detail::Handle<EVP_PKEY> key;
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
  ProtocolVersion min_version = ProtocolVersion::tls1_2;
  ProtocolVersion max_version = ProtocolVersion::tls1_3;
  KeyType key_type = KeyType::ecdsa_p256;
  bool tickets = true;          ///< TLS 1.2 session tickets; false = session ids in the server cache
  std::size_t tls13_tickets = 2;  ///< NewSessionTickets per full TLS 1.3 handshake (SSL_CTX_set_num_tickets)
  bool request_client_certificate = false;  ///< require and verify a client certificate
  const Certificate* client_ca = nullptr;   ///< trust anchor for client certificates
  std::string alpn;                         ///< protocol to select if the client offers it
};

/// One server-side connection of a `LocalServer`, connected to a client over a BIO pair.
class ServerConnection {
 public:
  ServerConnection(detail::Handle<SSL> ssl, std::chrono::nanoseconds client_cpu)
      : ssl_(std::move(ssl)), client_cpu_(client_cpu) {}
  /// `SSL_session_reused` on the server side: the authority on whether resumption happened.
  [[nodiscard]] bool session_reused() const noexcept { return SSL_session_reused(ssl_.get()) == 1; }
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
}  // namespace detail_testing

/// A TLS server for tests: its own CA and leaf certificate, made at construction.
class LocalServer {
 public:
  explicit LocalServer(ServerOptions options = {})
      : options_(std::move(options)),
        ca_(make_ca(unique_ca_name(), options_.key_type)),
        leaf_(make_leaf(ca_, "localhost", options_.key_type)),
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
  }
  LocalServer(const LocalServer&) = delete;
  LocalServer& operator=(const LocalServer&) = delete;

  /// The CA that signed the server certificate: what a client must trust.
  [[nodiscard]] X509* ca_certificate() const noexcept { return ca_.cert.get(); }
  [[nodiscard]] SSL_CTX* native_handle() const noexcept { return ctx_.get(); }
  [[nodiscard]] const ServerOptions& options() const noexcept { return options_; }

  /// Connects `client` to a new server connection over an in-memory BIO pair and runs both
  /// handshakes to completion in this thread. Throws `Error` if either side fails or stalls.
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

  ServerOptions options_;
  Certificate ca_;
  Certificate leaf_;
  detail::Handle<SSL_CTX> ctx_;
};

}  // namespace tlsresume::testing
