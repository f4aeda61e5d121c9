#!/usr/bin/env bash
# Runs every test fpush has, on a fresh machine: installs what the tests need (Debian packages:
# Prosody, ejabberd, Redis; PyPI: slixmpp, pytest), then style gates, unit and integration tests,
# and the end-to-end tests against real XMPP servers. One release build serves them all.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing test dependencies"
bash scripts/install-test-deps.sh

step "style: cargo fmt, cargo clippy"
cargo fmt --all -- --check
cargo clippy --quiet --workspace --all-targets --all-features -- -D warnings

step "build (release; reused by every test below)"
cargo build --release --workspace --bins

step "unit and integration tests"
cargo test --release --workspace

if [ -d tests/e2e ]; then
  step "end to end: real Prosody and ejabberd, real client, fake APNS/FCM"
  python3 -m pytest -q tests/e2e
fi
