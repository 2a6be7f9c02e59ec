// tlsresume-probe: connects N times to a TLS server through one tlsresume Context and
// SessionCache and shows what session resumption did on each connection.
//
//   tlsresume-probe [options] [HOST:PORT]
//
// Without HOST:PORT it probes an embedded server that runs in this process over an in-memory BIO
// pair (tlsresume::testing::LocalServer, a certificate made at start; no network). Its cache key
// is "localhost" port 443 (or --servername NAME, port 443). With HOST:PORT it connects over TCP
// (IPv4, IPv6 as [::1]:443, or a name resolved with getaddrinfo).
//
// Each connection is what a user of the library writes: one Context (verification always on),
// one SessionCache, and per connection
//     Client client(ctx); client.resume_from(cache, ctx.key_for(name, port));
//     client.set_fd(socket); client.connect(); client.await_tickets(200ms, 2); client.shutdown();
// Run with --help for the options. Exit status: 0 every connection succeeded, 1 a connection or
// the sessions file failed (one line on stderr), 2 bad options.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <tlsresume/fmt.hpp>
#include <tlsresume/testing.hpp>
#include <tlsresume/tlsresume.hpp>

#if __has_include(<tlsresume/persist.hpp>)
#include <tlsresume/persist.hpp>
#define TLSRESUME_PROBE_HAS_PERSIST 1
#else
#define TLSRESUME_PROBE_HAS_PERSIST 0
#endif

namespace {

using namespace std::chrono_literals;

struct ProbeTag {};  // names the probe's one client configuration
using ProbeContext = tlsresume::Context<ProbeTag>;
using ProbeCache = tlsresume::SessionCache<ProbeTag>;
using ProbeClient = tlsresume::Client<ProbeContext>;

constexpr std::string_view program = "tlsresume-probe";
constexpr bool persistence_available = TLSRESUME_PROBE_HAS_PERSIST != 0;

constexpr std::chrono::seconds connect_timeout{5};    // TCP connect, per address
constexpr std::chrono::seconds io_timeout{10};        // each blocking read or write (SO_RCVTIMEO/SO_SNDTIMEO)
constexpr std::chrono::seconds http_timeout{30};      // a whole HTTP response
constexpr std::chrono::milliseconds ticket_wait{200};  // await_tickets after the handshake
constexpr std::size_t tickets_wanted = 2;
constexpr std::uint16_t embedded_port = 443;          // the embedded server's port in the cache key
constexpr int max_count = 10000;

// ---------------------------------------------------------------------------------------------
// Options

/// Bad command line: exit status 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A failure of the probe itself (not a tlsresume::Error): resolution, TCP, HTTP.
class ProbeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Target {
  std::string host;  // as given, without brackets
  std::uint16_t port = 0;
};

struct Options {
  int count = 3;
  std::optional<tlsresume::ProtocolVersion> version;  // only this version; default: best available
  std::optional<std::string> cafile;
  std::optional<std::string> server_name;
  std::vector<std::string> alpn;
  std::optional<std::filesystem::path> sessions;
  std::optional<std::filesystem::path> key_file;
  std::optional<std::string> http_path;
  bool json = false;
  bool help = false;
  std::optional<Target> target;  // nullopt: the embedded server
};

std::string usage() {
  return fmt::format(
      "usage: {0} [options] [HOST:PORT]\n"
      "\n"
      "Connects N times through one tlsresume Context and SessionCache and shows, per connection,\n"
      "whether a session was offered and resumed, the protocol, cipher, tickets and handshake time.\n"
      "Without HOST:PORT: an embedded server in this process (in-memory, no network), cache key\n"
      "localhost:443. HOST:PORT: TCP; HOST is a name, an IPv4 literal or an IPv6 literal in brackets\n"
      "([::1]:443). The server certificate is always verified.\n"
      "\n"
      "options:\n"
      "  --count N           connections to make (1..{1}, default 3)\n"
      "  --tls1.2, --tls1.3  use only this protocol version (default: the best both sides support)\n"
      "  --cafile FILE       also trust the PEM certificates of FILE (besides the system store)\n"
      "  --servername NAME   name for SNI, certificate verification and the cache key (default: HOST)\n"
      "  --alpn a,b          offer these ALPN protocols, in this order\n"
      "  --sessions FILE     load sessions from FILE before (a missing file starts empty), save them\n"
      "                      after{2}\n"
      "  --key-file FILE     encryption key of the sessions file: 32 raw bytes or 64 hex digits\n"
      "  --http-get PATH     after each handshake send GET PATH and read the response until close\n"
      "  --json              one JSON object per connection, then a summary object\n"
      "  --help              this text\n"
      "\n"
      "exit status: 0 all connections succeeded, 1 a connection or the sessions file failed, 2 bad options\n",
      program, max_count, persistence_available ? "" : " (not available in this build)");
}

int parse_count(std::string_view text) {
  int value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 1 || value > max_count) {
    throw UsageError(fmt::format("--count needs a number from 1 to {}, got '{}'", max_count, text));
  }
  return value;
}

std::uint16_t parse_port(std::string_view text, std::string_view whole) {
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value < 1 || value > 65535) {
    throw UsageError(fmt::format("bad port in '{}': expected 1..65535", whole));
  }
  return static_cast<std::uint16_t>(value);
}

/// "host:443", "192.0.2.1:443", "[2001:db8::1]:443".
Target parse_target(std::string_view text) {
  Target t;
  std::string_view port;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      throw UsageError(fmt::format("bad HOST:PORT '{}': expected [IPv6]:PORT", text));
    }
    t.host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      throw UsageError(fmt::format("bad HOST:PORT '{}': no port", text));
    }
    t.host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
    if (t.host.find(':') != std::string::npos) {
      throw UsageError(fmt::format("bad HOST:PORT '{}': write an IPv6 address in brackets, as [::1]:443", text));
    }
  }
  if (t.host.empty()) {
    throw UsageError(fmt::format("bad HOST:PORT '{}': empty host", text));
  }
  t.port = parse_port(port, text);
  return t;
}

std::vector<std::string> parse_alpn(std::string_view text) {
  std::vector<std::string> out;
  for (;;) {
    const auto comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    if (item.empty() || item.size() > 255) {
      throw UsageError("--alpn needs a comma-separated list of protocols of 1..255 bytes, as h2,http/1.1");
    }
    out.emplace_back(item);
    if (comma == std::string_view::npos) {
      return out;
    }
    text.remove_prefix(comma + 1);
  }
}

Options parse_options(std::span<char* const> args) {
  Options o;
  bool protocol_given = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    std::optional<std::string_view> inline_value;
    if (arg.starts_with("--")) {
      if (const auto eq = arg.find('='); eq != std::string_view::npos) {
        inline_value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
      }
    }
    auto value = [&]() -> std::string_view {
      if (inline_value) {
        return *inline_value;
      }
      if (i + 1 >= args.size()) {
        throw UsageError(fmt::format("{} needs a value", arg));
      }
      return args[++i];
    };
    auto no_value = [&] {
      if (inline_value) {
        throw UsageError(fmt::format("{} takes no value", arg));
      }
    };
    if (arg == "--help" || arg == "-h") {
      no_value();
      o.help = true;
    } else if (arg == "--json") {
      no_value();
      o.json = true;
    } else if (arg == "--tls1.2" || arg == "--tls1.3") {
      no_value();
      if (protocol_given) {
        throw UsageError("give at most one of --tls1.2 and --tls1.3");
      }
      protocol_given = true;
      o.version = arg == "--tls1.2" ? tlsresume::ProtocolVersion::tls1_2 : tlsresume::ProtocolVersion::tls1_3;
    } else if (arg == "--count") {
      o.count = parse_count(value());
    } else if (arg == "--cafile") {
      o.cafile = std::string(value());
    } else if (arg == "--servername") {
      o.server_name = std::string(value());
      if (o.server_name->empty()) {
        throw UsageError("--servername needs a non-empty name");
      }
    } else if (arg == "--alpn") {
      o.alpn = parse_alpn(value());
    } else if (arg == "--sessions") {
      o.sessions = std::filesystem::path(std::string(value()));
    } else if (arg == "--key-file") {
      o.key_file = std::filesystem::path(std::string(value()));
    } else if (arg == "--http-get") {
      const std::string_view path = value();
      const bool printable = std::all_of(path.begin(), path.end(), [](char ch) {
        const auto u = static_cast<unsigned char>(ch);
        return u > 0x20 && u != 0x7f;
      });
      if (!path.starts_with('/') || !printable) {
        throw UsageError("--http-get needs a path that starts with '/' and has no spaces or control characters");
      }
      o.http_path = std::string(path);
    } else if (arg.starts_with('-') && arg != "-") {
      throw UsageError(fmt::format("unknown option '{}'", arg));
    } else if (o.target) {
      throw UsageError(fmt::format("more than one HOST:PORT ('{}')", arg));
    } else {
      o.target = parse_target(arg);
    }
  }
  if (o.help) {
    return o;
  }
  if (o.key_file && !o.sessions) {
    throw UsageError("--key-file needs --sessions");
  }
  if (o.sessions && !persistence_available) {
    throw UsageError("--sessions: not available in this build (no <tlsresume/persist.hpp>)");
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

std::string errno_message(int error) { return std::error_code(error, std::system_category()).message(); }

/// `text` as a JSON string literal.
std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (const char ch : text) {
    const auto u = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (u < 0x20 || u == 0x7f) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(u));
        } else {
          out += ch;
        }
    }
  }
  out += '"';
  return out;
}

/// One line: what() of an exception with line breaks flattened.
std::string one_line(std::string_view text) {
  std::string out(text);
  for (char& ch : out) {
    if (ch == '\n' || ch == '\r') {
      ch = ' ';
    }
  }
  return out;
}

bool is_ip_literal(const std::string& host) {
  std::array<unsigned char, 16> buf{};
  return ::inet_pton(AF_INET, host.c_str(), buf.data()) == 1 || ::inet_pton(AF_INET6, host.c_str(), buf.data()) == 1;
}

/// "host:port", with brackets around an IPv6 literal.
std::string host_port(std::string_view host, std::uint16_t port) {
  return host.find(':') != std::string_view::npos ? fmt::format("[{}]:{}", host, port) : fmt::format("{}:{}", host, port);
}

// ---------------------------------------------------------------------------------------------
// TCP

/// An owned socket descriptor, closed on destruction.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) noexcept : fd_(fd) {}
  Socket(Socket&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Socket& operator=(Socket&& other) noexcept {
    if (this != &other) {
      close();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket() { close(); }

  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }

 private:
  void close() noexcept {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  int fd_ = -1;
};

struct AddrinfoDeleter {
  void operator()(addrinfo* list) const noexcept { ::freeaddrinfo(list); }
};
using AddrinfoList = std::unique_ptr<addrinfo, AddrinfoDeleter>;

std::string numeric_address(const addrinfo& ai) {
  char host[NI_MAXHOST] = {};
  char port[NI_MAXSERV] = {};
  if (::getnameinfo(ai.ai_addr, ai.ai_addrlen, host, sizeof host, port, sizeof port, NI_NUMERICHOST | NI_NUMERICSERV) !=
      0) {
    return "?";
  }
  return host_port(host, static_cast<std::uint16_t>(std::stoi(port)));
}

/// Connects to one address within `connect_timeout`; returns an invalid socket and sets `error`
/// on failure. The socket returned is blocking, with `io_timeout` on reads and writes.
Socket connect_address(const addrinfo& ai, std::string& error) {
  Socket s(::socket(ai.ai_family, ai.ai_socktype | SOCK_CLOEXEC, ai.ai_protocol));
  if (!s.valid()) {
    error = "socket: " + errno_message(errno);
    return {};
  }
  const int flags = ::fcntl(s.get(), F_GETFL);
  if (flags < 0 || ::fcntl(s.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    error = "fcntl: " + errno_message(errno);
    return {};
  }
  if (::connect(s.get(), ai.ai_addr, ai.ai_addrlen) != 0) {
    if (errno != EINPROGRESS) {
      error = errno_message(errno);
      return {};
    }
    const auto deadline = std::chrono::steady_clock::now() + connect_timeout;
    for (;;) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        error = fmt::format("timed out after {} s", connect_timeout.count());
        return {};
      }
      pollfd p{s.get(), POLLOUT, 0};
      const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
      if (ready > 0) {
        break;
      }
      if (ready < 0 && errno != EINTR) {
        error = "poll: " + errno_message(errno);
        return {};
      }
    }
    int so_error = 0;
    socklen_t len = sizeof so_error;
    if (::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) {
      so_error = errno;
    }
    if (so_error != 0) {
      error = errno_message(so_error);
      return {};
    }
  }
  // Blocking again for SSL_connect/SSL_read, but never forever.
  const timeval tv{static_cast<time_t>(io_timeout.count()), 0};
  const int one = 1;
  if (::fcntl(s.get(), F_SETFL, flags) != 0 || ::setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
      ::setsockopt(s.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0 ||
      ::setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
    error = "socket options: " + errno_message(errno);
    return {};
  }
  return s;
}

struct Connection {
  Socket socket;
  std::string address;  // numeric, "192.0.2.1:443" or "[::1]:443"
};

/// Resolves `target` (getaddrinfo) and connects to the first address that accepts.
Connection connect_tcp(const Target& target) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* raw = nullptr;
  const std::string port = std::to_string(target.port);
  const int rc = ::getaddrinfo(target.host.c_str(), port.c_str(), &hints, &raw);
  AddrinfoList list(raw);
  if (rc != 0) {
    throw ProbeError(fmt::format("cannot resolve {}: {}", target.host,
                                 rc == EAI_SYSTEM ? errno_message(errno) : std::string(::gai_strerror(rc))));
  }
  const std::string wanted = host_port(target.host, target.port);
  std::vector<std::string> errors;  // "address: reason", or the reason alone for a literal
  for (const addrinfo* ai = list.get(); ai != nullptr; ai = ai->ai_next) {
    std::string error;
    Socket s = connect_address(*ai, error);
    std::string address = numeric_address(*ai);
    if (s.valid()) {
      return Connection{std::move(s), std::move(address)};
    }
    errors.push_back(address == wanted ? error : fmt::format("{}: {}", address, error));
  }
  throw ProbeError(fmt::format("cannot connect to {}: {}", wanted,
                               errors.empty() ? std::string("no address") : fmt::format("{}", fmt::join(errors, "; "))));
}

// ---------------------------------------------------------------------------------------------
// HTTP over the TLS connection

struct HttpResult {
  int status = 0;
  std::size_t bytes = 0;    // response bytes, head and body
  bool clean_close = false;  // ended by the server's close_notify (not a bare EOF)
};

/// The Host header value: the server name, bracketed if IPv6, with the port unless 443.
std::string http_host(std::string_view name, std::uint16_t port) {
  std::string host = name.find(':') != std::string_view::npos ? fmt::format("[{}]", name) : std::string(name);
  return port == 443 ? host : fmt::format("{}:{}", host, port);
}

void ssl_write_all(SSL* ssl, std::string_view data, std::string_view who) {
  while (!data.empty()) {
    errno = 0;
    const int r = SSL_write(ssl, data.data(), static_cast<int>(data.size()));
    if (r > 0) {
      data.remove_prefix(static_cast<std::size_t>(r));
      continue;
    }
    const int error = SSL_get_error(ssl, r);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      throw ProbeError(fmt::format("{}: SSL_write: timed out", who));
    }
    if (error == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
      throw ProbeError(fmt::format("{}: SSL_write: {}", who, errno != 0 ? errno_message(errno) : "connection closed"));
    }
    tlsresume::throw_openssl_error(fmt::format("{}: SSL_write", who));
  }
}

/// Parses "HTTP/1.1 200 OK" from the start of `head`.
int parse_status(std::string_view head) {
  const auto eol = head.find("\r\n");
  const std::string_view line = head.substr(0, eol);
  int status = 0;
  if (line.starts_with("HTTP/") && line.size() >= 12 && line[8] == ' ') {
    const std::string_view digits = line.substr(9, 3);
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), status);
    if (ec == std::errc() && end == digits.data() + digits.size() && status >= 100 && status <= 599 &&
        (line.size() == 12 || line[12] == ' ')) {
      return status;
    }
  }
  throw ProbeError(fmt::format("HTTP: no status line in the response (it starts with {})",
                               json_string(head.substr(0, 40))));
}

/// Sends the GET request, calls `after_request()` (the embedded server answers there), then reads
/// the whole response with SSL_read until the server closes.
template <class AfterRequest>
HttpResult http_get(ProbeClient& client, std::string_view path, std::string_view host, AfterRequest&& after_request) {
  SSL* ssl = client.native_handle();
  const std::string request = fmt::format("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", path, host);
  ssl_write_all(ssl, request, "HTTP request");
  after_request();

  HttpResult result;
  std::string head;  // the first bytes, for the status line
  std::array<char, 16384> buf{};
  const auto deadline = std::chrono::steady_clock::now() + http_timeout;
  for (;;) {
    if (std::chrono::steady_clock::now() > deadline) {
      throw ProbeError(fmt::format("HTTP response not complete after {} s", http_timeout.count()));
    }
    errno = 0;
    const int r = SSL_read(ssl, buf.data(), static_cast<int>(buf.size()));
    if (r > 0) {
      const auto n = static_cast<std::size_t>(r);
      result.bytes += n;
      if (head.size() < 1024) {
        head.append(buf.data(), std::min(n, 1024 - head.size()));
      }
      continue;
    }
    const int error = SSL_get_error(ssl, r);
    if (error == SSL_ERROR_ZERO_RETURN) {
      result.clean_close = true;
      break;
    }
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      throw ProbeError(fmt::format("HTTP response: no data within {} s", io_timeout.count()));
    }
    if (error == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
      if (errno != 0 && errno != EPIPE) {
        throw ProbeError("HTTP response: SSL_read: " + errno_message(errno));
      }
      break;  // EOF without close_notify
    }
    if (error == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
      ERR_clear_error();  // EOF without close_notify: OpenSSL has made the session non-resumable
      break;
    }
    tlsresume::throw_openssl_error("HTTP response: SSL_read");
  }
  result.status = parse_status(head);
  return result;
}

/// The embedded server's side of one HTTP exchange: reads the request, answers 200 for "/" and
/// 404 for anything else, and closes with close_notify.
void serve_http(tlsresume::testing::ServerConnection& server) {
  SSL* ssl = server.native_handle();
  std::string request;
  std::array<char, 4096> buf{};
  while (request.find("\r\n\r\n") == std::string::npos) {
    const int r = SSL_read(ssl, buf.data(), static_cast<int>(buf.size()));
    if (r <= 0) {
      if (SSL_get_error(ssl, r) == SSL_ERROR_WANT_READ) {
        throw ProbeError("embedded server: incomplete HTTP request");
      }
      tlsresume::throw_openssl_error("embedded server: SSL_read");
    }
    request.append(buf.data(), static_cast<std::size_t>(r));
  }
  const bool root = request.starts_with("GET / ");
  const std::string body = root ? "tlsresume-probe embedded server\n" : "not found\n";
  const std::string response =
      fmt::format("HTTP/1.1 {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                  root ? "200 OK" : "404 Not Found", body.size(), body);
  ssl_write_all(ssl, response, "embedded server");
  server.shutdown();
}

// ---------------------------------------------------------------------------------------------
// Probing

struct Row {
  int n = 0;
  bool offered = false;
  bool resumed = false;
  std::optional<bool> server_resumed;  // embedded server only
  tlsresume::ProtocolVersion protocol = tlsresume::ProtocolVersion::unknown;
  std::string cipher;
  std::string alpn;  // negotiated, empty if none
  std::size_t tickets = 0;
  std::int64_t handshake_us = 0;
  std::string address;  // TCP only
  std::optional<HttpResult> http;
};

std::string selected_alpn(const ProbeClient& client) {
  const unsigned char* data = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(client.native_handle(), &data, &len);
  return data != nullptr ? std::string(reinterpret_cast<const char*>(data), len) : std::string();
}

void fill_from_client(Row& row, const ProbeClient& client) {
  row.resumed = client.session_reused();
  row.protocol = client.protocol_version();
  row.cipher = std::string(client.cipher_name());
  row.alpn = selected_alpn(client);
}

/// Sends close_notify. After the server closed first (HTTP), the transport may already be gone:
/// that is not a failure of this connection.
void close_cleanly(ProbeClient& client) {
  try {
    client.shutdown();
  } catch (const tlsresume::Error& e) {
    if (e.code() != tlsresume::errc::connection_closed) {
      throw;
    }
  }
}

struct Probe {
  const Options& options;
  ProbeContext& ctx;
  ProbeCache& cache;
  std::string name;    // SNI, verified name and cache-key host
  std::uint16_t port;  // cache-key port
};

Row probe_tcp(const Probe& p, int n) {
  Connection conn = connect_tcp(*p.options.target);  // outlives the client: closed after it
  ProbeClient client(p.ctx);
  Row row;
  row.n = n;
  row.address = conn.address;
  row.offered = client.resume_from(p.cache, p.ctx.key_for(p.name, p.port));
  client.set_fd(conn.socket.get());
  const auto start = std::chrono::steady_clock::now();
  if (client.connect() != tlsresume::IoStatus::done) {
    throw ProbeError(fmt::format("TLS handshake: no answer within {} s", io_timeout.count()));
  }
  row.handshake_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count();
  fill_from_client(row, client);
  if (p.options.http_path) {
    row.http = http_get(client, *p.options.http_path, http_host(p.name, p.port), [] {});
  } else {
    client.await_tickets(ticket_wait, tickets_wanted);  // TLS 1.3 tickets come after the handshake
  }
  row.tickets = client.sessions_received();
  if (!row.http || row.http->clean_close) {
    close_cleanly(client);
  }
  return row;
}

Row probe_embedded(const Probe& p, tlsresume::testing::LocalServer& server, int n) {
  ProbeClient client(p.ctx);
  Row row;
  row.n = n;
  row.offered = client.resume_from(p.cache, p.ctx.key_for(p.name, p.port));
  // Both sides run in this thread: the time includes the server's share of the handshake.
  const auto start = std::chrono::steady_clock::now();
  auto server_side = server.handshake(client);
  row.handshake_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count();
  fill_from_client(row, client);
  row.server_resumed = server_side.session_reused();
  if (p.options.http_path) {
    row.http = http_get(client, *p.options.http_path, http_host(p.name, p.port), [&] { serve_http(server_side); });
  } else {
    client.await_tickets(ticket_wait, tickets_wanted);  // on a memory BIO: what is buffered
  }
  row.tickets = client.sessions_received();
  close_cleanly(client);
  server_side.shutdown();
  return row;
}

// ---------------------------------------------------------------------------------------------
// Sessions file: every use of <tlsresume/persist.hpp> is in these two functions.

struct LoadResult {
  bool file_existed = false;
  std::size_t loaded = 0;
  std::size_t expired = 0;
};

#if TLSRESUME_PROBE_HAS_PERSIST
/// "<what> FILE: <error>", without repeating FILE when the error starts with it (PersistError).
ProbeError file_error(std::string_view what, const std::filesystem::path& file, const std::exception& e) {
  const std::string name = file.string();
  const std::string_view message = e.what();
  if (message.starts_with(name + ":")) {
    return ProbeError(fmt::format("{} {}", what, message));
  }
  return ProbeError(fmt::format("{} {}: {}", what, name, message));
}

std::optional<tlsresume::EncryptionKey> read_key_file(const Options& o) {
  if (!o.key_file) {
    return std::nullopt;
  }
  try {
    return tlsresume::EncryptionKey::from_file(*o.key_file);
  } catch (const std::exception& e) {
    throw file_error("key file", *o.key_file, e);
  }
}

LoadResult load_session_file(ProbeCache& cache, const ProbeContext& ctx, const Options& o) {
  LoadResult result;
  std::error_code ec;
  if (!std::filesystem::exists(*o.sessions, ec)) {
    return result;  // a first run: start empty
  }
  result.file_existed = true;
  const auto key = read_key_file(o);
  tlsresume::LoadOptions options;
  if (key) {
    options.keys = std::span<const tlsresume::EncryptionKey>(&*key, 1);
  }
  try {
    const auto report = tlsresume::load_sessions(cache, ctx, *o.sessions, options);
    result.loaded = report.loaded;
    result.expired = report.expired;
  } catch (const std::exception& e) {
    throw file_error("sessions file", *o.sessions, e);
  }
  return result;
}

std::size_t save_session_file(const ProbeCache& cache, const Options& o) {
  const auto key = read_key_file(o);
  tlsresume::SaveOptions options;
  options.key = key ? &*key : nullptr;
  try {
    return tlsresume::save_sessions(cache, *o.sessions, options).saved;
  } catch (const std::exception& e) {
    throw file_error("saving the sessions file", *o.sessions, e);
  }
}
#else
LoadResult load_session_file(ProbeCache&, const ProbeContext&, const Options&) {
  throw ProbeError("--sessions: not available in this build");
}
std::size_t save_session_file(const ProbeCache&, const Options&) {
  throw ProbeError("--sessions: not available in this build");
}
#endif

// ---------------------------------------------------------------------------------------------
// Output

std::string_view yes_no(bool b) { return b ? "yes" : "no"; }

void print_header(const Options& o) {
  fmt::print("{:>3}  {:<8} {:<30} {:<7} {:<7} {:>7} {:>12}", "n", "protocol", "cipher", "resumed", "offered", "tickets",
             "handshake µs");
  if (!o.alpn.empty()) {
    fmt::print("  {:<10}", "alpn");
  }
  if (o.http_path) {
    fmt::print("  {:>4}", "http");
  }
  fmt::print("\n");
}

void print_row(const Options& o, const Row& r, std::string_view name) {
  if (o.json) {
    std::string line = fmt::format(
        R"({{"n":{},"resumed":{},"offered":{},"protocol":{},"cipher":{},"handshake_us":{},"tickets_received":{},)"
        R"("server_name":{},"alpn":{})",
        r.n, r.resumed, r.offered, json_string(tlsresume::to_string(r.protocol)), json_string(r.cipher),
        r.handshake_us, r.tickets, json_string(name), r.alpn.empty() ? std::string("null") : json_string(r.alpn));
    if (r.server_resumed) {
      line += fmt::format(R"(,"server_resumed":{})", *r.server_resumed);
    }
    if (!r.address.empty()) {
      line += fmt::format(R"(,"address":{})", json_string(r.address));
    }
    if (r.http) {
      line += fmt::format(R"(,"http_status":{},"http_bytes":{},"http_clean_close":{})", r.http->status, r.http->bytes,
                          r.http->clean_close);
    }
    line += "}\n";
    fmt::print("{}", line);
    return;
  }
  fmt::print("{:>3}  {:<8} {:<30} {:<7} {:<7} {:>7} {:>12}", r.n, r.protocol, r.cipher, yes_no(r.resumed),
             yes_no(r.offered), r.tickets, r.handshake_us);
  if (!o.alpn.empty()) {
    fmt::print("  {:<10}", r.alpn.empty() ? "-" : r.alpn);
  }
  if (r.http) {
    fmt::print("  {:>4}", r.http->status);
  }
  fmt::print("\n");
}

struct Summary {
  int connections = 0;  // that succeeded
  int resumed = 0;
  int offered = 0;
  bool failed = false;
  std::optional<LoadResult> loaded;
  std::optional<std::size_t> saved;
};

/// The cache's counters as a JSON object, made from the library's own formatter
/// ("hits=2 misses=1 ..."), so that every counter it prints is here too.
std::string cache_stats_json(const tlsresume::CacheStats& stats) {
  const std::string text = fmt::format("{}", stats);
  std::string out = "{";
  std::string_view rest = text;
  while (!rest.empty()) {
    const auto space = rest.find(' ');
    const std::string_view field = rest.substr(0, space);
    rest = space == std::string_view::npos ? std::string_view() : rest.substr(space + 1);
    const auto eq = field.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      continue;
    }
    const std::string_view value = field.substr(eq + 1);
    const bool number = !value.empty() && std::all_of(value.begin(), value.end(), [](char ch) {
      return ch >= '0' && ch <= '9';
    });
    out += fmt::format("{}{}:{}", out.size() > 1 ? "," : "", json_string(field.substr(0, eq)),
                       number ? std::string(value) : json_string(value));
  }
  out += '}';
  return out;
}

void print_summary(const Options& o, const Summary& s, const ProbeCache& cache) {
  const tlsresume::CacheStats stats = cache.stats();
  if (o.json) {
    std::string line = fmt::format(R"({{"summary":true,"connections":{},"resumed":{},"offered":{},"failed":{})",
                                   s.connections, s.resumed, s.offered, s.failed);
    if (s.loaded) {
      line += fmt::format(R"(,"sessions_file_existed":{},"sessions_loaded":{},"sessions_expired":{})",
                          s.loaded->file_existed, s.loaded->loaded, s.loaded->expired);
    }
    if (s.saved) {
      line += fmt::format(R"(,"sessions_saved":{})", *s.saved);
    }
    line += fmt::format(R"(,"cache":{}}})", cache_stats_json(stats));
    fmt::print("{}\n", line);
    return;
  }
  fmt::print("{} connection{}, {} resumed, {} offered a session{}\n", s.connections, s.connections == 1 ? "" : "s",
             s.resumed, s.offered, s.failed ? "; the next one failed" : "");
  fmt::print("cache: {}\n", stats);
  if (s.saved) {
    fmt::print("sessions: saved {} to {}\n", *s.saved, o.sessions->string());
  }
}

// ---------------------------------------------------------------------------------------------

int run(const Options& o) {
  // A server that closes first must not kill us with SIGPIPE on the write of our close_notify.
  std::signal(SIGPIPE, SIG_IGN);

  const std::string name = o.server_name ? *o.server_name : o.target ? o.target->host : std::string("localhost");
  const std::uint16_t port = o.target ? o.target->port : embedded_port;

  // One context, configured completely before any key is made (keys carry its fingerprint).
  auto ctx = ProbeContext::create();  // TLS >= 1.2, SSL_VERIFY_PEER, the system trust store
  if (o.version) {
    ctx.set_protocol_range(*o.version, *o.version);
  }
  std::optional<tlsresume::testing::LocalServer> server;
  if (!o.target) {
    tlsresume::testing::ServerOptions server_options;
    // The certificate names the server name (an IP literal is in its SANs already).
    if (!is_ip_literal(name)) {
      server_options.host = name;
    }
    if (!o.alpn.empty()) {
      server_options.alpn = o.alpn.front();
    }
    server.emplace(server_options);
    ctx.add_trusted_certificate(server->ca_certificate());
  }
  if (o.cafile) {
    ctx.load_verify_file(*o.cafile);
  }
  if (!o.alpn.empty()) {
    const std::vector<std::string_view> views(o.alpn.begin(), o.alpn.end());
    ctx.set_alpn_protocols(std::span<const std::string_view>(views));
  }
  ProbeCache cache;
  const tlsresume::PeerKey key = ctx.key_for(name, port);  // validates the name before any connection

  Summary summary;
  if (o.sessions) {
    summary.loaded = load_session_file(cache, ctx, o);
  }
  if (!o.json) {
    fmt::print("probing {} as {} (key {})\n",
               o.target ? host_port(o.target->host, o.target->port) : std::string("the embedded server (in memory)"),
               name, key.to_string());
    if (summary.loaded) {
      if (summary.loaded->file_existed) {
        fmt::print("sessions: loaded {} ({} expired) from {}\n", summary.loaded->loaded, summary.loaded->expired,
                   o.sessions->string());
      } else {
        fmt::print("sessions: {} does not exist yet; starting empty\n", o.sessions->string());
      }
    }
    print_header(o);
  }

  const Probe probe{o, ctx, cache, name, port};
  for (int n = 1; n <= o.count; ++n) {
    try {
      const Row row = server ? probe_embedded(probe, *server, n) : probe_tcp(probe, n);
      print_row(o, row, name);
      ++summary.connections;
      summary.resumed += row.resumed ? 1 : 0;
      summary.offered += row.offered ? 1 : 0;
    } catch (const std::exception& e) {
      ERR_clear_error();
      const std::string where = o.target ? host_port(o.target->host, o.target->port) : std::string("embedded server");
      const std::string message = one_line(e.what());
      std::fflush(stdout);
      fmt::print(stderr, "{}: connection {} of {} to {} (server name {}): {}\n", program, n, o.count, where, name,
                 message);
      if (o.json) {
        fmt::print("{{\"n\":{},\"error\":{}}}\n", n, json_string(message));
      }
      summary.failed = true;
      break;
    }
  }
  if (o.sessions) {
    summary.saved = save_session_file(cache, o);  // only verified sessions are in the cache
  }
  print_summary(o, summary, cache);
  std::fflush(stdout);
  return summary.failed ? 1 : 0;
}

}  // namespace

int main(int argc, char* argv[]) {
  Options options;
  try {
    options = parse_options(std::span<char* const>(argv + 1, argc > 0 ? static_cast<std::size_t>(argc - 1) : 0));
  } catch (const UsageError& e) {
    fmt::print(stderr, "{}: {}\n{}", program, e.what(), usage());
    return 2;
  }
  if (options.help) {
    fmt::print("{}", usage());
    return 0;
  }
  try {
    return run(options);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "{}: {}\n", program, one_line(e.what()));
    return 1;
  }
}
