// PeerKey and ConfigFingerprint: host normalisation, every field changes the key, and the
// configuration fingerprint follows every security setting it covers (and nothing else).

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <tlsresume/peer_key.hpp>
#include <tlsresume/testing.hpp>

#include "support.hpp"

namespace {

using tlsresume::ConfigFingerprint;
using tlsresume::PeerKey;
using tlsresume::errc;
using tlsresume::detail::Handle;
using tlsresume::testing::Certificate;

Handle<SSL_CTX> raw_context() {
  auto ctx = Handle<SSL_CTX>::adopt(SSL_CTX_new(TLS_client_method()));
  REQUIRE(ctx);
  return ctx;
}

ConfigFingerprint fingerprint_of(const std::function<void(SSL_CTX*)>& configure = {}) {
  auto ctx = raw_context();
  if (configure) {
    configure(ctx.get());
  }
  return ConfigFingerprint::of(ctx.get());
}

/// A CRL issued by `ca` (no revoked entries).
tlsresume::detail::Unique<X509_CRL, &X509_CRL_free> make_crl(const Certificate& ca) {
  tlsresume::detail::Unique<X509_CRL, &X509_CRL_free> crl(X509_CRL_new());
  tlsresume::detail::Unique<ASN1_TIME, &ASN1_TIME_free> when(ASN1_TIME_new());
  REQUIRE(crl);
  REQUIRE(when);
  REQUIRE(X509_CRL_set_version(crl.get(), 1) == 1);
  REQUIRE(X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca.cert.get())) == 1);
  REQUIRE(X509_gmtime_adj(when.get(), 0) != nullptr);
  REQUIRE(X509_CRL_set1_lastUpdate(crl.get(), when.get()) == 1);
  REQUIRE(X509_gmtime_adj(when.get(), 86400) != nullptr);
  REQUIRE(X509_CRL_set1_nextUpdate(crl.get(), when.get()) == 1);
  REQUIRE(X509_CRL_sign(crl.get(), ca.key.get(), EVP_sha256()) > 0);
  return crl;
}

const Certificate& shared_ca() {
  static const Certificate ca = tlsresume::testing::make_ca("peer_key test CA");
  return ca;
}

}  // namespace

TEST_CASE("host names are lower-cased and lose one trailing dot", "[peer_key]") {
  const ConfigFingerprint cfg;
  const auto a = PeerKey::make("Example.COM.", 443, cfg);
  const auto b = PeerKey::make("example.com", 443, cfg);
  CHECK(a == b);
  CHECK(a.hash() == b.hash());
  CHECK(a.host() == "example.com");
  CHECK(a.sni() == "example.com");
  CHECK(a.verified_name() == "example.com");
  CHECK_FALSE(a.is_ip_literal());
  CHECK(a.port() == 443);
  CHECK(PeerKey::make("xn--bcher-kva.example", 443, cfg).host() == "xn--bcher-kva.example");
  CHECK(PeerKey::make("_srv.Host-1.example", 443, cfg).host() == "_srv.host-1.example");
  CHECK(a.to_string() == "example.com:443 cfg=0000000000000000");
}

TEST_CASE("IP literals have one canonical form and send no SNI", "[peer_key]") {
  const ConfigFingerprint cfg;
  const auto v6 = PeerKey::make("::1", 8443, cfg);
  for (std::string_view spelling : {"0:0:0:0:0:0:0:1", "[::1]", "[0:0::1]", "0000::0001"}) {
    INFO(spelling);
    const auto k = PeerKey::make(spelling, 8443, cfg);
    CHECK(k == v6);
    CHECK(k.hash() == v6.hash());
  }
  CHECK(v6.host() == "::1");
  CHECK(v6.is_ip_literal());
  CHECK(v6.sni().empty());
  CHECK(v6.verified_name() == "::1");
  CHECK(v6.to_string() == "[::1]:8443 cfg=0000000000000000");
  CHECK(PeerKey::make("2001:DB8:0:0:0:0:0:1", 443, cfg).host() == "2001:db8::1");

  const auto v4 = PeerKey::make("127.0.0.1", 443, cfg);
  CHECK(v4.is_ip_literal());
  CHECK(v4.sni().empty());
  CHECK(v4.verified_name() == "127.0.0.1");
  CHECK(v4.to_string() == "127.0.0.1:443 cfg=0000000000000000");

  // An IPv4-mapped IPv6 address stays in IPv6 form: another key than the IPv4 address.
  const auto mapped = PeerKey::make("::FFFF:127.0.0.1", 443, cfg);
  CHECK(mapped.host() == "::ffff:127.0.0.1");
  CHECK(mapped.is_ip_literal());
  CHECK(mapped != v4);
}

TEST_CASE("every field of a PeerKey changes the key and its hash", "[peer_key]") {
  auto ctx = raw_context();
  const auto cfg = ConfigFingerprint::of(ctx.get());
  const std::vector<std::string> alpn{"h2", "http/1.1"};
  const auto base = PeerKey::make("example.com", 443, cfg, alpn, "policy-1");

  const auto twin = PeerKey::make("example.com", 443, ConfigFingerprint::of(ctx.get()),
                                  std::vector<std::string>{"h2", "http/1.1"}, "policy-1");
  CHECK(twin == base);
  CHECK(twin.hash() == base.hash());
  CHECK(std::hash<PeerKey>{}(twin) == base.hash());

  const std::vector<std::string> reversed{"http/1.1", "h2"};
  const std::vector<std::string> shorter{"h2"};
  const std::vector<std::string> other{"h2", "http/1.0"};
  const std::vector<std::pair<const char*, PeerKey>> variants{
      {"host", PeerKey::make("example.org", 443, cfg, alpn, "policy-1")},
      {"port", PeerKey::make("example.com", 8443, cfg, alpn, "policy-1")},
      {"ALPN order", PeerKey::make("example.com", 443, cfg, reversed, "policy-1")},
      {"ALPN shorter", PeerKey::make("example.com", 443, cfg, shorter, "policy-1")},
      {"ALPN other", PeerKey::make("example.com", 443, cfg, other, "policy-1")},
      {"no ALPN", PeerKey::make("example.com", 443, cfg, {}, "policy-1")},
      {"config", PeerKey::make("example.com", 443, ConfigFingerprint{}, alpn, "policy-1")},
      {"config policy", PeerKey::make("example.com", 443, ConfigFingerprint::of(ctx.get(), "x"), alpn, "policy-1")},
      {"policy id", PeerKey::make("example.com", 443, cfg, alpn, "policy-2")},
      {"no policy id", PeerKey::make("example.com", 443, cfg, alpn)},
  };
  for (const auto& [what, key] : variants) {
    INFO(what);
    CHECK(key != base);
    CHECK(key.hash() != base.hash());
  }
  CHECK(base.alpn().size() == 2);
  CHECK(base.alpn()[0] == "h2");
  CHECK(base.policy_id() == "policy-1");
  CHECK(base.config() == cfg);
}

TEST_CASE("PeerKey hashes spread over many keys", "[peer_key]") {
  const ConfigFingerprint cfg;
  std::unordered_set<PeerKey> keys;
  std::set<std::size_t> hashes;
  std::set<std::size_t> low_bits;
  for (int i = 0; i < 512; ++i) {
    const auto key = PeerKey::make("host" + std::to_string(i % 64) + ".example", static_cast<std::uint16_t>(443 + i / 64), cfg);
    keys.insert(key);
    hashes.insert(key.hash());
    low_bits.insert(key.hash() & 0xff);
  }
  CHECK(keys.size() == 512);
  CHECK(hashes.size() == 512);
  CHECK(low_bits.size() > 200);  // 512 keys into 256 buckets: ~221 expected if uniform
}

TEST_CASE("malformed hosts, port 0 and bad ALPN entries throw invalid_argument", "[peer_key][errors]") {
  const ConfigFingerprint cfg;
  const std::string label63(63, 'a');
  const std::string name253 = label63 + '.' + label63 + '.' + label63 + '.' + std::string(61, 'b');
  REQUIRE(name253.size() == 253);
  CHECK(PeerKey::make(name253, 443, cfg).host() == name253);
  CHECK(PeerKey::make(name253 + '.', 443, cfg).host() == name253);

  const std::vector<std::string> bad_hosts{
      "",
      ".",
      "example.com..",
      ".example.com",
      "a..b",
      std::string("a\0b", 3),
      name253 + "c",
      std::string(64, 'a') + ".example",
      "[::1",
      "[]",
      "[127.0.0.1]",
      "[example.com]",
      "127.1",
      "010.0.0.1",
      "1.2.3.4.5",
      "0x7f000001",
      "fe80::1%eth0",
      "example.com:443",
      "ex ample.com",
      "b\xc3\xbc" "cher.example",  // a U-label: IDNA is the caller's job
  };
  for (const std::string& host : bad_hosts) {
    INFO("host: " << host);
    test::require_error([&] { (void)PeerKey::make(host, 443, cfg); }, errc::invalid_argument);
  }
  test::require_error([&] { (void)PeerKey::make("example.com", 0, cfg); }, errc::invalid_argument);
  for (const std::vector<std::string>& alpn :
       {std::vector<std::string>{""}, std::vector<std::string>{"h2", std::string(256, 'x')},
        std::vector<std::string>(300, std::string(255, 'x'))}) {
    test::require_error([&] { (void)PeerKey::make("example.com", 443, cfg, alpn); }, errc::invalid_argument);
  }
  CHECK(PeerKey::make("example.com", 443, cfg, std::vector<std::string>{std::string(255, 'x')}).alpn().size() == 1);
}

TEST_CASE("a default ConfigFingerprint is all zeros; a computed one is stable", "[peer_key][fingerprint]") {
  const ConfigFingerprint unknown;
  CHECK(unknown.hex() == std::string(64, '0'));
  CHECK_FALSE(unknown.known());
  for (std::byte b : unknown.digest()) {
    CHECK(b == std::byte{0});
  }
  auto ctx = raw_context();
  const auto f = ConfigFingerprint::of(ctx.get());
  CHECK(f.known());
  CHECK(f != unknown);
  CHECK(f == ConfigFingerprint::of(ctx.get()));
  const std::string hex = f.hex();
  CHECK(hex.size() == 64);
  CHECK(hex.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(ConfigFingerprint::of(ctx.get(), "policy") != f);
  CHECK(ConfigFingerprint::of(ctx.get(), "policy") == ConfigFingerprint::of(ctx.get(), "policy"));
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("ConfigFingerprint::of(nullptr) throws invalid_argument", "[peer_key][fingerprint][errors]") {
  test::require_error([] { (void)ConfigFingerprint::of(nullptr); }, errc::invalid_argument);
}

TEST_CASE("identically configured contexts have the same fingerprint", "[peer_key][fingerprint]") {
  SECTION("raw SSL_CTX_new(TLS_client_method())") {
    auto a = raw_context();
    auto b = raw_context();
    CHECK(ConfigFingerprint::of(a.get()) == ConfigFingerprint::of(b.get()));
  }
  SECTION("Context::create() of two tags, system trust store") {
    auto a = test::CtxA::create();
    auto b = test::CtxB::create();
    const auto fa = ConfigFingerprint::of(a.native_handle());
    CHECK(fa == ConfigFingerprint::of(b.native_handle()));
    CHECK(fa != fingerprint_of());
    a.add_trusted_certificate(shared_ca().cert.get());
    b.add_trusted_certificate(shared_ca().cert.get());
    CHECK(ConfigFingerprint::of(a.native_handle()) == ConfigFingerprint::of(b.native_handle()));
    CHECK(ConfigFingerprint::of(a.native_handle()) != fa);
  }
  SECTION("the same trusted certificates and CRLs added in another order") {
    const auto ca1 = tlsresume::testing::make_ca("order CA 1");
    const auto ca2 = tlsresume::testing::make_ca("order CA 2");
    const auto crl1 = make_crl(ca1);
    const auto crl2 = make_crl(ca2);
    const auto forward = fingerprint_of([&](SSL_CTX* c) {
      X509_STORE* s = SSL_CTX_get_cert_store(c);
      REQUIRE(X509_STORE_add_cert(s, ca1.cert.get()) == 1);
      REQUIRE(X509_STORE_add_crl(s, crl1.get()) == 1);
      REQUIRE(X509_STORE_add_cert(s, ca2.cert.get()) == 1);
      REQUIRE(X509_STORE_add_crl(s, crl2.get()) == 1);
    });
    const auto backward = fingerprint_of([&](SSL_CTX* c) {
      X509_STORE* s = SSL_CTX_get_cert_store(c);
      REQUIRE(X509_STORE_add_crl(s, crl2.get()) == 1);
      REQUIRE(X509_STORE_add_cert(s, ca2.cert.get()) == 1);
      REQUIRE(X509_STORE_add_cert(s, ca1.cert.get()) == 1);
      REQUIRE(X509_STORE_add_cert(s, ca1.cert.get()) == 1);  // a duplicate is ignored
      REQUIRE(X509_STORE_add_crl(s, crl1.get()) == 1);
    });
    CHECK(forward == backward);
  }
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("each security setting changes the fingerprint", "[peer_key][fingerprint]") {
  const auto base = fingerprint_of();
  const Certificate& ca = shared_ca();
  const auto leaf = tlsresume::testing::make_leaf(ca, "client");
  const auto crl = make_crl(ca);

  const std::vector<std::pair<const char*, std::function<void(SSL_CTX*)>>> changes{
      {"min version", [](SSL_CTX* c) { REQUIRE(SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) == 1); }},
      {"max version", [](SSL_CTX* c) { REQUIRE(SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION) == 1); }},
      {"verify mode", [](SSL_CTX* c) { SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr); }},
      {"verify depth", [](SSL_CTX* c) { SSL_CTX_set_verify_depth(c, 3); }},
      {"verify callback", [](SSL_CTX* c) {
         SSL_CTX_set_verify(c, SSL_VERIFY_NONE, [](int ok, X509_STORE_CTX*) { return ok; });
       }},
      {"cipher list (TLS 1.2)", [](SSL_CTX* c) { REQUIRE(SSL_CTX_set_cipher_list(c, "ECDHE-ECDSA-AES128-GCM-SHA256") == 1); }},
      {"ciphersuites (TLS 1.3)", [](SSL_CTX* c) { REQUIRE(SSL_CTX_set_ciphersuites(c, "TLS_AES_128_GCM_SHA256") == 1); }},
      {"security level", [](SSL_CTX* c) { SSL_CTX_set_security_level(c, 3); }},
      {"option ALLOW_NO_DHE_KEX", [](SSL_CTX* c) { SSL_CTX_set_options(c, SSL_OP_ALLOW_NO_DHE_KEX); }},
      {"option IGNORE_UNEXPECTED_EOF", [](SSL_CTX* c) { SSL_CTX_set_options(c, SSL_OP_IGNORE_UNEXPECTED_EOF); }},
      {"verify param host", [](SSL_CTX* c) {
         REQUIRE(X509_VERIFY_PARAM_set1_host(SSL_CTX_get0_param(c), "example.com", 0) == 1);
       }},
      {"verify param IP", [](SSL_CTX* c) { REQUIRE(X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(c), "192.0.2.1") == 1); }},
      {"verify param e-mail", [](SSL_CTX* c) {
         REQUIRE(X509_VERIFY_PARAM_set1_email(SSL_CTX_get0_param(c), "a@example.com", 0) == 1);
       }},
      {"verify param flags", [](SSL_CTX* c) { REQUIRE(X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(c), X509_V_FLAG_CRL_CHECK) == 1); }},
      {"OCSP status request", [](SSL_CTX* c) { REQUIRE(SSL_CTX_set_tlsext_status_type(c, TLSEXT_STATUSTYPE_ocsp) == 1); }},
      {"trusted certificate", [&](SSL_CTX* c) { REQUIRE(X509_STORE_add_cert(SSL_CTX_get_cert_store(c), ca.cert.get()) == 1); }},
      {"CRL", [&](SSL_CTX* c) { REQUIRE(X509_STORE_add_crl(SSL_CTX_get_cert_store(c), crl.get()) == 1); }},
      {"client certificate", [&](SSL_CTX* c) {
         REQUIRE(SSL_CTX_use_certificate(c, leaf.cert.get()) == 1);
         REQUIRE(SSL_CTX_use_PrivateKey(c, leaf.key.get()) == 1);
       }},
  };
  std::vector<ConfigFingerprint> seen{base};
  for (const auto& [what, change] : changes) {
    INFO(what);
    const auto changed = fingerprint_of(change);
    CHECK(changed != base);
    CHECK(changed == fingerprint_of(change));  // and its twin agrees
    for (const auto& other : seen) {
      CHECK(changed != other);
    }
    seen.push_back(changed);
  }

  SECTION("a client certificate's chain") {
    auto with_leaf = [&](SSL_CTX* c) {
      REQUIRE(SSL_CTX_use_certificate(c, leaf.cert.get()) == 1);
      REQUIRE(SSL_CTX_use_PrivateKey(c, leaf.key.get()) == 1);
    };
    CHECK(fingerprint_of(with_leaf) != fingerprint_of([&](SSL_CTX* c) {
      with_leaf(c);
      REQUIRE(SSL_CTX_add1_chain_cert(c, ca.cert.get()) == 1);
    }));
  }
  SECTION("a client certificate through the Context API") {
    auto a = test::CtxA::create();
    auto b = test::CtxA::create();
    a.use_client_certificate(leaf.cert.get(), leaf.key.get());
    CHECK(ConfigFingerprint::of(a.native_handle()) != ConfigFingerprint::of(b.native_handle()));
    b.use_client_certificate(leaf.cert.get(), leaf.key.get());
    CHECK(ConfigFingerprint::of(a.native_handle()) == ConfigFingerprint::of(b.native_handle()));
  }
  SECTION("the Context API and a refresh after a change through native_handle()") {
    auto ctx = test::CtxA::create();
    const auto before = ConfigFingerprint::of(ctx.native_handle());
    ctx.set_verify_peer(false);
    const auto no_verify = ConfigFingerprint::of(ctx.native_handle());
    CHECK(no_verify != before);
    ctx.set_verify_peer(true);
    CHECK(ConfigFingerprint::of(ctx.native_handle()) == before);
    ctx.set_protocol_range(tlsresume::ProtocolVersion::tls1_3, tlsresume::ProtocolVersion::tls1_3);
    const auto tls13 = ConfigFingerprint::of(ctx.native_handle());
    CHECK(tls13 != before);
    SSL_CTX_set_verify_depth(ctx.native_handle(), 2);  // a change the fingerprint sees only when recomputed
    CHECK(ConfigFingerprint::of(ctx.native_handle()) != tls13);
  }
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("options outside the security mask do not change the fingerprint", "[peer_key][fingerprint]") {
  const auto base = fingerprint_of();
  CHECK(fingerprint_of([](SSL_CTX* c) { SSL_CTX_set_options(c, SSL_OP_NO_TICKET); }) == base);
  CHECK(fingerprint_of([](SSL_CTX* c) { SSL_CTX_clear_options(c, SSL_OP_ENABLE_MIDDLEBOX_COMPAT); }) == base);
  CHECK(fingerprint_of([](SSL_CTX* c) { SSL_CTX_set_options(c, SSL_OP_CIPHER_SERVER_PREFERENCE); }) == base);
  CHECK(fingerprint_of([](SSL_CTX* c) { SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF); }) == base);
}

TEST_CASE("the fingerprint encoding holds no private key", "[peer_key][fingerprint]") {
  const auto leaf = tlsresume::testing::make_leaf(shared_ca(), "client");
  auto ctx = raw_context();
  REQUIRE(SSL_CTX_use_certificate(ctx.get(), leaf.cert.get()) == 1);
  REQUIRE(SSL_CTX_use_PrivateKey(ctx.get(), leaf.key.get()) == 1);
  const std::string encoding = ConfigFingerprint::encode(ctx.get());

  // The raw private scalar of the P-256 key.
  BIGNUM* priv = nullptr;
  REQUIRE(EVP_PKEY_get_bn_param(leaf.key.get(), OSSL_PKEY_PARAM_PRIV_KEY, &priv) == 1);
  std::string scalar(32, '\0');
  const int n = BN_bn2binpad(priv, reinterpret_cast<unsigned char*>(scalar.data()), 32);
  BN_clear_free(priv);
  REQUIRE(n == 32);
  CHECK(encoding.find(scalar) == std::string::npos);
  CHECK(encoding.find(scalar.substr(0, 8)) == std::string::npos);

  // Its DER encoding.
  unsigned char* der = nullptr;
  const int der_len = i2d_PrivateKey(leaf.key.get(), &der);
  REQUIRE(der_len > 0);
  const std::string key_der(reinterpret_cast<const char*>(der), static_cast<std::size_t>(der_len));
  OPENSSL_clear_free(der, static_cast<std::size_t>(der_len));
  CHECK(encoding.find(key_der) == std::string::npos);

  // The certificate does count (so the check above is not vacuous).
  CHECK(ConfigFingerprint::of(ctx.get()) != fingerprint_of());
  REQUIRE_ERROR_QUEUE_EMPTY();
}
