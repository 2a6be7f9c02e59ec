// Compile-fail case: session_other_tag.
// Rule proved: `Client<Context<A>>::set_session` accepts only a session bound to a context of the
// same tag. A `BoundSession<B>` (bound to a `Context<B>`) must not compile: the constraint
// `session_from_this_context<S, Context<A>>` rejects it (SSL_set_session(3): a session belongs to
// the SSL_CTX it came from).
// Twin (-DTLSRESUME_TWIN): the same call with a `BoundSession<A>` compiles.
#include <tlsresume/tlsresume.hpp>

struct A {};
struct B {};

#ifdef TLSRESUME_TWIN
using Offered = tlsresume::BoundSession<A>;
#else
using Offered = tlsresume::BoundSession<B>;
#endif

void offer(tlsresume::Client<tlsresume::Context<A>>& client, const Offered& session) {
  client.set_session(session);
}
