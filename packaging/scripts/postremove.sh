#!/bin/sh
# claude-auth-sync postremove (deb postrm / rpm %postun).
# purge (deb) deletes only what the package itself made: provision's state in
# /var/lib/claude-auth-sync. Users' homes (their token files, state, logs),
# the roster and Vault are never touched.
set -e

case "$1" in
purge)
	rm -rf /var/lib/claude-auth-sync
	# The config is a conffile (dpkg purges it); the dir goes only if empty,
	# so an admin's roster.yaml stays.
	rmdir /etc/claude-auth-sync 2>/dev/null || :
	;;
esac

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
