// tlsresume::Error: its type and categories, draining the OpenSSL error queue, and the errors
// real OpenSSL failures produce through the API (bad files, mismatched keys, failed certificate
// verification), plus misuse reported with tlsresume's own codes. After every error path the
// OpenSSL error queue must be empty.

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

#include "support.hpp"

namespace {

using namespace std::chrono_literals;
using tlsresume::errc;
using tlsresume::ProtocolVersion;
using tlsresume::testing::LocalServer;
using tlsresume::testing::ServerOptions;

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

/// The packed OpenSSL error code a `tlsresume::Error` of category "openssl" carries.
unsigned long openssl_code(const std::error_code& ec) {
  return static_cast<unsigned long>(static_cast<unsigned int>(ec.value()));
}

/// `ERR_error_string_n` of one code, as `drain_openssl_errors` formats each entry.
std::string error_string(unsigned long code) {
  char buf[256];
  ERR_error_string_n(code, buf, sizeof buf);
  return buf;
}

/// The reason part of `ERR_error_string_n` ("error:<hex>:<lib>:<func>:<reason>").
std::string reason_text(unsigned long code) {
  const std::string full = error_string(code);
  const auto colon = full.rfind(':');
  return colon == std::string::npos ? full : full.substr(colon + 1);
}

/// Calls `f`, which must throw `tlsresume::Error`; returns it (checked: the queue is empty).
template <class F> tlsresume::Error catch_error(F&& f) {
  try {
    f();
  } catch (const tlsresume::Error& e) {
    REQUIRE_ERROR_QUEUE_EMPTY();
    return e;
  }
  FAIL("no tlsresume::Error was thrown");
  throw std::logic_error("unreachable");
}

ServerOptions server_options(ProtocolVersion max_version) {
  ServerOptions options;
  options.max_version = max_version;
  return options;
}

/// Makes sure OpenSSL's error strings are loaded whichever test runs first.
void init_openssl() {
  REQUIRE(OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, nullptr) == 1);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The type and its categories
// ---------------------------------------------------------------------------------------------

TEST_CASE("Error is a std::system_error and is caught as one", "[errors]") {
  STATIC_REQUIRE(std::is_base_of_v<std::system_error, tlsresume::Error>);
  STATIC_REQUIRE(std::is_base_of_v<std::exception, tlsresume::Error>);
  bool caught = false;
  try {
    (void)tlsresume::UnboundSession::from_der({});
  } catch (const std::system_error& e) {
    caught = true;
    REQUIRE(e.code() == errc::invalid_session);
    REQUIRE(dynamic_cast<const tlsresume::Error*>(&e) != nullptr);
  }
  REQUIRE(caught);
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("errc errors carry the \"tlsresume\" category", "[errors]") {
  const auto e = catch_error([] { (void)tlsresume::UnboundSession::from_der({}); });
  REQUIRE(e.code().category().name() == std::string_view("tlsresume"));
  REQUIRE(&e.code().category() == &tlsresume::tlsresume_category());
  REQUIRE(e.code().value() == static_cast<int>(errc::invalid_session));
  REQUIRE(e.code().message() == tlsresume::make_error_code(errc::invalid_session).message());
  REQUIRE(contains(e.what(), e.code().message()));
}

TEST_CASE("errc converts implicitly to std::error_code with a message for every value", "[errors]") {
  STATIC_REQUIRE(std::is_error_code_enum_v<errc>);
  std::error_code ec = errc::wrong_context;
  REQUIRE(ec.category().name() == std::string_view("tlsresume"));
  REQUIRE(ec.value() == static_cast<int>(errc::wrong_context));
  REQUIRE_FALSE(ec.message().empty());
  REQUIRE(ec == errc::wrong_context);
  REQUIRE(ec != errc::unbound_session);
  REQUIRE(static_cast<bool>(ec));  // errc values start at 1: none means "success"

  // Every value has its own message, distinct from the one for an unknown value.
  const std::string unknown = tlsresume::tlsresume_category().message(9999);
  REQUIRE_FALSE(unknown.empty());
  std::set<std::string> messages;
  for (const errc e : {errc::openssl_error, errc::wrong_context, errc::unbound_session, errc::invalid_session,
                       errc::context_mismatch, errc::invalid_argument, errc::connection_closed,
                       errc::handshake_not_done}) {
    const std::error_code code = e;
    CAPTURE(code.value(), code.message());
    REQUIRE_FALSE(code.message().empty());
    REQUIRE(code.message() != unknown);
    REQUIRE(messages.insert(code.message()).second);
  }
}

TEST_CASE("openssl_category's message is OpenSSL's reason string for library errors", "[errors]") {
  init_openssl();
  REQUIRE(tlsresume::openssl_category().name() == std::string_view("openssl"));
  for (const unsigned long code : {ERR_PACK(ERR_LIB_SSL, 0, SSL_R_CERTIFICATE_VERIFY_FAILED),
                                   ERR_PACK(ERR_LIB_X509, 0, X509_R_KEY_VALUES_MISMATCH),
                                   ERR_PACK(ERR_LIB_ASN1, 0, ASN1_R_WRONG_TAG)}) {
    const std::error_code ec(static_cast<int>(code), tlsresume::openssl_category());
    CAPTURE(code, ec.message());
    REQUIRE(ERR_reason_error_string(code) != nullptr);
    REQUIRE(ec.message() == ERR_reason_error_string(code));
    REQUIRE(ec.message() == reason_text(code));
  }
}

// OpenSSL 3.0's ERR_reason_error_string() returns NULL for system errors (ERR_SYSTEM_FLAG): the
// category must not fall back to "OpenSSL error -2147483646" when OpenSSL prints a reason
// ("No such file or directory", as in load_verify_file's oldest error).
TEST_CASE("openssl_category's message is OpenSSL's reason string for system errors too", "[errors]") {
  init_openssl();
  ERR_clear_error();
  ERR_raise(ERR_LIB_SYS, ENOENT);  // what OpenSSL queues when fopen fails
  const unsigned long code = ERR_get_error();
  REQUIRE_ERROR_QUEUE_EMPTY();
  REQUIRE(ERR_SYSTEM_ERROR(code));
  const std::error_code ec(static_cast<int>(code), tlsresume::openssl_category());
  CAPTURE(error_string(code), ec.message());
  REQUIRE(reason_text(code) == std::strerror(ENOENT));  // what OpenSSL itself prints
  REQUIRE(ec.message() == reason_text(code));
}

// ---------------------------------------------------------------------------------------------
// Draining the queue
// ---------------------------------------------------------------------------------------------

TEST_CASE("drain_openssl_errors returns the whole queue oldest first and empties it", "[errors]") {
  init_openssl();
  ERR_clear_error();
  ERR_raise_data(ERR_LIB_SSL, SSL_R_BAD_LENGTH, "%s", "first detail text");
  ERR_raise(ERR_LIB_SSL, SSL_R_WRONG_VERSION_NUMBER);
  ERR_raise_data(ERR_LIB_SSL, SSL_R_UNEXPECTED_MESSAGE, "%s", "third detail text");
  REQUIRE(ERR_peek_error() != 0UL);

  unsigned long first = 0;
  const std::string text = tlsresume::drain_openssl_errors(&first);
  REQUIRE_ERROR_QUEUE_EMPTY();
  CAPTURE(text);
  REQUIRE(first == ERR_PACK(ERR_LIB_SSL, 0, SSL_R_BAD_LENGTH));
  // Oldest first, "; " between entries, each entry's data string in parentheses.
  const std::string expected = error_string(ERR_PACK(ERR_LIB_SSL, 0, SSL_R_BAD_LENGTH)) + " (first detail text); " +
                               error_string(ERR_PACK(ERR_LIB_SSL, 0, SSL_R_WRONG_VERSION_NUMBER)) + "; " +
                               error_string(ERR_PACK(ERR_LIB_SSL, 0, SSL_R_UNEXPECTED_MESSAGE)) +
                               " (third detail text)";
  REQUIRE(text == expected);
  // The reason strings themselves are there, in order.
  const auto bad_length = text.find(ERR_reason_error_string(ERR_PACK(ERR_LIB_SSL, 0, SSL_R_BAD_LENGTH)));
  const auto wrong_version = text.find(ERR_reason_error_string(ERR_PACK(ERR_LIB_SSL, 0, SSL_R_WRONG_VERSION_NUMBER)));
  const auto unexpected = text.find(ERR_reason_error_string(ERR_PACK(ERR_LIB_SSL, 0, SSL_R_UNEXPECTED_MESSAGE)));
  REQUIRE(bad_length != std::string::npos);
  REQUIRE(bad_length < text.find("first detail text"));
  REQUIRE(text.find("first detail text") < wrong_version);
  REQUIRE(wrong_version < unexpected);
  REQUIRE(unexpected < text.find("third detail text"));

  // Drained: a second call finds nothing.
  unsigned long again = 12345;
  REQUIRE(tlsresume::drain_openssl_errors(&again).empty());
  REQUIRE(again == 0UL);
}

TEST_CASE("drain_openssl_errors of an empty queue is empty and reports no first code", "[errors]") {
  ERR_clear_error();
  unsigned long first = 42;
  REQUIRE(tlsresume::drain_openssl_errors(&first).empty());
  REQUIRE(first == 0UL);
  REQUIRE(tlsresume::drain_openssl_errors().empty());
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("throw_openssl_error with an empty queue throws errc::openssl_error", "[errors]") {
  ERR_clear_error();
  const auto e = catch_error([] { tlsresume::throw_openssl_error("SSL_frobnicate"); });
  CAPTURE(e.what());
  REQUIRE(e.code() == errc::openssl_error);
  REQUIRE(e.code().category().name() == std::string_view("tlsresume"));
  REQUIRE(contains(e.what(), "SSL_frobnicate"));
  REQUIRE(contains(e.what(), tlsresume::make_error_code(errc::openssl_error).message()));
}

TEST_CASE("throw_openssl_error carries the oldest queued error as code and the whole queue in what()", "[errors]") {
  init_openssl();
  ERR_clear_error();
  ERR_raise_data(ERR_LIB_SSL, SSL_R_BAD_LENGTH, "%s", "oldest detail");
  ERR_raise_data(ERR_LIB_SSL, SSL_R_WRONG_VERSION_NUMBER, "%s", "newest detail");
  const auto e = catch_error([] { tlsresume::throw_openssl_error("SSL_frobnicate"); });
  CAPTURE(e.what());
  REQUIRE(e.code().category().name() == std::string_view("openssl"));
  REQUIRE(openssl_code(e.code()) == ERR_PACK(ERR_LIB_SSL, 0, SSL_R_BAD_LENGTH));
  REQUIRE(e.code().message() == ERR_reason_error_string(ERR_PACK(ERR_LIB_SSL, 0, SSL_R_BAD_LENGTH)));
  const std::string what = e.what();
  REQUIRE(what.rfind("SSL_frobnicate", 0) == 0);  // starts with the operation
  const auto oldest = what.find("oldest detail");
  const auto newest = what.find("newest detail");
  REQUIRE(oldest != std::string::npos);
  REQUIRE(newest != std::string::npos);
  REQUIRE(oldest < newest);
  REQUIRE(contains(what, error_string(ERR_PACK(ERR_LIB_SSL, 0, SSL_R_WRONG_VERSION_NUMBER))));
}

TEST_CASE("throw_error keeps its own code and drains pending OpenSSL errors into what()", "[errors]") {
  init_openssl();
  ERR_clear_error();
  ERR_raise_data(ERR_LIB_SSL, SSL_R_BAD_LENGTH, "%s", "left over");
  const auto e = catch_error([] { tlsresume::throw_error(errc::wrong_context, "Client::frob", "some detail"); });
  CAPTURE(e.what());
  REQUIRE(e.code() == errc::wrong_context);
  const std::string what = e.what();
  REQUIRE(what.rfind("Client::frob: " + e.code().message() + ": some detail", 0) == 0);
  REQUIRE(contains(what, "left over"));
  REQUIRE(contains(what, error_string(ERR_PACK(ERR_LIB_SSL, 0, SSL_R_BAD_LENGTH))));
}

// std::system_error(code, what_arg)::what() is "what_arg: code.message()": Error must not end
// with a second copy of the reason (e.g. "...: key values mismatch: key values mismatch").
TEST_CASE("Error::what() has the documented format without repeating the reason at its end", "[errors]") {
  ERR_clear_error();
  SECTION("tlsresume code") {
    const auto e = catch_error([] { tlsresume::throw_error(errc::unbound_session, "Client::frob"); });
    CAPTURE(e.what());
    REQUIRE(std::string(e.what()) == "Client::frob: " + e.code().message());
  }
  SECTION("tlsresume code with a detail and a queued OpenSSL error") {
    init_openssl();
    ERR_raise_data(ERR_LIB_SSL, SSL_R_BAD_LENGTH, "%s", "queued");
    const auto e = catch_error([] { tlsresume::throw_error(errc::wrong_context, "Client::frob", "the detail"); });
    CAPTURE(e.what());
    REQUIRE(std::string(e.what()) == "Client::frob: " + e.code().message() + ": the detail: " +
                                         error_string(ERR_PACK(ERR_LIB_SSL, 0, SSL_R_BAD_LENGTH)) + " (queued)");
  }
  SECTION("OpenSSL code") {
    init_openssl();
    ERR_raise(ERR_LIB_SSL, SSL_R_BAD_LENGTH);
    const auto e = catch_error([] { tlsresume::throw_openssl_error("SSL_frobnicate"); });
    CAPTURE(e.what());
    REQUIRE(std::string(e.what()) == "SSL_frobnicate failed: " + error_string(ERR_PACK(ERR_LIB_SSL, 0, SSL_R_BAD_LENGTH)));
  }
}

// ---------------------------------------------------------------------------------------------
// Real OpenSSL failures through the API
// ---------------------------------------------------------------------------------------------

TEST_CASE("load_verify_file of a missing file throws Error naming the call, the path and OpenSSL's reason",
          "[errors]") {
  auto ctx = test::CtxA::create();
  const auto e = catch_error([&] { ctx.load_verify_file("/nonexistent/tlsresume-ca.pem"); });
  const std::string what = e.what();
  CAPTURE(what);
  REQUIRE(e.code().category().name() == std::string_view("openssl"));
  REQUIRE(openssl_code(e.code()) != 0UL);
  REQUIRE(contains(what, "SSL_CTX_load_verify_file"));
  REQUIRE(contains(what, "/nonexistent/tlsresume-ca.pem"));
  // OpenSSL's reasons for the oldest entry (fopen's errno) and the BIO layer's entry.
  REQUIRE(contains(what, reason_text(openssl_code(e.code()))));
  REQUIRE(contains(what, std::strerror(ENOENT)));
  REQUIRE(e.code().message() == std::strerror(ENOENT));  // the oldest entry is fopen's errno
  REQUIRE(contains(what, ERR_reason_error_string(ERR_PACK(ERR_LIB_BIO, 0, BIO_R_NO_SUCH_FILE))));
}

TEST_CASE("use_client_certificate with a key that does not match the certificate throws Error", "[errors]") {
  init_openssl();
  const auto ca = tlsresume::testing::make_ca();
  const auto leaf = tlsresume::testing::make_leaf(ca);
  const auto other = tlsresume::testing::make_leaf(ca);  // same key type, another key
  auto ctx = test::CtxA::create();
  const auto e = catch_error([&] { ctx.use_client_certificate(leaf.cert.get(), other.key.get()); });
  const std::string what = e.what();
  CAPTURE(what);
  REQUIRE(e.code().category().name() == std::string_view("openssl"));
  REQUIRE(openssl_code(e.code()) == ERR_PACK(ERR_LIB_X509, 0, X509_R_KEY_VALUES_MISMATCH));
  REQUIRE(e.code().message() == ERR_reason_error_string(ERR_PACK(ERR_LIB_X509, 0, X509_R_KEY_VALUES_MISMATCH)));
  REQUIRE(what.rfind("use_client_certificate", 0) == 0);
  REQUIRE(contains(what, "key values mismatch"));

  // The matching key is accepted (the failure above was about the key, not the call).
  auto good_ctx = test::CtxA::create();
  REQUIRE_NOTHROW(good_ctx.use_client_certificate(leaf.cert.get(), leaf.key.get()));
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("a handshake with a server whose CA is not trusted throws Error about certificate verification",
          "[errors][tls13][tls12]") {
  init_openssl();
  const auto version = GENERATE(ProtocolVersion::tls1_3, ProtocolVersion::tls1_2);
  CAPTURE(tlsresume::to_string(version));
  LocalServer server(server_options(version));
  auto ctx = test::CtxA::create();  // system trust store only: the test CA is unknown
  test::ClientA client(ctx);
  client.set_server_name("localhost");
  const auto e = catch_error([&] { (void)server.handshake(client); });
  const std::string what = e.what();
  CAPTURE(what);
  REQUIRE(SSL_get_verify_result(client.native_handle()) == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
  REQUIRE(contains(what, "SSL_connect"));
  REQUIRE(contains(what, "certificate verification"));
  REQUIRE(contains(what, X509_verify_cert_error_string(X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY)));
  REQUIRE(e.code().category().name() == std::string_view("openssl"));
  REQUIRE(openssl_code(e.code()) == ERR_PACK(ERR_LIB_SSL, 0, SSL_R_CERTIFICATE_VERIFY_FAILED));
  // Nothing was received from the rejected server.
  REQUIRE(ctx.stats().sessions_received == 0U);
  REQUIRE_FALSE(ctx.take_recent_session("localhost").has_value());
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("a handshake where the certificate does not match the server name throws Error", "[errors][tls13][tls12]") {
  init_openssl();
  const auto version = GENERATE(ProtocolVersion::tls1_3, ProtocolVersion::tls1_2);
  CAPTURE(tlsresume::to_string(version));
  LocalServer server(server_options(version));
  auto ctx = test::client_context_for(server);  // the CA is trusted: only the name is wrong

  SECTION("host name") {
    test::ClientA client(ctx);
    client.set_server_name("evil.example");
    const auto e = catch_error([&] { (void)server.handshake(client); });
    CAPTURE(e.what());
    REQUIRE(SSL_get_verify_result(client.native_handle()) == X509_V_ERR_HOSTNAME_MISMATCH);
    REQUIRE(contains(e.what(), "certificate verification"));
    REQUIRE(contains(e.what(), X509_verify_cert_error_string(X509_V_ERR_HOSTNAME_MISMATCH)));
    REQUIRE(openssl_code(e.code()) == ERR_PACK(ERR_LIB_SSL, 0, SSL_R_CERTIFICATE_VERIFY_FAILED));
    REQUIRE(ctx.stats().sessions_received == 0U);
  }
  SECTION("IP address") {
    test::ClientA client(ctx);
    client.set_server_name("192.0.2.1");  // the certificate is for 127.0.0.1 and ::1
    const auto e = catch_error([&] { (void)server.handshake(client); });
    CAPTURE(e.what());
    REQUIRE(SSL_get_verify_result(client.native_handle()) == X509_V_ERR_IP_ADDRESS_MISMATCH);
    REQUIRE(contains(e.what(), X509_verify_cert_error_string(X509_V_ERR_IP_ADDRESS_MISMATCH)));
    REQUIRE(ctx.stats().sessions_received == 0U);
  }
  SECTION("control: the right name connects") {
    test::ClientA client(ctx);
    client.set_server_name("localhost");
    auto connection = server.handshake(client);
    REQUIRE(SSL_get_verify_result(client.native_handle()) == X509_V_OK);
    REQUIRE(client.protocol_version() == version);
    client.await_tickets(0ms, 2);
    REQUIRE(ctx.stats().sessions_received > 0U);
    REQUIRE(client.shutdown() == tlsresume::IoStatus::done);
  }
  REQUIRE_ERROR_QUEUE_EMPTY();
}

// ---------------------------------------------------------------------------------------------
// Misuse reported with tlsresume's own codes
// ---------------------------------------------------------------------------------------------

namespace {
/// A session bound to `ctx`, from a full handshake with `server`.
test::CtxA::session_type session_from(LocalServer& server, const test::CtxA& ctx) {
  test::ClientA client(ctx);
  client.set_server_name("localhost");
  auto connection = server.handshake(client);
  client.await_tickets(0ms, 2);
  REQUIRE(client.shutdown() == tlsresume::IoStatus::done);
  auto s = ctx.take_recent_session("localhost");
  REQUIRE(s.has_value());
  return std::move(*s);
}
}  // namespace

TEST_CASE("set_session and set_server_name once the handshake started throw invalid_argument", "[errors][tls13]") {
  LocalServer server;
  auto ctx = test::client_context_for(server);
  const auto session = session_from(server, ctx);

  SECTION("handshake in progress") {
    test::ClientA client(ctx);
    BIO* client_end = nullptr;
    BIO* server_end = nullptr;
    REQUIRE(BIO_new_bio_pair(&client_end, 0, &server_end, 0) == 1);
    client.set_bio(client_end);
    BIO_free(client_end);  // the client holds its own reference
    REQUIRE(client.connect() == tlsresume::IoStatus::want_read);  // ClientHello sent, no answer
    const auto e = catch_error([&] { client.set_session(session); });
    REQUIRE(e.code() == errc::invalid_argument);
    REQUIRE(contains(e.what(), "set_session"));
    REQUIRE(contains(e.what(), "started"));
    const auto e2 = catch_error([&] { client.set_server_name("localhost"); });
    REQUIRE(e2.code() == errc::invalid_argument);
    REQUIRE(contains(e2.what(), "set_server_name"));
    BIO_free(server_end);
  }
  SECTION("handshake done") {
    test::ClientA client(ctx);
    client.set_server_name("localhost");
    auto connection = server.handshake(client);
    const auto e = catch_error([&] { client.set_session(session); });
    REQUIRE(e.code() == errc::invalid_argument);
    REQUIRE(contains(e.what(), "set_session"));
    REQUIRE_FALSE(client.session_reused());
    REQUIRE(client.shutdown() == tlsresume::IoStatus::done);
  }
  SECTION("control: before the handshake the same session is accepted and resumes") {
    test::ClientA client(ctx);
    client.set_server_name("localhost");
    REQUIRE_NOTHROW(client.set_session(session));
    auto connection = server.handshake(client);
    REQUIRE(client.session_reused());
    REQUIRE(connection.session_reused());
    REQUIRE(client.shutdown() == tlsresume::IoStatus::done);
  }
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("await_tickets before the handshake completed throws handshake_not_done", "[errors][tls13]") {
  LocalServer server;
  auto ctx = test::client_context_for(server);
  test::ClientA client(ctx);
  SECTION("never connected") {
    const auto e = catch_error([&] { (void)client.await_tickets(0ms); });
    REQUIRE(e.code() == errc::handshake_not_done);
    REQUIRE(contains(e.what(), "await_tickets"));
  }
  SECTION("handshake in progress") {
    BIO* client_end = nullptr;
    BIO* server_end = nullptr;
    REQUIRE(BIO_new_bio_pair(&client_end, 0, &server_end, 0) == 1);
    client.set_bio(client_end);
    BIO_free(client_end);
    REQUIRE(client.connect() == tlsresume::IoStatus::want_read);
    const auto e = catch_error([&] { (void)client.await_tickets(0ms); });
    REQUIRE(e.code() == errc::handshake_not_done);
    BIO_free(server_end);
  }
  SECTION("control: after the handshake it counts the tickets") {
    client.set_server_name("localhost");
    auto connection = server.handshake(client);
    REQUIRE(client.await_tickets(0ms, 2) == server.options().tls13_tickets);
    REQUIRE(client.shutdown() == tlsresume::IoStatus::done);
  }
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("set_session with a session of another context instance throws wrong_context", "[errors][tls13]") {
  LocalServer server;
  auto ctx = test::client_context_for(server);
  auto other = test::client_context_for(server);  // same type, another instance
  const auto foreign = session_from(server, other);
  test::ClientA client(ctx);
  const auto e = catch_error([&] { client.set_session(foreign); });
  REQUIRE(e.code() == errc::wrong_context);
  REQUIRE(e.code().category().name() == std::string_view("tlsresume"));
  REQUIRE(contains(e.what(), "set_session"));
  REQUIRE(contains(e.what(), "copy_session"));  // tells how to do it right

  // An empty session is refused as an invalid argument.
  const auto empty = catch_error([&] { client.set_session(test::CtxA::session_type()); });
  REQUIRE(empty.code() == errc::invalid_argument);

  // The explicit way across contexts works.
  const auto moved = ctx.copy_session(foreign);
  client.set_server_name("localhost");
  REQUIRE_NOTHROW(client.set_session(moved));
  auto connection = server.handshake(client);
  REQUIRE(client.session_reused());
  REQUIRE(connection.session_reused());
  REQUIRE(client.shutdown() == tlsresume::IoStatus::done);
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("set_server_name and set_alpn_protocols reject empty values with invalid_argument", "[errors]") {
  auto ctx = test::CtxA::create();
  test::ClientA client(ctx);
  const auto e = catch_error([&] { client.set_server_name(""); });
  REQUIRE(e.code() == errc::invalid_argument);
  const auto e2 = catch_error([&] { ctx.set_alpn_protocols({"h2", ""}); });
  REQUIRE(e2.code() == errc::invalid_argument);
  REQUIRE(contains(e2.what(), "set_alpn_protocols"));
}
