#!/usr/bin/env bash
# ensure-tree.sh: print the path of a minimal Debian 12 tree that boots a real
# systemd as PID 1 under systemd-nspawn, building it once (~2 min, ~250 MB).
#
# The tree is cached outside the repository, keyed by suite and package list, and
# never booted itself: each test world boots a copy (cp -a, a few seconds). The
# mirror is the one this machine's apt already uses, so nothing else is reached.
set -euo pipefail

SUITE="${TREE_SUITE:-bookworm}"
PACKAGES="systemd,systemd-sysv,dbus,dbus-user-session,libpam-systemd,ca-certificates,procps,libnss-extrausers"
CACHE="${CLAUDE_AUTH_SYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/claude-auth-sync}"
KEY=$(printf '%s %s' "$SUITE" "$PACKAGES" | sha256sum | cut -c1-12)
TREE="$CACHE/debian-$SUITE-$KEY"

if [ -f "$TREE/.complete" ]; then echo "$TREE"; exit 0; fi
if [ "$(id -u)" != 0 ]; then echo "ensure-tree: needs root (debootstrap)" >&2; exit 1; fi
for tool in debootstrap systemd-nspawn; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "ensure-tree: $tool is missing (apt-get install -y debootstrap systemd-container)" >&2
		exit 1
	}
done

mkdir -p "$CACHE"
exec 9>"$CACHE/.tree-$KEY.lock"
flock 9
if [ -f "$TREE/.complete" ]; then echo "$TREE"; exit 0; fi

# The mirror apt uses here (deb822 sources first, then one-line sources).
mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1 || true)
if [ -z "$mirror" ]; then
	mirror=$(awk '$1 == "deb" && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
fi
[ -n "$mirror" ] || { echo "ensure-tree: no apt mirror found in /etc/apt" >&2; exit 1; }

echo "ensure-tree: debootstrap $SUITE from $mirror (one time, ~2 min)" >&2
rm -rf "$TREE.tmp"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$TREE.tmp" "$mirror" >"$CACHE/debootstrap-$KEY.log" 2>&1 || {
	tail -20 "$CACHE/debootstrap-$KEY.log" >&2
	exit 1
}
# No getty on a console nobody reads; each copy gets its own machine-id at boot.
rm -f "$TREE.tmp/etc/machine-id" "$TREE.tmp/var/lib/dbus/machine-id"
: >"$TREE.tmp/etc/machine-id"
ln -sf /dev/null "$TREE.tmp/etc/systemd/system/console-getty.service"
ln -sf /dev/null "$TREE.tmp/etc/systemd/system/getty@tty1.service"
apt_clean="$TREE.tmp/var/cache/apt/archives"
rm -f "$apt_clean"/*.deb
rm -rf "$TREE"
mv "$TREE.tmp" "$TREE"
touch "$TREE/.complete"
echo "$TREE"
