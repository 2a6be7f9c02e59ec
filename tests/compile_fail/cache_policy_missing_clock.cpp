// Compile-fail case: cache_policy_missing_clock.
// Rule proved: a `SessionCache` policy must name every requirement of the `cache_policy` concept;
// one without `clock_type` (the clock that decides expiry) is rejected, and the diagnostic names
// the concept and the missing requirement.
// Twin (-DTLSRESUME_TWIN): the same policy with `clock_type` compiles.
#include <tlsresume/cache.hpp>

#include <chrono>
#include <cstddef>
#include <mutex>

struct A {};

struct PolicyWithoutClock {
  using lock_type = std::mutex;
#ifdef TLSRESUME_TWIN
  using clock_type = std::chrono::system_clock;
#endif
  static constexpr std::size_t max_peers = 8;
  static constexpr std::size_t max_tickets_per_peer = 2;
};

std::size_t count_sessions(const tlsresume::SessionCache<A, PolicyWithoutClock>& cache) {
  return cache.stats().sessions;
}
