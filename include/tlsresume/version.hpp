#pragma once
// Library version and what it needs to compile: C++20 and OpenSSL 3.0 or newer.
//
// The three numbers are also the project version in meson.build: configuring the build stops if
// they differ.

#include <openssl/opensslv.h>

#define TLSRESUME_VERSION_MAJOR 0
#define TLSRESUME_VERSION_MINOR 1
#define TLSRESUME_VERSION_PATCH 0

/// The version as one number, for `#if TLSRESUME_VERSION >= 10200` (1.2.0): MAJOR * 10000 +
/// MINOR * 100 + PATCH.
#define TLSRESUME_VERSION (TLSRESUME_VERSION_MAJOR * 10000 + TLSRESUME_VERSION_MINOR * 100 + TLSRESUME_VERSION_PATCH)

#if __cplusplus < 202002L
#error "tlsresume needs C++20: compile with -std=c++20 (or later)"
#endif

#if !defined(OPENSSL_VERSION_MAJOR) || OPENSSL_VERSION_MAJOR < 3
#error "tlsresume needs OpenSSL 3.0 or newer (Debian: apt-get install libssl-dev from bookworm or later)"
#endif
