#!/usr/bin/env bash
# Builds release and runs fpush's benchmark: scenarios a–i (a–f the performance budget, g–h a
# provider 150 ms / 60 ms away at 10,000/s, i a burst of 10,000 at once), each
# RUNS times (default 5), against the real binary on loopback (fake XMPP server + APNS test
# server in fpush-bench). Prints one line per run and the table of medians (min–max); writes
# JSON to target/bench/.
#
#   scripts/bench.sh                 # all scenarios, 5 runs each (about 6 minutes)
#   RUNS=3 scripts/bench.sh a f      # some scenarios
#   scripts/bench.sh smoke           # 2,000 pushes, fails unless every push is answered
#   scripts/bench.sh soak            # 10 minutes at 2,000/s (issue 9's soak); --duration SECS
#
# Not part of the test command: figures on a shared machine need a quiet moment.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet -p fpush -p fpush-bench
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/fpush-bench" --fpush "$target/release/fpush" --runs "${RUNS:-5}" --out "$target/bench" "$@"
