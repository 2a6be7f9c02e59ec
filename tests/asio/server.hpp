#pragma once
// An Asio TLS server on 127.0.0.1 for the Asio tests, running on its own io_context thread.
//
// Written once for standalone Asio and Boost.Asio: the including file first includes its Asio
// (io_context, ip/tcp, ssl, read_until, write) and defines the namespace alias `test_net` at
// global scope (`namespace test_net = ::asio;` or `= ::boost::asio;`). Only completion callbacks
// are used, so it compiles where Boost's coroutine support does not.
//
// The server's SSL_CTX is a `tlsresume::testing::LocalServer`'s (its certificates, made at
// construction, and its record of every resumption offer in a ClientHello, `offers()`), wrapped
// in an Asio `ssl::context` that holds its own reference. Per connection it records what *its*
// side saw (`SSL_session_reused`, `SSL_version`) before answering, so a client that has read the
// answer can ask for the record. The protocol is HTTP-like: it reads a request up to the first
// "\r\n\r\n", answers
//     HTTP/1.1 200 OK ... body "server resumed=yes|no\n"
// then shuts down (sends close_notify, waits for the client's), or, made with
// `close_notify = false`, closes the TCP connection without a close_notify.

#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <tlsresume/error.hpp>
#include <tlsresume/testing.hpp>

namespace test_asio {

/// What the server side saw on one connection, in accept order.
struct ServerRecord {
  bool handshake_ok = false;
  bool reused = false;  ///< `SSL_session_reused` on the server's SSL
  int version = 0;      ///< `SSL_version`
  std::string error;    ///< the handshake error, if it failed
};

/// The PEM text of `cert` (`PEM_write_bio_X509`).
inline std::string to_pem(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio == nullptr || PEM_write_bio_X509(bio, cert) != 1) {
    BIO_free(bio);
    tlsresume::throw_openssl_error("PEM_write_bio_X509");
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  return pem;
}

/// Wraps `ctx` in an Asio `ssl::context`, which takes over a reference of its own (`SSL_CTX_up_ref`).
inline test_net::ssl::context asio_context_of(SSL_CTX* ctx) {
  if (SSL_CTX_up_ref(ctx) != 1) {
    tlsresume::throw_openssl_error("SSL_CTX_up_ref");
  }
  return test_net::ssl::context(ctx);
}

class AsioServer {
 public:
  explicit AsioServer(tlsresume::testing::ServerOptions options = {}, bool close_notify = true)
      : close_notify_(close_notify),
        local_(std::move(options)),
        ssl_ctx_(asio_context_of(local_.native_handle())),
        acceptor_(io_, test_net::ip::tcp::endpoint(test_net::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    accept();
    thread_ = std::thread([this] { io_.run(); });
  }
  AsioServer(const AsioServer&) = delete;
  AsioServer& operator=(const AsioServer&) = delete;
  ~AsioServer() {
    io_.stop();
    thread_.join();
  }

  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
  /// The CA a client must trust.
  [[nodiscard]] X509* ca_certificate() const noexcept { return local_.ca_certificate(); }
  [[nodiscard]] std::string ca_pem() const { return to_pem(local_.ca_certificate()); }
  /// The resumption offers of every ClientHello so far (tickets, session ids).
  [[nodiscard]] tlsresume::testing::OfferStats offers() const { return local_.offers(); }
  /// What the server saw on each connection whose handshake ended, in the order they ended.
  [[nodiscard]] std::vector<ServerRecord> records() const {
    std::lock_guard lock(mutex_);
    return records_;
  }

 private:
  struct Connection : std::enable_shared_from_this<Connection> {
    Connection(AsioServer& s, test_net::ip::tcp::socket socket) : server(s), stream(std::move(socket), s.ssl_ctx_) {}

    void start() {
      auto self = shared_from_this();
      stream.async_handshake(test_net::ssl::stream_base::server, [self](const auto& ec) {
        ServerRecord record;
        record.handshake_ok = !ec;
        record.error = ec ? ec.message() : std::string();
        record.reused = !ec && SSL_session_reused(self->stream.native_handle()) == 1;
        record.version = SSL_version(self->stream.native_handle());
        {
          std::lock_guard lock(self->server.mutex_);
          self->server.records_.push_back(record);
        }
        if (!ec) {
          self->read_request(record.reused);
        }
      });
    }

    void read_request(bool reused) {
      auto self = shared_from_this();
      test_net::async_read_until(stream, test_net::dynamic_buffer(request), "\r\n\r\n",
                                 [self, reused](const auto& ec, std::size_t) {
                                   if (!ec) {
                                     self->respond(reused);
                                   }
                                 });
    }

    void respond(bool reused) {
      const std::string body = std::string("server resumed=") + (reused ? "yes" : "no") + "\n";
      response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
                 "\r\nConnection: close\r\n\r\n" + body;
      auto self = shared_from_this();
      test_net::async_write(stream, test_net::buffer(response), [self](const auto& ec, std::size_t) {
        if (ec) {
          return;
        }
        if (self->server.close_notify_) {
          self->stream.async_shutdown([self](const auto&) {});
        } else {
          auto ignored = ec;
          self->stream.lowest_layer().close(ignored);  // no close_notify: the client sees a truncated stream
        }
      });
    }

    AsioServer& server;
    test_net::ssl::stream<test_net::ip::tcp::socket> stream;
    std::string request;
    std::string response;
  };

  void accept() {
    acceptor_.async_accept([this](const auto& ec, test_net::ip::tcp::socket socket) {
      if (ec) {
        return;
      }
      std::make_shared<Connection>(*this, std::move(socket))->start();
      accept();
    });
  }

  const bool close_notify_;
  tlsresume::testing::LocalServer local_;
  test_net::ssl::context ssl_ctx_;
  test_net::io_context io_;
  test_net::ip::tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::vector<ServerRecord> records_;
};

}  // namespace test_asio
