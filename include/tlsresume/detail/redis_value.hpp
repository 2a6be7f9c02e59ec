#pragma once
// The fleet store's value format and key names (docs/fleet.md §4), shared by `<tlsresume/redis.hpp>`
// and its tests. Needs no hiredis: only OpenSSL and persist.hpp, whose HKDF, AES-256-GCM, buffer
// and record-body functions it reuses.
//
// Names. One fleet key (an `EncryptionKey`) gives, with HKDF-SHA-256 (salt: SHA-256 of a fixed
// label, so every host derives the same), a *name secret* and a *value key*. A peer's store names
// are `prefix + hex(HMAC-SHA-256(name secret, PeerKey::encode())) + ":t13"` (its list of TLS 1.3
// tickets) and `... + ":t12"` (its one TLS 1.2 session): the same on every host of the fleet, and
// without the fleet key they reveal nothing of the peer (not even a guessable host:port).
//
// Values, all integers big-endian:
//   1 byte   format version (1)
//   4 bytes  key identifier (`EncryptionKey::identifier()`): which fleet key sealed it
//   12 bytes nonce (`RAND_bytes`, fresh for every value)
//   N bytes  AES-256-GCM ciphertext of the body
//   16 bytes GCM tag
// The AAD is the label "tlsresume fleet value v1", the version byte, the key identifier and the
// store name the value is written under: a value moved to another peer's name, or from a ticket
// list to a session name, fails authentication. The body is persist.hpp's record body (expiry,
// original full handshake, protocol version, max early data, ALPN, DER), parsed by the same
// `detail::parse_body`, so each value read costs exactly one `d2i_SSL_SESSION`.

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "tlsresume/cache.hpp"
#include "tlsresume/error.hpp"
#include "tlsresume/handle.hpp"
#include "tlsresume/peer_key.hpp"
#include "tlsresume/persist.hpp"
#include "tlsresume/session.hpp"

namespace tlsresume::detail {

/// The two store names of one peer under one fleet key: its list of TLS 1.3 tickets and its one
/// TLS 1.2 session. Holds no secret: the names are HMACs of the peer key. (Public as
/// `tlsresume::StoreNames`, in redis.hpp.)
struct StoreNames {
  std::string tickets;  ///< list of sealed TLS 1.3 tickets, newest first
  std::string session;  ///< one sealed TLS 1.2 session
};

inline constexpr std::uint8_t fleet_value_version = 1;
inline constexpr std::size_t fleet_value_header = 1 + 4;  // version, key identifier; the nonce follows
inline constexpr std::size_t fleet_value_overhead = fleet_value_header + nonce_size + tag_size;
inline constexpr std::size_t fleet_min_value = fleet_value_overhead + body_fixed_size + 1;
inline constexpr std::string_view info_fleet_name = "tlsresume fleet key name v1";
inline constexpr std::string_view info_fleet_value = "tlsresume fleet value key v1";
inline constexpr std::string_view fleet_aad_label = "tlsresume fleet value v1";

/// The HKDF salt of fleet keys: SHA-256 (`EVP_Digest`) of a fixed label. A constant, so that every
/// host of the fleet derives the same names from the same fleet key.
inline const Sha256& fleet_salt() {
  static const Sha256 salt = sha256("tlsresume fleet salt v1");
  return salt;
}

/// What one fleet key gives: its identifier, the secret store names are HMACs under, and the
/// AES-256-GCM key of values. Wiped (`OPENSSL_cleanse`) on destruction.
struct FleetKeyMaterial {
  std::uint32_t identifier = 0;
  KeyIdSecret name_secret;
  Secret32 value_key;

  FleetKeyMaterial() = default;
  FleetKeyMaterial(const FleetKeyMaterial&) = default;
  FleetKeyMaterial& operator=(const FleetKeyMaterial&) = default;
  ~FleetKeyMaterial() { OPENSSL_cleanse(name_secret.bytes.data(), name_secret.bytes.size()); }
};

/// Derives a fleet key's material with HKDF-SHA-256 (`EVP_KDF_derive`, persist.hpp's
/// `hkdf_sha256`). Throws `Error(errc::invalid_argument)` for a key of all zeros, `Error` if
/// OpenSSL fails. Borrows `key`.
inline FleetKeyMaterial derive_fleet_key(const EncryptionKey& key) {
  bool zero = true;
  for (std::byte b : key.bytes) {
    zero = zero && b == std::byte{0};
  }
  if (zero) {
    throw_error(errc::invalid_argument, "FleetSessionCache", "a fleet key of all zeros");
  }
  FleetKeyMaterial m;
  m.identifier = key.identifier();
  m.name_secret.bytes = hkdf_sha256(key.bytes, fleet_salt(), info_fleet_name).bytes;
  m.value_key = hkdf_sha256(key.bytes, fleet_salt(), info_fleet_value);
  return m;
}

/// The store names of `key` under `material`: `prefix`, 64 lower-case hex digits of
/// HMAC-SHA-256(name secret, `PeerKey::encode()`) (`key_id`, `EVP_Q_mac`), then ":t13" / ":t12".
inline StoreNames fleet_names(std::string_view prefix, const FleetKeyMaterial& material, const PeerKey& key) {
  static constexpr char digits[] = "0123456789abcdef";
  const KeyId id = key_id(material.name_secret, key);
  std::string base;
  base.reserve(prefix.size() + 2 * id.size() + 4);
  base += prefix;
  for (std::byte b : id) {
    const auto v = std::to_integer<unsigned>(b);
    base += digits[v >> 4];
    base += digits[v & 0xfU];
  }
  StoreNames names{base + ":t13", base};
  names.session += ":t12";
  return names;
}

/// The AAD of a value: label, version, key identifier, the store name it is written under.
inline std::string fleet_aad(std::uint8_t version, std::uint32_t identifier, std::string_view name) {
  std::string aad;
  aad.reserve(fleet_aad_label.size() + 5 + name.size());
  aad += fleet_aad_label;
  aad += static_cast<char>(version);
  for (int shift = 24; shift >= 0; shift -= 8) {
    aad += static_cast<char>((identifier >> shift) & 0xffU);
  }
  aad += name;
  return aad;
}

inline std::span<const std::byte> as_byte_span(std::string_view s) noexcept {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

/// Seals `session` for the store name `name` under `material`: serialises it (`i2d_SSL_SESSION`
/// into a buffer wiped after use), writes persist.hpp's record body with `expiry` and `original`
/// (the full handshake that started its resumption chain), and encrypts it with AES-256-GCM
/// (`EVP_EncryptInit_ex2` & co., a fresh `RAND_bytes` nonce). Borrows everything; the result holds
/// no secret in clear. Throws `Error` if OpenSSL fails or the session is too large.
inline std::string seal_fleet_value(const FleetKeyMaterial& material, std::string_view name, const SSL_SESSION* session,
                                    std::chrono::system_clock::time_point expiry,
                                    std::chrono::system_clock::time_point original) {
  const OpenSslSecret der = session_der(session);
  const std::string_view alpn = session_backend<SSL_SESSION>::alpn(session);
  if (alpn.size() > 255 || der.span().size() > 0xffffffffU) {
    throw_error(errc::invalid_argument, "FleetSessionCache", "a session too large for the value format");
  }
  const std::size_t body_size = body_fixed_size + alpn.size() + der.span().size();
  SecretBuffer body(body_size);
  ByteWriter b(body.span());
  write_record_body(b, session, expiry, original, der.span());

  std::string out(fleet_value_overhead + body_size, '\0');
  ByteWriter w(std::as_writable_bytes(std::span<char>(out.data(), out.size())));
  w.be(fleet_value_version, 1);
  w.be(material.identifier, 4);
  const std::string aad = fleet_aad(fleet_value_version, material.identifier, name);
  const Unique<EVP_CIPHER_CTX, &EVP_CIPHER_CTX_free> cipher(EVP_CIPHER_CTX_new());
  if (!cipher) {
    throw_openssl_error("EVP_CIPHER_CTX_new");
  }
  seal(cipher.get(), material.value_key, as_byte_span(aad), body.span(), w);
  return out;
}

/// What reading a value found.
enum class FleetValueStatus {
  ok,           ///< authentic and well formed: `OpenedFleetValue` holds the session
  malformed,    ///< too short, too long, or of another format version
  unknown_key,  ///< sealed with a key identifier none of the configured keys has
  forged,       ///< AES-256-GCM authentication failed (wrong key, tampered, or moved to another name)
  bad_session,  ///< authentic, but the body or the DER session is not valid
};

/// A value opened by `open_fleet_value`: the session (one reference, `d2i_SSL_SESSION`), unbound.
struct OpenedFleetValue {
  Handle<SSL_SESSION> session;
  std::chrono::system_clock::time_point expiry;
  std::chrono::system_clock::time_point original;
  ProtocolVersion version = ProtocolVersion::unknown;
};

/// Opens a value read from the store name `name`: checks its size (at most `max_size`) and
/// version, picks the key by identifier among `keys` (rotation: old keys still open old values),
/// authenticates and decrypts it (`EVP_DecryptInit_ex2` & co.; the plaintext is wiped after use),
/// then parses the body with persist.hpp's `parse_body` (one `d2i_SSL_SESSION`, metadata checked
/// against the session). Never throws for a bad value: returns its status, and leaves OpenSSL's
/// error queue empty. Throws only if memory or OpenSSL itself fails.
inline FleetValueStatus open_fleet_value(std::span<const FleetKeyMaterial> keys, std::string_view name,
                                         std::string_view value, OpenedFleetValue& out,
                                         std::size_t max_size = 64 * 1024) {
  const auto bytes = as_byte_span(value);
  if (bytes.size() < fleet_min_value || bytes.size() > max_size) {
    return FleetValueStatus::malformed;
  }
  const auto version = static_cast<std::uint8_t>(bytes[0]);
  if (version != fleet_value_version) {
    return FleetValueStatus::malformed;
  }
  const auto identifier = static_cast<std::uint32_t>(get_be(bytes.data() + 1, 4));
  const FleetKeyMaterial* material = nullptr;
  for (const FleetKeyMaterial& k : keys) {
    if (k.identifier == identifier) {
      material = &k;
      break;
    }
  }
  if (material == nullptr) {
    return FleetValueStatus::unknown_key;
  }
  const std::string aad = fleet_aad(version, identifier, name);
  const auto sealed = bytes.subspan(fleet_value_header);
  SecretBuffer plaintext(sealed.size() - nonce_size - tag_size);
  const Unique<EVP_CIPHER_CTX, &EVP_CIPHER_CTX_free> cipher(EVP_CIPHER_CTX_new());
  if (!cipher) {
    throw_openssl_error("EVP_CIPHER_CTX_new");
  }
  const auto opened = open_sealed(cipher.get(), material->value_key, as_byte_span(aad), sealed, plaintext.span());
  ERR_clear_error();
  if (opened.empty()) {
    return FleetValueStatus::forged;
  }
  static const std::filesystem::path where("<fleet store value>");
  ParsedRecord record;
  try {
    FileReader reader(where, opened, 0);
    parse_body(reader, record);
  } catch (const PersistError&) {
    ERR_clear_error();
    return FleetValueStatus::bad_session;
  }
  out.session = std::move(record.session);
  out.expiry = record.expiry;
  out.original = record.original;
  out.version = record.version;
  return FleetValueStatus::ok;
}

}  // namespace tlsresume::detail
