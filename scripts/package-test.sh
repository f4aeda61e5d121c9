#!/usr/bin/env bash
# The Debian package, tested as installed: builds fpush_<version>_amd64.deb with cargo-deb from the
# test command's build (profile ci, target/ci/fpush; no second build), installs it with dpkg,
# checks owners and modes, runs `fpush --check` as the service user, verifies the installed unit
# and its exposure score (systemd-analyze, no running systemd needed), installs it again over
# itself (the settings the operator edited stay), and purges the package.
# Needs root (dpkg); refuses to touch an fpush package that was installed before it ran.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${FPUSH_DEB_PROFILE:-ci}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/$PROFILE/fpush"
# systemd-analyze security's exposure score, in tenths: 20 means at most 2.0.
MAX_EXPOSURE=20

fail() { printf 'package-test: FAILED: %s\n' "$*" >&2; exit 1; }
log() { printf 'package-test: %s\n' "$*"; }

[ "$(id -u)" -eq 0 ] || fail "needs root (dpkg -i)"
[ -x "$BIN" ] || fail "$BIN is missing: build first (cargo build --profile $PROFILE --bins)"
# Any state but not-installed counts: a package removed without purge ("config-files") still
# has a postrm that deletes /var/lib/fpush and settings.json, and this test ends with a purge.
STATE="$(dpkg-query -W -f='${db:Status-Status}' fpush 2>/dev/null || true)"
case "$STATE" in
    "" | not-installed) ;;
    *) fail "an fpush package is known to dpkg here ($STATE); purge it first (dpkg --purge fpush)" ;;
esac
for leftover in /etc/fpush /var/lib/fpush; do
    [ ! -e "$leftover" ] || fail "$leftover exists (not this test's); move it away first"
done

VERSION="$("$BIN" --version | awk '{print $2}')"
OUT="$(mktemp -d)"
INSTALLED=0
cleanup() {
    if [ "$INSTALLED" -eq 1 ]; then
        dpkg --purge fpush >/dev/null 2>&1 || true
    fi
    rm -rf "$OUT"
}
trap cleanup EXIT

cargo deb --no-build --profile "$PROFILE" --fast --output "$OUT" >"$OUT/cargo-deb.log" 2>&1 \
    || { cat "$OUT/cargo-deb.log" >&2; fail "cargo deb"; }
DEB="$OUT/fpush_${VERSION}_amd64.deb"
[ -f "$DEB" ] || fail "expected $DEB; got: $(ls "$OUT")"
log "built $(basename "$DEB") ($(du -k "$DEB" | cut -f1) KiB); contents:"
dpkg-deb -c "$DEB" | awk '{printf "  %s %s %9s %s\n", $1, $2, $3, $NF}'

DEBIAN_FRONTEND=noninteractive dpkg -i "$DEB" >"$OUT/dpkg.log" 2>&1 \
    || { cat "$OUT/dpkg.log" >&2; fail "dpkg -i"; }
INSTALLED=1

# owner:group mode of each installed path.
expect_stat() {
    local path="$1" want="$2" have
    have="$(stat -c '%U:%G %a' "$path" 2>/dev/null)" || fail "$path is missing"
    [ "$have" = "$want" ] || fail "$path is $have, expected $want"
    printf '  %-40s %s\n' "$path" "$have"
}
log "installed files (owner:group mode):"
expect_stat /usr/bin/fpush "root:root 755"
expect_stat /etc/fpush "root:fpush 750"
expect_stat /etc/fpush/settings.json "root:fpush 640"
expect_stat /lib/systemd/system/fpush.service "root:root 644"
expect_stat /usr/lib/sysusers.d/fpush.conf "root:root 644"
expect_stat /var/lib/fpush "fpush:fpush 750"
expect_stat /usr/share/fpush/settings.example.json "root:root 644"
expect_stat /usr/share/doc/fpush/examples/settings.example.json "root:root 644"
expect_stat /usr/share/doc/fpush/operations-systemd.md "root:root 644"
expect_stat /usr/share/doc/fpush/copyright "root:root 644"

# The operator's file, not a conffile: an upgrade never offers the demo in its place.
if dpkg-query -W -f='${Conffiles}\n' fpush | grep -q 'settings.json'; then
    fail "/etc/fpush/settings.json is a conffile"
fi
cmp -s /etc/fpush/settings.json /usr/share/fpush/settings.example.json \
    || fail "/etc/fpush/settings.json is not the example"
IFS=: read -r _ _ _ _ _ home shell < <(getent passwd fpush) || fail "no user fpush"
[ "$home" = /var/lib/fpush ] || fail "fpush's home is $home"
case "$shell" in */nologin) ;; *) fail "fpush's shell is $shell" ;; esac
log "user fpush: home $home, shell $shell; settings.json is the example, not a conffile"

runuser -u fpush -- fpush --check /etc/fpush/settings.json \
    || fail "fpush --check as user fpush"
if runuser -u fpush -- test -w /usr/bin/fpush; then fail "user fpush can write its binary"; fi

# An upgrade (the same package again) keeps the operator's settings, without a prompt.
printf '// edited by the operator\n' >>/etc/fpush/settings.json
DEBIAN_FRONTEND=noninteractive dpkg -i "$DEB" </dev/null >"$OUT/dpkg.log" 2>&1 \
    || { cat "$OUT/dpkg.log" >&2; fail "dpkg -i over the installed package"; }
tail -n 1 /etc/fpush/settings.json | grep -q 'edited by the operator' \
    || fail "the upgrade replaced the operator's settings"
expect_stat /etc/fpush/settings.json "root:fpush 640"
log "an upgrade kept the operator's settings"

systemd-analyze verify /lib/systemd/system/fpush.service || fail "systemd-analyze verify"
SECURITY="$(systemd-analyze security --offline=true --threshold="$MAX_EXPOSURE" fpush.service)" \
    || { printf '%s\n' "$SECURITY" | grep '✗' >&2 || true; fail "exposure above $((MAX_EXPOSURE / 10)).$((MAX_EXPOSURE % 10))"; }
log "$(printf '%s\n' "$SECURITY" | tail -n 1)"

dpkg --purge fpush >"$OUT/dpkg.log" 2>&1 || { cat "$OUT/dpkg.log" >&2; fail "dpkg --purge"; }
INSTALLED=0
for gone in /usr/bin/fpush /etc/fpush/settings.json /lib/systemd/system/fpush.service /var/lib/fpush; do
    [ ! -e "$gone" ] || fail "$gone left after purge"
done
log "purged; binary size $(du -k "$BIN" | cut -f1) KiB"
log "OK"
