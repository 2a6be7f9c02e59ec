#pragma once
// The whole tlsresume core: sessions, contexts, clients, errors, peer keys and the session cache.
// Optional integrations have their own headers: <tlsresume/fmt.hpp> ({fmt} formatters) and
// <tlsresume/testing.hpp> (a local TLS server and certificates for tests, demos and benchmarks).

#include "tlsresume/cache.hpp"
#include "tlsresume/client.hpp"
#include "tlsresume/context.hpp"
#include "tlsresume/error.hpp"
#include "tlsresume/handle.hpp"
#include "tlsresume/peer_key.hpp"
#include "tlsresume/session.hpp"
#include "tlsresume/version.hpp"
