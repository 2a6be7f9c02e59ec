#!/usr/bin/env python3
"""Check the asio_https_get example end to end.

    check_asio_https_get.py PATH_TO_asio_https_get [--openssl PATH_TO_openssl]

  1. The embedded server (an Asio TLS server in the example's process, on 127.0.0.1): `--json`
     and `--json --tls1.2` print exactly 3 request objects; every status is 200; request 1 is a
     full handshake and requests 2 and 3 were offered a session and resumed, by the client's
     SSL_session_reused *and* the embedded server's own (`server_resumed`); the protocol is the
     one asked for. The text mode prints the same 3 requests and a cache line with hits=2 misses=1.
  2. With --openssl: a CA and a "localhost" certificate made now with the openssl command line,
     `openssl s_server -www` on 127.0.0.1 (a port it picks), TLS 1.3 and TLS 1.2: the URL form
     `--cafile ca.pem https://localhost:PORT/` (and by IP, https://127.0.0.1:PORT/) gets 3 times
     status 200, requests 2 and 3 resumed. Without --cafile the CA is not trusted: exit status 1
     and "certificate verify failed" on stderr.
  3. Bad options and URLs exit with status 2 and the usage text on stderr; --help exits 0.

Every subprocess has a timeout; s_server is always stopped. Exit status: 0 = all checks passed,
1 = a check failed, 2 = usage error. Python 3 stdlib only.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # checklib.py is in tests/

from checklib import Checks, SServer, make_pki, run, show  # noqa: E402

REQUESTS = 3
TEXT_ROW = re.compile(r"^request (\d+): HTTP (\d{3}), resumed (yes|no), handshake (\d+\.\d+) ms "
                      r"\((TLSv1\.[23])(?:; the server saw: (resumed|full handshake))?\)$")


def check_json(checks: Checks, label: str, proc: subprocess.CompletedProcess[str], protocol: str,
               embedded: bool) -> None:
    context = show(proc)
    before = len(checks.failures)
    if not checks.ok(proc.returncode == 0, f"{label}: exit status {proc.returncode}, expected 0", context):
        checks.report(before, label)
        return
    rows: list[dict[str, Any]] = []
    for line in proc.stdout.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            checks.ok(False, f"{label}: a line is not JSON ({exc}): {line!r}", context)
            return
        rows.append(row)
    if not checks.ok(len(rows) == REQUESTS, f"{label}: {len(rows)} rows, expected {REQUESTS}", context):
        checks.report(before, label)
        return
    for index, row in enumerate(rows):
        n = index + 1
        later = n > 1
        where = f"{label}: request {n}"
        checks.ok(row.get("request") == n, f"{where}: 'request' is {row.get('request')!r}", context)
        checks.ok(row.get("status") == 200, f"{where}: status {row.get('status')!r}, expected 200", context)
        checks.ok(row.get("protocol") == protocol, f"{where}: protocol {row.get('protocol')!r}, expected {protocol}",
                  context)
        ms = row.get("handshake_ms")
        checks.ok(isinstance(ms, (int, float)) and not isinstance(ms, bool) and ms > 0,
                  f"{where}: handshake_ms {ms!r} should be a number > 0", context)
        checks.ok(row.get("offered") is later, f"{where}: offered is {row.get('offered')!r}, expected {later}", context)
        checks.ok(row.get("resumed") is later, f"{where}: resumed is {row.get('resumed')!r}, expected {later}", context)
        if embedded:
            checks.ok(row.get("server_resumed") is later,
                      f"{where}: the embedded server says resumed={row.get('server_resumed')!r}, expected {later}",
                      context)
        else:
            checks.ok("server_resumed" in row and row["server_resumed"] is None,
                      f"{where}: server_resumed should be null for a URL, got {row.get('server_resumed')!r}", context)
    checks.report(before, f"{label}: request 1 full, requests 2 and 3 resumed ({protocol})"
                  + (", the server agrees" if embedded else ""))


def check_text(checks: Checks, exe: str) -> None:
    proc = run([exe])
    context = show(proc)
    before = len(checks.failures)
    if not checks.ok(proc.returncode == 0, f"text mode: exit status {proc.returncode}", context):
        checks.report(before, "text mode")
        return
    rows = [TEXT_ROW.match(line) for line in proc.stdout.splitlines() if line.startswith("request ")]
    checks.ok(len(rows) == REQUESTS and all(rows), f"text mode: expected {REQUESTS} well-formed request lines",
              context)
    for index, m in enumerate(r for r in rows if r):
        later = index > 0
        checks.ok(m.group(3) == ("yes" if later else "no"), f"text mode: request {index + 1} resumed {m.group(3)}",
                  context)
        checks.ok(m.group(6) == ("resumed" if later else "full handshake"),
                  f"text mode: request {index + 1}: the server saw {m.group(6)!r}", context)
    cache = [line for line in proc.stdout.splitlines() if line.startswith("cache:")]
    fields = dict(f.split("=", 1) for f in cache[0].split()[1:]) if len(cache) == 1 else {}
    checks.ok(fields.get("hits") == "2" and fields.get("misses") == "1",
              "text mode: expected one 'cache:' line with hits=2 misses=1", context)
    checks.report(before, "text mode: 3 request lines, the server agrees, cache hits=2 misses=1")


def check_usage(checks: Checks, exe: str) -> None:
    before = len(checks.failures)
    for args in (["--bogus"], ["ftp://localhost/"], ["https://localhost:0/"], ["https://localhost:99999/"],
                 ["https://[::1/"], ["--cafile"]):
        proc = run([exe, *args])
        checks.ok(proc.returncode == 2 and "usage:" in proc.stderr,
                  f"`{shlex.join(args)}`: expected exit status 2 and the usage on stderr", show(proc))
    proc = run([exe, "--help"])
    checks.ok(proc.returncode == 0 and "usage:" in proc.stdout, "--help: expected exit status 0 and the usage",
              show(proc))
    checks.report(before, "bad options and URLs exit 2, --help exits 0")


def check_s_server(checks: Checks, exe: str, openssl: str) -> None:
    with tempfile.TemporaryDirectory(prefix="asio_https_get-") as tmp:
        pki, error = make_pki(openssl, Path(tmp), "asio_https_get check CA")
        if pki is None:
            checks.ok(False, "could not make certificates with the openssl command", error)
            return
        for flag, protocol in (("tls1_3", "TLSv1.3"), ("tls1_2", "TLSv1.2")):
            server = SServer(openssl, pki, flag, www=True)
            try:
                if not checks.ok(server.wait_ready(), f"s_server -{flag} did not start", server.log()):
                    continue
                for host in ("localhost", "127.0.0.1"):
                    url = f"https://{host}:{server.port}/"
                    check_json(checks, f"s_server -{flag} -www, {url}",
                               run([exe, "--json", "--cafile", str(pki["ca"]), url]), protocol, embedded=False)
                proc = run([exe, f"https://localhost:{server.port}/"])
                before = len(checks.failures)
                checks.ok(proc.returncode == 1 and "certificate verify failed" in proc.stderr
                          and len(proc.stderr.strip().splitlines()) == 1,
                          f"s_server -{flag}, CA not trusted: expected exit status 1 and one line "
                          "'... certificate verify failed ...' on stderr", show(proc))
                checks.report(before, f"s_server -{flag}: an untrusted CA fails with 'certificate verify failed'")
            finally:
                server.stop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Check the asio_https_get example.")
    parser.add_argument("exe")
    parser.add_argument("--openssl")
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        return 2
    checks = Checks(echo=False)
    print("embedded server:")
    check_json(checks, "embedded --json", run([args.exe, "--json"]), "TLSv1.3", embedded=True)
    check_json(checks, "embedded --json --tls1.2", run([args.exe, "--json", "--tls1.2"]), "TLSv1.2", embedded=True)
    check_text(checks, args.exe)
    check_usage(checks, args.exe)
    if args.openssl:
        print("openssl s_server:")
        check_s_server(checks, args.exe, args.openssl)
    else:
        print("SKIP: openssl s_server (no --openssl)")
    if checks.failures:
        print(f"FAIL: {len(checks.failures)} check(s) failed, {checks.passed} passed")
        for failure in checks.failures:
            print(f"  - {failure}")
        return 1
    print(f"OK: {checks.passed} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
