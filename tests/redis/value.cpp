// The fleet store's value format and names (detail/redis_value.hpp), without a server: a sealed
// value opens under its own name and key and resumes; every tampered byte, a value moved to
// another peer's name or kind, an unknown key id, a wrong key with the right id, a truncated
// value and another version are rejected, never parsed as a session; names are deterministic,
// differ per peer and per fleet key, and show no host name; rotation opens old values.

#include <openssl/rand.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <set>
#include <string>
#include <vector>

#include <tlsresume/detail/redis_value.hpp>

#include "../support.hpp"

namespace {

using namespace std::chrono_literals;
using test::CtxA;
using test::TagA;
using tlsresume::EncryptionKey;
using tlsresume::PeerKey;
using tlsresume::detail::FleetKeyMaterial;
using tlsresume::detail::FleetValueStatus;
using tlsresume::detail::OpenedFleetValue;
using tlsresume::testing::LocalServer;
using time_point = std::chrono::system_clock::time_point;

EncryptionKey key_of(unsigned char fill, std::uint32_t id = 0) {
  EncryptionKey k;
  for (std::size_t i = 0; i < k.bytes.size(); ++i) {
    k.bytes[i] = static_cast<std::byte>(fill + i);
  }
  k.id = id;
  return k;
}

/// A TLS 1.3 ticket received from `server` (the newest of a full handshake).
tlsresume::BoundSession<TagA> ticket_from(CtxA& ctx, LocalServer& server) {
  ctx.set_max_recent_sessions(8);
  (void)test::connect_clean(ctx, server, nullptr, "localhost");
  auto s = ctx.take_recent_session("localhost");
  REQUIRE(s.has_value());
  return std::move(*s);
}

struct Fixture {
  LocalServer server;
  CtxA ctx = test::client_context_for(server);
  PeerKey peer = ctx.key_for("localhost", 443);
  PeerKey other = ctx.key_for("localhost", 8443);
  EncryptionKey k1 = key_of(1);
  EncryptionKey k2 = key_of(77);
  FleetKeyMaterial m1 = tlsresume::detail::derive_fleet_key(k1);
  FleetKeyMaterial m2 = tlsresume::detail::derive_fleet_key(k2);
};

std::string seal(const FleetKeyMaterial& m, const std::string& name, const tlsresume::BoundSession<TagA>& s,
                 time_point expiry, time_point original) {
  return tlsresume::detail::seal_fleet_value(m, name, s.native_handle(), expiry, original);
}

/// Whether the server resumes `session`.
bool resumes(const CtxA& ctx, LocalServer& server, const tlsresume::BoundSession<TagA>& session) {
  test::ClientA client(ctx);
  client.set_server_name("localhost");
  client.set_session(session);
  auto conn = server.handshake(client);
  const bool reused = conn.session_reused() && client.session_reused();
  client.shutdown();
  conn.shutdown();
  return reused;
}

FleetValueStatus open(std::span<const FleetKeyMaterial> keys, const std::string& name, const std::string& value) {
  OpenedFleetValue v;
  const auto status = tlsresume::detail::open_fleet_value(keys, name, value, v);
  CHECK((status == FleetValueStatus::ok) == static_cast<bool>(v.session));
  REQUIRE_ERROR_QUEUE_EMPTY();
  return status;
}

}  // namespace

TEST_CASE("fleet value: sealed under a name and key, it opens there, once parsed, and resumes", "[redis][value]") {
  Fixture f;
  const auto ticket = ticket_from(f.ctx, f.server);
  const auto names = tlsresume::detail::fleet_names("tlsresume:", f.m1, f.peer);
  const time_point expiry = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now() + 1h);
  const time_point original = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now() - 1min);
  const std::string value = seal(f.m1, names.tickets, ticket, expiry, original);
  REQUIRE(value.size() > tlsresume::detail::fleet_value_overhead);
  CHECK(static_cast<unsigned char>(value[0]) == tlsresume::detail::fleet_value_version);
  // The DER (which names the server in its certificate) is not readable in the value.
  CHECK(value.find("localhost") == std::string::npos);

  const FleetKeyMaterial keys[] = {f.m1};
  OpenedFleetValue v;
  REQUIRE(tlsresume::detail::open_fleet_value(keys, names.tickets, value, v) == FleetValueStatus::ok);
  CHECK(v.expiry == expiry);
  CHECK(v.original == original);
  CHECK(v.version == tlsresume::ProtocolVersion::tls1_3);
  CHECK(ticket.to_der() == tlsresume::detail::session_backend<SSL_SESSION>::to_der(v.session.get()));
  REQUIRE_ERROR_QUEUE_EMPTY();

  auto bound = f.ctx.adopt_session(v.session.release());
  CHECK(resumes(f.ctx, f.server, bound));
}

TEST_CASE("fleet value: every tampered byte is rejected, never used", "[redis][value]") {
  Fixture f;
  const auto ticket = ticket_from(f.ctx, f.server);
  const auto names = tlsresume::detail::fleet_names("tlsresume:", f.m1, f.peer);
  const auto now = std::chrono::system_clock::now();
  const std::string value = seal(f.m1, names.tickets, ticket, now + 1h, now);
  const FleetKeyMaterial keys[] = {f.m1};
  REQUIRE(open(keys, names.tickets, value) == FleetValueStatus::ok);
  std::size_t forged = 0;
  std::size_t other = 0;
  for (std::size_t i = 0; i < value.size(); ++i) {
    std::string bad = value;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    const auto status = open(keys, names.tickets, bad);
    REQUIRE(status != FleetValueStatus::ok);
    (status == FleetValueStatus::forged ? forged : other) += 1;
  }
  CHECK(forged == value.size() - 5);  // every byte but the version (malformed) and key id (unknown key)
  CHECK(other == 5);
  // Truncated, extended, empty, another version.
  CHECK(open(keys, names.tickets, value.substr(0, value.size() - 1)) == FleetValueStatus::forged);
  CHECK(open(keys, names.tickets, value + "x") == FleetValueStatus::forged);
  CHECK(open(keys, names.tickets, value.substr(0, 20)) == FleetValueStatus::malformed);
  CHECK(open(keys, names.tickets, "") == FleetValueStatus::malformed);
  std::string v2 = value;
  v2[0] = 2;
  CHECK(open(keys, names.tickets, v2) == FleetValueStatus::malformed);
  CHECK(open(keys, names.tickets, std::string(100000, 'x')) == FleetValueStatus::malformed);
}

TEST_CASE("fleet value: moved to another peer's name, or to the session name, it is rejected", "[redis][value]") {
  Fixture f;
  const auto ticket = ticket_from(f.ctx, f.server);
  const auto mine = tlsresume::detail::fleet_names("tlsresume:", f.m1, f.peer);
  const auto theirs = tlsresume::detail::fleet_names("tlsresume:", f.m1, f.other);
  const auto prefixed = tlsresume::detail::fleet_names("other:", f.m1, f.peer);
  const auto now = std::chrono::system_clock::now();
  const std::string value = seal(f.m1, mine.tickets, ticket, now + 1h, now);
  const FleetKeyMaterial keys[] = {f.m1};
  CHECK(open(keys, mine.tickets, value) == FleetValueStatus::ok);
  CHECK(open(keys, theirs.tickets, value) == FleetValueStatus::forged);
  CHECK(open(keys, mine.session, value) == FleetValueStatus::forged);
  CHECK(open(keys, prefixed.tickets, value) == FleetValueStatus::forged);
}

TEST_CASE("fleet value: key ids pick the key; a wrong key with the right id fails authentication", "[redis][value]") {
  Fixture f;
  const auto ticket = ticket_from(f.ctx, f.server);
  const auto now = std::chrono::system_clock::now();
  const auto names1 = tlsresume::detail::fleet_names("tlsresume:", f.m1, f.peer);
  const std::string old_value = seal(f.m1, names1.tickets, ticket, now + 1h, now);

  SECTION("rotation: {new, old} opens a value of the old key") {
    const FleetKeyMaterial both[] = {f.m2, f.m1};
    CHECK(open(both, names1.tickets, old_value) == FleetValueStatus::ok);
  }
  SECTION("a key id none of the keys has") {
    const FleetKeyMaterial only_new[] = {f.m2};
    CHECK(open(only_new, names1.tickets, old_value) == FleetValueStatus::unknown_key);
  }
  SECTION("another key claiming the same id") {
    EncryptionKey impostor = key_of(200, f.k1.identifier());
    const FleetKeyMaterial wrong[] = {tlsresume::detail::derive_fleet_key(impostor)};
    REQUIRE(wrong[0].identifier == f.m1.identifier);
    CHECK(open(wrong, names1.tickets, old_value) == FleetValueStatus::forged);
  }
}

TEST_CASE("fleet value: an authentic value whose body is not a session is rejected after authentication", "[redis][value]") {
  Fixture f;
  const auto names = tlsresume::detail::fleet_names("tlsresume:", f.m1, f.peer);
  // Seal a body whose DER is garbage, with the real format and key: authentic, but no session.
  std::string body(tlsresume::detail::body_fixed_size + 8, '\0');
  tlsresume::detail::ByteWriter b(std::as_writable_bytes(std::span<char>(body.data(), body.size())));
  b.be(0, 8);
  b.be(0, 8);
  b.be(TLS1_3_VERSION, 2);
  b.be(0, 4);
  b.be(0, 1);
  b.be(8, 4);
  b.bytes(std::as_bytes(std::span<const char>("garbage!", 8)));
  std::string value(tlsresume::detail::fleet_value_overhead + body.size(), '\0');
  tlsresume::detail::ByteWriter w(std::as_writable_bytes(std::span<char>(value.data(), value.size())));
  w.be(1, 1);
  w.be(f.m1.identifier, 4);
  const std::string aad = tlsresume::detail::fleet_aad(1, f.m1.identifier, names.tickets);
  tlsresume::detail::Unique<EVP_CIPHER_CTX, &EVP_CIPHER_CTX_free> cipher(EVP_CIPHER_CTX_new());
  tlsresume::detail::seal(cipher.get(), f.m1.value_key, tlsresume::detail::as_byte_span(aad),
                          tlsresume::detail::as_byte_span(body), w);
  const FleetKeyMaterial keys[] = {f.m1};
  CHECK(open(keys, names.tickets, value) == FleetValueStatus::bad_session);
}

TEST_CASE("fleet names: deterministic, per peer and per fleet key, with the prefix and no host name", "[redis][value]") {
  Fixture f;
  const auto a = tlsresume::detail::fleet_names("app:", f.m1, f.peer);
  const auto again = tlsresume::detail::fleet_names("app:", tlsresume::detail::derive_fleet_key(key_of(1)), f.peer);
  CHECK(a.tickets == again.tickets);
  CHECK(a.session == again.session);
  CHECK(a.tickets.rfind("app:", 0) == 0);
  CHECK(a.tickets.size() == 4 + 64 + 4);
  CHECK(a.tickets.substr(a.tickets.size() - 4) == ":t13");
  CHECK(a.session.substr(a.session.size() - 4) == ":t12");
  CHECK(a.tickets.substr(0, 68) == a.session.substr(0, 68));
  CHECK(a.tickets.find("localhost") == std::string::npos);
  CHECK(tlsresume::detail::fleet_names("app:", f.m1, f.other).tickets != a.tickets);
  CHECK(tlsresume::detail::fleet_names("app:", f.m2, f.peer).tickets != a.tickets);
  // Not the persist key id of a file's salt: a different domain (HKDF info).
  EncryptionKey zero;
  REQUIRE_THROWS_AS(tlsresume::detail::derive_fleet_key(zero), tlsresume::Error);
  REQUIRE_ERROR_QUEUE_EMPTY();
}
