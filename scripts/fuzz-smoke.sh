#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time (FUZZ_SECONDS each, default 20) from the
# committed seeds; fails on the first crash, leaving the input in fuzz/artifacts/<target>/.
# cargo-fuzz needs nightly-only compiler flags: RUSTC_BOOTSTRAP=1 allows them on stable.
# Longer runs: FUZZ_SECONDS=600 scripts/fuzz-smoke.sh, or one target by name:
#   scripts/fuzz-smoke.sh framer
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-20}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(request_parse framer settings provider_answers)
fi

# Pinned, like cargo-deb: a new release must not change CI under an unchanged tree.
CARGO_FUZZ_VERSION=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1
# No sanitizer: the code under test is safe Rust, and an ASan build takes several times longer
# to build and run. Debug assertions stay on (overflow checks).
echo "==> building the fuzz targets"
cargo fuzz build --sanitizer none

log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT
for target in "${targets[@]}"; do
  echo "==> fuzzing $target for ${seconds}s"
  mkdir -p "corpus/$target"
  # The first directory collects what the run finds; the seeds are only read.
  if ! cargo fuzz run --sanitizer none "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=1024 \
      >"$log_dir/$target.log" 2>&1; then
    # The assertion's message first: the backtrace after it pushes it out of a short tail.
    grep -m 1 -A 8 'panicked at' "$log_dir/$target.log" | cut -c 1-2000 || true
    tail -n 40 "$log_dir/$target.log"
    echo "==> $target FAILED; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^Done [0-9]+ runs' "$log_dir/$target.log" || true
done
echo "==> no crash in ${#targets[@]} targets"
