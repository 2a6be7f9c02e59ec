#pragma once
// One RAII handle for every reference-counted OpenSSL object.
//
// `Handle<T>` owns exactly one reference to a `T`. Copying takes another reference through
// `handle_traits<T>::up_ref` (whose failure is checked and reported), destruction gives it back
// through `handle_traits<T>::free`, moving transfers it without touching the count. Ownership is
// spelled out at construction: `adopt(p)` takes over a reference the caller already owns (an
// OpenSSL `get1` / `new` result), `share(p)` adds one (for a borrowed `get0` pointer).

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstddef>
#include <memory>
#include <new>
#include <utility>

#include "tlsresume/error.hpp"
#include "tlsresume/version.hpp"

namespace tlsresume::detail {

/// Per-type operations for `Handle<T>`; specialised next to each C type. A backend other than
/// OpenSSL (wolfSSL, BoringSSL) adds specialisations for its own types.
template <class T> struct handle_traits;

template <> struct handle_traits<SSL_SESSION> {
  static void free(SSL_SESSION* p) noexcept { SSL_SESSION_free(p); }
  static bool up_ref(SSL_SESSION* p) noexcept { return SSL_SESSION_up_ref(p) == 1; }
};
template <> struct handle_traits<SSL_CTX> {
  static void free(SSL_CTX* p) noexcept { SSL_CTX_free(p); }
  static bool up_ref(SSL_CTX* p) noexcept { return SSL_CTX_up_ref(p) == 1; }
};
template <> struct handle_traits<SSL> {
  static void free(SSL* p) noexcept { SSL_free(p); }
  static bool up_ref(SSL* p) noexcept { return SSL_up_ref(p) == 1; }
};
template <> struct handle_traits<X509> {
  static void free(X509* p) noexcept { X509_free(p); }
  static bool up_ref(X509* p) noexcept { return X509_up_ref(p) == 1; }
};
template <> struct handle_traits<EVP_PKEY> {
  static void free(EVP_PKEY* p) noexcept { EVP_PKEY_free(p); }
  static bool up_ref(EVP_PKEY* p) noexcept { return EVP_PKEY_up_ref(p) == 1; }
};
template <> struct handle_traits<BIO> {
  static void free(BIO* p) noexcept { BIO_free_all(p); }
  static bool up_ref(BIO* p) noexcept { return BIO_up_ref(p) == 1; }
};

/// Owns one reference to a reference-counted OpenSSL object. Null is a valid (empty) state:
/// a moved-from handle is empty and may only be destroyed, assigned or tested.
template <class T> class Handle {
 public:
  constexpr Handle() noexcept = default;

  /// Takes over a reference the caller owns (no `up_ref`). `p` may be null.
  [[nodiscard]] static Handle adopt(T* p) noexcept { return Handle(p); }

  /// Adds a reference to `p` with `handle_traits<T>::up_ref`; throws `Error` if that fails.
  [[nodiscard]] static Handle share(T* p) {
    if (p != nullptr && !handle_traits<T>::up_ref(p)) {
      throw_openssl_error("up_ref");
    }
    return Handle(p);
  }

  Handle(const Handle& other) : Handle(share(other.p_)) {}
  Handle(Handle&& other) noexcept : p_(std::exchange(other.p_, nullptr)) {}
  Handle& operator=(const Handle& other) {
    if (this != &other) {
      *this = share(other.p_);
    }
    return *this;
  }
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) {
      reset();
      p_ = std::exchange(other.p_, nullptr);
    }
    return *this;
  }
  ~Handle() { reset(); }

  /// Gives back the reference (`handle_traits<T>::free`) and leaves the handle empty.
  void reset() noexcept {
    if (T* p = std::exchange(p_, nullptr)) {
      handle_traits<T>::free(p);
    }
  }
  /// Hands the reference to the caller, who must free it; the handle is left empty.
  [[nodiscard]] T* release() noexcept { return std::exchange(p_, nullptr); }

  [[nodiscard]] T* get() const noexcept { return p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }
  friend bool operator==(const Handle& a, const Handle& b) noexcept { return a.p_ == b.p_; }

 private:
  explicit Handle(T* p) noexcept : p_(p) {}
  T* p_ = nullptr;
};

/// Deleter for OpenSSL types that are not reference counted (owned once, never copied).
template <auto Free> struct free_with {
  template <class T> void operator()(T* p) const noexcept { Free(p); }
};
template <class T, auto Free> using Unique = std::unique_ptr<T, free_with<Free>>;

/// An allocator that wipes memory with `OPENSSL_cleanse` before giving it back: for buffers that
/// hold session secrets (DER-encoded sessions carry the resumption master secret).
template <class T> struct cleansing_allocator {
  using value_type = T;
  cleansing_allocator() noexcept = default;
  template <class U> cleansing_allocator(const cleansing_allocator<U>&) noexcept {}
  [[nodiscard]] T* allocate(std::size_t n) { return std::allocator<T>{}.allocate(n); }
  void deallocate(T* p, std::size_t n) noexcept {
    OPENSSL_cleanse(p, n * sizeof(T));
    std::allocator<T>{}.deallocate(p, n);
  }
  template <class U> friend bool operator==(const cleansing_allocator&, const cleansing_allocator<U>&) noexcept {
    return true;
  }
};

}  // namespace tlsresume::detail
