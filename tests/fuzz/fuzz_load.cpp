// libFuzzer target for the sessions-file loader (tlsresume::detail::parse_session_file).
//
// Built only with `-Dfuzz=true` by clang with -fsanitize=fuzzer (scripts/test.sh fuzz), and with
// TLSRESUME_FUZZING defined: the file-level integrity check (SHA-256 / HMAC trailer) is skipped so
// that mutated inputs reach the header and record parsers, the AES-256-GCM open of encrypted
// records (with the fixed key of fuzz_key.hpp), d2i_SSL_SESSION and the field checks. Any input
// must end in a parsed file or a PersistError, never a crash, leak, hang or unbounded allocation,
// and must leave OpenSSL's error queue empty.

#include <openssl/err.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include <tlsresume/persist.hpp>

#include "fuzz_key.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const tlsresume::EncryptionKey key = fuzz::fixed_key();
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  tlsresume::detail::LoadLimits limits;
  limits.max_file_size = 1u << 20;
  limits.max_records = 4096;
  for (bool with_key : {false, true}) {
    try {
      const auto parsed = tlsresume::detail::parse_session_file(
          bytes, with_key ? std::span<const tlsresume::EncryptionKey>(&key, 1) : std::span<const tlsresume::EncryptionKey>(),
          limits, /*verify_integrity=*/false);
      // Use what was parsed, as load_sessions would: every record owns a session.
      for (const auto& record : parsed.records) {
        if (!record.session) {
          std::abort();
        }
      }
    } catch (const tlsresume::Error&) {
      // a clear error is the expected outcome for most inputs
    }
    if (ERR_peek_error() != 0) {
      std::abort();  // the loader must leave OpenSSL's error queue empty
    }
  }
  return 0;
}
