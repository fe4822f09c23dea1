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

	systemctl daemon-reload >/dev/null 2>&1 || :
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
