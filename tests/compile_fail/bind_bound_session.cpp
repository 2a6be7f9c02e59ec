// Compile-fail case: bind_bound_session.
// Rule proved: `Context::bind` takes only an `UnboundSession`. A session that is already bound
// (`BoundSession<A>`) must not compile: re-binding would let one session carry two contexts;
// moving a session across contexts is `Context::copy_session`'s job.
// Twin (-DTLSRESUME_TWIN): the same call with an `UnboundSession` compiles.
#include <tlsresume/tlsresume.hpp>

struct A {};

#ifdef TLSRESUME_TWIN
using Given = tlsresume::UnboundSession;
#else
using Given = tlsresume::BoundSession<A>;
#endif

tlsresume::BoundSession<A> rebind(const tlsresume::Context<A>& ctx, const Given& session) {
  return ctx.bind(session);
}
