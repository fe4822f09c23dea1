package refresh

import (
	"context"
	"errors"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
)

// underLocks runs fn holding our refresh flock, then the family's locks
// (Claude's .oauth_refresh.lock and <realpath>.lock for the Claude login):
// the one order every refresh and every write of the credentials file takes
// them in. lctx bounds the wait (LockWait); fn gets it for the waits it adds
// (.storage-write.lock). When the family's lock directories cannot be created
// (read-only or foreign-owned directory) and optional is set, fn runs under
// our flock alone with a nil held: a restore must not wait on locks that
// cannot exist. A refresh does not run without them.
func (r *Refresher[L]) underLocks(ctx context.Context, optional bool, fn func(lctx context.Context, held Held) error) error {
	lctx, cancel := context.WithTimeout(ctx, r.waitForLocks())
	defer cancel()
	ours, err := lock.Wait(lctx, r.stateDir, r.fam.Flock())
	if err != nil {
		return err
	}
	defer ours.Unlock()
	held, err := r.fam.Lock(lctx)
	if optional && errors.Is(err, lock.ErrClaudeLocksUnavailable) {
		r.diag.Warn("writing without Claude's lock directories", "err", err)
		return fn(lctx, nil)
	}
	if err != nil {
		return err
	}
	defer held.Release()
	return fn(lctx, held)
}

// WithFileLocks runs fn holding every lock a write of the credentials file
// takes: our refresh flock, the family's locks, then .storage-write.lock
// (when the family's locks exist). Writes of the file other than a refresh
// (a restore, a setup-token backfill) go through it.
func (r *Refresher[L]) WithFileLocks(ctx context.Context, fn func() error) error {
	return r.underLocks(ctx, true, func(lctx context.Context, held Held) error {
		if held == nil {
			return fn()
		}
		return held.WithStorageWrite(lctx, fn)
	})
}

func (r *Refresher[L]) waitForLocks() time.Duration {
	if r.lockWait > 0 {
		return r.lockWait
	}
	return 30 * time.Second
}
