#!/usr/bin/env python3
"""Per-function difference of two callgrind profiles, per connection (or per operation).

Usage: callgrind_diff.py A.out B.out N [--inclusive] [--top K]

Runs `callgrind_annotate` on both files, and prints, for the K functions whose cost differs most,
(cost in A - cost in B) / N: e.g. A = tlsresume-resumed, B = raw-resumed, N = the connections of
each run (bench/callgrind.py --keep DIR keeps the files). Self cost by default; --inclusive for
inclusive cost (then callers and callees both count the same instructions).
"""
import argparse
import re
import subprocess
import sys


def profile(path, inclusive):
    out = subprocess.run(["callgrind_annotate", "--inclusive=" + ("yes" if inclusive else "no"), "--threshold=100", path],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True).stdout
    costs = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*?) \[", line)
        if m:
            costs[m.group(2)] = costs.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return costs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("n", type=int)
    ap.add_argument("--inclusive", action="store_true")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    if args.n <= 0:
        sys.exit("callgrind_diff: N must be positive")
    a, b = profile(args.a, args.inclusive), profile(args.b, args.inclusive)
    rows = sorted(((a.get(k, 0) - b.get(k, 0), k) for k in set(a) | set(b)), key=lambda r: -abs(r[0]))
    total = sum(a.values()) - sum(b.values()) if not args.inclusive else None
    for diff, name in rows[:args.top]:
        print(f"{diff / args.n:12.0f}  {name[:160]}")
    if total is not None:
        print(f"{total / args.n:12.0f}  (all functions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
