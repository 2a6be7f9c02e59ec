// Compile-fail case: from_der_on_bound.
// Rule proved: `Session::from_der` exists only for unbound sessions (`requires(!is_bound)`): bytes
// parsed from DER belong to no context, so `BoundSession<A>::from_der` must not compile. A parsed
// session is bound explicitly with `Context::bind`.
// Twin (-DTLSRESUME_TWIN): `UnboundSession::from_der` compiles.
#include <cstddef>
#include <span>

#include <tlsresume/tlsresume.hpp>

struct A {};

#ifdef TLSRESUME_TWIN
using Parsed = tlsresume::UnboundSession;
#else
using Parsed = tlsresume::BoundSession<A>;
#endif

Parsed parse(std::span<const std::byte> der) {
  return Parsed::from_der(der);
}
