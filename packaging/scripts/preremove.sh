#!/bin/sh
# claude-auth-sync preremove (deb prerm / rpm %preun).
# On removal (not on upgrade) stop what runs the binary that is about to go.
# Enablement links go at purge (postremove); every user's files and Vault
# data are left alone.
set -e

removing=no
case "$1" in
remove | deconfigure) removing=yes ;; # deb
0) removing=yes ;;                     # rpm: last copy erased
esac

if [ "$removing" = yes ] && [ -d /run/systemd/system ]; then
	systemctl stop claude-auth-sync-provision.timer claude-auth-sync-provision.service \
		'claude-auth-sync@*.timer' 'claude-auth-sync@*.service' \
		'claude-auth-sync-agent@*.service' claude-auth-sync-metrics.service >/dev/null 2>&1 || :
	# And the user units, in every running user manager.
	for rundir in /run/user/[0-9]*; do
		[ -S "$rundir/systemd/private" ] || continue
		uid=${rundir##*/}
		name=$(getent passwd "$uid" | cut -d: -f1) || continue
		[ -n "$name" ] || continue
		timeout 60 runuser -u "$name" -- env XDG_RUNTIME_DIR="$rundir" systemctl --user stop claude-auth-sync.service >/dev/null 2>&1 || :
	done
fi
exit 0
