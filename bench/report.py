#!/usr/bin/env python3
"""Markdown tables for docs/performance.md from the JSON results of bench/run.sh.

Usage: report.py [RESULTS_DIR]   (default bench/results; writes to standard output)
Reads handshake.json, callgrind.json, cache.json, memory.json and compile_cost.json where present.
"""

import json
import os
import statistics
import sys

PROTOS = {"tls13": "TLS 1.3 (ticket)", "tls12-ticket": "TLS 1.2 (ticket)", "tls12-id": "TLS 1.2 (session id)"}
KEYS = {"ecdsa": "ECDSA P-256", "rsa": "RSA-2048"}
DESIGNS = ["raw-full", "tlsresume-full", "raw-resumed", "tlsresume-resumed", "der-resumed"]


def load(d, name):
    path = os.path.join(d, name)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def verdict(ok):
    return "**met**" if ok else "**missed**"


def handshake(doc, cg):
    out = []
    cases = {(c["protocol"], c["key"], c["design"]): c for c in doc["cases"]}
    groups = []
    for c in doc["cases"]:
        if (c["protocol"], c["key"]) not in groups:
            groups.append((c["protocol"], c["key"]))
    out.append("CPU µs per connection = client + server CPU time (CLOCK_THREAD_CPUTIME_ID over a run), median of "
               "%d alternating runs; conn/s = connections per wall-clock second (median); resumed = connections the "
               "*server* resumed (`SSL_session_reused`) / connections; hits = `SessionCache` hits." % doc["rounds"])
    out.append("")
    out.append("| protocol | key | design | CPU µs/conn | min–max | conn/s | resumed (server) | cache hits |")
    out.append("|---|---|---|---:|---:|---:|---:|---:|")
    for p, k in groups:
        for d in DESIGNS:
            c = cases.get((p, k, d))
            if not c:
                continue
            runs = c["cpu_us_runs"]
            hits = str(c["cache_hits"]) if d == "tlsresume-resumed" else "–"
            out.append("| %s | %s | %s | %.1f | %.0f–%.0f | %.0f | %d/%d | %s |" % (
                PROTOS.get(p, p), KEYS.get(k, k), d, c["cpu_us_per_connection"], min(runs), max(runs),
                c["connections_per_second"], c["resumed_by_server"], c["connections"], hits))
    out.append("")
    ratios = {}
    for r in doc["ratios"]:
        group, _, name = r["name"].partition(" ")
        key, _, name = name.partition(" ")
        ratios[(group, key, name)] = r
    cg_ratios = {}
    if cg:
        for r in cg["ratios"]:
            cg_ratios[(r["group"], r["name"])] = r
    out.append("Ratios of CPU per connection (median of the per-round ratios, with their range) and of instructions "
               "per connection (callgrind, fixed count):")
    out.append("")
    out.append("| protocol | key | tlsresume/raw full | tlsresume/raw resumed (≤ 1.02) | instr. | DER/tlsresume resumed | "
               "instr. | target |")
    out.append("|---|---|---:|---:|---:|---:|---:|---|")
    for p, k in groups:
        full = ratios.get((p, k, "tlsresume/raw full"))
        res = ratios.get((p, k, "tlsresume/raw resumed"))
        der = ratios.get((p, k, "DER-design/tlsresume resumed"))
        g = "%s-%s" % (p, k)
        cg_res = cg_ratios.get((g, "tlsresume/raw resumed"))
        cg_der = cg_ratios.get((g, "DER-design/tlsresume resumed"))
        need = 1.25 if p == "tls13" else 1.8

        def fmt(r):
            if not r:
                return "–"
            return "%.3f (%.3f–%.3f)" % (r["median"], min(r["per_round"]), max(r["per_round"]))

        res_ok = res and res["median"] <= 1.02
        der_ok = der and der["median"] >= need
        out.append("| %s | %s | %s | %s | %s | %s | %s | ≤ 1.02: %s; DER ≥ %.2f×: %s |" % (
            PROTOS.get(p, p), KEYS.get(k, k), fmt(full), fmt(res),
            "%.4f" % cg_res["ratio"] if cg_res else "–", fmt(der), "%.3f" % cg_der["ratio"] if cg_der else "–",
            verdict(res_ok), need, verdict(der_ok)))
    out.append("")
    return out


def callgrind(cg):
    out = ["| case | connections | instructions per connection |", "|---|---:|---:|"]
    for name, r in cg["cases"].items():
        out.append("| %s | %d | %.0f |" % (name, r["connections"], r["per_connection"]))
    out.append("")
    return out


def cache(doc):
    out = []
    lat = doc["latency"]
    out.append("Single-thread latency, ns per operation (each operation timed alone with `steady_clock`, the clock's "
               "own %.0f ns subtracted); %d rounds × %d operations of each kind per cache, alternating." % (
                   doc["clock_overhead_ns"], doc["rounds"], doc["ops_per_round"]))
    out.append("")
    peers = sorted({l["peers"] for l in lat if l["peers"] > 0})
    caches = ["SingleThreadPolicy", "ThreadSafePolicy", "ShardedPolicy", "baseline"]
    ops = [("take", "take (TLS 1.3 hit)"), ("take12", "take (TLS 1.2 hit)"), ("put", "put (TLS 1.3)"), ("miss", "miss")]
    out.append("| peers | operation | " + " | ".join(caches) + " |")
    out.append("|---:|---|" + "---:|" * len(caches))
    index = {(l["peers"], l["cache"], l["op"]): l for l in lat}
    for p in peers:
        for op, label in ops:
            cells = []
            for c in caches:
                l = index.get((p, c, op))
                cells.append("%.0f / %.0f" % (l["median_ns"], l["p99_ns"]) if l else "–")
            out.append("| %s | %s | %s |" % ("{:,}".format(p), label, " | ".join(cells)))
    out.append("")
    out.append("(median / p99 ns). Worst single operation seen (max ns): " + "; ".join(
        "%s %s %s peers %.0f" % (l["cache"], l["op"], "{:,}".format(l["peers"]), l["max_ns"])
        for l in lat if l["peers"] > 0 and l["op"] == "put" and l["cache"] != "baseline"))
    out.append("")
    k = [l for l in lat if l["peers"] == 0]
    if k:
        out.append("Key construction per connection: " + ", ".join(
            "`%s` %.0f ns median (p99 %.0f)" % ("ctx.key_for(host, port)" if l["op"] == "key_for" else "host + \":\" + port",
                                               l["median_ns"], l["p99_ns"]) for l in k) + ".")
        out.append("")
    thr = doc["throughput"]
    out.append("Throughput, million cache operations per second (median of %d alternating runs of %d ms; a ticket "
               "cycle is a take and a put, 2 operations):" % (doc["rounds"], doc["duration_ms"]))
    out.append("")
    out.append("| peers | workload | threads | " + " | ".join(caches) + " |")
    out.append("|---:|---|---:|" + "---:|" * len(caches))
    tindex = {(t["peers"], t["workload"], t["cache"], t["threads"]): t for t in thr}
    for p in peers:
        for w in ("tls12 hits", "ticket cycle"):
            for th in (1, 2):
                cells = []
                for c in caches:
                    t = tindex.get((p, w, c, th))
                    cells.append("%.2f" % (t["ops_per_s"] / 1e6) if t else "–")
                out.append("| %s | %s | %d | %s |" % ("{:,}".format(p), w, th, " | ".join(cells)))
    out.append("")
    out.append("| target | value | rule | |")
    out.append("|---|---:|---|---|")
    for t in doc["targets"]:
        out.append("| %s | %.3f | %s | %s |" % (t["name"], t["value"], t["rule"], verdict(t["met"])))
    for n in doc.get("notes", []):
        out.append("")
        out.append("Note: " + n)
    out.append("")
    return out


def memory(doc):
    out = ["%d sessions, bytes by `mallinfo2` (uordblks + hblkhd) deltas." % doc["sessions"], ""]
    out.append("| server key | DER of the session | SSL_SESSION + own peer cert | SSL_SESSION_dup (shared cert) |")
    out.append("|---|---:|---:|---:|")
    for r in doc["results"]:
        out.append("| %s | %.0f B | %.0f B | %.0f B |" % (KEYS.get(r["key"], r["key"]), r["der_bytes"],
                                                         r["session_own_certificate_bytes"], r["session_dup_bytes"]))
    out.append("")
    out.append("| server key | layout | peers | our overhead per session (malloc) | our estimate (stats().bytes − the session estimate) "
               "| stats().bytes per session | baseline overhead (malloc) | ≤ 256 B |")
    out.append("|---|---|---:|---:|---:|---:|---:|---|")
    for r in doc["results"]:
        for s in r["scenarios"]:
            out.append("| %s | %s | %s | %.0f B | %.0f B | %.0f B | %.0f B | %s |" % (
                KEYS.get(r["key"], r["key"]), s["name"], "{:,}".format(s["peers"]), s["overhead_allocator_bytes"],
                s["overhead_estimate_bytes"], s["stats_bytes_per_session"], s["baseline_overhead_bytes"],
                verdict(s["target_met"])))
    out.append("")
    return out


def compile_cost(doc):
    out = ["%s, median of %d alternating runs: CPU seconds (user + system) of the compiler, wall seconds in "
           "brackets; baseline = `<openssl/ssl.h>` + the %d standard and system headers the core includes." % (
               doc["compiler"], doc["runs"], len(doc["baseline_headers"]) - 1), ""]
    out.append("| mode | baseline | umbrella | umbrella − baseline (≤ 0.3 s) | umbrella + README loop | − baseline |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for mode, r in doc["modes"].items():
        b, u, s = (r[n]["median_s"] for n in ("baseline", "umbrella", "use"))
        bw, uw, sw = (r[n].get("median_wall_s", 0) for n in ("baseline", "umbrella", "use"))
        out.append("| `%s` | %.2f [%.2f] | %.2f [%.2f] | %+.2f [%+.2f] | %.2f [%.2f] | %+.2f [%+.2f] |" % (
            mode, b, bw, u, uw, u - b, uw - bw, s, sw, s - b, sw - bw))
    out.append("")
    return out


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    lines = []
    hs, cg = load(d, "handshake.json"), load(d, "callgrind.json")
    if hs:
        lines += ["### Handshake path", ""] + handshake(hs, cg)
    if cg:
        lines += ["### Instructions per connection (callgrind)", ""] + callgrind(cg)
    c = load(d, "cache.json")
    if c:
        lines += ["### Cache operations", ""] + cache(c)
    m = load(d, "memory.json")
    if m:
        lines += ["### Memory", ""] + memory(m)
    cc = load(d, "compile_cost.json")
    if cc:
        lines += ["### Compile cost", ""] + compile_cost(cc)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
