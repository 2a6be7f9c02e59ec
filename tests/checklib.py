"""Shared pieces of the end-to-end check scripts (check_probe.py, asio/check_asio_https_get.py).

A `Checks` collector, `run` and `show` for subprocesses with a timeout, `SServer` (`openssl s_server`
in a child process) and `make_pki` (a CA and a server certificate made with the openssl command).
Python 3 stdlib only; not a test on its own.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import threading
import time
from pathlib import Path

TIMEOUT_S = 60          # the default for any one command
SERVER_START_S = 10     # s_server until it prints ACCEPT


class Checks:
    """Collects failures. With `echo` each failed check prints a `FAIL` line at once; `report`
    prints one `ok`/`FAIL` line for a group of checks instead."""

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.failures: list[str] = []
        self.passed = 0
        self.skipped: list[str] = []

    def ok(self, condition: bool, what: str, context: str = "") -> bool:
        if condition:
            self.passed += 1
        else:
            self.failures.append(what + (f"\n{context}" if context else ""))
            if self.echo:
                print(f"  FAIL {what}")
        return condition

    def skip(self, what: str) -> None:
        self.skipped.append(what)
        print(f"  SKIP {what}")

    def report(self, before: int, what: str) -> None:
        """Prints `ok: what` if no check failed since `before` (a count of failures), else `FAIL: what`."""
        print(f"  {'ok' if len(self.failures) == before else 'FAIL'}: {what}")


def run(command: list[str], timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Runs `command`; a timeout becomes returncode -999 with the reason on stderr."""
    try:
        return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              timeout=timeout, text=True, errors="replace")
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
        return subprocess.CompletedProcess(command, -999, out, f"timed out after {timeout} s")


def show(proc: subprocess.CompletedProcess[str]) -> str:
    return (f"--- `{shlex.join(proc.args)}` exit {proc.returncode} ---\n--- stdout ---\n{proc.stdout.rstrip()}"
            f"\n--- stderr ---\n{proc.stderr.rstrip()}\n--- end ---")


class SServer:
    """`openssl s_server` in a child process on `host` (an IPv6 literal without brackets works);
    stop() always ends it. With `port` 0, s_server picks one, read from its `ACCEPT host:PORT` line."""

    def __init__(self, openssl: str, pki: dict[str, Path], protocol: str, *, www: bool,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        accept = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.command = [openssl, "s_server", "-accept", accept, "-cert", str(pki["cert"]), "-key", str(pki["key"]),
                        "-" + protocol]
        if www:
            self.command.append("-www")
        self.lines: list[str] = []
        self.ready = threading.Event()
        # stdin stays an open pipe: s_server without -www reads it, and ends at its EOF.
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, errors="replace")
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    @property
    def address(self) -> str:
        """HOST:PORT, with an IPv6 host in brackets."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # keeps the pipe from filling up
            self.lines.append(line.rstrip("\n"))
            if not line.startswith("ACCEPT") or self.ready.is_set():
                continue
            if self.port == 0:
                m = re.match(r"ACCEPT \S*:(\d+)\s*$", line)
                if not m:
                    continue
                self.port = int(m.group(1))
            self.ready.set()

    def wait_ready(self) -> bool:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.ready.wait(0.05):
                return True
            if self.proc.poll() is not None:
                return False
        return False

    def log(self) -> str:
        return f"--- `{shlex.join(self.command)}` output (last lines) ---\n" + "\n".join(self.lines[-20:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.reader.join(5)


def make_pki(openssl: str, directory: Path, ca_name: str) -> tuple[dict[str, Path] | None, str]:
    """A CA named `ca_name` and a server certificate for localhost, 127.0.0.1 and ::1, signed by it:
    ({"ca", "cert", "key"} paths, "") or (None, the failing command's output)."""
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert, ext = directory / "server.key", directory / "server.csr", directory / "server.pem", directory / "ext.cnf"
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_cert), "-days", "2",
         "-subj", f"/CN={ca_name}", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-set_serial", "2",
         "-days", "2", "-extfile", str(ext), "-out", str(cert)],
    ]
    for step in steps:
        proc = run(step)
        if proc.returncode != 0:
            return None, show(proc)
    return {"ca": ca_cert, "cert": cert, "key": key}, ""
