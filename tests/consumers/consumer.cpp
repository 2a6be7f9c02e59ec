// A program that uses an installed tlsresume: a full and then a resumed TLS handshake with an
// in-process server, through a SessionCache. Exits 0 only if the first handshake was full and the
// second resumed, as both the client and the server report.
#include <tlsresume/testing.hpp>  // LocalServer: a TLS server over an in-memory BIO pair
#include <tlsresume/tlsresume.hpp>

#include <chrono>
#include <exception>
#include <iostream>

struct Consumer {};  // names this client configuration

int main() try {
  tlsresume::testing::LocalServer server;  // its own CA and certificate for "localhost"
  auto ctx = tlsresume::Context<Consumer>::create();
  ctx.add_trusted_certificate(server.ca_certificate());
  tlsresume::SessionCache<Consumer> cache;

  bool ok = true;
  for (const bool expect_resumed : {false, true}) {
    tlsresume::Client<tlsresume::Context<Consumer>> client(ctx);
    client.resume_from(cache, ctx.key_for("localhost", 443));  // offers a cached session, if any
    auto server_side = server.handshake(client);
    client.await_tickets(std::chrono::milliseconds(100));  // TLS 1.3 tickets come after the handshake
    const bool client_resumed = client.session_reused();
    const bool server_resumed = server_side.session_reused();  // the server's SSL_session_reused
    std::cout << (expect_resumed ? "second" : "first") << " handshake: "
              << tlsresume::to_string(client.protocol_version()) << ", client resumed: "
              << (client_resumed ? "yes" : "no") << ", server resumed: " << (server_resumed ? "yes" : "no") << '\n';
    ok = ok && client_resumed == expect_resumed && server_resumed == expect_resumed;
    client.shutdown();
    server_side.shutdown();
  }
  std::cout << "tlsresume " << TLSRESUME_VERSION_MAJOR << '.' << TLSRESUME_VERSION_MINOR << '.'
            << TLSRESUME_VERSION_PATCH << ": " << (ok ? "full, then resumed: OK" : "FAILED") << std::endl;
  return ok ? 0 : 1;
} catch (const std::exception& e) {
  std::cerr << "consumer: " << e.what() << '\n';
  return 1;
}
