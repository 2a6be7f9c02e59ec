#!/usr/bin/env bash
# Renders the chart of docs/performance.md from bench_handshake's JSON with gnuplot.
#
# Usage: bench/plot.sh [HANDSHAKE_JSON [OUTPUT_SVG]]
#   defaults: bench/results/handshake.json -> docs/performance.svg
# Needs python3 and gnuplot (Debian: gnuplot-nox; scripts/install-deps.sh gnuplot-nox installs it).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
json=${1:-$root/bench/results/handshake.json}
svg=${2:-$root/docs/performance.svg}

if ! command -v gnuplot >/dev/null 2>&1; then
    echo "plot.sh: gnuplot not found (scripts/install-deps.sh gnuplot-nox); the data is in $json" >&2
    exit 3
fi

tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT

# One row per protocol and key: the median CPU µs per connection of the five designs.
subtitle=$(python3 - "$json" "$tmp/handshake.dat" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1], encoding="utf-8"))
designs = ["raw-full", "tlsresume-full", "raw-resumed", "tlsresume-resumed", "der-resumed"]
protos = {"tls13": "TLS 1.3", "tls12-ticket": "TLS 1.2 ticket", "tls12-id": "TLS 1.2 id"}
keys = {"ecdsa": "ECDSA", "rsa": "RSA"}
rows = {}
order = []
for c in doc["cases"]:
    g = (c["protocol"], c["key"])
    if g not in rows:
        rows[g] = {}
        order.append(g)
    rows[g][c["design"]] = c["cpu_us_per_connection"]
with open(sys.argv[2], "w", encoding="utf-8") as out:
    for g in order:
        label = "%s\\n%s" % (protos.get(g[0], g[0]), keys.get(g[1], g[1]))
        out.write("\t".join(['"%s"' % label] + ["%.1f" % rows[g].get(d, 0) for d in designs]) + "\n")
m = doc.get("machine", {})
print("%s, %s CPUs, %s, load average %s, median of %s alternating runs" % (
    m.get("cpu", "?"), m.get("cpus_online", "?"), m.get("openssl", "?"),
    m.get("load_average_at_start", "?"), doc.get("rounds", "?")))
PY
)

gnuplot -e "datafile='$tmp/handshake.dat'; outfile='$svg'; subtitle='$subtitle'" "$root/bench/performance.gp"
echo "plot.sh: wrote $svg"
