// bench/memory: bytes per cached session, measured with the allocator's own statistics
// (glibc mallinfo2: uordblks + hblkhd, the bytes in use in the heap and in mmap'd blocks).
//
//   1. the session itself: 10,000 live SSL_SESSION objects, each with its own parsed peer
//      certificate (Context::copy_session: i2d + d2i, as sessions from 10,000 different full
//      handshakes would have), and for comparison 10,000 SSL_SESSION_dup copies (which share
//      one certificate by reference, as tickets from one handshake do);
//   2. our overhead: what the SessionCache allocates to hold them (keys, LRU and map nodes, the
//      pointer index, entries), sessions and keys being allocated beforehand; with one TLS 1.3
//      ticket per peer (10,000 peers) and four (2,500 peers). Compared with `stats().bytes`,
//      the cache's own estimate (DER length + fixed overheads), and with the baseline design
//      (mutex + unordered_map<string> + list LRU) holding the same sessions.
//
//   memory [--sessions N] [--json PATH|-] [--quick]
//
// Under a sanitizer the allocator is not glibc's and the statistics say nothing; the benchmark
// then reports zeros and checks only the cache's counters.

#include <malloc.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <list>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <tlsresume/testing.hpp>
#include <tlsresume/tlsresume.hpp>

#include "common.hpp"

namespace {

using namespace std::chrono_literals;
using tlsresume::PeerKey;
using tlsresume::testing::KeyType;

struct BenchTag {};
using Ctx = tlsresume::Context<BenchTag>;
using Session = tlsresume::BoundSession<BenchTag>;

struct Policy {  // ThreadSafePolicy with room for every peer
  using lock_type = std::mutex;
  using clock_type = std::chrono::system_clock;
  static constexpr std::size_t max_peers = std::size_t{1} << 24;
  static constexpr std::size_t max_tickets_per_peer = 4;
};
using Cache = tlsresume::SessionCache<BenchTag, Policy>;

/// Bytes the allocator has handed out and not taken back.
std::int64_t allocated() {
  const struct mallinfo2 mi = ::mallinfo2();
  return static_cast<std::int64_t>(mi.uordblks + mi.hblkhd);
}

/// A TLS 1.3 ticket received from a local server whose certificate has a `key` key.
Session real_ticket(Ctx& ctx, KeyType key) {
  tlsresume::testing::ServerOptions options;
  options.key_type = key;
  return bench::received_session(ctx, options, tlsresume::ProtocolVersion::tls1_3);
}

/// The baseline design holding sessions: what it allocates per entry.
class Baseline {
 public:
  void put(const std::string& key, Session s) {
    std::lock_guard lock(mutex_);
    auto it = map_.find(key);
    if (it == map_.end()) {
      lru_.push_front(Entry{key, {}, std::nullopt});
      it = map_.emplace(key, lru_.begin()).first;
    }
    it->second->tickets.push_back(std::move(s));
  }

 private:
  struct Entry {
    std::string key;
    std::vector<Session> tickets;
    std::optional<Session> tls12;
  };
  std::mutex mutex_;
  std::list<Entry> lru_;
  std::unordered_map<std::string, std::list<Entry>::iterator> map_;
};

struct Scenario {
  std::string name;
  std::size_t peers = 0;
  std::size_t sessions = 0;
  double allocator_per_session = 0;  // our overhead by mallinfo2
  double estimate_per_session = 0;   // stats().bytes / sessions - detail::session_bytes
  double stats_bytes_per_session = 0;
  double baseline_per_session = 0;   // the baseline's overhead by mallinfo2
};

struct KeyResult {
  KeyType key{};
  std::size_t sessions = 0;
  double der_bytes = 0;             // i2d_SSL_SESSION length
  double session_own_cert = 0;      // bytes per SSL_SESSION with its own peer certificate
  double session_dup = 0;           // bytes per SSL_SESSION_dup (certificate shared)
  std::vector<Scenario> scenarios;
};

bool sane = true;
void insane(const std::string& what) {
  std::fprintf(stderr, "memory: NOT SANE: %s\n", what.c_str());
  sane = false;
}

Scenario scenario(const Ctx& ctx, const Session& sample, std::size_t peers, std::size_t per_peer) {
  const std::size_t n = peers * per_peer;
  Scenario sc;
  sc.name = std::to_string(per_peer) + (per_peer == 1 ? " ticket" : " tickets") + " per peer";
  sc.peers = peers;
  sc.sessions = n;
  std::vector<PeerKey> keys;
  std::vector<std::string> texts;
  keys.reserve(peers);
  texts.reserve(peers);
  for (std::size_t i = 0; i < peers; ++i) {
    char host[64];
    std::snprintf(host, sizeof host, "peer%07zu.example", i);
    keys.push_back(ctx.key_for(host, 443));
    texts.push_back(std::string(host) + ":443");
  }
  std::vector<Session> sessions;
  sessions.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    sessions.push_back(ctx.copy_session(sample));
  }
  {
    Cache cache;
    const std::int64_t before = allocated();
    for (std::size_t i = 0; i < n; ++i) {
      (void)cache.put(keys[i / per_peer], sessions[i]);  // a reference of the cache's own
    }
    const std::int64_t after = allocated();
    const tlsresume::CacheStats s = cache.stats();
    if (s.sessions != n || s.peers != peers || s.stored != n) {
      insane(sc.name + ": the cache holds " + std::to_string(s.sessions) + " sessions for " + std::to_string(s.peers) +
             " peers");
    }
    sc.allocator_per_session = static_cast<double>(after - before) / static_cast<double>(n);
    sc.stats_bytes_per_session = static_cast<double>(s.bytes) / static_cast<double>(n);
    // stats().bytes counts each session as detail::session_bytes (an estimate of the SSL_SESSION)
    // plus our overhead: subtract the former to get the latter.
    sc.estimate_per_session =
        sc.stats_bytes_per_session - static_cast<double>(tlsresume::detail::session_bytes(sample.native_handle()));
  }
  {
    Baseline base;
    const std::int64_t before = allocated();
    for (std::size_t i = 0; i < n; ++i) {
      base.put(texts[i / per_peer], sessions[i]);
    }
    const std::int64_t after = allocated();
    sc.baseline_per_session = static_cast<double>(after - before) / static_cast<double>(n);
  }
  return sc;
}

KeyResult measure(KeyType key, std::size_t n) {
  KeyResult r;
  r.key = key;
  r.sessions = n;
  Ctx ctx = Ctx::create();
  const Session sample = real_ticket(ctx, key);
  r.der_bytes = static_cast<double>(sample.to_der().size());
  {
    std::vector<Session> v;
    v.reserve(n);
    const std::int64_t before = allocated();
    for (std::size_t i = 0; i < n; ++i) {
      v.push_back(ctx.copy_session(sample));
    }
    r.session_own_cert = static_cast<double>(allocated() - before) / static_cast<double>(n);
  }
  {
    std::vector<Session> v;
    v.reserve(n);
    const std::int64_t before = allocated();
    for (std::size_t i = 0; i < n; ++i) {
      SSL_SESSION* copy = SSL_SESSION_dup(sample.native_handle());
      if (copy == nullptr) {
        throw std::runtime_error("SSL_SESSION_dup");
      }
      v.push_back(ctx.adopt_session(copy));
    }
    r.session_dup = static_cast<double>(allocated() - before) / static_cast<double>(n);
  }
  r.scenarios.push_back(scenario(ctx, sample, n, 1));
  r.scenarios.push_back(scenario(ctx, sample, n / 4 == 0 ? 1 : n / 4, 4));
  return r;
}

const char* key_label(KeyType k) { return k == KeyType::ecdsa_p256 ? "ECDSA P-256" : "RSA-2048"; }
const char* key_id(KeyType k) { return k == KeyType::ecdsa_p256 ? "ecdsa" : "rsa"; }

}  // namespace

int main(int argc, char** argv) try {
  bench::Args args(argc, argv);
  const bool quick = args.flag("quick");
  const auto n = static_cast<std::size_t>(args.number("sessions", quick ? 100 : 10'000));
  const std::string json = args.value("json");
  args.finish();
  if (n < 4) {
    throw std::runtime_error("--sessions must be at least 4");
  }

  std::vector<KeyResult> results;
  for (KeyType k : {KeyType::ecdsa_p256, KeyType::rsa_2048}) {
    results.push_back(measure(k, n));
  }

  std::printf("# memory: bytes per cached TLS 1.3 session, by mallinfo2 (uordblks + hblkhd), %zu sessions\n", n);
  std::printf("# %s\n", bench::machine_line().c_str());
  for (const KeyResult& r : results) {
    std::printf("\n%s server certificate: DER of a session %.0f B\n", key_label(r.key), r.der_bytes);
    std::printf("  SSL_SESSION with its own peer certificate  %8.0f B\n", r.session_own_cert);
    std::printf("  SSL_SESSION_dup (certificate shared)        %8.0f B\n", r.session_dup);
    std::printf("  %-22s %7s %9s %14s %14s %12s %14s %14s\n", "cache", "peers", "sessions", "ours (malloc)",
                "ours (stats)", "stats.bytes", "baseline", "total/session");
    for (const Scenario& s : r.scenarios) {
      std::printf("  %-22s %7zu %9zu %12.0f B %12.0f B %10.0f B %12.0f B %12.0f B\n", s.name.c_str(), s.peers,
                  s.sessions, s.allocator_per_session, s.estimate_per_session, s.stats_bytes_per_session,
                  s.baseline_per_session, s.allocator_per_session + r.session_own_cert);
    }
  }
  std::printf("\n# target: our overhead <= 256 B per session beyond the SSL_SESSION\n");
  for (const KeyResult& r : results) {
    for (const Scenario& s : r.scenarios) {
      std::printf("  %-12s %-22s %6.0f B  %s\n", key_label(r.key), s.name.c_str(), s.allocator_per_session,
                  s.allocator_per_session <= 256 ? "met" : "MISSED");
    }
  }

  if (!json.empty()) {
    bench::Json j;
    j.raw("{").key("benchmark").str("memory").raw(",").key("machine");
    bench::machine_json(j);
    j.raw(",").key("sessions").integer(static_cast<long long>(n)).raw(",").key("results").raw("[");
    for (std::size_t i = 0; i < results.size(); ++i) {
      const KeyResult& r = results[i];
      j.raw(i == 0 ? "{" : ",{").key("key").str(key_id(r.key)).raw(",");
      j.key("der_bytes").num(r.der_bytes).raw(",");
      j.key("session_own_certificate_bytes").num(r.session_own_cert).raw(",");
      j.key("session_dup_bytes").num(r.session_dup).raw(",").key("scenarios").raw("[");
      for (std::size_t k = 0; k < r.scenarios.size(); ++k) {
        const Scenario& s = r.scenarios[k];
        j.raw(k == 0 ? "{" : ",{").key("name").str(s.name).raw(",");
        j.key("peers").integer(static_cast<long long>(s.peers)).raw(",");
        j.key("sessions").integer(static_cast<long long>(s.sessions)).raw(",");
        j.key("overhead_allocator_bytes").num(s.allocator_per_session).raw(",");
        j.key("overhead_estimate_bytes").num(s.estimate_per_session).raw(",");
        j.key("stats_bytes_per_session").num(s.stats_bytes_per_session).raw(",");
        j.key("baseline_overhead_bytes").num(s.baseline_per_session).raw(",");
        j.key("target_met").boolean(s.allocator_per_session <= 256).raw("}");
      }
      j.raw("]}");
    }
    j.raw("]}");
    bench::write_text(json, j.text());
  }
  if (ERR_peek_error() != 0) {
    insane("OpenSSL error queue not empty at the end");
  }
  std::printf("\n%s\n", sane ? "sanity: every cache holds every session" : "sanity: FAILED");
  return sane ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "memory: %s\n", e.what());
  return 2;
}
