package engine

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
)

// withFileLocks runs fn holding every lock a write of the credentials file
// takes, in the one order: our refresh flock, Claude's .oauth_refresh.lock and
// <realpath>.lock, then .storage-write.lock. If Claude's lock directories cannot
// be created (read-only or foreign-owned directory), fn still runs under our
// flock: a restore must not wait on locks that cannot exist.
func (e *Engine) withFileLocks(ctx context.Context, fn func() error) error {
	lctx, cancel := context.WithTimeout(ctx, e.lockWait())
	defer cancel()
	lk, err := lock.Wait(lctx, e.Cfg.StateDir, lock.Refresh)
	if err != nil {
		return err
	}
	defer lk.Unlock()
	claude, err := lock.AcquireClaudeRefresh(lctx, e.Cfg.ClaudeConfigDir, e.claudeLockRecord())
	if errors.Is(err, lock.ErrClaudeLocksUnavailable) {
		e.Diag.Warn("writing without Claude's lock directories", "err", err)
		return fn()
	}
	if err != nil {
		return err
	}
	defer claude.Release()
	return claude.WithStorageWrite(lctx, fn)
}

// claudeLockRecord names the Claude lock directories the holder of our refresh
// flock made, so the next holder can take over those a killed one left behind.
func (e *Engine) claudeLockRecord() *lock.HolderRecord {
	return lock.NewHolderRecord(filepath.Join(e.Cfg.StateDir, "claude-locks-held"))
}

func (e *Engine) lockWait() time.Duration {
	if e.LockWait > 0 {
		return e.LockWait
	}
	return 30 * time.Second
}
