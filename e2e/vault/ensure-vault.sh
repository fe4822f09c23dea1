#!/usr/bin/env bash
# ensure-vault.sh: print the path of a real Vault server binary, building it once.
#
# No Vault server is packaged for this machine, and `go install` refuses Vault's
# module because its go.mod points at ./api and ./sdk. So we build it from the
# module source with those replace lines dropped and three small call sites adapted
# to the published sdk (none touch KV, tokens or policies). The result is cached
# outside the repository, keyed by version: a warm call returns at once.
set -euo pipefail

VAULT_VERSION="${VAULT_VERSION:-v1.21.4}"
SDK_VERSION="${VAULT_SDK_VERSION:-v0.21.0}"
CACHE="${CLAUDE_AUTH_SYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/claude-auth-sync}"
BIN="$CACHE/vault-$VAULT_VERSION/vault"

if [ -n "${VAULT_BIN:-}" ] && [ -x "$VAULT_BIN" ]; then echo "$VAULT_BIN"; exit 0; fi
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
if command -v vault >/dev/null 2>&1 && vault version 2>/dev/null | grep -q "Vault v"; then
  command -v vault; exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.build-$VAULT_VERSION.lock"
flock 9
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi

echo "ensure-vault: building Vault $VAULT_VERSION from module source (one time, ~7 min)" >&2
work=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

src=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/hashicorp/vault@$VAULT_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$src" ] || { echo "ensure-vault: module download failed" >&2; exit 1; }
cp -r "$src" "$work/vault"
chmod -R u+w "$work/vault"
cd "$work/vault"

# Drop the replaces that point into the module's own tree.
sed -i -E '/^replace github\.com\/hashicorp\/vault\/(api|sdk)[^ ]* => \.\//d' go.mod
# Pin the sdk: newer dependencies would otherwise lift it past what this Vault
# release compiles against.
go mod edit -require="github.com/hashicorp/vault/sdk@$SDK_VERSION" -replace="github.com/hashicorp/vault/sdk=github.com/hashicorp/vault/sdk@$SDK_VERSION"

# Adapt three call sites to the published sdk's signatures.
sed -i 's/func (i \*IdentityStore) activateDeduplication(ctx context.Context, req \*logical.Request) error {/func (i *IdentityStore) activateDeduplication(ctx context.Context, req *logical.Request, _ string) error {/' vault/identity_store_util.go
sed -i 's/b.idStoreBackend.ActivationFunc(ctx, nil)/b.idStoreBackend.ActivationFunc(ctx, nil, "")/' vault/logical_system_activation_flags.go
sed -i 's/restoredKeyName, err := b.lm.RestorePolicy(ctx, req.Storage, keyName, backupB64, force)/restoredKeyName, err := keyName, b.lm.RestorePolicy(ctx, req.Storage, keyName, backupB64, force)/' builtin/logical/transit/path_restore.go


mkdir -p "$(dirname "$BIN")"
GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$BIN.tmp" .
mv "$BIN.tmp" "$BIN"
"$BIN" version >&2
echo "$BIN"
