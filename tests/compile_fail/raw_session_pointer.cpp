// Compile-fail case: raw_session_pointer.
// Rule proved: `Client::set_session` does not take a raw `SSL_SESSION*`: a raw pointer carries
// neither ownership nor the context it came from, so it is not a `tlsresume_session` (hence not
// `session_from_this_context`). It has to be wrapped by the context it belongs to.
// Twin (-DTLSRESUME_TWIN): the same pointer wrapped with `ctx.share_session(raw)` compiles.
#include <openssl/ssl.h>

#include <tlsresume/tlsresume.hpp>

struct A {};

void offer([[maybe_unused]] const tlsresume::Context<A>& ctx, tlsresume::Client<tlsresume::Context<A>>& client,
           SSL_SESSION* raw) {
#ifdef TLSRESUME_TWIN
  client.set_session(ctx.share_session(raw));
#else
  client.set_session(raw);
#endif
}
