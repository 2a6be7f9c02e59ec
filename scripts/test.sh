#!/usr/bin/env bash
# Build and test tlsresume in several configurations.
#
# Usage: scripts/test.sh [CONFIG...] [-- MESON_TEST_ARGS...]
#
#   CONFIG           gcc, clang, asan, tsan, fuzz (default: $TLSRESUME_CONFIGS, else
#                    "gcc clang asan tsan fuzz"); fuzz = the libFuzzer target of the sessions
#                    file loader, run for $TLSRESUME_FUZZ_SECONDS (default 60) seconds
#   MESON_TEST_ARGS  passed to every `meson test`, e.g. `-- --suite compile-fail`
#
# Build directories are build/<config>; they are reused when already
# configured with the right compiler, and recreated otherwise.
# The last line of output is always "N passed, N failed[, N skipped]";
# the exit status is non-zero if anything failed.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1

usage() { sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

configs=()
test_args=()
while (($#)); do
    case "$1" in
        --) shift; test_args=("$@"); break ;;
        -h|--help) usage; exit 0 ;;
        *) configs+=("$1"); shift ;;
    esac
done
if ((${#configs[@]} == 0)); then
    read -r -a configs <<<"${TLSRESUME_CONFIGS:-gcc clang asan tsan fuzz}"
fi

total_pass=0 total_fail=0 total_skip=0
summary=()

log() { printf '==> %s\n' "$*"; }

# Print the meson setup arguments for a configuration; sets CC/CXX.
config_args() {
    # shellcheck disable=SC2054  # commas below are part of meson option values
    case "$1" in
        gcc)   cc=gcc   cxx=g++     compiler_id=gcc
               setup_args=(-Dbuildtype=debugoptimized) ;;
        clang) cc=clang cxx=clang++ compiler_id=clang
               setup_args=(-Dbuildtype=debugoptimized) ;;
        asan)  cc=clang cxx=clang++ compiler_id=clang
               setup_args=(-Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false
                           -Dcpp_args=-fno-sanitize-recover=all
                           -Dcpp_link_args=-fno-sanitize-recover=all) ;;
        tsan)  cc=clang cxx=clang++ compiler_id=clang
               setup_args=(-Dbuildtype=debugoptimized -Db_sanitize=thread -Db_lundef=false) ;;
        fuzz)  cc=clang cxx=clang++ compiler_id=clang
               setup_args=(-Dbuildtype=debugoptimized -Dfuzz=true -Db_sanitize=address,undefined
                           -Db_lundef=false) ;;
        *) return 1 ;;
    esac
}

# Check an existing build dir: prints "ok", "reconfigure" or "wipe".
# (Meson 1.0 cannot introspect compilers: read the compiler id from
# meson-log.txt, falling back to the compiler command in build.ninja.)
build_dir_state() {
    local dir=$1 options
    [[ -f "$dir/meson-private/coredata.dat" && -f "$dir/build.ninja" ]] || { echo wipe; return; }
    options=$(meson introspect --buildoptions "$dir" 2>/dev/null) || { echo wipe; return; }
    OPTIONS=$options python3 - "$dir" "$compiler_id" "${setup_args[@]}" <<'EOF'
import json, os, re, sys
build_dir, want_id, args = sys.argv[1], sys.argv[2], sys.argv[3:]

def read(*parts):
    try:
        with open(os.path.join(build_dir, *parts), errors="replace") as f:
            return f.read()
    except OSError:
        return ""

def compiler_id():
    ids = re.findall(r"^C\+\+ compiler for the host machine: .*?\((\S+) ",
                     read("meson-logs", "meson-log.txt"), re.M)
    if ids:
        return ids[-1]
    m = re.search(r"^rule cpp_COMPILER\n command = (.*?) \$ARGS", read("build.ninja"), re.M)
    if m:
        words = [os.path.basename(w) for w in m.group(1).split()]
        return "clang" if any("clang" in w for w in words) else "gcc"
    return None

try:
    options = {o["name"]: o["value"] for o in json.loads(os.environ["OPTIONS"])}
except Exception:
    print("wipe"); sys.exit()
if compiler_id() != want_id:
    print("wipe"); sys.exit()
for arg in args:
    name, _, value = arg[2:].partition("=")
    have = options.get(name)
    if isinstance(have, list):
        have = " ".join(have)
    elif isinstance(have, bool):
        have = str(have).lower()
    if have is None or str(have) != value:
        print("reconfigure"); sys.exit()
print("ok")
EOF
}

# Set up (or reuse) build/<cfg>. Returns non-zero on failure.
setup_build() {
    local cfg=$1 dir=build/$1 state
    if [[ -e "$dir" ]]; then
        state=$(build_dir_state "$dir")
        case "$state" in
            ok) return 0 ;;
            reconfigure)
                log "$cfg: reconfiguring $dir"
                CC=$cc CXX=$cxx meson setup --reconfigure "$dir" "${setup_args[@]}" && return 0
                log "$cfg: reconfigure failed; recreating $dir" ;;
            *)  log "$cfg: $dir is stale or uses another compiler; recreating" ;;
        esac
        rm -rf -- "$dir"
    fi
    log "$cfg: meson setup $dir (CXX=$cxx)"
    CC=$cc CXX=$cxx meson setup "$dir" "${setup_args[@]}"
}

# Print "passed failed skipped" from a meson testlog.json.
count_results() {
    python3 - "$1" <<'EOF'
import json, sys
passed = failed = skipped = 0
try:
    lines = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
except FileNotFoundError:
    lines = []
for line in lines:
    line = line.strip()
    if not line:
        continue
    try:
        result = json.loads(line).get("result")
    except ValueError:
        failed += 1
        continue
    if result in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif result == "SKIP":
        skipped += 1
    else:  # FAIL, TIMEOUT, ERROR, UNEXPECTEDPASS, ...
        failed += 1
print(passed, failed, skipped)
EOF
}

# Run one configuration; sets pass/fail/skip.
run_config() {
    local cfg=$1 dir=build/$1 rc
    pass=0 fail=0 skip=0
    if ! config_args "$cfg"; then
        log "$cfg: unknown configuration (expected gcc, clang, asan, tsan or fuzz)"
        fail=1; return
    fi
    if ! setup_build "$cfg"; then
        log "$cfg: CONFIGURE FAILED"
        fail=1; return
    fi
    # The fuzz configuration builds and runs its own suite only (the rest runs in asan already).
    local suite_args=() targets=()
    [[ "$cfg" == fuzz ]] && suite_args=(--suite fuzz --no-rebuild) targets=(fuzz_load fuzz_seed)
    log "$cfg: meson compile -C $dir ${targets[*]}"
    if ! meson compile -C "$dir" "${targets[@]}"; then
        log "$cfg: COMPILE FAILED"
        fail=1; return
    fi

    local env_args=()
    if [[ "$cfg" == asan || "$cfg" == fuzz ]]; then
        env_args=(
            "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
            "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
            "LSAN_OPTIONS=exitcode=23${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
        )
    elif [[ "$cfg" == tsan ]]; then
        env_args=("TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}")
    fi
    local testlog=$dir/meson-logs/testlog.json
    rm -f -- "$testlog"
    log "$cfg: meson test -C $dir --print-errorlogs ${suite_args[*]} ${test_args[*]}"
    env "${env_args[@]}" meson test -C "$dir" --print-errorlogs "${suite_args[@]}" "${test_args[@]}"
    rc=$?
    local counts
    if ! counts=$(count_results "$testlog") || ! read -r pass fail skip <<<"$counts"; then
        log "$cfg: could not parse $testlog"
        pass=0 fail=1 skip=0; return
    fi
    if ((rc != 0 && fail == 0)); then
        log "$cfg: meson test exited with status $rc"
        fail=1
    fi
}

if ! "$root/scripts/install-deps.sh"; then
    log "deps: scripts/install-deps.sh FAILED"
    summary+=("deps: scripts/install-deps.sh failed")
    total_fail=1
fi

for cfg in "${configs[@]}"; do
    start=$(date +%s.%N)
    run_config "$cfg"
    secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    line="$cfg: $pass passed, $fail failed, $skip skipped (wall time ${secs}s)"
    log "$line"
    summary+=("$line")
    ((total_pass += pass, total_fail += fail, total_skip += skip))
done

echo
echo "==== summary ===="
printf '%s\n' "${summary[@]}"
total="$total_pass passed, $total_fail failed"
((total_skip > 0)) && total+=", $total_skip skipped"
echo "$total"
((total_fail == 0))
