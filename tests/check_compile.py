#!/usr/bin/env python3
"""Run a compiler command and check that it fails (or passes) as expected.

Used by the Meson compile-fail tests:

    check_compile.py --expect fail|pass [--diagnostic REGEX]... -- COMPILER [ARGS...]

--expect fail   succeed only if the compiler exits non-zero (normally, not by
                crashing) and every --diagnostic REGEX is found in its combined
                stdout+stderr (Python `re.search`, MULTILINE).
--expect pass   succeed only if the compiler exits 0.

Exit status: 0 = as expected, 1 = not as expected, 2 = usage error.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
COMPILER_CRASH = re.compile(
    r"internal compiler error|PLEASE submit a bug report|Stack dump:"
)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="check_compile.py",
        usage="%(prog)s --expect fail|pass [--diagnostic REGEX]... -- COMPILER [ARGS...]",
        description="Check that a compiler command fails (or passes) as expected.",
    )
    parser.add_argument("--expect", required=True, choices=("fail", "pass"))
    parser.add_argument(
        "--diagnostic",
        action="append",
        default=[],
        metavar="REGEX",
        help="regex that must appear in the compiler output (repeatable; --expect fail only)",
    )
    if "--" not in argv:
        parser.error("missing '--' before the compiler command")
    sep = argv.index("--")
    args = parser.parse_args(argv[:sep])
    command = argv[sep + 1 :]
    if not command:
        parser.error("no compiler command given after '--'")
    if args.diagnostic and args.expect == "pass":
        parser.error("--diagnostic only makes sense with --expect fail")
    return args, command


def main(argv: list[str]) -> int:
    args, command = parse_args(argv)
    try:
        patterns = [(p, re.compile(p, re.MULTILINE)) for p in args.diagnostic]
    except re.error as exc:
        print(f"check_compile.py: invalid --diagnostic regex: {exc}", file=sys.stderr)
        return 2

    print("$ " + shlex.join(command), flush=True)
    try:
        proc = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    except OSError as exc:
        print(f"FAIL: could not run compiler: {exc}")
        return 1
    output = ANSI_ESCAPE.sub("", proc.stdout.decode("utf-8", errors="replace"))
    rc = proc.returncode

    def report(verdict: str, *lines: str) -> int:
        print(verdict)
        for line in lines:
            print("  " + line)
        print(f"--- compiler output (exit status {rc}) ---")
        print(output.rstrip("\n") if output.strip() else "(no output)")
        print("--- end of compiler output ---")
        return 0 if verdict.startswith("OK") else 1

    if args.expect == "pass":
        if rc == 0:
            print("OK: compiled successfully, as expected")
            return 0
        return report("FAIL: expected the code to compile, but the compiler failed")

    # --expect fail
    if rc == 0:
        return report("FAIL: expected a compile error, but the code compiled")
    if rc < 0 or COMPILER_CRASH.search(output):
        return report("FAIL: the compiler crashed (not a genuine compile error)")
    missing = [p for p, rx in patterns if not rx.search(output)]
    if missing:
        return report(
            "FAIL: the compiler failed, but not with the expected diagnostic(s)",
            *(f"missing: /{p}/" for p in missing),
        )
    print("OK: compile failed as expected")
    for p, _ in patterns:
        print(f"  matched: /{p}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
