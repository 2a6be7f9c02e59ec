// The ODR test: odr_a.cpp and odr_b.cpp both include every public header and are linked into one
// executable. Linking proves that nothing defined in a header lacks `inline` (a duplicate
// definition would not link); the checks below prove that both TUs share one copy of every piece
// of library state that must be unique in a process: the ex_data indexes, the error categories
// (std::error_code compares categories by address), the tag markers, the context id counter, the
// per-context state attached to an SSL_CTX, and testing.hpp's certificate serial counter.

#include <openssl/asn1.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <system_error>

#include <tlsresume/testing.hpp>
#include <tlsresume/tlsresume.hpp>
#if __has_include(<fmt/format.h>)
#include <fmt/format.h>

#include <tlsresume/fmt.hpp>
#define TLSRESUME_ODR_FMT 1
#endif

#include "support.hpp"

// The interface between the two TUs (defined in odr_b.cpp; declared identically there).
int odr_b_session_info_index();
int odr_b_context_state_index();
int odr_b_client_state_index();
const std::error_category* odr_b_tlsresume_category();
const std::error_category* odr_b_openssl_category();
const void* odr_b_tag_marker();
test::CtxA odr_b_make_context();
tlsresume::ContextId odr_b_context_id(const test::CtxA& ctx);
tlsresume::ContextStats odr_b_stats(const test::CtxA& ctx);
long odr_b_certificate_serial();
tlsresume::BoundSession<test::TagA> odr_b_full_handshake(tlsresume::testing::LocalServer& server, const test::CtxA& ctx);
std::string odr_b_requested_server_name(const tlsresume::BoundSession<test::TagA>& session);
std::string odr_b_format_id(tlsresume::ContextId id);
std::string odr_b_format_session(const tlsresume::BoundSession<test::TagA>& session);
std::error_code odr_b_error_code();
void odr_b_set_session(test::ClientA& client, const tlsresume::BoundSession<test::TagA>& session);

// This TU's counterparts.
tlsresume::ContextId odr_a_context_id(const test::CtxA& ctx);
long odr_a_certificate_serial();

tlsresume::ContextId odr_a_context_id(const test::CtxA& ctx) { return ctx.id(); }
long odr_a_certificate_serial() {
  const tlsresume::testing::Certificate ca = tlsresume::testing::make_ca("odr_a");
  return ASN1_INTEGER_get(X509_get_serialNumber(ca.cert.get()));
}

TEST_CASE("ODR: both TUs see the same ex_data indexes, categories and tag markers", "[odr]") {
  const int session_index = tlsresume::detail::session_info_index();
  const int context_index = tlsresume::detail::context_state_index();
  const int client_index = tlsresume::detail::client_state_index();
  CHECK(session_index >= 0);
  CHECK(context_index >= 0);
  CHECK(client_index >= 0);
  CHECK(odr_b_session_info_index() == session_index);
  CHECK(odr_b_context_state_index() == context_index);
  CHECK(odr_b_client_state_index() == client_index);
  // Asking again allocates nothing new, in either TU.
  CHECK(tlsresume::detail::session_info_index() == session_index);
  CHECK(odr_b_session_info_index() == session_index);

  CHECK(odr_b_tlsresume_category() == &tlsresume::tlsresume_category());
  CHECK(odr_b_openssl_category() == &tlsresume::openssl_category());
  CHECK(odr_b_error_code() == tlsresume::errc::wrong_context);
  CHECK(odr_b_error_code() == tlsresume::make_error_code(tlsresume::errc::wrong_context));

  CHECK(odr_b_tag_marker() == &tlsresume::detail::tag_marker<test::TagA>);
  CHECK(odr_b_tag_marker() != &tlsresume::detail::tag_marker<test::TagB>);
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("ODR: a Context made in one TU is the same context in the other", "[odr]") {
  const test::CtxA from_b = odr_b_make_context();
  CHECK(odr_a_context_id(from_b) == odr_b_context_id(from_b));

  // Attaching again from this TU finds the state odr_b.cpp attached (same index, same tag
  // marker): no context_mismatch, and the same id.
  const test::CtxA shared = test::CtxA::share(from_b.native_handle());
  CHECK(shared.native_handle() == from_b.native_handle());
  CHECK(shared.id() == from_b.id());
  CHECK(odr_b_context_id(shared) == from_b.id());

  // The reverse direction: a context made here, seen from odr_b.cpp.
  const test::CtxA from_a = test::CtxA::create();
  CHECK(odr_b_context_id(from_a) == from_a.id());

  // The other tag is still refused, whichever TU attached the state.
  try {
    [[maybe_unused]] const test::CtxB other = test::CtxB::share(from_b.native_handle());
    FAIL("a Context<TagB> attached to an SSL_CTX of a Context<TagA>");
  } catch (const tlsresume::Error& e) {
    CHECK(e.code() == tlsresume::errc::context_mismatch);
  }
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("ODR: one context id counter for the whole process", "[odr]") {
  const test::CtxA first = test::CtxA::create();
  const test::CtxA second = odr_b_make_context();
  const test::CtxA third = test::CtxA::create();
  const auto a = static_cast<std::uint64_t>(first.id());
  const auto b = static_cast<std::uint64_t>(second.id());
  const auto c = static_cast<std::uint64_t>(third.id());
  // A counter duplicated per TU would hand out the same ids twice.
  CHECK(a < b);
  CHECK(b < c);
}

TEST_CASE("ODR: one certificate serial counter in testing.hpp", "[odr]") {
  const long a = odr_a_certificate_serial();
  const long b = odr_b_certificate_serial();
  const long c = odr_a_certificate_serial();
  CHECK(a < b);
  CHECK(b < c);
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("ODR: sessions and state cross TUs", "[odr]") {
  tlsresume::testing::LocalServer server;
  const test::CtxA ctx = test::client_context_for<test::CtxA>(server);

  // The handshake and the session callbacks run in odr_b.cpp; the counters are read here.
  const tlsresume::BoundSession<test::TagA> session = odr_b_full_handshake(server, ctx);
  CHECK(session.context_id() == ctx.id());
  CHECK(ctx.stats().sessions_received >= 1);
  CHECK(odr_b_stats(ctx).sessions_received == ctx.stats().sessions_received);
  // The requested server name was stored through odr_b.cpp's session_info_index().
  CHECK(session.requested_server_name() == "localhost");
  CHECK(odr_b_requested_server_name(session) == "localhost");

  // The session resumes on a client made here.
  {
    test::ClientA client(ctx);
    client.set_server_name("localhost");
    client.set_session(session);
    auto server_side = server.handshake(client);
    CHECK(client.session_reused());
    CHECK(server_side.session_reused());
  }

  // An error thrown from odr_b.cpp compares equal to this TU's errc.
  const test::CtxA other = test::client_context_for<test::CtxA>(server);
  test::ClientA client(other);
  try {
    odr_b_set_session(client, session);
    FAIL("set_session accepted a session of another context instance");
  } catch (const tlsresume::Error& e) {
    CHECK(e.code() == tlsresume::errc::wrong_context);
    CHECK(&e.code().category() == &tlsresume::tlsresume_category());
  }
  REQUIRE_ERROR_QUEUE_EMPTY();

#ifdef TLSRESUME_ODR_FMT
  CHECK(odr_b_format_id(ctx.id()) == fmt::format("{}", ctx.id()));
  CHECK(odr_b_format_id(tlsresume::ContextId{7}) == "ctx#7");
  CHECK(odr_b_format_session(session) == fmt::format("{}", session));
  CHECK_THAT(fmt::format("{}", session), Catch::Matchers::Contains("sni=localhost"));
#endif
}

#ifdef TLSRESUME_ODR_FMT
TEST_CASE("fmt: CacheStats and ContextStats print every counter by name", "[fmt]") {
  tlsresume::CacheStats s;
  // Distinct values, so a field printed under another's name fails.
  s.hits = 1;
  s.misses = 2;
  s.stored = 3;
  s.refused = 4;
  s.taken = 5;
  s.reused = 6;
  s.expired = 7;
  s.evicted = 8;
  s.superseded = 9;
  s.invalidated = 10;
  s.erased = 11;
  s.vetoed = 12;
  s.sessions = 13;
  s.peers = 14;
  s.bytes = 15;
  s.imported = 16;
  s.claimed = 17;
  s.import_dropped = 18;
  s.pending = 19;
  CHECK(fmt::format("{}", s) ==
        "hits=1 misses=2 stored=3 refused=4 taken=5 reused=6 expired=7 evicted=8 superseded=9 invalidated=10 "
        "erased=11 vetoed=12 sessions=13 peers=14 bytes=15 imported=16 claimed=17 import_dropped=18 pending=19");
  tlsresume::ContextStats c;
  c.sessions_received = 21;
  c.sessions_removed = 22;
  c.sessions_unverified = 23;
  c.sessions_vetoed = 24;
  c.recent_sessions = 25;
  CHECK(fmt::format("{}", c) == "received=21 removed=22 unverified=23 vetoed=24 recent=25");
}
#endif
