#!/usr/bin/env python3
"""Install tlsresume into a temporary prefix and build and run a consumer three ways.

Usage: check_consumers.py --source DIR [options] -- CXX [CXX_ARGS...]

  1. pkg-config: c++ -std=c++20 consumer.cpp -o consumer $(pkg-config --cflags --libs tlsresume)
  2. CMake:      find_package(tlsresume CONFIG REQUIRED COMPONENTS fmt), CMAKE_PREFIX_PATH=<prefix>
  3. Meson:      a project with subprojects/tlsresume (a symlink to the source tree) and
                 dependency('tlsresume') / dependency('tlsresume-fmt')

Each way builds consumer.cpp (the core) and consumer_fmt.cpp ({fmt}), and runs both: each
completes a full and a resumed handshake with an in-process server, or exits non-zero.

Also checked: the install-only build (-Dtests=false -Dexamples=false -Dbench=false) has no build
targets; the installed tree holds the headers, both .pc files and the CMake package; the
pkg-config flags and the Meson consumer's compile commands carry none of tlsresume's warning
flags; the CMake version file's answers; and that docs/install.md shows the consumer files
verbatim. The compiler is the one given after `--` (the enclosing build's). Every command is
printed with its output; the temporary directory is removed at the end (--keep keeps it).
"""

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The files a user copies, shown verbatim in docs/install.md.
CONSUMER_FILES = ["consumer.cpp", "consumer_fmt.cpp", "CMakeLists.txt", "meson_consumer/meson.build"]
# What a consumer prints when both handshakes went as expected.
SUCCESS_LINE = re.compile(r"^tlsresume \d+\.\d+\.\d+.*: full, then resumed: OK$", re.M)
RESUMED_LINE = re.compile(r"^second handshake: .*client resumed: (yes|true), server resumed: (yes|true)$", re.M)
# Flags tlsresume builds its own targets with, which must not reach a consumer.
OUR_WARNING_FLAGS = ["-Werror", "-Wextra", "-Wpedantic", "-pedantic"]


class Failure(Exception):
    pass


def say(text=""):
    print(text, flush=True)


def run(cmd, cwd=None, env_add=None, shell=False):
    """Runs a command, prints it and its output; raises Failure (with the output) if it fails."""
    env = dict(os.environ)
    env.update(env_add or {})
    shown = cmd if shell else shlex.join(str(c) for c in cmd)
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env_add or {}).items())
    say(f"$ {'cd ' + shlex.quote(str(cwd)) + ' && ' if cwd else ''}{prefix + ' ' if prefix else ''}{shown}")
    proc = subprocess.run(cmd if shell else [str(c) for c in cmd], cwd=cwd, env=env, shell=shell,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    out = proc.stdout.rstrip()
    if out:
        say(out)
    if proc.returncode != 0:
        raise Failure(f"exit status {proc.returncode}: {shown}\n{out}")
    return out


def check(condition, message):
    if not condition:
        raise Failure(message)


def check_consumer_output(name, out):
    check(RESUMED_LINE.search(out) and SUCCESS_LINE.search(out),
          f"{name}: ran, but did not report a full then a resumed handshake on both sides:\n{out}")


def fenced_blocks(markdown):
    """The contents of the ``` fenced blocks of a Markdown text."""
    return [m.group(1) for m in re.finditer(r"^```[^\n]*\n(.*?)^```", markdown, re.M | re.S)]


def check_docs(docs):
    # A program's block may start with the docs checker's `// run: yes` (tests/docs/check_docs.py).
    blocks = [re.sub(r"\A// run: yes\n", "", b).rstrip() for b in fenced_blocks(docs.read_text(encoding="utf-8"))]
    missing = [f for f in CONSUMER_FILES if (HERE / f).read_text(encoding="utf-8").rstrip() not in blocks]
    check(not missing, f"{docs} does not show these files of tests/consumers verbatim (in a fenced block of "
          f"their own): {', '.join(missing)}; copy them into it")
    say(f"{docs.name} shows {', '.join(CONSUMER_FILES)} verbatim")


def split_compiler(cxx):
    """(launcher or None, compiler, extra args) from a compiler command such as `ccache g++`."""
    if len(cxx) > 1 and Path(cxx[0]).name in ("ccache", "sccache"):
        return cxx[0], cxx[1], cxx[2:]
    return None, cxx[0], cxx[1:]


def list_tree(root):
    for path in sorted(root.rglob("*")):
        if path.is_file() or path.is_symlink():
            say(f"  {path.relative_to(root)}")


def install(args, tmp, cxx_env):
    build, prefix = tmp / "build", tmp / "prefix"
    say("== install into a temporary prefix (no tests, examples or benchmarks)")
    run(args.meson + ["setup", build, args.source, "--prefix", prefix,
                      "-Dtests=false", "-Dexamples=false", "-Dbench=false"], env_add=cxx_env)
    targets = json.loads(run(args.meson + ["introspect", "--targets", build]))
    check(targets == [], "the install-only build has build targets: " + ", ".join(t["name"] for t in targets))
    options = {o["name"]: o["value"] for o in json.loads(subprocess.check_output(
        args.meson + ["introspect", "--buildoptions", str(build)], text=True))}
    run(args.meson + ["install", "-C", build])
    say("installed:")
    list_tree(prefix)
    includedir = prefix / options["includedir"]
    libdir = prefix / options["libdir"]
    for path in [includedir / "tlsresume" / "tlsresume.hpp", includedir / "tlsresume" / "version.hpp",
                 includedir / "tlsresume" / "fmt.hpp", includedir / "tlsresume" / "testing.hpp",
                 libdir / "pkgconfig" / "tlsresume.pc", libdir / "pkgconfig" / "tlsresume-fmt.pc",
                 libdir / "cmake" / "tlsresume" / "tlsresumeConfig.cmake",
                 libdir / "cmake" / "tlsresume" / "tlsresumeConfigVersion.cmake"]:
        check(path.is_file(), f"not installed: {path.relative_to(prefix)}")
    source_headers = Path(args.source) / "include" / "tlsresume"
    for header in sorted(p for p in source_headers.rglob("*") if p.is_file()):
        installed = includedir / "tlsresume" / header.relative_to(source_headers)
        check(installed.is_file() and installed.read_bytes() == header.read_bytes(),
              f"{installed} is missing or differs from {header}")
    return prefix, libdir


def way_pkg_config(args, tmp, libdir):
    say("\n== 1. pkg-config and a plain compiler command")
    work = tmp / "pkg-config"
    work.mkdir()
    for f in ["consumer.cpp", "consumer_fmt.cpp"]:
        shutil.copy(HERE / f, work / f)
    env = {"PKG_CONFIG_PATH": os.pathsep.join(
        [str(libdir / "pkgconfig")] + ([os.environ["PKG_CONFIG_PATH"]] if os.environ.get("PKG_CONFIG_PATH") else []))}
    pc = shlex.quote(args.pkg_config)
    requires = {}
    for package in ["tlsresume", "tlsresume-fmt"]:
        requires[package] = run([args.pkg_config, "--print-requires", package], env_add=env).split()
        flags = run([args.pkg_config, "--cflags", "--libs", package], env_add=env)
        bad = [f for f in flags.split() if f.startswith("-W") or f.startswith("-std") or f in OUR_WARNING_FLAGS]
        check(not bad, f"pkg-config {package} forces flags on consumers: {' '.join(bad)}")
    check("openssl" in requires["tlsresume"], "tlsresume.pc does not require openssl")
    check("tlsresume" in requires["tlsresume-fmt"] and "fmt" in requires["tlsresume-fmt"],
          "tlsresume-fmt.pc does not require tlsresume and fmt")
    cxx = shlex.join(args.cxx)
    for program, package in [("consumer", "tlsresume"), ("consumer_fmt", "tlsresume-fmt")]:
        run(f"{cxx} -std=c++20 {program}.cpp -o {program} $({pc} --cflags --libs {package})",
            cwd=work, env_add=env, shell=True)
        check_consumer_output(f"pkg-config {program}", run([work / program], cwd=work))


def check_cmake_version_file(args, tmp, version_file, version):
    """The version file's answers to find_package(tlsresume <version or range>)."""
    major, minor, patch = (int(x) for x in version.split("."))
    cases = [  # (requested version or range, compatible, exact)
        (version, True, True),
        (f"{major}.{minor}", True, patch == 0),  # compared as versions: 0.1 is 0.1.0
        (f"{major}.{minor}.{patch + 1}", False, False),
        (f"{major + 1}.0", False, False),
        (f"{major}.{minor}...<{major + 1}.0", True, False),
        (f"{major}.{minor}...{version}", True, False),
        (f"{major}.{minor}...<{version}", False, False),
    ]
    if major == 0 and minor > 0:
        cases.append((f"0.{minor - 1}", False, False))  # 0.x: another minor version is another series
    if major > 0:
        cases.append((f"{major}.0", True, minor == 0 and patch == 0))
    script = tmp / "version_check.cmake"
    lines = []
    for want, _, _ in cases:
        lines.append("unset(PACKAGE_VERSION_COMPATIBLE)\nunset(PACKAGE_VERSION_EXACT)\n"
                     "unset(PACKAGE_FIND_VERSION_RANGE)\n")
        if "..." in want:
            low, high = want.split("...")
            kind = "EXCLUDE" if high.startswith("<") else "INCLUDE"
            lines.append(f'set(PACKAGE_FIND_VERSION_RANGE "{want}")\nset(PACKAGE_FIND_VERSION_MIN "{low}")\n'
                         f'set(PACKAGE_FIND_VERSION "{low}")\nset(PACKAGE_FIND_VERSION_MAX "{high.lstrip("<")}")\n'
                         f'set(PACKAGE_FIND_VERSION_RANGE_MAX "{kind}")\n')
        else:
            lines.append(f'set(PACKAGE_FIND_VERSION "{want}")\n')
        lines.append(f'include("{version_file}")\n'
                     f'message("{want} ${{PACKAGE_VERSION}} compatible=${{PACKAGE_VERSION_COMPATIBLE}} '
                     f'exact=${{PACKAGE_VERSION_EXACT}}")\n')
    script.write_text("".join(lines), encoding="utf-8")
    out = run([args.cmake, "-P", script])
    got = out.splitlines()
    check(len(got) == len(cases), f"unexpected output from {script}")
    for (want, compatible, exact), line in zip(cases, got):
        expected = f"{want} {version} compatible={'TRUE' if compatible else 'FALSE'} exact={'TRUE' if exact else ''}"
        check(line == expected, f"tlsresumeConfigVersion.cmake for find_package(tlsresume {want}): got "
              f"`{line}`, expected `{expected}`")


def way_cmake(args, tmp, prefix, libdir, version):
    say("\n== 2. CMake: find_package(tlsresume CONFIG REQUIRED COMPONENTS fmt)")
    check_cmake_version_file(args, tmp, libdir / "cmake" / "tlsresume" / "tlsresumeConfigVersion.cmake", version)
    build = tmp / "cmake-build"
    launcher, compiler, extra = split_compiler(args.cxx)
    configure = [args.cmake, "-S", HERE, "-B", build, f"-DCMAKE_PREFIX_PATH={prefix}",
                 f"-DCMAKE_CXX_COMPILER={compiler}"]
    if launcher:
        configure.append(f"-DCMAKE_CXX_COMPILER_LAUNCHER={launcher}")
    if extra:
        configure.append(f"-DCMAKE_CXX_FLAGS={' '.join(extra)}")
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    run(configure)
    run([args.cmake, "--build", build, "--verbose"])
    for program in ["consumer", "consumer_fmt"]:
        check_consumer_output(f"CMake {program}", run([build / program], cwd=build))


def way_meson_subproject(args, tmp, cxx_env):
    say("\n== 3. Meson: tlsresume as a subproject (subprojects/tlsresume -> the source tree)")
    project = tmp / "meson-consumer"
    (project / "subprojects").mkdir(parents=True)
    shutil.copy(HERE / "meson_consumer" / "meson.build", project / "meson.build")
    for f in ["consumer.cpp", "consumer_fmt.cpp"]:
        shutil.copy(HERE / f, project / f)
    (project / "subprojects" / "tlsresume").symlink_to(Path(args.source).resolve(), target_is_directory=True)
    build = project / "build"
    # Forced, so that a tlsresume installed on this machine cannot stand in for the subproject.
    run(args.meson + ["setup", build, project, "--force-fallback-for=tlsresume,tlsresume-fmt"], env_add=cxx_env)
    run(args.meson + ["compile", "-C", build, "-v"])

    # tlsresume's default options (warning_level=3, werror, buildtype) stay in the subproject.
    options = {o["name"]: o["value"] for o in json.loads(subprocess.check_output(
        args.meson + ["introspect", "--buildoptions", str(build)], text=True))}
    for name, want in [("werror", False), ("warning_level", "1"), ("buildtype", "debug")]:
        check(options.get(name) == want, f"the consumer's {name} is {options.get(name)!r}, not its own {want!r}: "
              "tlsresume's default_options leaked")
    say(f"consumer options: werror={options['werror']} warning_level={options['warning_level']} "
        f"buildtype={options['buildtype']} (tlsresume:werror={options.get('tlsresume:werror')} "
        f"tlsresume:warning_level={options.get('tlsresume:warning_level')} stay in the subproject)")
    commands = json.loads((build / "compile_commands.json").read_text(encoding="utf-8"))
    for entry in commands:
        words = shlex.split(entry["command"]) if "command" in entry else entry["arguments"]
        bad = [w for w in words if w in OUR_WARNING_FLAGS]
        check(not bad, f"tlsresume's flags reached the consumer: {' '.join(bad)} in\n{entry['command']}")
        check(any("subprojects/tlsresume/include" in w for w in words),
              f"the consumer was not compiled against the subproject's headers:\n{entry['command']}")
    check(len(commands) == 2, f"expected 2 compile commands in the consumer build, found {len(commands)}")
    for program in ["consumer", "consumer_fmt"]:
        check_consumer_output(f"Meson {program}", run([build / program], cwd=build))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="the tlsresume source tree")
    parser.add_argument("--version", required=True, help="the project version (meson.project_version())")
    parser.add_argument("--meson", default="meson", help="the meson command")
    parser.add_argument("--cmake", default="", help="the cmake command (empty: not found)")
    parser.add_argument("--pkg-config", default="", help="the pkg-config command (empty: not found)")
    parser.add_argument("--docs", help="docs/install.md, which must show the consumer files verbatim")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("cxx", nargs="+", help="the C++ compiler command (after --)")
    args = parser.parse_args()
    args.meson = shlex.split(args.meson)
    missing = [name for name, value in [("cmake", args.cmake), ("pkg-config", args.pkg_config)] if not value]
    if missing:
        say(f"SKIP: not found: {', '.join(missing)} (Debian: apt-get install cmake pkg-config)")
        return 77

    tmp = Path(tempfile.mkdtemp(prefix="tlsresume-consumers-"))
    cxx_env = {"CXX": shlex.join(args.cxx)}
    say(f"compiler: {shlex.join(args.cxx)}; temporary directory: {tmp}")
    try:
        if args.docs:
            check_docs(Path(args.docs))
        prefix, libdir = install(args, tmp, cxx_env)
        way_pkg_config(args, tmp, libdir)
        way_cmake(args, tmp, prefix, libdir, args.version)
        way_meson_subproject(args, tmp, cxx_env)
    except Failure as e:
        say(f"\nFAILED: {e}")
        return 1
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    say("\nall three consumers built, ran, and resumed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
