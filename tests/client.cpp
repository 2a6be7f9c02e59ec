// Client<Ctx>: full and resumed handshakes over every kind of session OpenSSL supports, client
// certificates, the session accessors, moves, server names, and await_tickets over a real
// loopback TCP connection (a small blocking TLS server thread on 127.0.0.1).
//
// Resumption is always confirmed on both sides: `Client::session_reused()` and the server's
// `SSL_session_reused`.

#include "support.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

namespace {

using namespace std::chrono_literals;
using test::ClientA;
using test::CtxA;
using tlsresume::errc;
using tlsresume::ProtocolVersion;
using tlsresume::testing::KeyType;
using tlsresume::testing::LocalServer;
using tlsresume::testing::ServerOptions;
using SessionA = tlsresume::BoundSession<test::TagA>;

using test::connect_clean;
using test::Mode;
using test::Outcome;
using test::server_options;
using test::to_string;

// ---- loopback TCP ------------------------------------------------------------------------------

/// Owns a file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  void reset() noexcept {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  [[nodiscard]] int get() const noexcept { return fd_; }

 private:
  int fd_ = -1;
};

void set_io_timeouts(int fd, std::chrono::seconds limit) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(limit.count());
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

bool is_nonblocking(int fd) { return (::fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }

/// A blocking TLS server for one connection on 127.0.0.1 (ephemeral port), in its own thread,
/// using a LocalServer's SSL_CTX. After its handshake it writes `data` (if any), then waits for
/// the client to close (close_notify or EOF), answers a close_notify, and ends. Every wait is
/// bounded (poll, SO_RCVTIMEO), and the destructor joins the thread.
class LoopbackServer {
 public:
  LoopbackServer(SSL_CTX* ctx, std::string data) : ctx_(ctx), data_(std::move(data)) {
    listener_ = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(listener_.get() >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = 0;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listener_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listener_.get(), 1) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
    REQUIRE(port_ != 0);
    thread_ = std::thread([this] { run(); });
  }
  LoopbackServer(const LoopbackServer&) = delete;
  LoopbackServer& operator=(const LoopbackServer&) = delete;
  ~LoopbackServer() { join(); }

  /// A blocking TCP socket connected to the server (bounded by 5 s I/O timeouts).
  [[nodiscard]] Fd connect_client() const {
    Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd.get() >= 0);
    set_io_timeouts(fd.get(), 5s);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE_FALSE(is_nonblocking(fd.get()));
    return fd;
  }

  void join() {
    if (thread_.joinable()) {
      thread_.join();
    }
  }
  /// Valid after `join()`.
  [[nodiscard]] bool handshake_ok() const noexcept { return handshake_ok_; }
  [[nodiscard]] bool session_reused() const noexcept { return reused_; }

 private:
  void run() noexcept {
    pollfd p{listener_.get(), POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1) {
      return;
    }
    Fd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (conn.get() < 0) {
      return;
    }
    set_io_timeouts(conn.get(), 5s);
    SSL* ssl = SSL_new(ctx_);
    if (ssl != nullptr && SSL_set_fd(ssl, conn.get()) == 1 && SSL_accept(ssl) == 1) {
      reused_ = SSL_session_reused(ssl) == 1;
      handshake_ok_ = true;
      if (!data_.empty()) {
        (void)SSL_write(ssl, data_.data(), static_cast<int>(data_.size()));
      }
      char buf[256];
      while (SSL_read(ssl, buf, sizeof buf) > 0) {  // until close_notify, EOF or the 5 s timeout
      }
      if ((SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN) != 0) {
        (void)SSL_shutdown(ssl);
      }
    }
    SSL_free(ssl);
    ERR_clear_error();  // this thread's queue only
  }

  SSL_CTX* ctx_;
  std::string data_;
  Fd listener_;
  unsigned short port_ = 0;
  std::atomic<bool> handshake_ok_{false};
  std::atomic<bool> reused_{false};
  std::thread thread_;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

TEST_CASE("a full handshake, then a resumed one confirmed by client and server", "[client][tls13][tls12]") {
  const auto mode = GENERATE(Mode::tls13, Mode::tls12_tickets, Mode::tls12_session_ids);
  const auto key = GENERATE(KeyType::ecdsa_p256, KeyType::rsa_2048);
  CAPTURE(to_string(mode), key == KeyType::rsa_2048 ? "RSA" : "ECDSA");
  LocalServer server(server_options(mode, key));
  auto ctx = test::client_context_for(server);
  const auto version = mode == Mode::tls13 ? ProtocolVersion::tls1_3 : ProtocolVersion::tls1_2;

  const Outcome full = connect_clean(ctx, server);
  CHECK_FALSE(full.client_reused);
  CHECK_FALSE(full.server_reused);
  CHECK(full.version == version);
  if (mode != Mode::tls13) {
    // The TLS 1.2 cipher suite names the server key's algorithm.
    CHECK(full.cipher.find(key == KeyType::rsa_2048 ? "-RSA-" : "-ECDSA-") != std::string::npos);
  }

  auto s = ctx.take_recent_session();
  REQUIRE(s.has_value());
  CHECK(s->protocol_version() == version);
  CHECK(s->is_resumable());
  CHECK(s->has_ticket() == (mode != Mode::tls12_session_ids));
  CHECK(s->cipher_name() == full.cipher);

  const Outcome resumed = connect_clean(ctx, server, &*s);
  CHECK(resumed.client_reused);
  CHECK(resumed.server_reused);
  CHECK(resumed.version == version);
  CHECK(resumed.cipher == full.cipher);
}

TEST_CASE("a server that requests a client certificate resumes, both sides confirming", "[client][tls13][tls12]") {
  const auto mode = GENERATE(Mode::tls13, Mode::tls12_tickets, Mode::tls12_session_ids);
  CAPTURE(to_string(mode));
  const auto client_ca = tlsresume::testing::make_ca("client CA");
  const auto leaf = tlsresume::testing::make_leaf(client_ca, "client");
  LocalServer server(test::requesting_client_certificate(client_ca, mode));

  SECTION("with a certificate: full, then resumed with the same peer certificate") {
    auto ctx = test::client_context_for(server, leaf);
    for (int n = 0; n < 2; ++n) {
      CAPTURE(n);
      auto s = ctx.take_recent_session();
      REQUIRE(s.has_value() == (n > 0));
      ClientA client(ctx);
      if (s) {
        client.set_session(*s);
      }
      auto conn = server.handshake(client);
      CHECK(client.session_reused() == (n > 0));
      CHECK(conn.session_reused() == (n > 0));
      X509* peer = SSL_get0_peer_certificate(conn.native_handle());
      REQUIRE(peer != nullptr);
      CHECK(X509_cmp(peer, leaf.cert.get()) == 0);  // a resumed session carries the client identity
      CHECK(SSL_get_verify_result(conn.native_handle()) == X509_V_OK);
      client.await_tickets(0ms, 2);
      client.shutdown();
      conn.shutdown();
    }
  }

  SECTION("twin: without a certificate the server refuses the handshake") {
    auto ctx = test::client_context_for(server);
    ClientA client(ctx);
    CHECK_THROWS_AS(server.handshake(client), tlsresume::Error);
    REQUIRE_ERROR_QUEUE_EMPTY();
    CHECK_FALSE(ctx.take_recent_session().has_value());
  }
}

TEST_CASE("session() returns the connection's current session, bound to the client's context",
          "[client][tls13][tls12]") {
  const auto mode = GENERATE(Mode::tls13, Mode::tls12_tickets);
  CAPTURE(to_string(mode));
  LocalServer server(server_options(mode));
  auto ctx = test::client_context_for(server);
  ClientA client(ctx);
  CHECK_FALSE(client.session().has_value());  // before the handshake

  auto conn = server.handshake(client);
  auto during = client.session();
  REQUIRE(during.has_value());
  CHECK(during->native_handle() == SSL_get0_session(client.native_handle()));
  CHECK(during->context_id() == ctx.id());

  client.await_tickets(0ms, 2);
  auto after = client.session();
  REQUIRE(after.has_value());
  CHECK(after->native_handle() == SSL_get0_session(client.native_handle()));
  CHECK(after->context_id() == ctx.id());
  CHECK(*after == *client.session());  // same object, same binding
  CHECK(after->is_resumable());
  if (mode == Mode::tls13) {
    // Each TLS 1.3 ticket replaces the connection's session with a new object.
    CHECK(after->native_handle() != during->native_handle());
    CHECK_FALSE(during->is_resumable());  // the handshake's session carries no ticket
  } else {
    CHECK(after->native_handle() == during->native_handle());
  }
  client.shutdown();
  conn.shutdown();
}

TEST_CASE("sessions_received() counts 2 after a full TLS 1.3 handshake and 1 after a resumed one",
          "[client][tls13]") {
  LocalServer server(server_options(Mode::tls13));
  auto ctx = test::client_context_for(server);

  ClientA full(ctx);
  auto full_conn = server.handshake(full);
  CHECK(full.sessions_received() == 0);  // nothing read after the handshake yet
  CHECK(full.await_tickets(0ms, 5) == 2);
  CHECK(full.sessions_received() == 2);
  CHECK(ctx.stats().sessions_received == 2);
  full.shutdown();
  full_conn.shutdown();

  auto s = ctx.take_recent_session();
  REQUIRE(s.has_value());
  ClientA resumed(ctx);
  resumed.set_session(*s);
  auto resumed_conn = server.handshake(resumed);
  REQUIRE(resumed.session_reused());
  REQUIRE(resumed_conn.session_reused());
  CHECK(resumed.await_tickets(0ms, 5) == 1);
  CHECK(resumed.sessions_received() == 1);
  CHECK(full.sessions_received() == 2);  // per connection
  CHECK(ctx.stats().sessions_received == 3);
  resumed.shutdown();
  resumed_conn.shutdown();
}

TEST_CASE("sessions_received() counts the single TLS 1.2 session of a full handshake", "[client][tls12]") {
  const auto mode = GENERATE(Mode::tls12_tickets, Mode::tls12_session_ids);
  CAPTURE(to_string(mode));
  LocalServer server(server_options(mode));
  auto ctx = test::client_context_for(server);
  ClientA client(ctx);
  auto conn = server.handshake(client);
  CHECK(client.sessions_received() == 1);  // delivered at the end of the handshake
  CHECK(client.await_tickets(0ms, 5) == 1);
  client.shutdown();
  conn.shutdown();
}

TEST_CASE("moving a Client keeps it working", "[client][tls13]") {
  LocalServer server(server_options(Mode::tls13));
  auto ctx = test::client_context_for(server);
  REQUIRE(connect_clean(ctx, server).sessions == 2);
  auto s = ctx.take_recent_session();
  REQUIRE(s.has_value());

  ClientA original(ctx);
  original.set_server_name("localhost");
  original.set_session(*s);
  SSL* const ssl = original.native_handle();

  ClientA moved(std::move(original));  // before the handshake
  CHECK(moved.native_handle() == ssl);
  CHECK(moved.requested_server_name() == "localhost");
  CHECK(SSL_get0_session(moved.native_handle()) == s->native_handle());
  CHECK(moved.context().id() == ctx.id());
  auto conn = server.handshake(moved);
  CHECK(moved.session_reused());
  CHECK(conn.session_reused());

  ClientA assigned(ctx);
  assigned = std::move(moved);  // after the handshake, over a client that never connected
  CHECK(assigned.native_handle() == ssl);
  CHECK(assigned.session_reused());
  CHECK(assigned.await_tickets(0ms, 1) == 1);
  CHECK(assigned.sessions_received() == 1);
  auto current = assigned.session();
  REQUIRE(current.has_value());
  CHECK(current->requested_server_name() == "localhost");
  CHECK(assigned.shutdown() == tlsresume::IoStatus::done);
  conn.shutdown();

  // The ticket received through the moved client is in the store and resumes.
  auto next = ctx.take_recent_session("localhost");
  REQUIRE(next.has_value());
  CHECK(next->native_handle() == current->native_handle());
  ClientA again(ctx);
  again.set_server_name("localhost");
  again.set_session(*next);
  auto again_conn = server.handshake(again);
  CHECK(again.session_reused());
  CHECK(again_conn.session_reused());
  again.shutdown();
  again_conn.shutdown();
}

TEST_CASE("set_server_name with an IP literal sends no SNI and verifies the IP address", "[client][tls13]") {
  LocalServer server(server_options(Mode::tls13));  // its certificate: DNS:localhost, IP:127.0.0.1, IP:::1
  auto ctx = test::client_context_for(server);

  SECTION("127.0.0.1 and ::1 connect without SNI") {
    const std::string ip = GENERATE("127.0.0.1", "::1");
    CAPTURE(ip);
    ClientA client(ctx);
    client.set_server_name(ip);
    CHECK(client.requested_server_name().empty());  // the SNI: none for an IP literal
    CHECK(client.peer_name() == ip);                // the name the connection was made to
    CHECK(SSL_get_servername(client.native_handle(), TLSEXT_NAMETYPE_host_name) == nullptr);
    auto conn = server.handshake(client);
    CHECK(SSL_get_servername(conn.native_handle(), TLSEXT_NAMETYPE_host_name) == nullptr);  // nothing sent
    CHECK(SSL_get_verify_result(client.native_handle()) == X509_V_OK);
    client.shutdown();
    conn.shutdown();
  }

  SECTION("twin: an IP address the certificate does not name fails verification") {
    ClientA client(ctx);
    client.set_server_name("127.0.0.2");
    CHECK(client.requested_server_name().empty());
    try {
      (void)server.handshake(client);
      FAIL("the handshake should fail certificate verification");
    } catch (const tlsresume::Error& e) {
      CHECK(std::string_view(e.what()).find("certificate verification") != std::string_view::npos);
    }
    REQUIRE_ERROR_QUEUE_EMPTY();
    CHECK(SSL_get_verify_result(client.native_handle()) == X509_V_ERR_IP_ADDRESS_MISMATCH);
  }

  SECTION("a host name is sent as SNI and verified") {
    ClientA client(ctx);
    client.set_server_name("localhost");
    CHECK(client.requested_server_name() == "localhost");
    CHECK(client.peer_name() == "localhost");
    auto conn = server.handshake(client);
    const char* sni = SSL_get_servername(conn.native_handle(), TLSEXT_NAMETYPE_host_name);
    REQUIRE(sni != nullptr);
    CHECK(std::string_view(sni) == "localhost");
    client.shutdown();
    conn.shutdown();
  }

  SECTION("twin: a host name the certificate does not name fails verification") {
    ClientA client(ctx);
    client.set_server_name("example.com");
    CHECK_THROWS_AS(server.handshake(client), tlsresume::Error);
    REQUIRE_ERROR_QUEUE_EMPTY();
    CHECK(SSL_get_verify_result(client.native_handle()) == X509_V_ERR_HOSTNAME_MISMATCH);
  }

  SECTION("an empty name and a name set after the handshake are refused") {
    ClientA client(ctx);
    try {
      client.set_server_name("");
      FAIL("empty name accepted");
    } catch (const tlsresume::Error& e) {
      CHECK(e.code() == tlsresume::make_error_code(errc::invalid_argument));
    }
    REQUIRE_ERROR_QUEUE_EMPTY();
    auto conn = server.handshake(client);
    try {
      client.set_server_name("localhost");
      FAIL("name set after the handshake");
    } catch (const tlsresume::Error& e) {
      CHECK(e.code() == tlsresume::make_error_code(errc::invalid_argument));
    }
    REQUIRE_ERROR_QUEUE_EMPTY();
    client.shutdown();
    conn.shutdown();
  }
}

TEST_CASE("set_server_name called again replaces the name sent and verified", "[client][tls13]") {
  LocalServer server(server_options(Mode::tls13));  // its certificate: DNS:localhost, IP:127.0.0.1, IP:::1
  auto ctx = test::client_context_for(server);

  SECTION("a host name, then an IP literal: no SNI, only the IP is verified") {
    ClientA client(ctx);
    client.set_server_name("other.example");  // not in the certificate
    client.set_server_name("127.0.0.1");
    CHECK(client.requested_server_name().empty());
    CHECK(client.peer_name() == "127.0.0.1");
    CHECK(SSL_get_servername(client.native_handle(), TLSEXT_NAMETYPE_host_name) == nullptr);
    auto conn = server.handshake(client);
    CHECK(SSL_get_servername(conn.native_handle(), TLSEXT_NAMETYPE_host_name) == nullptr);
    client.shutdown();
    conn.shutdown();
  }

  SECTION("an IP literal, then a host name: only the host name is verified") {
    ClientA client(ctx);
    client.set_server_name("127.0.0.2");  // not in the certificate
    client.set_server_name("localhost");
    CHECK(client.requested_server_name() == "localhost");
    CHECK(client.peer_name() == "localhost");
    auto conn = server.handshake(client);
    const char* sni = SSL_get_servername(conn.native_handle(), TLSEXT_NAMETYPE_host_name);
    REQUIRE(sni != nullptr);
    CHECK(std::string_view(sni) == "localhost");
    client.shutdown();
    conn.shutdown();
  }

  SECTION("twin: a host name, then another host name") {
    ClientA client(ctx);
    client.set_server_name("other.example");
    client.set_server_name("localhost");
    CHECK(client.requested_server_name() == "localhost");
    auto conn = server.handshake(client);
    const char* sni = SSL_get_servername(conn.native_handle(), TLSEXT_NAMETYPE_host_name);
    REQUIRE(sni != nullptr);
    CHECK(std::string_view(sni) == "localhost");
    client.shutdown();
    conn.shutdown();
  }
}

TEST_CASE("await_tickets before the handshake is an error", "[client]") {
  LocalServer server(server_options(Mode::tls13));
  auto ctx = test::client_context_for(server);
  ClientA client(ctx);
  try {
    (void)client.await_tickets(0ms);
    FAIL("await_tickets before the handshake did not throw");
  } catch (const tlsresume::Error& e) {
    CHECK(e.code() == tlsresume::make_error_code(errc::handshake_not_done));
  }
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("await_tickets over a loopback TCP socket", "[client][tls13][tls12]") {
  SECTION("TLS 1.3: both tickets arrive quickly, and one of them resumes on both sides") {
    LocalServer server(server_options(Mode::tls13));
    auto ctx = test::client_context_for(server);
    {
      LoopbackServer tcp(server.native_handle(), "");
      Fd sock = tcp.connect_client();
      ClientA client(ctx);
      client.set_fd(sock.get());
      REQUIRE(client.connect() == tlsresume::IoStatus::done);
      const auto start = std::chrono::steady_clock::now();
      CHECK(client.await_tickets(2s, 2) == 2);
      CHECK(seconds_since(start) < 1.0);
      CHECK_FALSE(is_nonblocking(sock.get()));
      client.shutdown();
      sock.reset();
      tcp.join();
      CHECK(tcp.handshake_ok());
      CHECK_FALSE(tcp.session_reused());
    }
    auto s = ctx.take_recent_session();
    REQUIRE(s.has_value());
    LoopbackServer tcp(server.native_handle(), "");
    Fd sock = tcp.connect_client();
    ClientA client(ctx);
    client.set_session(*s);
    client.set_fd(sock.get());
    REQUIRE(client.connect() == tlsresume::IoStatus::done);
    CHECK(client.session_reused());
    const auto start = std::chrono::steady_clock::now();
    CHECK(client.await_tickets(2s, 1) == 1);  // one ticket after a resumed handshake
    CHECK(seconds_since(start) < 1.0);
    client.shutdown();
    sock.reset();
    tcp.join();
    CHECK(tcp.handshake_ok());
    CHECK(tcp.session_reused());
  }

  SECTION("TLS 1.2 on a blocking socket: no ticket after the handshake, await_tickets returns on time") {
    LocalServer server(server_options(Mode::tls12_tickets));
    auto ctx = test::client_context_for(server);
    LoopbackServer tcp(server.native_handle(), "");
    Fd sock = tcp.connect_client();
    ClientA client(ctx);
    client.set_fd(sock.get());
    REQUIRE(client.connect() == tlsresume::IoStatus::done);
    REQUIRE(client.sessions_received() == 1);
    const auto start = std::chrono::steady_clock::now();
    CHECK(client.await_tickets(200ms, 5) == 1);
    const double elapsed = seconds_since(start);
    CHECK(elapsed >= 0.15);  // it did wait for more
    CHECK(elapsed < 1.0);    // and did not hang on the blocking socket
    CHECK_FALSE(is_nonblocking(sock.get()));  // left blocking, as it was
    client.shutdown();
    sock.reset();
    tcp.join();
    CHECK(tcp.handshake_ok());
  }

  SECTION("twin: a socket that was non-blocking stays non-blocking") {
    LocalServer server(server_options(Mode::tls12_tickets));
    auto ctx = test::client_context_for(server);
    LoopbackServer tcp(server.native_handle(), "");
    Fd sock = tcp.connect_client();
    ClientA client(ctx);
    client.set_fd(sock.get());
    REQUIRE(client.connect() == tlsresume::IoStatus::done);
    REQUIRE(::fcntl(sock.get(), F_SETFL, ::fcntl(sock.get(), F_GETFL) | O_NONBLOCK) == 0);
    CHECK(client.await_tickets(100ms, 5) == 1);
    CHECK(is_nonblocking(sock.get()));
    REQUIRE(::fcntl(sock.get(), F_SETFL, ::fcntl(sock.get(), F_GETFL) & ~O_NONBLOCK) == 0);
    client.shutdown();
    sock.reset();
    tcp.join();
  }

  SECTION("application data sent after the tickets is left for SSL_read") {
    const auto mode = GENERATE(Mode::tls13, Mode::tls12_tickets);
    CAPTURE(to_string(mode));
    LocalServer server(server_options(mode));
    auto ctx = test::client_context_for(server);
    const std::string message = "application data after the tickets";
    LoopbackServer tcp(server.native_handle(), message);
    Fd sock = tcp.connect_client();
    ClientA client(ctx);
    client.set_fd(sock.get());
    REQUIRE(client.connect() == tlsresume::IoStatus::done);
    const auto start = std::chrono::steady_clock::now();
    // Asks for more than the server sends: stops at the application data, well before the timeout.
    CHECK(client.await_tickets(3s, 5) == (mode == Mode::tls13 ? 2U : 1U));
    CHECK(seconds_since(start) < 1.5);
    CHECK_FALSE(is_nonblocking(sock.get()));
    CHECK(SSL_pending(client.native_handle()) > 0);  // buffered, not consumed
    std::string got(message.size(), '\0');
    std::size_t read = 0;
    REQUIRE(SSL_read_ex(client.native_handle(), got.data(), got.size(), &read) == 1);
    got.resize(read);
    CHECK(got == message);
    client.shutdown();
    sock.reset();
    tcp.join();
    CHECK(tcp.handshake_ok());
  }
}
