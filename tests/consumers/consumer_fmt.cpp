// consumer.cpp with {fmt}: <tlsresume/fmt.hpp> formats protocol versions, sessions and cache
// counters. Exits 0 only if the first handshake was full and the second resumed, as both the
// client and the server report.
#include <fmt/format.h>
#include <tlsresume/fmt.hpp>
#include <tlsresume/testing.hpp>
#include <tlsresume/tlsresume.hpp>

#include <chrono>
#include <cstdio>
#include <exception>

struct Consumer {};

int main() try {
  tlsresume::testing::LocalServer server;
  auto ctx = tlsresume::Context<Consumer>::create();
  ctx.add_trusted_certificate(server.ca_certificate());
  tlsresume::SessionCache<Consumer> cache;

  bool ok = true;
  for (const bool expect_resumed : {false, true}) {
    tlsresume::Client<tlsresume::Context<Consumer>> client(ctx);
    client.resume_from(cache, ctx.key_for("localhost", 443));
    auto server_side = server.handshake(client);
    client.await_tickets(std::chrono::milliseconds(100));
    const bool client_resumed = client.session_reused();
    const bool server_resumed = server_side.session_reused();
    fmt::print("{} handshake: {}, client resumed: {}, server resumed: {}\n", expect_resumed ? "second" : "first",
               client.protocol_version(), client_resumed, server_resumed);
    if (const auto session = client.session()) {
      fmt::print("  session: {}\n", *session);
    }
    ok = ok && client_resumed == expect_resumed && server_resumed == expect_resumed;
    client.shutdown();
    server_side.shutdown();
  }
  fmt::print("cache: {}\n", cache.stats());
  fmt::print("tlsresume {}.{}.{} with fmt {}: {}\n", TLSRESUME_VERSION_MAJOR, TLSRESUME_VERSION_MINOR,
             TLSRESUME_VERSION_PATCH, FMT_VERSION, ok ? "full, then resumed: OK" : "FAILED");
  return ok ? 0 : 1;
} catch (const std::exception& e) {
  fmt::print(stderr, "consumer_fmt: {}\n", e.what());
  return 1;
}
