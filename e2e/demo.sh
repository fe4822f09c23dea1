#!/usr/bin/env bash
# demo.sh: claude-auth-sync end to end in a sandbox HOME, with no Vault and no
# Anthropic account: the local file store, a local fake of Anthropic's endpoints
# and a stand-in `claude`. Shows an OK pass, recovery from a clobbered login, and
# the way back after a logout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/claude-auth-sync-demo.XXXXXX")
fake_pid=""
cleanup() { [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; set +e; "$@"; rc=$?; set -e; printf '(exit %d)\n' "$rc"; }

say "building claude-auth-sync, the stand-in claude and the fake Anthropic"
mkdir -p "$work/bin"
(cd "$root" && go build -o "$work/bin/claude-auth-sync" ./cmd/claude-auth-sync \
  && go build -o "$work/bin/claude" ./e2e/cmd/claude-standin \
  && go build -o "$work/bin/fake-anthropic" ./e2e/cmd/fake-anthropic)

# A sandbox user: nothing of the real HOME, Vault or system config is used.
export HOME="$work/home"
mkdir -p "$HOME"
unset VAULT_ADDR VAULT_TOKEN CLAUDE_CONFIG_DIR CLAUDE_CREDENTIALS_FILE CLAUDE_AUTH_STATE_DIR \
  CLAUDE_AUTH_CONFIG_DIR CLAUDE_AUTH_VAULT_TOKEN_FILE CLAUDE_AUTH_VAULT_PATH CLAUDE_AUTH_TOKEN_ENV_FILE \
  CLAUDE_CODE_OAUTH_TOKEN ANTHROPIC_API_KEY ANTHROPIC_AUTH_TOKEN XDG_CONFIG_HOME XDG_STATE_HOME
export CLAUDE_AUTH_SYSTEM_CONFIG="$work/no-system-config" CLAUDE_AUTH_JOURNAL_SOCKET=off
export PATH="$work/bin:$PATH"
creds="$HOME/.claude/.credentials.json"

"$work/bin/fake-anthropic" --login "$creds" --url-file "$work/url" >/dev/null &
fake_pid=$!
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.05; done
export ANTHROPIC_BASE_URL=$(cat "$work/url")
echo "fake Anthropic at $ANTHROPIC_BASE_URL; a fresh login is in $creds"

say "1. a normal pass: the check passes and the login is backed up (local store)"
run claude-auth-sync sync

say "2. a racing writer clobbers the login (persists refreshToken \"\")"
sed -i -E 's/"refreshToken": "[^"]*"/"refreshToken": ""/' "$creds"
grep -o '"refreshToken": "[^"]*"' "$creds"
run claude-auth-sync sync

say "3. status (no secret is ever printed)"
run claude-auth-sync status

say "4. a logout deletes the file: never restored by itself, but 'restore' brings it back"
rm -f "$creds"
run claude-auth-sync sync
run claude-auth-sync restore
run claude-auth-sync sync

say "the private log, $HOME/.local/state/claude-auth-sync/sync.log"
cat "$HOME/.local/state/claude-auth-sync/sync.log"
