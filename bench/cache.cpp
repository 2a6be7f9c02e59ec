// bench/cache: SessionCache operations against the baseline design of Go's and rustls's default
// client caches (one std::mutex, std::unordered_map keyed by a "host:port" string, std::list LRU).
//
// Latency (one thread, ns per operation, each operation timed on its own with steady_clock, the
// clock's own cost subtracted), at 100, 10k and 1M peers:
//   take     the hit path for a TLS 1.3 ticket: the newest ticket is removed and handed out
//   put      filing a TLS 1.3 ticket (the one just taken) for a peer that holds another
//   take12   the hit path for a TLS 1.2 session (a reference is handed out, the session stays)
//   miss     take for a peer that has nothing
// Throughput (operations per second with 1 and 2 threads, each thread on random peers):
//   ticket cycle   take a TLS 1.3 ticket, put it back (2 operations)
//   tls12 hits     take a TLS 1.2 session (1 operation; the reference is released after it)
//
// Each of our caches uses a shipped policy's lock type and clock (SingleThreadPolicy: NoLock;
// ThreadSafePolicy: std::mutex; ShardedPolicy: Sharded<std::mutex, 16>) with max_peers raised to
// 16M, so that nothing is evicted at 1M peers (the shipped limits are 1024 and 4096 peers). Every
// entry is its own SSL_SESSION object (the cache indexes by pointer): SSL_SESSION_dup of a real
// session received from a local server. The caches are measured in alternation, round by round.
//
//   cache [--peers 100,10000,1000000] [--rounds R] [--ops N] [--duration-ms D] [--json PATH|-] [--quick]
//   cache --callgrind N [--peers P]   N ticket cycles (take + put back) on random peers of a
//         ThreadSafePolicy cache, then N on the baseline, each inside its own function
//         (tlsresume_bench_cycles_ours, tlsresume_bench_cycles_baseline) for
//         valgrind --tool=callgrind --collect-atstart=no --toggle-collect=<function>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <list>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <tlsresume/testing.hpp>
#include <tlsresume/tlsresume.hpp>

#include "common.hpp"

namespace {

using namespace std::chrono_literals;
using tlsresume::PeerKey;

struct BenchTag {};
using Ctx = tlsresume::Context<BenchTag>;
using Session = tlsresume::BoundSession<BenchTag>;

/// A shipped policy with `max_peers` raised: same lock type, clock and tickets per peer.
template <class Base> struct Raised {
  using lock_type = typename Base::lock_type;
  using clock_type = typename Base::clock_type;
  static constexpr std::size_t max_peers = std::size_t{1} << 24;
  static constexpr std::size_t max_tickets_per_peer = Base::max_tickets_per_peer;
};

// ---------------------------------------------------------------------------------------------
// The caches under test, behind one interface.

template <class Policy> class Ours {
 public:
  using key_type = PeerKey;
  static constexpr bool multi_thread = !std::is_same_v<typename Policy::lock_type, tlsresume::NoLock>;

  std::optional<Session> take(const PeerKey& key) { return cache_.take(key); }
  bool put(const PeerKey& key, Session s) { return cache_.put(key, std::move(s)); }
  [[nodiscard]] tlsresume::CacheStats stats() const { return cache_.stats(); }

 private:
  tlsresume::SessionCache<BenchTag, Policy> cache_;
};

/// The baseline: one mutex, an unordered_map from "host:port" to an LRU list node, the list
/// most recently used first; per key up to 4 TLS 1.3 tickets (newest last, handed out once) and
/// one TLS 1.2 session (handed out as a new reference, kept). Released sessions are freed after
/// unlocking. No expiry, no checks: the design as Go's and rustls's caches have it.
class Baseline {
 public:
  using key_type = std::string;
  static constexpr bool multi_thread = true;
  explicit Baseline(std::size_t capacity) : capacity_(capacity) {}

  std::optional<Session> take(const std::string& key) {
    std::optional<Session> out;
    std::lock_guard lock(mutex_);
    const auto it = map_.find(key);
    if (it == map_.end()) {
      ++misses_;
      return out;
    }
    const auto e = it->second;
    if (!e->tickets.empty()) {
      out.emplace(std::move(e->tickets.back()));
      e->tickets.pop_back();
    } else if (e->tls12) {
      out.emplace(*e->tls12);  // SSL_SESSION_up_ref
    }
    if (e->tickets.empty() && !e->tls12) {
      map_.erase(it);
      lru_.erase(e);
    } else {
      lru_.splice(lru_.begin(), lru_, e);
    }
    ++(out ? hits_ : misses_);
    return out;
  }

  bool put(const std::string& key, Session s) {
    const bool tls13 = SSL_SESSION_get_protocol_version(s.native_handle()) >= TLS1_3_VERSION;
    std::vector<Session> victims;  // destroyed after the lock is released
    std::lock_guard lock(mutex_);
    auto it = map_.find(key);
    if (it == map_.end()) {
      if (map_.size() >= capacity_ && !lru_.empty()) {
        Entry& old = lru_.back();
        for (Session& t : old.tickets) {
          victims.push_back(std::move(t));
        }
        if (old.tls12) {
          victims.push_back(std::move(*old.tls12));
        }
        map_.erase(old.key);
        lru_.pop_back();
      }
      lru_.push_front(Entry{key, {}, std::nullopt});
      it = map_.emplace(key, lru_.begin()).first;
    } else {
      lru_.splice(lru_.begin(), lru_, it->second);
    }
    Entry& e = *it->second;
    if (tls13) {
      e.tickets.push_back(std::move(s));
      if (e.tickets.size() > 4) {
        victims.push_back(std::move(e.tickets.front()));
        e.tickets.erase(e.tickets.begin());
      }
    } else {
      if (e.tls12) {
        victims.push_back(std::move(*e.tls12));
      }
      e.tls12 = std::move(s);
    }
    ++stored_;
    return true;
  }

  struct Counts {
    std::uint64_t hits, misses, stored;
    std::size_t sessions, peers;
  };
  [[nodiscard]] Counts counts() {
    std::lock_guard lock(mutex_);
    std::size_t sessions = 0;
    for (const Entry& e : lru_) {
      sessions += e.tickets.size() + (e.tls12 ? 1 : 0);
    }
    return {hits_, misses_, stored_, sessions, map_.size()};
  }

 private:
  struct Entry {
    std::string key;
    std::vector<Session> tickets;  // newest last
    std::optional<Session> tls12;
  };
  std::mutex mutex_;
  std::list<Entry> lru_;
  std::unordered_map<std::string, std::list<Entry>::iterator> map_;
  std::size_t capacity_;
  std::uint64_t hits_ = 0, misses_ = 0, stored_ = 0;
};

using Single = Ours<Raised<tlsresume::SingleThreadPolicy>>;
using Safe = Ours<Raised<tlsresume::ThreadSafePolicy>>;
using Sharded = Ours<Raised<tlsresume::ShardedPolicy>>;

struct Caches {
  explicit Caches(std::size_t capacity) : baseline(capacity) {}
  Single single;
  Safe safe;
  Sharded sharded;
  Baseline baseline;
  template <class F> void each(F&& f) {
    f(single, "SingleThreadPolicy");
    f(safe, "ThreadSafePolicy");
    f(sharded, "ShardedPolicy");
    f(baseline, "baseline");
  }
};

// ---------------------------------------------------------------------------------------------
// Keys and sessions

struct KeySet {
  std::vector<PeerKey> peer;
  std::vector<std::string> text;  // "host:port", the baseline's key
  std::vector<PeerKey> absent_peer;
  std::vector<std::string> absent_text;

  template <class C> const typename C::key_type& key(std::size_t i) const {
    if constexpr (std::is_same_v<typename C::key_type, PeerKey>) {
      return peer[i];
    } else {
      return text[i];
    }
  }
  template <class C> const typename C::key_type& absent(std::size_t i) const {
    if constexpr (std::is_same_v<typename C::key_type, PeerKey>) {
      return absent_peer[i % absent_peer.size()];
    } else {
      return absent_text[i % absent_text.size()];
    }
  }
};

std::string host_name(std::size_t i, const char* prefix) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s%07zu.example", prefix, i);
  return buf;
}

KeySet make_keys(const Ctx& ctx, std::size_t peers) {
  KeySet ks;
  ks.peer.reserve(peers);
  ks.text.reserve(peers);
  for (std::size_t i = 0; i < peers; ++i) {
    const std::string host = host_name(i, "peer");
    ks.peer.push_back(ctx.key_for(host, 443));
    ks.text.push_back(host + ":443");
  }
  const std::size_t absent = std::min<std::size_t>(peers, 4096);
  for (std::size_t i = 0; i < absent; ++i) {
    const std::string host = host_name(i, "absent");
    ks.absent_peer.push_back(ctx.key_for(host, 443));
    ks.absent_text.push_back(host + ":443");
  }
  return ks;
}

/// A session received from a local server over a real handshake (TLS 1.3 ticket or TLS 1.2).
Session real_session(Ctx& ctx, tlsresume::ProtocolVersion max_version) {
  tlsresume::testing::ServerOptions options;
  options.max_version = max_version;
  return bench::received_session(ctx, options);
}

Session dup(const Ctx& ctx, const Session& s) {
  SSL_SESSION* copy = SSL_SESSION_dup(s.native_handle());
  if (copy == nullptr) {
    throw std::runtime_error("SSL_SESSION_dup failed");
  }
  return ctx.adopt_session(copy);
}

// ---------------------------------------------------------------------------------------------
// Measurement

std::int64_t now_ns() noexcept { return bench::wall_ns(); }

/// The median cost of reading the clock twice back to back, subtracted from every sample.
double clock_overhead_ns() {
  std::vector<double> v;
  v.reserve(20000);
  for (int i = 0; i < 20000; ++i) {
    const std::int64_t a = now_ns();
    const std::int64_t b = now_ns();
    v.push_back(static_cast<double>(b - a));
  }
  return bench::median(std::move(v));
}

struct Latency {
  std::size_t peers = 0;
  std::string cache;
  std::string op;
  std::vector<double> samples;      // ns, all rounds
  std::vector<double> round_median;  // ns, one per round
};

struct Throughput {
  std::size_t peers = 0;
  std::string workload;
  std::string cache;
  unsigned threads = 1;
  std::vector<double> ops_per_s;  // one per round
};

struct Options {
  std::vector<std::size_t> peers{100, 10'000, 1'000'000};
  std::size_t rounds = 5;
  std::size_t ops = 20'000;  // timed operations of each kind per cache per round
  std::size_t duration_ms = 200;
  std::string json;
  bool quick = false;
};

struct Run {
  Options o;
  Ctx ctx;
  double overhead = 0;
  std::vector<Latency> latency;
  std::vector<Throughput> throughput;
  std::vector<std::string> notes;
  bool sane = true;

  Latency& lat(std::size_t peers, const std::string& cache, const std::string& op) {
    for (Latency& l : latency) {
      if (l.peers == peers && l.cache == cache && l.op == op) {
        return l;
      }
    }
    latency.push_back(Latency{peers, cache, op, {}, {}});
    return latency.back();
  }
  Throughput& thr(std::size_t peers, const std::string& workload, const std::string& cache, unsigned threads) {
    for (Throughput& t : throughput) {
      if (t.peers == peers && t.workload == workload && t.cache == cache && t.threads == threads) {
        return t;
      }
    }
    throughput.push_back(Throughput{peers, workload, cache, threads, {}});
    return throughput.back();
  }
  void insane(const std::string& what) {
    std::fprintf(stderr, "cache: NOT SANE: %s\n", what.c_str());
    sane = false;
  }
};

void record(Run& run, std::size_t peers, const char* cache, const char* op, std::vector<double>& samples) {
  for (double& s : samples) {
    s = std::max(0.0, s - run.overhead);
  }
  Latency& l = run.lat(peers, cache, op);
  l.round_median.push_back(bench::median(samples));
  l.samples.insert(l.samples.end(), samples.begin(), samples.end());
}

/// One round of single-thread latency on the ticket population: take, put back, miss.
template <class C>
void ticket_latency_round(Run& run, C& c, const char* name, const KeySet& ks, const std::vector<std::uint32_t>& order,
                          std::size_t start) {
  const std::size_t n = run.o.ops;
  std::vector<double> take, put, miss;
  take.reserve(n);
  put.reserve(n);
  miss.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& key = ks.template key<C>(order[(start + i) % order.size()]);
    const std::int64_t t0 = now_ns();
    std::optional<Session> s = c.take(key);
    const std::int64_t t1 = now_ns();
    if (!s) {
      run.insane(std::string(name) + ": take missed a stored ticket");
      return;
    }
    const std::int64_t t2 = now_ns();
    const bool ok = c.put(key, std::move(*s));
    const std::int64_t t3 = now_ns();
    if (!ok) {
      run.insane(std::string(name) + ": put refused a ticket");
      return;
    }
    const auto& absent = ks.template absent<C>(start + i);
    const std::int64_t t4 = now_ns();
    std::optional<Session> m = c.take(absent);
    const std::int64_t t5 = now_ns();
    if (m) {
      run.insane(std::string(name) + ": take found a session for an absent peer");
      return;
    }
    take.push_back(static_cast<double>(t1 - t0));
    put.push_back(static_cast<double>(t3 - t2));
    miss.push_back(static_cast<double>(t5 - t4));
  }
  const std::size_t peers = ks.peer.size();
  record(run, peers, name, "take", take);
  record(run, peers, name, "put", put);
  record(run, peers, name, "miss", miss);
}

/// One round of single-thread latency on the TLS 1.2 population: take (the session stays).
template <class C>
void tls12_latency_round(Run& run, C& c, const char* name, const KeySet& ks, const std::vector<std::uint32_t>& order,
                         std::size_t start) {
  const std::size_t n = run.o.ops;
  std::vector<double> take;
  take.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& key = ks.template key<C>(order[(start + i) % order.size()]);
    const std::int64_t t0 = now_ns();
    std::optional<Session> s = c.take(key);
    const std::int64_t t1 = now_ns();
    if (!s) {
      run.insane(std::string(name) + ": take missed a stored TLS 1.2 session");
      return;
    }
    take.push_back(static_cast<double>(t1 - t0));
  }
  record(run, ks.peer.size(), name, "take12", take);
}

std::uint64_t xorshift(std::uint64_t& s) noexcept {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

/// Operations per second with `threads` threads on random peers for the run's duration.
template <class C> double throughput_run(const Run& run, C& c, const KeySet& ks, bool tickets, unsigned threads) {
  std::atomic<bool> go{false};
  std::atomic<bool> stop{false};
  std::atomic<unsigned> ready{0};
  std::vector<std::uint64_t> ops(threads, 0);
  std::vector<std::thread> pool;
  const std::size_t peers = ks.peer.size();
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::uint64_t rng = 0x9e3779b97f4a7c15ULL * (t + 1) + static_cast<std::uint64_t>(now_ns());
      std::uint64_t done = 0;
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) {
        std::this_thread::yield();
      }
      while (!stop.load(std::memory_order_relaxed)) {
        for (int j = 0; j < 32; ++j) {
          const auto& key = ks.template key<C>(static_cast<std::size_t>(xorshift(rng) % peers));
          std::optional<Session> s = c.take(key);
          ++done;
          if (tickets && s) {
            (void)c.put(key, std::move(*s));
            ++done;
          }
        }
      }
      ops[t] = done;
    });
  }
  while (ready.load() != threads) {
    std::this_thread::yield();
  }
  const std::int64_t start = now_ns();
  go.store(true, std::memory_order_release);
  std::this_thread::sleep_for(std::chrono::milliseconds(run.o.duration_ms));
  stop.store(true, std::memory_order_relaxed);
  for (std::thread& th : pool) {
    th.join();
  }
  const std::int64_t end = now_ns();
  const double total = static_cast<double>(std::accumulate(ops.begin(), ops.end(), std::uint64_t{0}));
  return total * 1e9 / static_cast<double>(std::max<std::int64_t>(1, end - start));
}

std::vector<std::uint32_t> shuffled(std::size_t n, std::uint32_t seed) {
  std::vector<std::uint32_t> v(n);
  std::iota(v.begin(), v.end(), 0U);
  std::mt19937 rng(seed);
  std::shuffle(v.begin(), v.end(), rng);
  return v;
}

/// Bytes of memory available (MemAvailable), or 0 if unknown.
std::size_t mem_available() {
  std::ifstream f("/proc/meminfo");
  std::string name;
  std::size_t kb = 0;
  std::string unit;
  while (f >> name >> kb >> unit) {
    if (name == "MemAvailable:") {
      return kb * 1024;
    }
  }
  return 0;
}

/// Checks our caches' counters (stored == taken + ... + sessions; hits == taken + reused) and
/// that every cache still holds `sessions` sessions for `peers` peers, nothing evicted.
void check(Run& run, Caches& caches, std::size_t peers, std::size_t sessions, const char* phase) {
  caches.each([&](auto& c, const char* name) {
    using C = std::remove_reference_t<decltype(c)>;
    const std::string where = std::string(phase) + " " + name + " at " + std::to_string(peers) + " peers";
    if constexpr (std::is_same_v<C, Baseline>) {
      const auto k = c.counts();
      if (k.sessions != sessions || k.peers != peers) {
        run.insane(where + ": baseline holds " + std::to_string(k.sessions) + " sessions");
      }
    } else {
      const tlsresume::CacheStats s = c.stats();
      const bool balanced = s.stored == s.taken + s.expired + s.evicted + s.superseded + s.invalidated + s.erased + s.sessions &&
                            s.hits == s.taken + s.reused;
      if (!balanced || s.sessions != sessions || s.peers != peers || s.evicted != 0 || s.expired != 0 ||
          s.refused != 0) {
        run.insane(where + ": stats do not add up (sessions " + std::to_string(s.sessions) + ", peers " +
                   std::to_string(s.peers) + ", evicted " + std::to_string(s.evicted) + ")");
      }
    }
  });
}

template <class F> void each_threaded(Caches& caches, F&& f) {
  caches.each([&](auto& c, const char* name) {
    using C = std::remove_reference_t<decltype(c)>;
    f(c, name, 1U);
    if constexpr (C::multi_thread) {
      f(c, name, 2U);
    }
  });
}

void run_peers(Run& run, std::size_t peers, const Session& ticket, const Session& tls12) {
  const Options& o = run.o;
  std::printf("# %zu peers: building keys and sessions\n", peers);
  std::fflush(stdout);
  const KeySet ks = make_keys(run.ctx, peers);
  const auto order = shuffled(peers, 12345U + static_cast<std::uint32_t>(peers));

  // Phase 1: two TLS 1.3 tickets per peer.
  {
    auto caches = std::make_unique<Caches>(peers);
    {
      std::vector<Session> pool;
      pool.reserve(2 * peers);
      for (std::size_t i = 0; i < 2 * peers; ++i) {
        pool.push_back(dup(run.ctx, ticket));
      }
      caches->each([&](auto& c, const char*) {
        using C = std::remove_reference_t<decltype(c)>;
        for (std::size_t i = 0; i < peers; ++i) {
          (void)c.put(ks.template key<C>(i), pool[2 * i]);
          (void)c.put(ks.template key<C>(i), pool[2 * i + 1]);
        }
      });
    }  // the caches hold the only references now
    check(run, *caches, peers, 2 * peers, "after filling");
    for (std::size_t round = 0; round < o.rounds; ++round) {
      caches->each([&](auto& c, const char* name) { ticket_latency_round(run, c, name, ks, order, round * o.ops); });
    }
    for (std::size_t round = 0; round < o.rounds; ++round) {
      each_threaded(*caches, [&](auto& c, const char* name, unsigned threads) {
        run.thr(peers, "ticket cycle", name, threads).ops_per_s.push_back(throughput_run(run, c, ks, true, threads));
      });
    }
    check(run, *caches, peers, 2 * peers, "after the ticket phase");
  }

  // Phase 2: one TLS 1.2 session per peer.
  {
    auto caches = std::make_unique<Caches>(peers);
    {
      std::vector<Session> pool;
      pool.reserve(peers);
      for (std::size_t i = 0; i < peers; ++i) {
        pool.push_back(dup(run.ctx, tls12));
      }
      caches->each([&](auto& c, const char*) {
        using C = std::remove_reference_t<decltype(c)>;
        for (std::size_t i = 0; i < peers; ++i) {
          (void)c.put(ks.template key<C>(i), pool[i]);
        }
      });
    }
    check(run, *caches, peers, peers, "after filling (TLS 1.2)");
    for (std::size_t round = 0; round < o.rounds; ++round) {
      caches->each([&](auto& c, const char* name) { tls12_latency_round(run, c, name, ks, order, round * o.ops); });
    }
    for (std::size_t round = 0; round < o.rounds; ++round) {
      each_threaded(*caches, [&](auto& c, const char* name, unsigned threads) {
        run.thr(peers, "tls12 hits", name, threads).ops_per_s.push_back(throughput_run(run, c, ks, false, threads));
      });
    }
    check(run, *caches, peers, peers, "after the TLS 1.2 phase");
  }
}

/// Key construction per connection: ctx.key_for(host, port) against building "host:port".
void key_costs(Run& run) {
  const std::size_t n = run.o.quick ? 100 : 20'000;
  std::vector<std::string> hosts;
  for (std::size_t i = 0; i < n; ++i) {
    hosts.push_back(host_name(i, "peer"));
  }
  std::vector<double> ours, text;
  std::size_t sink = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t t0 = now_ns();
    const PeerKey k = run.ctx.key_for(hosts[i], 443);
    const std::int64_t t1 = now_ns();
    const std::string s = hosts[i] + ":" + std::to_string(443);
    const std::int64_t t2 = now_ns();
    sink += k.hash() + s.size();
    ours.push_back(static_cast<double>(t1 - t0));
    text.push_back(static_cast<double>(t2 - t1));
  }
  if (sink == 0) {
    run.insane("key construction");
  }
  record(run, 0, "ThreadSafePolicy", "key_for", ours);
  record(run, 0, "baseline", "host:port string", text);
}

const Latency* find_lat(const Run& run, std::size_t peers, const char* cache, const char* op) {
  for (const Latency& l : run.latency) {
    if (l.peers == peers && l.cache == cache && l.op == op) {
      return &l;
    }
  }
  return nullptr;
}
const Throughput* find_thr(const Run& run, std::size_t peers, const char* workload, const char* cache, unsigned threads) {
  for (const Throughput& t : run.throughput) {
    if (t.peers == peers && t.workload == workload && t.cache == cache && t.threads == threads) {
      return &t;
    }
  }
  return nullptr;
}

/// Median of per-round ratios a/b.
double round_ratio(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> r;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (b[i] > 0) {
      r.push_back(a[i] / b[i]);
    }
  }
  return bench::median(r);
}

struct Target {
  std::string name;
  double value;
  std::string rule;
  bool met;
};

std::vector<Target> targets(const Run& run) {
  std::vector<Target> out;
  for (const std::size_t peers : run.o.peers) {
    for (const char* op : {"take", "take12"}) {
      const Latency* base = find_lat(run, peers, "baseline", op);
      for (const char* cache : {"SingleThreadPolicy", "ThreadSafePolicy", "ShardedPolicy"}) {
        const Latency* ours = find_lat(run, peers, cache, op);
        if (base != nullptr && ours != nullptr) {
          const double r = round_ratio(ours->round_median, base->round_median);
          out.push_back({std::string(op) + " median " + cache + "/baseline at " + std::to_string(peers) + " peers", r,
                         "<= 1.00", r <= 1.0});
        }
      }
    }
    for (const char* workload : {"tls12 hits", "ticket cycle"}) {
      const Throughput* base = find_thr(run, peers, workload, "baseline", 2);
      const Throughput* sharded = find_thr(run, peers, workload, "ShardedPolicy", 2);
      if (base != nullptr && sharded != nullptr) {
        const double r = round_ratio(sharded->ops_per_s, base->ops_per_s);
        out.push_back({std::string(workload) + " 2-thread throughput ShardedPolicy/baseline at " + std::to_string(peers) +
                           " peers",
                       r, ">= 1.50", r >= 1.5});
      }
    }
  }
  return out;
}

void print(const Run& run) {
  std::printf("# cache: single-thread latency (ns/op, clock cost %.0f ns subtracted), %zu rounds x %zu ops\n",
              run.overhead, run.o.rounds, run.o.ops);
  std::printf("# %s\n", bench::machine_line().c_str());
  std::printf("\n%-9s %-20s %-18s %9s %9s %9s\n", "peers", "cache", "op", "median", "p99", "max");
  for (const Latency& l : run.latency) {
    std::printf("%-9zu %-20s %-18s %9.0f %9.0f %9.0f\n", l.peers, l.cache.c_str(), l.op.c_str(), bench::median(l.samples),
                bench::quantile(l.samples, 0.99), bench::max_of(l.samples));
  }
  std::printf("\n# throughput (million operations/s, median of %zu alternating runs of %zu ms)\n", run.o.rounds,
              run.o.duration_ms);
  std::printf("%-9s %-14s %-20s %8s %10s %10s %10s\n", "peers", "workload", "cache", "threads", "Mops/s", "min", "max");
  for (const Throughput& t : run.throughput) {
    std::printf("%-9zu %-14s %-20s %8u %10.2f %10.2f %10.2f\n", t.peers, t.workload.c_str(), t.cache.c_str(), t.threads,
                bench::median(t.ops_per_s) / 1e6, bench::min_of(t.ops_per_s) / 1e6, bench::max_of(t.ops_per_s) / 1e6);
  }
  std::printf("\n# targets (median of per-round ratios)\n");
  for (const Target& t : targets(run)) {
    std::printf("%-72s %6.3f  %s  %s\n", t.name.c_str(), t.value, t.rule.c_str(), t.met ? "met" : "MISSED");
  }
  for (const std::string& n : run.notes) {
    std::printf("note: %s\n", n.c_str());
  }
}

std::string to_json(const Run& run) {
  bench::Json j;
  j.raw("{").key("benchmark").str("cache").raw(",");
  j.key("machine");
  bench::machine_json(j);
  j.raw(",").key("load_average_at_end").str(bench::load_average()).raw(",");
  j.key("rounds").integer(static_cast<long long>(run.o.rounds)).raw(",");
  j.key("ops_per_round").integer(static_cast<long long>(run.o.ops)).raw(",");
  j.key("duration_ms").integer(static_cast<long long>(run.o.duration_ms)).raw(",");
  j.key("clock_overhead_ns").num(run.overhead).raw(",");
  j.key("quick").boolean(run.o.quick).raw(",");
  j.key("latency").raw("[");
  for (std::size_t i = 0; i < run.latency.size(); ++i) {
    const Latency& l = run.latency[i];
    j.raw(i == 0 ? "" : ",").raw("{").key("peers").integer(static_cast<long long>(l.peers)).raw(",");
    j.key("cache").str(l.cache).raw(",").key("op").str(l.op).raw(",");
    j.key("samples").integer(static_cast<long long>(l.samples.size())).raw(",");
    j.key("median_ns").num(bench::median(l.samples)).raw(",");
    j.key("p99_ns").num(bench::quantile(l.samples, 0.99)).raw(",");
    j.key("max_ns").num(bench::max_of(l.samples)).raw(",");
    j.key("round_medians_ns").nums(l.round_median).raw("}");
  }
  j.raw("],").key("throughput").raw("[");
  for (std::size_t i = 0; i < run.throughput.size(); ++i) {
    const Throughput& t = run.throughput[i];
    j.raw(i == 0 ? "" : ",").raw("{").key("peers").integer(static_cast<long long>(t.peers)).raw(",");
    j.key("workload").str(t.workload).raw(",").key("cache").str(t.cache).raw(",");
    j.key("threads").integer(t.threads).raw(",");
    j.key("ops_per_s").num(bench::median(t.ops_per_s)).raw(",");
    j.key("runs").nums(t.ops_per_s).raw("}");
  }
  j.raw("],").key("targets").raw("[");
  const auto ts = targets(run);
  for (std::size_t i = 0; i < ts.size(); ++i) {
    j.raw(i == 0 ? "" : ",").raw("{").key("name").str(ts[i].name).raw(",").key("value").num(ts[i].value).raw(",");
    j.key("rule").str(ts[i].rule).raw(",").key("met").boolean(ts[i].met).raw("}");
  }
  j.raw("],").key("notes").raw("[");
  for (std::size_t i = 0; i < run.notes.size(); ++i) {
    j.raw(i == 0 ? "" : ",").str(run.notes[i]);
  }
  j.raw("]}");
  return j.text();
}

std::vector<std::size_t> parse_list(const std::string& s) {
  std::vector<std::size_t> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) {
      out.push_back(static_cast<std::size_t>(std::stoull(item)));
    }
  }
  return out;
}

/// Ticket cycles on random peers (the callgrind mode): take the newest ticket, put it back.
template <class C> std::size_t cycles(C& c, const KeySet& ks, const std::vector<std::uint32_t>& order, std::size_t n) {
  std::size_t hits = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const auto& key = ks.template key<C>(order[i % order.size()]);
    std::optional<Session> s = c.take(key);
    if (s) {
      ++hits;
      (void)c.put(key, std::move(*s));
    }
  }
  return hits;
}

struct CycleArgs {
  const KeySet* keys;
  const std::vector<std::uint32_t>* order;
  std::size_t n;
  std::size_t hits;
};

}  // namespace

/// The measured loops of --callgrind, not inlined and with C linkage so that callgrind can
/// collect inside one of them only.
extern "C" __attribute__((noinline)) void tlsresume_bench_cycles_ours(void* cache, void* args) {
  auto* a = static_cast<CycleArgs*>(args);
  a->hits = cycles(*static_cast<Safe*>(cache), *a->keys, *a->order, a->n);
}
extern "C" __attribute__((noinline)) void tlsresume_bench_cycles_baseline(void* cache, void* args) {
  auto* a = static_cast<CycleArgs*>(args);
  a->hits = cycles(*static_cast<Baseline*>(cache), *a->keys, *a->order, a->n);
}

namespace {

int run_callgrind(Ctx& ctx, const Session& ticket, std::size_t peers, std::size_t n) {
  const KeySet ks = make_keys(ctx, peers);
  const auto order = shuffled(peers, 777U);
  Safe ours;
  Baseline base(peers);
  for (std::size_t i = 0; i < peers; ++i) {
    for (int t = 0; t < 2; ++t) {
      const Session s = dup(ctx, ticket);
      (void)ours.put(ks.key<Safe>(i), s);
      (void)base.put(ks.key<Baseline>(i), s);
    }
  }
  CycleArgs a{&ks, &order, n, 0};
  tlsresume_bench_cycles_ours(&ours, &a);
  const std::size_t ours_hits = a.hits;
  tlsresume_bench_cycles_baseline(&base, &a);
  std::printf("%zu ticket cycles on %zu peers: ThreadSafePolicy %zu hits, baseline %zu hits\n", n, peers, ours_hits,
              a.hits);
  return ours_hits == n && a.hits == n ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) try {
  bench::Args args(argc, argv);
  Options o;
  o.quick = args.flag("quick");
  if (o.quick) {
    o.peers = {100};
    o.rounds = 2;
    o.ops = 200;
    o.duration_ms = 5;
  }
  const std::string peers_arg = args.value("peers");
  if (!peers_arg.empty()) {
    o.peers = parse_list(peers_arg);
  }
  o.rounds = static_cast<std::size_t>(args.number("rounds", static_cast<long long>(o.rounds)));
  o.ops = static_cast<std::size_t>(args.number("ops", static_cast<long long>(o.ops)));
  o.duration_ms = static_cast<std::size_t>(args.number("duration-ms", static_cast<long long>(o.duration_ms)));
  o.json = args.value("json");
  const auto callgrind = static_cast<std::size_t>(args.number("callgrind", 0));
  args.finish();
  if (callgrind > 0) {
    Ctx ctx = Ctx::create();
    const Session ticket = real_session(ctx, tlsresume::ProtocolVersion::tls1_3);
    return run_callgrind(ctx, ticket, peers_arg.empty() || o.peers.empty() ? 10'000 : o.peers.front(), callgrind);
  }
  if (o.rounds == 0 || o.ops == 0 || o.peers.empty()) {
    throw std::runtime_error("--rounds, --ops and --peers must not be empty or zero");
  }

  Run run{o, Ctx::create(), 0, {}, {}, {}, true};
  run.overhead = clock_overhead_ns();
  const Session ticket = real_session(run.ctx, tlsresume::ProtocolVersion::tls1_3);
  const Session tls12 = real_session(run.ctx, tlsresume::ProtocolVersion::tls1_2);
  if (ticket.protocol_version() != tlsresume::ProtocolVersion::tls1_3 ||
      tls12.protocol_version() != tlsresume::ProtocolVersion::tls1_2) {
    throw std::runtime_error("unexpected protocol versions of the sample sessions");
  }
  key_costs(run);
  for (std::size_t& peers : run.o.peers) {
    // Each peer costs about 8 KB here at most: two SSL_SESSION copies (~1.3 KB each) in four
    // caches (~1 KB of keys and nodes per peer each). Measure what fits.
    const std::size_t need = peers * 8192;
    const std::size_t have = mem_available();
    if (have != 0 && need > have / 10 * 8) {
      const std::size_t fits = std::max<std::size_t>(100, have / 10 * 8 / 8192);
      run.notes.push_back(std::to_string(peers) + " peers did not fit in memory (" + std::to_string(have >> 20) +
                          " MiB available): measured at " + std::to_string(fits) + " peers");
      peers = fits;
    }
    run_peers(run, peers, ticket, tls12);
  }
  print(run);
  if (!run.o.json.empty()) {
    bench::write_text(run.o.json, to_json(run));
  }
  if (ERR_peek_error() != 0) {
    run.insane("OpenSSL error queue not empty at the end");
  }
  std::printf("\n%s\n", run.sane ? "sanity: every take hit, every miss missed, every cache's counters add up"
                                 : "sanity: FAILED");
  return run.sane ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "cache: %s\n", e.what());
  return 2;
}
