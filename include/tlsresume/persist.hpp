#pragma once
// Saving a `SessionCache` to a file and loading it back, so a restarted process resumes instead
// of paying full handshakes. The format is described byte by byte in docs/persistence.md.
//
// A file holds one record per session: the session's DER (`i2d_SSL_SESSION`), its expiry, the
// time of the full handshake that started its resumption chain, its protocol version, ALPN and
// max early data, filed under a *key id*: HMAC-SHA-256 of `PeerKey::encode()` under the file's
// key-id secret, so the file holds no `PeerKey` in clear. The key-id secret is
//   - the file's random salt (written in the header) for a file without encryption: it only
//     obscures host names, since anyone can compute the id of a guessed host:port;
//   - HKDF-SHA-256(encryption key, salt = file salt, info = "tlsresume key id v1") for a file
//     encrypted with an `EncryptionKey`: then ids reveal nothing without the key.
// Records of an encrypted file are sealed with AES-256-GCM under a per-file key derived the same
// way (info "tlsresume record key v1"), with a fresh random 12-byte nonce each; the file ends
// with an HMAC-SHA-256 (key: info "tlsresume file mac v1") over header and records, so a
// removed, reordered, replayed or truncated record is detected. A file without encryption ends
// with a SHA-256 of header and records: it detects accidents (a torn or bit-flipped file), not
// an attacker, who can recompute it.
//
// A session file is as sensitive as a private key: each session holds its resumption secret,
// and whoever can *write* the file can plant sessions whose secret they know, which a resumed
// handshake accepts without checking any certificate. Keep it 0600 (`save_sessions` writes it
// so), in a directory only the owner can write; `load_sessions` refuses a file writable by group
// or others. Encrypt to protect it at rest and to authenticate it.
//
// Loading validates the whole file (structure, integrity, every record down to its DER) before
// anything reaches the cache: a bad file throws `PersistError` and leaves the cache unchanged.
// Loaded sessions wait in the cache as imports (`SessionCache::import`) until a connection for a
// key with the same id claims them. Load a file once, into a cache whose process does not still
// use the sessions that were saved: a TLS 1.3 ticket must be offered only once (RFC 8446 §C.4).
//
// `TLSRESUME_FUZZING`: defined only in a fuzzing build, makes `load_sessions` skip the
// file's integrity check (SHA-256 or HMAC trailer) so a fuzzer reaches the record parser;
// `detail::parse_session_file` is the entry point a fuzz target calls directly. Never define it
// in a normal build.

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "tlsresume/cache.hpp"
#include "tlsresume/context.hpp"
#include "tlsresume/error.hpp"
#include "tlsresume/handle.hpp"
#include "tlsresume/peer_key.hpp"
#include "tlsresume/session.hpp"

namespace tlsresume {

/// A file (or key file) that cannot be used: malformed, truncated, corrupted, of another format
/// version, oversized, written with another key, or holding a session OpenSSL refuses. `code()`
/// is `errc::bad_file`; `what()` is "FILE: offset N: REASON", where N is the byte offset at which
/// the problem was found. Thrown by `load_sessions` and `EncryptionKey::from_file`; failing to
/// open or read a file is reported as a plain `Error` with the `errno` code instead.
class PersistError : public Error {
 public:
  /// Makes the error (no OpenSSL call; the caller drains OpenSSL's queue into `reason`).
  PersistError(const std::filesystem::path& file, std::uint64_t offset, std::string reason)
      : Error(make_error_code(errc::bad_file), file.string() + ": offset " + std::to_string(offset) + ": " + reason),
        info_(std::make_shared<const Info>(Info{file, offset, std::move(reason)})) {}

  /// The file (as given to the call that threw). No OpenSSL call, here and below.
  [[nodiscard]] const std::filesystem::path& file() const noexcept { return info_->file; }
  /// The byte offset in the file at which the problem was found.
  [[nodiscard]] std::uint64_t offset() const noexcept { return info_->offset; }
  /// What is wrong, without the file name and offset.
  [[nodiscard]] const std::string& reason() const noexcept { return info_->reason; }

 private:
  struct Info {
    std::filesystem::path file;
    std::uint64_t offset;
    std::string reason;
  };
  std::shared_ptr<const Info> info_;
};

/// A 256-bit key that encrypts and authenticates session files (AES-256-GCM records, an
/// HMAC-SHA-256 trailer; both under keys derived per file with HKDF-SHA-256). `id` names the key
/// in a file's header so that keys can be rotated: `LoadOptions::keys` may hold the new key and
/// the old ones, and the file's id picks one. The bytes are wiped (`OPENSSL_cleanse`) when the
/// object is destroyed.
struct EncryptionKey {
  std::array<std::byte, 32> bytes{};
  /// The key's identifier in file headers; 0 = derived from the key (`identifier()`).
  std::uint32_t id = 0;

  /// Reads a key file: exactly 32 raw bytes, or 64 hexadecimal digits (either case) with an
  /// optional trailing newline. `id` becomes the first 4 bytes (big-endian) of SHA-256 of the key
  /// (`EVP_Digest`). Checks the size with `fstat` before reading; the bytes read are wiped after
  /// use. Throws `PersistError` (with the offending offset) for any other content, or for a key
  /// of all zeros; `Error` with the `errno` code if the file cannot be opened or read. Takes no
  /// ownership of anything; OpenSSL's error queue is left empty.
  static EncryptionKey from_file(const std::filesystem::path& file);

  /// `id`, or if it is 0, the first 4 bytes (big-endian) of SHA-256 of `bytes` (`EVP_Digest`).
  [[nodiscard]] std::uint32_t identifier() const;

  /// Wipes `bytes` (`OPENSSL_cleanse`).
  ~EncryptionKey() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
};

/// Options of `save_sessions`.
struct SaveOptions {
  /// Encrypts and authenticates the file with this key (borrowed for the call); null = a file
  /// without encryption, integrity-checked only.
  const EncryptionKey* key = nullptr;
  /// Also saves sessions whose `PeerKey::config()` presents a client certificate
  /// (`ConfigFingerprint::has_client_identity()`); they are skipped by default.
  bool include_client_certificate_sessions = false;
};

/// Options of `load_sessions`.
struct LoadOptions {
  /// Keys an encrypted file may have been written with (borrowed for the call); the header's key
  /// identifier picks the one. Must be empty for a file without encryption.
  std::span<const EncryptionKey> keys;
  /// A larger file is refused before it is read (`fstat`).
  std::uintmax_t max_file_size = 64u << 20;
  /// A file whose header announces more records is refused before they are parsed.
  std::size_t max_records = 1u << 20;
};

/// What `save_sessions` wrote.
struct SaveReport {
  std::size_t saved = 0;                    ///< records written
  std::size_t skipped_client_identity = 0;  ///< live sessions of a client-certificate configuration, not written
  std::size_t skipped_other_secret = 0;     ///< waiting imports filed under another key-id secret, not written
  std::uintmax_t bytes = 0;                 ///< size of the file written
};

/// What `load_sessions` did with a valid file's records.
struct LoadReport {
  std::size_t loaded = 0;   ///< records imported into the cache (`SessionCache::import` accepted them)
  std::size_t expired = 0;  ///< records dropped as expired by the cache's clock
  std::size_t refused = 0;  ///< records `SessionCache::import` refused (not resumable, dated in the future, too many waiting)
};

namespace detail {

/// Limits `parse_session_file` enforces (from `LoadOptions`).
struct LoadLimits {
  std::uintmax_t max_file_size = 64u << 20;
  std::size_t max_records = 1u << 20;
};

// ---- format constants (docs/persistence.md) -----------------------------------------------------

inline constexpr std::array<char, 8> file_magic{'T', 'L', 'S', 'R', 'E', 'S', 'U', 'M'};
inline constexpr std::uint16_t file_version = 1;
inline constexpr std::uint16_t flag_encrypted = 1;
inline constexpr std::size_t header_size = 52;         // magic 8, version 2, flags 2, key identifier 4, salt 32, count 4
inline constexpr std::size_t header_aad_size = 48;     // the header without the record count
inline constexpr std::size_t trailer_size = 32;        // SHA-256 or HMAC-SHA-256
inline constexpr std::size_t nonce_size = 12;
inline constexpr std::size_t tag_size = 16;
inline constexpr std::size_t body_fixed_size = 8 + 8 + 2 + 4 + 1 + 4;  // expiry, original, version, early data, ALPN length, DER length
inline constexpr std::size_t min_plain_record = 4 + 32 + body_fixed_size + 1;
inline constexpr std::size_t min_sealed_record = 4 + 32 + nonce_size + body_fixed_size + 1 + tag_size;
inline constexpr std::string_view info_key_id = "tlsresume key id v1";
inline constexpr std::string_view info_record_key = "tlsresume record key v1";
inline constexpr std::string_view info_file_mac = "tlsresume file mac v1";

/// 32 secret bytes, wiped (`OPENSSL_cleanse`) on destruction.
struct Secret32 {
  std::array<std::byte, 32> bytes{};
  Secret32() = default;
  Secret32(const Secret32&) = default;
  Secret32& operator=(const Secret32&) = default;
  ~Secret32() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
};

inline const unsigned char* uc(const std::byte* p) noexcept { return reinterpret_cast<const unsigned char*>(p); }
inline unsigned char* uc(std::byte* p) noexcept { return reinterpret_cast<unsigned char*>(p); }

// ---- buffers and big-endian encoding ----------------------------------------------------------------

/// A fixed-size byte buffer for secrets (file contents, DER sessions, plaintexts), left
/// uninitialised when made and wiped with `OPENSSL_cleanse` when destroyed. Unlike `SecretBytes`
/// it never reallocates (so never leaves unwiped copies) and copies with `memcpy`.
class SecretBuffer {
 public:
  SecretBuffer() = default;
  explicit SecretBuffer(std::size_t capacity)
      : data_(capacity != 0 ? new std::byte[capacity] : nullptr), size_(capacity), capacity_(capacity) {}
  SecretBuffer(SecretBuffer&& other) noexcept
      : data_(std::move(other.data_)), size_(std::exchange(other.size_, 0)), capacity_(std::exchange(other.capacity_, 0)) {}
  SecretBuffer& operator=(SecretBuffer&& other) noexcept {
    if (this != &other) {
      wipe();
      data_ = std::move(other.data_);
      size_ = std::exchange(other.size_, 0);
      capacity_ = std::exchange(other.capacity_, 0);
    }
    return *this;
  }
  SecretBuffer(const SecretBuffer&) = delete;
  SecretBuffer& operator=(const SecretBuffer&) = delete;
  ~SecretBuffer() { wipe(); }

  [[nodiscard]] std::byte* data() noexcept { return data_.get(); }
  [[nodiscard]] const std::byte* data() const noexcept { return data_.get(); }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// Shrinks the visible size (the capacity stays, and is wiped on destruction).
  void shrink(std::size_t n) noexcept { size_ = std::min(n, size_); }
  [[nodiscard]] std::span<std::byte> span() noexcept { return {data_.get(), size_}; }
  [[nodiscard]] std::span<const std::byte> span() const noexcept { return {data_.get(), size_}; }
  operator std::span<const std::byte>() const noexcept { return span(); }

 private:
  void wipe() noexcept {
    if (data_) {
      OPENSSL_cleanse(data_.get(), capacity_);
    }
  }
  std::unique_ptr<std::byte[]> data_;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

/// A buffer OpenSSL allocated (an `i2d` result), released with `OPENSSL_clear_free` (wiped).
class OpenSslSecret {
 public:
  OpenSslSecret() = default;
  OpenSslSecret(unsigned char* p, std::size_t n) noexcept : p_(p), n_(n) {}
  OpenSslSecret(OpenSslSecret&& other) noexcept : p_(std::exchange(other.p_, nullptr)), n_(std::exchange(other.n_, 0)) {}
  OpenSslSecret& operator=(OpenSslSecret&& other) noexcept {
    if (this != &other) {
      OPENSSL_clear_free(p_, n_);
      p_ = std::exchange(other.p_, nullptr);
      n_ = std::exchange(other.n_, 0);
    }
    return *this;
  }
  OpenSslSecret(const OpenSslSecret&) = delete;
  OpenSslSecret& operator=(const OpenSslSecret&) = delete;
  ~OpenSslSecret() { OPENSSL_clear_free(p_, n_); }
  [[nodiscard]] std::span<const std::byte> span() const noexcept { return {reinterpret_cast<const std::byte*>(p_), n_}; }

 private:
  unsigned char* p_ = nullptr;
  std::size_t n_ = 0;
};

/// `i2d_SSL_SESSION` into a buffer OpenSSL allocates (one encoding pass, so the length cannot
/// change between measuring and writing).
inline OpenSslSecret session_der(const SSL_SESSION* s) {
  unsigned char* der = nullptr;
  const int len = i2d_SSL_SESSION(const_cast<SSL_SESSION*>(s), &der);
  if (len <= 0 || der == nullptr) {
    OPENSSL_free(der);
    throw_openssl_error("i2d_SSL_SESSION");
  }
  return OpenSslSecret(der, static_cast<std::size_t>(len));
}

/// Writes into a buffer of the right size, computed beforehand; overflowing it is a bug.
class ByteWriter {
 public:
  explicit ByteWriter(std::span<std::byte> out) noexcept : out_(out) {}
  void be(std::uint64_t v, std::size_t bytes) {
    std::byte* p = reserve(bytes);
    for (std::size_t i = 0; i < bytes; ++i) {
      p[i] = static_cast<std::byte>((v >> (8 * (bytes - 1 - i))) & 0xffU);
    }
  }
  void bytes(std::span<const std::byte> b) {
    std::byte* p = reserve(b.size());
    if (!b.empty()) {
      std::memcpy(p, b.data(), b.size());
    }
  }
  /// Hands out the next `n` bytes for the caller to fill.
  std::byte* reserve(std::size_t n) {
    if (n > out_.size() - pos_) {
      throw_error(errc::invalid_argument, "save_sessions", "internal error: record sizes changed while encoding");
    }
    std::byte* p = out_.data() + pos_;
    pos_ += n;
    return p;
  }
  [[nodiscard]] std::size_t position() const noexcept { return pos_; }

 private:
  std::span<std::byte> out_;
  std::size_t pos_ = 0;
};

inline std::uint64_t get_be(const std::byte* p, std::size_t bytes) noexcept {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < bytes; ++i) {
    v = (v << 8) | std::to_integer<std::uint64_t>(p[i]);
  }
  return v;
}
inline void patch_be(std::byte* p, std::uint64_t v, std::size_t bytes) noexcept {
  for (std::size_t i = bytes; i-- > 0;) {
    p[bytes - 1 - i] = static_cast<std::byte>((v >> (8 * i)) & 0xffU);
  }
}

/// Whole seconds since the Unix epoch (floored).
inline std::int64_t to_unix_seconds(std::chrono::system_clock::time_point t) noexcept {
  return std::chrono::floor<std::chrono::seconds>(t).time_since_epoch().count();
}
/// The time point of `s` seconds since the epoch, clamped to `system_clock`'s range.
inline std::chrono::system_clock::time_point from_unix_seconds(std::int64_t s) noexcept {
  using tp = std::chrono::system_clock::time_point;
  const auto hi = std::chrono::floor<std::chrono::seconds>(tp::max()).time_since_epoch().count();
  const auto lo = std::chrono::ceil<std::chrono::seconds>(tp::min()).time_since_epoch().count();
  if (s >= hi) {
    return tp::max();
  }
  if (s <= lo) {
    return tp::min();
  }
  return tp(std::chrono::duration_cast<tp::duration>(std::chrono::seconds(s)));
}

// ---- cryptography ------------------------------------------------------------------------------

/// The HKDF algorithm, fetched once per process (`EVP_KDF_fetch(NULL, "HKDF", NULL)`; never freed).
inline EVP_KDF* hkdf_kdf() {
  static EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  if (kdf == nullptr) {
    throw_openssl_error("EVP_KDF_fetch(HKDF)");
  }
  return kdf;
}
/// AES-256-GCM, fetched once per process (`EVP_CIPHER_fetch`; never freed).
inline EVP_CIPHER* aes_256_gcm() {
  static EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  if (cipher == nullptr) {
    throw_openssl_error("EVP_CIPHER_fetch(AES-256-GCM)");
  }
  return cipher;
}

/// HKDF-SHA-256 (`EVP_KDF_derive`) of `key` with `salt` and `info`, 32 bytes.
inline Secret32 hkdf_sha256(std::span<const std::byte, 32> key, std::span<const std::byte, 32> salt,
                            std::string_view info) {
  const Unique<EVP_KDF_CTX, &EVP_KDF_CTX_free> ctx(EVP_KDF_CTX_new(hkdf_kdf()));
  if (!ctx) {
    throw_openssl_error("EVP_KDF_CTX_new(HKDF)");
  }
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<std::byte*>(key.data()), key.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<std::byte*>(salt.data()), salt.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(info.data()), info.size()),
      OSSL_PARAM_construct_end(),
  };
  Secret32 out;
  if (EVP_KDF_derive(ctx.get(), uc(out.bytes.data()), out.bytes.size(), params) != 1) {
    throw_openssl_error("EVP_KDF_derive(HKDF-SHA256)");
  }
  return out;
}

/// The keys of one file, derived from an `EncryptionKey` and the file's salt (or, without a key,
/// the salt itself as the key-id secret).
struct FileKeys {
  KeyIdSecret id_secret;
  Secret32 record_key;  // AES-256-GCM, encrypted files only
  Secret32 mac_key;     // HMAC-SHA-256 trailer, encrypted files only
  bool encrypted = false;

  FileKeys() = default;
  FileKeys(const FileKeys&) = default;
  FileKeys& operator=(const FileKeys&) = default;
  ~FileKeys() { OPENSSL_cleanse(id_secret.bytes.data(), id_secret.bytes.size()); }

  static FileKeys plain(std::span<const std::byte, 32> salt) {
    FileKeys k;
    std::copy(salt.begin(), salt.end(), k.id_secret.bytes.begin());
    return k;
  }
  static FileKeys derive(const EncryptionKey& key, std::span<const std::byte, 32> salt) {
    FileKeys k;
    k.encrypted = true;
    k.id_secret.bytes = hkdf_sha256(key.bytes, salt, info_key_id).bytes;
    k.record_key = hkdf_sha256(key.bytes, salt, info_record_key);
    k.mac_key = hkdf_sha256(key.bytes, salt, info_file_mac);
    return k;
  }
  /// The trailer over `data` (header and records): SHA-256, or HMAC-SHA-256 under `mac_key`.
  [[nodiscard]] Sha256 trailer(std::span<const std::byte> data) const {
    return encrypted ? hmac_sha256(mac_key.bytes, data) : sha256(data);
  }
};

/// AES-256-GCM seal (`EVP_EncryptInit_ex2`, `EVP_EncryptUpdate` for the AAD and the plaintext,
/// `EVP_EncryptFinal_ex`, `EVP_CTRL_AEAD_GET_TAG`): writes nonce || ciphertext || tag. The nonce
/// is fresh from `RAND_bytes`.
inline void seal(EVP_CIPHER_CTX* ctx, const Secret32& key, std::span<const std::byte> aad,
                 std::span<const std::byte> plaintext, ByteWriter& out) {
  std::byte* nonce = out.reserve(nonce_size);
  if (RAND_bytes(uc(nonce), static_cast<int>(nonce_size)) != 1) {
    throw_openssl_error("RAND_bytes(nonce)");
  }
  std::byte* ciphertext = out.reserve(plaintext.size());
  std::byte* tag = out.reserve(tag_size);
  int len = 0;
  int final_len = 0;
  if (plaintext.size() > static_cast<std::size_t>(INT_MAX) ||
      EVP_EncryptInit_ex2(ctx, aes_256_gcm(), uc(key.bytes.data()), uc(nonce), nullptr) != 1 ||
      EVP_EncryptUpdate(ctx, nullptr, &len, uc(aad.data()), static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx, uc(ciphertext), &len, uc(plaintext.data()), static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx, uc(ciphertext + len), &final_len) != 1 ||
      static_cast<std::size_t>(len + final_len) != plaintext.size() ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(tag_size), tag) != 1) {
    throw_openssl_error("AES-256-GCM encrypt");
  }
}

/// AES-256-GCM open (`EVP_DecryptInit_ex2`, `EVP_DecryptUpdate`, `EVP_CTRL_AEAD_SET_TAG`,
/// `EVP_DecryptFinal_ex`) of nonce || ciphertext || tag into the start of `out` (at least the
/// ciphertext's size); returns the plaintext, or an empty span if authentication fails (what was
/// written is then wiped).
inline std::span<const std::byte> open_sealed(EVP_CIPHER_CTX* ctx, const Secret32& key, std::span<const std::byte> aad,
                                              std::span<const std::byte> sealed, std::span<std::byte> out) {
  if (sealed.size() < nonce_size + tag_size || sealed.size() - nonce_size - tag_size > static_cast<std::size_t>(INT_MAX) ||
      out.size() < sealed.size() - nonce_size - tag_size) {
    return {};
  }
  const auto nonce = sealed.first(nonce_size);
  const auto ciphertext = sealed.subspan(nonce_size, sealed.size() - nonce_size - tag_size);
  std::array<std::byte, tag_size> tag{};
  std::copy(sealed.end() - static_cast<std::ptrdiff_t>(tag_size), sealed.end(), tag.begin());
  int len = 0;
  int final_len = 0;
  const bool ok =
      EVP_DecryptInit_ex2(ctx, aes_256_gcm(), uc(key.bytes.data()), uc(nonce.data()), nullptr) == 1 &&
      EVP_DecryptUpdate(ctx, nullptr, &len, uc(aad.data()), static_cast<int>(aad.size())) == 1 &&
      EVP_DecryptUpdate(ctx, uc(out.data()), &len, uc(ciphertext.data()), static_cast<int>(ciphertext.size())) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(tag_size), tag.data()) == 1 &&
      EVP_DecryptFinal_ex(ctx, uc(out.data() + len), &final_len) == 1 &&
      static_cast<std::size_t>(len + final_len) == ciphertext.size();
  if (!ok) {
    OPENSSL_cleanse(out.data(), ciphertext.size());
    return {};
  }
  return out.first(ciphertext.size());
}

/// The AAD of a sealed record: the header without its record count (magic, version, flags, key
/// identifier, salt), then the record's key id.
inline std::array<std::byte, header_aad_size + 32> record_aad(std::span<const std::byte> header, const KeyId& id) {
  std::array<std::byte, header_aad_size + 32> aad{};
  std::copy_n(header.begin(), header_aad_size, aad.begin());
  std::copy(id.begin(), id.end(), aad.begin() + header_aad_size);
  return aad;
}

// ---- derived key-id secrets seen in this process -----------------------------------------------

/// Remembers which salt made which derived key-id secret (by SHA-256 of the secret; the secret
/// itself is not kept), so that a save with a key can reuse the salt of a loaded file and keep
/// its waiting imports savable. Bounded: the oldest of `capacity` entries is forgotten first.
class DerivedSecrets {
 public:
  static constexpr std::size_t capacity = 1024;
  static DerivedSecrets& instance() {
    static DerivedSecrets registry;
    return registry;
  }
  void remember(const KeyIdSecret& secret, std::span<const std::byte, 32> salt) {
    const Sha256 h = sha256(secret.bytes);
    std::array<std::byte, 32> s{};
    std::copy(salt.begin(), salt.end(), s.begin());
    std::lock_guard lock(mutex_);
    if (std::any_of(entries_.begin(), entries_.end(), [&](const auto& e) { return e.first == h; })) {
      return;
    }
    entries_.emplace_back(h, s);
    if (entries_.size() > capacity) {
      entries_.pop_front();
    }
  }
  /// The salt that made `secret`, if this process derived it.
  std::optional<std::array<std::byte, 32>> salt_of(const KeyIdSecret& secret) const {
    const Sha256 h = sha256(secret.bytes);
    std::lock_guard lock(mutex_);
    for (const auto& e : entries_) {
      if (e.first == h) {
        return e.second;
      }
    }
    return std::nullopt;
  }

 private:
  mutable std::mutex mutex_;
  std::deque<std::pair<Sha256, std::array<std::byte, 32>>> entries_;
};

// ---- files ----------------------------------------------------------------------------------------

/// Throws `Error` with the `errno` code: "OPERATION: FILE: STEP: strerror".
[[noreturn]] inline void throw_io_error(std::string_view operation, const std::filesystem::path& file,
                                        std::string_view step, int err) {
  const std::error_code code(err, std::system_category());
  std::string what(operation);
  what += ": ";
  what += file.string();
  what += ": ";
  what += step;
  what += ": ";
  what += code.message();
  ERR_clear_error();
  throw Error(code, what);
}

/// Closes a file descriptor on destruction unless released.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) noexcept : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  [[nodiscard]] int get() const noexcept { return fd_; }
  /// Closes now; returns the `close` result (0, or -1 with errno set).
  int close() noexcept { return ::close(std::exchange(fd_, -1)); }

 private:
  int fd_;
};

/// Reads a whole regular file of at most `max_size` bytes into wiped-on-release memory. The size
/// is checked with `fstat` before anything is read (`PersistError` at offset 0 if larger, or not
/// a regular file, or writable by group or others when `refuse_shared_write`); a file that grows
/// while being read is refused too. Open and read failures throw `Error` with the `errno` code.
inline SecretBuffer read_file_bounded(std::string_view operation, const std::filesystem::path& file,
                                     std::uintmax_t max_size, bool refuse_shared_write) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below as not a regular file).
  const FileDescriptor fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (fd.get() < 0) {
    throw_io_error(operation, file, "open", errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    throw_io_error(operation, file, "fstat", errno);
  }
  if (!S_ISREG(st.st_mode)) {
    throw PersistError(file, 0, "not a regular file");
  }
  if (refuse_shared_write && (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw PersistError(file, 0,
                       std::string("writable by group or others (mode ") + mode +
                           "): whoever can write a session file can make this client resume sessions they made; "
                           "chmod 600 it");
  }
  const auto size = static_cast<std::uintmax_t>(st.st_size);
  if (st.st_size < 0 || size > max_size) {
    throw PersistError(file, 0,
                       "file is " + std::to_string(size) + " bytes, more than the limit of " + std::to_string(max_size));
  }
  SecretBuffer out(static_cast<std::size_t>(size) + 1);  // one more: notices a file that grew
  std::size_t have = 0;
  while (have < out.size()) {
    const ssize_t n = ::read(fd.get(), out.data() + have, out.size() - have);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      throw_io_error(operation, file, "read", errno);
    }
    if (n == 0) {
      break;
    }
    have += static_cast<std::size_t>(n);
  }
  if (have != size) {
    throw PersistError(file, std::min<std::uintmax_t>(have, size), "file changed size while being read");
  }
  out.shrink(have);
  return out;
}

/// Writes `data` to `target` atomically: a temporary file in the same directory
/// (`mkostemp`, ".NAME.tmp.XXXXXX"), mode 0600 (`fchmod`), every byte written, `fsync`, `close`,
/// `rename` over the target, then `fsync` of the directory. A crash at any point leaves the old
/// file or the new one, never a partial target (a killed writer may leave its temporary file).
/// Any failure removes the temporary file and throws `Error` with the `errno` code, naming the
/// target and the step.
inline void write_file_atomically(const std::filesystem::path& target, std::span<const std::byte> data) {
  constexpr std::string_view op = "save_sessions";
  const std::filesystem::path name = target.filename();
  if (name.empty() || name == "." || name == "..") {
    throw_error(errc::invalid_argument, op, "the target must name a file: " + target.string());
  }
  const std::filesystem::path dir = target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
  std::string temp = (dir / ("." + name.string() + ".tmp.XXXXXX")).string();
  FileDescriptor fd(::mkostemp(temp.data(), O_CLOEXEC));
  if (fd.get() < 0) {
    throw_io_error(op, target, "create a temporary file in " + dir.string(), errno);
  }
  auto fail = [&](std::string_view step) {
    const int err = errno;
    if (fd.get() >= 0) {
      (void)fd.close();
    }
    (void)::unlink(temp.c_str());
    throw_io_error(op, target, std::string(step) + " (" + temp + ")", err);
  };
  if (::fchmod(fd.get(), S_IRUSR | S_IWUSR) != 0) {
    fail("fchmod 0600");
  }
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      fail("write");
    }
    if (n == 0) {
      errno = EIO;
      fail("write");
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd.get()) != 0) {
    fail("fsync");
  }
  if (fd.close() != 0) {
    fail("close");
  }
  if (::rename(temp.c_str(), target.c_str()) != 0) {
    fail("rename");
  }
  const FileDescriptor dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() < 0) {
    throw_io_error(op, target, "open the directory to fsync it (the file was replaced)", errno);
  }
  if (::fsync(dfd.get()) != 0 && errno != EINVAL) {  // EINVAL: a file system that cannot sync directories
    throw_io_error(op, target, "fsync the directory (the file was replaced)", errno);
  }
}

// ---- parsing ---------------------------------------------------------------------------------------

/// One record of a parsed file: its key id and the session OpenSSL parsed (unbound, owned).
struct ParsedRecord {
  KeyId id{};
  Handle<SSL_SESSION> session;  // `d2i_SSL_SESSION` result
  std::chrono::system_clock::time_point expiry;
  std::chrono::system_clock::time_point original;  // full handshake that started the chain
  ProtocolVersion version = ProtocolVersion::unknown;
  std::uint32_t max_early_data = 0;
  std::string alpn;
  std::uint64_t offset = 0;  // of the record in the file
};

/// A whole file, validated: header fields, the key-id secret to import under, every record.
struct ParsedFile {
  std::uint16_t version = 0;
  bool encrypted = false;
  std::uint32_t key_identifier = 0;
  std::array<std::byte, 32> salt{};
  KeyIdSecret secret;  // the salt, or the secret derived from the key and the salt
  std::vector<ParsedRecord> records;
};

/// Bounds-checked reads with the file offset of each field, for error messages.
class FileReader {
 public:
  FileReader(const std::filesystem::path& file, std::span<const std::byte> bytes, std::uint64_t base) noexcept
      : file_(file), bytes_(bytes), base_(base) {}
  [[nodiscard]] std::size_t remaining() const noexcept { return bytes_.size() - pos_; }
  [[nodiscard]] std::uint64_t offset() const noexcept { return base_ + pos_; }
  [[nodiscard]] std::span<const std::byte> rest() const noexcept { return bytes_.subspan(pos_); }
  std::span<const std::byte> take(std::size_t n, std::string_view what) {
    if (n > remaining()) {
      fail("truncated: " + std::string(what) + " needs " + std::to_string(n) + " bytes, " +
           std::to_string(remaining()) + " left");
    }
    auto out = bytes_.subspan(pos_, n);
    pos_ += n;
    return out;
  }
  std::uint64_t uint(std::size_t n, std::string_view what) { return get_be(take(n, what).data(), n); }
  [[noreturn]] void fail(const std::string& reason) const { fail_at(offset(), reason); }
  [[noreturn]] void fail_at(std::uint64_t at, const std::string& reason) const {
    ERR_clear_error();
    throw PersistError(file_, at, reason);
  }

 private:
  const std::filesystem::path& file_;
  std::span<const std::byte> bytes_;
  std::uint64_t base_;
  std::size_t pos_ = 0;
};

inline std::string hex32(std::uint32_t v) {
  char buf[11];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

/// Writes a record body (docs/persistence.md; also the plaintext of a fleet store value): expiry
/// and original full handshake (Unix seconds), protocol version, max early data, ALPN, then the
/// DER session `der` of `session` (`session_der`). `b` must have `body_fixed_size + alpn + der`
/// bytes left; the caller checks the ALPN (≤ 255) and DER (≤ 2^32 − 1) lengths.
inline void write_record_body(ByteWriter& b, const SSL_SESSION* session, std::chrono::system_clock::time_point expiry,
                              std::chrono::system_clock::time_point original, std::span<const std::byte> der) {
  const std::string_view alpn = session_backend<SSL_SESSION>::alpn(session);
  b.be(static_cast<std::uint64_t>(to_unix_seconds(expiry)), 8);
  b.be(static_cast<std::uint64_t>(to_unix_seconds(original)), 8);
  b.be(static_cast<std::uint64_t>(SSL_SESSION_get_protocol_version(session)), 2);
  b.be(SSL_SESSION_get_max_early_data(session), 4);
  b.be(alpn.size(), 1);
  b.bytes(std::as_bytes(std::span(alpn)));
  b.be(der.size(), 4);
  b.bytes(der);
}

/// Parses a record body (the plaintext of a sealed record), ending with the DER session.
inline void parse_body(FileReader& r, ParsedRecord& rec) {
  rec.expiry = from_unix_seconds(static_cast<std::int64_t>(r.uint(8, "expiry")));
  rec.original = from_unix_seconds(static_cast<std::int64_t>(r.uint(8, "original handshake time")));
  const auto version_at = r.offset();
  const auto version = static_cast<int>(r.uint(2, "protocol version"));
  if (version < TLS1_VERSION || version > TLS1_3_VERSION) {
    r.fail_at(version_at, "unknown protocol version " + hex32(static_cast<std::uint32_t>(version)));
  }
  rec.version = static_cast<ProtocolVersion>(version);
  rec.max_early_data = static_cast<std::uint32_t>(r.uint(4, "max early data"));
  const auto alpn_len = static_cast<std::size_t>(r.uint(1, "ALPN length"));
  const auto alpn = r.take(alpn_len, "ALPN");
  rec.alpn.assign(reinterpret_cast<const char*>(alpn.data()), alpn.size());
  const auto der_len_at = r.offset();
  const auto der_len = static_cast<std::size_t>(r.uint(4, "DER length"));
  if (der_len == 0) {
    r.fail_at(der_len_at, "empty DER session");
  }
  if (der_len != r.remaining()) {
    r.fail_at(der_len_at, "DER length " + std::to_string(der_len) + " does not match the " +
                              std::to_string(r.remaining()) + " bytes left in the record");
  }
  const auto der_at = r.offset();
  const auto der = r.take(der_len, "DER session");
  if (der.size() > static_cast<std::size_t>(LONG_MAX)) {
    r.fail_at(der_at, "DER session too large");
  }
  const unsigned char* p = uc(der.data());
  rec.session = Handle<SSL_SESSION>::adopt(d2i_SSL_SESSION(nullptr, &p, static_cast<long>(der.size())));
  if (!rec.session) {
    std::string queue = drain_openssl_errors();
    r.fail_at(der_at, "not a valid DER-encoded session (d2i_SSL_SESSION)" + (queue.empty() ? "" : ": " + queue));
  }
  if (const auto used = static_cast<std::size_t>(p - uc(der.data())); used != der.size()) {
    r.fail_at(der_at + used, std::to_string(der.size() - used) + " trailing bytes after the DER session");
  }
  // The metadata must describe the session it comes with.
  const SSL_SESSION* s = rec.session.get();
  if (SSL_SESSION_get_protocol_version(s) != version) {
    r.fail_at(version_at, "protocol version " + hex32(static_cast<std::uint32_t>(version)) +
                              " does not match the session's " +
                              hex32(static_cast<std::uint32_t>(SSL_SESSION_get_protocol_version(s))));
  }
  if (session_backend<SSL_SESSION>::alpn(s) != rec.alpn) {
    r.fail_at(der_at, "ALPN does not match the session's");
  }
  if (SSL_SESSION_get_max_early_data(s) != rec.max_early_data) {
    r.fail_at(der_at, "max early data does not match the session's");
  }
}

/// Parses and validates a whole session file held in `bytes`; the fuzzing entry point. Checks,
/// in order: size (`limits.max_file_size`), magic, version, flags, key identifier, record count
/// (`limits.max_records`, and that so many records can fit), every record's length against the
/// bytes left, the trailer's place, then (if `verify_integrity`) the trailer: SHA-256, or for an
/// encrypted file HMAC-SHA-256 under the chosen key (`keys` are tried by identifier; a file
/// encrypted with none of them, an encrypted file without keys, and keys for a file without
/// encryption are refused). Then each record: AES-256-GCM open (encrypted files), the fields,
/// `d2i_SSL_SESSION` (no trailing bytes), and that version, ALPN and early data match the session.
/// Throws `PersistError` naming `file`, the byte offset and the reason; OpenSSL's error queue is
/// left empty. Never reads past `bytes`; allocates at most what the validated lengths allow.
/// Returns records that own their `SSL_SESSION`s (one reference each).
inline ParsedFile parse_session_file(std::span<const std::byte> bytes, std::span<const EncryptionKey> keys,
                                     const LoadLimits& limits, bool verify_integrity,
                                     const std::filesystem::path& file = "<memory>") {
  FileReader r(file, bytes, 0);
  if (bytes.empty()) {
    r.fail("empty file");
  }
  if (bytes.size() > limits.max_file_size) {
    r.fail("file is " + std::to_string(bytes.size()) + " bytes, more than the limit of " +
           std::to_string(limits.max_file_size));
  }
  ParsedFile out;
  const auto magic = r.take(std::min(file_magic.size(), bytes.size()), "magic");
  if (!std::equal(magic.begin(), magic.end(), reinterpret_cast<const std::byte*>(file_magic.data()))) {
    r.fail_at(0, "not a tlsresume session file (bad magic)");
  }
  if (magic.size() < file_magic.size()) {
    r.fail("truncated: magic needs 8 bytes, " + std::to_string(magic.size()) + " present");
  }
  const auto version_at = r.offset();
  out.version = static_cast<std::uint16_t>(r.uint(2, "version"));
  if (out.version != file_version) {
    r.fail_at(version_at, "unsupported format version " + std::to_string(out.version) + " (this build reads version " +
                              std::to_string(file_version) + ")");
  }
  const auto flags_at = r.offset();
  const auto flags = static_cast<std::uint16_t>(r.uint(2, "flags"));
  if ((flags & ~flag_encrypted) != 0) {
    r.fail_at(flags_at, "unknown flags " + hex32(flags));
  }
  out.encrypted = (flags & flag_encrypted) != 0;
  const auto key_id_at = r.offset();
  out.key_identifier = static_cast<std::uint32_t>(r.uint(4, "key identifier"));
  if (!out.encrypted && out.key_identifier != 0) {
    r.fail_at(key_id_at, "key identifier set in a file without encryption");
  }
  const auto salt = r.take(32, "salt");
  std::copy(salt.begin(), salt.end(), out.salt.begin());
  const auto count_at = r.offset();
  const auto count = r.uint(4, "record count");
  if (count > limits.max_records) {
    r.fail_at(count_at, std::to_string(count) + " records, more than the limit of " + std::to_string(limits.max_records));
  }
  if (r.remaining() < trailer_size) {
    r.fail("truncated: no room for the " + std::to_string(trailer_size) + "-byte trailer");
  }
  const std::size_t min_record = out.encrypted ? min_sealed_record : min_plain_record;
  if (count > (r.remaining() - trailer_size) / min_record) {
    r.fail_at(count_at, "truncated: " + std::to_string(count) + " records cannot fit in the " +
                            std::to_string(r.remaining() - trailer_size) + " bytes left");
  }
  const auto header = bytes.first(header_size);

  // Which key: by identifier; the keys must fit the file.
  std::vector<const EncryptionKey*> candidates;
  if (out.encrypted) {
    if (keys.empty()) {
      r.fail_at(flags_at, "the file is encrypted (key id " + hex32(out.key_identifier) + ") but no key was given");
    }
    for (const EncryptionKey& k : keys) {
      if (k.identifier() == out.key_identifier) {
        candidates.push_back(&k);
      }
    }
    if (candidates.empty()) {
      std::string ids;
      for (const EncryptionKey& k : keys) {
        ids += (ids.empty() ? "" : ", ") + hex32(k.identifier());
      }
      r.fail_at(key_id_at, "written with key id " + hex32(out.key_identifier) + "; none of the keys given has it (" +
                               ids + ")");
    }
  } else if (!keys.empty()) {
    r.fail_at(flags_at, "the file is not encrypted but encryption keys were given (refusing a file that is not "
                        "authenticated where an authenticated one is expected)");
  }

  // Structure: every record's length fits, and the trailer follows the last one exactly.
  std::vector<std::pair<std::uint64_t, std::span<const std::byte>>> spans;  // record offset, record after its length
  spans.reserve(static_cast<std::size_t>(count));
  for (std::uint64_t i = 0; i < count; ++i) {
    const auto at = r.offset();
    if (r.remaining() < trailer_size + min_record) {
      r.fail("truncated: record " + std::to_string(i) + " of " + std::to_string(count) + " is missing (" +
             std::to_string(r.remaining()) + " bytes left, the trailer included)");
    }
    const auto len = r.uint(4, "record length");
    if (len < min_record - 4) {
      r.fail_at(at, "record " + std::to_string(i) + " is " + std::to_string(len) + " bytes, less than the minimum of " +
                        std::to_string(min_record - 4));
    }
    if (len > r.remaining() || r.remaining() - len < trailer_size) {
      r.fail_at(at, "record " + std::to_string(i) + " length " + std::to_string(len) + " runs past the end (" +
                        std::to_string(r.remaining() >= trailer_size ? r.remaining() - trailer_size : 0) +
                        " bytes left before the trailer)");
    }
    spans.emplace_back(at, r.take(static_cast<std::size_t>(len), "record"));
  }
  if (r.remaining() != trailer_size) {
    r.fail(std::to_string(r.remaining() - trailer_size) + " unexpected bytes after the last record");
  }
  const auto trailer_at = r.offset();
  const auto trailer = r.take(trailer_size, "trailer");
  const auto covered = bytes.first(bytes.size() - trailer_size);

  // Integrity (skipped only by a fuzzing build), which also picks the key among candidates.
  FileKeys file_keys;
  if (!out.encrypted) {
    file_keys = FileKeys::plain(salt.first<32>());
    if (verify_integrity && CRYPTO_memcmp(file_keys.trailer(covered).data(), trailer.data(), trailer_size) != 0) {
      r.fail_at(trailer_at, "integrity check failed: the SHA-256 does not match (corrupted or truncated file)");
    }
  } else {
    bool found = false;
    for (const EncryptionKey* k : candidates) {
      file_keys = FileKeys::derive(*k, salt.first<32>());
      if (!verify_integrity || CRYPTO_memcmp(file_keys.trailer(covered).data(), trailer.data(), trailer_size) == 0) {
        found = true;
        break;
      }
    }
    if (!found) {
      r.fail_at(trailer_at, "authentication failed: the HMAC does not match (wrong key with the same id, or a "
                            "corrupted, truncated or altered file)");
    }
  }
  out.secret = file_keys.id_secret;

  // Records.
  const Unique<EVP_CIPHER_CTX, &EVP_CIPHER_CTX_free> cipher(out.encrypted ? EVP_CIPHER_CTX_new() : nullptr);
  if (out.encrypted && !cipher) {
    throw_openssl_error("EVP_CIPHER_CTX_new");
  }
  out.records.reserve(spans.size());
  std::size_t largest = 0;
  for (const auto& span : spans) {
    largest = std::max(largest, span.second.size());
  }
  SecretBuffer plaintext(out.encrypted ? largest : 0);
  for (std::size_t i = 0; i < spans.size(); ++i) {
    const auto [at, record] = spans[i];
    ParsedRecord rec;
    rec.offset = at;
    FileReader rr(file, record, at + 4);
    const auto id = rr.take(32, "key id");
    std::copy(id.begin(), id.end(), rec.id.begin());
    if (out.encrypted) {
      const auto aad = record_aad(header, rec.id);
      const auto opened = open_sealed(cipher.get(), file_keys.record_key, aad, rr.rest(), plaintext.span());
      if (opened.empty()) {
        rr.fail("record " + std::to_string(i) + " failed AES-256-GCM authentication");
      }
      FileReader body(file, opened, rr.offset() + nonce_size);  // offsets within the ciphertext
      parse_body(body, rec);
      OPENSSL_cleanse(plaintext.data(), opened.size());
    } else {
      parse_body(rr, rec);
    }
    out.records.push_back(std::move(rec));
  }
  return out;
}

}  // namespace detail

inline std::uint32_t EncryptionKey::identifier() const {
  if (id != 0) {
    return id;
  }
  const auto h = detail::sha256(bytes);
  return static_cast<std::uint32_t>(detail::get_be(h.data(), 4));
}

inline EncryptionKey EncryptionKey::from_file(const std::filesystem::path& file) {
  // 66 bytes read at most: 64 hex digits and "\r\n" are refused after reading, anything larger before.
  const detail::SecretBuffer buffer = detail::read_file_bounded("EncryptionKey::from_file", file, 66, false);
  const std::span<const std::byte> content = buffer.span();
  EncryptionKey key;
  auto fail = [&](std::uint64_t at, const std::string& reason) {
    ERR_clear_error();
    throw PersistError(file, at, reason);
  };
  const std::string_view expected = "expected 32 raw bytes or 64 hexadecimal digits with an optional newline";
  if (content.size() == key.bytes.size()) {
    std::copy(content.begin(), content.end(), key.bytes.begin());
  } else if (content.size() == 64 || (content.size() == 65 && content.back() == std::byte{'\n'})) {
    auto nibble = [&](std::size_t i) -> unsigned {
      const auto c = std::to_integer<char>(content[i]);
      if (c >= '0' && c <= '9') {
        return static_cast<unsigned>(c - '0');
      }
      if (c >= 'a' && c <= 'f') {
        return static_cast<unsigned>(c - 'a' + 10);
      }
      if (c >= 'A' && c <= 'F') {
        return static_cast<unsigned>(c - 'A' + 10);
      }
      fail(i, "not a hexadecimal digit; " + std::string(expected));
      return 0;
    };
    for (std::size_t i = 0; i < key.bytes.size(); ++i) {
      key.bytes[i] = static_cast<std::byte>((nibble(2 * i) << 4) | nibble(2 * i + 1));
    }
  } else {
    fail(0, std::to_string(content.size()) + " bytes; " + std::string(expected));
  }
  if (std::all_of(key.bytes.begin(), key.bytes.end(), [](std::byte b) { return b == std::byte{0}; })) {
    fail(0, "the key is all zeros");
  }
  const auto h = detail::sha256(key.bytes);
  key.id = static_cast<std::uint32_t>(detail::get_be(h.data(), 4));
  return key;
}

/// Saves the sessions of `cache` to `file`, atomically (see `detail::write_file_atomically`: a
/// temporary file in the same directory with mode 0600, `fsync`, `rename`, `fsync` of the
/// directory; a crash leaves the old file or the new one). Writes
///   - every live, unexpired, resumable session (`SessionCache::for_each`), its key id computed
///     with the file's key-id secret (`key_id`: `EVP_Q_mac` HMAC-SHA-256), except those whose
///     configuration presents a client certificate unless
///     `options.include_client_certificate_sessions` (counted in `skipped_client_identity`);
///   - every waiting import (`SessionCache::for_each_import`) filed under the file's secret;
///     imports under another secret cannot be re-filed and are counted in `skipped_other_secret`.
/// The salt (`RAND_bytes`) is reused from the waiting imports when they all share one secret,
/// so that they stay savable: without a key, their secret is the salt (unless it is a secret
/// derived from an encryption key, which is never published as a salt); with `options.key`, the
/// salt this process saw make that secret (`HKDF`, `EVP_KDF_derive`) under the same key.
/// With `options.key`, records are sealed with AES-256-GCM (`EVP_EncryptInit_ex2`, a fresh
/// `RAND_bytes` nonce each) and the trailer is an HMAC-SHA-256; without, the trailer is a SHA-256
/// (`EVP_Digest`). Sessions are serialised with `i2d_SSL_SESSION` into buffers wiped after use
/// (`OPENSSL_clear_free`; the file image is wiped with `OPENSSL_cleanse`).
/// Takes no ownership: the cache's sessions are visited through snapshot references
/// (`SSL_SESSION_up_ref`), released before returning; the key is borrowed. Throws `Error` (with
/// the `errno` code and the path for I/O failures; the temporary file is removed); the cache
/// is never changed.
template <class Tag, class Policy>
SaveReport save_sessions(const SessionCache<Tag, Policy>& cache, const std::filesystem::path& file,
                         const SaveOptions& options = {}) {
  using time_point = std::chrono::system_clock::time_point;
  using session_type = BoundSession<Tag>;
  const time_point now = time_point(Policy::clock_type::now());
  SaveReport report;

  struct Import {
    KeyIdSecret secret;
    KeyId id;
    session_type session;
    time_point original;
  };
  std::vector<Import> imports;
  cache.for_each_import([&](const KeyIdSecret& secret, const KeyId& id, const session_type& s, time_point original) {
    imports.push_back(Import{secret, id, s, original});
  });

  // The salt: reused from the imports when they share one secret (see above), else fresh.
  std::array<std::byte, 32> salt{};
  bool have_salt = false;
  if (!imports.empty() &&
      std::all_of(imports.begin(), imports.end(), [&](const Import& i) { return i.secret == imports.front().secret; })) {
    const KeyIdSecret& shared = imports.front().secret;
    const auto derived_from = detail::DerivedSecrets::instance().salt_of(shared);
    if (options.key == nullptr && !derived_from) {
      salt = shared.bytes;
      have_salt = true;
    } else if (options.key != nullptr && derived_from &&
               detail::FileKeys::derive(*options.key, *derived_from).id_secret == shared) {
      salt = *derived_from;
      have_salt = true;
    }
  }
  if (!have_salt && RAND_bytes(detail::uc(salt.data()), static_cast<int>(salt.size())) != 1) {
    throw_openssl_error("RAND_bytes(salt)");
  }
  const detail::FileKeys keys =
      options.key != nullptr ? detail::FileKeys::derive(*options.key, salt) : detail::FileKeys::plain(salt);

  struct Record {
    KeyId id;
    session_type session;
    time_point original;
    time_point expiry;
    time_point created;
    detail::OpenSslSecret der;  // `i2d_SSL_SESSION`, made in the sizing pass
    std::size_t body_size = 0;  // the record's body (plaintext) size
  };
  std::vector<Record> records;
  auto add = [&](const KeyId& id, const session_type& s, time_point original) {
    const auto facts = detail::session_facts(s.native_handle(), original);
    if (!facts.resumable || facts.expires <= now) {
      return;
    }
    records.push_back(Record{id, s, facts.original, facts.expires, facts.created, {}, 0});
  };
  cache.for_each([&](const PeerKey& key, const session_type& s, time_point original) {
    if (key.config().has_client_identity() && !options.include_client_certificate_sessions) {
      ++report.skipped_client_identity;
      return;
    }
    add(key_id(keys.id_secret, key), s, original);
  });
  for (const Import& i : imports) {
    if (i.secret == keys.id_secret) {
      add(i.id, i.session, i.original);
    } else {
      ++report.skipped_other_secret;
    }
  }
  imports.clear();
  // Oldest first: a load claims a key's sessions in file order, and the newest ticket ends first.
  std::stable_sort(records.begin(), records.end(), [](const Record& a, const Record& b) { return a.created < b.created; });
  if (records.size() > std::numeric_limits<std::uint32_t>::max()) {
    throw_error(errc::invalid_argument, "save_sessions", "too many sessions for one file");
  }

  // Sizing pass: the file is built in one buffer of the exact size (wiped when released).
  const bool sealed = options.key != nullptr;
  std::size_t total = detail::header_size + detail::trailer_size;
  std::size_t largest_body = 0;
  for (Record& rec : records) {
    rec.der = detail::session_der(rec.session.native_handle());
    rec.body_size = detail::body_fixed_size + rec.session.alpn().size() + rec.der.span().size();
    const std::size_t length = 32 + (sealed ? detail::nonce_size + detail::tag_size : 0) + rec.body_size;
    if (rec.session.alpn().size() > 255 || rec.der.span().size() > std::numeric_limits<std::uint32_t>::max() ||
        length > std::numeric_limits<std::uint32_t>::max()) {
      throw_error(errc::invalid_argument, "save_sessions", "a session too large for the format");
    }
    total += 4 + length;
    largest_body = std::max(largest_body, rec.body_size);
  }
  detail::SecretBuffer out(total);
  detail::SecretBuffer body(sealed ? largest_body : 0);
  detail::ByteWriter w(out.span());
  w.bytes(std::as_bytes(std::span(detail::file_magic)));
  w.be(detail::file_version, 2);
  w.be(sealed ? detail::flag_encrypted : 0, 2);
  w.be(sealed ? options.key->identifier() : 0, 4);
  w.bytes(salt);
  w.be(records.size(), 4);
  const auto header = std::span<const std::byte>(out.data(), detail::header_size);
  const detail::Unique<EVP_CIPHER_CTX, &EVP_CIPHER_CTX_free> cipher(sealed ? EVP_CIPHER_CTX_new() : nullptr);
  if (sealed && !cipher) {
    throw_openssl_error("EVP_CIPHER_CTX_new");
  }
  for (const Record& rec : records) {
    w.be(32 + (sealed ? detail::nonce_size + detail::tag_size : 0) + rec.body_size, 4);
    w.bytes(rec.id);
    // The body goes straight into the file, or into `body` to be sealed into it.
    detail::ByteWriter b(sealed ? body.span().first(rec.body_size) : std::span<std::byte>(w.reserve(rec.body_size), rec.body_size));
    detail::write_record_body(b, rec.session.native_handle(), rec.expiry, rec.original, rec.der.span());
    if (sealed) {
      const auto aad = detail::record_aad(header, rec.id);
      detail::seal(cipher.get(), keys.record_key, aad, body.span().first(rec.body_size), w);
      OPENSSL_cleanse(body.data(), rec.body_size);
    }
    ++report.saved;
  }
  records.clear();
  const detail::Sha256 trailer = keys.trailer(out.span().first(w.position()));
  w.bytes(trailer);
  if (w.position() != out.size()) {
    throw_error(errc::invalid_argument, "save_sessions", "internal error: record sizes changed while encoding");
  }
  detail::write_file_atomically(file, out);
  if (sealed) {
    detail::DerivedSecrets::instance().remember(keys.id_secret, salt);
  }
  report.bytes = out.size();
  return report;
}

/// Loads the sessions saved in `file` into `cache`, bound to `ctx`. The whole file is read
/// (size checked with `fstat` first: `options.max_file_size`) and validated before anything is
/// imported (`detail::parse_session_file`: structure, integrity trailer, AES-256-GCM records with
/// the key the header names among `options.keys`, `d2i_SSL_SESSION` of every record); any
/// problem throws `PersistError` (file, byte offset, reason) and leaves the cache exactly as it
/// was. A file writable by group or others is refused the same way. Then each record expired by
/// the cache's clock (its stored expiry, or the cache's own rules on the session, whichever is
/// earlier) is dropped (`expired`); the others are bound to `ctx` (`Context::adopt_session`, which
/// takes over the `d2i_SSL_SESSION` reference) and given to `SessionCache::import` under the
/// file's key-id secret (`loaded`, or `refused`). They wait there until a connection for a key
/// with the same id claims them. Binds the cache to `ctx` (as `Client::resume_from` does); throws
/// `Error(errc::wrong_context)` before reading if the cache serves another context instance.
/// Failing to open or read the file (e.g. it does not exist) throws `Error` with the `errno`
/// code. Buffers that held the file are wiped; OpenSSL's error queue is left empty.
template <class Tag, class Policy>
LoadReport load_sessions(SessionCache<Tag, Policy>& cache, const Context<Tag>& ctx, const std::filesystem::path& file,
                         const LoadOptions& options = {}) {
  using time_point = std::chrono::system_clock::time_point;
  if (const auto bound = cache.bound_context(); bound && *bound != ctx.id()) {
    throw_error(errc::wrong_context, "load_sessions", "the cache serves another context instance");
  }
#if defined(TLSRESUME_FUZZING)
  constexpr bool verify_integrity = false;
#else
  constexpr bool verify_integrity = true;
#endif
  const detail::LoadLimits limits{options.max_file_size, options.max_records};
  detail::ParsedFile parsed = [&] {
    const detail::SecretBuffer bytes = detail::read_file_bounded("load_sessions", file, limits.max_file_size, true);
    return detail::parse_session_file(bytes, options.keys, limits, verify_integrity, file);
  }();
  if (parsed.encrypted) {
    detail::DerivedSecrets::instance().remember(parsed.secret, parsed.salt);
  }
  (void)cache.attach(ctx.id());
  const time_point now = time_point(Policy::clock_type::now());
  LoadReport report;
  for (detail::ParsedRecord& rec : parsed.records) {
    const auto facts = detail::session_facts(rec.session.get(), rec.original);
    if (std::min(rec.expiry, facts.expires) <= now) {
      ++report.expired;
      continue;
    }
    auto session = ctx.adopt_session(rec.session.release());
    if (cache.import(parsed.secret, rec.id, std::move(session), rec.original)) {
      ++report.loaded;
    } else {
      ++report.refused;
    }
  }
  return report;
}

}  // namespace tlsresume
