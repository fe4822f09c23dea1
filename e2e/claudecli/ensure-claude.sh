#!/usr/bin/env bash
# ensure-claude.sh VERSION: print the path of an executable `claude` for
# @anthropic-ai/claude-code@VERSION, installing it once with npm into the cache
# (the same layout as claudecli.Install, so either one warms it for the other):
#   ${CLAUDE_AUTH_SYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/claude-auth-sync}/claude-code-VERSION/claude
# DIR/claude is a relative symlink to the native binary (newer releases, from
# @anthropic-ai/claude-code-linux-x64), or a script running cli.js with the
# machine's node (2.1.80 and older). A warm call returns at once.
set -euo pipefail

VERSION="${1:?usage: ensure-claude.sh VERSION (e.g. 2.1.332)}"
[[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || { echo "ensure-claude: bad version $VERSION" >&2; exit 2; }
PKG=@anthropic-ai/claude-code
CACHE="${CLAUDE_AUTH_SYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/claude-auth-sync}"
DIR="$CACHE/claude-code-$VERSION"
BIN="$DIR/claude"

if [ -f "$BIN" ] && [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.claude-code-$VERSION.lock"
flock 9
if [ -f "$BIN" ] && [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi

command -v npm >/dev/null || { echo "ensure-claude: npm not found" >&2; exit 1; }
tmp=$(mktemp -d "$CACHE/.claude-code-$VERSION.tmp-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "ensure-claude: installing $PKG@$VERSION" >&2
(cd "$tmp" && npm install --prefix "$tmp" --no-audit --no-fund --no-save --loglevel=error "$PKG@$VERSION" >&2)

case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64|arm64) arch=arm64 ;;
  *) arch="" ;;
esac
is_elf() { [ -f "$1" ] && [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ]; }
target=""
for c in "node_modules/$PKG/bin/claude.exe" "node_modules/$PKG-linux-$arch/claude" "node_modules/$PKG-linux-$arch-musl/claude"; do
  if [ -n "$arch" ] && is_elf "$tmp/$c"; then target="$c"; break; fi
done
if [ -n "$target" ]; then
  chmod 755 "$tmp/$target"
  ln -s "$target" "$tmp/claude"
elif [ -f "$tmp/node_modules/$PKG/cli.js" ]; then
  node=$(command -v node) || { echo "ensure-claude: $VERSION is a cli.js and needs node" >&2; exit 1; }
  node=$(readlink -f "$node")
  cat >"$tmp/claude" <<EOF
#!/bin/sh
# Runs Claude Code's cli.js with the node found at install time.
here=\$(dirname "\$(readlink -f "\$0")")
exec '$node' "\$here/node_modules/$PKG/cli.js" "\$@"
EOF
  chmod 755 "$tmp/claude"
else
  echo "ensure-claude: $PKG@$VERSION has no native binary for $(uname -m) and no cli.js" >&2
  exit 1
fi
chmod 755 "$tmp"
rm -rf "$DIR"
mv "$tmp" "$DIR"
trap - EXIT
"$BIN" --version >&2
echo "$BIN"
