#!/usr/bin/env bash
# Runs every test fpush has, on a fresh machine: installs what the tests need (Debian packages:
# Prosody, ejabberd, Redis, Prometheus; PyPI: slixmpp, pytest), then style gates, unit and
# integration tests, the alerts and dashboard on a real Prometheus, fuzzing smoke runs, and the
# end-to-end tests against real XMPP servers. One optimised build
# (cargo profile `ci`: release without LTO) serves them all.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing test dependencies"
bash scripts/install-test-deps.sh

step "style: cargo fmt, cargo clippy"
cargo fmt --all -- --check
cargo clippy --quiet --workspace --all-targets --all-features -- -D warnings

step "one crypto stack: ring, and no rsa, jsonwebtoken, openssl or aws-lc in fpush's tree"
if cargo tree -e normal -p fpush --prefix none | grep -E '^(rsa|jsonwebtoken|openssl|openssl-sys|aws-lc-rs|aws-lc-sys) '; then
    echo "a second crypto stack is in fpush's dependency tree" >&2
    exit 1
fi

step "build (profile ci: optimised, no LTO; reused by every test below)"
# Tests too: their dev-dependencies turn on features (tokio's test-util) of crates the binaries
# share, so building the binaries alone would build those crates twice.
cargo build --locked --profile ci --workspace --all-targets

step "unit and integration tests"
cargo test --locked --profile ci --workspace

step "Debian package: cargo deb from that build, installed, checked, purged"
bash scripts/package-test.sh

step "load smoke: 2,000 pushes through the optimised binary, every one answered once"
target/ci/fpush-bench --fpush target/ci/fpush smoke

step "alerts and dashboard on a real Prometheus: promtool checks and unit tests, live queries"
bash scripts/prometheus-test.sh

step "fuzzing smoke: every target for ${FUZZ_SECONDS:-20}s"
bash scripts/fuzz-smoke.sh

step "end to end: real Prosody and ejabberd, real client, fake APNS/FCM"
FPUSH_BIN_DIR=target/ci python3 -m pytest -q tests/e2e
