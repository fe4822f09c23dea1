#!/usr/bin/env bash
# agent.sh: the agent's numbers against a real Vault: backup lag p50/p99/max for
# a rename over the file and for an in-place rewrite, the Vault floor, the
# 1,000-write burst, and the idle cost.
# Usage: e2e/bench/agent.sh [rotations] [idle] [agent-bench flags, e.g. --gap 20ms]
# AGENT_SRC=/path/to/another/checkout measures the agent built from that tree
# (e.g. a `git worktree` of an older commit) with this tree's bench.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export VAULT_BIN=$(bash "$root/e2e/vault/ensure-vault.sh")
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cd "$root"
(cd "${AGENT_SRC:-$root}" && go build -o "$work/claude-auth-sync" ./cmd/claude-auth-sync)
go build -o "$work/claude" ./e2e/cmd/claude-standin
go run ./e2e/cmd/agent-bench --agent "$work/claude-auth-sync" --claude "$work/claude" --rotations "${1:-1000}" --idle "${2:-60s}" "${@:3}"
