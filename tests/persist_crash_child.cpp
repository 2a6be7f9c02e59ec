// Helper process for tests/persist.cpp: a second process that saves and loads session files.
//
//   persist_crash_child save FILE N START [ITERATIONS]
//       Makes a real session (one TLS 1.3 handshake with a LocalServer) and copies of it under
//       N+2 keys. Prints "ready", then saves version START, START+1, ... (mod 3; version v holds
//       N+v records: the cache holds the sessions of the first N+v keys) to FILE in a loop,
//       printing "saved v" after each save returned, until killed or ITERATIONS saves were made.
//   persist_crash_child check FILE [KEYFILE]
//       Loads FILE (with the key of KEYFILE, if given) into a fresh cache and prints
//       "loaded=L expired=E refused=R pending=P". Prints "error: ..." and exits 2 if the file is
//       refused.
//
// Exit status: 0 on success, 1 on misuse or an unexpected error, 2 for a refused file.

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <tlsresume/cache.hpp>
#include <tlsresume/persist.hpp>
#include <tlsresume/testing.hpp>
#include <tlsresume/tlsresume.hpp>

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct ChildTag {};
using Ctx = tlsresume::Context<ChildTag>;

/// Room for thousands of peers, one ticket each.
struct BigPolicy {
  using lock_type = tlsresume::NoLock;
  using clock_type = std::chrono::system_clock;
  static constexpr std::size_t max_peers = 16384;
  static constexpr std::size_t max_tickets_per_peer = 1;
};
using BigCache = tlsresume::SessionCache<ChildTag, BigPolicy>;

int save_loop(const char* file, std::size_t n, unsigned start, long iterations) {
  using namespace std::chrono_literals;
  tlsresume::testing::ServerOptions options;
  options.tls13_tickets = 1;
  tlsresume::testing::LocalServer server(options);
  // No system trust store (loading it would dominate the start-up): only the server's CA.
  auto ctx = Ctx::adopt(SSL_CTX_new(TLS_client_method()));
  ctx.set_verify_peer(true);
  ctx.add_trusted_certificate(server.ca_certificate());

  // One real ticket, copied (SSL_SESSION_dup through Context::bind) into distinct objects.
  BigCache cache;
  {
    tlsresume::Client<Ctx> client(ctx);
    (void)client.resume_from(cache, ctx.key_for("localhost", 443));
    auto conn = server.handshake(client);
    client.await_tickets(0ms, 1);
    client.shutdown();
    conn.shutdown();
  }
  std::vector<tlsresume::UnboundSession> base;
  cache.for_each([&](const tlsresume::PeerKey&, const Ctx::session_type& s, auto) {
    base.push_back(tlsresume::UnboundSession::share(s.native_handle()));
  });
  if (base.size() != 1) {
    std::fprintf(stderr, "persist_crash_child: expected one session from the handshake\n");
    return 1;
  }
  (void)cache.erase(ctx.key_for("localhost", 443));
  // Version v of the file holds the sessions of keys[0, n + v): the cache is grown or shrunk to
  // that before each save.
  std::vector<tlsresume::PeerKey> keys;
  for (std::size_t i = 0; i < n + 2; ++i) {
    keys.push_back(ctx.key_for("host" + std::to_string(i) + ".example", 443));
  }
  std::size_t present = 0;
  auto resize = [&](std::size_t want) {
    for (; present > want; --present) {
      (void)cache.erase(keys[present - 1]);
    }
    for (; present < want; ++present) {
      if (!cache.put(keys[present], ctx.bind(base.front()))) {
        throw std::runtime_error("put refused");
      }
    }
  };
  resize(n + start % 3);
  std::printf("ready\n");
  std::fflush(stdout);
  for (long i = 0; iterations < 0 || i < iterations; ++i) {
    const unsigned v = (start + static_cast<unsigned>(i)) % 3;
    resize(n + v);
    const auto report = tlsresume::save_sessions(cache, file);
    if (report.saved != n + v) {
      std::fprintf(stderr, "persist_crash_child: saved %zu, expected %zu\n", report.saved, n + v);
      return 1;
    }
    std::printf("saved %u\n", v);
    std::fflush(stdout);
  }
  return 0;
}

int check(const char* file, const char* key_file) {
  auto ctx = Ctx::create();
  tlsresume::SessionCache<ChildTag> cache;
  std::vector<tlsresume::EncryptionKey> keys;
  if (key_file != nullptr) {
    keys.push_back(tlsresume::EncryptionKey::from_file(key_file));
  }
  tlsresume::LoadOptions options;
  options.keys = keys;
  try {
    const auto report = tlsresume::load_sessions(cache, ctx, file, options);
    std::printf("loaded=%zu expired=%zu refused=%zu pending=%zu\n", report.loaded, report.expired, report.refused,
                cache.stats().pending);
    return 0;
  } catch (const tlsresume::PersistError& e) {
    std::printf("error: %s\n", e.what());
    return 2;
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string_view mode = argc > 1 ? argv[1] : "";
    if (mode == "save" && (argc == 5 || argc == 6)) {
      return save_loop(argv[2], std::strtoul(argv[3], nullptr, 10), static_cast<unsigned>(std::strtoul(argv[4], nullptr, 10)),
                       argc == 6 ? std::strtol(argv[5], nullptr, 10) : -1);
    }
    if (mode == "check" && (argc == 3 || argc == 4)) {
      return check(argv[2], argc == 4 ? argv[3] : nullptr);
    }
    std::fprintf(stderr, "usage: %s save FILE N START [ITERATIONS] | check FILE [KEYFILE]\n", argv[0]);
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "persist_crash_child: %s\n", e.what());
    ERR_clear_error();
    return 1;
  }
}
