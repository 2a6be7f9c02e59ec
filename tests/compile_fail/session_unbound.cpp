// Compile-fail case: session_unbound.
// Rule proved: an `UnboundSession` (a session that belongs to no context, e.g. parsed from DER)
// cannot be given to `Client::set_session`: it does not satisfy `bound_session`, hence not
// `session_from_this_context`. It has to be bound to the client's context first.
// Twin (-DTLSRESUME_TWIN): the same session bound with `ctx.bind(unbound)` compiles.
#include <tlsresume/tlsresume.hpp>

struct A {};

void offer([[maybe_unused]] const tlsresume::Context<A>& ctx, tlsresume::Client<tlsresume::Context<A>>& client,
           const tlsresume::UnboundSession& unbound) {
#ifdef TLSRESUME_TWIN
  client.set_session(ctx.bind(unbound));
#else
  client.set_session(unbound);
#endif
}
