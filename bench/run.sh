#!/usr/bin/env bash
# Runs every benchmark of docs/performance.md and renders its chart: the one documented command.
#
# Usage: bench/run.sh [--quick] [--no-callgrind] [--out DIR]
#
#   --quick         tiny counts (a smoke test; results go to build/bench/results-quick unless --out)
#   --no-callgrind  skip the instruction counts (valgrind)
#   --out DIR       where the JSON and text results go (default bench/results)
#
# Steps: installs what is missing (scripts/install-deps.sh valgrind gnuplot-nox), builds the
# benchmarks in build/bench (Meson, buildtype=release, g++), records the machine, then runs
#   bench_handshake   -> handshake.{json,txt}
#   bench_cache       -> cache.{json,txt}
#   bench_memory      -> memory.{json,txt}
#   compile_cost.py   -> compile_cost.{json,txt}   (g++ -O2)
#   callgrind.py      -> callgrind.{json,txt}      (instruction counts per connection)
# and bench/plot.sh renders docs/performance.svg from handshake.json (not with --quick).
# Takes about 25 minutes on a 2-CPU machine (20 of them callgrind); run it when the machine is
# otherwise idle: CPU times and above all the 2-thread throughputs depend on it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

quick=0 callgrind=1 out=""
while (($#)); do
    case "$1" in
        --quick) quick=1 ;;
        --no-callgrind) callgrind=0 ;;
        --out) out=$2; shift ;;
        -h|--help) sed -n '2,20s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [[ -z "$out" ]]; then
    if ((quick)); then out=build/bench/results-quick; else out=bench/results; fi
fi

log() { printf '==> %s\n' "$*" >&2; }

extra=(gnuplot-nox)
((callgrind)) && extra+=(valgrind)
if ! scripts/install-deps.sh "${extra[@]}"; then
    log "could not install ${extra[*]}; going on with what is there"
fi

build=build/bench
if [[ ! -f "$build/build.ninja" ]]; then
    log "meson setup $build (release, g++)"
    CC=gcc CXX=g++ meson setup "$build" -Dbuildtype=release
fi
log "building the benchmarks"
ninja -C "$build" bench/bench_handshake bench/bench_cache bench/bench_memory >&2

mkdir -p "$out"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "uptime: $(uptime)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "cpus online: $(nproc)"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "kernel: $(uname -sr)"
    echo "openssl: $(openssl version 2>/dev/null || echo unknown)"
    echo "compiler: $(g++ --version | head -n1)"
    echo "os: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
    lscpu 2>/dev/null | grep -E '^(Model name|Thread|Core|Socket|L1d|L2|L3|Hypervisor|Virtualization type|CPU max MHz|BogoMIPS)' |
        sed 's/  */ /g' || true
} >"$out/machine.txt"
cat "$out/machine.txt" >&2

q=()
((quick)) && q=(--quick)
b=$build/bench

log "handshake (load: $(cut -d' ' -f1-3 /proc/loadavg))"
"$b/bench_handshake" "${q[@]}" --json "$out/handshake.json" | tee "$out/handshake.txt"
log "cache (load: $(cut -d' ' -f1-3 /proc/loadavg))"
"$b/bench_cache" "${q[@]}" --json "$out/cache.json" | tee "$out/cache.txt"
log "memory (load: $(cut -d' ' -f1-3 /proc/loadavg))"
"$b/bench_memory" "${q[@]}" --json "$out/memory.json" | tee "$out/memory.txt"
log "compile cost (load: $(cut -d' ' -f1-3 /proc/loadavg))"
python3 bench/compile_cost.py "${q[@]}" --json "$out/compile_cost.json" --cxx g++ | tee "$out/compile_cost.txt"

if ((callgrind)); then
    if command -v valgrind >/dev/null 2>&1; then
        log "callgrind (instruction counts)"
        cg=(--connections 100 --full-connections 30)
        ((quick)) && cg=(--connections 3 --full-connections 2 --cases tls13-ecdsa)
        python3 bench/callgrind.py --exe "$b/bench_handshake" "${cg[@]}" --keep "$build/callgrind" \
            --json "$out/callgrind.json" | tee "$out/callgrind.txt"
    else
        log "valgrind not installed: no instruction counts"
    fi
fi

if ((!quick)); then
    bench/plot.sh "$out/handshake.json" docs/performance.svg || log "no chart (gnuplot missing?)"
fi
log "results in $out"
