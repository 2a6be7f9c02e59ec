// SessionCache<Tag, Policy>: the store and its policies. Single-use TLS 1.3 tickets, reusable TLS 1.2
// sessions, the no-downgrade rule, per-peer and per-cache limits, every expiry rule, the native
// pointer index, the counters' invariant, no session released under a cache lock, and concurrent
// put/take.
//
// Sessions are real ones from handshakes with a LocalServer (in-memory BIO pair), made once per test
// and reused; time is a test clock the test sets (no sleeping). Every behavioural test runs over the
// three shipped lock layouts (no lock, one mutex, sharded).

#include "support.hpp"

#include <openssl/asn1.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <tlsresume/cache.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using test::CtxA;
using test::TagA;
using tlsresume::CacheStats;
using tlsresume::PeerKey;
using tlsresume::ProtocolVersion;
using tlsresume::PutOptions;
using tlsresume::testing::LocalServer;
using SessionA = tlsresume::BoundSession<TagA>;
using time_point = std::chrono::system_clock::time_point;

/// The clock of every test policy: returns what the test set.
struct TestClock {
  using rep = std::chrono::system_clock::rep;
  using period = std::chrono::system_clock::period;
  using duration = std::chrono::system_clock::duration;
  using time_point = std::chrono::system_clock::time_point;
  static time_point now() noexcept { return current().load(); }
  static void set(time_point t) noexcept { current().store(t); }

 private:
  static std::atomic<time_point>& current() noexcept {
    static std::atomic<time_point> t{time_point{}};
    return t;
  }
};

/// A shipped policy with the test clock and small limits: `PeersPerShard` peers per shard (so LRU
/// eviction is reachable in every layout) and `Tickets` tickets per peer.
template <class Base, std::size_t PeersPerShard = 3, std::size_t Tickets = 4> struct Testing {
  using lock_type = typename Base::lock_type;
  using clock_type = TestClock;
  static constexpr std::size_t max_peers =
      PeersPerShard * tlsresume::detail::cache_lock_layout<lock_type>::shards;
  static constexpr std::size_t max_tickets_per_peer = Tickets;
};
using SinglePolicy = Testing<tlsresume::SingleThreadPolicy>;
using MutexPolicy = Testing<tlsresume::ThreadSafePolicy>;
using ShardPolicy = Testing<tlsresume::ShardedPolicy>;

template <class Policy> using CacheOf = tlsresume::SessionCache<TagA, Policy>;

PeerKey key_of(const std::string& host, std::uint16_t port = 443) {
  return PeerKey::make(host, port, tlsresume::ConfigFingerprint{});
}

/// `n` sessions from full handshakes with `server`, each held only by the returned vector (the
/// context's own store is emptied). TLS 1.3: two tickets per handshake; TLS 1.2: one session.
std::vector<SessionA> make_sessions(const CtxA& ctx, LocalServer& server, std::size_t n) {
  auto& mutable_ctx = const_cast<CtxA&>(ctx);
  mutable_ctx.set_max_recent_sessions(64);
  std::vector<SessionA> out;
  while (out.size() < n) {
    REQUIRE(test::connect_clean(ctx, server).sessions >= 1);
    while (out.size() < n) {
      auto s = ctx.take_recent_session();
      if (!s) {
        break;
      }
      const bool tls12 = s->protocol_version() != ProtocolVersion::tls1_3;
      out.push_back(std::move(*s));
      if (tls12) {
        break;  // a TLS 1.2 session stays in the store: take the newest one only
      }
    }
  }
  mutable_ctx.set_max_recent_sessions(0);  // releases the context's references
  return out;
}

/// A server, a client context that trusts it, and sessions from them.
struct Source {
  explicit Source(tlsresume::testing::ServerOptions options) : server(std::move(options)), ctx(test::client_context_for(server)) {}
  LocalServer server;
  CtxA ctx;
};

/// What most tests use: 20 TLS 1.3 tickets and 4 TLS 1.2 sessions, each from a full handshake.
struct Pool {
  Source tls13_source{test::server_options(test::Mode::tls13)};
  Source tls12_source{test::server_options(test::Mode::tls12_tickets)};
  std::vector<SessionA> tls13 = make_sessions(tls13_source.ctx, tls13_source.server, 20);
  std::vector<SessionA> tls12 = make_sessions(tls12_source.ctx, tls12_source.server, 4);

  /// The latest creation time of any session: a clock set here finds every session fresh.
  [[nodiscard]] time_point newest() const {
    time_point t{};
    for (const auto* list : {&tls13, &tls12}) {
      for (const auto& s : *list) {
        t = std::max(t, s.creation_time());
      }
    }
    return t;
  }
};

void check_invariant(const CacheStats& s) {
  INFO("stored " << s.stored << " taken " << s.taken << " expired " << s.expired << " evicted " << s.evicted
                 << " superseded " << s.superseded << " invalidated " << s.invalidated << " erased " << s.erased
                 << " sessions " << s.sessions);
  CHECK(s.stored == s.taken + s.expired + s.evicted + s.superseded + s.invalidated + s.erased + s.sessions);
  CHECK(s.hits == s.taken + s.reused);
}

/// The peer certificate's notAfter, read independently of the cache (ASN1_TIME_to_tm + timegm).
time_point not_after_of(const SessionA& s) {
  X509* peer = SSL_SESSION_get0_peer(s.native_handle());
  REQUIRE(peer != nullptr);
  std::tm tm{};
  REQUIRE(ASN1_TIME_to_tm(X509_get0_notAfter(peer), &tm) == 1);
  return std::chrono::system_clock::from_time_t(::timegm(&tm));
}

/// Keys that all land in the same shard of `Cache` (every key does without sharding).
template <class Cache> std::vector<PeerKey> keys_in_one_shard(std::size_t n) {
  std::vector<PeerKey> keys;
  const std::size_t shard = Cache::shard_of(key_of("peer0.example"));
  for (int i = 0; keys.size() < n && i < 100000; ++i) {
    auto k = key_of("peer" + std::to_string(i) + ".example");
    if (Cache::shard_of(k) == shard) {
      keys.push_back(std::move(k));
    }
  }
  REQUIRE(keys.size() == n);
  return keys;
}

}  // namespace

// Policies that miss a requirement (in a named namespace: clang would warn that their unused
// constants are unused in an anonymous one).
namespace cache_concept_cases {
struct NotLockable {};
struct NoClock {
  using lock_type = std::mutex;
  static constexpr std::size_t max_peers = 1;
  static constexpr std::size_t max_tickets_per_peer = 1;
};
struct NoMaxPeers {
  using lock_type = std::mutex;
  using clock_type = std::chrono::system_clock;
  static constexpr std::size_t max_tickets_per_peer = 1;
};
struct BadLock {
  using lock_type = NotLockable;
  using clock_type = std::chrono::system_clock;
  static constexpr std::size_t max_peers = 1;
  static constexpr std::size_t max_tickets_per_peer = 1;
};
struct SteadyClock {
  using lock_type = std::mutex;
  using clock_type = std::chrono::steady_clock;  // not a wall clock: cannot be compared with OpenSSL's times
  static constexpr std::size_t max_peers = 1;
  static constexpr std::size_t max_tickets_per_peer = 1;
};
}  // namespace cache_concept_cases

TEST_CASE("the shipped policies satisfy cache_policy and incomplete ones do not", "[cache]") {
  using tlsresume::cache_policy;
  using namespace cache_concept_cases;
  STATIC_REQUIRE(cache_policy<tlsresume::SingleThreadPolicy>);
  STATIC_REQUIRE(cache_policy<tlsresume::ThreadSafePolicy>);
  STATIC_REQUIRE(cache_policy<tlsresume::ShardedPolicy>);
  STATIC_REQUIRE(cache_policy<SinglePolicy>);
  STATIC_REQUIRE_FALSE(cache_policy<NoClock>);
  STATIC_REQUIRE_FALSE(cache_policy<NoMaxPeers>);
  STATIC_REQUIRE_FALSE(cache_policy<BadLock>);
  STATIC_REQUIRE_FALSE(cache_policy<SteadyClock>);
  STATIC_REQUIRE(std::is_same_v<tlsresume::SessionCache<TagA>::policy_type, tlsresume::ThreadSafePolicy>);
  STATIC_REQUIRE(tlsresume::SessionCache<TagA>::shard_count == 1);
  STATIC_REQUIRE(tlsresume::SessionCache<TagA, tlsresume::ShardedPolicy>::shard_count == 16);
  STATIC_REQUIRE(tlsresume::SessionCache<TagA, tlsresume::ShardedPolicy>::max_peers_per_shard == 4096 / 16);
  STATIC_REQUIRE(tlsresume::SessionCache<TagA>::max_tickets_per_peer == 4);
}

TEMPLATE_TEST_CASE("a TLS 1.3 ticket is handed out once, newest first, and resumes", "[cache][tls13]", SinglePolicy,
                   MutexPolicy, ShardPolicy) {
  Pool pool;
  TestClock::set(pool.newest());
  CacheOf<TestType> cache;
  const auto key = key_of("localhost");
  for (int i = 0; i < 3; ++i) {
    REQUIRE(cache.put(key, pool.tls13[static_cast<std::size_t>(i)]));
  }
  CHECK(cache.stats().sessions == 3);
  for (int i = 2; i >= 0; --i) {
    auto s = cache.take(key);
    REQUIRE(s.has_value());
    CHECK(s->native_handle() == pool.tls13[static_cast<std::size_t>(i)].native_handle());
  }
  CHECK_FALSE(cache.take(key).has_value());
  CHECK_FALSE(cache.take(key_of("elsewhere")).has_value());
  const auto st = cache.stats();
  CHECK(st.hits == 3);
  CHECK(st.misses == 2);
  CHECK(st.taken == 3);
  CHECK(st.sessions == 0);
  CHECK(st.peers == 0);
  CHECK(st.bytes == 0);
  check_invariant(st);

  // The cache keeps live sessions: one handed out resumes on both sides.
  REQUIRE(cache.put(key, pool.tls13[5]));
  auto s = cache.take(key);
  REQUIRE(s.has_value());
  const auto out = test::connect_clean(pool.tls13_source.ctx, pool.tls13_source.server, &*s);
  CHECK(out.client_reused);
  CHECK(out.server_reused);
}

TEMPLATE_TEST_CASE("a TLS 1.2 session stays, comes after TLS 1.3 tickets, and a newer one replaces it",
                   "[cache][tls12]", SinglePolicy, MutexPolicy, ShardPolicy) {
  Pool pool;
  TestClock::set(pool.newest());
  CacheOf<TestType> cache;
  const auto key = key_of("localhost");
  REQUIRE(cache.put(key, pool.tls12[0]));
  for (int i = 0; i < 3; ++i) {
    auto s = cache.take(key);
    REQUIRE(s.has_value());
    CHECK(s->native_handle() == pool.tls12[0].native_handle());
  }
  REQUIRE(cache.put(key, pool.tls13[0]));
  auto first = cache.take(key);
  REQUIRE(first.has_value());
  CHECK(first->native_handle() == pool.tls13[0].native_handle());  // TLS 1.3 first
  auto second = cache.take(key);
  REQUIRE(second.has_value());
  CHECK(second->native_handle() == pool.tls12[0].native_handle());

  REQUIRE(cache.put(key, pool.tls12[1]));  // replaces the older TLS 1.2 session
  auto third = cache.take(key);
  REQUIRE(third.has_value());
  CHECK(third->native_handle() == pool.tls12[1].native_handle());
  const auto st = cache.stats();
  CHECK(st.reused == 5);
  CHECK(st.taken == 1);
  CHECK(st.superseded == 1);
  CHECK(st.sessions == 1);
  check_invariant(st);

  // A TLS 1.2 session handed out resumes on both sides.
  const auto out = test::connect_clean(pool.tls12_source.ctx, pool.tls12_source.server, &*third);
  CHECK(out.client_reused);
  CHECK(out.server_reused);
}

TEMPLATE_TEST_CASE("a full TLS 1.3 handshake drops the peer's TLS 1.2 session", "[cache][tls12][tls13]", SinglePolicy,
                   MutexPolicy, ShardPolicy) {
  Pool pool;
  TestClock::set(pool.newest());
  CacheOf<TestType> cache;
  const auto key = key_of("localhost");
  const auto other = key_of("other.example");
  REQUIRE(cache.put(key, pool.tls12[0]));
  REQUIRE(cache.put(key, pool.tls13[0]));
  REQUIRE(cache.put(other, pool.tls12[1]));

  cache.on_full_handshake(key, ProtocolVersion::tls1_2);  // changes nothing
  CHECK(cache.stats().sessions == 3);
  cache.on_full_handshake(key_of("unknown.example"), ProtocolVersion::tls1_3);  // no such peer
  CHECK(cache.stats().peers == 2);

  cache.on_full_handshake(key, ProtocolVersion::tls1_3);
  auto s = cache.take(key);
  REQUIRE(s.has_value());
  CHECK(s->native_handle() == pool.tls13[0].native_handle());  // tickets stay
  CHECK_FALSE(cache.take(key).has_value());                    // no TLS 1.2 to fall back to
  auto o = cache.take(other);                                  // other peers are not touched
  REQUIRE(o.has_value());
  CHECK(o->native_handle() == pool.tls12[1].native_handle());
  const auto st = cache.stats();
  CHECK(st.superseded == 1);
  CHECK(st.peers == 1);
  check_invariant(st);
}

TEMPLATE_TEST_CASE("a peer keeps at most max_tickets_per_peer tickets, the newest", "[cache][tls13]", SinglePolicy,
                   MutexPolicy, ShardPolicy) {
  Pool pool;
  TestClock::set(pool.newest());
  CacheOf<TestType> cache;
  const auto key = key_of("localhost");
  for (std::size_t i = 0; i < 7; ++i) {
    REQUIRE(cache.put(key, pool.tls13[i]));
  }
  auto st = cache.stats();
  CHECK(st.sessions == 4);
  CHECK(st.evicted == 3);
  for (std::size_t i = 7; i-- > 3;) {
    auto s = cache.take(key);
    REQUIRE(s.has_value());
    CHECK(s->native_handle() == pool.tls13[i].native_handle());
  }
  CHECK_FALSE(cache.take(key).has_value());
  check_invariant(cache.stats());
}

TEMPLATE_TEST_CASE("peers beyond max_peers evict the least recently used peer", "[cache]", SinglePolicy, MutexPolicy,
                   ShardPolicy) {
  using Cache = CacheOf<TestType>;
  Pool pool;
  TestClock::set(pool.newest());
  Cache cache;
  const auto keys = keys_in_one_shard<Cache>(5);  // 3 peers fit in a shard
  REQUIRE(cache.put(keys[0], pool.tls12[0]));
  REQUIRE(cache.put(keys[1], pool.tls13[0]));
  REQUIRE(cache.put(keys[1], pool.tls13[1]));
  REQUIRE(cache.put(keys[2], pool.tls12[2]));
  CHECK(cache.stats().peers == 3);

  REQUIRE(cache.take(keys[0]).has_value());  // a hit makes keys[0] the most recently used
  REQUIRE(cache.put(keys[3], pool.tls13[2]));
  CHECK(cache.stats().peers == 3);
  CHECK(cache.stats().evicted == 2);  // both tickets of keys[1]
  CHECK_FALSE(cache.take(keys[1]).has_value());

  REQUIRE(cache.put(keys[2], pool.tls13[3]));  // a put makes keys[2] the most recently used
  REQUIRE(cache.put(keys[4], pool.tls12[3]));  // evicts keys[0], the least recently used now
  CHECK(cache.stats().evicted == 3);
  CHECK_FALSE(cache.take(keys[0]).has_value());
  CHECK(cache.take(keys[2]).has_value());
  CHECK(cache.take(keys[3]).has_value());
  CHECK(cache.take(keys[4]).has_value());
  check_invariant(cache.stats());
}

TEMPLATE_TEST_CASE("a session expires with the client's session timeout", "[cache][expiry][tls12][tls13]",
                   SinglePolicy, MutexPolicy, ShardPolicy) {
  const auto mode = GENERATE(test::Mode::tls13, test::Mode::tls12_tickets, test::Mode::tls12_session_ids);
  CAPTURE(test::to_string(mode));
  Source source(test::server_options(mode));
  REQUIRE(SSL_CTX_set_timeout(source.ctx.native_handle(), 100) >= 0);
  // Two sessions created in the same second (OpenSSL keeps whole seconds): of three, two are.
  auto three = make_sessions(source.ctx, source.server, 3);
  std::vector<SessionA> sessions;
  for (std::size_t i = 0; i < 3 && sessions.empty(); ++i) {
    for (std::size_t j = i + 1; j < 3 && sessions.empty(); ++j) {
      if (three[i].creation_time() == three[j].creation_time()) {
        sessions = {three[i], three[j]};
      }
    }
  }
  REQUIRE(sessions.size() == 2);
  const time_point created = sessions[0].creation_time();
  CacheOf<TestType> cache;
  const auto key = key_of("localhost");
  TestClock::set(created);
  REQUIRE(cache.put(key, sessions[0]));
  REQUIRE(cache.put(key, sessions[1]));

  TestClock::set(created + 99s);
  CHECK(cache.take(key).has_value());
  TestClock::set(created + 100s);
  CHECK_FALSE(cache.take(key).has_value());
  CHECK(cache.put(key, sessions[0]) == false);  // refused once expired
  const auto st = cache.stats();
  CHECK(st.expired == 1);  // TLS 1.3: the second ticket; TLS 1.2: the second session (it replaced the first)
  CHECK(st.refused == 1);
  CHECK(st.sessions == 0);
  check_invariant(st);
}

TEMPLATE_TEST_CASE("a session expires with the server's ticket lifetime hint", "[cache][expiry][tls12][tls13]",
                   SinglePolicy, MutexPolicy, ShardPolicy) {
  const auto mode = GENERATE(test::Mode::tls13, test::Mode::tls12_tickets);
  CAPTURE(test::to_string(mode));
  Source source(test::server_options(mode));
  REQUIRE(SSL_CTX_set_timeout(source.server.native_handle(), 50) >= 0);  // the hint the server sends
  const auto sessions = make_sessions(source.ctx, source.server, 1);
  REQUIRE(sessions[0].ticket_lifetime_hint() == 50s);
  REQUIRE(SSL_SESSION_get_timeout(sessions[0].native_handle()) > 50);  // the client's own timeout is longer
  const time_point created = sessions[0].creation_time();
  CacheOf<TestType> cache;
  const auto key = key_of("localhost");
  TestClock::set(created);
  REQUIRE(cache.put(key, sessions[0]));
  TestClock::set(created + 49s);
  CHECK(cache.purge_expired() == 0);
  TestClock::set(created + 50s);
  CHECK(cache.purge_expired() == 1);
  CHECK(cache.stats().expired == 1);
  check_invariant(cache.stats());
}

TEMPLATE_TEST_CASE("a session expires with the peer certificate's notAfter", "[cache][expiry][tls12]", SinglePolicy,
                   MutexPolicy, ShardPolicy) {
  // Session ids: no ticket lifetime hint (0 = not given). The client's timeout is 90 days, beyond
  // the server certificate's 30-day validity.
  const auto mode = GENERATE(test::Mode::tls12_session_ids, test::Mode::tls12_tickets);
  CAPTURE(test::to_string(mode));
  Source source(test::server_options(mode));
  REQUIRE(SSL_CTX_set_timeout(source.ctx.native_handle(), 90L * 24 * 3600) >= 0);
  REQUIRE(SSL_CTX_set_timeout(source.server.native_handle(), 90L * 24 * 3600) >= 0);
  const auto sessions = make_sessions(source.ctx, source.server, 1);
  const auto& s = sessions[0];
  if (mode == test::Mode::tls12_session_ids) {
    REQUIRE(s.ticket_lifetime_hint() == 0s);
  }
  const time_point not_after = not_after_of(s);
  REQUIRE(not_after - s.creation_time() > 29 * 24h);
  REQUIRE(not_after - s.creation_time() < 31 * 24h);
  CacheOf<TestType> cache;
  const auto key = key_of("localhost");
  TestClock::set(s.creation_time());
  REQUIRE(cache.put(key, s));
  TestClock::set(not_after - 1s);
  CHECK(cache.take(key).has_value());
  TestClock::set(not_after);
  CHECK_FALSE(cache.take(key).has_value());
  CHECK(cache.stats().expired == 1);
  check_invariant(cache.stats());
}

TEMPLATE_TEST_CASE("a TLS 1.3 ticket expires 7 days after its original full handshake", "[cache][expiry][tls13]",
                   SinglePolicy, MutexPolicy, ShardPolicy) {
  // Client timeout and server ticket lifetime both beyond 7 days, certificate valid 30 days: the
  // 7-day rule is the first to apply.
  Source source(test::server_options(test::Mode::tls13));
  REQUIRE(SSL_CTX_set_timeout(source.ctx.native_handle(), 20L * 24 * 3600) >= 0);
  REQUIRE(SSL_CTX_set_timeout(source.server.native_handle(), 20L * 24 * 3600) >= 0);
  const auto tickets = make_sessions(source.ctx, source.server, 4);
  const time_point created = tickets[0].creation_time();
  CacheOf<TestType> cache;
  const auto fresh = key_of("fresh.example");
  const auto inherited = key_of("inherited.example");
  TestClock::set(created);

  SECTION("from the ticket's own creation time by default") {
    REQUIRE(cache.put(fresh, tickets[0]));
    REQUIRE(cache.put(fresh, tickets[1]));
    TestClock::set(created + std::chrono::days(7) - 1s);
    CHECK(cache.take(fresh).has_value());
    TestClock::set(created + std::chrono::days(7));
    CHECK_FALSE(cache.take(fresh).has_value());
    CHECK(cache.stats().expired == 1);
  }
  SECTION("from the original handshake of a resumed connection's ticket") {
    const time_point original = created - std::chrono::days(6);
    PutOptions options;
    options.original_full_handshake = original;
    REQUIRE(cache.put(inherited, tickets[2], options));
    REQUIRE(cache.put(inherited, tickets[3], options));
    std::vector<time_point> seen;
    cache.for_each([&](const PeerKey& k, const SessionA& s, time_point t) {
      CHECK(k == inherited);
      CHECK(s.protocol_version() == ProtocolVersion::tls1_3);
      seen.push_back(t);
    });
    CHECK(seen == std::vector<time_point>{original, original});
    TestClock::set(created + std::chrono::days(1) - 1s);
    CHECK(cache.take(inherited).has_value());
    TestClock::set(created + std::chrono::days(1));
    CHECK_FALSE(cache.take(inherited).has_value());
    CHECK(cache.stats().expired == 1);
    // Already beyond 7 days at put: refused.
    options.original_full_handshake = created - std::chrono::days(8);
    TestClock::set(created);
    CHECK_FALSE(cache.put(inherited, tickets[0], options));
    CHECK(cache.stats().refused == 1);
  }
  check_invariant(cache.stats());
}

TEMPLATE_TEST_CASE("sessions dated in the future, expired, not resumable or empty are refused", "[cache]",
                   SinglePolicy, MutexPolicy, ShardPolicy) {
  Pool pool;
  CacheOf<TestType> cache;
  const auto key = key_of("localhost");
  const auto& s = pool.tls13[0];
  TestClock::set(s.creation_time() - 2s);  // the session looks 2 s in the future
  CHECK_FALSE(cache.put(key, s));
  TestClock::set(s.creation_time() - 1s);  // 1 s of skew is allowed (whole seconds)
  CHECK(cache.put(key, s));
  PutOptions future;
  future.original_full_handshake = s.creation_time() + 10s;
  CHECK_FALSE(cache.put(key, pool.tls13[1], future));

  TestClock::set(pool.newest());
  CHECK_FALSE(cache.put(key, SessionA{}));  // empty
  SSL_SESSION* blank = SSL_SESSION_new();   // no id, no ticket: not resumable
  REQUIRE(blank != nullptr);
  CHECK_FALSE(cache.put(key, pool.tls13_source.ctx.adopt_session(blank)));
  const auto st = cache.stats();
  CHECK(st.refused == 4);
  CHECK(st.stored == 1);
  check_invariant(st);
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEMPLATE_TEST_CASE("invalidate removes a session by its native pointer, wherever it is", "[cache]", SinglePolicy,
                   MutexPolicy, ShardPolicy) {
  Pool pool;
  TestClock::set(pool.newest());
  CacheOf<TestType> cache;
  const auto a = key_of("a.example");
  const auto b = key_of("b.example");
  for (std::size_t i = 0; i < 3; ++i) {
    REQUIRE(cache.put(a, pool.tls13[i]));
    REQUIRE(cache.put(b, pool.tls13[3 + i]));
  }
  REQUIRE(cache.put(b, pool.tls12[0]));

  CHECK(cache.invalidate(pool.tls13[1].native_handle()));  // the middle ticket of a
  CHECK(cache.invalidate(pool.tls12[0].native_handle()));
  CHECK_FALSE(cache.invalidate(pool.tls13[1].native_handle()));  // already gone
  CHECK_FALSE(cache.invalidate(pool.tls13[10].native_handle()));  // never stored
  CHECK_FALSE(cache.invalidate(nullptr));

  std::vector<SSL_SESSION*> from_a;
  while (auto s = cache.take(a)) {
    from_a.push_back(s->native_handle());
  }
  CHECK(from_a == std::vector<SSL_SESSION*>{pool.tls13[2].native_handle(), pool.tls13[0].native_handle()});
  std::size_t from_b = 0;
  while (auto s = cache.take(b)) {
    CHECK(s->protocol_version() == ProtocolVersion::tls1_3);  // the TLS 1.2 session is gone
    ++from_b;
  }
  CHECK(from_b == 3);
  const auto st = cache.stats();
  CHECK(st.invalidated == 2);
  check_invariant(st);

  // A session OpenSSL itself invalidated (a resumed TLS 1.2 connection closed uncleanly marks its
  // session not resumable, SSL_set_session(3)) is dropped at lookup and counted the same way.
  REQUIRE(cache.put(a, pool.tls12[1]));
  {
    test::ClientA client(pool.tls12_source.ctx);
    client.set_session(pool.tls12[1]);
    auto conn = pool.tls12_source.server.handshake(client);
    REQUIRE(client.session_reused());
  }  // no shutdown()
  REQUIRE_FALSE(pool.tls12[1].is_resumable());
  CHECK_FALSE(cache.take(a).has_value());
  CHECK(cache.stats().invalidated == 3);
  check_invariant(cache.stats());
}

TEMPLATE_TEST_CASE("erase, veto, clear and purge_expired drop sessions and count them", "[cache]", SinglePolicy,
                   MutexPolicy, ShardPolicy) {
  Pool pool;
  const time_point now = pool.newest();
  TestClock::set(now);
  CacheOf<TestType> cache;
  const auto a = key_of("a.example");
  const auto b = key_of("b.example");
  const auto c = key_of("c.example");
  REQUIRE(cache.put(a, pool.tls13[0]));
  REQUIRE(cache.put(a, pool.tls12[0]));
  REQUIRE(cache.put(b, pool.tls13[1]));
  REQUIRE(cache.put(c, pool.tls13[2]));
  REQUIRE(cache.put(c, pool.tls13[3]));
  const auto full = cache.stats();
  CHECK(full.bytes > 0);

  CHECK(cache.erase(a) == 2);
  CHECK(cache.erase(a) == 0);
  CHECK_FALSE(cache.take(a).has_value());
  CHECK(cache.veto(b) == 1);
  CHECK(cache.veto(b) == 0);
  auto st = cache.stats();
  CHECK(st.erased == 2);
  CHECK(st.vetoed == 2);
  CHECK(st.invalidated == 1);
  CHECK(st.peers == 1);
  CHECK(st.bytes < full.bytes);
  check_invariant(st);

  REQUIRE(cache.put(a, pool.tls12[1]));
  cache.clear();
  st = cache.stats();
  CHECK(st.sessions == 0);
  CHECK(st.peers == 0);
  CHECK(st.bytes == 0);
  CHECK(st.erased == 5);
  check_invariant(st);

  // purge_expired removes only what has expired.
  REQUIRE(cache.put(a, pool.tls13[4]));
  REQUIRE(cache.put(b, pool.tls12[2]));
  CHECK(cache.purge_expired() == 0);
  TestClock::set(now + 3h);  // beyond the 2 h default session timeout
  CHECK(cache.purge_expired() == 2);
  st = cache.stats();
  CHECK(st.expired == 2);
  CHECK(st.sessions == 0);
  CHECK(st.bytes == 0);
  check_invariant(st);
}

TEMPLATE_TEST_CASE("expired sessions are purged opportunistically by later puts", "[cache][expiry]", SinglePolicy,
                   MutexPolicy, ShardPolicy) {
  using Cache = CacheOf<TestType>;
  Pool pool;
  const time_point now = pool.newest();
  TestClock::set(now);
  Cache cache;
  const auto keys = keys_in_one_shard<Cache>(2);  // a put sweeps its own shard
  REQUIRE(cache.put(keys[0], pool.tls13[0]));
  REQUIRE(cache.put(keys[0], pool.tls12[0]));
  TestClock::set(now + 3h);  // both expired, and more than purge_interval later
  CHECK_FALSE(cache.put(keys[1], pool.tls13[1]));  // refused: expired too; the sweep ran first
  const auto st = cache.stats();
  CHECK(st.expired == 2);
  CHECK(st.refused == 1);
  CHECK(st.sessions == 0);
  CHECK(st.peers == 0);
  check_invariant(st);
}

TEMPLATE_TEST_CASE("stats hold the invariant and bytes track what is stored", "[cache]", SinglePolicy, MutexPolicy,
                   ShardPolicy) {
  using Cache = CacheOf<TestType>;
  Pool pool;
  const time_point start = pool.newest();
  TestClock::set(start);
  Cache cache;
  std::vector<PeerKey> keys;
  for (int i = 0; i < 8; ++i) {
    keys.push_back(key_of("peer" + std::to_string(i) + ".example"));
  }
  std::minstd_rand rng(12345);
  std::vector<SessionA> held;
  std::uint64_t puts = 0;
  for (int step = 0; step < 3000; ++step) {
    const auto& key = keys[rng() % keys.size()];
    switch (rng() % 10) {
      case 0: case 1: case 2: {
        const auto& list = rng() % 4 == 0 ? pool.tls12 : pool.tls13;
        ++puts;
        cache.put(key, list[rng() % list.size()]);
        break;
      }
      case 3: case 4: case 5:
        if (auto s = cache.take(key)) {
          held.push_back(std::move(*s));
        }
        break;
      case 6:
        if (!held.empty()) {
          ++puts;
          cache.put(key, std::move(held.back()));
          held.pop_back();
        }
        break;
      case 7:
        cache.invalidate(pool.tls13[rng() % pool.tls13.size()].native_handle());
        break;
      case 8:
        if (rng() % 8 == 0) {
          cache.erase(key);
        } else {
          cache.on_full_handshake(key, ProtocolVersion::tls1_3);
        }
        break;
      default:
        TestClock::set(TestClock::now() + 30s);  // past the 2 h expiry for the last ~20% of steps
        if (rng() % 50 == 0) {
          cache.purge_expired();
        }
        break;
    }
    const auto st = cache.stats();
    check_invariant(st);
    REQUIRE(st.stored + st.refused == puts);
    REQUIRE(st.peers <= Cache::max_peers_per_shard * Cache::shard_count);
    REQUIRE(st.sessions <= st.peers * (Cache::max_tickets_per_peer + 1));
    REQUIRE((st.sessions == 0) == (st.bytes == 0));
    if (st.sessions != 0) {
      REQUIRE(st.bytes > st.sessions * 100);  // at least each session's DER
    }
  }
  const auto st = cache.stats();
  CHECK(st.expired > 0);
  CHECK(st.taken > 0);
  CHECK(st.reused > 0);
  CHECK(st.evicted + st.superseded > 0);
  CHECK(st.invalidated > 0);
}

namespace {

// A lock that counts, per thread, how many cache locks are held; and a free callback that records
// whether a watched session was released while one was.
thread_local int locks_held = 0;
struct CountingMutex {
  void lock() {
    m.lock();
    ++locks_held;
  }
  void unlock() {
    --locks_held;
    m.unlock();
  }
  std::mutex m;
};
struct CountingNoLock {
  void lock() noexcept { ++locks_held; }
  void unlock() noexcept { --locks_held; }
};

std::atomic<int> watched_frees{0};
std::atomic<int> frees_under_lock{0};
std::function<void(SSL_SESSION*)>* on_watched_free = nullptr;

int free_watch_index() {
  static const int index = CRYPTO_get_ex_new_index(
      CRYPTO_EX_INDEX_SSL_SESSION, 0, nullptr, nullptr,
      [](CRYPTO_EX_DATA*, const CRYPTO_EX_DATA*, void** from_d, int, long, void*) -> int {
        *from_d = nullptr;  // copies are not watched
        return 1;
      },
      [](void* parent, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
        if (ptr == nullptr) {
          return;
        }
        ++watched_frees;
        if (locks_held > 0) {
          ++frees_under_lock;
        } else if (on_watched_free != nullptr) {
          (*on_watched_free)(static_cast<SSL_SESSION*>(parent));  // re-enters the cache
        }
      });
  return index;
}

template <class Lock> struct CountingPolicy {
  using lock_type = Lock;
  using clock_type = TestClock;
  static constexpr std::size_t max_peers = 2 * tlsresume::detail::cache_lock_layout<Lock>::shards;
  static constexpr std::size_t max_tickets_per_peer = 2;
};

using CountingSingle = CountingPolicy<CountingNoLock>;
using CountingOneMutex = CountingPolicy<CountingMutex>;
using CountingSharded = CountingPolicy<tlsresume::Sharded<CountingMutex, 4>>;
using BusyMutexPolicy = Testing<tlsresume::ThreadSafePolicy, 64, 32>;
using BusyShardPolicy = Testing<tlsresume::ShardedPolicy, 64, 32>;

}  // namespace

TEMPLATE_TEST_CASE("no session is released while a cache lock is held", "[cache]", CountingSingle, CountingOneMutex,
                   CountingSharded) {
  using Cache = tlsresume::SessionCache<TagA, TestType>;
  Pool pool;
  const time_point now = pool.newest();
  TestClock::set(now);
  static char marker = 0;
  int watched = 0;
  for (auto* list : {&pool.tls13, &pool.tls12}) {
    for (auto& s : *list) {
      REQUIRE(SSL_SESSION_set_ex_data(s.native_handle(), free_watch_index(), &marker) == 1);
      ++watched;
    }
  }
  watched_frees = 0;
  frees_under_lock = 0;
  {
    Cache cache;
    std::function<void(SSL_SESSION*)> reenter = [&cache](SSL_SESSION* s) {
      cache.invalidate(s);  // would deadlock (or be flagged) if a lock were held
      (void)cache.stats();
    };
    on_watched_free = &reenter;
    const auto keys = keys_in_one_shard<Cache>(4);
    auto give = [](std::vector<SessionA>& list, std::size_t i) { return std::move(list[i]); };  // the only reference

    // Per-peer limit, TLS 1.2 replaced, the no-downgrade rule.
    for (std::size_t i = 0; i < 4; ++i) {
      REQUIRE(cache.put(keys[0], give(pool.tls13, i)));
    }
    REQUIRE(cache.put(keys[0], give(pool.tls12, 0)));
    REQUIRE(cache.put(keys[0], give(pool.tls12, 1)));
    cache.on_full_handshake(keys[0], ProtocolVersion::tls1_3);
    CHECK(watched_frees == 4);
    // LRU eviction of a peer (2 per shard), invalidate, erase, veto.
    REQUIRE(cache.put(keys[1], give(pool.tls13, 4)));
    REQUIRE(cache.put(keys[2], give(pool.tls13, 5)));  // evicts keys[0]'s two tickets
    REQUIRE(cache.put(keys[2], give(pool.tls13, 6)));
    SSL_SESSION* six = nullptr;
    cache.for_each([&](const PeerKey&, const SessionA& s, time_point) {
      if (six == nullptr) {
        six = s.native_handle();
      }
    });
    REQUIRE(six != nullptr);
    CHECK(cache.invalidate(six));
    CHECK(cache.erase(keys[1]) == 1);
    CHECK(cache.veto(keys[2]) == 1);
    CHECK(watched_frees == 9);
    // A taken ticket is released by the caller; a refused put after the lock.
    REQUIRE(cache.put(keys[3], give(pool.tls13, 7)));
    CHECK(cache.take(keys[3]).has_value());
    TestClock::set(now - 1h);
    CHECK_FALSE(cache.put(keys[3], give(pool.tls13, 8)));  // dated in the future
    CHECK(watched_frees == 11);
    // Expiry at lookup: a sweep first, so that the next one is not due at the lookup.
    TestClock::set(now + 3h);
    CHECK(cache.purge_expired() == 0);
    TestClock::set(now);
    REQUIRE(cache.put(keys[0], give(pool.tls13, 9)));
    TestClock::set(now + 3h);
    CHECK_FALSE(cache.take(keys[0]).has_value());
    CHECK(cache.stats().expired == 1);
    CHECK(watched_frees == 12);
    // Expiry in purge_expired, then in an opportunistic sweep.
    TestClock::set(now);
    REQUIRE(cache.put(keys[1], give(pool.tls13, 10)));
    REQUIRE(cache.put(keys[1], give(pool.tls12, 2)));
    TestClock::set(now + 3h);
    CHECK(cache.purge_expired() == 2);
    CHECK(watched_frees == 14);
    TestClock::set(now);
    REQUIRE(cache.put(keys[2], give(pool.tls13, 11)));
    TestClock::set(now + 6h);
    CHECK_FALSE(cache.put(keys[3], give(pool.tls13, 12)));  // expired; sweeps keys[2]'s ticket first
    CHECK(cache.stats().expired == 4);
    CHECK(watched_frees == 16);
    // clear, then the destructor.
    TestClock::set(now);
    REQUIRE(cache.put(keys[0], give(pool.tls13, 13)));
    cache.clear();
    REQUIRE(cache.put(keys[0], give(pool.tls13, 14)));
    CHECK(watched_frees == 17);
    check_invariant(cache.stats());
    on_watched_free = nullptr;  // the cache is about to go
  }  // the destructor releases the last one
  CHECK(watched_frees == 18);
  CHECK(frees_under_lock == 0);
  pool.tls13.clear();
  pool.tls12.clear();
  CHECK(watched_frees == watched);
  CHECK(frees_under_lock == 0);
}

TEMPLATE_TEST_CASE("concurrent put and take never hand one TLS 1.3 ticket to two threads", "[cache][threads]",
                   BusyMutexPolicy, BusyShardPolicy) {
  using Cache = CacheOf<TestType>;
  Pool pool;
  TestClock::set(pool.newest());
  Cache cache;
  std::vector<PeerKey> keys;
  for (int i = 0; i < 4; ++i) {
    keys.push_back(key_of("peer" + std::to_string(i) + ".example"));
  }
  std::unordered_map<const SSL_SESSION*, std::size_t> slot;  // read-only while the threads run
  for (std::size_t i = 0; i < pool.tls13.size(); ++i) {
    slot.emplace(pool.tls13[i].native_handle(), i);
    REQUIRE(cache.put(keys[i % keys.size()], pool.tls13[i]));
  }
  REQUIRE(cache.put(keys[0], pool.tls12[0]));
  REQUIRE(cache.put(keys[1], pool.tls12[1]));
  std::vector<std::atomic<int>> owner(pool.tls13.size());  // 1 while a thread holds the ticket

  constexpr int threads = 4;
  constexpr int iterations = 100000;  // per thread
  std::atomic<int> ready{0};
  std::atomic<std::uint64_t> double_owned{0};
  std::atomic<std::uint64_t> unknown{0};
  std::atomic<std::uint64_t> tickets_taken{0};
  std::atomic<std::uint64_t> puts{0};
  auto worker = [&](unsigned seed) {
    std::minstd_rand rng(seed);
    ready.fetch_add(1);
    while (ready.load() < threads) {
      std::this_thread::yield();
    }
    std::vector<std::pair<std::size_t, SessionA>> held;  // up to 2 tickets at once
    for (int i = 0; i < iterations; ++i) {
      const auto& key = keys[rng() % keys.size()];
      if (auto s = cache.take(key)) {
        if (s->protocol_version() == ProtocolVersion::tls1_3) {
          const auto it = slot.find(s->native_handle());
          if (it == slot.end()) {
            unknown.fetch_add(1);
            continue;
          }
          if (owner[it->second].exchange(1) != 0) {
            double_owned.fetch_add(1);
          }
          tickets_taken.fetch_add(1);
          held.emplace_back(it->second, std::move(*s));
        } else if (i % 64 == 0) {
          puts.fetch_add(1);
          cache.put(key, std::move(*s));  // the same TLS 1.2 session again: replaces itself
        }
      }
      if (held.size() > 1 || (!held.empty() && rng() % 2 == 0)) {
        auto [index, ticket] = std::move(held.front());
        held.erase(held.begin());
        owner[index].store(0);  // before it can be taken again
        puts.fetch_add(1);
        cache.put(keys[rng() % keys.size()], std::move(ticket));
      }
      if (i % 1000 == 0) {
        (void)cache.stats();
        cache.purge_expired();
      }
    }
    for (auto& [index, ticket] : held) {
      owner[index].store(0);
      puts.fetch_add(1);
      cache.put(keys[rng() % keys.size()], std::move(ticket));
    }
  };
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> pool_threads;
  for (int t = 0; t < threads; ++t) {
    pool_threads.emplace_back(worker, static_cast<unsigned>(t + 1));
  }
  for (auto& t : pool_threads) {
    t.join();
  }
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  const auto st = cache.stats();
  INFO(threads << " threads x " << iterations << " iterations in " << elapsed.count() << " ms; tickets taken "
               << tickets_taken.load() << ", hits " << st.hits << ", misses " << st.misses);
  CHECK(double_owned == 0);
  CHECK(unknown == 0);
  CHECK(tickets_taken > 0);
  CHECK(st.taken == tickets_taken);
  CHECK(st.stored == 22 + puts.load());
  CHECK(st.refused == 0);
  CHECK(st.sessions == 22);  // every ticket is back, and both TLS 1.2 sessions
  CHECK(st.evicted == 0);
  check_invariant(st);
  std::set<SSL_SESSION*> seen;
  std::size_t visited = 0;
  cache.for_each([&](const PeerKey&, const SessionA& s, time_point) {
    seen.insert(s.native_handle());
    ++visited;
  });
  CHECK(visited == 22);
  CHECK(seen.size() == 22);  // each ticket stored exactly once
}

TEST_CASE("certificate times are read as ASN1_TIME_to_tm reads them", "[cache][expiry]") {
  using tlsresume::detail::parse_der_time;
  using tlsresume::detail::sys_seconds;
  // What OpenSSL says, converted the way the cache does.
  const auto by_openssl = [](const ASN1_TIME* t) -> std::optional<sys_seconds> {
    std::tm tm{};
    if (ASN1_TIME_to_tm(t, &tm) != 1) {
      return std::nullopt;
    }
    using namespace std::chrono;
    const year_month_day ymd{year{tm.tm_year + 1900}, month{static_cast<unsigned>(tm.tm_mon + 1)},
                             day{static_cast<unsigned>(tm.tm_mday)}};
    return sys_seconds(sys_days(ymd)) + hours(tm.tm_hour) + minutes(tm.tm_min) + seconds(tm.tm_sec);
  };
  const auto make = [](int type, const char* text) {
    ASN1_TIME* t = ASN1_TIME_new();
    REQUIRE(t != nullptr);
    REQUIRE(ASN1_STRING_set(t, text, -1) == 1);
    t->type = type;  // ASN1_TIME is an ASN1_STRING: the type says UTCTime or GeneralizedTime
    return std::unique_ptr<ASN1_TIME, decltype(&ASN1_TIME_free)>(t, &ASN1_TIME_free);
  };
  SECTION("the DER forms: same instant as OpenSSL") {
    for (const char* text : {"491231235959Z", "500101000000Z", "000229120000Z", "261128013000Z", "991231235959Z"}) {
      auto t = make(V_ASN1_UTCTIME, text);
      INFO(text);
      REQUIRE(by_openssl(t.get()).has_value());
      CHECK(parse_der_time(t.get()) == by_openssl(t.get()));
    }
    for (const char* text : {"20500101000000Z", "99991231235959Z", "19700101000000Z", "20240229000000Z"}) {
      auto t = make(V_ASN1_GENERALIZEDTIME, text);
      INFO(text);
      REQUIRE(by_openssl(t.get()).has_value());
      CHECK(parse_der_time(t.get()) == by_openssl(t.get()));
    }
  }
  SECTION("anything else is left to OpenSSL") {
    for (const char* text : {"4912312359Z", "491231235959+0100", "49123123595Z9", "491331235959Z", "490230000000Z",
                             "491231245959Z", "491231236059Z", "491231235960Z", "", "a91231235959Z"}) {
      INFO(text);
      CHECK_FALSE(parse_der_time(make(V_ASN1_UTCTIME, text).get()).has_value());
    }
    CHECK_FALSE(parse_der_time(make(V_ASN1_GENERALIZEDTIME, "20500101000000.5Z").get()).has_value());
    CHECK_FALSE(parse_der_time(make(V_ASN1_OCTET_STRING, "491231235959Z").get()).has_value());
  }
}
