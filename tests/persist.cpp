// Persistence: save_sessions / load_sessions and EncryptionKey (<tlsresume/persist.hpp>).
//
// Real sessions from LocalServer handshakes (TLS 1.3 tickets, TLS 1.2 tickets, TLS 1.2 session
// ids) are saved, loaded into a new cache and resumed through Client::resume_from, with the
// servers confirming. Every class of bad file is refused with its file, offset and reason and
// leaves the cache as it was. A second process (tests/persist_crash_child.cpp) loads files this
// one wrote, and is SIGKILLed at random moments while saving, hundreds of times: the file is
// always the old version or a new one, complete.

#include "support.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <tlsresume/cache.hpp>
#include <tlsresume/persist.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

extern char** environ;

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using test::ClientA;
using test::CtxA;
using test::Mode;
using test::TagA;
using tlsresume::CacheStats;
using tlsresume::EncryptionKey;
using tlsresume::LoadOptions;
using tlsresume::PeerKey;
using tlsresume::PersistError;
using tlsresume::SaveOptions;
using tlsresume::SessionCache;
using tlsresume::testing::LocalServer;
using tlsresume::testing::ServerOptions;
using Bytes = std::vector<std::byte>;
using time_point = std::chrono::system_clock::time_point;

// ---- files ------------------------------------------------------------------------------------------

/// A fresh directory under the system's temporary directory, removed with everything in it.
struct TempDir {
  TempDir() {
    std::string t = (fs::temp_directory_path() / "tlsresume-persist-XXXXXX").string();
    REQUIRE(::mkdtemp(t.data()) != nullptr);
    path = t;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path operator/(std::string_view name) const { return path / name; }
  fs::path path;
};

Bytes read_bytes(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  Bytes out(static_cast<std::size_t>(st.st_size));
  std::size_t have = 0;
  while (have < out.size()) {
    const ssize_t n = ::read(fd, out.data() + have, out.size() - have);
    if (n <= 0) {
      break;
    }
    have += static_cast<std::size_t>(n);
  }
  ::close(fd);
  REQUIRE(have == out.size());
  return out;
}

void write_bytes(const fs::path& p, std::span<const std::byte> bytes, mode_t mode = 0600) {
  {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    REQUIRE(out);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    REQUIRE(out);
  }
  REQUIRE(::chmod(p.c_str(), mode) == 0);
}

std::string as_text(std::span<const std::byte> bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

mode_t mode_of(const fs::path& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

std::uint64_t get_be(const Bytes& b, std::size_t at, std::size_t n) {
  REQUIRE(at + n <= b.size());
  return tlsresume::detail::get_be(b.data() + at, n);
}
void set_be(Bytes& b, std::size_t at, std::uint64_t v, std::size_t n) {
  REQUIRE(at + n <= b.size());
  tlsresume::detail::patch_be(b.data() + at, v, n);
}

/// The file's records: the offset of each record's length field (walks the documented layout).
std::vector<std::size_t> record_offsets(const Bytes& b) {
  std::vector<std::size_t> out;
  std::size_t at = 52;
  const auto count = get_be(b, 48, 4);
  for (std::uint64_t i = 0; i < count; ++i) {
    out.push_back(at);
    at += 4 + static_cast<std::size_t>(get_be(b, at, 4));
  }
  REQUIRE(at + 32 == b.size());
  return out;
}

/// Field offsets of a plain record starting at `r`.
struct PlainRecord {
  std::size_t at;
  [[nodiscard]] std::size_t length() const { return at; }
  [[nodiscard]] std::size_t key_id() const { return at + 4; }
  [[nodiscard]] std::size_t expiry() const { return at + 36; }
  [[nodiscard]] std::size_t original() const { return at + 44; }
  [[nodiscard]] std::size_t version() const { return at + 52; }
  [[nodiscard]] std::size_t early_data() const { return at + 54; }
  [[nodiscard]] std::size_t alpn_length() const { return at + 58; }
  [[nodiscard]] std::size_t der_length(const Bytes& b) const { return at + 59 + static_cast<std::size_t>(get_be(b, alpn_length(), 1)); }
  [[nodiscard]] std::size_t der(const Bytes& b) const { return der_length(b) + 4; }
};

/// Recomputes the SHA-256 trailer of a file without encryption (what an attacker, or a fuzzer,
/// can do): the damage must then be found by the record parser.
void reseal(Bytes& b) {
  REQUIRE(b.size() >= 84);
  const auto digest = tlsresume::detail::sha256(std::span<const std::byte>(b).first(b.size() - 32));
  std::copy(digest.begin(), digest.end(), b.end() - 32);
}

/// Stats are plain counters with no padding: compare them as bytes (fields added later included).
bool same_stats(const CacheStats& a, const CacheStats& b) {
  static_assert(std::has_unique_object_representations_v<CacheStats>);
  return std::memcmp(&a, &b, sizeof a) == 0;
}

template <class Cache> std::size_t waiting_imports(const Cache& cache) {
  std::size_t n = 0;
  cache.for_each_import([&](const auto&, const auto&, const auto&, auto) { ++n; });
  return n;
}

// ---- connections ------------------------------------------------------------------------------------

using test::connect_with;
using test::named;
using test::Result;

/// Three servers (TLS 1.3 tickets, TLS 1.2 tickets, TLS 1.2 session ids) and one client context
/// that trusts them all.
struct World {
  LocalServer tls13{named("localhost", Mode::tls13)};
  LocalServer tls12{named("tls12.test", Mode::tls12_tickets)};
  LocalServer ids{named("ids.test", Mode::tls12_session_ids)};
  CtxA ctx = make_context();
  PeerKey k13 = ctx.key_for("localhost", 443);
  PeerKey k12 = ctx.key_for("tls12.test", 443);
  PeerKey kids = ctx.key_for("ids.test", 443);

  CtxA make_context() const {
    auto c = CtxA::create();
    c.add_trusted_certificate(tls13.ca_certificate());
    c.add_trusted_certificate(tls12.ca_certificate());
    c.add_trusted_certificate(ids.ca_certificate());
    return c;
  }
  /// Full handshakes with every server: 2 TLS 1.3 tickets + 1 TLS 1.2 ticket session + 1
  /// session-id session land in `cache`.
  template <class C> void fill(C& cache) {
    for (auto [server, key] : peers()) {
      const Result r = connect_with(ctx, cache, *server, *key);
      REQUIRE_FALSE(r.server_reused);
    }
    REQUIRE(cache.stats().sessions == 4);
  }
  /// Every peer resumes through `cache`, as the servers confirm.
  template <class C> void require_all_resume(C& cache) {
    for (auto [server, key] : peers()) {
      INFO(key->to_string());
      const Result r = connect_with(ctx, cache, *server, *key);
      CHECK(r.offered);
      CHECK(r.client_reused);
      CHECK(r.server_reused);
    }
  }
  std::array<std::pair<LocalServer*, const PeerKey*>, 3> peers() { return {{{&tls13, &k13}, {&tls12, &k12}, {&ids, &kids}}}; }
};

EncryptionKey key_of(unsigned char fill, std::uint32_t id = 0) {
  EncryptionKey k;
  k.bytes.fill(std::byte{fill});
  k.id = id;
  return k;
}

LoadOptions with_keys(std::span<const EncryptionKey> keys) {
  LoadOptions o;
  o.keys = keys;
  return o;
}

/// Runs `f`, which must throw a PersistError for `file` whose reason contains `reason_part`, and
/// checks the rest of the contract: code `errc::bad_file`, "FILE: offset N: REASON" in what(),
/// OpenSSL's error queue empty, the cache (stats and waiting imports) unchanged.
template <class Cache, class F>
PersistError require_bad_file(const Cache& cache, const fs::path& file, std::string_view reason_part, F&& f) {
  const CacheStats before = cache.stats();
  const std::size_t imports_before = waiting_imports(cache);
  std::optional<PersistError> caught;
  try {
    std::forward<F>(f)();
  } catch (const PersistError& e) {
    caught = e;
  }
  REQUIRE(caught.has_value());
  const PersistError& e = *caught;
  INFO(e.what());
  CHECK(e.code() == tlsresume::errc::bad_file);
  CHECK(e.code().message() == "bad session file");
  CHECK(e.file() == file);
  CHECK(std::string(e.what()) == file.string() + ": offset " + std::to_string(e.offset()) + ": " + e.reason());
  CHECK(e.reason().find(reason_part) != std::string::npos);
  REQUIRE_ERROR_QUEUE_EMPTY();
  CHECK(same_stats(before, cache.stats()));
  CHECK(waiting_imports(cache) == imports_before);
  return e;
}

// ---- the second process ----------------------------------------------------------------------------

fs::path child_path() {
  if (const char* p = std::getenv("TLSRESUME_PERSIST_CHILD"); p != nullptr && *p != '\0') {
    return p;
  }
  return fs::read_symlink("/proc/self/exe").parent_path() / "persist_crash_child";
}

/// A child process whose stdout is a pipe we read.
class ChildProcess {
 public:
  explicit ChildProcess(const std::vector<std::string>& args) {
    const std::string path = child_path().string();
    REQUIRE(::access(path.c_str(), X_OK) == 0);
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t actions;
    REQUIRE(posix_spawn_file_actions_init(&actions) == 0);
    REQUIRE(posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO) == 0);
    std::vector<std::string> all{path};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) {
      argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    const int rc = posix_spawn(&pid_, path.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    out_ = fds[0];
    REQUIRE(rc == 0);
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    if (out_ >= 0) {
      ::close(out_);
    }
  }

  /// The next line of output, or nullopt at end of output or after `timeout`.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (const auto nl = buffer_.find('\n'); nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (eof_ || left.count() <= 0) {
        return std::nullopt;
      }
      pollfd p{out_, POLLIN, 0};
      const int r = ::poll(&p, 1, static_cast<int>(left.count()));
      if (r < 0 && errno == EINTR) {
        continue;
      }
      if (r <= 0) {
        return std::nullopt;
      }
      char chunk[4096];
      const ssize_t n = ::read(out_, chunk, sizeof chunk);
      if (n <= 0) {
        eof_ = n == 0 || errno != EINTR;
        continue;
      }
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }
  /// Every remaining line (the child must have exited or been killed).
  std::vector<std::string> drain() {
    std::vector<std::string> lines;
    while (auto line = read_line(5s)) {
      lines.push_back(std::move(*line));
    }
    return lines;
  }
  void kill_now() { REQUIRE(::kill(pid_, SIGKILL) == 0); }
  /// waitpid's status.
  int wait() {
    int status = 0;
    REQUIRE(::waitpid(pid_, &status, 0) == pid_);
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string buffer_;
  bool eof_ = false;
};

/// Runs the child to completion: (exit code, output lines).
std::pair<int, std::vector<std::string>> run_child(const std::vector<std::string>& args) {
  ChildProcess child(args);
  auto lines = child.drain();
  const int status = child.wait();
  REQUIRE(WIFEXITED(status));
  return {WEXITSTATUS(status), lines};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Round trips

TEMPLATE_TEST_CASE("saved sessions load into a new cache and resume (TLS 1.3 and TLS 1.2)", "[persist][roundtrip]",
                   tlsresume::SingleThreadPolicy, tlsresume::ThreadSafePolicy, tlsresume::ShardedPolicy) {
  using Cache = SessionCache<TagA, TestType>;
  TempDir dir;
  const fs::path file = dir / "sessions.bin";
  World w;
  Cache source;
  w.fill(source);
  const EncryptionKey key = key_of(0x5a);
  SaveOptions save_options;
  LoadOptions load_options;
  SECTION("without encryption") {}
  SECTION("with encryption") {
    save_options.key = &key;
    load_options.keys = std::span(&key, 1);
  }
  const auto saved = tlsresume::save_sessions(source, file, save_options);
  CHECK(saved.saved == 4);
  CHECK(saved.skipped_client_identity == 0);
  CHECK(saved.skipped_other_secret == 0);
  CHECK(saved.bytes == fs::file_size(file));
  CHECK(mode_of(file) == 0600);

  Cache cache;  // a new cache, as after a restart
  const auto loaded = tlsresume::load_sessions(cache, w.ctx, file, load_options);
  CHECK(loaded.loaded == 4);
  CHECK(loaded.expired == 0);
  CHECK(loaded.refused == 0);
  auto s = cache.stats();
  CHECK(s.imported == 4);
  CHECK(s.pending == 4);
  CHECK(s.sessions == 0);
  CHECK(cache.bound_context() == w.ctx.id());

  w.require_all_resume(cache);
  s = cache.stats();
  CHECK(s.claimed == 4);
  CHECK(s.pending == 0);
  CHECK(s.hits == 3);
  CHECK(s.imported == s.claimed + s.import_dropped + s.pending);
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("the header holds the documented fields", "[persist][format]") {
  TempDir dir;
  World w;
  SessionCache<TagA> cache;
  w.fill(cache);
  const EncryptionKey key = key_of(0x11, 0xabcdef01);
  SECTION("without encryption") {
    REQUIRE(tlsresume::save_sessions(cache, dir / "f").saved == 4);
    const Bytes b = read_bytes(dir / "f");
    CHECK(as_text(std::span(b).first(8)) == "TLSRESUM");
    CHECK(get_be(b, 8, 2) == 1);      // version
    CHECK(get_be(b, 10, 2) == 0);     // flags
    CHECK(get_be(b, 12, 4) == 0);     // key identifier
    CHECK(get_be(b, 48, 4) == 4);     // records
    const auto records = record_offsets(b);
    REQUIRE(records.size() == 4);
    for (std::size_t at : records) {
      const PlainRecord r{at};
      const auto version = get_be(b, r.version(), 2);
      CHECK((version == TLS1_3_VERSION || version == TLS1_2_VERSION));
      CHECK(get_be(b, r.expiry(), 8) > get_be(b, r.original(), 8));
      CHECK(b[r.der(b)] == std::byte{0x30});  // a DER SEQUENCE
      CHECK(r.der(b) + get_be(b, r.der_length(b), 4) == at + 4 + get_be(b, at, 4));
    }
    // The trailer is SHA-256 of everything before it.
    const auto digest = tlsresume::detail::sha256(std::span(b).first(b.size() - 32));
    CHECK(std::equal(digest.begin(), digest.end(), b.end() - 32));
  }
  SECTION("with encryption") {
    SaveOptions o;
    o.key = &key;
    REQUIRE(tlsresume::save_sessions(cache, dir / "f", o).saved == 4);
    const Bytes b = read_bytes(dir / "f");
    CHECK(get_be(b, 10, 2) == 1);
    CHECK(get_be(b, 12, 4) == 0xabcdef01);
    CHECK(record_offsets(b).size() == 4);
    // Two saves of the same sessions differ (fresh salt and nonces).
    REQUIRE(tlsresume::save_sessions(cache, dir / "g", o).saved == 4);
    CHECK(read_bytes(dir / "g") != b);
  }
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("a file written by one process loads in another", "[persist][process]") {
  TempDir dir;
  World w;
  SessionCache<TagA> cache;
  w.fill(cache);
  SECTION("without encryption") {
    REQUIRE(tlsresume::save_sessions(cache, dir / "s.bin").saved == 4);
    const auto [code, lines] = run_child({"check", (dir / "s.bin").string()});
    CHECK(code == 0);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0] == "loaded=4 expired=0 refused=0 pending=4");
  }
  SECTION("with a key read from a key file") {
    const std::string hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
    write_bytes(dir / "key", std::as_bytes(std::span(hex)));
    const EncryptionKey key = EncryptionKey::from_file(dir / "key");
    SaveOptions o;
    o.key = &key;
    REQUIRE(tlsresume::save_sessions(cache, dir / "s.bin", o).saved == 4);
    auto [code, lines] = run_child({"check", (dir / "s.bin").string(), (dir / "key").string()});
    CHECK(code == 0);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0] == "loaded=4 expired=0 refused=0 pending=4");
    // Without the key the other process refuses the file, naming it.
    std::tie(code, lines) = run_child({"check", (dir / "s.bin").string()});
    CHECK(code == 2);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].find("s.bin: offset 10: the file is encrypted") != std::string::npos);
  }
}

// ---------------------------------------------------------------------------------------------
// What is saved

TEST_CASE("waiting imports are saved again under the same salt; imports under another secret are skipped",
          "[persist][imports]") {
  TempDir dir;
  World w;
  SessionCache<TagA> source;
  w.fill(source);
  const EncryptionKey a = key_of(0xa1);
  const EncryptionKey b = key_of(0xb2);

  SECTION("without encryption") {
    REQUIRE(tlsresume::save_sessions(source, dir / "1").saved == 4);
    SessionCache<TagA> cache;
    REQUIRE(tlsresume::load_sessions(cache, w.ctx, dir / "1").loaded == 4);
    const auto report = tlsresume::save_sessions(cache, dir / "2");  // nothing claimed yet
    CHECK(report.saved == 4);
    CHECK(report.skipped_other_secret == 0);
    const Bytes f1 = read_bytes(dir / "1");
    const Bytes f2 = read_bytes(dir / "2");
    CHECK(std::equal(f1.begin() + 16, f1.begin() + 48, f2.begin() + 16));  // same salt
    SessionCache<TagA> next;
    REQUIRE(tlsresume::load_sessions(next, w.ctx, dir / "2").loaded == 4);
    w.require_all_resume(next);
    CHECK(next.stats().claimed == 4);
  }
  SECTION("with a key: the same key keeps them, another key or no key cannot") {
    SaveOptions with_a;
    with_a.key = &a;
    REQUIRE(tlsresume::save_sessions(source, dir / "1", with_a).saved == 4);
    SessionCache<TagA> cache;
    REQUIRE(tlsresume::load_sessions(cache, w.ctx, dir / "1", with_keys(std::span(&a, 1))).loaded == 4);
    auto report = tlsresume::save_sessions(cache, dir / "2", with_a);
    CHECK(report.saved == 4);
    CHECK(report.skipped_other_secret == 0);
    const Bytes f1 = read_bytes(dir / "1");
    const Bytes f2 = read_bytes(dir / "2");
    CHECK(std::equal(f1.begin() + 16, f1.begin() + 48, f2.begin() + 16));  // same salt

    SaveOptions with_b;
    with_b.key = &b;
    report = tlsresume::save_sessions(cache, dir / "3", with_b);
    CHECK(report.saved == 0);
    CHECK(report.skipped_other_secret == 4);
    report = tlsresume::save_sessions(cache, dir / "4");  // the derived secret is never published as a salt
    CHECK(report.saved == 0);
    CHECK(report.skipped_other_secret == 4);

    SessionCache<TagA> next;
    REQUIRE(tlsresume::load_sessions(next, w.ctx, dir / "2", with_keys(std::span(&a, 1))).loaded == 4);
    w.require_all_resume(next);
  }
  SECTION("imports from two files: one salt cannot serve both") {
    REQUIRE(tlsresume::save_sessions(source, dir / "1").saved == 4);
    REQUIRE(tlsresume::save_sessions(source, dir / "2").saved == 4);
    SessionCache<TagA> cache;
    REQUIRE(tlsresume::load_sessions(cache, w.ctx, dir / "1").loaded == 4);
    REQUIRE(tlsresume::load_sessions(cache, w.ctx, dir / "2").loaded == 4);
    const auto report = tlsresume::save_sessions(cache, dir / "3");
    CHECK(report.saved == 0);
    CHECK(report.skipped_other_secret == 8);
  }
  SECTION("claimed imports are live sessions and are saved under the new file's secret") {
    REQUIRE(tlsresume::save_sessions(source, dir / "1").saved == 4);
    SessionCache<TagA> cache;
    REQUIRE(tlsresume::load_sessions(cache, w.ctx, dir / "1").loaded == 4);
    w.require_all_resume(cache);  // claims them all; resumed connections bring new sessions
    const auto report = tlsresume::save_sessions(cache, dir / "2");
    CHECK(report.saved == cache.stats().sessions);
    CHECK(report.skipped_other_secret == 0);
  }
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("sessions of a configuration with a client certificate are skipped unless asked for",
          "[persist][client-certificate]") {
  TempDir dir;
  auto client_ca = tlsresume::testing::make_ca("client CA for persistence");
  auto alice = tlsresume::testing::make_leaf(client_ca, "alice");
  LocalServer server(test::requesting_client_certificate(client_ca));
  auto ctx = test::client_context_for(server, alice);
  const PeerKey key = ctx.key_for("localhost", 443);
  REQUIRE(key.config().has_client_identity());
  SessionCache<TagA> cache;
  REQUIRE_FALSE(connect_with(ctx, cache, server, key).server_reused);
  REQUIRE(cache.stats().sessions == 2);

  auto report = tlsresume::save_sessions(cache, dir / "default");
  CHECK(report.saved == 0);
  CHECK(report.skipped_client_identity == 2);

  SaveOptions o;
  o.include_client_certificate_sessions = true;
  report = tlsresume::save_sessions(cache, dir / "opted-in", o);
  CHECK(report.saved == 2);
  CHECK(report.skipped_client_identity == 0);
  SessionCache<TagA> next;
  REQUIRE(tlsresume::load_sessions(next, ctx, dir / "opted-in").loaded == 2);
  const Result r = connect_with(ctx, next, server, key);
  CHECK(r.server_reused);
}

namespace {
/// A wall clock the test sets; starts at the real time.
struct TestClock {
  static time_point now() noexcept { return current().load(); }
  static void set(time_point t) noexcept { current().store(t); }

 private:
  static std::atomic<time_point>& current() noexcept {
    static std::atomic<time_point> t{std::chrono::system_clock::now()};
    return t;
  }
};
struct ClockPolicy {
  using lock_type = std::mutex;
  using clock_type = TestClock;
  static constexpr std::size_t max_peers = 64;
  static constexpr std::size_t max_tickets_per_peer = 4;
};
}  // namespace

TEST_CASE("expired sessions are neither saved nor loaded", "[persist][expiry]") {
  TempDir dir;
  World w;
  const time_point now = std::chrono::system_clock::now();
  TestClock::set(now);
  SessionCache<TagA> source;
  w.fill(source);
  REQUIRE(tlsresume::save_sessions(source, dir / "f").saved == 4);

  SECTION("loading after every session expired (by the cache's clock) imports none") {
    TestClock::set(now + std::chrono::days(30));
    SessionCache<TagA, ClockPolicy> cache;
    const auto report = tlsresume::load_sessions(cache, w.ctx, dir / "f");
    CHECK(report.loaded == 0);
    CHECK(report.expired == 4);
    CHECK(cache.stats().imported == 0);
  }
  SECTION("a record's stored expiry is honoured") {
    Bytes b = read_bytes(dir / "f");
    const auto records = record_offsets(b);
    set_be(b, PlainRecord{records[0]}.expiry(), static_cast<std::uint64_t>(tlsresume::detail::to_unix_seconds(now) - 10), 8);
    reseal(b);
    write_bytes(dir / "f", b);
    SessionCache<TagA, ClockPolicy> cache;
    const auto report = tlsresume::load_sessions(cache, w.ctx, dir / "f");
    CHECK(report.loaded == 3);
    CHECK(report.expired == 1);
  }
  SECTION("a cache whose sessions all expired saves none") {
    SessionCache<TagA, ClockPolicy> clocked;
    w.fill(clocked);
    TestClock::set(now + std::chrono::days(30));
    const auto report = tlsresume::save_sessions(clocked, dir / "g");
    CHECK(report.saved == 0);
    CHECK(get_be(read_bytes(dir / "g"), 48, 4) == 0);
    SessionCache<TagA> cache;
    CHECK(tlsresume::load_sessions(cache, w.ctx, dir / "g").loaded == 0);  // an empty file is valid
  }
  TestClock::set(std::chrono::system_clock::now());
  REQUIRE_ERROR_QUEUE_EMPTY();
}

// ---------------------------------------------------------------------------------------------
// Keys, permissions, names

TEST_CASE("permissions are 0600 after a save, also over an existing 0644 file", "[persist][permissions]") {
  TempDir dir;
  World w;
  SessionCache<TagA> cache;
  w.fill(cache);
  const fs::path file = dir / "sessions.bin";
  tlsresume::save_sessions(cache, file);
  CHECK(mode_of(file) == 0600);
  write_bytes(file, std::as_bytes(std::span(std::string_view("old"))), 0644);
  REQUIRE(mode_of(file) == 0644);
  tlsresume::save_sessions(cache, file);
  CHECK(mode_of(file) == 0600);
  // No temporary file is left behind.
  std::size_t entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) {
    (void)e;
    ++entries;
  }
  CHECK(entries == 1);
}

TEST_CASE("key rotation: a file written with key A loads with keys {B, A}; a wrong key is a clear error",
          "[persist][keys]") {
  TempDir dir;
  World w;
  SessionCache<TagA> source;
  w.fill(source);
  const EncryptionKey a = key_of(0xa1);
  const EncryptionKey b = key_of(0xb2);
  CHECK(a.identifier() != b.identifier());
  SaveOptions o;
  o.key = &a;
  const fs::path file = dir / "f";
  REQUIRE(tlsresume::save_sessions(source, file, o).saved == 4);

  SECTION("rotation") {
    const std::array<EncryptionKey, 2> keys{b, a};
    SessionCache<TagA> cache;
    CHECK(tlsresume::load_sessions(cache, w.ctx, file, with_keys(keys)).loaded == 4);
    w.require_all_resume(cache);
  }
  SECTION("another key") {
    SessionCache<TagA> cache;
    const auto e = require_bad_file(cache, file, "none of the keys given has it",
                                    [&] { tlsresume::load_sessions(cache, w.ctx, file, with_keys(std::span(&b, 1))); });
    CHECK(e.offset() == 12);
  }
  SECTION("a wrong key with the right identifier") {
    const EncryptionKey impostor = key_of(0xb2, a.identifier());
    SessionCache<TagA> cache;
    require_bad_file(cache, file, "authentication failed",
                     [&] { tlsresume::load_sessions(cache, w.ctx, file, with_keys(std::span(&impostor, 1))); });
  }
  SECTION("encrypted, but no key given") {
    SessionCache<TagA> cache;
    require_bad_file(cache, file, "the file is encrypted", [&] { tlsresume::load_sessions(cache, w.ctx, file); });
  }
  SECTION("a key given, but the file is not encrypted") {
    REQUIRE(tlsresume::save_sessions(source, dir / "plain").saved == 4);
    SessionCache<TagA> cache;
    require_bad_file(cache, dir / "plain", "not encrypted",
                     [&] { tlsresume::load_sessions(cache, w.ctx, dir / "plain", with_keys(std::span(&a, 1))); });
  }
}

TEST_CASE("EncryptionKey::from_file reads 32 raw bytes or 64 hex digits, and nothing else", "[persist][keys]") {
  TempDir dir;
  const fs::path file = dir / "key";
  std::array<std::byte, 32> raw{};
  for (std::size_t i = 0; i < raw.size(); ++i) {
    raw[i] = static_cast<std::byte>(i * 7 + 1);
  }
  const auto expected_id = [&] {
    const auto h = tlsresume::detail::sha256(raw);
    return static_cast<std::uint32_t>(tlsresume::detail::get_be(h.data(), 4));
  }();
  std::string hex;
  for (std::byte b : raw) {
    char two[3];
    std::snprintf(two, sizeof two, "%02X", std::to_integer<unsigned>(b));
    hex += two;
  }
  SECTION("raw") {
    write_bytes(file, raw);
    const auto k = EncryptionKey::from_file(file);
    CHECK(k.bytes == raw);
    CHECK(k.id == expected_id);
    CHECK(k.identifier() == expected_id);
  }
  SECTION("hex, upper case, no newline") {
    write_bytes(file, std::as_bytes(std::span(hex)));
    CHECK(EncryptionKey::from_file(file).bytes == raw);
  }
  SECTION("hex, lower case, newline") {
    std::string lower = hex;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](char c) { return static_cast<char>(std::tolower(c)); });
    lower += '\n';
    write_bytes(file, std::as_bytes(std::span(lower)));
    CHECK(EncryptionKey::from_file(file).bytes == raw);
  }
  SECTION("an unset id is derived, a set one is kept") {
    EncryptionKey k;
    k.bytes = raw;
    CHECK(k.identifier() == expected_id);
    k.id = 7;
    CHECK(k.identifier() == 7);
  }
  SessionCache<TagA> cache;  // for require_bad_file's bookkeeping only
  SECTION("a bad digit") {
    std::string bad = hex;
    bad[17] = 'g';
    write_bytes(file, std::as_bytes(std::span(bad)));
    CHECK(require_bad_file(cache, file, "not a hexadecimal digit", [&] { (void)EncryptionKey::from_file(file); })
              .offset() == 17);
  }
  SECTION("a wrong length") {
    write_bytes(file, std::as_bytes(std::span(hex).first(40)));
    require_bad_file(cache, file, "expected 32 raw bytes or 64 hexadecimal digits",
                     [&] { (void)EncryptionKey::from_file(file); });
  }
  SECTION("too large to be a key (refused before reading)") {
    const std::string big(4096, 'a');
    write_bytes(file, std::as_bytes(std::span(big)));
    require_bad_file(cache, file, "more than the limit", [&] { (void)EncryptionKey::from_file(file); });
  }
  SECTION("all zeros") {
    write_bytes(file, std::array<std::byte, 32>{});
    require_bad_file(cache, file, "all zeros", [&] { (void)EncryptionKey::from_file(file); });
  }
  SECTION("missing") {
    try {
      (void)EncryptionKey::from_file(dir / "none");
      FAIL("no error");
    } catch (const PersistError&) {
      FAIL("a missing file is an I/O error, not a bad file");
    } catch (const tlsresume::Error& e) {
      CHECK(e.code() == std::errc::no_such_file_or_directory);
      CHECK(std::string(e.what()).find((dir / "none").string()) != std::string::npos);
    }
  }
  REQUIRE_ERROR_QUEUE_EMPTY();
}

TEST_CASE("key ids hide the host name: salted ids hold none; only encryption hides the certificate too",
          "[persist][privacy]") {
  TempDir dir;
  World w;
  SessionCache<TagA> cache;
  const PeerKey by_ip = w.ctx.key_for("127.0.0.1", 443);  // the certificate names 127.0.0.1 in binary only
  REQUIRE(by_ip.encode().find("127.0.0.1") != std::string::npos);
  REQUIRE_FALSE(connect_with(w.ctx, cache, w.tls13, by_ip).server_reused);
  REQUIRE_FALSE(connect_with(w.ctx, cache, w.tls13, w.k13).server_reused);

  REQUIRE(tlsresume::save_sessions(cache, dir / "plain").saved == 4);
  const std::string plain = as_text(read_bytes(dir / "plain"));
  CHECK(plain.find("127.0.0.1") == std::string::npos);  // the salted key id does not hold it
  // The DER of each session holds the server certificate, which names the host: a file without
  // encryption reveals the names of the servers whose certificates it holds.
  CHECK(plain.find("localhost") != std::string::npos);

  const EncryptionKey key = key_of(0x42);
  SaveOptions o;
  o.key = &key;
  REQUIRE(tlsresume::save_sessions(cache, dir / "sealed", o).saved == 4);
  const std::string sealed = as_text(read_bytes(dir / "sealed"));
  CHECK(sealed.find("localhost") == std::string::npos);
  CHECK(sealed.find("127.0.0.1") == std::string::npos);

  // The ids of a file without encryption are HMAC-SHA-256 under its salt: whoever guesses
  // host:port can test the guess (what the docs warn about) ...
  const Bytes b = read_bytes(dir / "plain");
  tlsresume::KeyIdSecret salt;
  std::copy(b.begin() + 16, b.begin() + 48, salt.bytes.begin());
  std::size_t matches = 0;
  for (std::size_t at : record_offsets(b)) {
    const auto guess = tlsresume::key_id(salt, by_ip);
    matches += std::equal(guess.begin(), guess.end(), b.begin() + static_cast<std::ptrdiff_t>(at + 4)) ? 1 : 0;
  }
  CHECK(matches == 2);
  // ... while under a key they are not HMACs under the salt.
  const Bytes s = read_bytes(dir / "sealed");
  std::copy(s.begin() + 16, s.begin() + 48, salt.bytes.begin());
  for (std::size_t at : record_offsets(s)) {
    const auto guess = tlsresume::key_id(salt, by_ip);
    CHECK_FALSE(std::equal(guess.begin(), guess.end(), s.begin() + static_cast<std::ptrdiff_t>(at + 4)));
  }
}

// ---------------------------------------------------------------------------------------------
// Bad files: each is refused with its file, offset and reason, and the cache stays as it was

TEST_CASE("bad files are refused and leave the cache unchanged", "[persist][bad-file]") {
  TempDir dir;
  World w;
  SessionCache<TagA> source;
  w.fill(source);
  const fs::path good = dir / "good";
  const fs::path bad = dir / "bad";
  REQUIRE(tlsresume::save_sessions(source, good).saved == 4);
  const Bytes bytes = read_bytes(good);
  const auto records = record_offsets(bytes);

  // The cache under test holds live sessions and waiting imports already.
  SessionCache<TagA> cache;
  w.fill(cache);
  REQUIRE(tlsresume::load_sessions(cache, w.ctx, good).loaded == 4);
  REQUIRE(cache.stats().pending == 4);
  auto load = [&](const LoadOptions& o = {}) { return [&, o] { tlsresume::load_sessions(cache, w.ctx, bad, o); }; };
  auto write = [&](const Bytes& b) { write_bytes(bad, b); };
  // The good file with the `width`-byte big-endian field at `at` set to `value`, loaded.
  auto load_patched = [&](std::size_t at, std::uint64_t value, std::size_t width, std::string_view reason) {
    Bytes b = bytes;
    set_be(b, at, value, width);
    write(b);
    return require_bad_file(cache, bad, reason, load());
  };

  SECTION("empty") {
    write({});
    CHECK(require_bad_file(cache, bad, "empty file", load()).offset() == 0);
  }
  SECTION("bad magic") {
    Bytes b = bytes;
    b[0] = std::byte{'X'};
    write(b);
    CHECK(require_bad_file(cache, bad, "bad magic", load()).offset() == 0);
    write_bytes(bad, std::as_bytes(std::span(std::string_view("hello, world\n"))));
    CHECK(require_bad_file(cache, bad, "bad magic", load()).offset() == 0);
  }
  SECTION("another version") {
    CHECK(load_patched(8, 2, 2, "unsupported format version 2").offset() == 8);
  }
  SECTION("unknown flags") {
    CHECK(load_patched(10, 0x8000, 2, "unknown flags").offset() == 10);
  }
  SECTION("truncated, at every kind of place") {
    for (std::size_t size : {std::size_t{5}, std::size_t{30}, std::size_t{52}, std::size_t{60}, records[1] + 3,
                             records[2] + 40, records[3], bytes.size() - 32, bytes.size() - 1}) {
      INFO("cut at " << size);
      write(Bytes(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(size)));
      const auto e = require_bad_file(cache, bad, "", load());
      CHECK(e.offset() <= size);
      const bool named = e.reason().find("truncated") != std::string::npos ||
                         e.reason().find("runs past the end") != std::string::npos ||
                         e.reason().find("integrity check failed") != std::string::npos;
      CHECK(named);
    }
  }
  SECTION("a record removed at the end (count kept)") {
    Bytes b(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(records[3]));
    b.insert(b.end(), bytes.end() - 32, bytes.end());
    write(b);
    require_bad_file(cache, bad, "truncated", load());
  }
  SECTION("corrupted: one bit flipped in a session") {
    Bytes b = bytes;
    b[PlainRecord{records[1]}.der(b) + 100] ^= std::byte{0x04};
    write(b);
    CHECK(require_bad_file(cache, bad, "integrity check failed", load()).offset() == bytes.size() - 32);
  }
  SECTION("trailing bytes after the trailer") {
    Bytes b = bytes;
    b.push_back(std::byte{0});
    write(b);
    require_bad_file(cache, bad, "unexpected bytes after the last record", load());
  }
  SECTION("oversized (checked before reading)") {
    write(bytes);
    LoadOptions o;
    o.max_file_size = bytes.size() - 1;
    CHECK(require_bad_file(cache, bad, "more than the limit", load(o)).offset() == 0);
  }
  SECTION("too many records") {
    write(bytes);
    LoadOptions o;
    o.max_records = 3;
    CHECK(require_bad_file(cache, bad, "4 records, more than the limit of 3", load(o)).offset() == 48);
  }
  SECTION("a record count that cannot fit") {
    CHECK(load_patched(48, 100000, 4, "cannot fit").offset() == 48);
  }
  SECTION("a record length pointing past the end") {
    CHECK(load_patched(records[2], 0xfffffff0, 4, "runs past the end").offset() == records[2]);
  }
  SECTION("a record length below the minimum") {
    CHECK(load_patched(records[0], 3, 4, "less than the minimum").offset() == records[0]);
  }
  SECTION("a hostile DER (d2i_SSL_SESSION fails), trailer recomputed") {
    Bytes b = bytes;
    const PlainRecord r{records[2]};
    std::fill(b.begin() + static_cast<std::ptrdiff_t>(r.der(b)), b.begin() + static_cast<std::ptrdiff_t>(r.der(b) + 16),
              std::byte{0xff});
    reseal(b);
    write(b);
    CHECK(require_bad_file(cache, bad, "not a valid DER-encoded session", load()).offset() == r.der(b));
  }
  SECTION("a DER with trailing bytes, lengths and trailer recomputed") {
    const PlainRecord r{records[1]};
    const std::size_t der_length = get_be(bytes, r.der_length(bytes), 4);
    const std::size_t end = r.der(bytes) + der_length;
    Bytes b(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(end));
    b.push_back(std::byte{0});
    b.insert(b.end(), bytes.begin() + static_cast<std::ptrdiff_t>(end), bytes.end());
    set_be(b, r.der_length(b), der_length + 1, 4);
    set_be(b, r.length(), get_be(b, r.length(), 4) + 1, 4);
    reseal(b);
    write(b);
    CHECK(require_bad_file(cache, bad, "1 trailing bytes after the DER session", load()).offset() == end);
  }
  SECTION("a DER length that disagrees with the record length") {
    Bytes b = bytes;
    const PlainRecord r{records[0]};
    set_be(b, r.der_length(b), get_be(b, r.der_length(b), 4) - 1, 4);
    reseal(b);
    write(b);
    CHECK(require_bad_file(cache, bad, "does not match the", load()).offset() == r.der_length(b));
  }
  SECTION("metadata that does not describe its session") {
    Bytes b = bytes;
    const PlainRecord r{records[0]};
    const auto version = get_be(b, r.version(), 2);
    set_be(b, r.version(), version == TLS1_3_VERSION ? TLS1_2_VERSION : TLS1_3_VERSION, 2);
    reseal(b);
    write(b);
    CHECK(require_bad_file(cache, bad, "does not match the session's", load()).offset() == r.version());
    b = bytes;
    set_be(b, r.version(), 0x9999, 2);
    reseal(b);
    write(b);
    CHECK(require_bad_file(cache, bad, "unknown protocol version", load()).offset() == r.version());
  }
  SECTION("not a regular file: a directory, a FIFO (opened without waiting for a writer)") {
    fs::create_directory(bad);
    CHECK(require_bad_file(cache, bad, "not a regular file", load()).offset() == 0);
    REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
    require_bad_file(cache, dir / "fifo", "not a regular file",
                     [&] { tlsresume::load_sessions(cache, w.ctx, dir / "fifo"); });
  }
  SECTION("writable by group or others") {
    write_bytes(bad, bytes, 0620);
    require_bad_file(cache, bad, "writable by group or others", load());
  }
  SECTION("missing: an I/O error with errno, not a bad file") {
    const CacheStats before = cache.stats();
    try {
      tlsresume::load_sessions(cache, w.ctx, dir / "none");
      FAIL("no error");
    } catch (const PersistError&) {
      FAIL("a missing file is not a bad file");
    } catch (const tlsresume::Error& e) {
      CHECK(e.code() == std::errc::no_such_file_or_directory);
      CHECK(std::string(e.what()).find((dir / "none").string()) != std::string::npos);
    }
    CHECK(same_stats(before, cache.stats()));
    REQUIRE_ERROR_QUEUE_EMPTY();
  }
  SECTION("a cache that serves another context") {
    auto other = w.make_context();
    const CacheStats before = cache.stats();
    test::require_error([&] { tlsresume::load_sessions(cache, other, good); }, tlsresume::errc::wrong_context);
    CHECK(same_stats(before, cache.stats()));
  }
  // And the good file still loads into the same cache afterwards.
  CHECK(tlsresume::load_sessions(cache, w.ctx, good).loaded == 4);
}

TEST_CASE("encrypted files: tampering is detected by the trailer HMAC and by AES-GCM", "[persist][bad-file]") {
  TempDir dir;
  World w;
  SessionCache<TagA> source;
  w.fill(source);
  const EncryptionKey key = key_of(0x77);
  SaveOptions o;
  o.key = &key;
  const fs::path good = dir / "good";
  const fs::path bad = dir / "bad";
  REQUIRE(tlsresume::save_sessions(source, good, o).saved == 4);
  const Bytes bytes = read_bytes(good);
  const auto records = record_offsets(bytes);
  SessionCache<TagA> cache;
  const auto keys = std::span(&key, 1);
  auto load = [&] { tlsresume::load_sessions(cache, w.ctx, bad, with_keys(keys)); };

  SECTION("a record removed, count adjusted") {
    Bytes b(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(records[1]));
    b.insert(b.end(), bytes.begin() + static_cast<std::ptrdiff_t>(records[2]), bytes.end());
    set_be(b, 48, 3, 4);
    write_bytes(bad, b);
    require_bad_file(cache, bad, "authentication failed", load);
  }
  SECTION("two records swapped") {
    Bytes b(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(records[0]));
    b.insert(b.end(), bytes.begin() + static_cast<std::ptrdiff_t>(records[1]), bytes.begin() + static_cast<std::ptrdiff_t>(records[2]));
    b.insert(b.end(), bytes.begin() + static_cast<std::ptrdiff_t>(records[0]), bytes.begin() + static_cast<std::ptrdiff_t>(records[1]));
    b.insert(b.end(), bytes.begin() + static_cast<std::ptrdiff_t>(records[2]), bytes.end());
    REQUIRE(b.size() == bytes.size());
    write_bytes(bad, b);
    require_bad_file(cache, bad, "authentication failed", load);
  }
  SECTION("the salt changed") {
    Bytes b = bytes;
    b[20] ^= std::byte{1};
    write_bytes(bad, b);
    require_bad_file(cache, bad, "authentication failed", load);
  }
  SECTION("a ciphertext byte flipped: the HMAC fails, and without it (fuzzing) AES-GCM does") {
    Bytes b = bytes;
    b[records[1] + 4 + 32 + 12 + 5] ^= std::byte{0x80};
    write_bytes(bad, b);
    require_bad_file(cache, bad, "authentication failed", load);
    const tlsresume::detail::LoadLimits limits;
    require_bad_file(cache, bad, "record 1 failed AES-256-GCM authentication",
                     [&] { (void)tlsresume::detail::parse_session_file(b, keys, limits, false, bad); });
  }
  SECTION("a key id changed (it is in the record's AAD)") {
    Bytes b = bytes;
    b[records[2] + 4] ^= std::byte{1};
    write_bytes(bad, b);
    const tlsresume::detail::LoadLimits limits;
    require_bad_file(cache, bad, "record 2 failed AES-256-GCM authentication",
                     [&] { (void)tlsresume::detail::parse_session_file(b, keys, limits, false, bad); });
  }
  CHECK(tlsresume::load_sessions(cache, w.ctx, good, with_keys(keys)).loaded == 4);
}

TEST_CASE("the fuzzing entry point parses records without the integrity check", "[persist][fuzz]") {
  World w;
  SessionCache<TagA> source;
  w.fill(source);
  TempDir dir;
  REQUIRE(tlsresume::save_sessions(source, dir / "f").saved == 4);
  const Bytes bytes = read_bytes(dir / "f");
  const tlsresume::detail::LoadLimits limits;
  SECTION("a valid file parses with and without the check") {
    for (bool verify : {true, false}) {
      const auto parsed = tlsresume::detail::parse_session_file(bytes, {}, limits, verify);
      CHECK(parsed.records.size() == 4);
      CHECK_FALSE(parsed.encrypted);
    }
  }
  SECTION("a hostile DER reaches d2i_SSL_SESSION when the trailer is not checked") {
    Bytes b = bytes;
    const PlainRecord r{record_offsets(b)[0]};
    b[r.der(b)] = std::byte{0x04};  // an OCTET STRING, not a SEQUENCE; trailer left stale
    SessionCache<TagA> cache;
    require_bad_file(cache, "<memory>", "integrity check failed",
                     [&] { (void)tlsresume::detail::parse_session_file(b, {}, limits, true); });
    require_bad_file(cache, "<memory>", "not a valid DER-encoded session",
                     [&] { (void)tlsresume::detail::parse_session_file(b, {}, limits, false); });
  }
  SECTION("random mutations never crash and always end in a PersistError or a parse") {
    std::mt19937 rng(12345);
    std::size_t refused = 0;
    for (int i = 0; i < 300; ++i) {
      Bytes b = bytes;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) {
        switch (rng() % 3) {
          case 0: b[rng() % b.size()] = static_cast<std::byte>(rng()); break;
          case 1: b.resize(rng() % (b.size() + 1)); break;
          default: b.insert(b.begin() + static_cast<std::ptrdiff_t>(rng() % (b.size() + 1)), static_cast<std::byte>(rng()));
        }
        if (b.empty()) {
          break;
        }
      }
      try {
        (void)tlsresume::detail::parse_session_file(b, {}, limits, false);
      } catch (const PersistError&) {
        ++refused;
      }
      REQUIRE_ERROR_QUEUE_EMPTY();
    }
    CHECK(refused > 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Atomic writes

TEST_CASE("a failed save throws with the path and leaves no temporary file", "[persist][atomic]") {
  TempDir dir;
  World w;
  SessionCache<TagA> cache;
  w.fill(cache);
  SECTION("the directory does not exist") {
    const fs::path target = dir / "missing" / "f";
    try {
      tlsresume::save_sessions(cache, target);
      FAIL("no error");
    } catch (const tlsresume::Error& e) {
      CHECK(e.code() == std::errc::no_such_file_or_directory);
      CHECK(std::string(e.what()).find(target.string()) != std::string::npos);
    }
  }
  SECTION("the target is a directory: rename fails after everything was written") {
    fs::create_directory(dir / "f");
    try {
      tlsresume::save_sessions(cache, dir / "f");
      FAIL("no error");
    } catch (const tlsresume::Error& e) {
      CHECK(std::string(e.what()).find("rename") != std::string::npos);
      CHECK(std::string(e.what()).find((dir / "f").string()) != std::string::npos);
    }
    std::size_t entries = 0;
    for (const auto& e : fs::directory_iterator(dir.path)) {
      CHECK(e.path().filename() == "f");
      ++entries;
    }
    CHECK(entries == 1);
  }
  REQUIRE_ERROR_QUEUE_EMPTY();
}

namespace {
constexpr std::size_t crash_records = 1000;  // version v of the file holds crash_records + v records

/// Which version a complete file is: checks magic, size and the SHA-256 trailer (what makes the
/// file a whole output of the writer), and reads the record count. -1 if not a complete file.
int version_of(const fs::path& file) {
  const Bytes b = read_bytes(file);
  if (b.size() < 84 || as_text(std::span(b).first(8)) != "TLSRESUM") {
    return -1;
  }
  const auto digest = tlsresume::detail::sha256(std::span(b).first(b.size() - 32));
  if (!std::equal(digest.begin(), digest.end(), b.end() - 32)) {
    return -1;
  }
  const auto count = get_be(b, 48, 4);
  return count >= crash_records && count < crash_records + 3 ? static_cast<int>(count - crash_records) : -1;
}

bool has_temporary_file(const fs::path& dir, const fs::path& target) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path() != target) {
      return true;
    }
  }
  return false;
}

std::size_t remove_temporary_files(const fs::path& dir, const fs::path& target) {
  std::size_t removed = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path() == target) {
      continue;
    }
    REQUIRE(e.path().filename().string().rfind("." + target.filename().string() + ".tmp.", 0) == 0);
    fs::remove(e.path());
    ++removed;
  }
  return removed;
}
}  // namespace

TEST_CASE("a writer killed at random moments leaves the old file or a new one, never a torn one",
          "[persist][atomic][crash]") {
  TempDir dir;
  const fs::path file = dir / "sessions.bin";
  const std::string n = std::to_string(crash_records);
  const auto started = std::chrono::steady_clock::now();

  // Version 0, written by a child that runs to completion.
  {
    const auto [code, lines] = run_child({"save", file.string(), n, "0", "1"});
    REQUIRE(code == 0);
    REQUIRE(lines == std::vector<std::string>{"ready", "saved 0"});
  }
  int current = version_of(file);
  REQUIRE(current == 0);

  // How long one save takes in the child (this build, this machine).
  std::chrono::microseconds period{};
  {
    ChildProcess child({"save", file.string(), n, "1"});
    REQUIRE(child.read_line(60s) == std::optional<std::string>("ready"));
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 3; ++i) {
      REQUIRE(child.read_line(60s).has_value());
    }
    period = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0) / 3;
    child.kill_now();
    (void)child.wait();
    current = version_of(file);
    REQUIRE(current >= 0);
    remove_temporary_files(dir.path, file);
  }
  const Bytes sample = read_bytes(file);

  std::mt19937_64 rng(std::random_device{}());
  // Up to 1.5 saves: kills land before, during and after the first save, and in the second.
  std::uniform_int_distribution<std::int64_t> delay_us(0, period.count() * 3 / 2);
  constexpr int trials = 200;
  int kept_old = 0;
  int replaced = 0;
  std::size_t stale = 0;
  std::size_t full_loads = 0;
  std::chrono::steady_clock::duration startup{};
  for (int trial = 0; trial < trials; ++trial) {
    const int start = (current + 1) % 3;
    const auto spawned = std::chrono::steady_clock::now();
    ChildProcess child({"save", file.string(), n, std::to_string(start)});
    REQUIRE(child.read_line(60s) == std::optional<std::string>("ready"));
    startup += std::chrono::steady_clock::now() - spawned;
    if (trial % 10 == 5) {
      // One trial in ten kills the writer as soon as its temporary file exists (mid-write).
      const auto give_up = std::chrono::steady_clock::now() + 30s;
      while (!has_temporary_file(dir.path, file) && std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(100us);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng) % 500));
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
    }
    child.kill_now();
    const int status = child.wait();
    REQUIRE(WIFSIGNALED(status));
    REQUIRE(WTERMSIG(status) == SIGKILL);
    std::optional<int> last;  // the last save the child reported as done
    for (const std::string& line : child.drain()) {
      REQUIRE(line.rfind("saved ", 0) == 0);
      last = std::stoi(line.substr(6));
    }
    const int found = version_of(file);
    INFO("trial " << trial << ": before " << current << ", last reported " << (last ? *last : -1) << ", found " << found);
    // Before any reported save: the old file or the first new one. After: the last reported or
    // the next one (renamed before the report was printed).
    const int base = last ? *last : current;
    const int next = last ? (*last + 1) % 3 : start;
    REQUIRE((found == base || found == next));
    (found == current && !last ? kept_old : replaced) += 1;
    current = found;
    stale += remove_temporary_files(dir.path, file);
    // Bounded: a machine too slow for this fails here rather than at meson's timeout.
    REQUIRE(std::chrono::steady_clock::now() - started < 240s);
    // A full load (d2i_SSL_SESSION of every record, ~0.25 ms each with OpenSSL 3.0) now and then;
    // version_of already checked what makes the file whole: structure and SHA-256 trailer.
    if (trial == 0 || trial == trials - 1) {
      CtxA ctx = CtxA::create();
      SessionCache<TagA> cache;
      const auto report = tlsresume::load_sessions(cache, ctx, file);
      CHECK(report.loaded == crash_records + static_cast<std::size_t>(current));
      ++full_loads;
    }
  }
  const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::fprintf(stderr,
               "persist crash test: %d trials, %zu records per file (%zu bytes), one save ~%.1f ms, child start-up "
               "~%.1f ms; old file kept %d, replaced %d, stale temporary files removed %zu, full loads %zu; %.1f s\n",
               trials, crash_records, sample.size(), static_cast<double>(period.count()) / 1000.0,
               std::chrono::duration<double, std::milli>(startup).count() / trials, kept_old, replaced, stale, full_loads,
               seconds);
  CHECK(stale > 0);  // kills landed while a temporary file existed (one trial in ten aims for it)
  CHECK(kept_old + replaced == trials);
}

TEST_CASE("timing: save and load of 1,000 sessions", "[persist][timing]") {
  TempDir dir;
  World w;
  SessionCache<TagA> source;
  w.fill(source);
  // 1,000 peers: copies of one session under distinct keys.
  SessionCache<TagA> big;
  const auto seed = [&] {
    std::optional<tlsresume::BoundSession<TagA>> s;
    source.for_each([&](const PeerKey&, const tlsresume::BoundSession<TagA>& x, auto) {
      if (!s && x.protocol_version() == tlsresume::ProtocolVersion::tls1_3) {
        s = x;
      }
    });
    REQUIRE(s.has_value());
    return *s;
  }();
  for (int i = 0; i < 1000; ++i) {
    REQUIRE(big.put(w.ctx.key_for("h" + std::to_string(i) + ".example", 443), w.ctx.copy_session(seed)));
  }
  const EncryptionKey key = key_of(0x99);
  for (const EncryptionKey* k : {static_cast<const EncryptionKey*>(nullptr), &key}) {
    SaveOptions o;
    o.key = k;
    const auto t0 = std::chrono::steady_clock::now();
    const auto saved = tlsresume::save_sessions(big, dir / "f", o);
    const auto t1 = std::chrono::steady_clock::now();
    SessionCache<TagA> cache;
    const auto loaded = tlsresume::load_sessions(cache, w.ctx, dir / "f", k != nullptr ? with_keys(std::span(k, 1)) : LoadOptions{});
    const auto t2 = std::chrono::steady_clock::now();
    CHECK(saved.saved == 1000);
    CHECK(loaded.loaded == 1000);
    std::fprintf(stderr, "persist timing (%s): save %zu sessions (%ju bytes) %.1f ms, load %.1f ms\n",
                 k != nullptr ? "encrypted" : "plain", saved.saved, saved.bytes,
                 std::chrono::duration<double, std::milli>(t1 - t0).count(),
                 std::chrono::duration<double, std::milli>(t2 - t1).count());
  }
}
