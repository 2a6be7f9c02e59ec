#pragma once
// Shared support of the fleet-store tests: fleet keys, policies, connections through a fleet
// cache, and forked child processes that report back through a pipe.
//
// Cross-process resumption needs the same server ticket keys in every process: the test makes
// its `LocalServer` (and the client `Context`) before forking, so every child holds a copy of the
// same server `SSL_CTX`, ticket keys included, and each child's copy confirms resumption on the
// server side (`SSL_session_reused`). Children make their own `RedisStore` after the fork.

#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tlsresume/redis.hpp>

#include "../support.hpp"
#include "redis_server.hpp"

namespace fleet_test {

using namespace std::chrono_literals;
using test::CtxA;
using test::ClientA;
using test::TagA;
using tlsresume::EncryptionKey;
using tlsresume::FleetSessionCache;
using tlsresume::PeerKey;
using tlsresume::RedisOptions;
using tlsresume::RedisStore;
using tlsresume::testing::LocalServer;

/// A random fleet key.
inline EncryptionKey random_key() {
  EncryptionKey k;
  if (RAND_bytes(reinterpret_cast<unsigned char*>(k.bytes.data()), static_cast<int>(k.bytes.size())) != 1) {
    throw std::runtime_error("RAND_bytes");
  }
  k.id = 0;
  k.id = k.identifier();
  return k;
}

/// Every received ticket is published (none kept locally): what one process gets, others use.
struct PublishAll {
  using local_policy = tlsresume::ThreadSafePolicy;
  static constexpr std::size_t local_tickets_per_peer = 0;
  static constexpr std::size_t max_published_per_peer = 256;
  static constexpr std::size_t max_discards_per_take = 8;
};

using Fleet = FleetSessionCache<TagA, RedisStore, PublishAll>;
using DefaultFleet = FleetSessionCache<TagA>;

/// Options for a store on `server`, reporting into `events` if given.
inline RedisOptions options_for(const redis_test::RedisServer& server, std::vector<tlsresume::StoreEvent>* events = nullptr) {
  RedisOptions o;
  o.host = server.host();
  o.port = server.port();
  o.min_backoff = 20ms;
  o.max_backoff = 200ms;
  if (events != nullptr) {
    o.report = [events](const tlsresume::StoreEvent& e) { events->push_back(e); };
  } else {
    o.report = nullptr;
  }
  return o;
}

inline std::shared_ptr<RedisStore> store_for(const redis_test::RedisServer& server) {
  return std::make_shared<RedisStore>(options_for(server));
}

/// For the single-use tests, whose subject is not the timeout: under ThreadSanitizer, eight
/// takers on two vCPUs can wait longer than 50 ms, and a take that times out after Redis popped
/// the ticket loses it (by design: it is never offered twice). 2 s keeps them about single use.
inline std::shared_ptr<RedisStore> patient_store_for(const redis_test::RedisServer& server) {
  RedisOptions o = options_for(server);
  o.timeout = 2000ms;
  return std::make_shared<RedisStore>(std::move(o));
}

/// What one connection did.
struct Conn {
  bool offered = false;
  bool client_reused = false;
  bool server_reused = false;
  std::size_t tickets = 0;
  std::chrono::steady_clock::duration elapsed{};  ///< resume_from + handshake + reading tickets
};

/// One connection through `cache` (`Client::resume_from`), reading every ticket the server sends
/// (`want`), closed cleanly.
template <class Cache>
Conn connect_via(const CtxA& ctx, Cache& cache, LocalServer& server, const PeerKey& key) {
  const auto start = std::chrono::steady_clock::now();
  ClientA client(ctx);
  Conn r;
  r.offered = client.resume_from(cache, key);
  auto conn = server.handshake(client);
  r.client_reused = client.session_reused();
  r.server_reused = conn.session_reused();
  r.tickets = client.await_tickets(0ms, server.options().tls13_tickets);
  client.shutdown();
  conn.shutdown();
  r.elapsed = std::chrono::steady_clock::now() - start;
  return r;
}

/// Offers `session` (from a take) on a connection outside any cache and returns whether the
/// server resumed it; its own new tickets go nowhere (to the context's recent store).
inline bool resumes(const CtxA& ctx, LocalServer& server, const tlsresume::BoundSession<TagA>& session) {
  ClientA client(ctx);
  client.set_server_name("localhost");
  client.set_session(session);
  auto conn = server.handshake(client);
  const bool reused = conn.session_reused() && client.session_reused();
  client.shutdown();  // clean: an unclean close would make OpenSSL invalidate the session
  conn.shutdown();
  return reused;
}

/// The ticket bytes of a TLS 1.3 session, in hex (`SSL_SESSION_get0_ticket`): identifies it.
inline std::string ticket_hex(const SSL_SESSION* s) {
  const unsigned char* t = nullptr;
  std::size_t len = 0;
  SSL_SESSION_get0_ticket(s, &t, &len);
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < len; ++i) {
    out += digits[t[i] >> 4];
    out += digits[t[i] & 0xfU];
  }
  return out;
}

/// A forked child process running `f`, whose returned text comes back through a pipe.
class Child {
 public:
  template <class F> explicit Child(F&& f) {
    int fds[2];
    if (::pipe(fds) != 0) {
      throw std::runtime_error("pipe");
    }
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) {
      throw std::runtime_error("fork");
    }
    if (pid_ == 0) {
      ::close(fds[0]);
      std::string out;
      int code = 0;
      try {
        out = f();
      } catch (const std::exception& e) {
        out = std::string("error: ") + e.what();
        code = 2;
      } catch (...) {
        out = "error: unknown exception";
        code = 2;
      }
      std::size_t done = 0;
      while (done < out.size()) {
        const ssize_t n = ::write(fds[1], out.data() + done, out.size() - done);
        if (n <= 0) {
          break;
        }
        done += static_cast<std::size_t>(n);
      }
      ::close(fds[1]);
      ::_exit(code);
    }
    ::close(fds[1]);
    fd_ = fds[0];
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  Child(Child&& o) noexcept : pid_(std::exchange(o.pid_, -1)), fd_(std::exchange(o.fd_, -1)) {}
  ~Child() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }
  /// Reads everything the child wrote and waits for it; "error: ..." if it failed.
  std::string wait() {
    std::string out;
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n <= 0) {
        break;
      }
      out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd_);
    fd_ = -1;
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      if (out.rfind("error:", 0) != 0) {
        out = "error: child status " + std::to_string(status) + " " + out;
      }
    }
    return out;
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
};

/// Splits "a b c" into words.
inline std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) {
    out.push_back(w);
  }
  return out;
}

}  // namespace fleet_test
