#!/usr/bin/env python3
"""Compile cost of the umbrella header <tlsresume/tlsresume.hpp>.

Times the compiler on three translation units, in alternation (A, B, C, A, B, C, ...), and reports
the median wall time of each:

  baseline   <openssl/ssl.h> and every standard and system header the core headers include
             (found by reading include/tlsresume/*.hpp, the umbrella's closure), nothing else
  umbrella   #include <tlsresume/tlsresume.hpp>, nothing else
  use        the umbrella plus the README's loop (Context, Client, resume_from, SessionCache):
             what a translation unit that uses the library instantiates

for each mode: `-fsyntax-only` (parsing) and `-O2 -c` (code generation too). The time of a run is
the CPU time (user + system) of the compiler process and its children, which the machine's other
load disturbs less than the wall time (also recorded). The target of issue 5 is
"umbrella - baseline <= 0.3 s with g++ -O2".

Usage: compile_cost.py [--cxx g++ ...] [--include DIR] [--runs N] [--json PATH|-] [--quick]
(--cxx takes the rest of the command line: the compiler command and any flags of its own.)
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_INCLUDE = os.path.normpath(os.path.join(HERE, "..", "include"))

USE_BODY = r"""
#include <chrono>
struct Api {};
void connect_three_times(int fd) {
  auto ctx = tlsresume::Context<Api>::create();
  tlsresume::SessionCache<Api> cache;
  for (int i = 0; i < 3; ++i) {
    tlsresume::Client<tlsresume::Context<Api>> client(ctx);
    client.resume_from(cache, ctx.key_for("example.com", 443));
    client.set_fd(fd);
    client.connect();
    client.await_tickets(std::chrono::milliseconds(50));
    client.shutdown();
  }
  (void)cache.stats();
}
"""


def umbrella_closure(include_dir):
    """The system headers (<...> not tlsresume's own) included by the umbrella header, transitively."""
    seen, system = set(), set()
    todo = ["tlsresume/tlsresume.hpp"]
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        with open(os.path.join(include_dir, rel), encoding="utf-8") as f:
            text = f.read()
        for m in re.finditer(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', text, re.M):
            name = m.group(2)
            if name.startswith("tlsresume/"):
                todo.append(name)
            else:
                system.add(name)
    return sorted(system)


def baseline_source(include_dir):
    headers = [h for h in umbrella_closure(include_dir) if not h.startswith("openssl/")]
    # Windows-only headers sit behind #if in the sources; leave them out here.
    headers = [h for h in headers if h not in ("ws2tcpip.h", "winsock2.h", "windows.h")]
    lines = ["#include <openssl/ssl.h>"] + ["#include <%s>" % h for h in headers]
    return "\n".join(lines) + "\n", headers


def time_compile(cmd):
    """(wall seconds, CPU seconds = user + system of the compiler and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.stderr.write("compile_cost: command failed: %s\n%s" % (" ".join(cmd), proc.stderr))
        raise SystemExit(1)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--include", default=DEFAULT_INCLUDE, help="tlsresume's include directory")
    ap.add_argument("--runs", type=int, default=9, help="compilations of each TU per mode (median)")
    ap.add_argument("--json", default="", help="write JSON results to PATH ('-' for stdout)")
    ap.add_argument("--quick", action="store_true", help="one run, -fsyntax-only only (CI smoke test)")
    ap.add_argument("--cxx", nargs=argparse.REMAINDER, default=["g++"], help="compiler command (last option)")
    args = ap.parse_args()
    cxx = args.cxx or ["g++"]
    runs = 1 if args.quick else max(1, args.runs)
    modes = {"syntax-only": ["-fsyntax-only"]} if args.quick else {"syntax-only": ["-fsyntax-only"], "O2 -c": ["-O2", "-c"]}

    base_src, headers = baseline_source(args.include)
    sources = {
        "baseline": base_src,
        "umbrella": "#include <tlsresume/tlsresume.hpp>\n",
        "use": "#include <tlsresume/tlsresume.hpp>\n" + USE_BODY,
    }
    version = subprocess.run(cxx + ["--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    version = version.splitlines()[0] if version else "unknown"
    results = {}
    with tempfile.TemporaryDirectory(prefix="tlsresume-compile-cost-") as tmp:
        paths = {}
        for name, text in sources.items():
            paths[name] = os.path.join(tmp, name + ".cpp")
            with open(paths[name], "w", encoding="utf-8") as f:
                f.write(text)
        for mode, flags in modes.items():
            walls = {name: [] for name in sources}
            cpus = {name: [] for name in sources}
            for _ in range(runs):
                for name, path in paths.items():
                    out = os.path.join(tmp, name + ".o")
                    cmd = cxx + ["-std=c++20", "-I", args.include] + flags + [path]
                    if "-c" in flags:
                        cmd += ["-o", out]
                    wall, cpu = time_compile(cmd)
                    walls[name].append(wall)
                    cpus[name].append(cpu)
            results[mode] = {name: {"median_s": statistics.median(cpus[name]), "runs_s": cpus[name],
                                    "median_wall_s": statistics.median(walls[name]), "runs_wall_s": walls[name]}
                             for name in sources}

    with open("/proc/loadavg", encoding="utf-8") as f:
        load = " ".join(f.read().split()[:3])
    print("# compile cost: %s, median of %d alternating runs, CPU seconds (user + system) of the compiler;"
          " wall seconds in brackets" % (version, runs))
    print("# baseline TU: <openssl/ssl.h> + %d standard/system headers the core includes" % len(headers))
    print("# load average at end: %s" % load)
    print("%-12s %18s %18s %18s %16s %16s" % ("mode", "baseline", "umbrella", "use", "umbrella-base", "use-base"))
    verdicts = []
    for mode, r in results.items():
        b, u, s = (r[n]["median_s"] for n in ("baseline", "umbrella", "use"))
        bw, uw, sw = (r[n]["median_wall_s"] for n in ("baseline", "umbrella", "use"))
        print("%-12s %8.3f [%7.3f] %8.3f [%7.3f] %8.3f [%7.3f] %+7.3f [%+6.3f] %+7.3f [%+6.3f]" % (
            mode, b, bw, u, uw, s, sw, u - b, uw - bw, s - b, sw - bw))
        if mode == "O2 -c":
            verdicts.append(("umbrella - baseline, g++ -O2 -c (CPU)", u - b, u - b <= 0.3))
    for name, value, met in verdicts:
        print("target: %s = %+.3f s (<= +0.300 s): %s" % (name, value, "met" if met else "MISSED"))

    if args.json:
        doc = {
            "benchmark": "compile_cost",
            "compiler": version,
            "command": cxx,
            "runs": runs,
            "baseline_headers": ["openssl/ssl.h"] + headers,
            "load_average_at_end": load,
            "modes": results,
        }
        text = json.dumps(doc, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w", encoding="utf-8") as f:
                f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
