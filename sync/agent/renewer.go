package agent

import (
	"context"
	"errors"
	"time"

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
	renewerConfig

	// Owned by Run.
	failed sayOnce
}

// renewerConfig is what the renewer uses.
type renewerConfig struct {
	base
	Token     tokenChecker // nil with the file store: no token
	TokenFile string
	Backoff   backoffPolicy
	Outage    *outage
	State     stateFunc              // the live state: the token's TTL
	Resolved  func(prefix ...string) // the health: the token works again
	Verdict   func(ok bool)          // the metrics writer: health waits for a token that checks out
}

// tokenChecker looks the Vault token up and renews it (store.Vault).
type tokenChecker interface {
	Prepare(ctx context.Context) (store.TokenInfo, error)
	MayReport() bool
}

// tokenOf is the engine's Vault as a tokenChecker; nil (not a nil pointer in
// an interface) with the file store.
func tokenOf(e *engine.Engine) tokenChecker {
	if e.Vault == nil {
		return nil
	}
	return e.Vault
}

func newRenewer(c renewerConfig) *renewer { return &renewer{renewerConfig: c} }

// Run keeps the token checked until ctx ends: again when tokenFileChanged
// shows a new token file or recheck says a backup was refused. Every news
// about the token goes to tokenOK (the backup writer), the first verdict to
// first (the pass scheduler). Without a token it says so on first and
// returns at once. It never fails: a bad token or setting is reported and
// looked at again.
func (r *renewer) Run(ctx context.Context, tokenFileChanged <-chan watcher.Change, recheck <-chan struct{}, tokenOK, first latest[bool]) error {
	if r.Token == nil {
		first.put(true)
		return nil
	}
	b := r.Backoff.sequence()
	prevOK, told := false, false
	for {
		tokenKey := fileKey(r.TokenFile)
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
			tokenOK.put(ok)
			// The health may go out with a token refused only as exposed
			// (still this user's): how the fleet learns of that FAIL.
			r.Verdict(ok || (r.Token != nil && r.Token.MayReport()))
		}
		if !told {
			first.put(ok)
			told = true
		}
		prevOK = ok
		if !r.wait(ctx, next, tokenKey, tokenFileChanged, recheck) {
			return nil
		}
	}
}

// check looks at the token once: whether backups may use it (known false
// when Vault could not be asked), and when to look again.
func (r *renewer) check(ctx context.Context, b *backoff) (ok, known bool, next time.Duration) {
	info, err := r.Token.Prepare(ctx)
	switch {
	case err == nil:
		r.Outage.up()
		b.reset()
		if r.failed.clear() != "" {
			r.Log.Event(eventlog.OK, "vault token accepted again")
			r.Resolved("vault token: ", "vault: ")
		}
		r.State(func(s *telemetry.AgentState) { s.VaultTokenTTL = info.TTL.String() })
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
			r.Log.Event(eventlog.FAIL, "vault: %v; backups wait until the configuration is fixed (then restart the agent); refreshes go on", err)
		}
		return false, true, b.patient()
	case errors.Is(err, store.ErrUnreachable):
		r.Outage.down(err)
		return false, false, b.next()
	case ctx.Err() != nil:
		return false, false, b.next() // stopping: the lookup was cut short, not refused
	default:
		// Token file, foreign token or 403: stop writing with it.
		if r.failed.first(err.Error()) {
			r.Log.Event(eventlog.FAIL, "vault token: %v; backups wait until it is fixed", err)
		}
		return false, true, b.patient()
	}
}

// wait sleeps for d, or until a refused backup or a new token file; false
// when ctx ended.
func (r *renewer) wait(ctx context.Context, d time.Duration, tokenKey string, changes <-chan watcher.Change, recheck <-chan struct{}) bool {
	t := r.Clock.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C():
			return true
		case <-recheck:
			return true
		case <-changes:
			if fileKey(r.TokenFile) != tokenKey {
				return true
			}
		}
	}
}
