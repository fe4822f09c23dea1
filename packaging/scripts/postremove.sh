#!/bin/sh
# claude-auth-sync postremove (deb postrm / rpm %postun).
# remove: the metrics the publisher left for the node exporter go (nothing
# updates them any more). purge (deb) also removes what the package and
# provision made outside users' homes: the units' enablement links (the rpm's
# erase too), provision's state in /var/lib/claude-auth-sync and the
# fleet-reader token file (saying how to revoke the token: the binary is gone
# by now). Users' homes (their token files, state, logs), the roster and Vault are never
# touched.
set -e

removing=no unlinking=no purging=no
case "$1" in
remove) removing=yes ;;
purge) removing=yes unlinking=yes purging=yes ;;
0) removing=yes unlinking=yes ;; # rpm: last copy erased (what %systemd_preun disables)
esac

if [ "$removing" = yes ]; then
	# The publisher's default output (its --to in a drop-in is the admin's).
	rm -f /var/lib/prometheus/node-exporter/claude_auth_sync.prom
fi

if [ "$unlinking" = yes ]; then
	# Every enablement link of our units (provision's agents and timers, the
	# provision timer, the publisher, a global enable of the user unit),
	# pointing at a unit file that is gone. Masks and drop-ins are the admin's.
	for dir in /etc/systemd/system /etc/systemd/user; do
		[ -d "$dir" ] || continue
		find "$dir" -type l \( -name 'claude-auth-sync.service' -o -name 'claude-auth-sync@*.service' \
			-o -name 'claude-auth-sync@*.timer' -o -name 'claude-auth-sync-agent@*.service' \
			-o -name 'claude-auth-sync-provision.service' -o -name 'claude-auth-sync-provision.timer' \
			-o -name 'claude-auth-sync-metrics.service' \) 2>/dev/null | while IFS= read -r link; do
			case "$(readlink "$link")" in
			/usr/lib/systemd/*/claude-auth-sync* | /lib/systemd/*/claude-auth-sync*) rm -f "$link" ;;
			esac
		done
	done
fi

if [ "$purging" = yes ]; then
	# The fleet reader's token: provision recorded its file and accessor.
	record=/var/lib/claude-auth-sync/fleet-reader
	if [ -f "$record" ] && [ ! -L "$record" ]; then
		token_file=$(sed -n 's/^token_file=//p' "$record" | head -n 1)
		accessor=$(sed -n 's/^accessor=//p' "$record" | head -n 1)
		case "$token_file" in
		/*)
			if [ -f "$token_file" ] && [ ! -L "$token_file" ]; then
				rm -f "$token_file"
				echo "claude-auth-sync: removed the fleet-reader token file $token_file."
			fi
			;;
		esac
		if [ -n "$accessor" ]; then
			echo "claude-auth-sync: the fleet-reader token is still valid in Vault; revoke it with an admin token: vault token revoke -accessor $accessor"
		fi
	elif [ -f /etc/claude-auth-sync/fleet-reader-token ]; then
		echo "claude-auth-sync: /etc/claude-auth-sync/fleet-reader-token holds a fleet-reader token provision did not record; revoke it with an admin token (VAULT_TOKEN=<admin token> vault token revoke \"\$(cat /etc/claude-auth-sync/fleet-reader-token)\"), then remove the file."
	fi

	rm -rf /var/lib/claude-auth-sync
	# The config is a conffile (dpkg purges it); the dir goes only if empty,
	# so an admin's roster.yaml stays.
	rmdir /etc/claude-auth-sync 2>/dev/null || :
fi

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
