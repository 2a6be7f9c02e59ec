#pragma once
// `SessionCache<Tag, Policy>`: the client session store, keyed by `PeerKey`.
//
// Per peer it keeps a small queue of TLS 1.3 tickets (newest first, at most
// `Policy::max_tickets_per_peer`) and at most one TLS 1.2 (or older) session. A TLS 1.3 ticket is
// handed out once (`take` removes it: RFC 8446 §C.4, and OpenSSL 3 treats a used ticket as spent);
// a TLS 1.2 session stays and may be offered again. Sessions are kept as live `BoundSession<Tag>`
// objects (one `SSL_SESSION` reference each, no DER round trip).
//
// Expiry. A session is usable until the earliest of
//   - creation (`SSL_SESSION_get_time`) + timeout (`SSL_SESSION_get_timeout`),
//   - creation + the server's ticket lifetime hint (`SSL_SESSION_get_ticket_lifetime_hint`; 0 = none),
//   - the peer certificate's notAfter (`SSL_SESSION_get0_peer`, `X509_get0_notAfter`, `ASN1_TIME_to_tm`),
//   - TLS 1.3 only: the original full handshake + 7 days (RFC 8446 §4.6.1). A ticket received on a
//     resumed connection inherits the time of the full handshake that started the chain; `put` takes
//     it in `PutOptions::original_full_handshake` (default: the session's creation time).
// The policy's clock (`Policy::clock_type::now()`) decides; OpenSSL's timestamps are only inputs.
// Expiry is checked on every lookup, by `purge_expired()`, and opportunistically by `put`/`take`
// on a shard not swept for `purge_interval`.
//
// Bounds. At most `Policy::max_peers` peers (least recently used peer evicted; a sharded policy
// splits the limit evenly over its shards, each with its own LRU), at most
// `Policy::max_tickets_per_peer` tickets per peer (the oldest evicted). Memory is approximated per
// session by `detail::session_bytes` (a fixed size for the `SSL_SESSION` plus its ticket, read
// once at `put`) plus a fixed overhead, plus a per-peer overhead, and reported by `stats().bytes`.
// (Measuring each session with `i2d_SSL_SESSION` cost ~9,000 instructions per `put`, a third of
// what tlsresume added to a resumed TLS 1.3 handshake: bench/handshake, docs/performance.md.)
//
// Locks. Each shard has its own lock (`Policy::lock_type`); it guards only our containers.
// No `SSL_SESSION_free` runs while a lock is held: sessions removed under it are moved into a local
// vector and released after it is unlocked, so OpenSSL callbacks that run on free (ex_data free
// functions, or a remove callback that calls `invalidate`) may re-enter the cache.
//
// Counters (`stats()`), per shard under its lock, summed over shards:
//   stored == taken + expired + evicted + superseded + invalidated + erased + sessions
//   hits   == taken + reused
//   puts   == stored + refused
// see `CacheStats` for each term.

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <functional>
#include <iterator>
#include <limits>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tlsresume/context.hpp"
#include "tlsresume/error.hpp"
#include "tlsresume/handle.hpp"
#include "tlsresume/peer_key.hpp"
#include "tlsresume/session.hpp"

namespace tlsresume {

/// A lock that does nothing: for a cache used by one thread only (`SingleThreadPolicy`).
struct NoLock {
  /// Does nothing.
  constexpr void lock() noexcept {}
  /// Does nothing.
  constexpr void unlock() noexcept {}
  /// Always succeeds.
  constexpr bool try_lock() noexcept { return true; }
};

/// A `lock_type` that splits the cache into `Shards` independent shards, each with its own
/// `Mutex`, LRU list and share of `max_peers`; a peer's shard is chosen by `PeerKey::hash()`.
template <class Mutex, std::size_t Shards> struct Sharded {
  static_assert(Shards >= 1, "Sharded<Mutex, Shards>: Shards must be at least 1");
};

namespace detail {

/// How a policy's `lock_type` lays the cache out: the mutex of one shard, and how many shards.
template <class L> struct cache_lock_layout {
  using mutex_type = L;
  static constexpr std::size_t shards = 1;
};
template <class M, std::size_t N> struct cache_lock_layout<Sharded<M, N>> {
  using mutex_type = M;
  static constexpr std::size_t shards = N;
};

template <class M>
concept basic_lockable = std::default_initializable<M> && requires(M& m) {
  m.lock();
  m.unlock();
};

}  // namespace detail

/// A `lock_type` a cache can use: a default-constructible BasicLockable (`NoLock`, `std::mutex`)
/// or `Sharded<Mutex, N>` of one.
template <class L>
concept cache_lock = detail::basic_lockable<typename detail::cache_lock_layout<L>::mutex_type>;

/// What a `SessionCache` policy provides.
template <class P>
concept cache_policy = requires {
  typename P::lock_type;                                      // NoLock, std::mutex or Sharded<std::mutex, N>
  requires cache_lock<typename P::lock_type>;                 // ... and it is lockable
  typename P::clock_type;                                     // decides expiry; injectable for tests
  { P::clock_type::now() } -> std::convertible_to<std::chrono::system_clock::time_point>;  // wall clock
  { P::max_peers } -> std::convertible_to<std::size_t>;       // peers kept (LRU); >= 1, split over shards
  { P::max_tickets_per_peer } -> std::convertible_to<std::size_t>;  // TLS 1.3 tickets kept per peer
};

/// One thread only: no locking at all.
struct SingleThreadPolicy {
  using lock_type = NoLock;
  using clock_type = std::chrono::system_clock;
  static constexpr std::size_t max_peers = 1024;
  static constexpr std::size_t max_tickets_per_peer = 4;
};

/// The default: one `std::mutex` and one LRU list over all peers.
struct ThreadSafePolicy {
  using lock_type = std::mutex;
  using clock_type = std::chrono::system_clock;
  static constexpr std::size_t max_peers = 1024;
  static constexpr std::size_t max_tickets_per_peer = 4;
};

/// Many threads on many peers: 16 shards, each with its own `std::mutex`, LRU list and
/// `max_peers / 16` peers.
struct ShardedPolicy {
  using lock_type = Sharded<std::mutex, 16>;
  using clock_type = std::chrono::system_clock;
  static constexpr std::size_t max_peers = 4096;
  static constexpr std::size_t max_tickets_per_peer = 4;
};

/// Options of `SessionCache::put`.
struct PutOptions {
  /// For a TLS 1.3 ticket received on a *resumed* connection: when the full handshake that
  /// started this resumption chain happened (RFC 8446 §4.6.1: a ticket may not be used more than
  /// 7 days after it). Default: the session's own creation time. Ignored for expiry of TLS 1.2
  /// sessions, but kept and reported by `for_each`.
  std::optional<std::chrono::system_clock::time_point> original_full_handshake;
};

/// Counters and sizes of a `SessionCache`. Counters count since the cache was made. Each session
/// accepted by `put` is counted once in `stored`, and once more when it leaves, in exactly one of
/// taken / expired / evicted / superseded / invalidated / erased; so at any quiescent moment
///   `stored == taken + expired + evicted + superseded + invalidated + erased + sessions`.
/// (A TLS 1.2 session handed out by `take` stays stored: it counts in `reused`, not `taken`.)
struct CacheStats {
  std::uint64_t hits = 0;         ///< `take` calls that returned a session (== taken + reused)
  std::uint64_t misses = 0;       ///< `take` calls that returned `std::nullopt`
  std::uint64_t stored = 0;       ///< sessions accepted by `put`
  std::uint64_t refused = 0;      ///< `put` calls refused: empty, not resumable, expired, dated in the future, or a TLS 1.3 ticket with `max_tickets_per_peer == 0`
  std::uint64_t taken = 0;        ///< TLS 1.3 tickets removed and handed out by `take`
  std::uint64_t reused = 0;       ///< TLS 1.2 sessions handed out by `take` (a copy; the session stays)
  std::uint64_t expired = 0;      ///< removed because past their expiry (by `take`, `purge_expired`, or an opportunistic purge)
  std::uint64_t evicted = 0;      ///< removed for room: least recently used peer, or oldest ticket beyond `max_tickets_per_peer`
  std::uint64_t superseded = 0;   ///< removed for a better one: a TLS 1.2 session replaced by a newer one, dropped by `on_full_handshake(TLS 1.3)`, or replaced because the same `SSL_SESSION` was put again
  std::uint64_t invalidated = 0;  ///< removed as unusable: `invalidate(SSL_SESSION*)` (also the context's remove callback), `veto(key)`, `Client::veto_caching`, or found not resumable (`SSL_SESSION_is_resumable`)
  std::uint64_t erased = 0;       ///< removed on request: `erase(key)`, `clear()`
  std::uint64_t vetoed = 0;       ///< `veto(key)` calls and `Client::veto_caching` calls on connections started with `resume_from`, one each whether or not it dropped anything (the sessions they drop count in `invalidated`)
  std::size_t sessions = 0;       ///< sessions currently stored (TLS 1.3 tickets + TLS 1.2 sessions)
  std::size_t peers = 0;          ///< peers currently holding at least one session
  std::size_t bytes = 0;          ///< approximate memory held: DER length of each session + overheads
  // Imports (persistence): sessions read from a file wait under their `KeyId` until a `take` for
  // a key with that id claims them (then they are `put`); imported == claimed + import_dropped + pending.
  std::uint64_t imported = 0;        ///< sessions accepted by `import`
  std::uint64_t claimed = 0;         ///< imports moved into the store by a `take` for their key
  std::uint64_t import_dropped = 0;  ///< imports dropped unclaimed: expired, not resumable, `clear()`
  std::size_t pending = 0;           ///< imports waiting to be claimed
};

/// What `SessionCache::take_with_origin` hands out: the session and the time of the full
/// handshake that started its resumption chain (for a ticket received on a resumed connection).
template <class Tag> struct TakenSession {
  BoundSession<Tag> session;  ///< the session; its reference is the caller's
  std::chrono::system_clock::time_point original_full_handshake;  ///< when the full handshake that started the session's resumption chain happened (`PutOptions::original_full_handshake`, default the session's creation time)
};

namespace detail {

using sys_seconds = std::chrono::sys_seconds;

/// Seconds-resolution time points, saturating instead of overflowing (a timeout of `LONG_MAX` or a
/// notAfter in 9999 must not wrap `system_clock`'s nanoseconds).
inline sys_seconds saturating_add(sys_seconds t, std::chrono::seconds d) noexcept {
  using rep = std::chrono::seconds::rep;
  const rep a = t.time_since_epoch().count();
  const rep b = d.count();
  if (b > 0 && a > std::numeric_limits<rep>::max() - b) {
    return sys_seconds::max();
  }
  if (b < 0 && a < std::numeric_limits<rep>::min() - b) {
    return sys_seconds::min();
  }
  return sys_seconds(std::chrono::seconds(a + b));
}

/// Converts to `system_clock::time_point`, clamped to its range.
inline std::chrono::system_clock::time_point to_system(sys_seconds t) noexcept {
  using tp = std::chrono::system_clock::time_point;
  const auto lo = std::chrono::ceil<std::chrono::seconds>(tp::min());
  const auto hi = std::chrono::floor<std::chrono::seconds>(tp::max());
  if (t <= lo) {
    return tp::min();
  }
  if (t >= hi) {
    return tp::max();
  }
  return std::chrono::time_point_cast<tp::duration>(t);
}

/// Reads an RFC 5280 certificate time the way DER writes it — UTCTime `YYMMDDHHMMSSZ` (years
/// 1950–2049) or GeneralizedTime `YYYYMMDDHHMMSSZ` — from the ASN1_TIME's bytes
/// (`ASN1_STRING_type`, `ASN1_STRING_get0_data`, `ASN1_STRING_length`); `std::nullopt` for any
/// other form, which `peer_not_after` leaves to `ASN1_TIME_to_tm`. Runs at every `put`:
/// `ASN1_TIME_to_tm` with its error-queue mark cost ~1,000 instructions of a ~2,000-instruction
/// `put` (bench/cache --callgrind).
inline std::optional<sys_seconds> parse_der_time(const ASN1_TIME* t) noexcept {
  const int type = ASN1_STRING_type(t);
  const int len = ASN1_STRING_length(t);
  const unsigned char* p = ASN1_STRING_get0_data(t);
  const int year_digits = type == V_ASN1_UTCTIME ? 2 : type == V_ASN1_GENERALIZEDTIME ? 4 : 0;
  if (year_digits == 0 || p == nullptr || len != year_digits + 11 || p[len - 1] != 'Z') {
    return std::nullopt;
  }
  int fields[6] = {};  // year, month, day, hour, minute, second
  const int widths[6] = {year_digits, 2, 2, 2, 2, 2};
  const unsigned char* q = p;
  for (int f = 0; f < 6; ++f) {
    for (int i = 0; i < widths[f]; ++i, ++q) {
      if (*q < '0' || *q > '9') {
        return std::nullopt;
      }
      fields[f] = fields[f] * 10 + (*q - '0');
    }
  }
  if (year_digits == 2) {
    fields[0] += fields[0] < 50 ? 2000 : 1900;
  }
  using namespace std::chrono;
  const year_month_day ymd{year{fields[0]}, month{static_cast<unsigned>(fields[1])}, day{static_cast<unsigned>(fields[2])}};
  if (!ymd.ok() || fields[3] > 23 || fields[4] > 59 || fields[5] > 59) {
    return std::nullopt;
  }
  return sys_seconds(sys_days(ymd)) + hours(fields[3]) + minutes(fields[4]) + seconds(fields[5]);
}

/// The peer certificate's notAfter (`SSL_SESSION_get0_peer`, `X509_get0_notAfter`; read by
/// `parse_der_time`, else `ASN1_TIME_to_tm`); `std::nullopt` without a peer certificate;
/// `sys_seconds::min()` (already expired) if the time cannot be read. Leaves OpenSSL's error
/// queue as it found it.
inline std::optional<sys_seconds> peer_not_after(const SSL_SESSION* s) noexcept {
  X509* peer = SSL_SESSION_get0_peer(const_cast<SSL_SESSION*>(s));
  if (peer == nullptr) {
    return std::nullopt;
  }
  const ASN1_TIME* t = X509_get0_notAfter(peer);
  if (t == nullptr) {
    return sys_seconds::min();
  }
  if (const auto fast = parse_der_time(t)) {
    return fast;
  }
  std::tm tm{};
  ERR_set_mark();
  const bool ok = t != nullptr && ASN1_TIME_to_tm(t, &tm) == 1;
  ERR_pop_to_mark();
  if (!ok) {
    return sys_seconds::min();
  }
  using namespace std::chrono;
  const year_month_day ymd{year{tm.tm_year + 1900}, month{static_cast<unsigned>(tm.tm_mon + 1)},
                           day{static_cast<unsigned>(tm.tm_mday)}};
  if (!ymd.ok()) {
    return sys_seconds::min();
  }
  return sys_seconds(sys_days(ymd)) + hours(tm.tm_hour) + minutes(tm.tm_min) + seconds(tm.tm_sec);
}

/// What `put` learns about a session before taking a lock.
struct SessionFacts {
  bool tls13 = false;
  bool resumable = false;
  std::chrono::system_clock::time_point created;
  std::chrono::system_clock::time_point original;  // original full handshake (TLS 1.3 rule)
  std::chrono::system_clock::time_point expires;
  std::size_t bytes = 0;  // detail::session_bytes
};

/// The expiry rules of the header comment, from OpenSSL's fields and the original handshake time
/// (`bytes` is left for `session_bytes`, which only an accepted session needs).
inline SessionFacts session_facts(const SSL_SESSION* s,
                                  std::optional<std::chrono::system_clock::time_point> original_full_handshake) {
  using namespace std::chrono;
  SessionFacts f;
  f.tls13 = SSL_SESSION_get_protocol_version(s) >= TLS1_3_VERSION;
  f.resumable = SSL_SESSION_is_resumable(s) == 1;
  const sys_seconds created{seconds(SSL_SESSION_get_time(s))};
  sys_seconds expires = saturating_add(created, seconds(SSL_SESSION_get_timeout(s)));
  if (const auto hint = seconds(SSL_SESSION_get_ticket_lifetime_hint(s)); hint.count() > 0) {
    expires = std::min(expires, saturating_add(created, hint));
  }
  if (const auto not_after = peer_not_after(s)) {
    expires = std::min(expires, *not_after);
  }
  f.created = to_system(created);
  f.original = original_full_handshake.value_or(f.created);
  f.expires = to_system(expires);
  if (f.tls13) {
    const auto original_s = floor<seconds>(f.original);
    f.expires = std::min(f.expires, to_system(saturating_add(original_s, days(7))));
  }
  return f;
}

/// What a stored `SSL_SESSION` is counted for in `stats().bytes`: a fixed 1,536 bytes (an
/// `SSL_SESSION` whose peer certificate is shared with the connection's other sessions, as
/// measured with the allocator's statistics by bench/memory) plus its ticket
/// (`SSL_SESSION_get0_ticket`). An estimate that costs no encoding: a peer certificate of its
/// own (a session read from a file) adds a few KiB that are not counted.
inline std::size_t session_bytes(const SSL_SESSION* s) noexcept {
  constexpr std::size_t session_estimate = 1536;
  const unsigned char* ticket = nullptr;
  std::size_t ticket_len = 0;
  SSL_SESSION_get0_ticket(s, &ticket, &ticket_len);
  return session_estimate + ticket_len;
}

/// Spreads `PeerKey::hash()` over shards (a splitmix64 finaliser), so the shard and the bucket of
/// the shard's own hash map do not use the same bits.
constexpr std::size_t mix_hash(std::size_t h) noexcept {
  std::uint64_t x = h;
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return static_cast<std::size_t>(x);
}

}  // namespace detail

namespace detail {

/// `CacheSink::file` for a cache whose `put(key, session_type, PutOptions)` stores a bound session:
/// binds the reference `session` to the context `id` (no up-ref) and puts it, with `original` as
/// its original full handshake. Never throws (a failed `put` returns false, the session released
/// and OpenSSL's error queue cleared): it runs inside OpenSSL's new-session callback.
template <class Cache>
bool file_by_put(Cache& cache, const PeerKey& key, Handle<SSL_SESSION> session, ContextId id,
                 std::optional<std::chrono::system_clock::time_point> original) noexcept {
  try {
    return cache.put(key, Cache::session_type::adopt({session.release(), id}), PutOptions{original});
  } catch (...) {
    ERR_clear_error();
    return false;
  }
}

/// The cache itself, owned through a `std::shared_ptr` by `SessionCache` and (as a `CacheSink`)
/// by each connection filing into it, so that OpenSSL callbacks never reach a destroyed cache.
template <class Tag, class Policy> class CacheCore final : public CacheSink {
 public:
  using session_type = BoundSession<Tag>;
  using policy_type = Policy;
  using clock_type = typename Policy::clock_type;
  using time_point = std::chrono::system_clock::time_point;
  using mutex_type = typename detail::cache_lock_layout<typename Policy::lock_type>::mutex_type;

  static constexpr std::size_t shard_count = detail::cache_lock_layout<typename Policy::lock_type>::shards;
  static constexpr std::size_t max_peers = static_cast<std::size_t>(Policy::max_peers);
  /// Each shard keeps at most this many peers (at least 1), so the cache holds at most
  /// `max(max_peers, shard_count)` peers.
  static constexpr std::size_t max_peers_per_shard = std::max<std::size_t>(1, max_peers / shard_count);
  static constexpr std::size_t max_tickets_per_peer = static_cast<std::size_t>(Policy::max_tickets_per_peer);
  /// A shard untouched by a sweep for this long is swept by the next `put` or `take` on it.
  static constexpr std::chrono::seconds purge_interval{60};
  /// Sessions created more than this far after `clock_type::now()` are refused (OpenSSL keeps
  /// whole seconds, so a fresh session may look up to 1 s old, never newer).
  static constexpr std::chrono::seconds max_clock_skew{1};
  /// RFC 8446 §4.6.1: a TLS 1.3 ticket is not used more than 7 days after the original full handshake.
  static constexpr std::chrono::seconds max_tls13_age = std::chrono::days(7);

  static_assert(max_peers >= 1, "SessionCache: Policy::max_peers must be at least 1");

  CacheCore() = default;

  /// Binds the cache to context `id` on first use and returns it as a sink; throws
  /// `Error(errc::wrong_context)` for another context.
  void bind_context(ContextId id) {
    auto expected = std::uint64_t{0};
    const auto wanted = static_cast<std::uint64_t>(id);
    if (!context_.compare_exchange_strong(expected, wanted) && expected != wanted) {
      throw_error(errc::wrong_context, "SessionCache",
                  "a cache serves the connections of one context (copies of it share its id); make one cache per context");
    }
  }
  [[nodiscard]] std::optional<ContextId> bound_context() const noexcept {
    const auto id = context_.load();
    return id == 0 ? std::nullopt : std::optional<ContextId>(ContextId{id});
  }

  // CacheSink: called from OpenSSL callbacks; never throw.
  bool file(const PeerKey& key, Handle<SSL_SESSION> session, ContextId id,
            std::optional<time_point> original) noexcept override {
    return detail::file_by_put(*this, key, std::move(session), id, original);
  }
  bool invalidate(const SSL_SESSION* session, std::size_t key_hash) noexcept override {
    if (session == nullptr) {
      return false;
    }
    const std::size_t first = shard_of_hash(key_hash);
    if (invalidate_in(shards_[first], session)) {
      return true;
    }
    for (std::size_t i = 0; i < shard_count; ++i) {
      if (i != first && invalidate_in(shards_[i], session)) {
        return true;
      }
    }
    return false;
  }
  void full_handshake(const PeerKey& key, ProtocolVersion version) noexcept override {
    try {
      on_full_handshake(key, version);
    } catch (...) {
      ERR_clear_error();
    }
  }
  std::size_t veto(const PeerKey& key, std::span<const SSL_SESSION* const> sessions) noexcept override {
    {
      Shard& shard = shard_for(key);
      std::lock_guard lock(shard.mutex);
      ++shard.counters.vetoed;
    }
    std::size_t removed = 0;
    for (const SSL_SESSION* s : sessions) {
      removed += invalidate(s, key.hash()) ? 1 : 0;
    }
    return removed;
  }

  /// Stores `session` for `key`: a TLS 1.3 ticket goes to the front of the peer's ticket queue
  /// (the oldest beyond `max_tickets_per_peer` is evicted), a TLS 1.2 session replaces the peer's
  /// previous one. Takes over `session`'s reference (no up-ref). Returns false, counts `refused`
  /// and releases the session if it is empty, not resumable (`SSL_SESSION_is_resumable`), already
  /// expired, or created (`SSL_SESSION_get_time`) or originally handshaken more than
  /// `max_clock_skew` in the future. The same `SSL_SESSION` put again replaces its earlier entry
  /// (`superseded`). May evict the least recently used peer. Releases every removed session after
  /// unlocking. Throws `std::bad_alloc` only (then `session` is released and nothing changed).
  bool put(const PeerKey& key, session_type session, PutOptions options = {}) {
    std::vector<session_type> victims;
    const time_point now = clock_now();
    std::optional<detail::SessionFacts> facts;
    if (session) {
      facts = detail::session_facts(session.native_handle(), options.original_full_handshake);
    }
    // "In the future" is tested as `t > now && t - now > skew`: no overflow for any `t` a caller passes.
    const auto in_future = [now](time_point t) { return t > now && t - now > max_clock_skew; };
    const bool accept = facts && facts->resumable && facts->expires > now && !in_future(facts->created) &&
                        !in_future(facts->original) && (!facts->tls13 || max_tickets_per_peer > 0);
    if (accept) {
      facts->bytes = detail::session_bytes(session.native_handle());
    }
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    shard.maybe_purge(now, victims);
    if (!accept) {
      ++shard.counters.refused;
      return false;  // `session` is released after `lock`
    }
    shard.insert(key, std::move(session), *facts, victims);
    return true;
  }

  /// Hands out a session for `key`, or `std::nullopt` (a miss, not an error). The newest unexpired
  /// TLS 1.3 ticket comes first and is removed (never handed to two callers); otherwise the
  /// peer's TLS 1.2 session, which stays stored (a copy: `SSL_SESSION_up_ref`). Expired and
  /// non-resumable sessions met on the way are removed and released after unlocking. The caller
  /// owns the returned reference.
  [[nodiscard]] std::optional<session_type> take(const PeerKey& key) {
    auto taken = take_with_origin(key);
    if (!taken) {
      return std::nullopt;
    }
    return std::optional<session_type>(std::move(taken->session));
  }

  /// As `take`, with the time of the full handshake that started the session's resumption chain.
  [[nodiscard]] std::optional<TakenSession<Tag>> take_with_origin(const PeerKey& key) {
    if (pending_.load(std::memory_order_acquire) > 0) {
      claim_imports(key);
    }
    std::vector<session_type> victims;
    const time_point now = clock_now();
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    shard.maybe_purge(now, victims);
    auto out = shard.take(key, now, victims);
    ++(out ? shard.counters.hits : shard.counters.misses);
    return out;
  }

  /// Adds a session read from a file, filed under `id` = `key_id(secret, key)` of a key the
  /// cache cannot reconstruct (the file does not hold keys in clear). It waits until a `take`
  /// for a key whose id under `secret` is `id` claims it: then it is `put` under that key, with
  /// `original` as its original full handshake. Takes over `session`'s reference. Returns false
  /// (and releases it) if it is not resumable, already expired by the rules of `put`, dated in
  /// the future, or if `max_pending_imports` imports are waiting.
  bool import(const KeyIdSecret& secret, const KeyId& id, session_type session, time_point original) {
    if (!session) {
      return false;
    }
    const time_point now = clock_now();
    const auto facts = detail::session_facts(session.native_handle(), original);
    const auto in_future = [now](time_point t) { return t > now && t - now > max_clock_skew; };
    if (!facts.resumable || facts.expires <= now || in_future(facts.created) || in_future(facts.original)) {
      return false;
    }
    std::lock_guard lock(imports_mutex_);
    if (import_counters_.pending >= max_pending_imports) {
      return false;  // `session` is released after `lock`
    }
    auto group = std::find_if(imports_.begin(), imports_.end(), [&](const ImportGroup& g) { return g.secret == secret; });
    if (group == imports_.end()) {
      imports_.push_back(ImportGroup{secret, {}});
      group = std::prev(imports_.end());
    }
    group->entries[id].push_back(Pending{std::move(session), facts.original, facts.expires});
    ++import_counters_.imported;
    ++import_counters_.pending;
    pending_.store(import_counters_.pending, std::memory_order_release);
    return true;
  }

  /// Visits every waiting import as `f(const KeyIdSecret&, const KeyId&, const session_type&,
  /// time_point original_full_handshake)`, on a snapshot; `f` runs with no lock held.
  template <class F> void for_each_import(F&& f) const {
    struct Item {
      KeyIdSecret secret;
      KeyId id;
      session_type session;
      time_point original;
    };
    const time_point now = clock_now();
    std::vector<Item> items;
    {
      std::lock_guard lock(imports_mutex_);
      for (const ImportGroup& g : imports_) {
        for (const auto& [id, list] : g.entries) {
          for (const Pending& p : list) {
            if (p.expires > now) {
              items.push_back(Item{g.secret, id, p.session, p.original});
            }
          }
        }
      }
    }
    for (const Item& item : items) {
      std::invoke(f, item.secret, item.id, item.session, item.original);
    }
  }

  /// At most this many imports wait at once.
  static constexpr std::size_t max_pending_imports = max_peers * (max_tickets_per_peer + 1);

  /// For OpenSSL's remove callback (`SSL_CTX_sess_set_remove_cb`: unclean close, ticket used):
  /// removes `session` wherever it is stored (`invalidated`), found through the native-pointer
  /// index of each shard. Borrows the pointer; the cache's own reference is released after
  /// unlocking, so this may be called from inside OpenSSL. Never throws. Returns whether found.
  bool invalidate(const SSL_SESSION* session) noexcept {
    if (session == nullptr) {
      return false;
    }
    bool found = false;
    for (Shard& shard : shards_) {
      found = invalidate_in(shard, session) || found;
    }
    return found;
  }

  /// To call after a *full* (not resumed) handshake with `key` at `version`: after TLS 1.3, the
  /// peer's TLS 1.2 session is dropped (`superseded`), so resumption can never take the
  /// connection back to TLS 1.2. Other versions change nothing. The session is released after
  /// unlocking.
  void on_full_handshake(const PeerKey& key, ProtocolVersion version) {
    if (static_cast<int>(version) < TLS1_3_VERSION) {
      return;
    }
    std::vector<session_type> victims;
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    if (auto it = shard.peers.find(key); it != shard.peers.end()) {
      shard.drop_tls12(it->second, shard.counters.superseded, victims);
      shard.remove_if_empty(it->second);
    }
  }

  /// Vetoes the peer `key` as a whole (e.g. its certificate was found revoked): counts `vetoed`
  /// and drops everything stored for it (`invalidated`). Returns the number of sessions dropped.
  /// To veto one connection's sessions only, use `Client::veto_caching`.
  std::size_t veto(const PeerKey& key) {
    std::vector<session_type> victims;
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    ++shard.counters.vetoed;
    return shard.erase_peer(key, shard.counters.invalidated, victims);
  }

  /// Drops everything stored for `key` (`erased`); returns how many sessions. Released after
  /// unlocking.
  std::size_t erase(const PeerKey& key) {
    std::vector<session_type> victims;
    Shard& shard = shard_for(key);
    std::lock_guard lock(shard.mutex);
    return shard.erase_peer(key, shard.counters.erased, victims);
  }

  /// Drops every stored session (`erased`) and every import still waiting to be claimed
  /// (`import_dropped`; `pending` becomes 0); the other counters are kept. Stored sessions are
  /// released after unlocking, shard by shard; the imports after the imports lock is released.
  void clear() {
    for (Shard& shard : shards_) {
      std::vector<session_type> victims;
      std::lock_guard lock(shard.mutex);
      shard.clear(victims);
    }
    std::vector<ImportGroup> dropped;  // released after the lock
    std::lock_guard lock(imports_mutex_);
    import_counters_.import_dropped += import_counters_.pending;
    import_counters_.pending = 0;
    pending_.store(0, std::memory_order_release);
    dropped.swap(imports_);
  }

  /// Removes every waiting import past its expiry or no longer resumable (`import_dropped` only),
  /// then, shard by shard, every expired (`expired`) or no longer resumable (`invalidated`) stored
  /// session; returns how many, imports included. Released after unlocking.
  std::size_t purge_expired() {
    const time_point now = clock_now();
    std::size_t removed = purge_imports(now);
    for (Shard& shard : shards_) {
      std::vector<session_type> victims;
      std::lock_guard lock(shard.mutex);
      shard.purge(now, victims);
      removed += victims.size();
    }
    return removed;
  }

  /// Visits every stored, unexpired session (e.g. to export them with `Session::to_der`) as
  /// `f(const PeerKey&, const session_type&, time_point original_full_handshake)`, TLS 1.3 tickets
  /// newest first, then the TLS 1.2 session, peer by peer. Works on a snapshot (one
  /// `SSL_SESSION_up_ref` per session, taken under the lock); `f` runs with no lock held and may
  /// use the cache. Visiting does not remove a ticket: do not import an exported ticket into a
  /// cache while this one may still hand it out.
  template <class F>
    requires std::invocable<F&, const PeerKey&, const session_type&, time_point>
  void for_each(F&& f) const {
    struct Item {
      PeerKey key;
      session_type session;
      time_point original;
    };
    const time_point now = clock_now();
    std::vector<Item> items;
    for (const Shard& shard : shards_) {
      std::lock_guard lock(shard.mutex);
      for (const Peer& peer : shard.lru) {
        auto visit = [&](const Entry& e) {
          if (e.expires > now) {
            items.push_back(Item{*peer.key, e.session, e.original});
          }
        };
        std::for_each(peer.tickets.begin(), peer.tickets.end(), visit);
        if (peer.tls12) {
          visit(*peer.tls12);
        }
      }
    }
    for (const Item& item : items) {
      std::invoke(f, item.key, item.session, item.original);
    }
  }

  /// A snapshot of the counters and sizes, summed over shards (each shard read under its lock).
  [[nodiscard]] CacheStats stats() const {
    CacheStats total;
    for (const Shard& shard : shards_) {
      std::lock_guard lock(shard.mutex);
      const CacheStats& c = shard.counters;
      total.hits += c.hits;
      total.misses += c.misses;
      total.stored += c.stored;
      total.refused += c.refused;
      total.taken += c.taken;
      total.reused += c.reused;
      total.expired += c.expired;
      total.evicted += c.evicted;
      total.superseded += c.superseded;
      total.invalidated += c.invalidated;
      total.erased += c.erased;
      total.vetoed += c.vetoed;
      total.sessions += c.sessions;
      total.peers += shard.peers.size();
      total.bytes += c.bytes;
    }
    std::lock_guard lock(imports_mutex_);
    total.imported = import_counters_.imported;
    total.claimed = import_counters_.claimed;
    total.import_dropped = import_counters_.import_dropped;
    total.pending = import_counters_.pending;
    return total;
  }

  /// The shard `key` belongs to (always 0 without sharding); for tests and diagnostics.
  [[nodiscard]] static std::size_t shard_of(const PeerKey& key) noexcept { return shard_of_hash(key.hash()); }
  [[nodiscard]] static std::size_t shard_of_hash(std::size_t hash) noexcept {
    if constexpr (shard_count == 1) {
      (void)hash;
      return 0;
    } else {
      return detail::mix_hash(hash) % shard_count;
    }
  }

 private:
  struct Entry {
    session_type session;
    const SSL_SESSION* native = nullptr;  // the index key; stays valid after `session` is moved out
    time_point created;
    time_point original;
    time_point expires;
    std::size_t bytes = 0;  // accounted in the shard's `bytes`
  };
  struct Peer {
    const PeerKey* key = nullptr;  // the key of the peer map's node, which owns it (one copy per peer)
    std::vector<Entry> tickets;  // TLS 1.3, newest first
    std::optional<Entry> tls12;
    std::size_t bytes = 0;       // the peer's own overhead
    [[nodiscard]] bool empty() const noexcept { return tickets.empty() && !tls12; }
  };
  using PeerList = std::list<Peer>;  // most recently used first
  using PeerIt = typename PeerList::iterator;

  static constexpr std::size_t entry_overhead = sizeof(Entry) + 4 * sizeof(void*);  // + index node
  static std::size_t peer_overhead(const PeerKey& key) noexcept {
    // The map node (key + list iterator + next pointer + cached hash), the list node, the host
    // name's heap buffer beyond the short-string size, a bucket pointer.
    return sizeof(PeerKey) + sizeof(Peer) + 6 * sizeof(void*) + (key.host().size() > 15 ? key.host().size() + 1 : 0);
  }

  // One shard: its lock, LRU list, key map, native-pointer index and counters. Every member
  // function runs with `mutex` held; removed sessions go to `victims`, released by the caller
  // after unlocking. A removal first moves the session into `victims` (the only step that can
  // throw), then updates the containers, so the shard stays consistent if it throws.
  struct alignas(64) Shard {
    mutable mutex_type mutex;
    PeerList lru;
    std::unordered_map<PeerKey, PeerIt> peers;
    std::unordered_map<const SSL_SESSION*, PeerIt> index;
    CacheStats counters;  // sessions and bytes are current values; peers is peers.size()
    time_point next_purge = time_point::min();

    void insert(const PeerKey& key, session_type&& session, const detail::SessionFacts& facts,
                std::vector<session_type>& victims) {
      const SSL_SESSION* native = session.native_handle();
      if (auto dup = index.find(native); dup != index.end()) {
        victims.reserve(victims.size() + 1);  // so that the push_back below cannot throw
        victims.push_back(remove_pointer(dup, counters.superseded));
      }
      PeerIt peer = find_or_add_peer(key, victims);
      // Make room first; until `index.emplace` succeeds, `session` is still the caller's, who
      // releases it after unlocking if anything below throws.
      if (facts.tls13) {
        while (!peer->tickets.empty() && peer->tickets.size() >= max_tickets_per_peer) {
          remove_entry(peer, peer->tickets.end() - 1, counters.evicted, victims);
        }
        // Room for one more, so that the insert below cannot throw. Grown on demand (1, 2, 4, ...
        // up to the limit) instead of up front: most peers hold one ticket at a time, and five
        // reserved slots were a third of a peer's memory (bench/memory).
        if (peer->tickets.size() == peer->tickets.capacity()) {
          try {
            peer->tickets.reserve(std::min(std::max<std::size_t>(1, 2 * peer->tickets.size()), max_tickets_per_peer));
          } catch (...) {
            remove_if_empty(peer);
            throw;
          }
        }
      } else {
        drop_tls12(peer, counters.superseded, victims);
      }
      try {
        index.emplace(native, peer);
      } catch (...) {
        remove_if_empty(peer);
        throw;
      }
      const std::size_t bytes = facts.bytes + entry_overhead;
      Entry entry{std::move(session), native, facts.created, facts.original, facts.expires, bytes};
      if (facts.tls13) {
        peer->tickets.insert(peer->tickets.begin(), std::move(entry));  // capacity reserved: no throw
      } else {
        peer->tls12.emplace(std::move(entry));
      }
      ++counters.stored;
      ++counters.sessions;
      counters.bytes += bytes;
    }

    PeerIt find_or_add_peer(const PeerKey& key, std::vector<session_type>& victims) {
      if (auto it = peers.find(key); it != peers.end()) {
        lru.splice(lru.begin(), lru, it->second);  // most recently used
        return it->second;
      }
      while (peers.size() >= max_peers_per_shard && !lru.empty()) {
        PeerIt oldest = std::prev(lru.end());
        drop_all(oldest, counters.evicted, victims);
      }
      lru.push_front(Peer{nullptr, {}, std::nullopt, peer_overhead(key)});
      try {
        // Node-based: the key's address stays valid until its node is erased (rehashing
        // relinks nodes, it does not move them).
        lru.front().key = &peers.emplace(key, lru.begin()).first->first;
      } catch (...) {
        lru.pop_front();
        throw;
      }
      counters.bytes += lru.front().bytes;
      return lru.begin();
    }

    std::optional<TakenSession<Tag>> take(const PeerKey& key, time_point now, std::vector<session_type>& victims) {
      auto found = peers.find(key);
      if (found == peers.end()) {
        return std::nullopt;
      }
      PeerIt peer = found->second;
      std::optional<TakenSession<Tag>> out;
      while (!out && !peer->tickets.empty()) {
        auto first = peer->tickets.begin();
        if (first->expires <= now) {
          remove_entry(peer, first, counters.expired, victims);
        } else if (SSL_SESSION_is_resumable(first->session.native_handle()) != 1) {
          remove_entry(peer, first, counters.invalidated, victims);
        } else {
          out.emplace(TakenSession<Tag>{std::move(first->session), first->original});
          forget(*first, counters.taken);
          peer->tickets.erase(first);
        }
      }
      if (!out && peer->tls12) {
        if (peer->tls12->expires <= now) {
          drop_tls12(peer, counters.expired, victims);
        } else if (SSL_SESSION_is_resumable(peer->tls12->session.native_handle()) != 1) {
          drop_tls12(peer, counters.invalidated, victims);
        } else {
          out.emplace(TakenSession<Tag>{peer->tls12->session, peer->tls12->original});  // up-ref: never calls back
          ++counters.reused;
        }
      }
      if (!remove_if_empty(peer)) {
        lru.splice(lru.begin(), lru, peer);
      }
      return out;
    }

    void maybe_purge(time_point now, std::vector<session_type>& victims) {
      if (now >= next_purge) {
        purge(now, victims);
      }
    }

    void purge(time_point now, std::vector<session_type>& victims) {
      for (auto peer = lru.begin(); peer != lru.end();) {
        auto next = std::next(peer);
        for (auto e = peer->tickets.begin(); e != peer->tickets.end();) {
          if (e->expires <= now) {
            e = remove_entry(peer, e, counters.expired, victims);
          } else if (SSL_SESSION_is_resumable(e->session.native_handle()) != 1) {
            e = remove_entry(peer, e, counters.invalidated, victims);
          } else {
            ++e;
          }
        }
        if (peer->tls12 && peer->tls12->expires <= now) {
          drop_tls12(peer, counters.expired, victims);
        } else if (peer->tls12 && SSL_SESSION_is_resumable(peer->tls12->session.native_handle()) != 1) {
          drop_tls12(peer, counters.invalidated, victims);
        }
        remove_if_empty(peer);
        peer = next;
      }
      next_purge = now >= time_point::max() - purge_interval ? time_point::max() : now + purge_interval;
    }

    std::size_t erase_peer(const PeerKey& key, std::uint64_t& counter, std::vector<session_type>& victims) {
      auto it = peers.find(key);
      if (it == peers.end()) {
        return 0;
      }
      const std::size_t before = victims.size();
      drop_all(it->second, counter, victims);
      return victims.size() - before;
    }

    void clear(std::vector<session_type>& victims) {
      while (!lru.empty()) {
        drop_all(lru.begin(), counters.erased, victims);
      }
    }

    // Removes every session of `peer`, then the peer itself.
    void drop_all(PeerIt peer, std::uint64_t& counter, std::vector<session_type>& victims) {
      while (!peer->tickets.empty()) {
        remove_entry(peer, peer->tickets.end() - 1, counter, victims);
      }
      drop_tls12(peer, counter, victims);
      remove_if_empty(peer);
    }

    void drop_tls12(PeerIt peer, std::uint64_t& counter, std::vector<session_type>& victims) {
      if (peer->tls12) {
        victims.push_back(std::move(peer->tls12->session));
        forget(*peer->tls12, counter);
        peer->tls12.reset();  // empty handle: frees nothing
      }
    }

    typename std::vector<Entry>::iterator remove_entry(PeerIt peer, typename std::vector<Entry>::iterator e,
                                                       std::uint64_t& counter, std::vector<session_type>& victims) {
      victims.push_back(std::move(e->session));
      forget(*e, counter);
      return peer->tickets.erase(e);  // empty handle: frees nothing
    }

    // Removes the entry that `it` (an index entry) points to, wherever it is; for `invalidate`
    // (no allocation: the caller holds one optional slot) and for a session put twice.
    session_type remove_pointer(typename decltype(index)::iterator it, std::uint64_t& counter) noexcept {
      const SSL_SESSION* p = it->first;
      PeerIt peer = it->second;
      session_type out;
      if (peer->tls12 && peer->tls12->session.native_handle() == p) {
        out = std::move(peer->tls12->session);
        forget(*peer->tls12, counter);
        peer->tls12.reset();
      } else {
        auto e = std::find_if(peer->tickets.begin(), peer->tickets.end(),
                              [p](const Entry& x) { return x.session.native_handle() == p; });
        if (e != peer->tickets.end()) {
          out = std::move(e->session);
          forget(*e, counter);
          peer->tickets.erase(e);
        } else {
          index.erase(it);  // unreachable while the index is consistent
        }
      }
      remove_if_empty(peer);
      return out;
    }

    // Bookkeeping for one entry leaving: its index entry, the counters, the bytes. The entry's
    // session has already been moved out.
    void forget(Entry& e, std::uint64_t& counter) noexcept {
      index.erase(e.native);
      ++counter;
      --counters.sessions;
      counters.bytes -= e.bytes;
    }

    bool remove_if_empty(PeerIt peer) noexcept {
      if (!peer->empty()) {
        return false;
      }
      counters.bytes -= peer->bytes;
      peers.erase(peers.find(*peer->key));  // not erase(*peer->key): that key lives in the node erased
      lru.erase(peer);
      return true;
    }
  };

  static time_point clock_now() { return time_point(clock_type::now()); }

  Shard& shard_for(const PeerKey& key) noexcept { return shards_[shard_of(key)]; }

  struct Pending {
    session_type session;
    time_point original;
    time_point expires;
  };
  struct ImportGroup {
    KeyIdSecret secret;
    std::unordered_map<KeyId, std::vector<Pending>, detail::KeyIdHash> entries;  // oldest first
  };

  // Moves the imports filed under `key`'s id (in each group) into the store.
  void claim_imports(const PeerKey& key) {
    std::vector<Pending> found;
    {
      std::lock_guard lock(imports_mutex_);
      for (ImportGroup& g : imports_) {
        auto it = g.entries.find(key_id(g.secret, key));
        if (it == g.entries.end()) {
          continue;
        }
        for (Pending& p : it->second) {
          found.push_back(std::move(p));
        }
        g.entries.erase(it);
      }
      import_counters_.claimed += found.size();
      import_counters_.pending -= found.size();
      pending_.store(import_counters_.pending, std::memory_order_release);
    }
    for (Pending& p : found) {  // oldest first: the newest ticket ends at the front
      (void)put(key, std::move(p.session), PutOptions{p.original});
    }
  }

  std::size_t purge_imports(time_point now) {
    std::vector<session_type> victims;  // released after the lock
    std::lock_guard lock(imports_mutex_);
    for (ImportGroup& g : imports_) {
      for (auto it = g.entries.begin(); it != g.entries.end();) {
        auto& list = it->second;
        for (auto p = list.begin(); p != list.end();) {
          if (p->expires <= now || SSL_SESSION_is_resumable(p->session.native_handle()) != 1) {
            victims.push_back(std::move(p->session));
            p = list.erase(p);
          } else {
            ++p;
          }
        }
        it = list.empty() ? g.entries.erase(it) : std::next(it);
      }
    }
    std::erase_if(imports_, [](const ImportGroup& g) { return g.entries.empty(); });
    import_counters_.import_dropped += victims.size();
    import_counters_.pending -= victims.size();
    pending_.store(import_counters_.pending, std::memory_order_release);
    return victims.size();
  }

  bool invalidate_in(Shard& shard, const SSL_SESSION* session) noexcept {
    std::optional<session_type> victim;  // declared before the lock: released after it
    std::lock_guard lock(shard.mutex);
    if (auto it = shard.index.find(session); it != shard.index.end()) {
      victim = shard.remove_pointer(it, shard.counters.invalidated);
      return true;
    }
    return false;
  }

  std::array<Shard, shard_count> shards_;
  std::atomic<std::uint64_t> context_{0};  // the ContextId served through `Client::resume_from`
  mutable std::mutex imports_mutex_;        // guards imports_ and import_counters_
  std::vector<ImportGroup> imports_;
  CacheStats import_counters_;              // imported, claimed, import_dropped, pending only
  std::atomic<std::size_t> pending_{0};     // import_counters_.pending, readable without the lock
};

}  // namespace detail

/// A bounded client session store for sessions of `Context<Tag>`, with `Policy` choosing locking,
/// clock and limits (see the header comment for the rules). A handle to the store, which the
/// connections filing into it share: destroying the cache while a connection still runs is
/// safe (its late tickets go into the orphaned store and are released with the connection).
/// Not copyable; movable (a moved-from cache may only be destroyed or assigned).
template <class Tag, cache_policy Policy = ThreadSafePolicy> class SessionCache {
  using Core = detail::CacheCore<Tag, Policy>;

 public:
  using session_type = BoundSession<Tag>;
  using policy_type = Policy;
  using clock_type = typename Policy::clock_type;
  using time_point = std::chrono::system_clock::time_point;
  using mutex_type = typename Core::mutex_type;

  /// How many shards the policy's `lock_type` asks for (1 unless `Sharded<Mutex, N>`).
  static constexpr std::size_t shard_count = Core::shard_count;
  /// `Policy::max_peers`: peers kept at most (least recently used evicted), split over shards.
  static constexpr std::size_t max_peers = Core::max_peers;
  /// Each shard keeps at most this many peers (at least 1), so the cache holds at most
  /// `max(max_peers, shard_count)` peers.
  static constexpr std::size_t max_peers_per_shard = Core::max_peers_per_shard;
  /// `Policy::max_tickets_per_peer`: TLS 1.3 tickets kept per peer (the oldest evicted).
  static constexpr std::size_t max_tickets_per_peer = Core::max_tickets_per_peer;
  /// A shard untouched by a sweep for this long is swept by the next `put` or `take` on it.
  static constexpr std::chrono::seconds purge_interval = Core::purge_interval;
  /// Sessions created (or originally handshaken) more than this far in the future are refused.
  static constexpr std::chrono::seconds max_clock_skew = Core::max_clock_skew;
  /// RFC 8446 §4.6.1: a TLS 1.3 ticket is not used more than 7 days after the original full handshake.
  static constexpr std::chrono::seconds max_tls13_age = Core::max_tls13_age;

  /// An empty cache, not yet bound to a context (no OpenSSL call; allocates the shared store).
  SessionCache() : core_(std::make_shared<Core>()) {}
  /// Not copyable: one store, shared only with the connections filing into it.
  SessionCache(const SessionCache&) = delete;
  SessionCache& operator=(const SessionCache&) = delete;
  /// Moves the handle to the store (no session is touched); the moved-from cache may only be
  /// destroyed or assigned. Move assignment gives up the handle held before, as the destructor does.
  SessionCache(SessionCache&&) noexcept = default;
  SessionCache& operator=(SessionCache&&) noexcept = default;
  /// Gives up this handle to the store. The stored sessions are released (`SSL_SESSION_free`)
  /// once no connection started with `resume_from` still holds the store either.
  ~SessionCache() = default;

  /// Stores `session` for `key`: a TLS 1.3 ticket goes to the front of the peer's ticket queue
  /// (the oldest beyond `max_tickets_per_peer` is evicted), a TLS 1.2 session replaces the peer's
  /// previous one. Takes over `session`'s reference (no up-ref). Returns false, counts `refused`
  /// and releases the session if it is empty, not resumable (`SSL_SESSION_is_resumable`), already
  /// expired, or created (`SSL_SESSION_get_time`) or originally handshaken more than
  /// `max_clock_skew` in the future. The same `SSL_SESSION` put again replaces its earlier entry
  /// (`superseded`). May evict the least recently used peer. Releases every removed session after
  /// unlocking. Throws `std::bad_alloc` only (then `session` is released and nothing changed).
  /// Connections started with `Client::resume_from` call this for each session they receive.
  bool put(const PeerKey& key, session_type session, PutOptions options = {}) {
    return core_->put(key, std::move(session), std::move(options));
  }
  /// Hands out a session for `key`, or `std::nullopt` (a miss, not an error). The newest unexpired
  /// TLS 1.3 ticket comes first and is removed (never handed to two callers); otherwise the
  /// peer's TLS 1.2 session, which stays stored (a copy: `SSL_SESSION_up_ref`). Expired and
  /// non-resumable sessions met on the way are removed and released after unlocking. The caller
  /// owns the returned reference. `Client::resume_from` calls this.
  [[nodiscard]] std::optional<session_type> take(const PeerKey& key) { return core_->take(key); }
  /// As `take`, with the time of the full handshake that started the session's resumption chain.
  [[nodiscard]] std::optional<TakenSession<Tag>> take_with_origin(const PeerKey& key) {
    return core_->take_with_origin(key);
  }
  /// Removes `session` wherever it is stored (`invalidated`); borrows the pointer. The context's
  /// remove callback (`SSL_CTX_sess_set_remove_cb`: unclean close, ticket used) does this for
  /// sessions filed by connections. Never throws. Returns whether found.
  bool invalidate(const SSL_SESSION* session) noexcept { return core_->invalidate(session); }
  /// To call after a *full* (not resumed) handshake with `key` at `version`: after TLS 1.3, the
  /// peer's TLS 1.2 session is dropped (`superseded`), so resumption can never take the
  /// connection back to TLS 1.2. `Client::resume_from` connections do this themselves.
  void on_full_handshake(const PeerKey& key, ProtocolVersion version) { core_->on_full_handshake(key, version); }
  /// Vetoes the peer `key` as a whole (e.g. its certificate was found revoked): counts `vetoed`
  /// and drops everything stored for it (`invalidated`). Returns the number of sessions dropped.
  /// To veto one connection's sessions only, use `Client::veto_caching`.
  std::size_t veto(const PeerKey& key) { return core_->veto(key); }
  /// Drops everything stored for `key` (`erased`); returns how many sessions.
  std::size_t erase(const PeerKey& key) { return core_->erase(key); }
  /// Drops every stored session (`erased`) and every import still waiting to be claimed (counted
  /// in `import_dropped`, not `erased`; `pending` becomes 0); the other counters are kept.
  /// Everything is released (`SSL_SESSION_free`) after unlocking.
  void clear() { core_->clear(); }
  /// Removes every expired (`expired`) or no longer resumable (`invalidated`,
  /// `SSL_SESSION_is_resumable`) stored session, and every waiting import past its expiry or no
  /// longer resumable (counted in `import_dropped` only, not `expired` or `invalidated`). Returns
  /// how many, stored sessions and imports together. Released after unlocking.
  std::size_t purge_expired() { return core_->purge_expired(); }
  /// Visits every stored, unexpired session as
  /// `f(const PeerKey&, const session_type&, time_point original_full_handshake)`, on a snapshot
  /// taken under the locks (one `SSL_SESSION_up_ref` each); `f` runs with no lock held.
  template <class F>
    requires std::invocable<F&, const PeerKey&, const session_type&, time_point>
  void for_each(F&& f) const {
    core_->for_each(std::forward<F>(f));
  }
  /// Adds a session read from a file under its key id (see persist.hpp); it is claimed by the
  /// first `take` for a key with that id. Takes over `session`'s reference; false if refused.
  bool import(const KeyIdSecret& secret, const KeyId& id, session_type session, time_point original) {
    return core_->import(secret, id, std::move(session), original);
  }
  /// Visits every import still waiting to be claimed, as
  /// `f(const KeyIdSecret&, const KeyId&, const session_type&, time_point original)`.
  template <class F> void for_each_import(F&& f) const { core_->for_each_import(std::forward<F>(f)); }
  /// A snapshot of the counters and sizes, summed over shards.
  [[nodiscard]] CacheStats stats() const { return core_->stats(); }
  /// The shard `key` belongs to (always 0 without sharding); for tests and diagnostics.
  [[nodiscard]] static std::size_t shard_of(const PeerKey& key) noexcept { return Core::shard_of(key); }

  /// For `Client::resume_from`: binds the cache to the context `id` on first use (throws
  /// `Error(errc::wrong_context)` for another one) and returns the sink connections file into.
  [[nodiscard]] std::shared_ptr<detail::CacheSink> attach(ContextId id) {
    core_->bind_context(id);
    return core_;
  }
  /// The context this cache serves through `Client::resume_from`, once one has used it.
  [[nodiscard]] std::optional<ContextId> bound_context() const noexcept { return core_->bound_context(); }

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace tlsresume
