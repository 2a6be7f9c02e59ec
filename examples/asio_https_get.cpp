// asio_https_get: three HTTPS GET requests with C++20 coroutines over standalone Asio, each on a
// new connection; requests 2 and 3 resume the session of the one before, through tlsresume.
//
//   asio_https_get [--json] [--tls1.2] [--cafile FILE] [https://HOST[:PORT][/PATH]]
//
// Without a URL it talks to an embedded server: an Asio TLS server in this process on 127.0.0.1
// (a free port), with a CA and a "localhost" certificate made at start
// (tlsresume::testing::make_ca / make_leaf). Client and server share one io_context and one
// thread. The embedded server reports what *it* saw on each connection (SSL_session_reused).
//
// For each request it prints the HTTP status, whether the handshake resumed, and the handshake's
// wall time (with the embedded server, the server's share of the work is included: one thread).
// --json prints one JSON object per request instead. Verification is always on: the system trust
// store, or --cafile; the certificate must match HOST. --tls1.2 caps the client (and the embedded
// server) at TLS 1.2. Exit status: 0 all requests succeeded, 1 a request failed (one line on
// stderr), 2 bad options.
//
// The tlsresume part is three lines: share the Asio context once (`share_context`), keep one
// `SessionCache`, and call `resume_from(stream, ctx, cache, host, port)` before each handshake.
// Then read the response (TLS 1.3 tickets arrive after the handshake and are processed while
// reading) and shut down (`async_shutdown`: a close without close_notify loses the session).

#include <asio/co_spawn.hpp>
#include <asio/connect.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/read_until.hpp>
#include <asio/redirect_error.hpp>
#include <asio/ssl.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <tlsresume/asio.hpp>
#include <tlsresume/testing.hpp>
#include <tlsresume/tlsresume.hpp>

namespace {

using asio::ip::tcp;
using namespace std::chrono_literals;

struct Https {};  // names this client configuration
using HttpsContext = tlsresume::Context<Https>;
using HttpsCache = tlsresume::SessionCache<Https>;

constexpr int requests = 3;
constexpr auto request_timeout = 15s;  // a whole request: connect, handshake, response, shutdown

struct Options {
  bool json = false;
  bool tls12 = false;
  std::string cafile;
  std::optional<std::string> url;
};

struct Url {
  std::string host;  // without brackets
  std::uint16_t port = 443;
  std::string path = "/";
};

/// What one request showed.
struct Row {
  int request = 0;
  int status = 0;
  bool offered = false;
  bool resumed = false;
  double handshake_ms = 0;
  std::string protocol;
  std::optional<bool> server_resumed;  // the embedded server's own view
};

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

constexpr const char* usage =
    "usage: asio_https_get [--json] [--tls1.2] [--cafile FILE] [https://HOST[:PORT][/PATH]]\n"
    "  Three HTTPS GET requests, each on a new connection, resumed through tlsresume.\n"
    "  Without a URL: an embedded Asio TLS server on 127.0.0.1 (certificates made at start).\n"
    "  --json        one JSON object per request\n"
    "  --tls1.2      at most TLS 1.2 (client and embedded server)\n"
    "  --cafile FILE trust the CA certificates in FILE (default: the system trust store)\n";

Url parse_url(std::string_view text) {
  constexpr std::string_view scheme = "https://";
  if (text.substr(0, scheme.size()) != scheme) {
    throw UsageError("the URL must start with https://");
  }
  text.remove_prefix(scheme.size());
  const auto slash = text.find('/');
  const std::string_view authority = text.substr(0, slash);
  Url url;
  url.path = slash == std::string_view::npos ? "/" : std::string(text.substr(slash));
  std::string_view port_text;
  bool has_port = false;
  if (!authority.empty() && authority.front() == '[') {  // [IPv6]:port
    const auto close = authority.find(']');
    if (close == std::string_view::npos) {
      throw UsageError("unterminated [ in the URL's host");
    }
    url.host = std::string(authority.substr(1, close - 1));
    const std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        throw UsageError("bad text after ] in the URL");
      }
      has_port = true;
      port_text = rest.substr(1);
    }
  } else {
    const auto colon = authority.find(':');
    url.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      has_port = true;
      port_text = authority.substr(colon + 1);
    }
  }
  if (url.host.empty()) {
    throw UsageError("the URL has no host");
  }
  if (has_port) {
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
    if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() || value == 0 ||
        value > 65535) {
      throw UsageError("bad port in the URL");
    }
    url.port = static_cast<std::uint16_t>(value);
  }
  return url;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--json") {
      o.json = true;
    } else if (arg == "--tls1.2") {
      o.tls12 = true;
    } else if (arg == "--cafile") {
      if (i + 1 == argc) {
        throw UsageError("--cafile needs a file");
      }
      o.cafile = argv[++i];
    } else if (arg == "-h" || arg == "--help") {
      throw UsageError("");
    } else if (!arg.empty() && arg.front() != '-' && !o.url) {
      o.url = std::string(arg);
    } else {
      throw UsageError("unknown option " + std::string(arg));
    }
  }
  return o;
}

std::string pem_of(X509* cert) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    tlsresume::throw_openssl_error("PEM_write_bio_X509");
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

// --- The embedded server -----------------------------------------------------------------------

/// An Asio TLS server on 127.0.0.1 that answers every GET with 200 and records, per connection,
/// whether its side of the handshake resumed.
class EmbeddedServer {
 public:
  EmbeddedServer(asio::io_context& io, bool tls12)
      : ca_(tlsresume::testing::make_ca("asio_https_get embedded CA")),
        leaf_(tlsresume::testing::make_leaf(ca_, "localhost")),
        ssl_ctx_(asio::ssl::context::tls_server),
        acceptor_(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    SSL_CTX* native = ssl_ctx_.native_handle();
    if (SSL_CTX_use_certificate(native, leaf_.cert.get()) != 1 ||
        SSL_CTX_use_PrivateKey(native, leaf_.key.get()) != 1) {
      tlsresume::throw_openssl_error("embedded server certificate");
    }
    if (tls12) {
      ssl_ctx_.set_options(asio::ssl::context::no_tlsv1_3);
    }
  }

  [[nodiscard]] std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  [[nodiscard]] std::string ca_pem() const { return pem_of(ca_.cert.get()); }
  /// Whether connection `n` (0-based, in accept order) resumed, on the server's side.
  [[nodiscard]] std::optional<bool> resumed(std::size_t n) const {
    return n < resumed_.size() ? std::optional<bool>(resumed_[n]) : std::nullopt;
  }
  void stop() {
    asio::error_code ignored;
    acceptor_.close(ignored);
  }

  asio::awaitable<void> run() {
    for (;;) {
      asio::error_code ec;
      tcp::socket socket = co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        co_return;  // stopped
      }
      asio::co_spawn(acceptor_.get_executor(), serve(std::move(socket)), asio::detached);
    }
  }

 private:
  asio::awaitable<void> serve(tcp::socket socket) {
    asio::ssl::stream<tcp::socket> stream(std::move(socket), ssl_ctx_);
    asio::error_code ec;
    co_await stream.async_handshake(asio::ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      co_return;
    }
    const bool reused = SSL_session_reused(stream.native_handle()) == 1;
    resumed_.push_back(reused);
    std::string request;
    co_await asio::async_read_until(stream, asio::dynamic_buffer(request), "\r\n\r\n",
                                    asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      co_return;
    }
    const std::string body = std::string("hello from the embedded server; it resumed: ") + (reused ? "yes" : "no") + "\n";
    const std::string response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
                                 std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    co_await asio::async_write(stream, asio::buffer(response), asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) {
      co_await stream.async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  tlsresume::testing::Certificate ca_;
  tlsresume::testing::Certificate leaf_;
  asio::ssl::context ssl_ctx_;
  tcp::acceptor acceptor_;
  std::vector<bool> resumed_;
};

// --- The client ---------------------------------------------------------------------------------

/// "200" from "HTTP/1.1 200 OK\r\n..."; 0 if the response has no status line.
int status_of(std::string_view response) {
  if (response.substr(0, 5) != "HTTP/") {
    return 0;
  }
  const auto space = response.find(' ');
  if (space == std::string_view::npos || response.size() < space + 4) {
    return 0;
  }
  int status = 0;
  const char* first = response.data() + space + 1;
  const auto [end, ec] = std::from_chars(first, first + 3, status);
  return ec == std::errc() && end == first + 3 ? status : 0;
}

/// A handshake error, with the certificate verification result when that is what failed.
std::string handshake_error(const std::system_error& e, SSL* ssl) {
  std::string text = e.code().message();
  if (const long v = SSL_get_verify_result(ssl); v != X509_V_OK) {
    text += ": ";
    text += X509_verify_cert_error_string(v);
  }
  return text;
}

/// One GET on a new connection: connect, resume_from, handshake (timed), request, response to the
/// end, shutdown.
asio::awaitable<Row> get(asio::ssl::context& asio_ctx, const HttpsContext& ctx, HttpsCache& cache,
                         const std::vector<tcp::endpoint>& endpoints, const Url& url, int n) {
  auto executor = co_await asio::this_coro::executor;
  asio::ssl::stream<tcp::socket> stream(executor, asio_ctx);
  asio::steady_timer watchdog(executor, request_timeout);
  watchdog.async_wait([&stream](const asio::error_code& ec) {
    if (!ec) {
      asio::error_code ignored;
      stream.next_layer().close(ignored);  // fails the pending operation
    }
  });
  co_await asio::async_connect(stream.next_layer(), endpoints, asio::use_awaitable);

  // Before the handshake: SNI and host name check from the key, a session from the cache if
  // there is one, and every session this connection receives filed under the key.
  const auto attached = tlsresume::asio::resume_from(stream, ctx, cache, url.host, url.port);

  const auto start = std::chrono::steady_clock::now();
  try {
    co_await stream.async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
  } catch (const std::system_error& e) {
    throw std::runtime_error("handshake failed: " + handshake_error(e, stream.native_handle()));
  }
  const std::chrono::duration<double, std::milli> handshake = std::chrono::steady_clock::now() - start;

  const bool ipv6 = url.host.find(':') != std::string::npos;
  std::string host_header = ipv6 ? "[" + url.host + "]" : url.host;
  if (url.port != 443) {
    host_header += ":" + std::to_string(url.port);
  }
  const std::string request = "GET " + url.path + " HTTP/1.1\r\nHost: " + host_header +
                              "\r\nUser-Agent: tlsresume-asio_https_get\r\nAccept: */*\r\nConnection: close\r\n\r\n";
  co_await asio::async_write(stream, asio::buffer(request), asio::use_awaitable);

  // Read to the end: TLS 1.3 tickets, sent after the handshake, are processed on the way.
  std::string response;
  asio::error_code ec;
  co_await asio::async_read(stream, asio::dynamic_buffer(response), asio::redirect_error(asio::use_awaitable, ec));
  if (ec && ec != asio::error::eof && ec != asio::ssl::error::stream_truncated) {
    throw std::system_error(ec, "reading the response");
  }
  // Send close_notify: a connection closed without it loses its session (OpenSSL's rule). The
  // peer may already be gone: the error does not matter, close_notify was sent.
  co_await stream.async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
  watchdog.cancel();

  Row row;
  row.request = n;
  row.status = status_of(response);
  if (row.status == 0) {
    throw std::runtime_error("no HTTP status line in the response");
  }
  row.offered = attached.offered();
  row.resumed = attached.session_reused();
  row.handshake_ms = handshake.count();
  row.protocol = tlsresume::to_string(attached.protocol_version());
  co_return row;
}

void print(const Row& row, bool json) {
  if (json) {
    std::printf("{\"request\": %d, \"status\": %d, \"offered\": %s, \"resumed\": %s, \"handshake_ms\": %.3f, "
                "\"protocol\": \"%s\", \"server_resumed\": %s}\n",
                row.request, row.status, row.offered ? "true" : "false", row.resumed ? "true" : "false",
                row.handshake_ms, row.protocol.c_str(),
                row.server_resumed ? (*row.server_resumed ? "true" : "false") : "null");
  } else {
    std::printf("request %d: HTTP %d, resumed %s, handshake %.2f ms (%s", row.request, row.status,
                row.resumed ? "yes" : "no", row.handshake_ms, row.protocol.c_str());
    if (row.server_resumed) {
      std::printf("; the server saw: %s", *row.server_resumed ? "resumed" : "full handshake");
    }
    std::printf(")\n");
  }
  std::fflush(stdout);
}

asio::awaitable<void> run_client(const Options& o, asio::ssl::context& asio_ctx, EmbeddedServer* server, Url url) {
  std::vector<tcp::endpoint> endpoints;
  if (server != nullptr) {
    endpoints.emplace_back(asio::ip::make_address("127.0.0.1"), server->port());
  } else {
    tcp::resolver resolver(co_await asio::this_coro::executor);
    for (const auto& entry : co_await resolver.async_resolve(url.host, std::to_string(url.port), asio::use_awaitable)) {
      endpoints.push_back(entry.endpoint());
    }
  }

  // Once: share the configured Asio context with tlsresume, and one cache for its connections.
  const auto ctx = tlsresume::asio::share_context<Https>(asio_ctx);
  HttpsCache cache;

  for (int n = 1; n <= requests; ++n) {
    Row row;
    try {
      row = co_await get(asio_ctx, ctx, cache, endpoints, url, n);
    } catch (const std::exception& e) {
      throw std::runtime_error("request " + std::to_string(n) + ": " + e.what());
    }
    if (server != nullptr) {
      row.server_resumed = server->resumed(static_cast<std::size_t>(n - 1));
    }
    print(row, o.json);
  }
  if (!o.json) {
    const auto s = cache.stats();
    std::printf("cache: hits=%llu misses=%llu stored=%llu sessions=%zu\n", static_cast<unsigned long long>(s.hits),
                static_cast<unsigned long long>(s.misses), static_cast<unsigned long long>(s.stored), s.sessions);
  }
  if (server != nullptr) {
    server->stop();
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  Url url;
  try {
    o = parse_options(argc, argv);
    if (o.url) {
      url = parse_url(*o.url);
    }
  } catch (const UsageError& e) {
    const bool help = std::string_view(e.what()).empty();
    if (!help) {
      std::fprintf(stderr, "asio_https_get: %s\n", e.what());
    }
    std::fputs(usage, help ? stdout : stderr);
    return help ? 0 : 2;
  }

  try {
    asio::io_context io;
    std::optional<EmbeddedServer> server;
    if (!o.url) {
      server.emplace(io, o.tls12);
      url.host = "localhost";  // the name the certificate is checked against; we connect to 127.0.0.1
      url.port = server->port();
    }

    // The Asio client context, configured before it is shared with tlsresume.
    asio::ssl::context asio_ctx(asio::ssl::context::tls_client);
    asio_ctx.set_verify_mode(asio::ssl::verify_peer);  // always verify
    if (o.tls12) {
      asio_ctx.set_options(asio::ssl::context::no_tlsv1_3);
    }
    if (server) {
      const std::string pem = server->ca_pem();
      asio_ctx.add_certificate_authority(asio::buffer(pem));
    } else if (!o.cafile.empty()) {
      asio_ctx.load_verify_file(o.cafile);
    } else {
      asio_ctx.set_default_verify_paths();
    }

    std::exception_ptr failure;
    if (server) {
      asio::co_spawn(io, server->run(), asio::detached);
    }
    asio::co_spawn(io, run_client(o, asio_ctx, server ? &*server : nullptr, url), [&](std::exception_ptr e) {
      failure = e;
      if (server) {
        server->stop();
      }
    });
    io.run();
    if (failure) {
      std::rethrow_exception(failure);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "asio_https_get: %s\n", e.what());
    return 1;
  }
  return 0;
}
