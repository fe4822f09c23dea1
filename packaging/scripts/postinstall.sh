#!/bin/sh
# claude-auth-sync postinstall (deb postinst / rpm %post).
# Makes systemd see the new or changed units. Enables and starts nothing: the
# admin (or `claude-auth-sync provision`) decides which users get an agent.
set -e

upgrade=no
fresh=no
case "$1" in
configure) [ -n "$2" ] && upgrade=yes || fresh=yes ;; # deb: configure <old-version>
[0-9]*) [ "$1" -ge 2 ] && upgrade=yes || fresh=yes ;; # rpm: number of installed copies
esac

# A first install: say what comes next. Text only; nothing is enabled here.
if [ "$fresh" = yes ]; then
	cat <<'NEXT'
claude-auth-sync is installed; no agent runs yet. Next:
  fleet:  set VAULT_ADDR in /etc/claude-auth-sync/config, write the roster
          /etc/claude-auth-sync/roster.yaml (example in
          /usr/share/doc/claude-auth-sync/examples/), then run
          claude-auth-sync provision --roster /etc/claude-auth-sync/roster.yaml
  one user, no provisioning:
          systemctl --user enable --now claude-auth-sync
See claude-auth-sync(1) and /usr/share/doc/claude-auth-sync/runbook.md.
NEXT
fi

# From a build where every agent wrote claude_auth_sync_<user>.prom into one
# shared, sticky (1777) CLAUDE_AUTH_METRICS_DIR: the dir becomes root's (0755)
# first, so nobody can add to it meanwhile; each user whose own file was there
# gets a directory of their own (theirs, 0700) where the new agent writes; the
# old files, and anything in the dir that is not a directory of the user it is
# named after, go (another user's could be a forgery). The counters live in
# each user's state dir, so nothing counted is lost. The node exporter now
# reads the publisher's one file (see migrated_metrics below and the runbook).
metrics_dir=""
if [ -r /etc/claude-auth-sync/config ]; then
	while IFS= read -r line; do
		case "$line" in CLAUDE_AUTH_METRICS_DIR=*) metrics_dir=${line#CLAUDE_AUTH_METRICS_DIR=} ;; esac
	done </etc/claude-auth-sync/config
fi
migrated_metrics=no
if [ -n "$metrics_dir" ] && [ -d "$metrics_dir" ] && [ ! -L "$metrics_dir" ] && [ -k "$metrics_dir" ]; then
	chown root:root "$metrics_dir"
	chmod 0755 "$metrics_dir"
	users=""
	for entry in "$metrics_dir"/* "$metrics_dir"/.[!.]*; do
		[ -e "$entry" ] || [ -L "$entry" ] || continue
		name=${entry##*/}
		case "$name" in
		claude_auth_sync_*.prom)
			name=${name#claude_auth_sync_}
			name=${name%.prom}
			if [ -f "$entry" ] && [ ! -L "$entry" ] && [ "$(stat -c %U "$entry")" = "$name" ]; then
				users="$users $name"
			fi
			rm -f "$entry"
			;;
		*)
			if [ ! -d "$entry" ] || [ -L "$entry" ] || [ "$(stat -c %U "$entry")" != "$name" ]; then
				rm -rf "$entry"
			fi
			;;
		esac
	done
	for name in $users; do
		[ -e "$metrics_dir/$name" ] || install -d -o "$name" -g "$(id -gn "$name")" -m 0700 "$metrics_dir/$name"
	done
	migrated_metrics=yes
	echo "claude-auth-sync: $metrics_dir is root's now (0755), each agent writes into <dir>/<user>/; claude-auth-sync-metrics.service publishes them to /var/lib/prometheus/node-exporter/claude_auth_sync.prom: point the node exporter's --collector.textfile.directory there (Debian's default). See the runbook, Metrics."
fi

# Only where systemd is the running init (not in containers, chroots, images).
if [ -d /run/systemd/system ]; then
	# From a build where claude-auth-sync@<user>.service was the agent (it is the
	# reference runbook's one pass now, and the agent is claude-auth-sync-agent@):
	# each user whose old agent was enabled gets the agent under its new name and
	# the six-hourly claude-auth-sync@<user>.timer, enabled and started; an old
	# agent that ran without being enabled is started under the new name. The old
	# one is stopped first (its lock would make the new one exit 4), so exactly one
	# agent runs per user. The same build's claude-auth-sync-pass@<user>.timer
	# becomes claude-auth-sync@<user>.timer. Skipped while the reference install's
	# own claude-auth-sync@.service in /etc/systemd/system still wins: its
	# migration is the admin's (docs/runbook.md).
	migrate_agents() {
		[ -e /etc/systemd/system/claude-auth-sync@.service ] && return 0
		running=$(systemctl list-units --plain --no-legend --state=running 'claude-auth-sync@*.service' 2>/dev/null || :)
		for link in /etc/systemd/system/multi-user.target.wants/claude-auth-sync@*.service \
			/etc/systemd/system/timers.target.wants/claude-auth-sync-pass@*.timer; do
			[ -L "$link" ] || continue
			unit=${link##*/}
			user=${unit#*@}
			user=${user%.*}
			rm -f "$link"
			systemctl stop "$unit" >/dev/null 2>&1 || :
			case "$unit" in
			*.service) systemctl enable --now "claude-auth-sync-agent@$user.service" "claude-auth-sync@$user.timer" >/dev/null 2>&1 || : ;;
			*.timer) systemctl enable --now "claude-auth-sync@$user.timer" >/dev/null 2>&1 || : ;;
			esac
		done
		printf '%s\n' "$running" | while read -r unit _; do
			case "$unit" in claude-auth-sync@*.service) ;; *) continue ;; esac
			user=${unit#claude-auth-sync@}
			user=${user%.service}
			systemctl stop "$unit" >/dev/null 2>&1 || :
			systemctl start "claude-auth-sync-agent@$user.service" >/dev/null 2>&1 || :
		done
	}

	# The metrics the agents wrote into the shared dir keep reaching the node
	# exporter: through the publisher now.
	migrate_metrics_unit() {
		[ "$migrated_metrics" = yes ] || return 0
		systemctl enable --now claude-auth-sync-metrics.service >/dev/null 2>&1 || :
	}

	systemctl daemon-reload >/dev/null 2>&1 || :
	migrate_metrics_unit
	if [ "$upgrade" = yes ]; then
		# Agents that were running pick up the new binary; stopped ones stay
		# stopped. An agent left on the old one would run a deleted file until
		# the next reboot, and its refresh child (re-executed from
		# /usr/bin/claude-auth-sync) would be the new binary beside an old
		# parent. try-restart is a stop then a start: a pending backup is
		# flushed or kept on disk, and the start reads it back.
		systemctl try-restart 'claude-auth-sync-agent@*.service' >/dev/null 2>&1 || :
		migrate_agents
		# The same for the user units, in every running user manager (no
		# D-Bus needed: systemctl --user talks to the manager's private socket
		# under XDG_RUNTIME_DIR).
		for rundir in /run/user/[0-9]*; do
			[ -S "$rundir/systemd/private" ] || continue
			uid=${rundir##*/}
			name=$(getent passwd "$uid" | cut -d: -f1) || continue
			[ -n "$name" ] || continue
			timeout 30 runuser -u "$name" -- env XDG_RUNTIME_DIR="$rundir" systemctl --user daemon-reload >/dev/null 2>&1 || :
			timeout 60 runuser -u "$name" -- env XDG_RUNTIME_DIR="$rundir" systemctl --user try-restart claude-auth-sync.service >/dev/null 2>&1 || :
		done
	fi
fi
exit 0
