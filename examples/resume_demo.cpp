// resume_demo: five TLS 1.3 and five TLS 1.2 connections to an embedded local server through a
// SessionCache, showing that every connection after the first resumes, as both the client and the
// server report, and what the cache counted.
//
//   resume_demo           a table
//   resume_demo --json    one JSON object per connection
//
// The server runs in this process and talks to the client over an in-memory BIO pair, with a
// certificate made at start: no network is needed.

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <string_view>

#include <tlsresume/fmt.hpp>
#include <tlsresume/testing.hpp>
#include <tlsresume/tlsresume.hpp>

namespace {

struct DemoTag {};  // names this client configuration; sessions carry it in their type
using DemoContext = tlsresume::Context<DemoTag>;
using DemoCache = tlsresume::SessionCache<DemoTag>;

struct Row {
  int connection;
  tlsresume::ProtocolVersion protocol;
  std::string cipher;
  bool resumed_client;
  bool resumed_server;
  double handshake_cpu_us;
};

Row connect_once(DemoContext& ctx, DemoCache& cache, tlsresume::testing::LocalServer& server, int n) {
  tlsresume::Client<DemoContext> client(ctx);
  // The key: peer name and port, and the context's configuration fingerprint. resume_from names
  // the server (SNI + verified name), offers a session from the cache if there is one (a TLS 1.3
  // ticket is handed out once; a TLS 1.2 session stays and is reused), and files the sessions
  // this connection receives under the same key.
  client.resume_from(cache, ctx.key_for("localhost", 443));
  auto server_side = server.handshake(client);
  // TLS 1.3 tickets arrive after the handshake: read them before closing.
  client.await_tickets(std::chrono::milliseconds(100));
  Row row{n,
          client.protocol_version(),
          std::string(client.cipher_name()),
          client.session_reused(),
          server_side.session_reused(),
          std::chrono::duration<double, std::micro>(server_side.client_handshake_cpu()).count()};
  client.shutdown();  // a clean close keeps the session resumable
  server_side.shutdown();
  return row;
}

}  // namespace

int main(int argc, char* argv[]) try {
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--json") {
      json = true;
    } else if (arg == "-h" || arg == "--help") {
      fmt::print("usage: {} [--json]\n", argv[0]);
      return 0;
    } else {
      fmt::print(stderr, "unknown argument: {}\n", arg);
      return 2;
    }
  }
  if (!json) {
    fmt::print("{:>4}  {:<8} {:<30} {:<15} {:<15} {:>14}\n", "conn", "protocol", "cipher", "resumed client",
               "resumed server", "client CPU µs");
  }
  int failures = 0;
  for (auto version : {tlsresume::ProtocolVersion::tls1_3, tlsresume::ProtocolVersion::tls1_2}) {
    tlsresume::testing::ServerOptions options;
    options.max_version = version;
    tlsresume::testing::LocalServer server(options);
    auto ctx = DemoContext::create();
    ctx.add_trusted_certificate(server.ca_certificate());
    DemoCache cache;
    for (int n = 1; n <= 5; ++n) {
      const Row r = connect_once(ctx, cache, server, n);
      const bool expected = n > 1;
      failures += (r.resumed_client != expected || r.resumed_server != expected) ? 1 : 0;
      if (json) {
        fmt::print(R"({{"connection":{},"protocol":"{}","cipher":"{}","resumed_client":{},"resumed_server":{},"handshake_cpu_us":{:.1f}}})"
                   "\n",
                   r.connection, r.protocol, r.cipher, r.resumed_client, r.resumed_server, r.handshake_cpu_us);
      } else {
        fmt::print("{:>4}  {:<8} {:<30} {:<15} {:<15} {:>14.0f}\n", r.connection, r.protocol, r.cipher,
                   r.resumed_client ? "yes" : "no", r.resumed_server ? "yes" : "no", r.handshake_cpu_us);
      }
    }
    if (!json) {
      fmt::print("      cache: {}\n", cache.stats());
    }
  }
  std::fflush(stdout);
  return failures == 0 ? 0 : 1;
} catch (const std::exception& e) {
  fmt::print(stderr, "resume_demo: {}\n", e.what());
  return 1;
}
