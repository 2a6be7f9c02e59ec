#pragma once
// Shared test support: context tags, a client context that trusts a LocalServer, and an observer
// that sees when OpenSSL really frees a session (reference count reaching zero).

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>

#include <tlsresume/testing.hpp>
#include <tlsresume/tlsresume.hpp>

namespace test {

struct TagA {};
struct TagB {};
using CtxA = tlsresume::Context<TagA>;
using CtxB = tlsresume::Context<TagB>;
using ClientA = tlsresume::Client<CtxA>;
using ClientB = tlsresume::Client<CtxB>;

/// A client context that trusts `server`'s CA.
template <class Ctx = CtxA> Ctx client_context_for(const tlsresume::testing::LocalServer& server) {
  auto ctx = Ctx::create();
  ctx.add_trusted_certificate(server.ca_certificate());
  return ctx;
}

/// Observes the final free of sessions: `watch(s)` attaches a token to `s` through an ex_data
/// index of the test's own; its free callback runs only when OpenSSL's reference count of `s`
/// reaches zero (SSL_SESSION_free of the last reference).
class FreeObserver {
 public:
  struct Token {
    std::atomic<bool> freed{false};
  };

  /// Returns a token whose `freed` turns true when `s` is finally freed.
  static std::shared_ptr<Token> watch(SSL_SESSION* s) {
    auto token = std::make_shared<Token>();
    auto* holder = new std::shared_ptr<Token>(token);
    REQUIRE(SSL_SESSION_set_ex_data(s, index(), holder) == 1);
    return token;
  }

 private:
  static int index() {
    static const int idx = CRYPTO_get_ex_new_index(
        CRYPTO_EX_INDEX_SSL_SESSION, 0, nullptr, nullptr,
        // SSL_SESSION_dup copies ex_data: the copy gets no token of its own.
        [](CRYPTO_EX_DATA*, const CRYPTO_EX_DATA*, void** from_d, int, long, void*) -> int {
          *from_d = nullptr;
          return 1;
        },
        [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
          if (auto* holder = static_cast<std::shared_ptr<Token>*>(ptr)) {
            (*holder)->freed = true;
            delete holder;
          }
        });
    return idx;
  }
};

}  // namespace test

/// Every error path must leave OpenSSL's error queue empty.
#define REQUIRE_ERROR_QUEUE_EMPTY() REQUIRE(ERR_peek_error() == 0UL)
