// bench/handshake: what a connection costs through tlsresume, against raw OpenSSL written by hand
// and against the DER-per-connection design (store i2d_SSL_SESSION bytes, d2i_SSL_SESSION on each
// use: curl's session cache).
//
// Client and server run in this thread over an in-memory BIO pair, so one CPU clock sees both
// sides: "CPU µs per connection" is client + server, handshake to close_notify. For each protocol
// (TLS 1.3 tickets, TLS 1.2 tickets, TLS 1.2 session ids) and server key (ECDSA P-256, RSA-2048),
// five designs run in alternation (A,B,C,D,E, then B,C,D,E,A, ...):
//
//   raw-full           SSL_new + SNI + host check, no session offered; a new-session callback keeps
//                      the newest session by hand (what a client that resumes keeps anyway)
//   tlsresume-full     Client + resume_from(cache, ctx.key_for(host, port)) on an empty cache; the
//                      connection files its sessions, which are erased after it (so the next one is
//                      full again)
//   raw-resumed        the floor: SSL_set_session with the session kept by hand (a TLS 1.3 ticket
//                      is dropped once used, a TLS 1.2 session is kept)
//   tlsresume-resumed  Client + resume_from(cache, ctx.key_for(host, port)), as in the README
//   der-resumed        the DER design: a map from "host:port" to the newest session's DER, parsed
//                      with d2i_SSL_SESSION for every connection, written with i2d_SSL_SESSION from
//                      the new-session callback
//
// Every design uses its own client SSL_CTX configured alike (TLS >= 1.2, SSL_VERIFY_PEER, the
// system trust store plus the server's CA), and the same server SSL_CTX. Resumption is confirmed
// by the server's SSL_session_reused. Each connection reads what the server sent after the
// handshake (TLS 1.3 tickets: one SSL_peek, or await_tickets) and both sides send close_notify.
//
//   handshake [--rounds R] [--connections N] [--full-connections M] [--protocol P,...] [--key K,...]
//             [--json PATH|-] [--quick] [--list]
//   handshake --callgrind N --case NAME   N connections of one case, measured inside the function
//             tlsresume_bench_measured (valgrind --tool=callgrind --collect-atstart=no
//             --toggle-collect=tlsresume_bench_measured); set-up and the priming connection are
//             outside it.

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <tlsresume/testing.hpp>
#include <tlsresume/tlsresume.hpp>

#include "common.hpp"

namespace {

using namespace std::chrono_literals;
using tlsresume::testing::KeyType;

struct BenchTag {};
using Ctx = tlsresume::Context<BenchTag>;
using LibClient = tlsresume::Client<Ctx>;
using Cache = tlsresume::SessionCache<BenchTag>;  // the default policy: what a user gets

constexpr const char* kHost = "localhost";
constexpr std::uint16_t kPort = 443;

enum class Proto { tls13, tls12_ticket, tls12_id };
enum class Variant { raw_full, lib_full, raw_resumed, lib_resumed, der_resumed };
constexpr std::array<Proto, 3> kProtos{Proto::tls13, Proto::tls12_ticket, Proto::tls12_id};
constexpr std::array<KeyType, 2> kKeys{KeyType::ecdsa_p256, KeyType::rsa_2048};
constexpr std::array<Variant, 5> kVariants{Variant::raw_full, Variant::lib_full, Variant::raw_resumed,
                                           Variant::lib_resumed, Variant::der_resumed};

const char* proto_id(Proto p) {
  switch (p) {
    case Proto::tls13: return "tls13";
    case Proto::tls12_ticket: return "tls12-ticket";
    case Proto::tls12_id: return "tls12-id";
  }
  return "?";
}
const char* proto_label(Proto p) {
  switch (p) {
    case Proto::tls13: return "TLS 1.3 ticket";
    case Proto::tls12_ticket: return "TLS 1.2 ticket";
    case Proto::tls12_id: return "TLS 1.2 session id";
  }
  return "?";
}
const char* key_id(KeyType k) { return k == KeyType::ecdsa_p256 ? "ecdsa" : "rsa"; }
const char* key_label(KeyType k) { return k == KeyType::ecdsa_p256 ? "ECDSA P-256" : "RSA-2048"; }
const char* variant_id(Variant v) {
  switch (v) {
    case Variant::raw_full: return "raw-full";
    case Variant::lib_full: return "tlsresume-full";
    case Variant::raw_resumed: return "raw-resumed";
    case Variant::lib_resumed: return "tlsresume-resumed";
    case Variant::der_resumed: return "der-resumed";
  }
  return "?";
}
bool is_resumed(Variant v) { return v == Variant::raw_resumed || v == Variant::lib_resumed || v == Variant::der_resumed; }

std::string case_name(Proto p, KeyType k, Variant v) {
  return std::string(proto_id(p)) + "-" + key_id(k) + "-" + variant_id(v);
}

[[noreturn]] void fail(const std::string& what) {
  std::string msg = what;
  unsigned long e = 0;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    msg += "\n  ";
    msg += buf;
  }
  throw std::runtime_error(msg);
}

template <auto Free> struct Deleter {
  template <class T> void operator()(T* p) const noexcept { Free(p); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, Deleter<SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, Deleter<SSL_free>>;

// ---------------------------------------------------------------------------------------------
// The server: one SSL_CTX per protocol and key type, shared by every design.

class Server {
 public:
  Server(Proto proto, KeyType key)
      : ca_(tlsresume::testing::make_ca("tlsresume bench CA", key)),
        leaf_(tlsresume::testing::make_leaf(ca_, kHost, key)),
        ctx_(SSL_CTX_new(TLS_server_method())) {
    SSL_CTX* c = ctx_.get();
    const int max = proto == Proto::tls13 ? TLS1_3_VERSION : TLS1_2_VERSION;
    if (c == nullptr || SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(c, max) != 1 || SSL_CTX_use_certificate(c, leaf_.cert.get()) != 1 ||
        SSL_CTX_use_PrivateKey(c, leaf_.key.get()) != 1 || SSL_CTX_set_num_tickets(c, 2) != 1) {
      fail("server SSL_CTX");
    }
    static const unsigned char sid_ctx[] = "tlsresume-bench";
    if (SSL_CTX_set_session_id_context(c, sid_ctx, sizeof sid_ctx - 1) != 1) {
      fail("SSL_CTX_set_session_id_context");
    }
    // The server's own cache (TLS 1.2 session ids; OpenSSL also files TLS 1.2 ticket sessions):
    // unbounded, so that no session a client keeps is evicted during the run.
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(c, 0);
    if (proto == Proto::tls12_id) {
      SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    }
  }
  [[nodiscard]] X509* ca() const noexcept { return ca_.cert.get(); }

  /// A server connection reading and writing `bio` (takes over the caller's reference).
  [[nodiscard]] SslPtr accept(BIO* bio) const {
    SslPtr s(SSL_new(ctx_.get()));
    if (!s) {
      BIO_free(bio);
      fail("SSL_new (server)");
    }
    SSL_set_bio(s.get(), bio, bio);
    SSL_set_accept_state(s.get());
    return s;
  }

 private:
  tlsresume::testing::Certificate ca_;
  tlsresume::testing::Certificate leaf_;
  SslCtxPtr ctx_;
};

/// Runs both handshakes to completion in this thread. `client_step` returns true when the client
/// side is done (throws on error).
template <class Step> void drive(Step&& client_step, SSL* server) {
  bool client_done = false;
  bool server_done = false;
  for (int round = 0; round < 64 && !(client_done && server_done); ++round) {
    if (!client_done) {
      client_done = client_step();
    }
    if (!server_done) {
      const int r = SSL_do_handshake(server);
      if (r == 1) {
        server_done = true;
      } else if (const int e = SSL_get_error(server, r); e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        fail("server handshake");
      }
    }
  }
  if (!(client_done && server_done)) {
    fail("handshake did not complete");
  }
}

/// One raw client step (SSL_connect).
bool raw_connect(SSL* ssl) {
  const int r = SSL_connect(ssl);
  if (r == 1) {
    return true;
  }
  const int e = SSL_get_error(ssl, r);
  if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
    fail("client handshake (verify result " + std::to_string(SSL_get_verify_result(ssl)) + ")");
  }
  return false;
}

/// Reads what the server sent after the handshake (TLS 1.3 NewSessionTicket) without consuming
/// application data: one SSL_peek on the memory BIO, which returns "want read" when done.
void raw_read_tickets(SSL* ssl) {
  char byte = 0;
  const int r = SSL_peek(ssl, &byte, 1);
  if (r <= 0) {
    const int e = SSL_get_error(ssl, r);
    if (e != SSL_ERROR_WANT_READ) {
      fail("SSL_peek");
    }
  }
}

/// A client SSL_CTX configured as `Context<Tag>::create()` plus `add_trusted_certificate(ca)`
/// configure theirs: TLS >= 1.2, SSL_VERIFY_PEER, the system trust store, the server's CA; client
/// session caching with OpenSSL's internal store off and a new-session callback.
SslCtxPtr client_ctx_like_tlsresume(X509* ca, int (*new_session)(SSL*, SSL_SESSION*), void* app_data) {
  SslCtxPtr c(SSL_CTX_new(TLS_client_method()));
  if (!c || SSL_CTX_set_min_proto_version(c.get(), TLS1_2_VERSION) != 1) {
    fail("client SSL_CTX_new");
  }
  SSL_CTX_set_verify(c.get(), SSL_VERIFY_PEER, nullptr);
  if (SSL_CTX_set_default_verify_paths(c.get()) != 1 || X509_STORE_add_cert(SSL_CTX_get_cert_store(c.get()), ca) != 1) {
    fail("client trust store");
  }
  SSL_CTX_set_session_cache_mode(c.get(), SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(c.get(), new_session);
  SSL_CTX_set_app_data(c.get(), app_data);
  return c;
}

// ---------------------------------------------------------------------------------------------
// Raw OpenSSL by hand: the newest session, kept in a slot.

struct RawStore {
  SSL_SESSION* session = nullptr;
  RawStore() = default;
  RawStore(const RawStore&) = delete;
  RawStore& operator=(const RawStore&) = delete;
  ~RawStore() { SSL_SESSION_free(session); }
};

int raw_new_session(SSL* ssl, SSL_SESSION* session) {
  auto* store = static_cast<RawStore*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  SSL_SESSION_free(store->session);
  store->session = session;
  return 1;  // we keep OpenSSL's reference
}

// ---------------------------------------------------------------------------------------------
// The DER-per-connection design: "host:port" -> DER of the newest session.

struct DerStore {
  std::unordered_map<std::string, std::vector<unsigned char>> sessions;
};

int der_new_session(SSL* ssl, SSL_SESSION* session) {
  auto* store = static_cast<DerStore*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  const auto* key = static_cast<const std::string*>(SSL_get_app_data(ssl));
  const int len = i2d_SSL_SESSION(session, nullptr);
  if (store == nullptr || key == nullptr || len <= 0) {
    return 0;
  }
  std::vector<unsigned char> der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  if (i2d_SSL_SESSION(session, &p) == len) {
    store->sessions[*key] = std::move(der);
  }
  return 0;  // OpenSSL releases its reference: only the bytes are kept
}

// ---------------------------------------------------------------------------------------------
// One protocol x key type: the server and every design's client state.

struct Outcome {
  bool offered = false;
  bool server_reused = false;
};

class Group {
 public:
  Group(Proto proto, KeyType key)
      : proto_(proto),
        key_(key),
        server_(proto, key),
        raw_full_ctx_(client_ctx_like_tlsresume(server_.ca(), &raw_new_session, &raw_full_store_)),
        raw_resumed_ctx_(client_ctx_like_tlsresume(server_.ca(), &raw_new_session, &raw_resumed_store_)),
        der_ctx_(client_ctx_like_tlsresume(server_.ca(), &der_new_session, &der_store_)),
        lib_full_ctx_(make_lib_ctx(server_.ca())),
        lib_resumed_ctx_(make_lib_ctx(server_.ca())) {}

  [[nodiscard]] Proto proto() const noexcept { return proto_; }
  [[nodiscard]] KeyType key() const noexcept { return key_; }
  [[nodiscard]] tlsresume::CacheStats lib_stats() const { return lib_resumed_cache_.stats(); }

  Outcome connect(Variant v) {
    switch (v) {
      case Variant::raw_full: return raw(raw_full_ctx_.get(), raw_full_store_, false);
      case Variant::raw_resumed: return raw(raw_resumed_ctx_.get(), raw_resumed_store_, true);
      case Variant::lib_full: return lib(lib_full_ctx_, lib_full_cache_, true);
      case Variant::lib_resumed: return lib(lib_resumed_ctx_, lib_resumed_cache_, false);
      case Variant::der_resumed: return der();
    }
    return {};
  }

 private:
  static Ctx make_lib_ctx(X509* ca) {
    auto ctx = Ctx::create();
    ctx.add_trusted_certificate(ca);
    return ctx;
  }

  static std::pair<BIO*, BIO*> bio_pair() {
    BIO* client = nullptr;
    BIO* server = nullptr;
    if (BIO_new_bio_pair(&client, 0, &server, 0) != 1) {
      fail("BIO_new_bio_pair");
    }
    return {client, server};
  }

  static void name_server(SSL* ssl) {
    if (SSL_set_tlsext_host_name(ssl, kHost) != 1 || SSL_set1_host(ssl, kHost) != 1) {
      fail("SNI / host name");
    }
  }

  // Raw OpenSSL: offer the kept session if asked to; a TLS 1.3 ticket is used once.
  Outcome raw(SSL_CTX* ctx, RawStore& store, bool offer) {
    Outcome out;
    SslPtr c(SSL_new(ctx));
    if (!c) {
      fail("SSL_new");
    }
    name_server(c.get());
    if (offer && store.session != nullptr) {
      if (SSL_set_session(c.get(), store.session) != 1) {
        fail("SSL_set_session");
      }
      out.offered = true;
      if (SSL_SESSION_get_protocol_version(store.session) >= TLS1_3_VERSION) {
        SSL_SESSION_free(store.session);  // single use (RFC 8446 §C.4)
        store.session = nullptr;
      }
    }
    auto [cb, sb] = bio_pair();
    SSL_set_bio(c.get(), cb, cb);
    SslPtr s = server_.accept(sb);
    drive([&] { return raw_connect(c.get()); }, s.get());
    out.server_reused = SSL_session_reused(s.get()) == 1;
    raw_read_tickets(c.get());
    SSL_shutdown(c.get());
    SSL_shutdown(s.get());
    return out;
  }

  // tlsresume, as in the README: Client, resume_from(cache, ctx.key_for(host, port)), connect,
  // await_tickets, shutdown. The full variant erases what the connection filed.
  Outcome lib(const Ctx& ctx, Cache& cache, bool erase_after) {
    Outcome out;
    LibClient client(ctx);
    out.offered = client.resume_from(cache, ctx.key_for(kHost, kPort));
    auto [cb, sb] = bio_pair();
    client.set_bio(cb);  // takes a reference of its own
    BIO_free(cb);
    SslPtr s = server_.accept(sb);
    drive([&] { return client.connect() == tlsresume::IoStatus::done; }, s.get());
    out.server_reused = SSL_session_reused(s.get()) == 1;
    (void)client.await_tickets(0ms, 2);
    client.shutdown();
    SSL_shutdown(s.get());
    if (erase_after) {
      (void)cache.erase(*client.cache_key());
    }
    return out;
  }

  // The DER design: look "host:port" up, d2i the bytes, offer the fresh session.
  Outcome der() {
    Outcome out;
    SslPtr c(SSL_new(der_ctx_.get()));
    if (!c) {
      fail("SSL_new");
    }
    name_server(c.get());
    const std::string key = std::string(kHost) + ":" + std::to_string(kPort);
    SSL_set_app_data(c.get(), const_cast<std::string*>(&key));
    if (auto it = der_store_.sessions.find(key); it != der_store_.sessions.end()) {
      const unsigned char* p = it->second.data();
      SSL_SESSION* session = d2i_SSL_SESSION(nullptr, &p, static_cast<long>(it->second.size()));
      if (session == nullptr) {
        fail("d2i_SSL_SESSION");
      }
      const int ok = SSL_set_session(c.get(), session);
      SSL_SESSION_free(session);
      if (ok != 1) {
        fail("SSL_set_session");
      }
      out.offered = true;
    }
    auto [cb, sb] = bio_pair();
    SSL_set_bio(c.get(), cb, cb);
    SslPtr s = server_.accept(sb);
    drive([&] { return raw_connect(c.get()); }, s.get());
    out.server_reused = SSL_session_reused(s.get()) == 1;
    raw_read_tickets(c.get());
    SSL_shutdown(c.get());
    SSL_shutdown(s.get());
    SSL_set_app_data(c.get(), nullptr);
    return out;
  }

  Proto proto_;
  KeyType key_;
  Server server_;
  RawStore raw_full_store_;
  RawStore raw_resumed_store_;
  DerStore der_store_;
  SslCtxPtr raw_full_ctx_;
  SslCtxPtr raw_resumed_ctx_;
  SslCtxPtr der_ctx_;
  Ctx lib_full_ctx_;
  Ctx lib_resumed_ctx_;
  Cache lib_full_cache_;
  Cache lib_resumed_cache_;
};

/// What a batch of connections of one case did.
struct BatchResult {
  std::size_t connections = 0;
  std::size_t offered = 0;
  std::size_t resumed = 0;  // by the server's SSL_session_reused
};

}  // namespace

/// The measured loop: `n` connections of `variant`. Not inlined, and with C linkage, so that
/// callgrind can collect inside it only (--toggle-collect=tlsresume_bench_measured).
extern "C" __attribute__((noinline)) void tlsresume_bench_measured(void* group, int variant, std::size_t n,
                                                                   void* result) {
  auto* g = static_cast<Group*>(group);
  auto* out = static_cast<BatchResult*>(result);
  for (std::size_t i = 0; i < n; ++i) {
    const Outcome o = g->connect(static_cast<Variant>(variant));
    out->offered += o.offered ? 1 : 0;
    out->resumed += o.server_reused ? 1 : 0;
  }
  out->connections += n;
}

namespace {

struct CaseStats {
  Proto proto{};
  KeyType key{};
  Variant variant{};
  std::size_t per_run = 0;
  std::vector<double> cpu_us;  // client + server CPU per connection, one value per run
  std::vector<double> cps;     // connections per wall-clock second, one value per run
  BatchResult total;
  std::uint64_t cache_hits = 0;  // tlsresume-resumed only: SessionCache hits during the runs
};

struct RatioStats {
  std::string name;   // e.g. "tlsresume/raw resumed"
  std::string numerator;
  std::string denominator;
  std::vector<double> per_round;
};

struct Options {
  // Many short runs: each per-round ratio compares runs a few milliseconds apart, so a burst of
  // load from other processes spoils a few rounds, not the median.
  std::size_t rounds = 41;
  std::size_t connections = 100;      // per run, resumed cases
  std::size_t full_connections = 25;  // per run, full cases
  std::vector<Proto> protos{kProtos.begin(), kProtos.end()};
  std::vector<KeyType> keys{kKeys.begin(), kKeys.end()};
  std::string json;
  bool quick = false;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) {
      out.push_back(item);
    }
  }
  return out;
}

/// The items of `all` named in the comma-separated `list` (by `name_of`), or `fallback` when the
/// list is empty; throws `std::runtime_error(error + name)` for a name that is not one of them.
template <class T, std::size_t N, class Name>
std::vector<T> pick(const std::string& list, const std::array<T, N>& all, Name name_of, const char* error,
                    std::vector<T> fallback) {
  if (list.empty()) {
    return fallback;
  }
  std::vector<T> out;
  for (const std::string& s : split(list)) {
    const auto it = std::find_if(all.begin(), all.end(), [&](T item) { return s == name_of(item); });
    if (it == all.end()) {
      throw std::runtime_error(error + s);
    }
    out.push_back(*it);
  }
  return out;
}

BatchResult run_batch(Group& g, Variant v, std::size_t n) {
  BatchResult r;
  tlsresume_bench_measured(&g, static_cast<int>(v), n, &r);
  return r;
}

/// One connection of the case, not measured (outside tlsresume_bench_measured, so callgrind does
/// not count it either): puts a session in a resumed design's store, and does each design's
/// one-time work (tlsresume computes the context's fingerprint at the first key_for, hashing
/// every trusted certificate; OpenSSL loads what it loads lazily).
void prime(Group& g, Variant v) { (void)g.connect(v); }

int run_callgrind(const std::string& name, std::size_t n) {
  for (Proto p : kProtos) {
    for (KeyType k : kKeys) {
      for (Variant v : kVariants) {
        if (case_name(p, k, v) != name) {
          continue;
        }
        Group g(p, k);
        prime(g, v);
        BatchResult r;
        tlsresume_bench_measured(&g, static_cast<int>(v), n, &r);
        std::printf("%s: %zu connections, %zu offered, %zu resumed (server)\n", name.c_str(), r.connections, r.offered,
                    r.resumed);
        const bool ok = is_resumed(v) ? r.resumed == n : r.resumed == 0;
        if (!ok) {
          std::fprintf(stderr, "handshake: unexpected resumption count\n");
        }
        return ok ? 0 : 1;
      }
    }
  }
  std::fprintf(stderr, "handshake: no case named %s (see --list)\n", name.c_str());
  return 2;
}

void print_table(const std::vector<CaseStats>& cases, const std::vector<RatioStats>& ratios, const Options& o) {
  std::printf("# handshake: client + server CPU per connection, median of %zu alternating runs\n", o.rounds);
  std::printf("# %s\n", bench::machine_line().c_str());
  Proto last_p{};
  KeyType last_k{};
  bool first = true;
  for (const CaseStats& c : cases) {
    if (first || c.proto != last_p || c.key != last_k) {
      std::printf("\n%s, %s\n", proto_label(c.proto), key_label(c.key));
      std::printf("  %-18s %8s %10s %10s %10s %10s %12s %10s\n", "design", "conn/run", "CPU us", "min", "max",
                  "conn/s", "resumed", "hits");
      first = false;
      last_p = c.proto;
      last_k = c.key;
    }
    char resumed[32];
    std::snprintf(resumed, sizeof resumed, "%zu/%zu", c.total.resumed, c.total.connections);
    char hits[32] = "-";
    if (c.variant == Variant::lib_resumed || c.variant == Variant::lib_full) {
      std::snprintf(hits, sizeof hits, "%llu", static_cast<unsigned long long>(c.cache_hits));
    }
    std::printf("  %-18s %8zu %10.1f %10.1f %10.1f %10.0f %12s %10s\n", variant_id(c.variant), c.per_run,
                bench::median(c.cpu_us), bench::min_of(c.cpu_us), bench::max_of(c.cpu_us), bench::median(c.cps), resumed,
                hits);
  }
  std::printf("\nratios (median of per-round ratios of CPU per connection)\n");
  for (const RatioStats& r : ratios) {
    std::printf("  %-44s %7.3f  (min %.3f, max %.3f)\n", r.name.c_str(), bench::median(r.per_round),
                bench::min_of(r.per_round), bench::max_of(r.per_round));
  }
}

std::string to_json(const std::vector<CaseStats>& cases, const std::vector<RatioStats>& ratios, const Options& o) {
  bench::Json j;
  j.raw("{").key("benchmark").str("handshake").raw(",");
  j.key("machine");
  bench::machine_json(j);
  j.raw(",").key("load_average_at_end").str(bench::load_average()).raw(",");
  j.key("rounds").integer(static_cast<long long>(o.rounds)).raw(",");
  j.key("quick").boolean(o.quick).raw(",");
  j.key("cases").raw("[");
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const CaseStats& c = cases[i];
    if (i != 0) {
      j.raw(",");
    }
    j.raw("{").key("name").str(case_name(c.proto, c.key, c.variant)).raw(",");
    j.key("protocol").str(proto_id(c.proto)).raw(",");
    j.key("key").str(key_id(c.key)).raw(",");
    j.key("design").str(variant_id(c.variant)).raw(",");
    j.key("connections_per_run").integer(static_cast<long long>(c.per_run)).raw(",");
    j.key("cpu_us_per_connection").num(bench::median(c.cpu_us)).raw(",");
    j.key("cpu_us_runs").nums(c.cpu_us).raw(",");
    j.key("connections_per_second").num(bench::median(c.cps)).raw(",");
    j.key("connections").integer(static_cast<long long>(c.total.connections)).raw(",");
    j.key("offered").integer(static_cast<long long>(c.total.offered)).raw(",");
    j.key("resumed_by_server").integer(static_cast<long long>(c.total.resumed)).raw(",");
    j.key("cache_hits").integer(static_cast<long long>(c.cache_hits)).raw("}");
  }
  j.raw("],").key("ratios").raw("[");
  for (std::size_t i = 0; i < ratios.size(); ++i) {
    const RatioStats& r = ratios[i];
    if (i != 0) {
      j.raw(",");
    }
    j.raw("{").key("name").str(r.name).raw(",");
    j.key("numerator").str(r.numerator).raw(",").key("denominator").str(r.denominator).raw(",");
    j.key("median").num(bench::median(r.per_round)).raw(",");
    j.key("per_round").nums(r.per_round).raw("}");
  }
  j.raw("]}");
  return j.text();
}

int run(const Options& o) {
  std::vector<CaseStats> all_cases;
  std::vector<RatioStats> all_ratios;
  bool sane = true;
  for (Proto p : o.protos) {
    for (KeyType k : o.keys) {
      Group g(p, k);
      std::array<CaseStats, kVariants.size()> cases{};
      for (std::size_t i = 0; i < kVariants.size(); ++i) {
        cases[i].proto = p;
        cases[i].key = k;
        cases[i].variant = kVariants[i];
        cases[i].per_run = is_resumed(kVariants[i]) ? o.connections : o.full_connections;
        prime(g, kVariants[i]);
      }
      // Warm-up: one short batch of each design (caches, allocator, lazily loaded trust store).
      for (Variant v : kVariants) {
        (void)run_batch(g, v, std::max<std::size_t>(1, (is_resumed(v) ? o.connections : o.full_connections) / 4));
      }
      // Measured rounds, A,B,C,D,E, then B,C,D,E,A, ...: the designs alternate, and each starts a
      // round as often as the others, so no design always follows the same neighbour.
      for (std::size_t round = 0; round < o.rounds; ++round) {
        for (std::size_t step = 0; step < kVariants.size(); ++step) {
          CaseStats& c = cases[(round + step) % kVariants.size()];
          const std::uint64_t hits_before = g.lib_stats().hits;
          const std::int64_t cpu0 = bench::thread_cpu_ns();
          const std::int64_t wall0 = bench::wall_ns();
          const BatchResult r = run_batch(g, c.variant, c.per_run);
          const std::int64_t cpu1 = bench::thread_cpu_ns();
          const std::int64_t wall1 = bench::wall_ns();
          c.cpu_us.push_back(static_cast<double>(cpu1 - cpu0) / 1e3 / static_cast<double>(r.connections));
          c.cps.push_back(static_cast<double>(r.connections) * 1e9 / static_cast<double>(std::max<std::int64_t>(1, wall1 - wall0)));
          c.total.connections += r.connections;
          c.total.offered += r.offered;
          c.total.resumed += r.resumed;
          if (c.variant == Variant::lib_resumed) {
            c.cache_hits += g.lib_stats().hits - hits_before;
          }
        }
      }
      auto idx = [](Variant v) {
        for (std::size_t i = 0; i < kVariants.size(); ++i) {
          if (kVariants[i] == v) {
            return i;
          }
        }
        return std::size_t{0};
      };
      auto ratio = [&](const char* label, Variant num, Variant den) {
        RatioStats r;
        r.name = std::string(proto_id(p)) + " " + key_id(k) + " " + label;
        r.numerator = case_name(p, k, num);
        r.denominator = case_name(p, k, den);
        const auto& a = cases[idx(num)].cpu_us;
        const auto& b = cases[idx(den)].cpu_us;
        for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
          r.per_round.push_back(a[i] / b[i]);
        }
        all_ratios.push_back(std::move(r));
      };
      ratio("tlsresume/raw full", Variant::lib_full, Variant::raw_full);
      ratio("tlsresume/raw resumed", Variant::lib_resumed, Variant::raw_resumed);
      ratio("DER-design/tlsresume resumed", Variant::der_resumed, Variant::lib_resumed);
      ratio("full/resumed (tlsresume)", Variant::lib_full, Variant::lib_resumed);
      // Sanity (never a timing): resumed designs resumed every connection, by the server's
      // account; full ones none; the cache hit once per tlsresume-resumed connection.
      for (const CaseStats& c : cases) {
        const bool ok = is_resumed(c.variant) ? c.total.resumed == c.total.connections && c.total.offered == c.total.connections
                                              : c.total.resumed == 0;
        const bool hits_ok = c.variant != Variant::lib_resumed || c.cache_hits == c.total.connections;
        if (!ok || !hits_ok) {
          std::fprintf(stderr, "handshake: %s: %zu connections, %zu offered, %zu resumed, %llu cache hits: NOT SANE\n",
                       case_name(c.proto, c.key, c.variant).c_str(), c.total.connections, c.total.offered,
                       c.total.resumed, static_cast<unsigned long long>(c.cache_hits));
          sane = false;
        }
        all_cases.push_back(c);
      }
    }
  }
  print_table(all_cases, all_ratios, o);
  if (!o.json.empty()) {
    bench::write_text(o.json, to_json(all_cases, all_ratios, o));
  }
  if (ERR_peek_error() != 0) {
    std::fprintf(stderr, "handshake: OpenSSL error queue not empty at the end\n");
    sane = false;
  }
  std::printf("\n%s\n", sane ? "sanity: every resumed design resumed every connection (server-confirmed)"
                             : "sanity: FAILED");
  return sane ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) try {
  bench::Args args(argc, argv);
  Options o;
  o.quick = args.flag("quick");
  if (o.quick) {
    o.rounds = 2;
    o.connections = 4;
    o.full_connections = 2;
  }
  o.rounds = static_cast<std::size_t>(args.number("rounds", static_cast<long long>(o.rounds)));
  o.connections = static_cast<std::size_t>(args.number("connections", static_cast<long long>(o.connections)));
  o.full_connections = static_cast<std::size_t>(args.number("full-connections", static_cast<long long>(o.full_connections)));
  o.json = args.value("json");
  const bool list = args.flag("list");
  const long long callgrind = args.number("callgrind", 0);
  const std::string one_case = args.value("case");
  o.protos = pick(args.value("protocol"), kProtos, proto_id, "--protocol: expected tls13, tls12-ticket or tls12-id, not ", o.protos);
  o.keys = pick(args.value("key"), kKeys, key_id, "--key: expected ecdsa or rsa, not ", o.keys);
  args.finish();
  if (list) {
    for (Proto p : kProtos) {
      for (KeyType k : kKeys) {
        for (Variant v : kVariants) {
          std::printf("%s\n", case_name(p, k, v).c_str());
        }
      }
    }
    return 0;
  }
  if (callgrind > 0) {
    if (one_case.empty()) {
      throw std::runtime_error("--callgrind N needs --case NAME (see --list)");
    }
    return run_callgrind(one_case, static_cast<std::size_t>(callgrind));
  }
  if (o.rounds == 0 || o.connections == 0 || o.full_connections == 0) {
    throw std::runtime_error("--rounds, --connections and --full-connections must be at least 1");
  }
  return run(o);
} catch (const std::exception& e) {
  std::fprintf(stderr, "handshake: %s\n", e.what());
  return 2;
}
