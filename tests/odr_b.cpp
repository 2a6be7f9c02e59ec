// Second translation unit of the ODR test (see odr_a.cpp, which holds the test cases). It includes
// every public header, like odr_a.cpp, and exposes what *this* TU sees of the library's inline
// functions, function-local statics and inline variables, so odr_a.cpp can compare them with its
// own view. A header function or variable that is not `inline` fails to link (multiple
// definitions); one that is duplicated per TU (e.g. `static`) shows up as a mismatch.

#include <openssl/asn1.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <chrono>
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

// The interface between the two TUs (declared identically in odr_a.cpp).
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

int odr_b_session_info_index() { return tlsresume::detail::session_info_index(); }
int odr_b_context_state_index() { return tlsresume::detail::context_state_index(); }
int odr_b_client_state_index() { return tlsresume::detail::client_state_index(); }
const std::error_category* odr_b_tlsresume_category() { return &tlsresume::tlsresume_category(); }
const std::error_category* odr_b_openssl_category() { return &tlsresume::openssl_category(); }
const void* odr_b_tag_marker() { return &tlsresume::detail::tag_marker<test::TagA>; }
std::error_code odr_b_error_code() { return tlsresume::errc::wrong_context; }
void odr_b_set_session(test::ClientA& client, const tlsresume::BoundSession<test::TagA>& session) {
  client.set_session(session);
}

test::CtxA odr_b_make_context() { return test::CtxA::create(); }
tlsresume::ContextId odr_b_context_id(const test::CtxA& ctx) { return ctx.id(); }
tlsresume::ContextStats odr_b_stats(const test::CtxA& ctx) { return ctx.stats(); }

// testing.hpp numbers certificates from one function-local static counter.
long odr_b_certificate_serial() {
  const tlsresume::testing::Certificate ca = tlsresume::testing::make_ca("odr_b");
  return ASN1_INTEGER_get(X509_get_serialNumber(ca.cert.get()));
}

// A full handshake run entirely in this TU: the session callbacks (on_new_session), the client
// state and the session's ex_data are all reached through this TU's view of the indexes.
tlsresume::BoundSession<test::TagA> odr_b_full_handshake(tlsresume::testing::LocalServer& server,
                                                         const test::CtxA& ctx) {
  test::ClientA client(ctx);
  client.set_server_name("localhost");
  auto server_side = server.handshake(client);
  client.await_tickets(std::chrono::milliseconds(100));
  client.shutdown();
  server_side.shutdown();
  auto session = ctx.take_recent_session("localhost");
  REQUIRE(session.has_value());
  return std::move(*session);
}

std::string odr_b_requested_server_name(const tlsresume::BoundSession<test::TagA>& session) {
  return std::string(session.requested_server_name());
}

#ifdef TLSRESUME_ODR_FMT
std::string odr_b_format_id(tlsresume::ContextId id) { return fmt::format("{}", id); }
std::string odr_b_format_session(const tlsresume::BoundSession<test::TagA>& session) {
  return fmt::format("{}", session);
}
#else
std::string odr_b_format_id(tlsresume::ContextId) { return {}; }
std::string odr_b_format_session(const tlsresume::BoundSession<test::TagA>&) { return {}; }
#endif
