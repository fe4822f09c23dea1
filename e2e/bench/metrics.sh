#!/usr/bin/env bash
# metrics.sh: the metrics path for N users (default 200; real OS users made
# with useradd and removed after): each user's agent file in a directory of its
# own, `claude-auth-sync publish-metrics --once` timed, then Debian's
# prometheus-node-exporter (textfile collector only) serving the published file:
# series per user, file size, scrape errors, the textfile collector's own
# duration and the whole scrape's time with curl. Root only.
# Usage: e2e/bench/metrics.sh [users] [scrapes]
set -euo pipefail
n=${1:-200}
scrapes=${2:-20}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
users=()
npid=""
cleanup() {
	[ -n "$npid" ] && kill "$npid" 2>/dev/null
	for u in "${users[@]}"; do userdel "$u" >/dev/null 2>&1 || :; done
	rm -rf "$work"
}
trap cleanup EXIT
(cd "$root" && go build -o "$work/claude-auth-sync" ./cmd/claude-auth-sync)
chmod 0755 "$work"
install -d -m 0755 "$work/metrics" "$work/node-exporter"
now=$(date +%s)
for i in $(seq "$n"); do
	u=$(printf 'casm%04d%04x' "$i" $((RANDOM)))
	useradd -M -U -d /nonexistent -s /usr/sbin/nologin "$u"
	users+=("$u")
	install -d -o "$u" -g "$u" -m 0700 "$work/metrics/$u"
	# What an agent with a login, a backup, a known lag and MCP logins writes.
	cat >"$work/metrics/$u/claude_auth_sync.prom" <<PROM
# HELP claude_auth_sync_last_success_timestamp_seconds Unix time of the last OK or RECOVERED event for this user.
# TYPE claude_auth_sync_last_success_timestamp_seconds gauge
claude_auth_sync_last_success_timestamp_seconds{user="$u"} $now.123
# HELP claude_auth_sync_credential_expiry_timestamp_seconds Unix time the access token in the credentials file expires.
# TYPE claude_auth_sync_credential_expiry_timestamp_seconds gauge
claude_auth_sync_credential_expiry_timestamp_seconds{user="$u"} $((now + 28800))
# HELP claude_auth_sync_login_deadline_timestamp_seconds Unix time the login itself ends (refresh token expiry); an interactive login is needed after it.
# TYPE claude_auth_sync_login_deadline_timestamp_seconds gauge
claude_auth_sync_login_deadline_timestamp_seconds{user="$u"} $((now + 2592000))
# HELP claude_auth_sync_last_backup_timestamp_seconds Unix time of this host's last backup of the login.
# TYPE claude_auth_sync_last_backup_timestamp_seconds gauge
claude_auth_sync_last_backup_timestamp_seconds{user="$u"} $now.456
# HELP claude_auth_sync_last_backup_lag_seconds Seconds between the credentials file changing and its backup reaching the store (last backup).
# TYPE claude_auth_sync_last_backup_lag_seconds gauge
claude_auth_sync_last_backup_lag_seconds{user="$u"} 0.042
# HELP claude_auth_sync_failures_total FAIL events (unusable login, foreign Vault token, 403, failed restore).
# TYPE claude_auth_sync_failures_total counter
claude_auth_sync_failures_total{user="$u"} 0
# HELP claude_auth_sync_mcp_refreshes_total Refreshes of the user's MCP server logins by claude-auth-sync, over every server.
# TYPE claude_auth_sync_mcp_refreshes_total counter
claude_auth_sync_mcp_refreshes_total{user="$u"} 14
# HELP claude_auth_sync_mcp_refresh_failures_total Failed refreshes of the user's MCP server logins (refused, unreachable, not written).
# TYPE claude_auth_sync_mcp_refresh_failures_total counter
claude_auth_sync_mcp_refresh_failures_total{user="$u"} 1
# HELP claude_auth_sync_mcp_servers The user's MCP server logins in each state (needs-login: log in again with /mcp in Claude Code).
# TYPE claude_auth_sync_mcp_servers gauge
claude_auth_sync_mcp_servers{user="$u",state="ok"} 2
claude_auth_sync_mcp_servers{user="$u",state="retrying"} 0
claude_auth_sync_mcp_servers{user="$u",state="needs-login"} 1
claude_auth_sync_mcp_servers{user="$u",state="skipped"} 0
PROM
	chown "$u:$u" "$work/metrics/$u/claude_auth_sync.prom"
done

ms() { echo $(( $(date +%s%N) / 1000000 )); }
t0=$(ms)
runs=10
for _ in $(seq $runs); do
	"$work/claude-auth-sync" publish-metrics --once --from "$work/metrics" --to "$work/node-exporter"
done
t1=$(ms)
pub="$work/node-exporter/claude_auth_sync.prom"
series=$(grep -c '^claude_auth_sync_' "$pub")
echo "users: $n; published series: $series ($(( series / n )) per user); file: $(stat -c %s "$pub") bytes"
echo "publish-metrics --once: $(( (t1 - t0) / runs )) ms per publish (mean of $runs, process start included)"

port=$((20000 + RANDOM % 20000))
prometheus-node-exporter --web.listen-address=127.0.0.1:$port --collector.disable-defaults --collector.textfile \
	--collector.textfile.directory="$work/node-exporter" >"$work/ne.log" 2>&1 &
npid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/metrics" >/dev/null && break; sleep 0.05; done
times=()
for _ in $(seq "$scrapes"); do
	times+=("$(curl -s -o "$work/scrape" -w '%{time_total}' "http://127.0.0.1:$port/metrics")")
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "scrape with curl (%d): p50 %.1f ms, max %.1f ms\n", NR, a[int(NR/2)+1]*1000, a[NR]*1000}'
grep -E '^node_textfile_scrape_error |^node_scrape_collector_duration_seconds\{collector="textfile"\}' "$work/scrape"
echo "scraped claude_auth_sync series: $(grep -c '^claude_auth_sync_' "$work/scrape")"
