#pragma once
// Shared helpers of the benchmarks: command-line flags, CPU and wall clocks, order statistics,
// a small JSON writer and a description of the machine. Benchmarks only; not part of the library.

#include <openssl/crypto.h>
#include <openssl/opensslv.h>

#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <tlsresume/testing.hpp>
#include <tlsresume/tlsresume.hpp>

namespace bench {

// ---------------------------------------------------------------------------------------------
// Sessions

/// A session `ctx` received over a real handshake with a local server made with `options`
/// (its CA becomes trusted by `ctx`): the newest one, a TLS 1.3 ticket when the server offers TLS
/// 1.3. Throws `std::runtime_error` if none arrived or its version is not `want` (when given).
template <class Ctx>
typename Ctx::session_type received_session(Ctx& ctx, const tlsresume::testing::ServerOptions& options,
                                            tlsresume::ProtocolVersion want = tlsresume::ProtocolVersion::unknown) {
  tlsresume::testing::LocalServer server(options);
  ctx.add_trusted_certificate(server.ca_certificate());
  tlsresume::Client<Ctx> client(ctx);
  client.set_server_name("localhost");
  auto conn = server.handshake(client);
  (void)client.await_tickets(std::chrono::milliseconds(0), 1);
  client.shutdown();
  conn.shutdown();
  auto s = ctx.take_recent_session("localhost");
  if (!s || (want != tlsresume::ProtocolVersion::unknown && s->protocol_version() != want)) {
    throw std::runtime_error("no session of the expected version received from the local server");
  }
  return std::move(*s);
}

// ---------------------------------------------------------------------------------------------
// Clocks

/// CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID), in nanoseconds.
inline std::int64_t thread_cpu_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

/// CPU time of the whole process (CLOCK_PROCESS_CPUTIME_ID), in nanoseconds.
inline std::int64_t process_cpu_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

/// Monotonic wall clock, in nanoseconds.
inline std::int64_t wall_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// ---------------------------------------------------------------------------------------------
// Order statistics

/// The median of `v` (the mean of the two middle values for an even count); 0 for none.
inline double median(std::vector<double> v) {
  if (v.empty()) {
    return 0;
  }
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/// The `p`-quantile (0..1) of `v` by the nearest-rank method; 0 for none.
inline double quantile(std::vector<double> v, double p) {
  if (v.empty()) {
    return 0;
  }
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

inline double min_of(const std::vector<double>& v) { return v.empty() ? 0 : *std::min_element(v.begin(), v.end()); }
inline double max_of(const std::vector<double>& v) { return v.empty() ? 0 : *std::max_element(v.begin(), v.end()); }

// ---------------------------------------------------------------------------------------------
// Command line

/// A minimal flag parser: `--name value`, `--name=value` and boolean `--name`.
class Args {
 public:
  Args(int argc, char** argv) : args_(argv + 1, argv + argc) {}

  /// Whether the boolean flag `--name` is present (and consumes it).
  bool flag(std::string_view name) {
    const std::string want = "--" + std::string(name);
    for (auto it = args_.begin(); it != args_.end(); ++it) {
      if (*it == want) {
        args_.erase(it);
        return true;
      }
    }
    return false;
  }

  /// The value of `--name` (and consumes it), or `fallback`.
  std::string value(std::string_view name, std::string fallback = {}) {
    const std::string want = "--" + std::string(name);
    for (auto it = args_.begin(); it != args_.end(); ++it) {
      if (*it == want) {
        if (std::next(it) == args_.end()) {
          throw std::runtime_error(want + " needs a value");
        }
        std::string v = *std::next(it);
        args_.erase(it, std::next(it, 2));
        return v;
      }
      if (it->rfind(want + "=", 0) == 0) {
        std::string v = it->substr(want.size() + 1);
        args_.erase(it);
        return v;
      }
    }
    return fallback;
  }

  /// The integer value of `--name`, or `fallback`.
  long long number(std::string_view name, long long fallback) {
    const std::string v = value(name);
    if (v.empty()) {
      return fallback;
    }
    std::size_t used = 0;
    const long long n = std::stoll(v, &used);
    if (used != v.size() || n < 0) {
      throw std::runtime_error("--" + std::string(name) + ": not a non-negative integer: " + v);
    }
    return n;
  }

  /// Throws if any argument was not consumed.
  void finish() const {
    if (!args_.empty()) {
      throw std::runtime_error("unknown argument: " + args_.front());
    }
  }

 private:
  std::vector<std::string> args_;
};

// ---------------------------------------------------------------------------------------------
// JSON

/// Appends JSON text; the caller writes the structure, this escapes strings and formats numbers.
class Json {
 public:
  Json& raw(std::string_view s) {
    out_ += s;
    return *this;
  }
  Json& str(std::string_view s) {
    out_ += '"';
    for (const char c : s) {
      switch (c) {
        case '"': out_ += "\\\""; break;
        case '\\': out_ += "\\\\"; break;
        case '\n': out_ += "\\n"; break;
        case '\t': out_ += "\\t"; break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
            out_ += buf;
          } else {
            out_ += c;
          }
      }
    }
    out_ += '"';
    return *this;
  }
  Json& num(double v) {
    if (!std::isfinite(v)) {
      out_ += "null";
      return *this;
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    out_ += buf;
    return *this;
  }
  Json& integer(long long v) {
    out_ += std::to_string(v);
    return *this;
  }
  Json& boolean(bool v) {
    out_ += v ? "true" : "false";
    return *this;
  }
  /// `"key":` (the caller adds commas).
  Json& key(std::string_view k) {
    str(k);
    out_ += ':';
    return *this;
  }
  Json& nums(const std::vector<double>& v) {
    out_ += '[';
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i != 0) {
        out_ += ',';
      }
      num(v[i]);
    }
    out_ += ']';
    return *this;
  }
  [[nodiscard]] const std::string& text() const noexcept { return out_; }

 private:
  std::string out_;
};

/// Writes `text` to `path`, or to standard output for "-".
inline void write_text(const std::string& path, const std::string& text) {
  if (path == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fputc('\n', stdout);
    return;
  }
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) {
    throw std::runtime_error("cannot write " + path);
  }
  f << text << '\n';
}

// ---------------------------------------------------------------------------------------------
// The machine

inline std::string read_first_line_with(const char* path, std::string_view prefix) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(prefix, 0) == 0) {
      const auto colon = line.find(':');
      std::string v = colon == std::string::npos ? line : line.substr(colon + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  }
  return {};
}

/// "1.23 0.98 0.75" from /proc/loadavg (the 1, 5 and 15 minute load averages).
inline std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

/// The load average when the program started (initialised before main).
inline const std::string load_at_start = load_average();

/// The machine as a JSON object: CPU model, online CPUs, kernel, OpenSSL, compiler, load.
inline void machine_json(Json& j) {
  utsname u{};
  ::uname(&u);
  j.raw("{");
  j.key("cpu").str(read_first_line_with("/proc/cpuinfo", "model name")).raw(",");
  j.key("cpus_online").integer(::sysconf(_SC_NPROCESSORS_ONLN)).raw(",");
  j.key("kernel").str(std::string(u.sysname) + " " + u.release).raw(",");
  j.key("openssl").str(OpenSSL_version(OPENSSL_VERSION)).raw(",");
#if defined(__clang__)
  j.key("compiler").str(std::string("clang++ ") + __clang_version__).raw(",");
#elif defined(__GNUC__)
  j.key("compiler").str(std::string("g++ ") + __VERSION__).raw(",");
#else
  j.key("compiler").str("unknown").raw(",");
#endif
#if defined(NDEBUG)
  j.key("ndebug").boolean(true).raw(",");
#else
  j.key("ndebug").boolean(false).raw(",");
#endif
  j.key("load_average_at_start").str(load_at_start);
  j.raw("}");
}

/// A one-line description of the machine for the human tables.
inline std::string machine_line() {
  return read_first_line_with("/proc/cpuinfo", "model name") + ", " + std::to_string(::sysconf(_SC_NPROCESSORS_ONLN)) +
         " CPUs online, " + OpenSSL_version(OPENSSL_VERSION) + ", load average " + load_average();
}

}  // namespace bench
