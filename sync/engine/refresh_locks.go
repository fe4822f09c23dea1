package engine

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
)

// underLocks runs fn holding our refresh flock, then Claude's
// .oauth_refresh.lock and <realpath>.lock: the one order every refresh and
// every write of the credentials file takes them in. lctx bounds the wait
// (LockWait); fn gets it for the waits it adds (.storage-write.lock). When
// Claude's lock directories cannot be created (read-only or foreign-owned
// directory) and claudeOptional is set, fn runs under our flock alone with a
// nil claude: a restore must not wait on locks that cannot exist. A refresh
// does not run without them.
func (r *refresher) underLocks(ctx context.Context, claudeOptional bool, fn func(lctx context.Context, claude *lock.ClaudeRefresh) error) error {
	lctx, cancel := context.WithTimeout(ctx, r.waitForLocks())
	defer cancel()
	ours, err := lock.Wait(lctx, r.cfg.StateDir, lock.Refresh)
	if err != nil {
		return err
	}
	defer ours.Unlock()
	claude, err := lock.AcquireClaudeRefresh(lctx, r.cfg.ClaudeConfigDir, r.claudeLockRecord())
	if claudeOptional && errors.Is(err, lock.ErrClaudeLocksUnavailable) {
		r.diag.Warn("writing without Claude's lock directories", "err", err)
		return fn(lctx, nil)
	}
	if err != nil {
		return err
	}
	defer claude.Release()
	return fn(lctx, claude)
}

// withFileLocks runs fn holding every lock a write of the credentials file
// takes: underLocks, then .storage-write.lock (when Claude's locks exist).
func (r *refresher) withFileLocks(ctx context.Context, fn func() error) error {
	return r.underLocks(ctx, true, func(lctx context.Context, claude *lock.ClaudeRefresh) error {
		if claude == nil {
			return fn()
		}
		return claude.WithStorageWrite(lctx, fn)
	})
}

// claudeLockRecord names the Claude lock directories the holder of our refresh
// flock made, so the next holder can take over those a killed one left behind.
func (r *refresher) claudeLockRecord() *lock.HolderRecord {
	return lock.NewHolderRecord(filepath.Join(r.cfg.StateDir, "claude-locks-held"))
}

func (r *refresher) waitForLocks() time.Duration {
	if r.lockWait > 0 {
		return r.lockWait
	}
	return 30 * time.Second
}
