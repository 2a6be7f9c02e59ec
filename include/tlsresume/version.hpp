#pragma once
// Library version and the minimum OpenSSL it supports.

#include <openssl/opensslv.h>

#define TLSRESUME_VERSION_MAJOR 0
#define TLSRESUME_VERSION_MINOR 1
#define TLSRESUME_VERSION_PATCH 0

#if !defined(OPENSSL_VERSION_MAJOR) || OPENSSL_VERSION_MAJOR < 3
#error "tlsresume needs OpenSSL 3.0 or newer (Debian: apt-get install libssl-dev from bookworm or later)"
#endif
