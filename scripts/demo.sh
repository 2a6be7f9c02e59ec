#!/usr/bin/env bash
# Build and run the session-resumption demo (examples/resume_demo).
#
# Usage: scripts/demo.sh [DEMO_ARGS...]
#
# Uses build/gcc (same setup as scripts/test.sh); build output goes to stderr,
# so stdout is only the demo's own output.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

"$root/scripts/install-deps.sh"

dir=build/gcc
configured() {
    [[ -f "$dir/meson-private/coredata.dat" ]] &&
        meson introspect --buildoptions "$dir" >/dev/null 2>&1 &&
        grep -q '^C++ compiler for the host machine: .*(gcc ' "$dir/meson-logs/meson-log.txt" 2>/dev/null
}
if ! configured; then
    rm -rf -- "$dir"
    CC=gcc CXX=g++ meson setup "$dir" -Dbuildtype=debugoptimized >&2
fi
meson compile -C "$dir" resume_demo >&2
exec "$dir/examples/resume_demo" "$@"
