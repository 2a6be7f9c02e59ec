#!/usr/bin/env python3
"""Bounded libFuzzer run of the sessions-file loader.

    run_fuzz.py FUZZ_SEED FUZZ_LOAD WORK_DIR [SECONDS]

1. FUZZ_SEED CORPUS_DIR writes a seed corpus of valid session files (real sessions from real
   handshakes, plain and encrypted) into WORK_DIR/corpus; at least one seed must be written.
2. FUZZ_LOAD -runs=0 on the corpus: every seed must parse without a crash (and the target
   reports how many it accepted).
3. FUZZ_LOAD -max_total_time=SECONDS (default $TLSRESUME_FUZZ_SECONDS or 60) on the corpus, with
   -print_final_stats=1. Any crash, leak, sanitizer report or timeout fails the test.
Prints the executions, executions per second, coverage (cov) and features (ft) reached.
Exit status: 0 = passed, 1 = failed, 2 = usage error.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys


def run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", timeout=timeout)


def main(argv: list[str]) -> int:
    if len(argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    seed, fuzz, work = argv[1], argv[2], argv[3]
    seconds = int(argv[4]) if len(argv) == 5 else int(os.environ.get("TLSRESUME_FUZZ_SECONDS", "60"))
    corpus = os.path.join(work, "corpus")
    artifacts = os.path.join(work, "artifacts") + os.sep
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(corpus)
    os.makedirs(artifacts)

    r = run([seed, corpus], timeout=300)
    print(r.stdout)
    seeds = os.listdir(corpus)
    if r.returncode != 0 or not seeds:
        print(f"FAIL: seed generator exited {r.returncode} with {len(seeds)} seeds")
        return 1
    print(f"{len(seeds)} seed files")

    r = run([fuzz, "-runs=0", f"-artifact_prefix={artifacts}", corpus], timeout=300)
    print(r.stdout[-4000:])
    if r.returncode != 0:
        print("FAIL: the fuzz target crashed on a valid seed")
        return 1

    r = run([fuzz, f"-max_total_time={seconds}", "-print_final_stats=1", "-timeout=10", "-rss_limit_mb=2048",
             f"-artifact_prefix={artifacts}", corpus], timeout=seconds + 600)
    out = r.stdout
    tail = out[-6000:]
    print(tail)
    if r.returncode != 0:
        print(f"FAIL: libFuzzer exited {r.returncode}; artifacts in {artifacts}: {os.listdir(artifacts)}")
        return 1
    execs = re.search(r"stat::number_of_executed_units:\s*(\d+)", out)
    speed = re.search(r"stat::average_exec_per_sec:\s*(\d+)", out)
    last = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", out)
    cov, ft, corp = last[-1] if last else ("?", "?", "?")
    print(f"fuzz figures: {execs.group(1) if execs else '?'} executions in {seconds} s "
          f"({speed.group(1) if speed else '?'}/s), cov {cov}, ft {ft}, corpus {corp} "
          f"(from {len(seeds)} seeds)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
