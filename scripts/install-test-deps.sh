#!/usr/bin/env bash
# Installs everything the end-to-end tests (tests/e2e) and the demo (scripts/demo.sh) need:
# Prosody 0.12 with prosody-modules (mod_cloud_notify), ejabberd 23.01, redis-server, Prometheus
# (the server and `promtool`, for the dashboard and alert checks), and the pinned Python packages
# of requirements-test.txt.
#
# Idempotent and quiet: when everything is present it only checks and returns in about a second.
# The Debian packages are installed without starting their system services (those would take
# the default XMPP ports); the tests start their own instances from a temp dir on free ports.
# Runs as root (CI) or through sudo; never reads stdin.
set -euo pipefail

# systemd: systemd-analyze and systemd-sysusers for the package test (no systemd as PID 1 needed).
# prometheus: the server and promtool for the dashboard and alert checks.
# g++: the fuzz targets' libFuzzer is C++.
APT_PACKAGES=(prosody prosody-modules lua-unbound ejabberd redis-server systemd prometheus g++)
# cargo-deb builds the Debian package (scripts/package-test.sh); pinned, installed with --locked.
CARGO_DEB_VERSION=3.8.0
ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQUIREMENTS="$ROOT_DIR/requirements-test.txt"
PYTHON="${PYTHON:-python3}"
# A machine without any Python gets Debian's (with pip); one that has its own keeps it.
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    APT_PACKAGES+=(python3 python3-pip)
fi

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        log "need root (or sudo) to run: $*"
        return 1
    fi
}

missing_apt_packages() {
    local pkg status
    for pkg in "${APT_PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
        if [ "$status" != "install ok installed" ]; then
            printf '%s\n' "$pkg"
        fi
    done
}

# Keeps Debian's maintainer scripts from starting the services while we install them; an existing
# policy (as in container images) is left as it is.
POLICY=/usr/sbin/policy-rc.d
POLICY_ADDED=0
block_service_starts() {
    if [ ! -e "$POLICY" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY && chmod 755 $POLICY"
        POLICY_ADDED=1
    fi
}
unblock_service_starts() {
    if [ "$POLICY_ADDED" -eq 1 ]; then
        as_root rm -f "$POLICY"
        POLICY_ADDED=0
    fi
}

# ejabberd's maintainer script leaves an Erlang port mapper (epmd) running; the tests run their
# node without one. `epmd -kill` only stops it when no Erlang node is registered.
stop_leftover_epmd() {
    if command -v epmd >/dev/null 2>&1; then
        epmd -kill >/dev/null 2>&1 || true
    fi
}

# If a service installed just now got started anyway (a systemd host ignores policy-rc.d for
# enabled units), stop and disable it so that it neither holds the default ports now nor comes
# back at the next boot. Services the machine had before are its owner's, and left alone.
stop_system_services() {
    local svc
    for svc in "$@"; do
        if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
            as_root systemctl disable --now "$svc" >/dev/null 2>&1 || true
        elif [ -x "/etc/init.d/$svc" ]; then
            as_root "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
        fi
    done
}

install_apt_packages() {
    local missing
    mapfile -t missing < <(missing_apt_packages)
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    log "installing Debian packages: ${missing[*]}"
    block_service_starts
    trap unblock_service_starts EXIT
    export DEBIAN_FRONTEND=noninteractive
    local apt_log
    apt_log="$(mktemp /tmp/install-test-deps-apt.XXXXXX.log)"
    # A freshly booted machine's daily apt run may hold the lock for a while: wait for it.
    local apt=(apt-get -o DPkg::Lock::Timeout=600 -y -qq)
    if ! as_root "${apt[@]}" install --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1; then
        # A fresh machine may have no package lists yet.
        if ! as_root "${apt[@]}" update >>"$apt_log" 2>&1 \
            || ! as_root "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$apt_log" 2>&1; then
            tail -n 30 "$apt_log" >&2
            log "apt-get failed (full log: $apt_log)"
            return 1
        fi
    fi
    rm -f "$apt_log"
    unblock_service_starts
    trap - EXIT
    local installed=() svc
    for svc in prosody ejabberd redis-server prometheus; do
        case " ${missing[*]} " in *" $svc "*) installed+=("$svc") ;; esac
    done
    case " ${missing[*]} " in *" prometheus "*) installed+=(prometheus-node-exporter) ;; esac
    stop_system_services "${installed[@]}"
    case " ${missing[*]} " in *" ejabberd "*) stop_leftover_epmd ;; esac
}

python_requirements_satisfied() {
    # Every pinned line "name==version" must match what is installed.
    "$PYTHON" - "$REQUIREMENTS" <<'PY'
import sys
from importlib import metadata

def norm(name):
    return name.lower().replace("_", "-").replace(".", "-")

ok = True
with open(sys.argv[1], encoding="utf-8") as reqs:
    for line in reqs:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, wanted = line.partition("==")
        try:
            have = metadata.version(norm(name))
        except metadata.PackageNotFoundError:
            ok = False
            continue
        if wanted and have != wanted:
            ok = False
sys.exit(0 if ok else 1)
PY
}

install_python_packages() {
    if python_requirements_satisfied; then
        return 0
    fi
    log "installing Python packages from requirements-test.txt"
    # pip first: whether it needs --break-system-packages is asked of pip itself.
    if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
        log "installing python3-pip"
        export DEBIAN_FRONTEND=noninteractive
        local apt=(apt-get -o DPkg::Lock::Timeout=600 -y -qq)
        as_root "${apt[@]}" install python3-pip >/dev/null 2>&1 \
            || { as_root "${apt[@]}" update >/dev/null 2>&1 && as_root "${apt[@]}" install python3-pip >/dev/null 2>&1; } \
            || { log "cannot install python3-pip"; return 1; }
    fi
    # Debian's own python3 refuses system-wide pip installs unless told otherwise (PEP 668).
    local extra=()
    if "$PYTHON" -m pip install --help 2>/dev/null | grep -q -- '--break-system-packages'; then
        if [ -n "$(ls /usr/lib/python3*/EXTERNALLY-MANAGED 2>/dev/null)" ] \
            && [ "$("$PYTHON" -c 'import sys; print(sys.prefix)')" = /usr ]; then
            extra+=(--break-system-packages)
        fi
    fi
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
        "$PYTHON" -m pip install -q "${extra[@]}" -r "$REQUIREMENTS"
}

install_cargo_deb() {
    if [ "$(cargo-deb --version 2>/dev/null)" = "cargo-deb $CARGO_DEB_VERSION" ]; then
        return 0
    fi
    log "installing cargo-deb $CARGO_DEB_VERSION"
    cargo install --quiet --locked --version "$CARGO_DEB_VERSION" cargo-deb
}

install_apt_packages
install_python_packages
install_cargo_deb
