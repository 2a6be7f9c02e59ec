#!/usr/bin/env python3
"""Compile, link and (when marked) run every complete C++ program in the documentation.

Scans README.md and docs/**/*.md under --root. Every fenced code block whose info string is
`cpp` (or `c++`, `cxx`) and that contains `int main(` is a *complete program*: it is written
to a file of its own, compiled and linked. Other C++ blocks are fragments (they use names the
surrounding text introduces) and are only counted.

Conventions for a complete program in the docs:

    ```cpp
    // run: yes
    #include <tlsresume/testing.hpp>
    ...
    int main() { ... }
    ```

  - `// run: yes` on a line of its own (by convention the block's first line) also runs the
    program after linking, with a timeout (--timeout, default 60 s), in an empty temporary
    directory, with no arguments and no input; it must exit with status 0. Mark only programs
    that need no network and no files outside their working directory: in practice those that
    talk to `tlsresume::testing::LocalServer`.
  - `// run: no` (the default when there is no marker) compiles and links only: for programs that
    connect to real servers or read real files.
  - Any other `// run:` value is an error, so a typo cannot turn a run into a compile.

Libraries are picked from what the program includes: always OpenSSL (`pkg-config --libs
openssl`, else `-lssl -lcrypto`); {fmt} (`-lfmt`) for `<fmt/...>` or `<tlsresume/fmt.hpp>`;
hiredis (`-lhiredis`) for `<hiredis/...>` or `<tlsresume/redis.hpp>`; `-pthread` for `<thread>`,
`<future>`, `<condition_variable>`, `<stop_token>`, hiredis and Asio. An Asio program
(`<asio.hpp>`, `<asio/...>`, `<boost/asio...>` or `<tlsresume/asio.hpp>`) compiled with clang
also gets `-DASIO_HAS_CO_AWAIT=1 -DASIO_HAS_STD_COROUTINE=1` for standalone Asio (Asio 1.22
enables coroutines under clang 14 only with them).

A program is *skipped*, with its reason printed and counted, only when an optional dependency
is missing on this machine: {fmt} (--no-fmt, or its header not found), standalone Asio
(`asio.hpp`), Boost.Asio (`boost/asio.hpp`) or hiredis (`hiredis/hiredis.h`). A program that
includes a `<tlsresume/...>` header that does not exist fails: the docs name an API that is not
there.

The compiler command comes after `--` (Meson passes the tests' `compile_cmd`: the compiler with
-std=c++20 -Wall -Wextra -Wpedantic -Werror -I include and -isystem directories); `-fsyntax-only`
is dropped from it. Without `--`, it is `$CXX` (else `c++`) with -std=c++20 -Wall -Wextra
-Wpedantic -Werror -I ROOT/include.

Usage:
    check_docs.py [--root DIR] [--compiler-id gcc|clang] [--jobs N] [--timeout S] [--no-fmt]
                  [--keep DIR] [--list] [--only TEXT] [-- COMPILER ARGS...]

Exit status: 0 when every program compiled, linked and (if marked) ran with status 0, and at
least one program was compiled; 1 otherwise; 2 for a usage error. The last line is a summary:
"docs: N programs compiled and linked (M run), S skipped, F fragments not compiled, E failed".
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
CPP_INFO = {"cpp", "c++", "cxx"}
MAIN = re.compile(r"\bint\s+main\s*\(")
RUN_MARKER = re.compile(r"^\s*//\s*run:\s*(?P<value>\S.*?)\s*$")
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"](?P<header>[^>"]+)[>"]', re.MULTILINE)

THREAD_HEADERS = {"thread", "future", "condition_variable", "stop_token"}


@dataclasses.dataclass
class Block:
    path: Path  # the Markdown file
    line: int  # 1-based line of the opening fence
    code: str

    def where(self, root: Path) -> str:
        try:
            shown = self.path.relative_to(root)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}"


@dataclasses.dataclass
class Outcome:
    block: Block
    status: str  # "ok", "skipped", "failed"
    ran: bool = False
    message: str = ""


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def markdown_files(root: Path) -> list[Path]:
    files = []
    readme = root / "README.md"
    if readme.is_file():
        files.append(readme)
    docs = root / "docs"
    if docs.is_dir():
        files.extend(sorted(p for p in docs.rglob("*.md") if p.is_file()))
    return files


def cpp_blocks(path: Path) -> list[Block]:
    """Every fenced block of `path` whose info string names C++; fences may be indented (lists)."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m.group("fence"), m.group("indent")
        info = m.group("info").strip().split()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = FENCE.match(lines[i])
            if close and close.group("fence")[0] == fence[0] and len(close.group("fence")) >= len(fence) \
                    and not close.group("info").strip():
                break
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1  # past the closing fence (or the end of the file)
        if info and info[0].lower() in CPP_INFO:
            blocks.append(Block(path, start + 1, "\n".join(body) + "\n"))
    return blocks


def run_marker(code: str) -> bool:
    """True for `// run: yes`; raises ValueError for an unknown value."""
    value = None
    for line in code.splitlines():
        m = RUN_MARKER.match(line)
        if m:
            if value is not None:
                raise ValueError("more than one `// run:` marker")
            value = m.group("value")
    if value is None or value == "no":
        return False
    if value == "yes":
        return True
    raise ValueError(f"unknown marker `// run: {value}` (use `// run: yes` or `// run: no`)")


def pkg_config_libs(package: str, fallback: list[str]) -> list[str]:
    if shutil.which("pkg-config") is None:
        return fallback
    try:
        out = subprocess.run(["pkg-config", "--libs", package], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return fallback
    return shlex.split(out) or fallback


class Checker:
    def __init__(self, args: argparse.Namespace, command: list[str]) -> None:
        self.args = args
        self.root: Path = args.root
        self.command = [a for a in command if a != "-fsyntax-only"]
        self.compiler_id = args.compiler_id or self.detect_compiler_id()
        self.openssl_libs = pkg_config_libs("openssl", ["-lssl", "-lcrypto"])
        self.fmt_libs = pkg_config_libs("fmt", ["-lfmt"])
        self.hiredis_libs = pkg_config_libs("hiredis", ["-lhiredis"])
        self.header_cache: dict[str, bool] = {}

    def detect_compiler_id(self) -> str:
        try:
            out = subprocess.run(self.command[:1] + ["--version"], capture_output=True, text=True).stdout
        except OSError:
            return "unknown"
        return "clang" if "clang" in out.lower() else "gcc"

    def header_found(self, header: str) -> bool:
        """Whether `#include <header>` preprocesses with the compiler command."""
        if header not in self.header_cache:
            probe = subprocess.run(self.command + ["-E", "-x", "c++", "-", "-o", os.devnull],
                                   input=f"#include <{header}>\n", capture_output=True, text=True)
            self.header_cache[header] = probe.returncode == 0
        return self.header_cache[header]

    def plan(self, code: str) -> tuple[list[str], list[str], str | None]:
        """Extra compiler flags, libraries, and a reason to skip (or None)."""
        headers = INCLUDE.findall(code)
        flags: list[str] = []
        libs = list(self.openssl_libs)
        pthread = False
        for h in headers:
            if h.startswith("tlsresume/") and not (self.root / "include" / h).is_file():
                raise FileNotFoundError(f"includes <{h}>, which is not in include/")
        uses_fmt = any(h.startswith("fmt/") or h == "tlsresume/fmt.hpp" for h in headers)
        standalone_asio = any(h == "asio.hpp" or h.startswith("asio/") or h == "tlsresume/asio.hpp" for h in headers)
        boost_asio = any(h.startswith("boost/asio") for h in headers)
        uses_hiredis = any(h.startswith("hiredis/") or h == "tlsresume/redis.hpp" for h in headers)
        if uses_fmt:
            if self.args.no_fmt or not self.header_found("fmt/format.h"):
                return flags, libs, "{fmt} not available"
            libs += self.fmt_libs
        if standalone_asio and not boost_asio:
            if not self.header_found("asio.hpp"):
                return flags, libs, "standalone Asio (asio.hpp) not available"
            pthread = True
            if self.compiler_id == "clang":
                flags += ["-DASIO_HAS_CO_AWAIT=1", "-DASIO_HAS_STD_COROUTINE=1"]
        if boost_asio:
            if not self.header_found("boost/asio.hpp"):
                return flags, libs, "Boost.Asio (boost/asio.hpp) not available"
            pthread = True
        if uses_hiredis:
            if not self.header_found("hiredis/hiredis.h"):
                return flags, libs, "hiredis (hiredis/hiredis.h) not available"
            libs += self.hiredis_libs
            pthread = True
        if any(h in THREAD_HEADERS for h in headers):
            pthread = True
        if pthread:
            flags.append("-pthread")
            libs.append("-pthread")
        return flags, libs, None

    def check(self, index: int, block: Block, workdir: Path) -> Outcome:
        where = block.where(self.root)
        try:
            run = run_marker(block.code)
            flags, libs, skip = self.plan(block.code)
        except (ValueError, FileNotFoundError) as e:
            return Outcome(block, "failed", message=f"{where}: {e}")
        if skip is not None:
            return Outcome(block, "skipped", message=f"{where}: skipped: {skip}")
        stem = f"doc{index:03d}_{block.path.stem}_{block.line}"
        source = workdir / f"{stem}.cpp"
        exe = workdir / stem
        # A #line directive makes diagnostics point at the Markdown file's lines.
        source.write_text(f'#line {block.line + 1} "{block.path}"\n' + block.code, encoding="utf-8")
        cmd = self.command + flags + [str(source), "-o", str(exe)] + libs
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return Outcome(block, "failed", message=f"{where}: does not compile or link:\n  $ {shlex.join(cmd)}\n"
                                                    f"{proc.stdout}{proc.stderr}")
        if not run:
            return Outcome(block, "ok", message=f"{where}: compiled and linked")
        rundir = workdir / f"{stem}.run"
        rundir.mkdir()
        try:
            proc = subprocess.run([str(exe)], cwd=rundir, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=self.args.timeout)
        except subprocess.TimeoutExpired:
            return Outcome(block, "failed", message=f"{where}: timed out after {self.args.timeout} s")
        if proc.returncode != 0:
            return Outcome(block, "failed", message=f"{where}: exited with status {proc.returncode}:\n"
                                                    f"{proc.stdout}{proc.stderr}")
        output = proc.stdout.strip().splitlines()
        shown = ("\n    " + "\n    ".join(output[:12])) if output else ""
        return Outcome(block, "ok", ran=True, message=f"{where}: compiled, linked and ran (exit 0){shown}")


def main(argv: list[str]) -> int:
    if "--" in argv:
        split = argv.index("--")
        own, command = argv[:split], argv[split + 1:]
    else:
        own, command = argv, []
    parser = argparse.ArgumentParser(prog="check_docs.py",
                                     description="Compile, link and run the complete programs in README.md and docs/.")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2],
                        help="the source tree (default: two levels above this script)")
    parser.add_argument("--compiler-id", choices=("gcc", "clang"), help="default: from `COMPILER --version`")
    parser.add_argument("--jobs", "-j", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a `// run: yes` program may take")
    parser.add_argument("--no-fmt", action="store_true", help="{fmt} is not available: skip programs that use it")
    parser.add_argument("--keep", type=Path, help="write the programs and executables here and keep them")
    parser.add_argument("--list", action="store_true", help="list the blocks found, compile nothing")
    parser.add_argument("--only", metavar="TEXT", help="check only the Markdown files whose path contains TEXT")
    args = parser.parse_args(own)
    args.root = args.root.resolve()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if not command:
        command = shlex.split(os.environ.get("CXX", "c++")) + [
            "-std=c++20", "-Wall", "-Wextra", "-Wpedantic", "-Werror", f"-I{args.root / 'include'}"]

    programs: list[Block] = []
    fragments: list[Block] = []
    for md in markdown_files(args.root):
        if args.only and args.only not in str(md.relative_to(args.root)):
            continue
        for block in cpp_blocks(md):
            (programs if MAIN.search(block.code) else fragments).append(block)

    if args.list:
        for b in programs:
            try:
                what = "program, run" if run_marker(b.code) else "program"
            except ValueError as e:
                what = f"program, bad marker: {e}"
            print(f"{b.where(args.root)}: {what}")
        for b in fragments:
            print(f"{b.where(args.root)}: fragment")
        print(f"docs: {len(programs)} programs, {len(fragments)} fragments")
        return 0

    checker = Checker(args, command)
    print(f"docs: compiler: {shlex.join(checker.command)} ({checker.compiler_id})")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        workdir_cm = None
        workdir = args.keep.resolve()
    else:
        workdir_cm = tempfile.TemporaryDirectory(prefix="tlsresume-docs-")
        workdir = Path(workdir_cm.name)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            outcomes = list(pool.map(lambda ib: checker.check(ib[0], ib[1], workdir), enumerate(programs)))
    finally:
        if workdir_cm is not None:
            workdir_cm.cleanup()

    for o in outcomes:
        prefix = {"ok": "ok  ", "skipped": "skip", "failed": "FAIL"}[o.status]
        print(f"{prefix} {o.message}")
    compiled = sum(1 for o in outcomes if o.status == "ok")
    ran = sum(1 for o in outcomes if o.ran)
    skipped = sum(1 for o in outcomes if o.status == "skipped")
    failed = sum(1 for o in outcomes if o.status == "failed")
    if compiled == 0 and failed == 0:
        print("FAIL no complete program (a ```cpp block with `int main(`) was compiled: "
              "the docs check would check nothing")
        failed += 1
    print(f"docs: {plural(compiled, 'program')} compiled and linked ({ran} run), {skipped} skipped, "
          f"{plural(len(fragments), 'fragment')} not compiled, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
