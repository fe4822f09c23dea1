#!/usr/bin/env bash
# sync-pass.sh: time and peak memory of one `claude-auth-sync sync` pass against a
# real Vault dev server, with a trivial stand-in inference command, next to the
# reference bash tool's cost shape (four `vault` CLI runs per pass: token lookup,
# token renew, kv get, kv patch). Needs hyperfine and GNU time (Debian packages).
# Usage: e2e/bench/sync-pass.sh [runs]
set -euo pipefail
runs=${1:-30}
root=$(cd "$(dirname "$0")/../.." && pwd)
vault_bin=$(bash "$root/e2e/vault/ensure-vault.sh")
work=$(mktemp -d)
vpid=""
cleanup() { [ -n "$vpid" ] && kill "$vpid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

(cd "$root" && go build -o "$work/claude-auth-sync" ./cmd/claude-auth-sync && go build -o "$work/fake-anthropic" ./e2e/cmd/fake-anthropic)
port=$((20000 + RANDOM % 20000))
"$vault_bin" server -dev -dev-root-token-id=bench-root -dev-listen-address=127.0.0.1:$port -dev-no-store-token >"$work/vault.log" 2>&1 &
vpid=$!
export VAULT_ADDR=http://127.0.0.1:$port
for _ in $(seq 200); do curl -sf -H 'X-Vault-Token: bench-root' "$VAULT_ADDR/v1/sys/mounts/secret" >/dev/null && break; sleep 0.05; done

user=bench
cat >"$work/policy.hcl" <<HCL
path "secret/data/workstation/claude-users/$user" { capabilities = ["create", "read", "update"] }
path "secret/metadata/workstation/claude-users/$user" { capabilities = ["read"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
HCL
VAULT_TOKEN=bench-root "$vault_bin" policy write "workstation-claude-$user" "$work/policy.hcl" >/dev/null
export HOME="$work/home"
mkdir -p "$HOME/.config/claude-auth-sync"
VAULT_TOKEN=bench-root "$vault_bin" token create -orphan -period=768h -policy="workstation-claude-$user" \
  -display-name="devvm-claude-auth-$user" -field=token >"$HOME/.config/claude-auth-sync/vault-token"
chmod 600 "$HOME/.config/claude-auth-sync/vault-token"

"$work/fake-anthropic" --login "$HOME/.claude/.credentials.json" --url-file "$work/url" >/dev/null &
fpid=$!
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.05; done
kill $fpid
# A trivial inference command, so the pass measures our own cost.
printf '#!/bin/sh\necho AUTH_OK\n' >"$work/claude"; chmod +x "$work/claude"

export CLAUDE_AUTH_USER=$user CLAUDE_AUTH_CLAUDE_BIN="$work/claude" CLAUDE_AUTH_JOURNAL_SOCKET=off \
  CLAUDE_AUTH_SYSTEM_CONFIG="$work/none"
"$work/claude-auth-sync" sync 2>/dev/null

# The reference shape: the same check plus four vault CLI runs with the token.
cat >"$work/reference-shape.sh" <<SH
#!/bin/sh
export VAULT_TOKEN=\$(cat "$HOME/.config/claude-auth-sync/vault-token")
"$vault_bin" token lookup >/dev/null
"$vault_bin" token renew >/dev/null
"$vault_bin" kv get -format=json secret/workstation/claude-users/$user >/dev/null
"$work/claude" >/dev/null
"$vault_bin" kv patch -method=rw secret/workstation/claude-users/$user backed_up_at=\$(date -Is) >/dev/null
SH
chmod +x "$work/reference-shape.sh"

echo "== wall time, $runs runs each (hyperfine)"
hyperfine -N --warmup 3 --runs "$runs" --export-markdown "$work/times.md" --export-json "$work/times.json" \
  -n "claude-auth-sync sync" "$work/claude-auth-sync sync" \
  -n "reference shape (4x vault CLI)" "$work/reference-shape.sh" >/dev/null
cat "$work/times.md"
python3 -c 'import json,sys
for r in json.load(open(sys.argv[1]))["results"]:
    print("median %-32s %6.1f ms" % (r["command"], r["median"]*1000))' "$work/times.json"

echo
echo "== peak RSS (GNU time, median of 9 runs)"
peak() { for _ in $(seq 9); do /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; done | sort -n | sed -n 5p; }
echo "claude-auth-sync sync: $(peak "$work/claude-auth-sync" sync) KiB"
echo "one vault CLI run (kv get): $(VAULT_TOKEN=$(cat "$HOME/.config/claude-auth-sync/vault-token") peak "$vault_bin" kv get secret/workstation/claude-users/$user) KiB (the reference runs four)"
