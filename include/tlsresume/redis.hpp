#pragma once
// A fleet-wide session store: many processes and hosts share their TLS sessions through Redis
// (or Valkey), and each TLS 1.3 ticket is still used once. Optional: needs hiredis (`-lhiredis`,
// Debian's libhiredis-dev 0.14.1 is enough: the classic API, no TLS); the in-memory
// `SessionCache` stays the default and needs no server. See docs/fleet.md.
//
//   struct Api {};
//   auto ctx = tlsresume::Context<Api>::create();
//   tlsresume::RedisOptions redis;                       // 127.0.0.1:6379, 50 ms, prefix "tlsresume:"
//   auto store = std::make_shared<tlsresume::RedisStore>(redis);
//   const auto key = tlsresume::EncryptionKey::from_file("/etc/myapp/fleet-key");
//   tlsresume::FleetSessionCache<Api> cache(ctx, store, std::span(&key, 1));
//   client.resume_from(cache, ctx.key_for("api.example.com", 443));   // as with a SessionCache
//
// `FleetSessionCache<Tag, Store, Policy>` composes a local `SessionCache` with a shared store
// (`Store`, any type modelling `session_store`; `RedisStore` here):
//   - a connection's received TLS 1.3 tickets are kept locally up to
//     `Policy::local_tickets_per_peer` per peer, the rest are published: each ticket lives in
//     exactly one place (the local cache, the store, or a connection using it);
//   - a take tries the local cache, then the store: one atomic Redis operation (a Lua script
//     around `LPOP`) pops one ticket, so no two processes ever get the same one; a peer's TLS 1.2
//     session (reusable) is read, and kept locally after that;
//   - store names are HMAC-SHA-256 of `PeerKey::encode()` under a secret derived (HKDF) from the
//     fleet key; values are AES-256-GCM sealed with the store name as AAD and carry their own
//     expiry; the list's TTL is the latest expiry in it (detail/redis_value.hpp);
//   - a value that fails authentication is dropped and counted, never used; an expired one is
//     dropped and the take goes on;
//   - every store operation is bounded by `RedisOptions::timeout` (default 50 ms): connect,
//     AUTH, SELECT and commands run on non-blocking sockets under one deadline. Redis down, slow,
//     black-holed, restarted or replying garbage costs at most that, then a full handshake; the
//     error is counted and reported once per outage; while Redis is down, operations fail at once
//     and a reconnection is tried with exponential backoff, so sharing resumes by itself.
//
// Threads: `RedisStore` keeps a small pool of connections (each `redisContext` used by one
// thread at a time); `FleetSessionCache` is as thread-safe as its local policy (the default is).
// Create stores after `fork()`: a child process drops the connections it inherited.

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tlsresume/cache.hpp"
#include "tlsresume/context.hpp"
#include "tlsresume/detail/redis_value.hpp"
#include "tlsresume/error.hpp"
#include "tlsresume/handle.hpp"
#include "tlsresume/peer_key.hpp"
#include "tlsresume/persist.hpp"
#include "tlsresume/session.hpp"

namespace tlsresume {

// ---- the store interface -----------------------------------------------------------------------

/// The two store names of one peer under one fleet key: `tickets` (a list of sealed TLS 1.3
/// tickets, newest first) and `session` (one sealed TLS 1.2 session). HMACs: no secret, no host.
using StoreNames = detail::StoreNames;

/// What a write to the store did.
enum class StoreOutcome {
  stored,      ///< done
  not_stored,  ///< surely not done: refused, the store is unavailable, or the command never left
  unknown,     ///< maybe done: sent, but no (good) reply came before the deadline
};

/// One value a take found: which peer's names (an index into the names given) and which kind.
struct StoreItem {
  std::size_t peer = 0;  ///< index into the `StoreNames` given to `take`
  bool ticket = true;    ///< popped from the ticket list (true) or read from the session name
  std::string value;     ///< the sealed value, as stored
};

/// Counters of a store; they count since the store was made, over every cache using it.
struct StoreStats {
  std::uint64_t operations = 0;   ///< operations attempted (each bounded by the timeout)
  std::uint64_t round_trips = 0;  ///< request/reply exchanges with the server
  std::uint64_t errors = 0;       ///< operations that failed: I/O error, timeout, error or garbage reply
  std::uint64_t timeouts = 0;     ///< ... of which reached the deadline
  std::uint64_t unavailable = 0;  ///< operations not tried: the store was down, waiting to retry
  std::uint64_t busy = 0;         ///< operations not tried: every pooled connection stayed busy until the deadline
  std::uint64_t outages = 0;      ///< transitions to unavailable (each reported once)
  std::uint64_t recoveries = 0;   ///< transitions back to available (each reported once)
  std::uint64_t connections = 0;  ///< connections opened (the first, and reconnections)
  bool available = true;          ///< whether the last operation succeeded
};

/// A change of a store's availability, as given to `RedisOptions::report`.
struct StoreEvent {
  bool available = false;  ///< false: an outage started; true: the store works again
  std::string message;     ///< what failed (for an outage), naming the server, never a secret
};

/// What `FleetSessionCache` needs of a shared store. Names and values are opaque bytes (the cache
/// makes names from HMACs and seals values); every operation finishes by the `deadline` it is
/// given, never throws, and reports failure by its result.
template <class S>
concept session_store = requires(S& s, const S& cs, const StoreNames& peer, std::span<const StoreNames> peers,
                                 std::span<const std::string> names, const std::string& name, std::string_view value,
                                 std::int64_t expiry_ms, std::size_t max_kept,
                                 std::chrono::steady_clock::time_point deadline) {
  { cs.key_prefix() } -> std::convertible_to<std::string_view>;            // prepended to every name
  { cs.timeout() } -> std::convertible_to<std::chrono::milliseconds>;      // how long one take or filing may wait
  { s.push_ticket(peer, value, expiry_ms, max_kept, deadline) } -> std::same_as<StoreOutcome>;  // atomic: newest first, at most max_kept, TTL >= expiry, peer.session deleted
  { s.set_session(peer.session, value, expiry_ms, deadline) } -> std::same_as<StoreOutcome>;    // replaces the reusable session, expiring at expiry_ms
  { s.take(peers, deadline) } -> std::same_as<std::optional<StoreItem>>;   // atomic: pops one ticket (peers in order), else reads a session
  { s.erase(names, deadline) } -> std::same_as<StoreOutcome>;              // deletes these names
  { s.erase_if_equal(name, value, deadline) } -> std::same_as<StoreOutcome>;  // deletes name if it still holds value
  { cs.stats() } -> std::same_as<StoreStats>;                              // counters
};

// ---- RedisStore ------------------------------------------------------------------------------------

/// Where and how `RedisStore` reaches Redis.
struct RedisOptions {
  std::string host = "127.0.0.1";  ///< an IP address; a host name works but its resolution (getaddrinfo) is not bounded by `timeout`
  std::uint16_t port = 6379;
  std::string unix_socket;         ///< a path: used instead of host and port when set
  std::string user;                ///< ACL user (Redis 6+): `AUTH user password`; empty: `AUTH password`
  std::string password;            ///< empty: no AUTH
  int database = 0;                ///< `SELECT` when not 0
  std::string key_prefix = "tlsresume:";  ///< prepended to every key this store writes
  /// Bound of one operation (a take, or filing one session): connecting, AUTH, SELECT and the
  /// commands, together.
  std::chrono::milliseconds timeout{50};
  std::chrono::milliseconds min_backoff{100};   ///< first wait before reconnecting after a failure
  std::chrono::milliseconds max_backoff{2000};  ///< the wait doubles up to this
  std::size_t max_connections = 4;              ///< pooled connections (each used by one thread at a time)
  /// Called once when an outage starts and once when it ends, on the thread whose operation saw
  /// it, without a lock held. Default: one line on stderr; set it to `nullptr` for silence.
  std::function<void(const StoreEvent&)> report = [](const StoreEvent& e) {
    std::fprintf(stderr, "tlsresume: %s\n", e.message.c_str());
  };
};

namespace detail {

/// Blocks SIGPIPE in the calling thread while alive, and consumes a SIGPIPE raised meanwhile:
/// hiredis writes with `write()`, which raises SIGPIPE on a connection the server closed, and
/// its default action ends the process. Leaves the process's signal dispositions alone
/// (`pthread_sigmask`, `sigpending`, `sigtimedwait`).
class SigpipeGuard {
 public:
  SigpipeGuard() noexcept {
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    blocked_ = ::pthread_sigmask(SIG_BLOCK, &pipe, &old_) == 0;
    sigset_t pending;
    sigemptyset(&pending);
    was_pending_ = ::sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
  }
  ~SigpipeGuard() {
    if (!blocked_) {
      return;
    }
    const int saved = errno;
    sigset_t pending;
    sigemptyset(&pending);
    if (!was_pending_ && ::sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
      sigset_t pipe;
      sigemptyset(&pipe);
      sigaddset(&pipe, SIGPIPE);
      const timespec zero{0, 0};
      while (::sigtimedwait(&pipe, nullptr, &zero) < 0 && errno == EINTR) {
      }
    }
    ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    errno = saved;
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t old_{};
  bool blocked_ = false;
  bool was_pending_ = false;
};

using steady_time = std::chrono::steady_clock::time_point;

/// Waits with `poll` until `fd` is ready for `events` or `deadline` passes; false on timeout.
/// A poll error other than EINTR returns true, so that the I/O call that follows reports it.
inline bool wait_fd(int fd, short events, steady_time deadline) noexcept {
  for (;;) {
    const auto left = deadline - std::chrono::steady_clock::now();
    if (left <= std::chrono::steady_clock::duration::zero()) {
      return false;
    }
    const auto ms = std::min<std::int64_t>(std::chrono::ceil<std::chrono::milliseconds>(left).count(), INT_MAX);
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, static_cast<int>(ms));
    if (r > 0) {
      return true;
    }
    if (r < 0 && errno != EINTR) {
      return true;
    }
  }
}

struct RedisReplyFree {
  void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using RedisReplyPtr = std::unique_ptr<redisReply, RedisReplyFree>;

/// How an exchange with the server ended.
enum class Exchange {
  ok,         ///< every reply read (they may be error replies)
  not_sent,   ///< failed before the last command was handed to the kernel: the server cannot have run it
  after_send  ///< failed or timed out after sending: the server may have run it
};

/// One non-blocking hiredis connection (`redisContext`), used by one thread at a time.
class RedisConnection {
 public:
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;
  /// `redisFree`: closes the socket (in this process only, after a fork) and frees the buffers.
  ~RedisConnection() { redisFree(c_); }

  /// Connects (`redisConnectNonBlock` / `redisConnectUnixNonBlock`, then `poll` for the
  /// connection and `SO_ERROR`), then sends AUTH and SELECT if configured, all by `deadline`.
  /// Returns null and sets `error` (with `timed_out`) on failure.
  static std::unique_ptr<RedisConnection> open(const RedisOptions& o, steady_time deadline, std::string& error,
                                               bool& timed_out, std::uint64_t& round_trips) {
    redisContext* c = o.unix_socket.empty() ? redisConnectNonBlock(o.host.c_str(), o.port)
                                            : redisConnectUnixNonBlock(o.unix_socket.c_str());
    if (c == nullptr) {
      error = "out of memory";
      return nullptr;
    }
    std::unique_ptr<RedisConnection> conn(new RedisConnection(c));
    if (c->err != 0) {
      error = std::string("connect: ") + c->errstr;
      return nullptr;
    }
    (void)::fcntl(c->fd, F_SETFD, FD_CLOEXEC);
    if (!wait_fd(c->fd, POLLOUT, deadline)) {
      error = "connect: timed out";
      timed_out = true;
      return nullptr;
    }
    int so_error = 0;
    socklen_t len = sizeof so_error;
    if (::getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) {
      so_error = errno;
    }
    if (so_error != 0) {
      error = "connect: " + std::system_category().message(so_error);
      return nullptr;
    }
    std::vector<std::vector<std::string_view>> setup;
    const std::string db = std::to_string(o.database);
    if (!o.password.empty()) {
      setup.push_back(o.user.empty() ? std::vector<std::string_view>{"AUTH", o.password}
                                     : std::vector<std::string_view>{"AUTH", o.user, o.password});
    }
    if (o.database != 0) {
      setup.push_back({"SELECT", db});
    }
    if (!setup.empty()) {
      std::vector<RedisReplyPtr> replies;
      ++round_trips;
      if (conn->exchange(setup, replies, deadline, error, timed_out) != Exchange::ok) {
        error = "connection set-up: " + error;
        return nullptr;
      }
      for (std::size_t i = 0; i < replies.size(); ++i) {
        const redisReply& r = *replies[i];
        if (r.type != REDIS_REPLY_STATUS) {
          error = std::string(setup[i][0]) + " failed: " +
                  (r.type == REDIS_REPLY_ERROR ? std::string(r.str, std::min<std::size_t>(r.len, 200)) : "unexpected reply");
          return nullptr;
        }
      }
    }
    return conn;
  }

  /// Whether an idle connection is no longer usable: readable (the server closed it, or sent
  /// something unasked) or in error, by a `poll` that does not wait.
  [[nodiscard]] bool stale() const noexcept {
    pollfd p{c_->fd, POLLIN, 0};
    return ::poll(&p, 1, 0) != 0;
  }
  [[nodiscard]] pid_t owner() const noexcept { return pid_; }

  /// Sends `commands` pipelined (`redisAppendCommandArgv`, `redisBufferWrite` under a
  /// `SigpipeGuard`) and reads one reply each (`redisBufferRead`, `redisGetReplyFromReader`),
  /// waiting with `poll` until `deadline`. On failure sets `error` and `timed_out`; the
  /// connection must then be dropped (replies would be out of step).
  Exchange exchange(std::span<const std::vector<std::string_view>> commands, std::vector<RedisReplyPtr>& replies,
                    steady_time deadline, std::string& error, bool& timed_out) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const auto& command : commands) {
      argv.clear();
      lengths.clear();
      for (std::string_view a : command) {
        argv.push_back(a.data());
        lengths.push_back(a.size());
      }
      if (redisAppendCommandArgv(c_, static_cast<int>(argv.size()), argv.data(), lengths.data()) != REDIS_OK) {
        error = std::string("format: ") + c_->errstr;
        return Exchange::not_sent;
      }
    }
    for (int done = 0; done == 0;) {
      int r = REDIS_OK;
      {
        const SigpipeGuard guard;
        r = redisBufferWrite(c_, &done);
      }
      if (r != REDIS_OK) {
        error = std::string("write: ") + c_->errstr;
        return Exchange::not_sent;
      }
      if (done == 0 && !wait_fd(c_->fd, POLLOUT, deadline)) {
        error = "write: timed out";
        timed_out = true;
        return Exchange::not_sent;
      }
    }
    replies.clear();
    while (replies.size() < commands.size()) {
      void* reply = nullptr;
      if (redisGetReplyFromReader(c_, &reply) != REDIS_OK) {
        error = std::string("protocol error: ") + c_->errstr;
        return Exchange::after_send;
      }
      if (reply != nullptr) {
        replies.emplace_back(static_cast<redisReply*>(reply));
        continue;
      }
      if (!wait_fd(c_->fd, POLLIN, deadline)) {
        error = "no reply within the timeout";
        timed_out = true;
        return Exchange::after_send;
      }
      if (redisBufferRead(c_) != REDIS_OK) {
        error = std::string("read: ") + c_->errstr;
        return Exchange::after_send;
      }
    }
    return Exchange::ok;
  }

 private:
  explicit RedisConnection(redisContext* c) noexcept : c_(c), pid_(::getpid()) {}
  redisContext* c_;
  pid_t pid_;
};

/// A Lua script and its SHA-1 (`EVP_Digest`), for `EVALSHA` with an `EVAL` fallback.
struct RedisScript {
  std::string_view body;
  std::string sha1;
};

inline RedisScript make_script(std::string_view body) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(body.data(), body.size(), md, &len, EVP_sha1(), nullptr) != 1) {
    throw_openssl_error("EVP_Digest(SHA1)");
  }
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) {
    hex += digits[md[i] >> 4];
    hex += digits[md[i] & 0xfU];
  }
  return RedisScript{body, hex};
}

/// KEYS: ticket list, session name. ARGV: value, expiry (ms since the epoch), list bound.
/// Refuses a value already expired by the server's clock; replaces a key of another type.
inline constexpr std::string_view push_script_body = R"lua(
local expiry = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if expiry <= now then return 0 end
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'list' and kind ~= 'none' then redis.call('DEL', KEYS[1]) end
local n = redis.call('LPUSH', KEYS[1], ARGV[1])
if n > max then redis.call('LTRIM', KEYS[1], 0, max - 1) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 or now + ttl < expiry then redis.call('PEXPIREAT', KEYS[1], expiry) end
redis.call('DEL', KEYS[2])
return n
)lua";

/// KEYS: ticket list and session name of each peer, in pairs. Pops the first ticket of the first
/// non-empty list, else reads the first session; returns {index of the key, value} or nil.
inline constexpr std::string_view take_script_body = R"lua(
for i = 1, #KEYS, 2 do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind == 'list' then
    local v = redis.call('LPOP', KEYS[i])
    if v then return {i - 1, v} end
  elseif kind ~= 'none' then
    redis.call('DEL', KEYS[i])
  end
end
for i = 2, #KEYS, 2 do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind == 'string' then
    return {i - 1, redis.call('GET', KEYS[i])}
  elseif kind ~= 'none' then
    redis.call('DEL', KEYS[i])
  end
end
return false
)lua";

/// KEYS: a name. ARGV: a value. Deletes the name if it holds exactly that value.
inline constexpr std::string_view erase_if_equal_script_body = R"lua(
if redis.call('TYPE', KEYS[1]).ok == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
)lua";

}  // namespace detail

/// A `session_store` on Redis through hiredis: a pool of non-blocking connections, each operation
/// bounded by `RedisOptions::timeout`, availability tracked with exponential backoff. Thread-safe.
/// Not copyable or movable (share it with `std::shared_ptr`).
class RedisStore {
 public:
  /// Checks the options (throws `Error(errc::invalid_argument)`: a timeout or pool size of 0, a
  /// negative database, a user without a password) and computes the scripts' SHA-1. Connects
  /// lazily, on the first operation. Takes a copy of `options`.
  explicit RedisStore(RedisOptions options)
      : options_(std::move(options)),
        push_(detail::make_script(detail::push_script_body)),
        take_(detail::make_script(detail::take_script_body)),
        erase_if_equal_(detail::make_script(detail::erase_if_equal_script_body)),
        pid_(::getpid()),
        backoff_(options_.min_backoff) {
    if (options_.timeout.count() <= 0 || options_.max_connections == 0 || options_.database < 0 ||
        (!options_.user.empty() && options_.password.empty()) || options_.min_backoff.count() < 0 ||
        options_.max_backoff < options_.min_backoff) {
      throw_error(errc::invalid_argument, "RedisStore",
                  "timeout and max_connections must be > 0, database >= 0, a user needs a password, "
                  "0 <= min_backoff <= max_backoff");
    }
    ERR_clear_error();
  }
  RedisStore(const RedisStore&) = delete;
  RedisStore& operator=(const RedisStore&) = delete;
  /// Frees every pooled connection (`redisFree`). No operation may still run.
  ~RedisStore() = default;

  /// The options given at construction (no hiredis call).
  [[nodiscard]] const RedisOptions& options() const noexcept { return options_; }
  /// `RedisOptions::key_prefix`, borrowed (no hiredis call).
  [[nodiscard]] std::string_view key_prefix() const noexcept { return options_.key_prefix; }
  /// `RedisOptions::timeout`: the bound of one take or filing (no hiredis call).
  [[nodiscard]] std::chrono::milliseconds timeout() const noexcept { return options_.timeout; }

  /// Pushes a sealed ticket at the head of `peer.tickets` with one `EVALSHA` (Lua: `LPUSH`, `LTRIM`
  /// to `max_kept`, `PEXPIREAT` to `expiry_ms` if later than the list's TTL, `DEL peer.session`),
  /// unless `expiry_ms` is already past by the server's clock (`not_stored`). An error reply or a
  /// failure after sending is `unknown` (the script may have run). Borrows everything; never throws.
  StoreOutcome push_ticket(const StoreNames& peer, std::string_view value, std::int64_t expiry_ms, std::size_t max_kept,
                           detail::steady_time deadline) noexcept {
    try {
      const std::string expiry = std::to_string(expiry_ms);
      const std::string max = std::to_string(std::max<std::size_t>(1, max_kept));
      StoreOutcome outcome = StoreOutcome::not_stored;
      run(deadline, [&](detail::RedisConnection& c, Attempt& a) {
        const std::string_view keys[] = {peer.tickets, peer.session};
        const std::string_view args[] = {value, expiry, max};
        auto reply = eval(c, a, push_, keys, args);
        if (!reply) {
          outcome = a.sent ? StoreOutcome::unknown : StoreOutcome::not_stored;
          return false;
        }
        if (reply->type != REDIS_REPLY_INTEGER) {
          outcome = StoreOutcome::unknown;
          return a.fail(*reply, "push");
        }
        outcome = reply->integer > 0 ? StoreOutcome::stored : StoreOutcome::not_stored;
        return true;
      });
      return outcome;
    } catch (...) {
      return StoreOutcome::unknown;
    }
  }

  /// Replaces the sealed session at `name` (`SET name value PXAT expiry_ms`). Never throws.
  StoreOutcome set_session(const std::string& name, std::string_view value, std::int64_t expiry_ms,
                           detail::steady_time deadline) noexcept {
    try {
      const std::string expiry = std::to_string(expiry_ms);
      StoreOutcome outcome = StoreOutcome::not_stored;
      run(deadline, [&](detail::RedisConnection& c, Attempt& a) {
        const std::vector<std::vector<std::string_view>> command{{"SET", name, value, "PXAT", expiry}};
        auto reply = single(c, a, command);
        if (!reply) {
          outcome = a.sent ? StoreOutcome::unknown : StoreOutcome::not_stored;
          return false;
        }
        if (reply->type != REDIS_REPLY_STATUS) {
          outcome = StoreOutcome::not_stored;
          return a.fail(*reply, "SET");
        }
        outcome = StoreOutcome::stored;
        return true;
      });
      return outcome;
    } catch (...) {
      return StoreOutcome::unknown;
    }
  }

  /// Takes one value with one `EVALSHA` (Lua): pops the head of the first non-empty ticket list
  /// of `peers` (`LPOP`), else reads the first session (`GET`); a key of another type is deleted.
  /// `std::nullopt` for nothing found and for every failure (counted). Never throws.
  std::optional<StoreItem> take(std::span<const StoreNames> peers, detail::steady_time deadline) noexcept {
    try {
      std::vector<std::string_view> keys;
      for (const StoreNames& p : peers) {
        keys.push_back(p.tickets);
        keys.push_back(p.session);
      }
      std::optional<StoreItem> out;
      run(deadline, [&](detail::RedisConnection& c, Attempt& a) {
        auto reply = eval(c, a, take_, keys, {});
        if (!reply) {
          return false;
        }
        if (reply->type == REDIS_REPLY_NIL) {
          return true;
        }
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 || reply->element[0]->type != REDIS_REPLY_INTEGER ||
            reply->element[1]->type != REDIS_REPLY_STRING || reply->element[0]->integer < 0 ||
            static_cast<std::size_t>(reply->element[0]->integer) >= keys.size()) {
          return a.fail(*reply, "take");
        }
        const auto index = static_cast<std::size_t>(reply->element[0]->integer);
        out.emplace(StoreItem{index / 2, index % 2 == 0, std::string(reply->element[1]->str, reply->element[1]->len)});
        return true;
      });
      return out;
    } catch (...) {
      return std::nullopt;
    }
  }

  /// Deletes `names` (`UNLINK`). Never throws.
  StoreOutcome erase(std::span<const std::string> names, detail::steady_time deadline) noexcept {
    try {
      if (names.empty()) {
        return StoreOutcome::stored;
      }
      StoreOutcome outcome = StoreOutcome::not_stored;
      run(deadline, [&](detail::RedisConnection& c, Attempt& a) {
        std::vector<std::vector<std::string_view>> command(1);
        command[0].push_back("UNLINK");
        for (const std::string& n : names) {
          command[0].push_back(n);
        }
        auto reply = single(c, a, command);
        if (!reply) {
          outcome = a.sent ? StoreOutcome::unknown : StoreOutcome::not_stored;
          return false;
        }
        if (reply->type != REDIS_REPLY_INTEGER) {
          return a.fail(*reply, "UNLINK");
        }
        outcome = StoreOutcome::stored;
        return true;
      });
      return outcome;
    } catch (...) {
      return StoreOutcome::unknown;
    }
  }

  /// Deletes `name` if it still holds `value` (Lua: `GET`, compare, `DEL`). Never throws.
  StoreOutcome erase_if_equal(const std::string& name, std::string_view value, detail::steady_time deadline) noexcept {
    try {
      StoreOutcome outcome = StoreOutcome::not_stored;
      run(deadline, [&](detail::RedisConnection& c, Attempt& a) {
        const std::string_view keys[] = {name};
        const std::string_view args[] = {value};
        auto reply = eval(c, a, erase_if_equal_, keys, args);
        if (!reply) {
          outcome = a.sent ? StoreOutcome::unknown : StoreOutcome::not_stored;
          return false;
        }
        if (reply->type != REDIS_REPLY_INTEGER) {
          return a.fail(*reply, "erase");
        }
        outcome = reply->integer > 0 ? StoreOutcome::stored : StoreOutcome::not_stored;
        return true;
      });
      return outcome;
    } catch (...) {
      return StoreOutcome::unknown;
    }
  }

  /// Sends `PING` now (bounded by the timeout, even while the store is waiting to reconnect) and
  /// returns whether `PONG` came back; a success ends an outage. Never throws.
  bool ping() noexcept {
    try {
      bool ok = false;
      run(
          std::chrono::steady_clock::now() + options_.timeout,
          [&](detail::RedisConnection& c, Attempt& a) {
            const std::vector<std::vector<std::string_view>> command{{"PING"}};
            auto reply = single(c, a, command);
            if (!reply) {
              return false;
            }
            if (reply->type != REDIS_REPLY_STATUS || std::string_view(reply->str, reply->len) != "PONG") {
              return a.fail(*reply, "PING");
            }
            ok = true;
            return true;
          },
          true);
      return ok;
    } catch (...) {
      return false;
    }
  }

  /// A snapshot of the counters (no hiredis call).
  [[nodiscard]] StoreStats stats() const {
    std::lock_guard lock(health_mutex_);
    StoreStats s = counters_;
    s.available = up_.load(std::memory_order_relaxed);
    return s;
  }
  /// The message of the last failure (empty if none); never holds a secret.
  [[nodiscard]] std::string last_error() const {
    std::lock_guard lock(health_mutex_);
    return last_error_;
  }

 private:
  // One operation's state: what went wrong, and whether a command left.
  struct Attempt {
    std::string error;
    bool timed_out = false;
    bool sent = false;
    bool healthy = true;  // the connection may go back to the pool
    detail::steady_time deadline_{};
    // A reply of the wrong shape: the server is not behaving as Redis (or misconfigured).
    bool fail(const redisReply& r, std::string_view what) {
      error = std::string(what) + ": " +
              (r.type == REDIS_REPLY_ERROR ? std::string(r.str, std::min<std::size_t>(r.len, 200)) : "unexpected reply");
      return false;
    }
  };

  // One command, one reply (counted as a round trip).
  detail::RedisReplyPtr single(detail::RedisConnection& c, Attempt& a,
                               std::span<const std::vector<std::string_view>> command) {
    std::vector<detail::RedisReplyPtr> replies;
    {
      std::lock_guard lock(health_mutex_);
      ++counters_.round_trips;
    }
    const auto r = c.exchange(command, replies, a.deadline_, a.error, a.timed_out);
    if (r != detail::Exchange::ok) {
      a.sent = a.sent || r == detail::Exchange::after_send;
      a.healthy = false;
      return nullptr;
    }
    a.sent = true;
    return std::move(replies.front());
  }

  // EVALSHA, and EVAL once if the server does not know the script (restarted, SCRIPT FLUSH).
  detail::RedisReplyPtr eval(detail::RedisConnection& c, Attempt& a, const detail::RedisScript& script,
                             std::span<const std::string_view> keys, std::span<const std::string_view> args) {
    const std::string nkeys = std::to_string(keys.size());
    std::vector<std::vector<std::string_view>> command(1);
    auto& argv = command[0];
    argv.reserve(3 + keys.size() + args.size());
    argv.push_back("EVALSHA");
    argv.push_back(script.sha1);
    argv.push_back(nkeys);
    argv.insert(argv.end(), keys.begin(), keys.end());
    argv.insert(argv.end(), args.begin(), args.end());
    auto reply = single(c, a, command);
    if (reply && reply->type == REDIS_REPLY_ERROR && std::string_view(reply->str, reply->len).starts_with("NOSCRIPT")) {
      argv[0] = "EVAL";
      argv[1] = script.body;
      reply = single(c, a, command);
    }
    return reply;
  }
  // Runs `body(connection, attempt)` (true = success) on a pooled connection, unless the store is
  // down and not yet due for a retry (`force`: try anyway). Updates availability and counters.
  template <class F> void run(detail::steady_time deadline, F&& body, bool force = false) {
    {
      std::lock_guard lock(health_mutex_);
      ++counters_.operations;
    }
    bool probe = false;
    if (!admit(force, probe)) {
      std::lock_guard lock(health_mutex_);
      ++counters_.unavailable;
      return;
    }
    Attempt attempt;
    attempt.deadline_ = deadline;
    bool busy = false;
    std::unique_ptr<detail::RedisConnection> conn = acquire(attempt, busy);
    if (!conn) {
      if (busy) {
        std::lock_guard lock(health_mutex_);
        ++counters_.busy;
        probing_ = probing_ && !probe;
        return;
      }
      failed(attempt);
      return;
    }
    const bool ok = body(*conn, attempt);
    release(std::move(conn), attempt.healthy);
    if (ok) {
      succeeded();
    } else {
      failed(attempt);
    }
  }

  // Whether an operation may talk to the server now: always while available; while down, one
  // operation at a time once the backoff has passed (the probe), or any with `force`.
  bool admit(bool force, bool& probe) {
    if (up_.load(std::memory_order_acquire)) {
      return true;
    }
    std::lock_guard lock(health_mutex_);
    if (up_.load(std::memory_order_relaxed) || force) {
      return true;
    }
    if (probing_ || std::chrono::steady_clock::now() < retry_at_) {
      return false;
    }
    probing_ = true;
    probe = true;
    return true;
  }

  void succeeded() {
    if (up_.load(std::memory_order_acquire)) {
      return;
    }
    StoreEvent event;
    {
      std::lock_guard lock(health_mutex_);
      probing_ = false;
      backoff_ = options_.min_backoff;
      if (up_.load(std::memory_order_relaxed)) {
        return;
      }
      up_.store(true, std::memory_order_release);
      ++counters_.recoveries;
      event.available = true;
      event.message = "fleet session store " + where() + " available again: sessions are shared again";
    }
    notify(event);
  }

  void failed(const Attempt& a) {
    StoreEvent event;
    bool report = false;
    {
      std::lock_guard lock(health_mutex_);
      ++counters_.errors;
      counters_.timeouts += a.timed_out ? 1 : 0;
      last_error_ = a.error;
      probing_ = false;
      retry_at_ = std::chrono::steady_clock::now() + backoff_;
      const auto doubled = backoff_.count() > 0 ? backoff_ * 2 : std::chrono::milliseconds(1);
      backoff_ = std::clamp(doubled, options_.min_backoff, options_.max_backoff);
      if (up_.load(std::memory_order_relaxed)) {
        up_.store(false, std::memory_order_release);
        ++counters_.outages;
        report = true;
        event.message = "fleet session store " + where() + " unavailable (" + a.error +
                        "): connections fall back to full handshakes until it returns";
      }
    }
    if (report) {
      notify(event);
    }
  }

  void notify(const StoreEvent& event) noexcept {
    try {
      if (options_.report) {
        options_.report(event);
      }
    } catch (...) {
      // A reporter that throws must not break a connection.
    }
  }

  [[nodiscard]] std::string where() const {
    return options_.unix_socket.empty() ? "redis://" + options_.host + ":" + std::to_string(options_.port)
                                        : "redis+unix://" + options_.unix_socket;
  }

  // A connection from the pool (dropping stale ones, and those inherited across a fork), a new
  // one if fewer than `max_connections` are open, or null: connecting failed, or (`busy`) none
  // came free before the deadline.
  std::unique_ptr<detail::RedisConnection> acquire(Attempt& a, bool& busy) {
    std::vector<std::unique_ptr<detail::RedisConnection>> dropped;  // freed after unlocking
    std::unique_lock lock(pool_mutex_);
    if (const pid_t pid = ::getpid(); pid != pid_) {
      dropped.swap(idle_);
      open_ = 0;
      pid_ = pid;
    }
    for (;;) {
      while (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        if (!c->stale()) {
          return c;
        }
        --open_;
        dropped.push_back(std::move(c));
      }
      if (open_ < options_.max_connections) {
        ++open_;
        lock.unlock();
        std::uint64_t round_trips = 0;
        auto c = detail::RedisConnection::open(options_, a.deadline_, a.error, a.timed_out, round_trips);
        {
          std::lock_guard health(health_mutex_);
          counters_.round_trips += round_trips;
          counters_.connections += c ? 1 : 0;
        }
        if (!c) {
          lock.lock();
          --open_;
          pool_cv_.notify_one();
        }
        return c;
      }
      if (pool_cv_.wait_until(lock, a.deadline_) == std::cv_status::timeout && idle_.empty() &&
          open_ >= options_.max_connections) {
        busy = true;
        return nullptr;
      }
    }
  }

  void release(std::unique_ptr<detail::RedisConnection> c, bool healthy) {
    std::unique_lock lock(pool_mutex_);
    if (c->owner() != pid_) {
      return;  // inherited from before a fork: not counted in this process's pool
    }
    if (healthy) {
      idle_.push_back(std::move(c));
    } else {
      --open_;
    }
    pool_cv_.notify_one();
    lock.unlock();
    // `c`, if not pooled, is freed here (after unlocking).
  }

  RedisOptions options_;
  detail::RedisScript push_;
  detail::RedisScript take_;
  detail::RedisScript erase_if_equal_;

  std::mutex pool_mutex_;
  std::condition_variable pool_cv_;
  std::vector<std::unique_ptr<detail::RedisConnection>> idle_;
  std::size_t open_ = 0;
  pid_t pid_;

  std::atomic<bool> up_{true};
  mutable std::mutex health_mutex_;  // guards what follows
  bool probing_ = false;
  detail::steady_time retry_at_{};
  std::chrono::milliseconds backoff_;
  StoreStats counters_;
  std::string last_error_;
};

static_assert(session_store<RedisStore>);

// ---- the fleet cache --------------------------------------------------------------------------------

/// What a `FleetSessionCache` policy provides.
template <class P>
concept fleet_policy = requires {
  typename P::local_policy;                                                 // the local SessionCache's policy
  requires cache_policy<typename P::local_policy>;                          // ... a valid one (its clock decides expiry)
  { P::local_tickets_per_peer } -> std::convertible_to<std::size_t>;        // tickets kept locally per peer; the rest are published
  { P::max_published_per_peer } -> std::convertible_to<std::size_t>;        // tickets the store keeps per peer (>= 1; oldest trimmed)
  { P::max_discards_per_take } -> std::convertible_to<std::size_t>;         // unusable values a take drops before it gives up
};

/// The default: a thread-safe local cache; one ticket per peer kept locally (the next connection
/// from this process resumes without a round trip), the others shared; 16 tickets per peer in
/// the store.
struct FleetPolicy {
  using local_policy = ThreadSafePolicy;
  static constexpr std::size_t local_tickets_per_peer = 1;
  static constexpr std::size_t max_published_per_peer = 16;
  static constexpr std::size_t max_discards_per_take = 4;
};

/// Counters of a `FleetSessionCache` (the local cache has its own: `local().stats()`).
struct FleetStats {
  std::uint64_t local_hits = 0;       ///< takes served by the local cache
  std::uint64_t remote_tickets = 0;   ///< TLS 1.3 tickets taken from the store (popped: used once, fleet-wide)
  std::uint64_t remote_sessions = 0;  ///< TLS 1.2 sessions read from the store (then kept locally)
  std::uint64_t misses = 0;           ///< takes that found nothing usable
  std::uint64_t kept_local = 0;       ///< received sessions kept in the local cache (policy, or the store failed)
  std::uint64_t published = 0;        ///< sessions written to the store
  std::uint64_t publish_failed = 0;   ///< writes that failed (a ticket surely not stored is kept locally; one maybe stored is dropped)
  std::uint64_t expired = 0;          ///< values read and dropped: expired (their own expiry or the session's), or not resumable
  std::uint64_t forged = 0;           ///< values read and dropped: AES-GCM authentication failed (wrong key, tampered, moved)
  std::uint64_t unknown_key = 0;      ///< values read and dropped: sealed with a key id none of the keys has
  std::uint64_t malformed = 0;        ///< values read and dropped: bad size or version, or an invalid body or session
  std::uint64_t vetoed = 0;           ///< vetoes (the peer's store entries are deleted)
  StoreStats store;                   ///< the store's counters (shared by every cache using the store)
};

namespace detail {

/// The state of a `FleetSessionCache`, shared (as a `CacheSink`) with the connections filing
/// into it, as `CacheCore` is.
template <class Tag, class Store, class Policy> class FleetCore final : public CacheSink {
 public:
  using session_type = BoundSession<Tag>;
  using local_cache = SessionCache<Tag, typename Policy::local_policy>;
  using clock_type = typename Policy::local_policy::clock_type;
  using time_point = std::chrono::system_clock::time_point;
  static constexpr std::size_t local_tickets_per_peer = static_cast<std::size_t>(Policy::local_tickets_per_peer);
  static constexpr std::size_t max_published_per_peer = static_cast<std::size_t>(Policy::max_published_per_peer);
  static constexpr std::size_t max_discards_per_take = static_cast<std::size_t>(Policy::max_discards_per_take);
  static_assert(max_published_per_peer >= 1, "FleetSessionCache: Policy::max_published_per_peer must be at least 1");

  FleetCore(ContextId id, std::shared_ptr<Store> store, std::vector<FleetKeyMaterial> keys)
      : id_(id), store_(std::move(store)), keys_(std::move(keys)), prefix_(store_->key_prefix()) {
    local_sink_ = local_.attach(id_);
  }

  [[nodiscard]] ContextId id() const noexcept { return id_; }
  local_cache& local() noexcept { return local_; }
  Store& store() noexcept { return *store_; }
  void set_self(const std::shared_ptr<FleetCore>& self) noexcept { self_ = self; }

  // CacheSink: called from OpenSSL callbacks; never throw.
  bool file(const PeerKey& key, Handle<SSL_SESSION> session, ContextId id,
            std::optional<time_point> original) noexcept override {
    return detail::file_by_put(*this, key, std::move(session), id, original);
  }
  bool invalidate(const SSL_SESSION* session, std::size_t key_hash) noexcept override {
    return local_sink_->invalidate(session, key_hash);
  }
  void full_handshake(const PeerKey& key, ProtocolVersion version) noexcept override {
    local_sink_->full_handshake(key, version);
    if (static_cast<int>(version) < TLS1_3_VERSION) {
      return;
    }
    try {  // no downgrade, fleet-wide: the peer speaks TLS 1.3, its TLS 1.2 session goes
      const auto names = names_for(key);
      std::vector<std::string> sessions;
      for (const StoreNames& n : *names) {
        sessions.push_back(n.session);
      }
      (void)store_->erase(sessions, deadline());
    } catch (...) {
      ERR_clear_error();
    }
  }
  std::size_t veto(const PeerKey& key, std::span<const SSL_SESSION* const> sessions) noexcept override {
    const std::size_t removed = local_sink_->veto(key, sessions);
    erase_remote(key);
    vetoed_.fetch_add(1, std::memory_order_relaxed);
    return removed;
  }

  /// Files `session` for `key` by the policy: a TLS 1.3 ticket locally (while the peer has fewer
  /// than `local_tickets_per_peer` here) or in the store; a TLS 1.2 session in both.
  bool put(const PeerKey& key, session_type session, PutOptions options) {
    if (!session) {
      return false;
    }
    if (SSL_SESSION_get_protocol_version(session.native_handle()) < TLS1_3_VERSION) {
      const bool published = publish(key, session, options) == StoreOutcome::stored;
      const bool kept = local_.put(key, std::move(session), options);
      kept_local_.fetch_add(kept ? 1 : 0, std::memory_order_relaxed);
      return kept || published;
    }
    if (reserve_local_slot(key)) {
      if (local_.put(key, std::move(session), options)) {
        kept_local_.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
      release_local_slot(key);
      return false;  // refused (expired, not resumable): the store would refuse it too
    }
    switch (publish(key, session, options)) {
      case StoreOutcome::stored: return true;
      case StoreOutcome::unknown: return false;  // it may be in the store: keeping it too could use it twice
      case StoreOutcome::not_stored: break;
    }
    if (local_.put(key, std::move(session), options)) {  // surely not shared: keep it here
      note_local_put(key);
      kept_local_.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    return false;
  }

  /// Seals `session` under the first fleet key and writes it to the store (a TLS 1.3 ticket
  /// pushed on the peer's list, a TLS 1.2 session replacing the peer's). Refuses (not_stored)
  /// what `SessionCache::put` would refuse: not resumable, expired, dated in the future.
  StoreOutcome publish(const PeerKey& key, const session_type& session, const PutOptions& options) {
    if (!session) {
      return StoreOutcome::not_stored;
    }
    const SSL_SESSION* s = session.native_handle();
    const auto facts = session_facts(s, options.original_full_handshake);
    const time_point now = time_point(clock_type::now());
    const auto in_future = [now](time_point t) { return t > now && t - now > std::chrono::seconds(1); };
    if (!facts.resumable || facts.expires <= now || in_future(facts.created) || in_future(facts.original)) {
      publish_failed_.fetch_add(1, std::memory_order_relaxed);
      return StoreOutcome::not_stored;
    }
    const auto names = names_for(key);
    const StoreNames& mine = names->front();
    const std::string value = seal_fleet_value(keys_.front(), facts.tls13 ? mine.tickets : mine.session, s,
                                               facts.expires, facts.original);
    const std::int64_t expiry_ms = to_unix_seconds(facts.expires) * 1000;
    const StoreOutcome outcome = facts.tls13
                                     ? store_->push_ticket(mine, value, expiry_ms, max_published_per_peer, deadline())
                                     : store_->set_session(mine.session, value, expiry_ms, deadline());
    (outcome == StoreOutcome::stored ? published_ : publish_failed_).fetch_add(1, std::memory_order_relaxed);
    return outcome;
  }

  /// The local cache first, then the store (see the header comment).
  std::optional<TakenSession<Tag>> take_with_origin(const PeerKey& key) {
    if (auto local = local_.take_with_origin(key)) {
      if (SSL_SESSION_get_protocol_version(local->session.native_handle()) >= TLS1_3_VERSION) {
        note_local_taken(key);
      }
      local_hits_.fetch_add(1, std::memory_order_relaxed);
      return local;
    }
    note_local_empty(key);
    const auto names = names_for(key);
    const steady_time until = deadline();
    for (std::size_t attempt = 0; attempt <= max_discards_per_take; ++attempt) {
      std::optional<StoreItem> item = store_->take(*names, until);
      if (!item || item->peer >= names->size()) {
        break;
      }
      const std::string& name = item->ticket ? (*names)[item->peer].tickets : (*names)[item->peer].session;
      auto taken = open(key, name, *item);
      if (taken) {
        if (item->ticket) {
          remote_tickets_.fetch_add(1, std::memory_order_relaxed);
        } else {
          remote_sessions_.fetch_add(1, std::memory_order_relaxed);
          (void)local_.put(key, taken->session, PutOptions{taken->original_full_handshake});  // reusable: keep it here
        }
        return taken;
      }
      if (!item->ticket) {  // a bad session stays until replaced: remove it unless it changed meanwhile
        (void)store_->erase_if_equal(name, item->value, until);
      }
    }
    misses_.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }

  /// Drops what `key` has in the store, under every key (`UNLINK`).
  void erase_remote(const PeerKey& key) noexcept {
    try {
      const auto names = names_for(key);
      std::vector<std::string> all;
      for (const StoreNames& n : *names) {
        all.push_back(n.tickets);
        all.push_back(n.session);
      }
      (void)store_->erase(all, deadline());
    } catch (...) {
      ERR_clear_error();
    }
  }

  /// The names of `key` under each fleet key, the writing key's first (cached per peer).
  std::shared_ptr<const std::vector<StoreNames>> names_for(const PeerKey& key) {
    {
      std::lock_guard lock(peers_mutex_);
      if (auto it = peers_.find(key); it != peers_.end() && it->second.names) {
        return it->second.names;
      }
    }
    auto names = std::make_shared<std::vector<StoreNames>>();
    for (const FleetKeyMaterial& k : keys_) {
      names->push_back(fleet_names(prefix_, k, key));
    }
    std::lock_guard lock(peers_mutex_);
    peer_state(key).names = names;
    return names;
  }

  [[nodiscard]] FleetStats stats() const {
    FleetStats s;
    s.local_hits = local_hits_.load(std::memory_order_relaxed);
    s.remote_tickets = remote_tickets_.load(std::memory_order_relaxed);
    s.remote_sessions = remote_sessions_.load(std::memory_order_relaxed);
    s.misses = misses_.load(std::memory_order_relaxed);
    s.kept_local = kept_local_.load(std::memory_order_relaxed);
    s.published = published_.load(std::memory_order_relaxed);
    s.publish_failed = publish_failed_.load(std::memory_order_relaxed);
    s.expired = expired_.load(std::memory_order_relaxed);
    s.forged = forged_.load(std::memory_order_relaxed);
    s.unknown_key = unknown_key_.load(std::memory_order_relaxed);
    s.malformed = malformed_.load(std::memory_order_relaxed);
    s.vetoed = vetoed_.load(std::memory_order_relaxed);
    s.store = store_->stats();
    return s;
  }

 private:
  struct PeerState {
    std::shared_ptr<const std::vector<StoreNames>> names;
    std::size_t local_tickets = 0;  // an upper bound of the peer's tickets in the local cache
  };

  steady_time deadline() const { return std::chrono::steady_clock::now() + store_->timeout(); }

  // Opens a value read from `name`, checks expiry and kind, binds it to the context.
  std::optional<TakenSession<Tag>> open(const PeerKey& key, const std::string& name, const StoreItem& item) {
    OpenedFleetValue v;
    switch (open_fleet_value(keys_, name, item.value, v)) {
      case FleetValueStatus::ok: break;
      case FleetValueStatus::forged: forged_.fetch_add(1, std::memory_order_relaxed); return std::nullopt;
      case FleetValueStatus::unknown_key: unknown_key_.fetch_add(1, std::memory_order_relaxed); return std::nullopt;
      case FleetValueStatus::malformed:
      case FleetValueStatus::bad_session: malformed_.fetch_add(1, std::memory_order_relaxed); return std::nullopt;
    }
    const bool tls13 = SSL_SESSION_get_protocol_version(v.session.get()) >= TLS1_3_VERSION;
    if (tls13 != item.ticket) {  // authentic but in the wrong place: never written so
      malformed_.fetch_add(1, std::memory_order_relaxed);
      return std::nullopt;
    }
    const auto facts = session_facts(v.session.get(), v.original);
    const time_point now = time_point(clock_type::now());
    if (std::min(v.expiry, facts.expires) <= now || !facts.resumable) {
      expired_.fetch_add(1, std::memory_order_relaxed);
      return std::nullopt;
    }
    SessionInfo info;
    info.requested_server_name = std::string(key.sni());
    info.peer_name = std::string(key.host());
    info.sink = self_;
    info.key_hash = key.hash();
    session_backend<SSL_SESSION>::set_info(v.session.get(), std::move(info));  // before anyone else sees it
    // A `d2i_SSL_SESSION` result nobody else holds: adopted as it is (no `SSL_SESSION_dup`).
    return TakenSession<Tag>{session_type::adopt({v.session.release(), id_}), facts.original};
  }

  // Called with peers_mutex_ held; bounded: the whole map is forgotten when it grows too large.
  PeerState& peer_state(const PeerKey& key) {
    constexpr std::size_t limit = 4 * (static_cast<std::size_t>(Policy::local_policy::max_peers) + 16);
    if (peers_.size() >= limit && peers_.find(key) == peers_.end()) {
      peers_.clear();
    }
    return peers_[key];
  }
  bool reserve_local_slot(const PeerKey& key) {
    if constexpr (local_tickets_per_peer == 0) {
      (void)key;
      return false;
    } else {
      std::lock_guard lock(peers_mutex_);
      PeerState& p = peer_state(key);
      if (p.local_tickets >= local_tickets_per_peer) {
        return false;
      }
      ++p.local_tickets;
      return true;
    }
  }
  void release_local_slot(const PeerKey& key) {
    std::lock_guard lock(peers_mutex_);
    PeerState& p = peer_state(key);
    p.local_tickets -= p.local_tickets > 0 ? 1 : 0;
  }
  void note_local_put(const PeerKey& key) {
    std::lock_guard lock(peers_mutex_);
    ++peer_state(key).local_tickets;
  }
  void note_local_taken(const PeerKey& key) { release_local_slot(key); }
  void note_local_empty(const PeerKey& key) {
    std::lock_guard lock(peers_mutex_);
    if (auto it = peers_.find(key); it != peers_.end()) {
      it->second.local_tickets = 0;
    }
  }

  const ContextId id_;
  std::shared_ptr<Store> store_;
  const std::vector<FleetKeyMaterial> keys_;  // keys_[0] seals; all open
  const std::string prefix_;
  local_cache local_;
  std::shared_ptr<CacheSink> local_sink_;
  std::weak_ptr<CacheSink> self_;

  std::mutex peers_mutex_;
  std::unordered_map<PeerKey, PeerState> peers_;

  std::atomic<std::uint64_t> local_hits_{0}, remote_tickets_{0}, remote_sessions_{0}, misses_{0}, kept_local_{0},
      published_{0}, publish_failed_{0}, expired_{0}, forged_{0}, unknown_key_{0}, malformed_{0}, vetoed_{0};
};

}  // namespace detail

/// A session cache shared by a fleet: a local `SessionCache<Tag, Policy::local_policy>` in front
/// of a `Store` (see the header comment). Serves `Client::resume_from` like a `SessionCache`, for
/// the one context it was made for. A handle to state the connections share: destroying it
/// while connections run is safe. Not copyable; movable (a moved-from cache may only be destroyed
/// or assigned).
template <class Tag, session_store Store = RedisStore, fleet_policy Policy = FleetPolicy> class FleetSessionCache {
  using Core = detail::FleetCore<Tag, Store, Policy>;

 public:
  using session_type = BoundSession<Tag>;
  using store_type = Store;
  using policy_type = Policy;
  using local_cache = typename Core::local_cache;

  /// Makes the cache for the connections of `ctx` (sessions read from the store are bound to it;
  /// another context is refused by `resume_from` with `Error(errc::wrong_context)`), sharing
  /// `store` (another cache may share it too), with `keys`: the first seals what this process
  /// writes, every one opens what it reads (rotation: list the new key first, then the old ones,
  /// on every host, then drop the old). Derives each key's secrets with HKDF-SHA-256 and keeps
  /// only those (the keys are borrowed for the call). Throws `Error(errc::invalid_argument)` for
  /// no store, no key, a key of all zeros or two keys with one identifier.
  FleetSessionCache(const Context<Tag>& ctx, std::shared_ptr<Store> store, std::span<const EncryptionKey> keys)
      : core_(make_core(ctx.id(), std::move(store), keys)) {}

  FleetSessionCache(const FleetSessionCache&) = delete;
  FleetSessionCache& operator=(const FleetSessionCache&) = delete;
  FleetSessionCache(FleetSessionCache&&) noexcept = default;
  FleetSessionCache& operator=(FleetSessionCache&&) noexcept = default;
  ~FleetSessionCache() = default;

  /// For `Client::resume_from`: checks that `id` is the context this cache was made for (throws
  /// `Error(errc::wrong_context)` otherwise) and returns the sink connections file into.
  [[nodiscard]] std::shared_ptr<detail::CacheSink> attach(ContextId id) {
    if (id != core_->id()) {
      throw_error(errc::wrong_context, "FleetSessionCache",
                  "a fleet cache serves the connections of the context it was made for");
    }
    return core_;
  }
  /// The context this cache serves.
  [[nodiscard]] std::optional<ContextId> bound_context() const noexcept { return core_->id(); }

  /// Hands out a session for `key`, or `std::nullopt`: from the local cache (as
  /// `SessionCache::take_with_origin`), else from the store: one atomic operation pops the
  /// newest ticket (or reads the TLS 1.2 session), which is authenticated, decrypted, parsed once
  /// (`d2i_SSL_SESSION`), checked for expiry by the policy's clock and bound to the context (its
  /// reference is the caller's). Unusable values are dropped and counted, and the take goes on
  /// (at most `max_discards_per_take`); a TLS 1.2 session is also kept locally. A store that
  /// fails or is unavailable is a miss, within the store's timeout.
  [[nodiscard]] std::optional<TakenSession<Tag>> take_with_origin(const PeerKey& key) {
    return core_->take_with_origin(key);
  }
  /// As `take_with_origin`, without the time of the original handshake.
  [[nodiscard]] std::optional<session_type> take(const PeerKey& key) {
    auto taken = core_->take_with_origin(key);
    return taken ? std::optional<session_type>(std::move(taken->session)) : std::nullopt;
  }
  /// Files `session` (its reference is taken over) as a connection's received session is filed:
  /// a TLS 1.3 ticket is kept locally while this process holds fewer than
  /// `local_tickets_per_peer` for the peer, else published (kept locally if the store surely did
  /// not take it, dropped if it may have); a TLS 1.2 session is published and kept locally.
  /// Returns whether it was kept somewhere. Throws only if memory or OpenSSL fails.
  bool put(const PeerKey& key, session_type session, PutOptions options = {}) {
    return core_->put(key, std::move(session), std::move(options));
  }
  /// Seals `session` (borrowed: `i2d_SSL_SESSION`, AES-256-GCM) and writes it to the store for
  /// `key`, whatever the policy says: the caller must not use it or file it elsewhere too.
  StoreOutcome publish(const PeerKey& key, const session_type& session, PutOptions options = {}) {
    return core_->publish(key, session, options);
  }
  /// Vetoes `key` (e.g. its certificate was found revoked): drops it from the local cache
  /// (`SessionCache::veto`) and deletes its store entries under every key. Returns the number of
  /// local sessions dropped.
  std::size_t veto(const PeerKey& key) {
    const std::size_t n = core_->local().veto(key);
    core_->erase_remote(key);
    return n;
  }
  /// Drops everything for `key`, locally and in the store.
  std::size_t erase(const PeerKey& key) {
    const std::size_t n = core_->local().erase(key);
    core_->erase_remote(key);
    return n;
  }
  /// The store names of `key` under each fleet key, the writing key's first (for diagnostics).
  [[nodiscard]] std::vector<StoreNames> names(const PeerKey& key) const { return *core_->names_for(key); }

  /// Counters of the fleet cache and its store.
  [[nodiscard]] FleetStats stats() const { return core_->stats(); }
  /// The local cache (its `stats()`, `purge_expired()`, ...).
  [[nodiscard]] local_cache& local() noexcept { return core_->local(); }
  /// The shared store.
  [[nodiscard]] Store& store() noexcept { return core_->store(); }

 private:
  static std::shared_ptr<Core> make_core(ContextId id, std::shared_ptr<Store> store, std::span<const EncryptionKey> keys) {
    if (!store || keys.empty()) {
      throw_error(errc::invalid_argument, "FleetSessionCache", "a store and at least one fleet key are needed");
    }
    std::vector<detail::FleetKeyMaterial> material;
    for (const EncryptionKey& k : keys) {
      material.push_back(detail::derive_fleet_key(k));
      for (std::size_t i = 0; i + 1 < material.size(); ++i) {
        if (material[i].identifier == material.back().identifier) {
          throw_error(errc::invalid_argument, "FleetSessionCache", "two fleet keys with one identifier");
        }
      }
    }
    auto core = std::make_shared<Core>(id, std::move(store), std::move(material));
    core->set_self(core);
    return core;
  }

  std::shared_ptr<Core> core_;
};

}  // namespace tlsresume
