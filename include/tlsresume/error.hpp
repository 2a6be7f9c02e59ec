#pragma once
// The one error type of tlsresume.
//
// Every failure is reported by throwing `tlsresume::Error`, a `std::system_error`. Its `code()`
// is either one of our own `errc` values (category "tlsresume": misuse such as a session from
// another context) or the first OpenSSL error of the queue (category "openssl", whose message is
// OpenSSL's reason string). `what()` names the operation and holds the text of the *whole*
// OpenSSL error queue; the queue is empty afterwards. A cache miss, or a handshake that did not
// resume, is not an error and never throws.

#include <openssl/err.h>

#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "tlsresume/version.hpp"

namespace tlsresume {

/// tlsresume's own error conditions.
enum class errc {
  openssl_error = 1,     ///< an OpenSSL call failed but left no error in the queue
  wrong_context,         ///< a session bound to another context instance was given to a client
  unbound_session,       ///< a session without a context was used where a bound one is needed
  invalid_session,       ///< session bytes are empty, truncated, corrupted or have trailing data
  context_mismatch,      ///< an `SSL` or `SSL_CTX` does not belong to the context it was paired with
  invalid_argument,      ///< a value outside what the API accepts
  connection_closed,     ///< the peer closed the connection
  handshake_not_done,    ///< the call needs a completed handshake
  bad_file,              ///< a session or key file is malformed, corrupted, oversized or for another key (persist.hpp)
};

namespace detail {
class tlsresume_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "tlsresume"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::openssl_error: return "OpenSSL call failed without an error in its queue";
      case errc::wrong_context: return "session is bound to another context instance";
      case errc::unbound_session: return "session is not bound to a context";
      case errc::invalid_session: return "invalid session bytes";
      case errc::context_mismatch: return "object belongs to another SSL_CTX";
      case errc::invalid_argument: return "invalid argument";
      case errc::connection_closed: return "connection closed by peer";
      case errc::handshake_not_done: return "handshake not completed";
      case errc::bad_file: return "bad session file";
    }
    return "unknown tlsresume error";
  }
};

class openssl_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "openssl"; }
  std::string message(int value) const override {
    const auto code = static_cast<unsigned long>(static_cast<unsigned int>(value));
    if (ERR_SYSTEM_ERROR(code)) {
      return std::system_category().message(ERR_GET_REASON(code));  // errno kept by OpenSSL
    }
    const char* reason = ERR_reason_error_string(code);
    return reason != nullptr ? reason : "OpenSSL error " + std::to_string(value);
  }
};
}  // namespace detail

/// The category of `errc` values.
inline const std::error_category& tlsresume_category() noexcept {
  static const detail::tlsresume_category_impl category;
  return category;
}
/// The category of OpenSSL error codes (`ERR_get_error` values); `message()` is the reason string.
inline const std::error_category& openssl_category() noexcept {
  static const detail::openssl_category_impl category;
  return category;
}
/// Makes a `std::error_code` of `e` in `tlsresume_category()` (no OpenSSL call); found by ADL, so
/// an `errc` converts to `std::error_code` and compares with one.
inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), tlsresume_category()};
}

/// The exception every tlsresume function throws. `what()` is exactly the text it was built
/// with: "<operation>: <reason>[: <detail>][: <OpenSSL queue>]" for our own errors and
/// "<operation> failed: <OpenSSL queue>" for OpenSSL failures (unlike `std::system_error`, the
/// code's message is not appended a second time).
class Error : public std::system_error {
 public:
  /// Makes the error with `code` and the complete `what()` text (no OpenSSL call; `throw_error` and
  /// `throw_openssl_error` drain the OpenSSL error queue into `what`).
  Error(std::error_code code, std::string what) : std::system_error(code), what_(std::move(what)) {}
  /// The text given to the constructor, unchanged.
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  std::string what_;
};

/// Empties the calling thread's OpenSSL error queue and returns its text, oldest first, entries
/// separated by "; ". Each entry is `ERR_error_string_n` plus any data string OpenSSL attached.
/// `first` receives the oldest error code (0 if the queue was empty).
inline std::string drain_openssl_errors(unsigned long* first = nullptr) {
  std::string text;
  if (first != nullptr) {
    *first = 0;
  }
  const char* data = nullptr;
  int flags = 0;
  while (unsigned long code = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) {
    if (first != nullptr && *first == 0) {
      *first = code;
    }
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    if (!text.empty()) {
      text += "; ";
    }
    text += buf;
    if (data != nullptr && (flags & ERR_TXT_STRING) != 0 && *data != '\0') {
      text += " (";
      text += data;
      text += ')';
    }
  }
  return text;
}

/// Throws an `Error` with our own code, after draining (and appending) any OpenSSL errors so
/// the queue is left empty.
[[noreturn]] inline void throw_error(errc e, std::string_view operation, std::string_view detail = {}) {
  std::string what(operation);
  what += ": ";
  what += make_error_code(e).message();
  if (!detail.empty()) {
    what += ": ";
    what += detail;
  }
  if (std::string queue = drain_openssl_errors(); !queue.empty()) {
    what += ": ";
    what += queue;
  }
  throw Error(make_error_code(e), what);
}

/// Throws an `Error` for a failed OpenSSL call, carrying the whole error queue (which is left
/// empty). The code is the oldest queued error in `openssl_category()`, or `errc::openssl_error`.
[[noreturn]] inline void throw_openssl_error(std::string_view operation) {
  unsigned long first = 0;
  std::string queue = drain_openssl_errors(&first);
  std::string what(operation);
  what += " failed";
  if (first == 0) {
    throw Error(make_error_code(errc::openssl_error), what + ": " + make_error_code(errc::openssl_error).message());
  }
  what += ": ";
  what += queue;
  throw Error(std::error_code(static_cast<int>(first), openssl_category()), what);
}

}  // namespace tlsresume

template <> struct std::is_error_code_enum<tlsresume::errc> : std::true_type {};
