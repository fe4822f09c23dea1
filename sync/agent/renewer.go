package agent

import (
	"context"
	"errors"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
	"github.com/claude-auth-sync/claude-auth-sync/watcher"
)

// renewer checks and renews the Vault token: at start, then at half its TTL,
// with backoff while Vault is away, and at once when the token file changes
// (provision renames a re-minted token in) or a backup was refused.
type renewer struct {
	e    *engine.Engine
	clk  clock.Clock
	pol  backoffPolicy
	live *liveState
	out  *outage
	bw   *backupWriter

	kick signal // a backup was refused: look at the token now
	// tokenFile watches the token file (nil with the file store).
	tokenFile *watcher.Watcher
	// first carries the first check's answer (the pass scheduler waits for
	// it to compare the store's side of its last check).
	first latest[bool]

	// Owned by Run.
	failed sayOnce
}

func newRenewer(e *engine.Engine, opt Options, pol backoffPolicy, live *liveState, out *outage, bw *backupWriter) *renewer {
	r := &renewer{e: e, clk: e.Clock, pol: pol, live: live, out: out, bw: bw, kick: newSignal(), first: newLatest[bool]()}
	if e.Vault != nil {
		r.tokenFile = watcher.New(e.Cfg.VaultTokenFile, watcher.Options{Rescan: opt.Rescan})
	}
	return r
}

// Run keeps the token checked until ctx ends.
func (r *renewer) Run(ctx context.Context) error {
	if r.e.Vault == nil {
		r.first.put(true)
		return nil
	}
	b := r.pol.sequence()
	prevOK, told := false, false
	for {
		tokenKey := fileKey(r.e.Cfg.VaultTokenFile)
		ok, known, next := r.check(ctx, b)
		if ctx.Err() != nil {
			return nil
		}
		if !known {
			ok = prevOK // an unreachable Vault says nothing about the token
		}
		if ok != prevOK || !told {
			// Only news wakes the writer: a refused backup kicks this
			// loop, and a token that checks out must not kick back.
			r.bw.tokenOK.put(ok)
			// The health may go out with a token refused only as exposed
			// (still this user's): how the fleet learns of that FAIL.
			r.bw.metrics.token(ok || r.e.Vault.MayReport())
		}
		if !told {
			r.first.put(ok)
			told = true
		}
		prevOK = ok
		if !r.wait(ctx, next, tokenKey) {
			return nil
		}
	}
}

// check looks at the token once: whether backups may use it (known false
// when Vault could not be asked), and when to look again.
func (r *renewer) check(ctx context.Context, b *backoff) (ok, known bool, next time.Duration) {
	info, err := r.e.Vault.Prepare(ctx)
	switch {
	case err == nil:
		r.out.up()
		b.reset()
		if r.failed.clear() != "" {
			r.e.Log.Event(eventlog.OK, "vault token accepted again")
			r.bw.metrics.resolved("vault token: ", "vault: ")
		}
		r.live.update(func(s *telemetry.AgentState) { s.VaultTokenTTL = info.TTL.String() })
		if info.TTL == 0 {
			return true, true, 12 * time.Hour
		}
		return true, true, min(max(info.TTL/2, time.Minute), 12*time.Hour)
	case errors.Is(err, store.ErrMisconfigured):
		// Waiting does not mend the settings, but the agent stays: it is
		// still the single refresher (Claude's processes would race on the
		// rotation without it) and keeps the newest login pending on disk.
		// Said once, as FAIL: an admin must fix the config.
		if r.failed.first(err.Error()) {
			r.e.Log.Event(eventlog.FAIL, "vault: %v; backups wait until the configuration is fixed (then restart the agent); refreshes go on", err)
		}
		return false, true, b.patient()
	case errors.Is(err, store.ErrUnreachable):
		r.out.down(err)
		return false, false, b.next()
	case ctx.Err() != nil:
		return false, false, b.next() // stopping: the lookup was cut short, not refused
	default:
		// Token file, foreign token or 403: stop writing with it.
		if r.failed.first(err.Error()) {
			r.e.Log.Event(eventlog.FAIL, "vault token: %v; backups wait until it is fixed", err)
		}
		return false, true, b.patient()
	}
}

// wait sleeps for d, or until a refused backup or a new token file; false
// when ctx ended.
func (r *renewer) wait(ctx context.Context, d time.Duration, tokenKey string) bool {
	t := r.clk.NewTimer(d)
	defer t.Stop()
	var changes <-chan watcher.Change
	if r.tokenFile != nil {
		changes = r.tokenFile.C()
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C():
			return true
		case <-r.kick:
			return true
		case <-changes:
			if fileKey(r.e.Cfg.VaultTokenFile) != tokenKey {
				return true
			}
		}
	}
}
