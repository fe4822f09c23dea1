package agent

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/lineage"
	"github.com/claude-auth-sync/claude-auth-sync/sync/refresh"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

// refresher is the single refresher: it sleeps until the login in the file
// is due (expiresAt minus the lead), refreshes it under the locks, and has
// the backup writer back the new login up at once. A file change wakes it to
// look again; so does the writer saying the store now holds a login.
type refresher struct {
	refresherConfig

	// In and out, set by Run.
	fileChanged <-chan struct{}
	backed      <-chan string
	backUp      signal

	// Owned by Run.
	backedFP string    // the refresh token the store is known to hold
	retryAt  time.Time // no refresh before this (backoff after a failure)
	reported sayOnce   // the failure last logged
}

// refresherConfig is what the refresher uses.
type refresherConfig struct {
	base
	Engine          refreshEngine
	Lineage         *lineage.Lineage
	Backoff         backoffPolicy
	CredentialsFile string
	State           stateFunc              // the live state: next and last refresh
	Resolved        func(prefix ...string) // the health: refreshing works again
	Flight          *refreshFlight         // told while a refresh of ours is out
}

// refreshFlight says that a refresh of ours is out: between its request and
// the backup writer having its new login. A racer that clobbers the file the
// moment it holds that login leaves it only in the refresh's answer, and the
// backup's refresh token was spent by the refresh: a clobber the writer sees
// meanwhile waits for the answer instead of restoring the backup.
type refreshFlight struct{ n atomic.Int32 }

func (f *refreshFlight) begin() {
	if f != nil {
		f.n.Add(1)
	}
}

func (f *refreshFlight) end() {
	if f != nil {
		f.n.Add(-1)
	}
}

// out says whether a refresh is out.
func (f *refreshFlight) out() bool { return f != nil && f.n.Load() > 0 }

// refreshEngine is what the refresher asks of the engine.
type refreshEngine interface {
	Refresh(ctx context.Context, lin *lineage.Lineage, force bool, saw credentials.Secret) (refresh.ClaudeResult, error)
	RefreshDue(o *credentials.OAuth) time.Time
	RefreshPending() bool
	SetupToken() credentials.Secret
}

func newRefresher(c refresherConfig) *refresher { return &refresher{refresherConfig: c} }

// Run refreshes until ctx ends. It looks again on fileChanged, learns which
// login the store holds from backed, has the writer look at the file
// (backUp) after a refresh or before one whose login is not backed up yet,
// and hands it every login a refresh made (made), whether the file took it
// or not. It never fails: a failed refresh is retried, or waits for a new
// login.
func (r *refresher) Run(ctx context.Context, fileChanged <-chan struct{}, backed <-chan string, backUp signal, made latest[*credentials.OAuth]) error {
	r.fileChanged, r.backed, r.backUp = fileChanged, backed, backUp
	b := r.Backoff.sequence()
	for {
		due, ok := r.due()
		if !ok {
			// Nothing to refresh (no usable login, setup-token mode): until
			// the file changes.
			if !r.sleep(ctx, time.Time{}) {
				return nil
			}
			continue
		}
		if r.Clock.Now().Before(due) {
			if !r.sleep(ctx, due) {
				return nil
			}
			continue // look again: the file may have changed
		}
		// Refresh only a login the store already holds: the refresh spends
		// its refresh token, and until the new one is backed up the store's
		// copy is the only other one. A slow backup (Vault busy) is waited
		// for, until backupWaitLimit.
		if cur, err := credentials.Read(r.CredentialsFile); err == nil && cur.State == credentials.Usable && !r.Engine.RefreshPending() && !r.backedUp(cur.OAuth.RefreshToken()) {
			if lim := backupWaitLimit(cur.OAuth, r.Engine.RefreshDue(cur.OAuth)); r.Clock.Now().Before(lim) {
				r.backUp.poke()
				if !r.sleep(ctx, lim) {
					return nil
				}
				continue
			}
		}
		// A login that appeared meanwhile has its birth noted by the backup
		// writer before it is backed up: a short-lived one may not be due
		// yet after all (its lead is half its lifetime).
		if due, ok := r.due(); !ok || r.Clock.Now().Before(due) {
			continue
		}
		if !r.refresh(ctx, b, made) {
			return nil
		}
	}
}

// due is when the login in the file should be refreshed (false: none to
// refresh), and publishes it.
func (r *refresher) due() (time.Time, bool) {
	local, err := credentials.Read(r.CredentialsFile)
	if err != nil || local.State != credentials.Usable || engine.IsBackfill(local.OAuth, r.Engine.SetupToken(), r.Clock.Now()) {
		return time.Time{}, false
	}
	due := r.Engine.RefreshDue(local.OAuth)
	if r.Engine.RefreshPending() {
		due = r.Clock.Now() // an answer waiting to be written: the file's token is spent
	}
	if r.retryAt.After(due) {
		due = r.retryAt
	}
	r.State(func(s *telemetry.AgentState) { s.NextRefresh = &due })
	return due, true
}

// sleep waits until at (zero: no deadline), a file change, or news from the
// backup writer; false when ctx ended.
func (r *refresher) sleep(ctx context.Context, at time.Time) bool {
	var fire <-chan time.Time
	if !at.IsZero() {
		t := r.Clock.NewTimer(at.Sub(r.Clock.Now()))
		defer t.Stop()
		fire = t.C()
	}
	select {
	case <-ctx.Done():
		return false
	case <-r.fileChanged:
	case fp := <-r.backed:
		r.backedFP = fp
	case <-fire:
	}
	return true
}

// refresh makes one refresh and handles its outcome; false when ctx ended.
func (r *refresher) refresh(ctx context.Context, b *backoff, made latest[*credentials.OAuth]) bool {
	r.Flight.begin()
	res, err := r.Engine.Refresh(ctx, r.Lineage, false, "")
	if err == nil && res.Refreshed && ctx.Err() == nil {
		// Said before the login is handed to the writer, so the backup
		// made from that hand-off is logged after the refresh, not before.
		r.refreshed(res)
	}
	// The new login goes to the writer before the flight ends, whatever the
	// file holds by now.
	if res.OAuth != nil && (err == nil && res.Refreshed || errors.Is(err, refresh.ErrNotWritten)) {
		made.put(res.OAuth)
	}
	r.Flight.end()
	r.backUp.poke() // a clobber the writer put off waits no longer
	switch {
	case ctx.Err() != nil:
		return false
	case err == nil:
		r.retryAt = time.Time{}
		b.reset()
	case errors.Is(err, refresh.ErrNotWritten):
		r.report(eventlog.WARN, fmt.Sprintf("refreshed the login, but %v; the new login is backed up", err))
		r.retryAt = r.Clock.Now().Add(b.next())
	case errors.Is(err, refresh.ErrLoginDead):
		r.report(eventlog.FAIL, fmt.Sprintf("refresh failed: %v; %s", err, engine.LoginHint()))
		r.retryAt = time.Time{}
		// Nothing to do until the file changes (a new login, a restore).
		select {
		case <-ctx.Done():
			return false
		case <-r.fileChanged:
		}
	case errors.Is(err, lock.ErrClaudeLocksUnavailable):
		r.report(eventlog.WARN, fmt.Sprintf("not refreshing: %v; backups go on", err))
		r.retryAt = r.Clock.Now().Add(b.patient())
	default:
		r.Diag.Warn("refresh failed; retrying with backoff", "err", err)
		r.retryAt = r.Clock.Now().Add(b.next())
	}
	return true
}

func (r *refresher) refreshed(res refresh.ClaudeResult) {
	switch {
	case r.reported.clear() != "":
		r.Log.Event(eventlog.OK, "refreshing works again: %s", res.Message)
		r.Resolved("refresh failed", "not refreshing", "refreshed the login, but")
	case res.OAuth != nil:
		r.Log.Event(eventlog.OK, "refreshed the login ahead of Claude (valid until %s)", res.OAuth.ExpiresAt().Local().Format(time.RFC3339))
	default:
		r.Log.Event(eventlog.OK, "refreshed the login ahead of Claude")
	}
	at := r.Clock.Now()
	r.State(func(s *telemetry.AgentState) { s.Refreshes, s.LastRefresh = s.Refreshes+1, &at })
}

func (r *refresher) report(st eventlog.Status, msg string) {
	if r.reported.first(msg) {
		r.Log.Event(st, "%s", msg)
	}
}

// backedUp says whether the store is known to hold the refresh token tok.
func (r *refresher) backedUp(tok credentials.Secret) bool {
	select {
	case fp := <-r.backed:
		r.backedFP = fp
	default:
	}
	return r.backedFP == tok.Fingerprint()
}

// backupWaitLimit is how long the refresher may wait for the backup of o (due
// for a refresh at due) before refreshing anyway: until a minute before
// Claude's own refresh point (five minutes before expiry), or half-way to it
// from due for short lifetimes. Past it,
// refreshing ahead of Claude (one refresher) matters more than the order.
func backupWaitLimit(o *credentials.OAuth, due time.Time) time.Time {
	claudeAt := o.ExpiresAt().Add(-5 * time.Minute)
	margin := min(time.Minute, max(claudeAt.Sub(due)/2, 0))
	return claudeAt.Add(-margin)
}
