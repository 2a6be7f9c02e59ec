// bench/redis: resumed connections with the fleet store (<tlsresume/redis.hpp>) against the
// in-memory SessionCache, on one thread, against a redis-server this program starts on
// 127.0.0.1 (a free port, no persistence) and stops.
//
// Per resumed TLS 1.3 connection (a LocalServer over an in-memory BIO pair; ECDSA P-256):
//   client CPU   thread CPU time of the client's work: resume_from (the take: local cache, or a
//                Redis round trip + AES-GCM open + d2i_SSL_SESSION), SSL_connect, and reading the
//                ticket the server sends (filing it: a local put, or i2d + AES-GCM seal + a Redis
//                round trip). The server's handshake work, interleaved on the same thread, is not
//                counted.
//   wall         the whole connection, server included, Redis round-trip latency included
//   round trips  Redis request/reply exchanges per connection (RedisStore's counter)
// Designs, measured in alternation, round by round:
//   memory       SessionCache<Tag> (ThreadSafePolicy): no Redis
//   fleet-shared FleetSessionCache, local_tickets_per_peer = 0: every ticket goes through Redis
//                (the worst case: each connection takes one and publishes one)
//   fleet-default FleetSessionCache with FleetPolicy (one ticket per peer kept locally)
// A benchmark fails only when its results are not sane: a connection that did not resume (by
// the server's word), a store error, an OpenSSL error left in the queue. No timing is asserted.
//
//   redis [--connections N] [--rounds R] [--redis-server PATH] [--json PATH|-] [--quick]

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <tlsresume/redis.hpp>
#include <tlsresume/testing.hpp>
#include <tlsresume/tlsresume.hpp>

#include "common.hpp"
#include "redis_server.hpp"

namespace {

using namespace std::chrono_literals;
struct Api {};
using Ctx = tlsresume::Context<Api>;
using Client = tlsresume::Client<Ctx>;

struct SharedPolicy {
  using local_policy = tlsresume::ThreadSafePolicy;
  static constexpr std::size_t local_tickets_per_peer = 0;
  static constexpr std::size_t max_published_per_peer = 16;
  static constexpr std::size_t max_discards_per_take = 4;
};

/// Samples of one design.
struct Samples {
  std::string name;
  std::vector<double> cpu_us;
  std::vector<double> wall_us;
  std::uint64_t round_trips = 0;
  std::size_t connections = 0;
};

/// One connection through `cache`; returns whether the server resumed it, and adds its costs.
template <class Cache>
bool connect_once(const Ctx& ctx, Cache& cache, tlsresume::testing::LocalServer& server, const tlsresume::PeerKey& key,
                  Samples* out) {
  const auto wall0 = bench::wall_ns();
  Client client(ctx);
  auto cpu0 = bench::thread_cpu_ns();
  client.resume_from(cache, key);
  std::int64_t cpu = bench::thread_cpu_ns() - cpu0;
  auto conn = server.handshake(client);
  cpu += conn.client_handshake_cpu().count();
  cpu0 = bench::thread_cpu_ns();
  (void)client.await_tickets(0ms, 1);
  cpu += bench::thread_cpu_ns() - cpu0;
  const bool reused = conn.session_reused();
  client.shutdown();
  conn.shutdown();
  if (out != nullptr) {
    out->cpu_us.push_back(static_cast<double>(cpu) / 1000.0);
    out->wall_us.push_back(static_cast<double>(bench::wall_ns() - wall0) / 1000.0);
    ++out->connections;
  }
  return reused;
}

void print(const Samples& s) {
  std::printf("%-14s client CPU median %7.1f us  p90 %7.1f us   wall median %7.1f us   Redis round trips/connection %.2f\n",
              s.name.c_str(), bench::median(s.cpu_us), bench::quantile(s.cpu_us, 0.9), bench::median(s.wall_us),
              s.connections == 0 ? 0.0 : static_cast<double>(s.round_trips) / static_cast<double>(s.connections));
}

}  // namespace

int main(int argc, char** argv) try {
  bench::Args args(argc, argv);
  const bool quick = args.flag("quick");
  const auto connections = static_cast<std::size_t>(args.number("connections", quick ? 20 : 500));
  const auto rounds = static_cast<std::size_t>(args.number("rounds", quick ? 2 : 5));
  const std::string redis_binary = args.value("redis-server");
  const std::string json_path = args.value("json");
  args.finish();

  redis_test::RedisServerOptions ro;
  ro.binary = redis_binary;
  redis_test::RedisServer redis(ro);
  tlsresume::testing::LocalServer server;
  auto ctx = Ctx::create();
  ctx.add_trusted_certificate(server.ca_certificate());
  const auto key = ctx.key_for("localhost", 443);
  tlsresume::EncryptionKey fleet_key;
  if (RAND_bytes(reinterpret_cast<unsigned char*>(fleet_key.bytes.data()), 32) != 1) {
    throw std::runtime_error("RAND_bytes");
  }
  tlsresume::RedisOptions options;
  options.host = redis.host();
  options.port = redis.port();
  auto store = std::make_shared<tlsresume::RedisStore>(options);

  tlsresume::SessionCache<Api> memory;
  tlsresume::FleetSessionCache<Api, tlsresume::RedisStore, SharedPolicy> shared(ctx, store, {&fleet_key, 1});
  tlsresume::FleetSessionCache<Api> fleet(ctx, store, {&fleet_key, 1});

  Samples s_memory{"memory", {}, {}, 0, 0};
  Samples s_shared{"fleet-shared", {}, {}, 0, 0};
  Samples s_default{"fleet-default", {}, {}, 0, 0};
  std::size_t not_resumed = 0;
  auto run = [&](auto& cache, Samples& s) {
    // Warm: the first connection of a design is a full handshake (not measured).
    (void)connect_once(ctx, cache, server, key, nullptr);
    const auto before = store->stats().round_trips;
    for (std::size_t i = 0; i < connections / rounds + 1; ++i) {
      not_resumed += connect_once(ctx, cache, server, key, &s) ? 0 : 1;
    }
    s.round_trips += store->stats().round_trips - before;
  };
  for (std::size_t r = 0; r < rounds; ++r) {
    run(memory, s_memory);
    run(shared, s_shared);
    run(fleet, s_default);
  }
  const auto st = store->stats();
  std::printf("resumed TLS 1.3 connections, %zu per design, redis-server on 127.0.0.1:%u (timeout %lld ms)\n",
              s_memory.connections, static_cast<unsigned>(redis.port()), static_cast<long long>(options.timeout.count()));
  print(s_memory);
  print(s_shared);
  print(s_default);
  const auto fs = shared.stats();
  std::printf("fleet-shared: %llu taken from Redis, %llu published; fleet-default: %llu local hits, %llu from Redis; "
              "%llu Redis connection(s) opened\n",
              static_cast<unsigned long long>(fs.remote_tickets), static_cast<unsigned long long>(fs.published),
              static_cast<unsigned long long>(fleet.stats().local_hits),
              static_cast<unsigned long long>(fleet.stats().remote_tickets),
              static_cast<unsigned long long>(st.connections));

  // Where the difference goes: sealing and opening one value (i2d + AES-GCM; AES-GCM + d2i), and
  // d2i_SSL_SESSION alone.
  std::vector<double> seal_us;
  std::vector<double> open_us;
  std::vector<double> d2i_us;
  {
    Client client(ctx);
    client.set_server_name("localhost");
    auto conn = server.handshake(client);
    (void)client.await_tickets(0ms, 2);
    client.shutdown();
    conn.shutdown();
    auto ticket = ctx.take_recent_session("localhost");
    if (!ticket) {
      throw std::runtime_error("no ticket to measure");
    }
    const auto material = tlsresume::detail::derive_fleet_key(fleet_key);
    const auto names = tlsresume::detail::fleet_names("tlsresume:", material, key);
    const auto der = ticket->to_der();
    const auto expiry = std::chrono::system_clock::now() + 1h;
    for (int i = 0; i < (quick ? 20 : 500); ++i) {
      auto t0 = bench::thread_cpu_ns();
      const std::string value =
          tlsresume::detail::seal_fleet_value(material, names.tickets, ticket->native_handle(), expiry, expiry - 2h);
      auto t1 = bench::thread_cpu_ns();
      tlsresume::detail::OpenedFleetValue opened;
      const auto status = tlsresume::detail::open_fleet_value({&material, 1}, names.tickets, value, opened);
      auto t2 = bench::thread_cpu_ns();
      if (status != tlsresume::detail::FleetValueStatus::ok) {
        throw std::runtime_error("a sealed value did not open");
      }
      const auto* p = reinterpret_cast<const unsigned char*>(der.data());
      SSL_SESSION* parsed = d2i_SSL_SESSION(nullptr, &p, static_cast<long>(der.size()));
      auto t3 = bench::thread_cpu_ns();
      SSL_SESSION_free(parsed);
      seal_us.push_back(static_cast<double>(t1 - t0) / 1000.0);
      open_us.push_back(static_cast<double>(t2 - t1) / 1000.0);
      d2i_us.push_back(static_cast<double>(t3 - t2) / 1000.0);
    }
  }
  std::printf("per value (CPU, median): seal %.1f us (i2d + AES-256-GCM), open %.1f us (AES-256-GCM + d2i), "
              "of which d2i_SSL_SESSION alone %.1f us\n",
              bench::median(seal_us), bench::median(open_us), bench::median(d2i_us));

  if (!json_path.empty()) {
    bench::Json j;
    j.raw("{");
    j.key("connections_per_design").integer(static_cast<long long>(s_memory.connections)).raw(",");
    j.key("designs").raw("[");
    bool first = true;
    for (const Samples* s : {&s_memory, &s_shared, &s_default}) {
      if (!first) {
        j.raw(",");
      }
      first = false;
      j.raw("{");
      j.key("name").str(s->name).raw(",");
      j.key("client_cpu_us_median").num(bench::median(s->cpu_us)).raw(",");
      j.key("client_cpu_us_p90").num(bench::quantile(s->cpu_us, 0.9)).raw(",");
      j.key("wall_us_median").num(bench::median(s->wall_us)).raw(",");
      j.key("round_trips_per_connection")
          .num(s->connections == 0 ? 0.0 : static_cast<double>(s->round_trips) / static_cast<double>(s->connections));
      j.raw("}");
    }
    j.raw("],");
    j.key("seal_us_median").num(bench::median(seal_us)).raw(",");
    j.key("open_us_median").num(bench::median(open_us)).raw(",");
    j.key("d2i_us_median").num(bench::median(d2i_us));
    j.raw("}");
    bench::write_text(json_path, j.text());
  }

  // Sanity: every measured connection resumed, the store never failed, the queue is empty.
  if (not_resumed != 0 || st.errors != 0 || st.unavailable != 0 || ERR_peek_error() != 0) {
    std::fprintf(stderr, "redis bench: not sane: %zu connections not resumed, %llu store errors, %llu skipped\n",
                 not_resumed, static_cast<unsigned long long>(st.errors),
                 static_cast<unsigned long long>(st.unavailable));
    return 1;
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "redis bench: %s\n", e.what());
  return 1;
}
