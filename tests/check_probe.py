#!/usr/bin/env python3
"""Check the tlsresume-probe tool end to end.

    check_probe.py PATH_TO_tlsresume-probe [--openssl PATH_TO_openssl]

  1. The embedded server (no network): `--count 3 --json`, and the same with `--tls1.2`, print 3
     connection objects and a summary; the first connection is a full handshake, the next two are
     offered a session and resumed (the client's and the embedded server's view). `--http-get /`
     reports status 200 and the negotiated ALPN; the table mode prints 3 rows and a cache line.
  2. Interop with `openssl s_server` (a child process on 127.0.0.1, a free port, with a CA and a
     "localhost" certificate made now with the openssl command line): for TLS 1.2 and TLS 1.3,
     plain and `-www` with `--http-get /` (status 200), connections 2..N resume. Also by name
     (localhost:PORT) and, when ::1 is usable, over IPv6 ([::1]:PORT, verified against the IP).
  3. Failed verification: without --cafile (the CA is in no system store) the probe exits 1 with
     one line on stderr naming the verification reason, and caches nothing; a wrong --servername
     gives "hostname mismatch".
  4. Persistence (when the probe was built with <tlsresume/persist.hpp>; otherwise SKIP): two runs
     with one --sessions FILE against the same s_server: the second run's first connection
     resumes; FILE has mode 0600; the same with --key-file (32 random bytes, and 64 hex digits);
     a wrong key file, or a corrupt FILE, fails with exit 1, a message, and FILE left as it was.
  5. Bad options exit with status 2 and the usage text on stderr; --help exits 0.

Every subprocess has a timeout; s_server is always killed. Exit status: 0 = all checks passed
(some may print SKIP), 1 = a check failed, 2 = usage error. Python 3 stdlib only.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # checklib.py sits next to this script

from checklib import Checks, SServer, make_pki, show  # noqa: E402
import checklib  # noqa: E402

TIMEOUT_S = 30          # any one probe command
COUNT = 3


def run(command: list[str], timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return checklib.run(command, timeout)


def json_lines(proc: subprocess.CompletedProcess[str]) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str]:
    """(connection objects, summary object, error) from --json output."""
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] | None = None
    for line in proc.stdout.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            return rows, summary, f"not JSON ({exc}): {line!r}"
        if not isinstance(obj, dict):
            return rows, summary, f"not a JSON object: {line!r}"
        if obj.get("summary") is True:
            summary = obj
        else:
            rows.append(obj)
    return rows, summary, ""


ROW_KEYS = {"n": int, "resumed": bool, "offered": bool, "protocol": str, "cipher": str, "handshake_us": int,
            "tickets_received": int, "server_name": str}


def check_run(checks: Checks, label: str, proc: subprocess.CompletedProcess[str], *, count: int = COUNT,
              protocol: str | None = None, first_resumed: bool = False, http: bool = False,
              server_resumed: bool = False, alpn: str | None = None) -> list[dict[str, Any]]:
    """The probe succeeded and connection 1 resumed iff `first_resumed`, 2..count resumed."""
    context = show(proc)
    if not checks.ok(proc.returncode == 0, f"{label}: exit status {proc.returncode}, expected 0", context):
        return []
    rows, summary, error = json_lines(proc)
    if not checks.ok(not error, f"{label}: {error}", context):
        return rows
    checks.ok(len(rows) == count, f"{label}: {len(rows)} connection objects, expected {count}", context)
    for index, row in enumerate(rows):
        where = f"{label}: connection {index + 1}"
        for key, kind in ROW_KEYS.items():
            value = row.get(key)
            good = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
            checks.ok(good, f"{where}: {key!r} should be {kind.__name__}, got {value!r}", context)
        checks.ok(row.get("n") == index + 1, f"{where}: n is {row.get('n')!r}", context)
        if protocol:
            checks.ok(row.get("protocol") == protocol, f"{where}: protocol {row.get('protocol')!r}, expected {protocol}",
                      context)
        expected = first_resumed or index > 0
        checks.ok(row.get("resumed") is expected and row.get("offered") is expected,
                  f"{where}: resumed={row.get('resumed')} offered={row.get('offered')}, expected {expected}", context)
        if server_resumed:
            checks.ok(row.get("server_resumed") is expected,
                      f"{where}: server_resumed={row.get('server_resumed')}, expected {expected}", context)
        if row.get("protocol") == "TLSv1.3":
            checks.ok(isinstance(row.get("tickets_received"), int) and row["tickets_received"] >= 1,
                      f"{where}: no TLS 1.3 ticket collected (tickets_received={row.get('tickets_received')!r})",
                      context)
        if http:
            checks.ok(row.get("http_status") == 200, f"{where}: http_status {row.get('http_status')!r}, expected 200",
                      context)
        if alpn is not None:
            checks.ok(row.get("alpn") == alpn, f"{where}: alpn {row.get('alpn')!r}, expected {alpn!r}", context)
    if checks.ok(summary is not None, f"{label}: no summary object", context):
        assert summary is not None
        resumed = count if first_resumed else count - 1
        checks.ok(summary.get("connections") == count and summary.get("resumed") == resumed,
                  f"{label}: summary connections={summary.get('connections')} resumed={summary.get('resumed')}, "
                  f"expected {count} and {resumed}", context)
        checks.ok(isinstance(summary.get("cache"), dict) and "hits" in summary["cache"],
                  f"{label}: summary has no cache stats", context)
    return rows


# --- openssl s_server ------------------------------------------------------------------------

def free_port(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# --- the parts -------------------------------------------------------------------------------

def check_embedded(checks: Checks, probe: str) -> None:
    print("embedded server:")
    check_run(checks, "embedded --count 3 --json", run([probe, "--count", "3", "--json"]), protocol="TLSv1.3",
              server_resumed=True)
    check_run(checks, "embedded --tls1.2", run([probe, "--tls1.2", "--count", "3", "--json"]), protocol="TLSv1.2",
              server_resumed=True)
    check_run(checks, "embedded --http-get / --alpn h2,http/1.1",
              run([probe, "--http-get", "/", "--alpn", "h2,http/1.1", "--count", "2", "--json"]), count=2,
              http=True, alpn="h2", server_resumed=True)
    proc = run([probe, "--count", "3"])
    context = show(proc)
    checks.ok(proc.returncode == 0, f"embedded table mode: exit status {proc.returncode}", context)
    data = [line for line in proc.stdout.splitlines() if "TLSv1.3" in line]
    checks.ok(len(data) == 3, f"embedded table mode: {len(data)} rows with TLSv1.3, expected 3", context)
    checks.ok(any(line.startswith("cache: hits=2 misses=1 ") for line in proc.stdout.splitlines()),
              "embedded table mode: no 'cache: hits=2 misses=1 ...' line", context)
    checks.ok(not any(line.lstrip().startswith("{") for line in proc.stdout.splitlines()),
              "embedded table mode printed JSON", context)


def check_interop(checks: Checks, probe: str, openssl: str, pki: dict[str, Path], servers: dict[str, SServer]) -> None:
    base = [probe, "--cafile", str(pki["ca"]), "--servername", "localhost", "--json"]
    for protocol, name in (("tls1_2", "TLSv1.2"), ("tls1_3", "TLSv1.3")):
        for www in (False, True):
            label = f"s_server -{protocol}{' -www' if www else ''}"
            print(f"{label}:")
            server = SServer(openssl, pki, protocol, www=www, port=free_port())
            servers[label] = server
            if not checks.ok(server.wait_ready(), f"{label}: did not start", server.log()):
                continue
            extra = ["--http-get", "/"] if www else []
            proc = run(base + ["--count", str(COUNT)] + extra + [server.address])
            check_run(checks, f"probe against {label}", proc, protocol=name, http=www)
    plain13 = servers.get("s_server -tls1_3")
    if plain13 is None or plain13.proc.poll() is not None:
        return
    port = plain13.port
    print("by name, failed verification:")
    check_run(checks, "probe localhost:PORT (getaddrinfo, name from HOST)",
              run([probe, "--cafile", str(pki["ca"]), "--json", "--count", "2", f"localhost:{port}"]), count=2,
              protocol="TLSv1.3")
    # 3. No --cafile: the test CA is in no system store.
    proc = run([probe, "--json", "--count", "3", "--servername", "localhost", f"127.0.0.1:{port}"])
    context = show(proc)
    checks.ok(proc.returncode == 1, f"verification failure: exit status {proc.returncode}, expected 1", context)
    stderr_lines = [line for line in proc.stderr.splitlines() if line.strip()]
    checks.ok(len(stderr_lines) == 1, f"verification failure: {len(stderr_lines)} lines on stderr, expected 1", context)
    reason = re.search(r"certificate verification: ([^)]+)\)", proc.stderr)
    if checks.ok(reason is not None, "verification failure: stderr does not name the verification reason", context):
        assert reason is not None
        checks.ok(reason.group(1) in ("unable to get local issuer certificate", "self-signed certificate in certificate chain",
                                      "self signed certificate in certificate chain"),
                  f"verification failure: unexpected reason {reason.group(1)!r}", context)
        print(f"  verification failure reported as: {stderr_lines[0] if stderr_lines else ''}")
    rows, summary, error = json_lines(proc)
    if checks.ok(summary is not None and not error, "verification failure: no summary object", context):
        assert summary is not None
        cache = summary.get("cache", {})
        checks.ok(cache.get("stored") == 0 and cache.get("sessions") == 0,
                  f"verification failure: something was cached: {cache}", context)
        checks.ok(summary.get("connections") == 0 and summary.get("failed") is True,
                  "verification failure: summary should say 0 connections, failed", context)
    proc = run([probe, "--cafile", str(pki["ca"]), "--servername", "wrong.example", "--count", "1",
                f"127.0.0.1:{port}"])
    checks.ok(proc.returncode == 1 and "hostname mismatch" in proc.stderr,
              "wrong --servername: expected exit 1 and 'hostname mismatch' on stderr", show(proc))
    # IPv6 literal in brackets, verified against the certificate's IP:::1.
    if not ipv6_loopback():
        checks.skip("IPv6: ::1 not usable here")
        return
    print("IPv6:")
    server6 = SServer(openssl, pki, "tls1_3", www=False, host="::1", port=free_port(socket.AF_INET6, "::1"))
    servers["s_server [::1]"] = server6
    if checks.ok(server6.wait_ready(), "s_server on [::1]: did not start", server6.log()):
        rows = check_run(checks, "probe [::1]:PORT",
                         run([probe, "--cafile", str(pki["ca"]), "--json", "--count", "2", server6.address]), count=2,
                         protocol="TLSv1.3")
        if rows:
            checks.ok(rows[0].get("server_name") == "::1" and rows[0].get("address") == server6.address,
                      f"probe [::1]:PORT: server_name/address are {rows[0].get('server_name')!r}/"
                      f"{rows[0].get('address')!r}")
    server6.stop()


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_persistence(checks: Checks, probe: str, pki: dict[str, Path], servers: dict[str, SServer],
                      directory: Path) -> None:
    print("persistence:")
    probe_file = directory / "availability.sessions"
    proc = run([probe, "--sessions", str(probe_file), "--count", "1"])
    if proc.returncode == 2 and "not available in this build" in proc.stderr:
        checks.skip("persistence: the probe was built without <tlsresume/persist.hpp>")
        return
    checks.ok(proc.returncode == 0, "persistence: --sessions with the embedded server failed", show(proc))
    for label, protocol in (("s_server -tls1_3", "TLSv1.3"), ("s_server -tls1_2", "TLSv1.2")):
        server = servers.get(label)
        if server is None or server.proc.poll() is not None:
            checks.ok(False, f"persistence: {label} is not running")
            continue
        tag = protocol.replace(".", "")
        keys = {
            "no key": None,
            "raw key": directory / f"raw-{tag}.key",
            "hex key": directory / f"hex-{tag}.key",
        }
        raw = os.urandom(32)
        keys["raw key"].write_bytes(raw)  # type: ignore[union-attr]
        keys["hex key"].write_text(os.urandom(32).hex() + "\n")  # type: ignore[union-attr]
        for kind, key_file in keys.items():
            sessions = directory / f"{tag}-{kind.replace(' ', '-')}.sessions"
            base = [probe, "--cafile", str(pki["ca"]), "--servername", "localhost", "--json", "--count", "2",
                    "--sessions", str(sessions)]
            if key_file is not None:
                base += ["--key-file", str(key_file)]
            base.append(server.address)
            label_run = f"persistence {protocol} {kind}"
            check_run(checks, f"{label_run} run 1", run(base), count=2, protocol=protocol)
            if not checks.ok(sessions.exists(), f"{label_run}: {sessions.name} was not written"):
                continue
            mode = file_mode(sessions)
            checks.ok(mode == 0o600, f"{label_run}: {sessions.name} has mode {mode:o}, expected 600")
            rows = check_run(checks, f"{label_run} run 2 (first connection resumes)", run(base), count=2,
                             protocol=protocol, first_resumed=True)
            if rows and kind != "no key":
                # 4. The wrong key, and a corrupt file: exit 1, a message, the file left alone.
                wrong = directory / f"wrong-{tag}.key"
                wrong.write_bytes(os.urandom(32))
                before = sessions.read_bytes()
                bad = [a if a != str(key_file) else str(wrong) for a in base]
                proc = run(bad)
                checks.ok(proc.returncode == 1 and "sessions" in proc.stderr and proc.stderr.strip() != "",
                          f"{label_run}: a wrong key file should fail with exit 1 and a message", show(proc))
                checks.ok(len([l for l in proc.stderr.splitlines() if l.strip()]) == 1,
                          f"{label_run}: the wrong-key message should be one line", show(proc))
                checks.ok(sessions.read_bytes() == before, f"{label_run}: the file changed after a failed load")
                print(f"  wrong key reported as: {proc.stderr.strip()}")
                if kind == "raw key":
                    short = directory / f"short-{tag}.key"
                    short.write_bytes(os.urandom(5))
                    proc = run([a if a != str(key_file) else str(short) for a in base])
                    checks.ok(proc.returncode == 1 and "key file" in proc.stderr,
                              f"{label_run}: a malformed key file should fail with exit 1 and name the key file",
                              show(proc))
                    checks.ok(sessions.read_bytes() == before, f"{label_run}: the file changed after a bad key file")
        corrupt = directory / f"corrupt-{tag}.sessions"
        corrupt.write_bytes(b"this is not a sessions file\n" + os.urandom(64))
        before = corrupt.read_bytes()
        proc = run([probe, "--cafile", str(pki["ca"]), "--servername", "localhost", "--count", "1", "--sessions",
                    str(corrupt), server.address])
        checks.ok(proc.returncode == 1 and proc.stderr.strip() != "",
                  f"persistence {protocol}: a corrupt sessions file should fail with exit 1 and a message", show(proc))
        checks.ok(corrupt.read_bytes() == before, f"persistence {protocol}: the corrupt file was overwritten")


BAD_OPTIONS = [
    ["--count", "0"], ["--count", "abc"], ["--count", "10001"], ["--count"], ["--bogus"], ["--tls1.2", "--tls1.3"],
    ["example.com"], ["[::1]"], ["::1:443"], ["host:0"], ["host:70000"], ["host:"], [":443"], ["a:1", "b:2"],
    ["--alpn", ""], ["--alpn", "a,,b"], ["--key-file", "k"], ["--http-get", "noslash"], ["--http-get", "/a b"],
    ["--json=1"], ["--servername", ""],
]


def check_usage(checks: Checks, probe: str) -> None:
    print("options:")
    for args in BAD_OPTIONS:
        proc = run([probe, *args])
        checks.ok(proc.returncode == 2 and "usage:" in proc.stderr and proc.stdout == "",
                  f"bad options {shlex.join(args)!r}: exit status {proc.returncode}, expected 2 with usage on stderr",
                  show(proc))
    proc = run([probe, "--help"])
    checks.ok(proc.returncode == 0 and proc.stdout.startswith("usage:"), "--help: expected exit 0 and usage on stdout",
              show(proc))


def main(argv: list[str]) -> int:
    openssl: str | None = None
    args = list(argv)
    if "--openssl" in args:
        i = args.index("--openssl")
        if i + 1 >= len(args):
            print("usage: check_probe.py PATH_TO_tlsresume-probe [--openssl PATH]", file=sys.stderr)
            return 2
        openssl = args[i + 1]
        del args[i:i + 2]
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: check_probe.py PATH_TO_tlsresume-probe [--openssl PATH]", file=sys.stderr)
        return 2
    probe = args[0]
    openssl = openssl or shutil.which("openssl")
    checks = Checks()
    started = time.monotonic()
    check_usage(checks, probe)
    check_embedded(checks, probe)
    servers: dict[str, SServer] = {}
    with tempfile.TemporaryDirectory(prefix="check_probe.") as tmp:
        directory = Path(tmp)
        try:
            if openssl is None:
                checks.skip("interop, verification and persistence: no openssl command")
            else:
                pki, error = make_pki(openssl, directory, "tlsresume-probe test CA")
                if checks.ok(pki is not None, "could not make the test certificates", error):
                    assert pki is not None
                    check_interop(checks, probe, openssl, pki, servers)
                    check_persistence(checks, probe, pki, servers, directory)
        finally:
            for server in servers.values():
                server.stop()
    elapsed = time.monotonic() - started
    if checks.failures:
        print(f"FAIL: {len(checks.failures)} of {len(checks.failures) + checks.passed} checks failed ({elapsed:.1f} s)")
        for failure in checks.failures:
            print(f"  - {failure}")
        return 1
    print(f"OK: {checks.passed} checks passed, {len(checks.skipped)} skipped ({elapsed:.1f} s)")
    for skipped in checks.skipped:
        print(f"  SKIP {skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
