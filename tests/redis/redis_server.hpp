#pragma once
// A real redis-server for tests and benchmarks: started with posix_spawn on 127.0.0.1 on a free
// port (and optionally a unix socket), with no persistence, in a temporary directory; stopped,
// restarted on the same port, paused (SIGSTOP) and resumed (SIGCONT) on demand. Also a small
// blocking hiredis client (`RawRedis`) to look at and tamper with what the store holds.
//
// The server binary: the constructor's argument, else $TLSRESUME_REDIS_SERVER, else
// "redis-server" on the PATH.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

extern char** environ;

namespace redis_test {

/// A blocking hiredis connection for test code (not the store under test).
class RawRedis {
 public:
  struct ReplyFree {
    void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
  };
  using Reply = std::unique_ptr<redisReply, ReplyFree>;

  RawRedis(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout = std::chrono::milliseconds(2000)) {
    const timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    c_ = redisConnectWithTimeout(host.c_str(), port, tv);
    if (c_ != nullptr && c_->err == 0) {
      redisSetTimeout(c_, tv);
    }
  }
  RawRedis(const RawRedis&) = delete;
  RawRedis& operator=(const RawRedis&) = delete;
  ~RawRedis() {
    if (c_ != nullptr) {
      redisFree(c_);
    }
  }
  [[nodiscard]] bool ok() const noexcept { return c_ != nullptr && c_->err == 0; }

  /// Runs one command (binary-safe arguments); null on an I/O error.
  Reply command(const std::vector<std::string>& args) {
    if (!ok()) {
      return nullptr;
    }
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    return Reply(static_cast<redisReply*>(redisCommandArgv(c_, static_cast<int>(argv.size()), argv.data(), lens.data())));
  }
  /// The integer reply of a command, or -1.
  long long integer(const std::vector<std::string>& args) {
    auto r = command(args);
    return r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
  }
  /// The string reply of a command (bulk or status), or nothing.
  std::optional<std::string> string(const std::vector<std::string>& args) {
    auto r = command(args);
    if (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)) {
      return std::string(r->str, r->len);
    }
    return std::nullopt;
  }
  /// The elements of an array reply (strings only).
  std::vector<std::string> strings(const std::vector<std::string>& args) {
    std::vector<std::string> out;
    auto r = command(args);
    if (r && r->type == REDIS_REPLY_ARRAY) {
      for (std::size_t i = 0; i < r->elements; ++i) {
        if (r->element[i]->type == REDIS_REPLY_STRING) {
          out.emplace_back(r->element[i]->str, r->element[i]->len);
        }
      }
    }
    return out;
  }

 private:
  redisContext* c_ = nullptr;
};

/// A port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close).
inline std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    throw std::runtime_error("socket");
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("bind/getsockname");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

/// The redis-server binary to run.
inline std::string redis_server_path(const std::string& given = {}) {
  if (!given.empty()) {
    return given;
  }
  if (const char* env = std::getenv("TLSRESUME_REDIS_SERVER"); env != nullptr && *env != '\0') {
    return env;
  }
  return "redis-server";
}

/// How to start a `RedisServer`.
struct RedisServerOptions {
  std::string binary;                   ///< empty: redis_server_path()
  bool unix_socket = false;             ///< also listen on a unix socket in the temporary directory
  std::vector<std::string> extra_args;  ///< e.g. {"--requirepass", "secret"}
};

/// One redis-server process, owned by this object (killed by its destructor).
class RedisServer {
 public:
  using Options = RedisServerOptions;

  RedisServer() : RedisServer(Options{}) {}
  explicit RedisServer(Options options) : options_(std::move(options)) {
    binary_ = redis_server_path(options_.binary);
    char dir[] = "/tmp/tlsresume-redis-XXXXXX";
    if (::mkdtemp(dir) == nullptr) {
      throw std::runtime_error("mkdtemp");
    }
    dir_ = dir;
    for (int attempt = 0;; ++attempt) {
      port_ = free_port();
      if (start_once()) {
        return;
      }
      if (attempt == 5) {
        throw std::runtime_error("redis-server did not start (" + binary_ + "); see " + dir_ + "/redis.log");
      }
    }
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;
  ~RedisServer() {
    kill_now();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
  [[nodiscard]] std::string host() const { return "127.0.0.1"; }
  [[nodiscard]] std::string unix_socket() const { return options_.unix_socket ? dir_ + "/redis.sock" : std::string(); }
  [[nodiscard]] bool running() const noexcept { return pid_ > 0; }

  /// Stops the server (SIGTERM, then SIGKILL after 5 s) and waits for it.
  void stop() {
    if (pid_ <= 0) {
      return;
    }
    ::kill(pid_, SIGCONT);
    ::kill(pid_, SIGTERM);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > until) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    pid_ = -1;
  }
  /// Starts it again on the same port (an empty data set: nothing is saved); throws if it does
  /// not answer PING within 10 s.
  void start() {
    if (pid_ > 0) {
      return;
    }
    if (!start_once()) {
      throw std::runtime_error("redis-server did not restart on port " + std::to_string(port_));
    }
  }
  void restart() {
    stop();
    start();
  }
  /// SIGSTOP: the server keeps its sockets (the kernel still accepts connections) but answers
  /// nothing: a black hole.
  void pause() { ::kill(pid_, SIGSTOP); }
  /// SIGCONT.
  void resume() { ::kill(pid_, SIGCONT); }

 private:
  bool start_once() {
    std::vector<std::string> args{binary_,         "--port",      std::to_string(port_), "--bind",   "127.0.0.1",
                                  "--save",        "",            "--appendonly",        "no",       "--dir",
                                  dir_,            "--logfile",   dir_ + "/redis.log",   "--daemonize", "no",
                                  "--loglevel",    "warning"};
    if (options_.unix_socket) {
      args.insert(args.end(), {"--unixsocket", dir_ + "/redis.sock", "--unixsocketperm", "700"});
    }
    args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());
    std::vector<char*> argv;
    for (std::string& a : args) {
      argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    const std::string err = dir_ + "/stderr.log";
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    pid_t pid = -1;
    const int r = ::posix_spawnp(&pid, binary_.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (r != 0) {
      throw std::runtime_error("posix_spawn " + binary_ + ": " + std::to_string(r));
    }
    pid_ = pid;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < until) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;  // exited: port taken, or a bad option
        return false;
      }
      RawRedis probe(host(), port_, std::chrono::milliseconds(200));
      if (probe.ok()) {
        std::vector<std::string> ping{"PING"};
        for (std::size_t i = 0; i + 1 < options_.extra_args.size(); ++i) {
          if (options_.extra_args[i] == "--requirepass") {
            ping = {"AUTH", options_.extra_args[i + 1]};
          }
        }
        if (auto reply = probe.string(ping); reply && (*reply == "PONG" || *reply == "OK")) {
          return true;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill_now();
    return false;
  }

  void kill_now() noexcept {
    if (pid_ > 0) {
      ::kill(pid_, SIGCONT);
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
    }
  }

  Options options_;
  std::string binary_;
  std::string dir_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace redis_test
