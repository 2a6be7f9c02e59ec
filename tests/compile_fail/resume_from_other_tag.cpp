// Compile-fail case: resume_from_other_tag.
// Rule proved: `Client<Context<A>>::resume_from` accepts only a `SessionCache` of the same tag: a
// cache of `Context<B>` sessions holds sessions of another SSL_CTX type, which SSL_set_session(3)
// forbids. The constraint `cache_for_context<Cache, Context<A>>` rejects it.
// Twin (-DTLSRESUME_TWIN): the same call with a `SessionCache<A>` compiles.
#include <tlsresume/cache.hpp>
#include <tlsresume/client.hpp>

struct A {};
struct B {};

#ifdef TLSRESUME_TWIN
using Cache = tlsresume::SessionCache<A>;
#else
using Cache = tlsresume::SessionCache<B>;
#endif

bool start(tlsresume::Client<tlsresume::Context<A>>& client, Cache& cache, const tlsresume::PeerKey& key) {
  return client.resume_from(cache, key);
}
