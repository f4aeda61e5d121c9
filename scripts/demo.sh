#!/usr/bin/env bash
# The fpush demo: from a fresh checkout, see one push go from an XMPP server through fpush.
#
#   bash scripts/demo.sh
#
# It installs what it needs (Prosody, prosody-modules, slixmpp: scripts/install-test-deps.sh),
# builds fpush, starts Prosody on loopback with a config in a temp dir, starts fpush with the demo
# module (it logs each push instead of calling Apple or Google), lets alice enable push and go
# offline, has bob send her a message, and shows the push arriving in fpush's log. Everything it
# started is stopped, and the temp dir removed, when it ends (also on Ctrl-C or failure).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD="" PLAIN=""; fi
step() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$PLAIN"; }
fail() { printf '\ndemo failed: %s\n' "$*" >&2; exit 1; }

WORK=""
PROSODY_PID=""
FPUSH_PID=""
cleanup() {
    local code=$?
    trap - EXIT INT TERM
    # Each was started in its own process group (setsid): stop the group, then make sure.
    for pid in "$FPUSH_PID" "$PROSODY_PID"; do
        [ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null || true
    done
    for pid in "$FPUSH_PID" "$PROSODY_PID"; do
        [ -z "$pid" ] && continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    if [ -n "$WORK" ]; then
        if [ "$code" -ne 0 ]; then
            for log in "$WORK/fpush.log" "$WORK/prosody.log"; do
                [ -f "$log" ] && { printf '\n--- last lines of %s ---\n' "$(basename "$log")" >&2; tail -n 25 "$log" >&2; }
            done
        fi
        rm -rf "$WORK"
    fi
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits up to $1 seconds for the command after it to succeed.
wait_until() {
    local limit=$1; shift
    local i
    for i in $(seq $((limit * 10))); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}

step "Installing test dependencies (Prosody, prosody-modules, slixmpp) if missing"
bash scripts/install-test-deps.sh

step "Building fpush (cargo build --release; the first build takes a few minutes)"
command -v cargo >/dev/null || fail "cargo not found: install Rust (https://rustup.rs) and run again"
cargo build --release --quiet
FPUSH="$ROOT/target/release/fpush"
"$FPUSH" --version

WORK="$(mktemp -d -t fpush-demo.XXXXXX)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
C2S_PORT="$(free_port)"
COMPONENT_PORT="$(free_port)"
COMPONENT_SECRET="demo-secret-$RANDOM$RANDOM"
TOKEN="demo-device-token-$RANDOM$RANDOM"

step "Starting Prosody on 127.0.0.1:$C2S_PORT (component port $COMPONENT_PORT), config in $WORK"
mkdir -p "$WORK/data" "$WORK/certs"
DIR="$WORK" LOG_LEVEL=debug C2S_PORT="$C2S_PORT" COMPONENT_PORT="$COMPONENT_PORT" \
COMPONENT_JID=push.localhost COMPONENT_SECRET="$COMPONENT_SECRET" PUSH_MAX_ERRORS=2 \
python3 -c 'import os, string, sys; print(string.Template(sys.stdin.read()).substitute(os.environ))' \
    < tests/e2e/templates/prosody.cfg.lua > "$WORK/prosody.cfg.lua"
setsid prosody --config "$WORK/prosody.cfg.lua" -F >"$WORK/prosody.stdout.log" 2>&1 &
PROSODY_PID=$!
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_until 30 port_open "$C2S_PORT" || fail "Prosody did not start"
prosodyctl --config "$WORK/prosody.cfg.lua" register alice localhost alice-password
prosodyctl --config "$WORK/prosody.cfg.lua" register bob localhost bob-password
echo "users alice@localhost and bob@localhost registered"

step "Starting fpush with the demo module, connected to Prosody as push.localhost"
cat >"$WORK/settings.json" <<JSON
{
    "component": {
        "componentHostname": "push.localhost",
        "componentKey": "$COMPONENT_SECRET",
        "serverHostname": "127.0.0.1",
        "serverPort": $COMPONENT_PORT
    },
    "pushModules": {
        "demo": { "type": "demo", "is_default_module": true }
    }
}
JSON
# It holds the component secret: readable by its owner only, as fpush asks.
chmod 600 "$WORK/settings.json"
# The demo module names each push at debug (per-push lines stay out of an operator's info log).
RUST_LOG=info,fpush_demo=debug setsid "$FPUSH" "$WORK/settings.json" >"$WORK/fpush.log" 2>&1 &
FPUSH_PID=$!
component_up() { grep -q "External component successfully authenticated" "$WORK/prosody.log" 2>/dev/null; }
wait_until 30 component_up || fail "fpush did not connect to Prosody"
echo "fpush is connected"

step "alice enables push (token $TOKEN, pushModule demo) and goes offline"
python3 tests/e2e/xmpp_client.py enable-push alice@localhost alice-password "$C2S_PORT" push.localhost "$TOKEN" demo

step "bob sends alice a message; Prosody stores it offline and asks fpush to push"
python3 tests/e2e/xmpp_client.py send bob@localhost bob-password "$C2S_PORT" alice@localhost "Hello alice, this is the fpush demo"

PREFIX="${TOKEN:0:8}"
push_logged() { grep -qF "$PREFIX" "$WORK/fpush.log"; }
wait_until 20 push_logged || fail "no push for token $PREFIX… in fpush's log"

step "The push IQ Prosody sent (prosody.log)"
grep -E "Sending (important|unimportant) push notification" "$WORK/prosody.log" | tail -n 1 || true

step "fpush's log"
cat "$WORK/fpush.log"

step "Done: the push reached fpush and its demo module delivered it. Cleaning up."
