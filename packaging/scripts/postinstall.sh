#!/bin/sh
# claude-auth-sync postinstall (deb postinst / rpm %post).
# Makes systemd see the new or changed units. Enables and starts nothing: the
# admin (or `claude-auth-sync provision`) decides which users get an agent.
set -e

upgrade=no
case "$1" in
configure) [ -n "$2" ] && upgrade=yes ;; # deb: configure <old-version>
[0-9]*) [ "$1" -ge 2 ] && upgrade=yes ;; # rpm: number of installed copies
esac

# Only where systemd is the running init (not in containers, chroots, images).
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ "$upgrade" = yes ]; then
		# Agents that were running pick up the new binary; stopped ones stay stopped.
		systemctl try-restart 'claude-auth-sync@*.service' >/dev/null 2>&1 || :
	fi
fi
exit 0
