#!/usr/bin/env bash
# Checks the alert rules and the dashboard on Debian's Prometheus (installed by
# install-test-deps.sh): `promtool check rules`, the rules' unit tests (`promtool test rules`),
# then a real Prometheus in a temp dir on a loopback port scraping a running fpush every second
# (tests/prometheus.rs). Takes well under a minute once built.
# CARGO_PROFILE picks the cargo profile (default: ci, as in scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in prometheus promtool; do
    command -v "$tool" >/dev/null 2>&1 || { echo "prometheus-test: $tool missing (bash scripts/install-test-deps.sh)" >&2; exit 1; }
done
promtool check rules contrib/prometheus/fpush-alerts.yml
(cd contrib/prometheus && promtool test rules fpush-alerts.test.yml)
cargo test --profile "${CARGO_PROFILE:-ci}" --test prometheus -- --include-ignored
