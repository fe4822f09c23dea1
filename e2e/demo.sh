#!/usr/bin/env bash
# demo.sh: claude-auth-sync end to end in a sandbox HOME, with no Vault and no
# Anthropic account: the local file store, a local fake of Anthropic's endpoints
# and a stand-in `claude`. Shows an OK pass, recovery from a clobbered login, the
# way back after a logout, then the agent at work: a rotation backed up at once
# (with its lag), a clobbered login restored by the agent by itself, racing
# Claude processes on short-lived logins with the agent refreshing first, once
# per lifetime, and `status` showing the live state. Exits non-zero as soon as
# any of that does not happen.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/claude-auth-sync-demo.XXXXXX")
fake_pid=""
agent_pid=""
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { printf '\n\033[1;31mdemo FAILED: %s\033[0m\n' "$*" >&2; exit 1; }
# expect CODE CMD…: run CMD, show it and its exit status, and stop the demo
# when the status is not CODE.
expect() {
  local want=$1; shift
  printf '$ %s\n' "$*"
  set +e; "$@"; rc=$?; set -e
  printf '(exit %d)\n' "$rc"
  [ "$rc" = "$want" ] || die "$* exited $rc; want $want"
}

say "building claude-auth-sync, the stand-in claude, the racing stand-in and the fake Anthropic"
mkdir -p "$work/bin"
(cd "$root" && go build -o "$work/bin/claude-auth-sync" ./cmd/claude-auth-sync \
  && go build -o "$work/bin/claude" ./e2e/cmd/claude-standin \
  && go build -o "$work/bin/racy-claude" ./e2e/cmd/racy-claude \
  && go build -o "$work/bin/fake-anthropic" ./e2e/cmd/fake-anthropic)

# A sandbox user: nothing of the real HOME, Vault or system config is used.
export HOME="$work/home"
mkdir -p "$HOME"
unset VAULT_ADDR VAULT_TOKEN CLAUDE_CONFIG_DIR CLAUDE_CREDENTIALS_FILE CLAUDE_AUTH_STATE_DIR \
  CLAUDE_AUTH_CONFIG_DIR CLAUDE_AUTH_VAULT_TOKEN_FILE CLAUDE_AUTH_VAULT_PATH CLAUDE_AUTH_TOKEN_ENV_FILE \
  CLAUDE_CODE_OAUTH_TOKEN ANTHROPIC_API_KEY ANTHROPIC_AUTH_TOKEN XDG_CONFIG_HOME XDG_STATE_HOME \
  CLAUDE_AUTH_REFRESH_LEAD CLAUDE_AUTH_CHECK_INTERVAL CLAUDE_AUTH_OAUTH_TOKEN_URL CLAUDE_AUTH_STORE
export CLAUDE_AUTH_SYSTEM_CONFIG="$work/no-system-config" CLAUDE_AUTH_JOURNAL_SOCKET=off
export CLAUDE_AUTH_CHECK_SPREAD=0
export PATH="$work/bin:$PATH"
creds="$HOME/.claude/.credentials.json"
log="$HOME/.local/state/claude-auth-sync/sync.log"

"$work/bin/fake-anthropic" --login "$creds" --url-file "$work/url" >/dev/null &
fake_pid=$!
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.05; done
[ -s "$work/url" ] || die "the fake Anthropic did not start"
export ANTHROPIC_BASE_URL=$(cat "$work/url")
export CLAUDE_AUTH_OAUTH_TOKEN_URL="$ANTHROPIC_BASE_URL/v1/oauth/token"
echo "fake Anthropic at $ANTHROPIC_BASE_URL; a fresh login is in $creds"

# fake METHOD PATH: one request to the fake's demo endpoints (bash's /dev/tcp,
# no curl needed); prints the body.
fake() {
  local hostport=${ANTHROPIC_BASE_URL#http://}
  exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}"
  printf '%s %s HTTP/1.0\r\nHost: %s\r\nContent-Length: 0\r\n\r\n' "$1" "$2" "$hostport" >&3
  sed '1,/^\r$/d' <&3
  exec 3<&-
}
refreshes() { fake GET /demo/counters | grep -o '"Refreshes":[0-9]*' | cut -d: -f2; }
refresh_token() { grep -o '"refreshToken": *"[^"]*"' "$creds" | sed -E 's/.*"([^"]*)"$/\1/'; }
# mark, then new_lines: sync.log lines written since the mark.
mark() { mark_at=$(wc -l <"$log" 2>/dev/null || echo 0); }
new_lines() { tail -n "+$((mark_at + 1))" "$log" 2>/dev/null || true; }
# wait_for ERE SECONDS: wait until a new sync.log line matches; print it.
wait_for() {
  local end=$((SECONDS + $2))
  while [ "$SECONDS" -lt "$end" ]; do
    if new_lines | grep -E -m1 -- "$1"; then return 0; fi
    sleep 0.1
  done
  return 1
}

say "1. a normal pass: the check passes and the login is backed up (local store)"
expect 0 claude-auth-sync sync

say "2. a racing writer clobbers the login (persists refreshToken \"\")"
sed -i -E 's/"refreshToken": *"[^"]*"/"refreshToken": ""/' "$creds"
grep -o '"refreshToken": *"[^"]*"' "$creds"
expect 0 claude-auth-sync sync
[ -n "$(refresh_token)" ] || die "the clobbered login was not restored"

say "3. status (no secret is ever printed)"
expect 0 claude-auth-sync status

say "4. a logout deletes the file: never restored by itself, but 'restore' brings it back"
rm -f "$creds"
expect 3 claude-auth-sync sync
expect 0 claude-auth-sync restore
expect 0 claude-auth-sync sync

say "5. the agent: 'claude-auth-sync run', what the systemd unit runs (its console lines marked agent|)"
mark
claude-auth-sync run > >(sed -u 's/^/    agent| /') 2>&1 &
agent_pid=$!
wait_for ' OK agent started' 15 >/dev/null || die "the agent did not start"
sleep 1

say "6. Claude rotates the login (a refresh writes a new refresh token): the agent backs it up at once"
mark
racy-claude --creds "$creds" --api "$ANTHROPIC_BASE_URL" --threshold 1000h --once --for 5s >/dev/null
line=$(wait_for ' OK backed up the changed login .*after the change\)' 10) || die "the rotation was not backed up"
echo "backed up: ${line#* OK }"
echo "lag from the change to the backup: $(echo "$line" | grep -oE '[0-9.]+[µm]?s after the change' | cut -d' ' -f1)"

say "7. a racing writer clobbers the login while the agent runs: it restores it by itself"
mark
sed -i -E 's/"refreshToken": *"[^"]*"/"refreshToken": ""/' "$creds"
grep -o '"refreshToken": *"[^"]*"' "$creds"
wait_for ' RECOVERED credentials file was clobbered' 10 >/dev/null || die "the agent did not restore the clobbered login"
[ -n "$(refresh_token)" ] || die "the credentials file still holds no refresh token"
echo "refresh token back in the file; no command was run"

lifetime=10
racing=20
say "8. logins that live ${lifetime}s, and 4 Claude processes racing on them for ${racing}s: the agent refreshes each login once, before Claude would"
before=$(refreshes)
mark
fake POST "/demo/login?expires_in=${lifetime}s" >/dev/null
wait_for ' OK backed up the changed login' 10 >/dev/null || die "the new short-lived login was not backed up"
mkdir -p "$work/racy"
pids=()
for _ in 1 2 3 4; do
  # Claude refreshes when less than 5 minutes are left: here, scaled, 3 s.
  RACY_STATS_DIR="$work/racy" racy-claude --creds "$creds" --api "$ANTHROPIC_BASE_URL" --threshold 3s --for "${racing}s" >/dev/null &
  pids+=($!)
done
wait "${pids[@]}"
# The agent keeps refreshing after the race: count at a point where both
# agree. The agent's lines first, then the endpoint's count: every line is a
# refresh the endpoint answered before it, so the two are equal unless a
# refresh is between its answer and its line (retry) or someone else
# refreshed (they stay apart).
for _ in $(seq 50); do
  agent_refreshes=$(new_lines | grep -c ' OK refreshed the login ahead of Claude' || true)
  all_refreshes=$(( $(refreshes) - before ))
  [ "$agent_refreshes" -ge "$all_refreshes" ] && break
  sleep 0.1
done
echo "the agent refreshed $agent_refreshes times; the token endpoint saw $all_refreshes refreshes in all"
for f in "$work"/racy/racy-*.json; do echo "racing process: $(cat "$f")"; done
[ "$(ls "$work"/racy/racy-*.json | wc -l)" = 4 ] || die "not every racing process reported"
if grep -L '"Refreshes":0,"InvalidGrant":0,"Logouts":0' "$work"/racy/racy-*.json | grep -q .; then
  die "a racing process refreshed, lost a race or was logged out"
fi
[ "$agent_refreshes" = "$all_refreshes" ] || die "someone other than the agent refreshed"
# Each login is refreshed once: at half its lifetime (the default lead, 15 min,
# is capped at half a short login's lifetime), or at once for a new login that
# is already inside Claude's own 5-minute window. Never twice, never by Claude.
min=$(( racing / lifetime )) max=$(( 2 * racing / lifetime + 2 ))
[ "$agent_refreshes" -ge "$min" ] && [ "$agent_refreshes" -le "$max" ] ||
  die "the agent refreshed $agent_refreshes times in ${racing}s of ${lifetime}s logins; want $min to $max (each login once)"
[ -n "$(refresh_token)" ] || die "logged out after the race"

say "9. status shows the agent's live state"
expect 0 claude-auth-sync status >"$work/status.txt"
cat "$work/status.txt"
grep -qi 'agent' "$work/status.txt" || die "status does not show the agent"

say "10. Ctrl-C stops the agent, and it says so"
mark
kill -INT "$agent_pid"
wait "$agent_pid" || die "the agent exited $? on Ctrl-C"
agent_pid=""
wait_for ' OK agent stopped' 5 >/dev/null || die "the agent's stop is not in sync.log"

say "the private log, $log"
cat "$log"
say "demo OK"
