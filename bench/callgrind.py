#!/usr/bin/env python3
"""Instruction counts of bench_handshake cases under callgrind, and their ratios.

Runs `bench_handshake --callgrind N --case NAME` under
`valgrind --tool=callgrind --collect-atstart=no --toggle-collect=tlsresume_bench_measured`
for each case (set-up, key generation and the priming connection are not counted), reads the
"Collected" instruction count, and reports instructions per connection and, per protocol and key,
tlsresume/raw (full and resumed) and DER-design/tlsresume (resumed). Counts do not depend on the
machine's load, unlike CPU time; they do not see cache misses or lock contention either.

Usage: callgrind.py --exe build/bench/bench/bench_handshake [--connections N] [--full-connections M]
                    [--cases SUBSTRING] [--keep DIR] [--json PATH|-]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile


def count(exe, case, n, out_file):
    cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=tlsresume_bench_measured",
           "--callgrind-out-file=" + out_file, exe, "--callgrind", str(n), "--case", case]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit("callgrind: %s failed" % case)
    m = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
    if not m:
        raise SystemExit("callgrind: no instruction count for %s" % case)
    resumed = re.search(r"(\d+) resumed \(server\)", proc.stdout)
    return int(m.group(1)), int(resumed.group(1)) if resumed else -1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exe", required=True)
    ap.add_argument("--connections", type=int, default=100, help="connections per resumed case")
    ap.add_argument("--full-connections", type=int, default=30, help="connections per full case")
    ap.add_argument("--cases", default="", help="only cases whose name contains this")
    ap.add_argument("--keep", default="", help="keep the callgrind.out files in this directory")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.stderr.write("callgrind: valgrind is not installed (scripts/install-deps.sh valgrind)\n")
        return 3

    cases = subprocess.run([args.exe, "--list"], stdout=subprocess.PIPE, text=True, check=True).stdout.split()
    cases = [c for c in cases if args.cases in c]
    results = {}
    keep = args.keep or tempfile.mkdtemp(prefix="tlsresume-callgrind-")
    os.makedirs(keep, exist_ok=True)
    for case in cases:
        n = args.full_connections if case.endswith("-full") else args.connections
        instructions, resumed = count(args.exe, case, n, os.path.join(keep, "callgrind.%s.out" % case))
        results[case] = {"connections": n, "instructions": instructions, "per_connection": instructions / n,
                         "resumed_by_server": resumed}
        print("%-32s %5d conns %14.0f instructions/connection  resumed %d/%d" %
              (case, n, instructions / n, resumed, n), flush=True)
    if not args.keep:
        shutil.rmtree(keep, ignore_errors=True)

    ratios = []
    prefixes = sorted({re.sub(r"-(raw|tlsresume|der)-(full|resumed)$", "", c) for c in cases})
    for p in prefixes:
        def per(design):
            r = results.get("%s-%s" % (p, design))
            return r["per_connection"] if r else None
        for name, num, den in (("tlsresume/raw full", "tlsresume-full", "raw-full"),
                               ("tlsresume/raw resumed", "tlsresume-resumed", "raw-resumed"),
                               ("DER-design/tlsresume resumed", "der-resumed", "tlsresume-resumed")):
            a, b = per(num), per(den)
            if a and b:
                ratios.append({"group": p, "name": name, "ratio": a / b, "delta_per_connection": a - b})
    print()
    print("%-20s %-30s %8s %16s" % ("group", "ratio (instructions)", "value", "delta/connection"))
    for r in ratios:
        print("%-20s %-30s %8.4f %+16.0f" % (r["group"], r["name"], r["ratio"], r["delta_per_connection"]))

    if args.json:
        text = json.dumps({"benchmark": "callgrind", "cases": results, "ratios": ratios}, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w", encoding="utf-8") as f:
                f.write(text + "\n")
    bad = [c for c, r in results.items() if r["resumed_by_server"] != (r["connections"] if c.endswith("-resumed") else 0)]
    if bad:
        sys.stderr.write("callgrind: unexpected resumption counts: %s\n" % ", ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
