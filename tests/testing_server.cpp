// testing::LocalServer itself: the certificate's host name (ServerOptions::host), the record of
// what ClientHellos offer for resumption (offers(), times_offered(), clear_offers()), and the
// handshake counters.
//
// An offer is checked against the bytes the client really holds: the TLS 1.3 / TLS 1.2 ticket
// (`SSL_SESSION_get0_ticket`) or the TLS 1.2 session id (`SSL_SESSION_get_id`).

#include "support.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using test::ClientA;
using test::connect_clean;
using test::CtxA;
using test::Mode;
using test::server_options;
using test::to_string;
using tlsresume::errc;
using tlsresume::ProtocolVersion;
using tlsresume::testing::LocalServer;
using tlsresume::testing::OfferKind;
using tlsresume::testing::OfferStats;
using tlsresume::testing::ServerOptions;
using SessionA = tlsresume::BoundSession<test::TagA>;

std::string ticket_of(const SessionA& s) {
  const unsigned char* tick = nullptr;
  std::size_t len = 0;
  SSL_SESSION_get0_ticket(s.native_handle(), &tick, &len);
  return tick != nullptr ? std::string(reinterpret_cast<const char*>(tick), len) : std::string();
}

std::string id_of(const SessionA& s) {
  unsigned int len = 0;
  const unsigned char* id = SSL_SESSION_get_id(s.native_handle(), &len);
  return std::string(reinterpret_cast<const char*>(id), len);
}

std::string common_name(X509* cert) {
  char buf[256] = {};
  REQUIRE(X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf) > 0);
  return buf;
}

/// Nothing offered for resumption, in `hellos` ClientHellos.
void check_no_offer(const OfferStats& s, std::size_t hellos) {
  CHECK(s.hellos == hellos);
  CHECK(s.tls13_tickets == 0);
  CHECK(s.tls12_tickets == 0);
  CHECK(s.session_ids == 0);
  CHECK(s.distinct == 0);
  CHECK(s.offered_more_than_once == 0);
  CHECK(s.max_times_offered == 0);
  CHECK(s.malformed == 0);
}

/// A client context whose highest version is TLS 1.2: its ClientHello has no supported_versions
/// extension and no middlebox-compatibility session id.
CtxA tls12_only_context_for(const LocalServer& server) {
  auto ctx = test::client_context_for(server);
  REQUIRE(SSL_CTX_set_max_proto_version(ctx.native_handle(), TLS1_2_VERSION) == 1);
  return ctx;
}

// ---- hand-made ClientHellos ----------------------------------------------------------------------

void put16(std::vector<unsigned char>& out, std::size_t v) {
  out.push_back(static_cast<unsigned char>(v >> 8));
  out.push_back(static_cast<unsigned char>(v));
}
void put_ext(std::vector<unsigned char>& out, unsigned type, const std::vector<unsigned char>& body) {
  put16(out, type);
  put16(out, body.size());
  out.insert(out.end(), body.begin(), body.end());
}

/// A well-formed pre_shared_key extension body with these identities and one 32-byte binder each.
std::vector<unsigned char> psk_ext(const std::vector<std::string>& identities) {
  std::vector<unsigned char> ids;
  for (const auto& id : identities) {
    put16(ids, id.size());
    ids.insert(ids.end(), id.begin(), id.end());
    ids.insert(ids.end(), {0, 0, 0, 7});  // obfuscated_ticket_age
  }
  std::vector<unsigned char> binders;
  for (std::size_t i = 0; i < identities.size(); ++i) {
    binders.push_back(32);
    binders.insert(binders.end(), 32, static_cast<unsigned char>(0xb0 + i));
  }
  std::vector<unsigned char> out;
  put16(out, ids.size());
  out.insert(out.end(), ids.begin(), ids.end());
  put16(out, binders.size());
  out.insert(out.end(), binders.begin(), binders.end());
  return out;
}

/// A TLS 1.3 ClientHello record with a 32-byte legacy session id (0x5a bytes), these
/// supported_versions bytes and, last, a pre_shared_key extension with these bytes (if not empty).
std::vector<unsigned char> client_hello(const std::vector<unsigned char>& versions, const std::vector<unsigned char>& psk) {
  std::vector<unsigned char> exts;
  put_ext(exts, TLSEXT_TYPE_supported_versions, versions);
  put_ext(exts, TLSEXT_TYPE_psk_kex_modes, {1, 1});
  if (!psk.empty()) {
    put_ext(exts, TLSEXT_TYPE_psk, psk);  // must be the last extension
  }
  std::vector<unsigned char> body{3, 3};
  body.insert(body.end(), 32, 0x11);  // random
  body.push_back(32);
  body.insert(body.end(), 32, 0x5a);  // legacy_session_id
  put16(body, 2);
  put16(body, 0x1301);  // TLS_AES_128_GCM_SHA256
  body.insert(body.end(), {1, 0});  // null compression
  put16(body, exts.size());
  body.insert(body.end(), exts.begin(), exts.end());
  std::vector<unsigned char> record{0x16, 3, 1};
  put16(record, body.size() + 4);
  record.insert(record.end(), {1, 0});  // client_hello, 24-bit length
  put16(record, body.size());
  record.insert(record.end(), body.begin(), body.end());
  return record;
}

/// Feeds `record` to a new connection of `server` (bypassing `handshake()`) and runs the server
/// until it stops; OpenSSL's errors (the hello is not a complete one) are cleared.
void feed(LocalServer& server, const std::vector<unsigned char>& record) {
  BIO* client_bio = nullptr;
  BIO* server_bio = nullptr;
  REQUIRE(BIO_new_bio_pair(&client_bio, 0, &server_bio, 0) == 1);
  auto client_end = tlsresume::detail::Handle<BIO>::adopt(client_bio);
  auto ssl = tlsresume::detail::Handle<SSL>::adopt(SSL_new(server.native_handle()));
  REQUIRE(ssl);
  SSL_set_bio(ssl.get(), server_bio, server_bio);
  SSL_set_accept_state(ssl.get());
  REQUIRE(BIO_write(client_bio, record.data(), static_cast<int>(record.size())) == static_cast<int>(record.size()));
  CHECK(SSL_do_handshake(ssl.get()) != 1);
  ERR_clear_error();
}

}  // namespace

TEST_CASE("ServerOptions::host names the leaf certificate: CN and DNS name", "[testing][server]") {
  ServerOptions options;
  options.host = "b.test";
  LocalServer server(options);
  auto ctx = test::client_context_for(server);

  SECTION("a client for b.test verifies the certificate") {
    ClientA client(ctx);
    client.set_server_name("b.test");
    auto conn = server.handshake(client);
    CHECK(SSL_get_verify_result(client.native_handle()) == X509_V_OK);
    X509* peer = SSL_get0_peer_certificate(client.native_handle());
    REQUIRE(peer != nullptr);
    CHECK(common_name(peer) == "b.test");
    client.shutdown();
    conn.shutdown();
  }

  SECTION("the IP names are kept") {
    ClientA client(ctx);
    client.set_server_name("127.0.0.1");
    auto conn = server.handshake(client);
    CHECK(SSL_get_verify_result(client.native_handle()) == X509_V_OK);
    client.shutdown();
    conn.shutdown();
  }

  SECTION("twin: a client for localhost fails verification") {
    ClientA client(ctx);
    client.set_server_name("localhost");
    CHECK_THROWS_AS(server.handshake(client), tlsresume::Error);
    REQUIRE_ERROR_QUEUE_EMPTY();
    CHECK(SSL_get_verify_result(client.native_handle()) == X509_V_ERR_HOSTNAME_MISMATCH);
  }
}

TEST_CASE("three servers with three names: each name verifies only against its own server", "[testing][server]") {
  const std::vector<std::string> names{"a.test", "b.test", "c.test"};
  std::vector<std::unique_ptr<LocalServer>> servers;
  for (const auto& name : names) {
    ServerOptions options;
    options.host = name;
    servers.push_back(std::make_unique<LocalServer>(options));
  }
  auto ctx = test::client_context_for(*servers[0]);  // trusts all three CAs
  ctx.add_trusted_certificate(servers[1]->ca_certificate());
  ctx.add_trusted_certificate(servers[2]->ca_certificate());
  for (std::size_t s = 0; s < servers.size(); ++s) {
    for (std::size_t n = 0; n < names.size(); ++n) {
      CAPTURE(s, names[n]);
      ClientA client(ctx);
      client.set_server_name(names[n]);
      if (s == n) {
        auto conn = servers[s]->handshake(client);
        CHECK(SSL_get_verify_result(client.native_handle()) == X509_V_OK);
        client.shutdown();
        conn.shutdown();
      } else {
        CHECK_THROWS_AS(servers[s]->handshake(client), tlsresume::Error);
        REQUIRE_ERROR_QUEUE_EMPTY();
        CHECK(SSL_get_verify_result(client.native_handle()) == X509_V_ERR_HOSTNAME_MISMATCH);
      }
    }
  }
  for (const auto& server : servers) {
    CHECK(server->handshakes() == 1);  // failed handshakes are not counted
  }
}

TEST_CASE("ServerOptions::host that is not a DNS name is refused", "[testing][server]") {
  const std::string host = GENERATE("", "a,b.test", "a b", "DNS:x");
  CAPTURE(host);
  ServerOptions options;
  options.host = host;
  try {
    LocalServer server(options);
    FAIL("accepted");
  } catch (const tlsresume::Error& e) {
    CHECK(e.code() == tlsresume::make_error_code(errc::invalid_argument));
  }
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("twin: ServerOptions::host may be a wildcard or use '-' and '_'", "[testing][server]") {
  const auto [host, name] = GENERATE(std::pair<std::string, std::string>{"*.wild-card.test", "w.wild-card.test"},
                                     std::pair<std::string, std::string>{"under_score.test", "under_score.test"});
  CAPTURE(host, name);
  ServerOptions options;
  options.host = host;
  LocalServer server(options);
  auto ctx = test::client_context_for(server);
  ClientA client(ctx);
  client.set_server_name(name);
  auto conn = server.handshake(client);
  CHECK(SSL_get_verify_result(client.native_handle()) == X509_V_OK);
  client.shutdown();
  conn.shutdown();
}

TEST_CASE("TLS 1.3: a full handshake offers nothing, a resumed one offers its ticket once", "[testing][server][tls13]") {
  LocalServer server(server_options(Mode::tls13));
  auto ctx = test::client_context_for(server);

  REQUIRE(connect_clean(ctx, server).sessions == 2);
  check_no_offer(server.offers(), 1);  // the 32-byte compat session id is not an offer

  auto s = ctx.take_recent_session();
  REQUIRE(s.has_value());
  const std::string ticket = ticket_of(*s);
  REQUIRE_FALSE(ticket.empty());
  REQUIRE(connect_clean(ctx, server, &*s).server_reused);
  {
    const auto o = server.offers();
    CHECK(o.hellos == 2);
    CHECK(o.tls13_tickets == 1);
    CHECK(o.tls12_tickets == 0);
    CHECK(o.session_ids == 0);
    CHECK(o.distinct == 1);
    CHECK(o.offered_more_than_once == 0);
    CHECK(o.max_times_offered == 1);
    CHECK(o.malformed == 0);
    CHECK(server.times_offered(OfferKind::tls13_ticket, ticket) == 1);  // the PSK identity is the ticket
    CHECK(server.times_offered(OfferKind::tls12_ticket, ticket) == 0);  // kinds are kept apart
  }

  SECTION("the same ticket on two clients is one identity offered twice") {
    server.clear_offers();
    check_no_offer(server.offers(), 0);
    auto t = ctx.take_recent_session();
    REQUIRE(t.has_value());
    // Two SSL_SESSION objects with the same ticket: once a client resumed with an SSL_SESSION,
    // OpenSSL marks that object not resumable, and the next client would not offer it at all.
    const SessionA copies[] = {ctx.copy_session(*t), ctx.copy_session(*t)};
    for (const auto& copy : copies) {
      ClientA client(ctx);
      client.set_session(copy);
      auto conn = server.handshake(client);
      client.shutdown();
      conn.shutdown();
    }
    const auto o = server.offers();
    CHECK(o.hellos == 2);
    CHECK(o.tls13_tickets == 2);
    CHECK(o.distinct == 1);
    CHECK(o.offered_more_than_once == 1);
    CHECK(o.max_times_offered == 2);
    CHECK(server.times_offered(OfferKind::tls13_ticket, ticket_of(*t)) == 2);
  }

  SECTION("twin: one SSL_SESSION object set on two clients is offered by the first only") {
    server.clear_offers();
    auto t = ctx.take_recent_session();
    REQUIRE(t.has_value());
    for (int n = 0; n < 2; ++n) {
      ClientA client(ctx);
      client.set_session(*t);
      auto conn = server.handshake(client);
      CHECK(conn.session_reused() == (n == 0));
      client.shutdown();
      conn.shutdown();
    }
    CHECK_FALSE(t->is_resumable());  // OpenSSL marked it used (SSL_CTX_remove_session on a TLS 1.3 hit)
    const auto o = server.offers();
    CHECK(o.hellos == 2);
    CHECK(o.tls13_tickets == 1);
    CHECK(o.offered_more_than_once == 0);
  }

  SECTION("twin: two different tickets are two identities offered once") {
    server.clear_offers();
    for (int n = 0; n < 2; ++n) {
      auto t = ctx.take_recent_session();
      REQUIRE(t.has_value());
      connect_clean(ctx, server, &*t);
    }
    const auto o = server.offers();
    CHECK(o.tls13_tickets == 2);
    CHECK(o.distinct == 2);
    CHECK(o.offered_more_than_once == 0);
    CHECK(o.max_times_offered == 1);
  }
}

TEST_CASE("TLS 1.2: a resumption offers its ticket or its session id, a full handshake nothing",
          "[testing][server][tls12]") {
  const auto mode = GENERATE(Mode::tls12_tickets, Mode::tls12_session_ids);
  const bool tls12_client = GENERATE(false, true);  // the client offers TLS 1.3 too, or not
  CAPTURE(to_string(mode), tls12_client);
  LocalServer server(server_options(mode));
  auto ctx = tls12_client ? tls12_only_context_for(server) : test::client_context_for(server);

  REQUIRE_FALSE(connect_clean(ctx, server).server_reused);
  check_no_offer(server.offers(), 1);

  auto s = ctx.take_recent_session();
  REQUIRE(s.has_value());
  for (std::size_t n = 1; n <= 2; ++n) {  // TLS 1.2 sessions may be offered again
    CAPTURE(n);
    REQUIRE(connect_clean(ctx, server, &*s).server_reused);
    const auto o = server.offers();
    CHECK(o.hellos == n + 1);
    CHECK(o.tls13_tickets == 0);
    CHECK(o.distinct == 1);
    CHECK(o.max_times_offered == n);
    CHECK(o.offered_more_than_once == (n > 1 ? 1U : 0U));
    CHECK(o.malformed == 0);
    if (mode == Mode::tls12_tickets) {
      CHECK(o.tls12_tickets == n);
      CHECK(o.session_ids == 0);  // the id sent with a ticket only echoes it
      CHECK(server.times_offered(OfferKind::tls12_ticket, ticket_of(*s)) == n);
    } else {
      CHECK(o.tls12_tickets == 0);
      CHECK(o.session_ids == n);
      CHECK(server.times_offered(OfferKind::session_id, id_of(*s)) == n);
    }
  }
}

TEST_CASE("a session id unknown to the server counts only from a client that does not offer TLS 1.3",
          "[testing][server][tls12]") {
  // A session of another server: a real offer, but indistinguishable on the wire from a
  // middlebox-compatibility id when the client also offers TLS 1.3.
  LocalServer other(server_options(Mode::tls12_session_ids));
  LocalServer server(server_options(Mode::tls12_session_ids));
  const bool tls12_client = GENERATE(false, true);
  CAPTURE(tls12_client);
  auto ctx = tls12_client ? tls12_only_context_for(other) : test::client_context_for(other);
  ctx.add_trusted_certificate(server.ca_certificate());
  connect_clean(ctx, other);
  auto s = ctx.take_recent_session();
  REQUIRE(s.has_value());

  CHECK_FALSE(connect_clean(ctx, server, &*s).server_reused);
  const auto o = server.offers();
  CHECK(o.hellos == 1);
  CHECK(o.session_ids == (tls12_client ? 1U : 0U));
  CHECK(server.times_offered(OfferKind::session_id, id_of(*s)) == (tls12_client ? 1U : 0U));
}

TEST_CASE("handshakes() and resumed_handshakes() count completed handshakes", "[testing][server]") {
  const auto mode = GENERATE(Mode::tls13, Mode::tls12_tickets, Mode::tls12_session_ids);
  CAPTURE(to_string(mode));
  LocalServer server(server_options(mode));
  auto ctx = test::client_context_for(server);
  CHECK(server.handshakes() == 0);
  CHECK(server.resumed_handshakes() == 0);

  connect_clean(ctx, server);
  CHECK(server.handshakes() == 1);
  CHECK(server.resumed_handshakes() == 0);

  for (int n = 0; n < 3; ++n) {
    auto s = ctx.take_recent_session();
    REQUIRE(s.has_value());
    REQUIRE(connect_clean(ctx, server, &*s).server_reused);
  }
  connect_clean(ctx, server);  // no session: full
  CHECK(server.handshakes() == 5);
  CHECK(server.resumed_handshakes() == 3);

  SECTION("a failed handshake is not counted") {
    ClientA client(ctx);
    client.set_server_name("not-the-server.test");
    CHECK_THROWS_AS(server.handshake(client), tlsresume::Error);
    REQUIRE_ERROR_QUEUE_EMPTY();
    CHECK(server.handshakes() == 5);
    CHECK(server.offers().hellos == 6);  // but its ClientHello was seen
  }

  SECTION("clear_offers() keeps the handshake counters") {
    server.clear_offers();
    CHECK(server.offers().hellos == 0);
    CHECK(server.handshakes() == 5);
    CHECK(server.resumed_handshakes() == 3);
  }
}

TEST_CASE("pre_shared_key parsing: a well-formed extension and every truncation of it", "[testing][server]") {
  const auto ext = psk_ext({"first ticket", "second"});
  std::vector<std::string_view> ids;
  REQUIRE(tlsresume::testing::detail_testing::parse_psk_identities(ext.data(), ext.size(), ids));
  REQUIRE(ids.size() == 2);
  CHECK(ids[0] == "first ticket");
  CHECK(ids[1] == "second");

  for (std::size_t n = 0; n < ext.size(); ++n) {
    CAPTURE(n);
    std::vector<unsigned char> cut(ext.begin(), ext.begin() + static_cast<std::ptrdiff_t>(n));  // exact size: ASan sees overreads
    CHECK_FALSE(tlsresume::testing::detail_testing::parse_psk_identities(cut.data(), cut.size(), ids));
    CHECK(ids.empty());
  }
  CHECK_FALSE(tlsresume::testing::detail_testing::parse_psk_identities(nullptr, 0, ids));

  SECTION("twins: trailing byte, empty identity, a binder missing, empty identity list") {
    auto trailing = ext;
    trailing.push_back(0);
    CHECK_FALSE(tlsresume::testing::detail_testing::parse_psk_identities(trailing.data(), trailing.size(), ids));
    const auto empty_id = psk_ext({""});
    CHECK_FALSE(tlsresume::testing::detail_testing::parse_psk_identities(empty_id.data(), empty_id.size(), ids));
    auto one_binder = psk_ext({"x", "y"});
    one_binder.resize(one_binder.size() - 33);  // drop the second binder and fix the length
    const std::size_t binders_len = 33;
    one_binder[one_binder.size() - binders_len - 2] = 0;
    one_binder[one_binder.size() - binders_len - 1] = static_cast<unsigned char>(binders_len);
    CHECK_FALSE(tlsresume::testing::detail_testing::parse_psk_identities(one_binder.data(), one_binder.size(), ids));
    const std::vector<unsigned char> no_ids{0, 0, 0, 33, 32};
    CHECK_FALSE(tlsresume::testing::detail_testing::parse_psk_identities(no_ids.data(), no_ids.size(), ids));
  }
}

TEST_CASE("a hand-made ClientHello: its PSK identities are recorded, a malformed extension is counted",
          "[testing][server][tls13]") {
  LocalServer server(server_options(Mode::tls13));
  const std::vector<unsigned char> tls13{2, 3, 4};

  SECTION("well-formed: each identity, and no session id (the hello offers TLS 1.3)") {
    feed(server, client_hello(tls13, psk_ext({"identity one", "identity two"})));
    const auto o = server.offers();
    CHECK(o.hellos == 1);
    CHECK(o.tls13_tickets == 2);
    CHECK(o.session_ids == 0);
    CHECK(o.distinct == 2);
    CHECK(o.malformed == 0);
    CHECK(server.times_offered(OfferKind::tls13_ticket, "identity one") == 1);
    CHECK(server.times_offered(OfferKind::tls13_ticket, "identity two") == 1);
  }

  SECTION("malformed pre_shared_key: counted, nothing recorded") {
    auto bad = psk_ext({"identity one"});
    bad[1] = static_cast<unsigned char>(bad[1] + 7);  // identities length past the end
    feed(server, client_hello(tls13, bad));
    feed(server, client_hello(tls13, {0xff}));  // one byte
    const auto o = server.offers();
    CHECK(o.hellos == 2);
    CHECK(o.malformed == 2);
    CHECK(o.tls13_tickets == 0);
    CHECK(o.distinct == 0);
  }

  SECTION("malformed supported_versions: counted, the session id is not taken as an offer") {
    feed(server, client_hello({5, 3, 4}, {}));
    const auto o = server.offers();
    CHECK(o.hellos == 1);
    CHECK(o.malformed == 1);
    CHECK(o.session_ids == 0);
  }

  SECTION("twin: supported_versions without TLS 1.3 makes the legacy session id an offer") {
    feed(server, client_hello({2, 3, 3}, {}));
    const auto o = server.offers();
    CHECK(o.hellos == 1);
    CHECK(o.malformed == 0);
    CHECK(o.session_ids == 1);
    CHECK(server.times_offered(OfferKind::session_id, std::string(32, '\x5a')) == 1);
  }
}
