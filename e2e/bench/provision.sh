#!/usr/bin/env bash
# provision.sh: time `claude-auth-sync provision` for N real OS users (default
# 100, made with useradd and removed after) against a real Vault dev server.
# Root only. Usage: e2e/bench/provision.sh [users]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
VAULT_BIN=$(bash e2e/vault/ensure-vault.sh) CAS_PROVISION_USERS=${1:-100} \
	go test -count=1 -v -run '^TestProvisionScale$' ./e2e/ | grep -E 'provision, [0-9]+ users|^(ok|FAIL|---)'
