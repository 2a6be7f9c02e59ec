#!/usr/bin/env python3
"""Check the resume_demo example end to end.

    check_demo.py PATH_TO_resume_demo

Runs `resume_demo --json` and checks its one-JSON-object-per-line output:

  - the demo exits with status 0 (within 60 s);
  - every non-empty line is a JSON object with the keys
        connection (int, 1-based within its protocol), protocol ("TLSv1.3" or "TLSv1.2"),
        cipher (non-empty str), resumed_client (bool), resumed_server (bool),
        handshake_cpu_us (number > 0);
  - there are exactly 5 rows for each of TLSv1.3 and TLSv1.2, numbered 1..5 in order;
  - the first row of each protocol is a full handshake (not resumed on either side) and every
    later row is resumed on both sides (the client's and the server's SSL_session_reused).

Then runs `resume_demo` (the human-readable table) and checks that it exits with status 0 and
prints 10 data rows, 5 containing "TLSv1.3" and 5 containing "TLSv1.2", and one "cache:" line per
protocol with hits=4 misses=1 (the demo's SessionCache counters).

Exit status: 0 = all checks passed, 1 = a check failed, 2 = usage error. Python 3 stdlib only.
"""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys
from typing import Any

TIMEOUT_S = 60
PROTOCOLS = ("TLSv1.3", "TLSv1.2")
ROWS_PER_PROTOCOL = 5
KEYS: dict[str, str] = {
    "connection": "int",
    "protocol": "str",
    "cipher": "str",
    "resumed_client": "bool",
    "resumed_server": "bool",
    "handshake_cpu_us": "number",
}


def run(command: list[str]) -> tuple[subprocess.CompletedProcess[str] | None, str]:
    """Runs `command`; returns (result, "") or (None, reason it could not run)."""
    try:
        proc = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            timeout=TIMEOUT_S,
            text=True,
            errors="replace",
        )
    except subprocess.TimeoutExpired:
        return None, f"`{shlex.join(command)}` did not finish within {TIMEOUT_S} s"
    except OSError as exc:
        return None, f"could not run `{shlex.join(command)}`: {exc}"
    return proc, ""


def describe_exit(rc: int) -> str:
    return f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"


def type_ok(value: Any, kind: str) -> bool:
    # bool is a subclass of int in Python: keep them apart.
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


def check_json_mode(demo: str, failures: list[str]) -> dict[str, list[dict[str, Any]]]:
    command = [demo, "--json"]
    proc, error = run(command)
    by_protocol: dict[str, list[dict[str, Any]]] = {p: [] for p in PROTOCOLS}
    if proc is None:
        failures.append(error)
        return by_protocol
    context = f"\n--- stdout of `{shlex.join(command)}` ---\n{proc.stdout.rstrip()}" \
              f"\n--- stderr ---\n{proc.stderr.rstrip()}\n--- end ---"
    before = len(failures)
    if proc.returncode != 0:
        failures.append(f"`{shlex.join(command)}` ended with {describe_exit(proc.returncode)}, expected 0")

    rows: list[tuple[int, dict[str, Any]]] = []
    for line_no, line in enumerate(proc.stdout.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"--json output line {line_no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            failures.append(f"{where} is not JSON ({exc}): {line!r}")
            continue
        if not isinstance(obj, dict):
            failures.append(f"{where} is not a JSON object: {line!r}")
            continue
        bad = False
        for key, kind in KEYS.items():
            if key not in obj:
                failures.append(f"{where}: missing key {key!r}: {line!r}")
                bad = True
            elif not type_ok(obj[key], kind):
                failures.append(f"{where}: {key!r} should be {kind}, got {obj[key]!r}")
                bad = True
        if bad:
            continue
        if obj["protocol"] not in PROTOCOLS:
            failures.append(f"{where}: unexpected protocol {obj['protocol']!r} (expected one of {PROTOCOLS})")
            continue
        rows.append((line_no, obj))

    for line_no, obj in rows:
        by_protocol[obj["protocol"]].append(obj)

    for protocol in PROTOCOLS:
        prows = by_protocol[protocol]
        if len(prows) != ROWS_PER_PROTOCOL:
            failures.append(f"{protocol}: expected exactly {ROWS_PER_PROTOCOL} rows, got {len(prows)}")
        for index, obj in enumerate(prows):
            n = obj["connection"]
            name = f"{protocol} connection {n} (row {index + 1} of {protocol})"
            if n != index + 1:
                failures.append(f"{name}: connection number should be {index + 1}")
            if not obj["cipher"].strip():
                failures.append(f"{name}: empty cipher")
            if not obj["handshake_cpu_us"] > 0:
                failures.append(f"{name}: handshake_cpu_us should be > 0, got {obj['handshake_cpu_us']!r}")
            expected = index > 0
            for side in ("resumed_client", "resumed_server"):
                if obj[side] != expected:
                    what = "be resumed (every connection after the first)" if expected \
                        else "be a full handshake (the first connection)"
                    failures.append(f"{name}: {side} is {str(obj[side]).lower()}, "
                                    f"expected {str(expected).lower()}: it should {what}")
    if len(failures) > before:
        failures.append(context)
    return by_protocol


def check_table_mode(demo: str, failures: list[str]) -> int:
    command = [demo]
    proc, error = run(command)
    if proc is None:
        failures.append(error)
        return 0
    before = len(failures)
    if proc.returncode != 0:
        failures.append(f"`{demo}` (table mode) ended with {describe_exit(proc.returncode)}, expected 0")
    data_rows = [line for line in proc.stdout.splitlines() if any(p in line for p in PROTOCOLS)]
    expected_total = ROWS_PER_PROTOCOL * len(PROTOCOLS)
    if len(data_rows) != expected_total:
        failures.append(f"table mode: expected {expected_total} data rows containing "
                        f"{' or '.join(PROTOCOLS)}, got {len(data_rows)}")
    for protocol in PROTOCOLS:
        count = sum(1 for line in data_rows if protocol in line)
        if count != ROWS_PER_PROTOCOL:
            failures.append(f"table mode: expected {ROWS_PER_PROTOCOL} rows containing {protocol}, got {count}")
    if any(line.lstrip().startswith("{") for line in proc.stdout.splitlines()):
        failures.append("table mode printed JSON (it should only with --json)")
    # One SessionCache per protocol: 1 miss (the full handshake), then 4 hits.
    cache_lines = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("cache:")]
    if len(cache_lines) != len(PROTOCOLS):
        failures.append(f"table mode: expected {len(PROTOCOLS)} 'cache:' lines, got {len(cache_lines)}")
    for line in cache_lines:
        fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        if fields.get("hits") != str(ROWS_PER_PROTOCOL - 1) or fields.get("misses") != "1":
            failures.append(f"table mode: expected hits={ROWS_PER_PROTOCOL - 1} misses=1 in {line!r}")
    if len(failures) > before:
        failures.append(f"--- stdout of `{demo}` ---\n{proc.stdout.rstrip()}"
                        f"\n--- stderr ---\n{proc.stderr.rstrip()}\n--- end ---")
    return len(data_rows)


def summary(by_protocol: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    for protocol in PROTOCOLS:
        prows = by_protocol[protocol]
        full = prows[0]["handshake_cpu_us"]
        resumed = statistics.median(r["handshake_cpu_us"] for r in prows[1:])
        ciphers = sorted({r["cipher"] for r in prows})
        lines.append(f"  {protocol}: 1 full + {len(prows) - 1} resumed on both sides, cipher {', '.join(ciphers)}; "
                     f"client CPU full {full:.0f} us, resumed median {resumed:.0f} us")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: check_demo.py PATH_TO_resume_demo", file=sys.stderr)
        return 2
    demo = argv[0]
    failures: list[str] = []
    by_protocol = check_json_mode(demo, failures)
    table_rows = check_table_mode(demo, failures)
    if failures:
        print(f"FAIL: {demo}")
        for failure in failures:
            print(failure if failure.startswith("\n") or failure.startswith("---") else f"  - {failure}")
        return 1
    print(f"OK: {demo}: {ROWS_PER_PROTOCOL} connections per protocol, "
          f"every connection after the first resumed (client and server agree); table mode: {table_rows} rows")
    print(summary(by_protocol))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
