#pragma once
// {fmt} support, kept out of the core so that the core does not depend on fmt:
//   fmt::format("{}", ProtocolVersion::tls1_3)       -> "TLSv1.3"
//   fmt::format("{}", session)                        -> "TLSv1.3 TLS_AES_256_GCM_SHA384 ticket resumable"
//   fmt::format("{}", ContextId{7})                   -> "ctx#7"
//   fmt::format("{}", cache.stats())                  -> "hits=997 misses=3 stored=2003 ... sessions=6 peers=3 bytes=14022"
//   fmt::format("{}", ctx.stats())                    -> "received=2003 removed=0 unverified=0 vetoed=0 recent=0"

#include <fmt/format.h>

#include <string_view>

#include "tlsresume/cache.hpp"
#include "tlsresume/context.hpp"
#include "tlsresume/session.hpp"

/// A protocol version as `to_string` names it ("TLSv1.3"); string format specs apply.
template <> struct fmt::formatter<tlsresume::ProtocolVersion> : fmt::formatter<std::string_view> {
  /// Writes `to_string(v)` (no OpenSSL call).
  template <class FormatContext> auto format(tlsresume::ProtocolVersion v, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(tlsresume::to_string(v), ctx);
  }
};

/// A context id as "ctx#N".
template <> struct fmt::formatter<tlsresume::ContextId> : fmt::formatter<std::string_view> {
  /// Writes "ctx#N" (no OpenSSL call).
  template <class FormatContext> auto format(tlsresume::ContextId id, FormatContext& ctx) const {
    return fmt::format_to(ctx.out(), "ctx#{}", static_cast<unsigned long long>(id));
  }
};

/// A one-line summary of a session: protocol, cipher, ticket or id, resumable or not, and the
/// requested server name and ALPN when known. An empty session prints "(empty session)".
template <class Ptr> struct fmt::formatter<tlsresume::Session<Ptr>> : fmt::formatter<std::string_view> {
  /// Reads the session through its accessors (`SSL_SESSION_get_protocol_version`,
  /// `SSL_SESSION_get0_cipher`, `SSL_SESSION_has_ticket`, `SSL_SESSION_is_resumable`,
  /// `SSL_SESSION_get0_alpn_selected`); borrows it, takes no reference.
  template <class FormatContext> auto format(const tlsresume::Session<Ptr>& s, FormatContext& ctx) const {
    if (!s) {
      return fmt::formatter<std::string_view>::format("(empty session)", ctx);
    }
    auto out = fmt::format_to(ctx.out(), "{} {} {} {}", tlsresume::to_string(s.protocol_version()), s.cipher_name(),
                              s.has_ticket() ? "ticket" : "id", s.is_resumable() ? "resumable" : "not-resumable");
    if (!s.requested_server_name().empty()) {
      out = fmt::format_to(out, " sni={}", s.requested_server_name());
    }
    if (!s.alpn().empty()) {
      out = fmt::format_to(out, " alpn={}", s.alpn());
    }
    return out;
  }
};

/// Every counter of a `SessionCache`, as `name=value` pairs in `CacheStats` order.
template <> struct fmt::formatter<tlsresume::CacheStats> : fmt::formatter<std::string_view> {
  /// Writes the counters (no OpenSSL call).
  template <class FormatContext> auto format(const tlsresume::CacheStats& s, FormatContext& ctx) const {
    return fmt::format_to(ctx.out(),
                          "hits={} misses={} stored={} refused={} taken={} reused={} expired={} evicted={} "
                          "superseded={} invalidated={} erased={} vetoed={} sessions={} peers={} bytes={} "
                          "imported={} claimed={} import_dropped={} pending={}",
                          s.hits, s.misses, s.stored, s.refused, s.taken, s.reused, s.expired, s.evicted, s.superseded,
                          s.invalidated, s.erased, s.vetoed, s.sessions, s.peers, s.bytes, s.imported, s.claimed,
                          s.import_dropped, s.pending);
  }
};

/// The counters of a `Context`.
template <> struct fmt::formatter<tlsresume::ContextStats> : fmt::formatter<std::string_view> {
  /// Writes the counters (no OpenSSL call).
  template <class FormatContext> auto format(const tlsresume::ContextStats& s, FormatContext& ctx) const {
    return fmt::format_to(ctx.out(), "received={} removed={} unverified={} vetoed={} recent={}", s.sessions_received,
                          s.sessions_removed, s.sessions_unverified, s.sessions_vetoed, s.recent_sessions);
  }
};
