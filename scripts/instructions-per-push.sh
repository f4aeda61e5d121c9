#!/usr/bin/env bash
# User-space instructions per push, counted by callgrind (repeatable, unlike time on a shared
# machine): fpush runs one of the benchmark's scenarios (SCENARIO, default smoke: APNS path,
# certificate auth, ratelimit off; WINDOW pushes in flight) once with SHORT and once with LONG
# pushes under
# `valgrind --tool=callgrind`; the difference of the two totals divided by the extra pushes
# cancels start-up and TLS set-up.
#
#   scripts/instructions-per-push.sh [FPUSH_BINARY ...]   # default target/release/fpush
#   SHORT=2000 LONG=6000 WINDOW=100 RUNS=1 SCENARIO=smoke (defaults)
#   OUT=DIR keeps the benchmark's files there: j's store of 1M registrations is made once
#   (by the benchmark, not under callgrind) and found again by later runs.
set -euo pipefail
cd "$(dirname "$0")/.."
SHORT="${SHORT:-2000}"
LONG="${LONG:-6000}"
WINDOW="${WINDOW:-100}"
RUNS="${RUNS:-1}"
SCENARIO="${SCENARIO:-smoke}"
BENCH="${BENCH:-target/release/fpush-bench}"
[ $# -gt 0 ] || set -- target/release/fpush
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
[ -x "$BENCH" ] || cargo build --release --quiet -p fpush-bench

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
OUT="${OUT:-$work/bench}"

# Total instructions of one fpush run of N pushes.
instructions() {
    local binary="$1" pushes="$2" out="$work/callgrind.$RANDOM"
    cat > "$work/wrapped" <<WRAP
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$out "$(realpath "$binary")" "\$@"
WRAP
    chmod +x "$work/wrapped"
    "$BENCH" --fpush "$work/wrapped" --out "$OUT" --pushes "$pushes" --window "$WINDOW" "$SCENARIO" >"$work/bench.log" 2>&1 \
        || { cat "$work/bench.log" >&2; return 1; }
    # fpush was stopped by the benchmark; callgrind writes its totals on exit.
    for _ in $(seq 50); do grep -q '^totals:' "$out" 2>/dev/null && break; sleep 0.2; done
    awk '/^totals:/ {print $2}' "$out"
}

for run in $(seq "$RUNS"); do
    for binary in "$@"; do
        short=$(instructions "$binary" "$SHORT")
        long=$(instructions "$binary" "$LONG")
        echo "$binary run $run: $(( (long - short) / (LONG - SHORT) )) instructions per push ($short for $SHORT, $long for $LONG)"
    done
done
