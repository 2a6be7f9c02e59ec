// Compile-fail case: copy_client.
// Rule proved: a `Client` (one TLS connection, one `SSL`) has exactly one owner: its copy
// constructor is deleted, so copy-constructing a client must not compile.
// Twin (-DTLSRESUME_TWIN): move-constructing it compiles.
#include <utility>

#include <tlsresume/tlsresume.hpp>

struct A {};
using ClientA = tlsresume::Client<tlsresume::Context<A>>;

ClientA take_over(ClientA& client) {
#ifdef TLSRESUME_TWIN
  ClientA second(std::move(client));
#else
  ClientA second(client);
#endif
  return second;
}
