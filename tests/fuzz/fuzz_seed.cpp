// Writes the fuzz target's seed corpus: valid session files made from real sessions.
//
//   fuzz_seed CORPUS_DIR
//
// Real handshakes with in-process servers (TLS 1.3 tickets, TLS 1.2 tickets, TLS 1.2 session
// ids, with and without ALPN) fill a SessionCache through Client::resume_from; the cache is saved
// with save_sessions, plain and encrypted with the fuzz key, at several sizes. Each file is then
// loaded back (load_sessions into a fresh cache) to prove the seed is valid. Exit 0 on success.

#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include <tlsresume/persist.hpp>
#include <tlsresume/testing.hpp>
#include <tlsresume/tlsresume.hpp>

#include "fuzz_key.hpp"

namespace {

struct SeedTag {};
using Ctx = tlsresume::Context<SeedTag>;
using Cache = tlsresume::SessionCache<SeedTag>;

void connect(const Ctx& ctx, Cache& cache, tlsresume::testing::LocalServer& server, const tlsresume::PeerKey& key) {
  tlsresume::Client<Ctx> client(ctx);
  client.resume_from(cache, key);
  auto conn = server.handshake(client);
  client.await_tickets(std::chrono::milliseconds(0), 2);
  client.shutdown();
  conn.shutdown();
}

}  // namespace

int main(int argc, char* argv[]) try {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  using tlsresume::ProtocolVersion;
  struct Kind {
    const char* name;
    ProtocolVersion max;
    bool tickets;
    const char* alpn;
  };
  const std::vector<Kind> kinds{{"tls13", ProtocolVersion::tls1_3, true, ""},
                                {"tls13-alpn", ProtocolVersion::tls1_3, true, "h2"},
                                {"tls12-ticket", ProtocolVersion::tls1_2, true, ""},
                                {"tls12-id", ProtocolVersion::tls1_2, false, "http/1.1"}};
  const tlsresume::EncryptionKey key = fuzz::fixed_key();
  int written = 0;
  for (const Kind& kind : kinds) {
    tlsresume::testing::ServerOptions options;
    options.max_version = kind.max;
    options.tickets = kind.tickets;
    options.alpn = kind.alpn;
    tlsresume::testing::LocalServer server(options);
    auto ctx = Ctx::create();
    ctx.add_trusted_certificate(server.ca_certificate());
    if (*kind.alpn != '\0') {
      ctx.set_alpn_protocols({kind.alpn});
    }
    Cache cache;
    for (int peers : {1, 3}) {
      for (int p = 0; p < peers; ++p) {
        connect(ctx, cache, server, ctx.key_for("localhost", static_cast<std::uint16_t>(443 + p)));
      }
      for (bool encrypted : {false, true}) {
        const auto file = dir / (std::string(kind.name) + "-" + std::to_string(peers) + (encrypted ? "-enc" : "-plain"));
        tlsresume::SaveOptions save;
        save.key = encrypted ? &key : nullptr;
        const auto report = tlsresume::save_sessions(cache, file, save);
        Cache check;
        tlsresume::LoadOptions load;
        if (encrypted) {
          load.keys = std::span<const tlsresume::EncryptionKey>(&key, 1);
        }
        const auto loaded = tlsresume::load_sessions(check, ctx, file, load);
        if (report.saved == 0 || loaded.loaded != report.saved) {
          std::fprintf(stderr, "fuzz_seed: %s: saved %zu, loaded back %zu\n", file.c_str(), report.saved, loaded.loaded);
          return 1;
        }
        std::printf("seed %s: %zu records, %ju bytes\n", file.filename().c_str(), report.saved,
                    static_cast<std::uintmax_t>(report.bytes));
        ++written;
      }
    }
  }
  std::printf("%d seed files in %s\n", written, dir.c_str());
  return written > 0 ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "fuzz_seed: %s\n", e.what());
  return 1;
}
