#pragma once
// The fixed key the fuzz target and its seed generator share, so that encrypted seeds reach the
// record parser too. A test key only: never use a constant key for real files.

#include <cstddef>

#include <tlsresume/persist.hpp>

namespace fuzz {

inline tlsresume::EncryptionKey fixed_key() {
  tlsresume::EncryptionKey key;
  for (std::size_t i = 0; i < key.bytes.size(); ++i) {
    key.bytes[i] = static_cast<std::byte>(0xA0 + i);
  }
  key.id = 0x0F0F0F0F;
  return key;
}

}  // namespace fuzz
