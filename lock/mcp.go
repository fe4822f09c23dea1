package lock

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// MCPRefreshPath is the lock directory Claude Code takes around a proactive
// refresh of one MCP server's login: proper-lockfile's "<file>.lock" of
// "<config dir>/mcp-refresh-<key, every character outside [A-Za-z0-9] as _>.lock".
func MCPRefreshPath(realDir, key string) string {
	var b strings.Builder
	for _, r := range key {
		if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return filepath.Join(realDir, "mcp-refresh-"+b.String()+".lock.lock")
}

// MCPRefresh is Claude's per-server MCP refresh lock, held.
type MCPRefresh struct {
	dir         *DirLock
	storagePath string
	rec         *HolderRecord
}

// AcquireMCPRefresh takes the MCP server key's refresh lock in the resolved
// config dir, judging another holder's lock stale only after the longest
// stale time any Claude version uses for it (2.1.332: 60 s; 2.1.124: 10 s).
// rec is as for AcquireClaudeRefresh.
func AcquireMCPRefresh(ctx context.Context, realDir, key string, rec *HolderRecord) (*MCPRefresh, error) {
	if fi, err := os.Stat(realDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%w: config dir %s is not there", ErrClaudeLocksUnavailable, realDir)
	}
	d, err := acquireDir(ctx, MCPRefreshPath(realDir, key), StaleRefreshLock, rec)
	if err != nil {
		return nil, err
	}
	_, _, sp := ClaudePaths(realDir)
	return &MCPRefresh{dir: d, storagePath: sp, rec: rec}, nil
}

// WithStorageWrite runs fn under .storage-write.lock (inside the MCP lock),
// the lock 2.1.332 takes around every write of the credentials file.
func (m *MCPRefresh) WithStorageWrite(ctx context.Context, fn func() error) error {
	s, err := acquireDir(ctx, m.storagePath, StaleStorageWrite, m.rec)
	if err != nil {
		return err
	}
	defer s.Release()
	return fn()
}

// Release drops the lock.
func (m *MCPRefresh) Release() {
	if m == nil {
		return
	}
	m.dir.Release()
}
