// The fleet store against a real redis-server (started per test case on a free port): processes
// share tickets, each ticket is used once fleet-wide, and every fault (Redis stopped, paused,
// restarted, garbage values, wrong or rotated keys, expired entries, a server that is not Redis)
// costs at most the timeout, is counted and reported once, and sharing comes back by itself.
//
// Resumption is always confirmed by the server (`SSL_session_reused` on the server side). The
// `LocalServer` and the client `Context` are made before forking, so children share the server's
// ticket keys; each child makes its own `RedisStore`.

#include <netinet/in.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <csignal>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fleet_support.hpp"

namespace {

using namespace fleet_test;
using redis_test::RawRedis;
using redis_test::RedisServer;
using tlsresume::StoreEvent;
using tlsresume::StoreOutcome;

/// A Redis server, a TLS server, a client context trusting it and the peer key.
struct Env {
  Env() : Env(tlsresume::testing::ServerOptions{}) {}
  explicit Env(tlsresume::testing::ServerOptions server_options, RedisServer::Options redis_options = RedisServer::Options{})
      : redis(std::move(redis_options)), server(std::move(server_options)) {}
  RedisServer redis;
  LocalServer server;
  CtxA ctx = test::client_context_for(server);
  PeerKey key = ctx.key_for("localhost", 443);
  EncryptionKey k1 = random_key();
  RawRedis raw() const { return RawRedis(redis.host(), redis.port()); }
};

/// In a child: one connection (full, or resumed from what the store holds) whose tickets are all
/// published with `keys`. Returns how many were published.
std::size_t child_publishes(Env& env, std::vector<EncryptionKey> keys, std::size_t connections = 1) {
  Child child([&] {
    auto store = std::make_shared<RedisStore>(options_for(env.redis));
    Fleet fleet(env.ctx, store, keys);
    for (std::size_t i = 0; i < connections; ++i) {
      (void)connect_via(env.ctx, fleet, env.server, env.key);
    }
    return std::to_string(fleet.stats().published);
  });
  const std::string out = child.wait();
  REQUIRE(out.rfind("error", 0) != 0);
  return std::stoul(out);
}

/// In a child: one full handshake whose tickets live `lifetime` seconds (the server's session
/// timeout, sent as the ticket lifetime), each published. Returns how many were published.
std::size_t child_publishes_lifetime(Env& env, long lifetime) {
  Child child([&] {
    SSL_CTX_set_timeout(env.server.native_handle(), lifetime);
    while (env.ctx.take_recent_session("localhost")) {  // copies of the parent's: not ours to publish
    }
    auto store = std::make_shared<RedisStore>(options_for(env.redis));
    Fleet fleet(env.ctx, store, {&env.k1, 1});
    ClientA client(env.ctx);  // outside the cache: a full handshake, the tickets go to the context
    client.set_server_name("localhost");
    auto conn = env.server.handshake(client);
    (void)client.await_tickets(0ms, env.server.options().tls13_tickets);
    client.shutdown();
    conn.shutdown();
    std::size_t n = 0;
    while (auto t = env.ctx.take_recent_session("localhost")) {
      n += fleet.publish(env.key, *t) == StoreOutcome::stored ? 1 : 0;
    }
    return std::to_string(n);
  });
  const std::string out = child.wait();
  REQUIRE(out.rfind("error", 0) != 0);
  return std::stoul(out);
}

/// Takes every ticket `fleet` can get and offers each: returns {taken, resumed by the server}.
template <class F> std::pair<std::size_t, std::size_t> drain(Env& env, F& fleet) {
  std::size_t taken = 0;
  std::size_t resumed = 0;
  while (auto t = fleet.take_with_origin(env.key)) {
    ++taken;
    resumed += resumes(env.ctx, env.server, t->session) ? 1 : 0;
  }
  return {taken, resumed};
}

/// Cross-process sharing works: after a flush, a child publishes the tickets of one connection,
/// and a fresh fleet cache here on `store` takes exactly those, each resumed by the server.
bool sharing_works(Env& env, const std::shared_ptr<RedisStore>& store, const std::vector<EncryptionKey>& child_keys,
                   const std::vector<EncryptionKey>& my_keys, std::size_t* count = nullptr) {
  (void)env.raw().command({"FLUSHALL"});
  const std::size_t published = child_publishes(env, child_keys);
  Fleet fresh(env.ctx, store, my_keys);
  const auto [taken, resumed] = drain(env, fresh);
  if (count != nullptr) {
    *count = resumed;
  }
  return published >= 1 && taken == published && resumed == published;
}

/// Retries `sharing_works` for up to `limit`: the store must come back by itself.
bool sharing_comes_back(Env& env, const std::shared_ptr<RedisStore>& store, std::chrono::seconds limit = std::chrono::seconds(10)) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (sharing_works(env, store, {env.k1}, {env.k1})) {
      return true;
    }
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

using ms = std::chrono::milliseconds;
ms to_ms(std::chrono::steady_clock::duration d) { return std::chrono::duration_cast<ms>(d); }

}  // namespace

TEST_CASE("two processes share a store: A's tickets resume B's connections", "[redis][fleet]") {
  Env env;
  // A: ten full handshakes whose tickets are filed as a connection files them (`put`: with this
  // policy, all published), then ten connections through resume_from, which take from the store
  // and publish what they receive (OpenSSL sends one ticket after a resumption).
  Child a([&] {
    auto store = std::make_shared<RedisStore>(options_for(env.redis));
    Fleet fleet(env.ctx, store, {&env.k1, 1});
    while (env.ctx.take_recent_session("localhost")) {
    }
    for (int i = 0; i < 10; ++i) {
      ClientA client(env.ctx);
      client.set_server_name("localhost");
      auto conn = env.server.handshake(client);
      (void)client.await_tickets(0ms, 2);
      client.shutdown();
      conn.shutdown();
      while (auto t = env.ctx.take_recent_session("localhost")) {
        (void)fleet.put(env.key, std::move(*t));
      }
    }
    std::size_t resumed = 0;
    for (int i = 0; i < 10; ++i) {
      resumed += connect_via(env.ctx, fleet, env.server, env.key).server_reused ? 1 : 0;
    }
    const auto s = fleet.stats();
    return std::to_string(s.published) + " " + std::to_string(s.remote_tickets) + " " + std::to_string(resumed);
  });
  const auto a_out = words(a.wait());
  REQUIRE(a_out.size() == 3);
  const std::size_t published = std::stoul(a_out[0]);
  const std::size_t a_taken = std::stoul(a_out[1]);
  CHECK(std::stoul(a_out[2]) == 10);  // A's own connections resumed from the store
  CHECK(a_taken == 10);
  const std::size_t left = published - a_taken;
  REQUIRE(left == 20);
  REQUIRE(env.raw().integer({"LLEN", Fleet(env.ctx, store_for(env.redis), {&env.k1, 1}).names(env.key)[0].tickets}) ==
          static_cast<long long>(left));

  // B, another process: takes everything A left, each offered on its own connection.
  Child b([&] {
    auto store = std::make_shared<RedisStore>(options_for(env.redis));
    Fleet fleet(env.ctx, store, {&env.k1, 1});
    const auto [taken, resumed] = drain(env, fleet);
    // And through resume_from: a connection now finds nothing (a full handshake), the next
    // resumes from what that one published.
    const bool first = connect_via(env.ctx, fleet, env.server, env.key).server_reused;
    const bool second = connect_via(env.ctx, fleet, env.server, env.key).server_reused;
    return std::to_string(taken) + " " + std::to_string(resumed) + " " + std::to_string(first) + " " +
           std::to_string(second) + " " + std::to_string(env.server.resumed_handshakes());
  });
  const auto b_out = words(b.wait());
  REQUIRE(b_out.size() == 5);
  CHECK(std::stoul(b_out[0]) == left);
  CHECK(std::stoul(b_out[1]) == left);  // every one of A's tickets resumed a connection of B
  CHECK(b_out[2] == "0");
  CHECK(b_out[3] == "1");
  CHECK(std::stoul(b_out[4]) == left + 1);  // B's server copy confirms each
  std::printf("cross-process: A published %zu tickets (took back %zu); B resumed %s of %zu with them\n", published,
              a_taken, b_out[1].c_str(), left);
}

TEST_CASE("N tickets prefilled, 4 processes x 2 threads take concurrently: N in all, all distinct, each resumes",
          "[redis][fleet][concurrency]") {
  tlsresume::testing::ServerOptions so;
  so.tls13_tickets = 8;
  Env env(so);
  constexpr std::size_t n = 48;
  // Prefill: full handshakes outside the cache; their tickets are published one by one.
  std::set<std::string> prefilled;
  {
    auto store = store_for(env.redis);
    Fleet fleet(env.ctx, store, {&env.k1, 1});
    env.ctx.set_max_recent_sessions(64);
    while (prefilled.size() < n) {
      ClientA client(env.ctx);  // outside the cache: a full handshake, 8 tickets to the context
      client.set_server_name("localhost");
      auto conn = env.server.handshake(client);
      (void)client.await_tickets(0ms, 8);
      client.shutdown();
      conn.shutdown();
      while (auto s = env.ctx.take_recent_session("localhost")) {
        if (prefilled.size() < n && prefilled.insert(ticket_hex(s->native_handle())).second) {
          REQUIRE(fleet.publish(env.key, *s) == StoreOutcome::stored);
        }
      }
    }
    REQUIRE(env.raw().integer({"LLEN", fleet.names(env.key)[0].tickets}) == static_cast<long long>(n));
  }

  int barrier[2];
  REQUIRE(::pipe(barrier) == 0);
  std::vector<Child> children;
  for (int p = 0; p < 4; ++p) {
    children.emplace_back([&] {
      ::close(barrier[1]);
      auto store = patient_store_for(env.redis);
      Fleet fleet(env.ctx, store, {&env.k1, 1});
      char c;
      (void)::read(barrier[0], &c, 1);  // returns when the parent closes its end: all start together
      std::vector<std::vector<tlsresume::BoundSession<TagA>>> got(2);
      std::vector<std::thread> threads;
      for (auto& mine : got) {
        threads.emplace_back([&fleet, &env, &mine] {
          while (auto t = fleet.take_with_origin(env.key)) {
            mine.push_back(std::move(t->session));
          }
        });
      }
      for (auto& t : threads) {
        t.join();
      }
      std::string out = "store-errors=" + std::to_string(store->stats().errors) + " ";
      for (const auto& mine : got) {
        for (const auto& s : mine) {
          out += ticket_hex(s.native_handle()) + (resumes(env.ctx, env.server, s) ? ":1 " : ":0 ");
        }
      }
      return out;
    });
  }
  ::close(barrier[0]);
  ::close(barrier[1]);  // go
  std::vector<std::string> all;
  std::size_t resumed = 0;
  std::vector<std::size_t> per_process;
  for (Child& c : children) {
    const std::string out = c.wait();
    REQUIRE(out.rfind("error", 0) != 0);
    auto items = words(out);
    REQUIRE_FALSE(items.empty());
    CHECK(items.front() == "store-errors=0");  // a failed take (a timeout, a garbage reply) would lose a ticket
    items.erase(items.begin());
    per_process.push_back(items.size());
    for (const std::string& item : items) {
      all.push_back(item.substr(0, item.size() - 2));
      resumed += item.substr(item.size() - 2) == ":1" ? 1 : 0;
    }
  }
  const std::set<std::string> distinct(all.begin(), all.end());
  CHECK(all.size() == n);
  CHECK(distinct.size() == n);
  CHECK(distinct == prefilled);
  CHECK(resumed == n);
  std::printf("concurrent takes: %zu prefilled, taken %zu (%zu, %zu, %zu, %zu per process), distinct %zu, resumed %zu\n",
              n, all.size(), per_process[0], per_process[1], per_process[2], per_process[3], distinct.size(), resumed);
}

TEST_CASE("many threads of one process share a store: no ticket is offered twice", "[redis][fleet][concurrency]") {
  Env env;
  auto store = patient_store_for(env.redis);
  Fleet fleet(env.ctx, store, {&env.k1, 1});
  std::atomic<std::size_t> resumed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        resumed += connect_via(env.ctx, fleet, env.server, env.key).server_reused ? 1 : 0;
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  const auto offers = env.server.offers();
  CHECK(offers.offered_more_than_once == 0);
  CHECK(resumed.load() >= 50);  // all but the first few (which raced to an empty store)
  const auto s = fleet.stats();
  CHECK(s.store.errors == 0);
  CHECK(s.store.connections <= 4);
  std::printf("one process, 6 threads x 10 connections: %zu resumed, %zu tickets offered twice, %llu round trips\n",
              resumed.load(), offers.offered_more_than_once, static_cast<unsigned long long>(s.store.round_trips));
}

TEST_CASE("fault: Redis stopped and restarted mid-run", "[redis][fleet][fault]") {
  Env env;
  std::vector<StoreEvent> events;
  auto store = std::make_shared<RedisStore>(options_for(env.redis, &events));
  std::size_t before = 0;
  REQUIRE(sharing_works(env, store, {env.k1}, {env.k1}, &before));

  env.redis.stop();
  Fleet fleet(env.ctx, store, {&env.k1, 1});
  std::size_t resumed = 0;
  auto slowest = ms(0);
  for (int i = 0; i < 8; ++i) {
    const Conn c = connect_via(env.ctx, fleet, env.server, env.key);
    slowest = std::max(slowest, to_ms(c.elapsed));
    resumed += c.server_reused ? 1 : 0;
  }
  CHECK(slowest < ms(2000));
  // The tickets could not be published: they were kept locally, so this process still resumed.
  CHECK(resumed == 7);
  auto s = fleet.stats();
  CHECK(s.store.errors >= 1);
  CHECK(s.store.outages == 1);
  CHECK_FALSE(s.store.available);
  REQUIRE(events.size() == 1);  // reported once, not per connection
  CHECK_FALSE(events[0].available);
  CHECK(events[0].message.find("unavailable") != std::string::npos);

  env.redis.start();  // same port, empty
  CHECK(sharing_comes_back(env, store));
  REQUIRE(events.size() == 2);
  CHECK(events[1].available);
  CHECK(store->stats().recoveries == 1);
  std::printf("stop/restart: before %zu resumed cross-process; down: 8 connections, slowest %lld ms, %zu resumed "
              "locally, %llu errors, 1 report; sharing back after restart\n",
              before, static_cast<long long>(slowest.count()), resumed,
              static_cast<unsigned long long>(s.store.errors));
}

TEST_CASE("fault: Redis paused (SIGSTOP): connections finish within the timeout, sharing returns on SIGCONT",
          "[redis][fleet][fault]") {
  Env env;
  std::vector<StoreEvent> events;
  auto store = std::make_shared<RedisStore>(options_for(env.redis, &events));
  REQUIRE(store->options().timeout == ms(50));
  REQUIRE(sharing_works(env, store, {env.k1}, {env.k1}));
  REQUIRE(child_publishes(env, {env.k1}) >= 1);  // something to take once it is back

  env.redis.pause();
  Fleet fleet(env.ctx, store, {&env.k1, 1});
  auto slowest = ms(0);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i) {
    const Conn c = connect_via(env.ctx, fleet, env.server, env.key);
    slowest = std::max(slowest, to_ms(c.elapsed));
    std::this_thread::sleep_for(30ms);  // let the backoff pass now and then: probes hit the black hole
  }
  const auto total = to_ms(std::chrono::steady_clock::now() - start);
  CHECK(slowest < ms(2000));  // a hang check, not a benchmark
  const auto s = store->stats();
  CHECK(s.timeouts >= 1);
  CHECK(s.outages == 1);
  CHECK(events.size() == 1);

  env.redis.resume();
  CHECK(sharing_comes_back(env, store));
  CHECK(events.size() == 2);
  std::printf("SIGSTOP: 10 connections in %lld ms, slowest %lld ms (timeout 50 ms), %llu timeouts, %llu errors, "
              "1 report; sharing back after SIGCONT\n",
              static_cast<long long>(total.count()), static_cast<long long>(slowest.count()),
              static_cast<unsigned long long>(s.timeouts), static_cast<unsigned long long>(s.errors));
}

TEST_CASE("fault: garbage values are dropped and counted, and the take goes on", "[redis][fleet][fault]") {
  Env env;
  auto store = store_for(env.redis);
  REQUIRE(sharing_works(env, store, {env.k1}, {env.k1}));
  (void)env.raw().command({"FLUSHALL"});
  const std::size_t published = child_publishes(env, {env.k1});
  REQUIRE(published == 2);
  Fleet fleet(env.ctx, store, {&env.k1, 1});
  const auto names = fleet.names(env.key);
  auto raw = env.raw();
  // A real value with one byte flipped, a truncated one, random bytes, an empty string.
  const auto real = raw.string({"LINDEX", names[0].tickets, "0"});
  REQUIRE(real.has_value());
  std::string flipped = *real;
  flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x40);
  for (const std::string& g : {flipped, real->substr(0, real->size() / 2), std::string("\x01garbage\xff", 10),
                               std::string()}) {
    REQUIRE(raw.integer({"LPUSH", names[0].tickets, g}) > 0);
  }
  const auto [taken, resumed] = drain(env, fleet);
  CHECK(taken == 2);
  CHECK(resumed == 2);
  auto s = fleet.stats();
  CHECK(s.forged == 2);     // flipped, truncated
  CHECK(s.malformed == 2);  // random, empty
  CHECK(s.remote_tickets == 2);

  SECTION("garbage as the TLS 1.2 session, and a key of the wrong type") {
    REQUIRE(raw.string({"SET", names[0].session, "not a session"}).has_value());
    REQUIRE(raw.integer({"HSET", names[0].tickets, "f", "v"}) == 1);
    CHECK_FALSE(fleet.take_with_origin(env.key).has_value());
    CHECK(raw.integer({"EXISTS", names[0].session}) == 0);  // the bad session was removed
    CHECK(raw.integer({"EXISTS", names[0].tickets}) == 0);  // the hash was replaced... by nothing
    CHECK(fleet.stats().malformed == 3);
    CHECK(fleet.stats().store.errors == 0);
  }
  CHECK(sharing_works(env, store, {env.k1}, {env.k1}));
}

TEST_CASE("fault: a wrong fleet key shares nothing and its values are never used", "[redis][fleet][fault]") {
  Env env;
  auto store = store_for(env.redis);
  REQUIRE(sharing_works(env, store, {env.k1}, {env.k1}));
  const EncryptionKey k2 = random_key();

  SECTION("another key: other names, nothing found") {
    std::size_t resumed = 1;
    CHECK_FALSE(sharing_works(env, store, {k2}, {env.k1}, &resumed));
    CHECK(resumed == 0);
  }
  SECTION("values moved under our names: unknown key id, or a key with our id but other bytes") {
    EncryptionKey impostor = random_key();
    impostor.id = env.k1.identifier();
    Fleet mine(env.ctx, store, {&env.k1, 1});
    auto raw = env.raw();
    for (const EncryptionKey& other : {k2, impostor}) {
      (void)raw.command({"FLUSHALL"});
      REQUIRE(child_publishes(env, {other}) == 2);
      Fleet theirs(env.ctx, store_for(env.redis), {&other, 1});
      const std::string from = theirs.names(env.key)[0].tickets;
      const std::string to = mine.names(env.key)[0].tickets;
      if (from != to) {
        REQUIRE(raw.string({"RENAME", from, to}).has_value());
      }
      CHECK_FALSE(mine.take_with_origin(env.key).has_value());
    }
    const auto s = mine.stats();
    CHECK(s.unknown_key == 2);  // k2's values
    CHECK(s.forged == 2);       // the impostor's: same id, authentication fails
    CHECK(s.remote_tickets == 0);
  }
  CHECK(sharing_works(env, store, {env.k1}, {env.k1}));
}

namespace {
/// A fleet policy whose clock runs `Ahead` seconds ahead of the system clock.
template <int Ahead> struct AheadClock {
  static std::chrono::system_clock::time_point now() { return std::chrono::system_clock::now() + std::chrono::seconds(Ahead); }
};
struct AheadPolicy {
  struct local_policy {
    using lock_type = std::mutex;
    using clock_type = AheadClock<120>;
    static constexpr std::size_t max_peers = 64;
    static constexpr std::size_t max_tickets_per_peer = 4;
  };
  static constexpr std::size_t local_tickets_per_peer = 0;
  static constexpr std::size_t max_published_per_peer = 64;
  static constexpr std::size_t max_discards_per_take = 4;
};
}  // namespace

TEST_CASE("fault: expired entries are dropped and the take goes on; the list's TTL is its latest expiry",
          "[redis][fleet][fault]") {
  Env env;
  auto store = store_for(env.redis);
  REQUIRE(sharing_works(env, store, {env.k1}, {env.k1}));
  (void)env.raw().command({"FLUSHALL"});
  // Two long-lived tickets (7200 s), then two that live 60 s (newest, so first in the list).
  REQUIRE(child_publishes_lifetime(env, 7200) == 2);
  REQUIRE(child_publishes_lifetime(env, 60) == 2);
  tlsresume::FleetSessionCache<TagA, RedisStore, AheadPolicy> later(env.ctx, store, {&env.k1, 1});
  const std::string list = later.names(env.key)[0].tickets;
  auto raw = env.raw();
  REQUIRE(raw.integer({"LLEN", list}) == 4);
  const long long ttl = raw.integer({"PTTL", list});
  CHECK(ttl > 3600 * 1000);  // the latest expiry, not the newest value's
  CHECK(ttl <= 7200 * 1000);

  // 120 s later by this cache's clock: the two short-lived ones are popped and dropped first.
  auto t = later.take_with_origin(env.key);
  REQUIRE(t.has_value());
  CHECK(resumes(env.ctx, env.server, t->session));
  CHECK(later.stats().expired == 2);
  CHECK(raw.integer({"LLEN", list}) == 1);

  // A list of expired entries only: a miss, after dropping them all.
  (void)raw.command({"FLUSHALL"});
  REQUIRE(child_publishes_lifetime(env, 60) == 2);
  CHECK_FALSE(later.take_with_origin(env.key).has_value());
  CHECK(later.stats().expired == 4);
  CHECK(raw.integer({"EXISTS", list}) == 0);
  CHECK(sharing_works(env, store, {env.k1}, {env.k1}));
}

TEST_CASE("key rotation: {new, old} reads what old-key hosts wrote and writes with the new key", "[redis][fleet]") {
  Env env;
  auto store = store_for(env.redis);
  const EncryptionKey k_new = random_key();
  std::size_t resumed = 0;
  CHECK(sharing_works(env, store, {env.k1}, {k_new, env.k1}, &resumed));  // an old host writes, a new one reads
  CHECK(resumed == 2);
  CHECK(sharing_works(env, store, {k_new, env.k1}, {k_new}));            // a new host writes with the new key
  CHECK_FALSE(sharing_works(env, store, {k_new, env.k1}, {env.k1}));      // which a host with the old key only cannot see
  Fleet both(env.ctx, store, std::vector<EncryptionKey>{k_new, env.k1});
  CHECK(both.names(env.key).size() == 2);
  EncryptionKey same_id = random_key();
  same_id.id = k_new.identifier();
  CHECK_THROWS_AS(Fleet(env.ctx, store, std::vector<EncryptionKey>{k_new, same_id}), tlsresume::Error);
  CHECK_THROWS_AS(Fleet(env.ctx, store, std::vector<EncryptionKey>{}), tlsresume::Error);
}

TEST_CASE("fault: a server that is not Redis, or closes connections: misses within the timeout, counted, no crash",
          "[redis][fleet][fault]") {
  // A TCP listener on 127.0.0.1 that answers garbage (or closes at once) to whatever it reads.
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(listener >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(listener, 16) == 0);
  REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  std::atomic<int> mode{0};  // 0: garbage, 1: close at once
  std::atomic<bool> stop{false};
  std::thread garbage_server([&] {
    while (!stop) {
      pollfd p{listener, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) {
        continue;
      }
      const int fd = ::accept(listener, nullptr, nullptr);
      if (fd < 0) {
        continue;
      }
      if (mode == 0) {
        char buf[512];
        pollfd q{fd, POLLIN, 0};
        if (::poll(&q, 1, 500) > 0 && ::read(fd, buf, sizeof buf) > 0) {
          (void)!::write(fd, "HTTP/1.1 400 Bad Request\r\n\r\n", 28);
        }
      }
      ::close(fd);
    }
  });
  LocalServer server;
  CtxA ctx = test::client_context_for(server);
  const PeerKey key = ctx.key_for("localhost", 443);
  const EncryptionKey k = random_key();
  std::vector<StoreEvent> events;
  RedisOptions o;
  o.port = ntohs(addr.sin_port);
  o.min_backoff = 0ms;  // try every time: every operation meets the bad server
  o.max_backoff = 0ms;
  o.report = [&events](const StoreEvent& e) { events.push_back(e); };
  auto store = std::make_shared<RedisStore>(o);
  Fleet fleet(ctx, store, {&k, 1});
  for (int m : {0, 1}) {
    mode = m;
    auto slowest = ms(0);
    for (int i = 0; i < 5; ++i) {
      const Conn c = connect_via(ctx, fleet, server, key);
      slowest = std::max(slowest, to_ms(c.elapsed));
    }
    CHECK(slowest < ms(2000));
  }
  stop = true;
  garbage_server.join();
  ::close(listener);
  const auto s = fleet.stats();
  CHECK(s.store.errors >= 10);
  CHECK(s.store.outages == 1);
  CHECK(events.size() == 1);
  CHECK(s.remote_tickets == 0);
  CHECK(s.published == 0);
}

TEST_CASE("SIGPIPE: a write to a closed connection does not end a process that keeps the default action",
          "[redis][fleet][fault]") {
  Child child([] {
    std::signal(SIGPIPE, SIG_DFL);
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
      return std::string("error: socketpair");
    }
    ::close(sv[1]);
    ssize_t r = 0;
    int err = 0;
    {
      const tlsresume::detail::SigpipeGuard guard;
      r = ::write(sv[0], "x", 1);
      err = errno;
    }
    ::close(sv[0]);
    return std::string(r < 0 && err == EPIPE ? "alive" : "error: write did not fail with EPIPE");
  });
  CHECK(child.wait() == "alive");
}

TEST_CASE("connection options: unix socket, AUTH, ACL user, database, key prefix", "[redis][fleet][options]") {
  SECTION("unix socket, database 3, a prefix") {
    RedisServer::Options ro;
    ro.unix_socket = true;
    Env env(tlsresume::testing::ServerOptions{}, ro);
    RedisOptions o = options_for(env.redis);
    o.unix_socket = env.redis.unix_socket();
    o.host = "203.0.113.1";  // ignored when a unix socket is given
    o.database = 3;
    o.key_prefix = "myapp:tls:";
    auto store = std::make_shared<RedisStore>(o);
    Fleet a(env.ctx, store, {&env.k1, 1});
    (void)connect_via(env.ctx, a, env.server, env.key);  // publishes
    auto raw = env.raw();
    REQUIRE(raw.string({"SELECT", "3"}).has_value());
    const auto keys = raw.strings({"KEYS", "*"});
    REQUIRE(keys.size() == 1);
    CHECK(keys[0].rfind("myapp:tls:", 0) == 0);
    CHECK(keys[0] == a.names(env.key)[0].tickets);
    REQUIRE(raw.string({"SELECT", "0"}).has_value());
    CHECK(raw.integer({"DBSIZE"}) == 0);
    Fleet b(env.ctx, store, {&env.k1, 1});
    const auto [taken, resumed] = drain(env, b);
    CHECK(taken == 2);
    CHECK(resumed == 2);
  }
  SECTION("AUTH with a password; a wrong one is one reported outage") {
    RedisServer::Options ro;
    ro.extra_args = {"--requirepass", "s3cret"};
    Env env(tlsresume::testing::ServerOptions{}, ro);
    RedisOptions o = options_for(env.redis);
    o.password = "s3cret";
    auto store = std::make_shared<RedisStore>(o);
    Fleet a(env.ctx, store, {&env.k1, 1});
    (void)connect_via(env.ctx, a, env.server, env.key);
    CHECK(a.stats().published == 2);
    CHECK(drain(env, a).second == 2);

    std::vector<StoreEvent> events;
    RedisOptions wrong = options_for(env.redis, &events);
    wrong.password = "nope";
    Fleet c(env.ctx, std::make_shared<RedisStore>(wrong), {&env.k1, 1});
    (void)connect_via(env.ctx, c, env.server, env.key);
    (void)connect_via(env.ctx, c, env.server, env.key);
    CHECK(c.stats().published == 0);
    REQUIRE(events.size() == 1);
    CHECK(events[0].message.find("AUTH failed") != std::string::npos);
    CHECK(events[0].message.find("nope") == std::string::npos);
  }
  SECTION("ACL user and password") {
    RedisServer::Options ro;
    ro.extra_args = {"--requirepass", "admin-pass"};
    Env env(tlsresume::testing::ServerOptions{}, ro);
    {
      RawRedis raw(env.redis.host(), env.redis.port());
      REQUIRE(raw.string({"AUTH", "admin-pass"}).has_value());
      REQUIRE(raw.string({"ACL", "SETUSER", "fleet", "on", ">fleet-pass", "~tlsresume:*", "+@read", "+@write",
                          "+@scripting", "+ping", "+time"}) ==
              std::optional<std::string>("OK"));
    }
    RedisOptions o = options_for(env.redis);
    o.user = "fleet";
    o.password = "fleet-pass";
    auto store = std::make_shared<RedisStore>(o);
    Fleet a(env.ctx, store, {&env.k1, 1});
    (void)connect_via(env.ctx, a, env.server, env.key);
    CHECK(a.stats().published == 2);
    CHECK(drain(env, a).second == 2);
    CHECK(store->stats().errors == 0);
  }
}

TEST_CASE("TLS 1.2: a session read from the store is kept locally and reused; veto deletes it",
          "[redis][fleet][tls12]") {
  Env env(test::server_options(tlsresume::ProtocolVersion::tls1_2));
  auto store = store_for(env.redis);
  REQUIRE(child_publishes(env, {env.k1}) == 1);  // SET: one TLS 1.2 session
  Fleet fleet(env.ctx, store, {&env.k1, 1});
  const auto names = fleet.names(env.key);
  const auto before = store->stats().round_trips;
  for (int i = 0; i < 5; ++i) {
    auto t = fleet.take_with_origin(env.key);
    REQUIRE(t.has_value());
    CHECK(t->session.protocol_version() == tlsresume::ProtocolVersion::tls1_2);
    CHECK(resumes(env.ctx, env.server, t->session));
  }
  const auto s = fleet.stats();
  CHECK(s.remote_sessions == 1);
  CHECK(s.local_hits == 4);
  CHECK(store->stats().round_trips - before == 1);  // one read, then local
  auto raw = env.raw();
  CHECK(raw.integer({"EXISTS", names[0].session}) == 1);  // reusable: it stays for the fleet
  CHECK(raw.integer({"PTTL", names[0].session}) > 0);
  CHECK(fleet.veto(env.key) == 1);
  CHECK(raw.integer({"EXISTS", names[0].session}) == 0);
  CHECK_FALSE(fleet.take_with_origin(env.key).has_value());
}

TEST_CASE("no downgrade, fleet-wide: a full TLS 1.3 handshake or a published ticket deletes the peer's TLS 1.2 session",
          "[redis][fleet][tls12]") {
  Env env;
  auto store = store_for(env.redis);
  DefaultFleet fleet(env.ctx, store, {&env.k1, 1});
  const auto names = fleet.names(env.key);
  auto raw = env.raw();
  const auto sink = fleet.attach(env.ctx.id());
  REQUIRE(raw.string({"SET", names[0].session, "a TLS 1.2 value"}).has_value());
  sink->full_handshake(env.key, tlsresume::ProtocolVersion::tls1_2);
  CHECK(raw.integer({"EXISTS", names[0].session}) == 1);
  sink->full_handshake(env.key, tlsresume::ProtocolVersion::tls1_3);
  CHECK(raw.integer({"EXISTS", names[0].session}) == 0);

  REQUIRE(raw.string({"SET", names[0].session, "a TLS 1.2 value"}).has_value());
  while (env.ctx.take_recent_session("localhost")) {
  }
  (void)test::connect_clean(env.ctx, env.server, nullptr, "localhost");
  auto ticket = env.ctx.take_recent_session("localhost");
  REQUIRE(ticket.has_value());
  CHECK(fleet.publish(env.key, *ticket) == StoreOutcome::stored);
  CHECK(raw.integer({"EXISTS", names[0].session}) == 0);
  CHECK(raw.integer({"LLEN", names[0].tickets}) == 1);
  CHECK_THROWS_AS(fleet.attach(tlsresume::ContextId{12345678}), tlsresume::Error);
}
