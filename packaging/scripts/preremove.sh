#!/bin/sh
# claude-auth-sync preremove (deb prerm / rpm %preun).
# On removal (not on upgrade) stop what runs the binary that is about to go.
# Enablement symlinks and every user's files and Vault data are left alone.
set -e

removing=no
case "$1" in
remove | deconfigure) removing=yes ;; # deb
0) removing=yes ;;                     # rpm: last copy erased
esac

if [ "$removing" = yes ] && [ -d /run/systemd/system ]; then
	systemctl stop claude-auth-sync-provision.timer claude-auth-sync-provision.service \
		'claude-auth-sync-pass@*.timer' 'claude-auth-sync-pass@*.service' \
		'claude-auth-sync@*.service' >/dev/null 2>&1 || :
fi
exit 0
