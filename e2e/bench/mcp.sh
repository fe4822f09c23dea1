#!/usr/bin/env bash
# mcp.sh: the MCP refresher's numbers.
#   1. The table: real Claude CLIs (2.1.332, 2.1.124) using an MCP server's tool
#      from SESSIONS concurrent sessions for DURATION, with the agent and without
#      (MCP-REPORT lines: refreshes, by whom, reuse detections, revocations,
#      failed tool calls).
#   2. The lock hold time of a refresh, p50/p99 (BenchmarkRefreshLockHold).
#   3. The agent's idle cost with 0, 5 and 20 MCP server logins.
# Usage: e2e/bench/mcp.sh [sessions ...]   (default: 8 24)
# Env: DURATION (default 90s), IDLE (default 60s).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export VAULT_BIN=$(bash e2e/vault/ensure-vault.sh)
sessions=("$@")
[ $# -eq 0 ] && sessions=(8 24)
for n in "${sessions[@]}"; do
	CLAUDE_AUTH_MCP_SESSIONS=$n CLAUDE_AUTH_MCP_DURATION=${DURATION:-90s} \
		go test -count=1 -timeout 60m -v -run 'TestMCPAgentIsTheRefresherForRealSessions' ./e2e/ | grep -E 'MCP-REPORT|^(--- |ok|FAIL)'
done
go test -run '^$' -bench RefreshLockHold -benchtime 500x ./sync/mcp/ | grep -E 'Benchmark'
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
go build -o "$work/claude-auth-sync" ./cmd/claude-auth-sync
go build -o "$work/claude" ./e2e/cmd/claude-standin
for n in 0 5 20; do
	printf 'mcp servers %2d: ' "$n"
	go run ./e2e/cmd/agent-bench --agent "$work/claude-auth-sync" --claude "$work/claude" --idle-only --idle "${IDLE:-60s}" --mcp-servers "$n" | grep '^idle'
done
