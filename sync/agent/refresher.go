package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
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
	e    *engine.Engine
	clk  clock.Clock
	lin  *lineage.Lineage
	pol  backoffPolicy
	live *liveState
	bw   *backupWriter

	kick signal // the file may have changed

	// Owned by Run.
	backedFP string    // the refresh token the store is known to hold
	retryAt  time.Time // no refresh before this (backoff after a failure)
	reported sayOnce   // the failure last logged
}

func newRefresher(e *engine.Engine, lin *lineage.Lineage, pol backoffPolicy, live *liveState, bw *backupWriter) *refresher {
	return &refresher{e: e, clk: e.Clock, lin: lin, pol: pol, live: live, bw: bw, kick: newSignal()}
}

// Run refreshes until ctx ends.
func (r *refresher) Run(ctx context.Context) error {
	b := r.pol.sequence()
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
		if r.clk.Now().Before(due) {
			if !r.sleep(ctx, due) {
				return nil
			}
			continue // look again: the file may have changed
		}
		// Refresh only a login the store already holds: the refresh spends
		// its refresh token, and until the new one is backed up the store's
		// copy is the only other one. A slow backup (Vault busy) is waited
		// for, until backupWaitLimit.
		if cur, err := readFile(r.e); err == nil && cur.State == credentials.Usable && !r.e.Refresher.Pending() && !r.backedUp(cur.OAuth.RefreshToken()) {
			if lim := backupWaitLimit(r.e, cur.OAuth); r.clk.Now().Before(lim) {
				r.bw.kick.poke()
				if !r.sleep(ctx, lim) {
					return nil
				}
				continue
			}
		}
		// A login that appeared meanwhile has its birth noted by the backup
		// writer before it is backed up: a short-lived one may not be due
		// yet after all (its lead is half its lifetime).
		if due, ok := r.due(); !ok || r.clk.Now().Before(due) {
			continue
		}
		if !r.refresh(ctx, b) {
			return nil
		}
	}
}

// due is when the login in the file should be refreshed (false: none to
// refresh), and publishes it.
func (r *refresher) due() (time.Time, bool) {
	local, err := readFile(r.e)
	if err != nil || local.State != credentials.Usable || engine.IsBackfill(local.OAuth, r.e.SetupToken(), r.clk.Now()) {
		return time.Time{}, false
	}
	due := r.e.Refresher.Due(local.OAuth)
	if r.e.Refresher.Pending() {
		due = r.clk.Now() // an answer waiting to be written: the file's token is spent
	}
	if r.retryAt.After(due) {
		due = r.retryAt
	}
	r.live.update(func(s *telemetry.AgentState) { s.NextRefresh = &due })
	return due, true
}

// sleep waits until at (zero: no deadline), a file change, or news from the
// backup writer; false when ctx ended.
func (r *refresher) sleep(ctx context.Context, at time.Time) bool {
	var fire <-chan time.Time
	if !at.IsZero() {
		t := r.clk.NewTimer(at.Sub(r.clk.Now()))
		defer t.Stop()
		fire = t.C()
	}
	select {
	case <-ctx.Done():
		return false
	case <-r.kick:
	case fp := <-r.bw.backed:
		r.backedFP = fp
	case <-fire:
	}
	return true
}

// refresh makes one refresh and handles its outcome; false when ctx ended.
func (r *refresher) refresh(ctx context.Context, b *backoff) bool {
	res, err := r.e.Refresher.Refresh(ctx, r.lin, false, "")
	switch {
	case ctx.Err() != nil:
		return false
	case err == nil:
		r.retryAt = time.Time{}
		b.reset()
		if res.Refreshed {
			r.refreshed(res)
		}
	case errors.Is(err, refresh.ErrNotWritten):
		r.report(eventlog.WARN, fmt.Sprintf("refreshed the login, but %v; the new login is backed up", err))
		if res.OAuth != nil {
			r.bw.refreshed.put(res.OAuth)
		}
		r.retryAt = r.clk.Now().Add(b.next())
	case errors.Is(err, refresh.ErrLoginDead):
		r.report(eventlog.FAIL, fmt.Sprintf("refresh failed: %v; %s", err, engine.LoginHint()))
		r.retryAt = time.Time{}
		// Nothing to do until the file changes (a new login, a restore).
		select {
		case <-ctx.Done():
			return false
		case <-r.kick:
		}
	case errors.Is(err, lock.ErrClaudeLocksUnavailable):
		r.report(eventlog.WARN, fmt.Sprintf("not refreshing: %v; backups go on", err))
		r.retryAt = r.clk.Now().Add(b.patient())
	default:
		r.e.Diag.Warn("refresh failed; retrying with backoff", "err", err)
		r.retryAt = r.clk.Now().Add(b.next())
	}
	return true
}

func (r *refresher) refreshed(res refresh.ClaudeResult) {
	switch {
	case r.reported.clear() != "":
		r.e.Log.Event(eventlog.OK, "refreshing works again: %s", res.Message)
		r.bw.metrics.resolved("refresh failed", "not refreshing", "refreshed the login, but")
	case res.OAuth != nil:
		r.e.Log.Event(eventlog.OK, "refreshed the login ahead of Claude (valid until %s)", res.OAuth.ExpiresAt().Local().Format(time.RFC3339))
	default:
		r.e.Log.Event(eventlog.OK, "refreshed the login ahead of Claude")
	}
	at := r.clk.Now()
	r.live.update(func(s *telemetry.AgentState) { s.Refreshes, s.LastRefresh = s.Refreshes+1, &at })
	r.bw.kick.poke() // back it up at once
}

func (r *refresher) report(st eventlog.Status, msg string) {
	if r.reported.first(msg) {
		r.e.Log.Event(st, "%s", msg)
	}
}

// backedUp says whether the store is known to hold the refresh token tok.
func (r *refresher) backedUp(tok credentials.Secret) bool {
	select {
	case fp := <-r.bw.backed:
		r.backedFP = fp
	default:
	}
	return r.backedFP == tok.Fingerprint()
}

// backupWaitLimit is how long the refresher may wait for the backup of o
// before refreshing anyway: until a minute before Claude's own refresh point
// (five minutes before expiry), or half-way to it for short lifetimes. Past it,
// refreshing ahead of Claude (one refresher) matters more than the order.
func backupWaitLimit(e *engine.Engine, o *credentials.OAuth) time.Time {
	claudeAt := o.ExpiresAt().Add(-5 * time.Minute)
	due := e.Refresher.Due(o)
	margin := min(time.Minute, max(claudeAt.Sub(due)/2, 0))
	return claudeAt.Add(-margin)
}
