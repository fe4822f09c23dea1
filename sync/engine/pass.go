package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

// PassOptions change how a pass meets a clobbered file.
type PassOptions struct {
	// AwaitRestore, in the agent, leaves a clobbered file to the agent's
	// backup worker and waits for it: the worker also knows a newer login
	// not yet in the backup, which a pass's read of the backup does not (two
	// restorers raced, and the pass could put back an older, spent login).
	// It returns the file once usable, nil if it did not become usable.
	AwaitRestore func(ctx context.Context) *credentials.Local
}

// Pass is one `sync`: lock, prepare Vault, setup-token mode, local state, check,
// then backup or the failure rules.
func (e *Engine) Pass(ctx context.Context) Outcome { return e.PassWith(ctx, PassOptions{}) }

// PassWith is Pass with options (the agent's).
func (e *Engine) PassWith(ctx context.Context, opt PassOptions) Outcome {
	lk, err := lock.Try(e.Cfg.StateDir, lock.Sync)
	if errors.Is(err, lock.ErrHeld) {
		return e.finish(nil, Outcome{Status: SKIP, Code: ExitOK, Message: "another sync pass is running: " + err.Error()})
	}
	if err != nil {
		return e.finish(nil, fail("sync lock: %v", err))
	}
	defer lk.Unlock()

	rec := newRecord()
	lin, err := LoadLineage(e.lineagePath())
	if err != nil {
		return e.finish(rec, fail("lineage: %v", err))
	}
	e.Diag.Debug("store", "store", e.Store.Describe())

	vs, hard := e.prepare(ctx)
	if hard != nil {
		return e.finish(rec, *hard)
	}
	rec.storeDown = vs.down != nil

	if vs.doc != nil {
		if p := vs.doc.SetupTokenProblem(); p != "" {
			e.Log.Event(WARN, "setup-token mode ignored: %s at %s; staying with the rotating login. Store the token as a string (or remove the field)", p, e.Store.Describe())
		}
	}
	// Setup-token mode: Vault says so, or Vault is down and the env file says so.
	if vs.doc != nil && vs.doc.SetupToken() != "" {
		return e.finish(rec, e.setupTokenPass(ctx, rec, lin, vs.doc, vs.doc.SetupToken()))
	}
	if vs.doc == nil {
		if tok := e.SetupToken(); tok != "" {
			o := e.setupTokenPass(ctx, rec, lin, nil, tok)
			if o.Code == ExitOK {
				o = Outcome{Status: WARN, Code: ExitTempFail, Message: o.Message + "; vault unreachable, setup-token mode not re-confirmed: " + vs.down.Error()}
			}
			return e.finish(rec, o)
		}
	} else if tok := e.SetupToken(); tok != "" {
		if o := e.leaveSetupTokenMode(ctx, lin, vs.doc, tok); o != nil {
			e.Log.Event(o.Status, "%s", o.Message)
		}
	}

	local, err := credentials.Read(e.Cfg.CredentialsFile)
	if err != nil {
		return e.finish(rec, fail("%v", err))
	}
	e.TightenLoose(local)
	switch local.State {
	case credentials.Missing, credentials.NoLogin:
		what := "no credentials file at " + local.Path
		if local.State == credentials.NoLogin {
			what = local.Path + " holds no claudeAiOauth login"
		}
		return e.finish(rec, Outcome{Status: WARN, Code: ExitLoggedOut, Message: what +
			" (a logout, or a new home); not restoring automatically. To get back in: `claude auth login`, or `claude-auth-sync restore` to restore the last backup"})
	case credentials.Clobbered:
		if opt.AwaitRestore != nil {
			cur := opt.AwaitRestore(ctx)
			if cur == nil {
				return e.finish(rec, Outcome{Status: WARN, Code: ExitTempFail,
					Message: fmt.Sprintf("credentials file is unusable (%v); the agent's restore has not fixed it yet (see its lines), the next pass looks again", local.Problem)})
			}
			local = cur
			break
		}
		o := e.restoreClobbered(ctx, lin, local, vs)
		if o != nil {
			return e.finish(rec, *o)
		}
		if local, err = credentials.Read(e.Cfg.CredentialsFile); err != nil {
			return e.finish(rec, fail("%v", err))
		}
	}
	if local.State != credentials.Usable {
		return e.finish(rec, fail("credentials file is still unusable: %v", local.Problem))
	}
	if err := lin.Observe(local.OAuth.RefreshToken()); err != nil {
		e.Diag.Warn("cannot record lineage", "err", err)
	}
	if d := local.OAuth.RefreshTokenExpiresAt(); !d.IsZero() && d.Sub(e.now()) < loginDeadlineWarning {
		e.Log.Event(WARN, "the login itself ends on %s (in %s): run `claude auth login` before then, then `claude-auth-sync sync`",
			d.Format(time.RFC3339), d.Sub(e.now()).Round(time.Hour))
	}

	res := e.runCheck(ctx, rec)
	if res.Kind == check.Auth || res.Kind == check.Dead {
		// A refresh by a running Claude between our read and the check revokes
		// the token the check used: that is not a dead login. If the file holds
		// a different usable login now, check that one instead, once.
		if cur, err := credentials.Read(e.Cfg.CredentialsFile); err == nil && cur.State == credentials.Usable &&
			cur.OAuth.RefreshToken() != local.OAuth.RefreshToken() {
			e.Diag.Info("the login changed during the check; checking the new one")
			local = cur
			_ = lin.Observe(local.OAuth.RefreshToken())
			res = e.runCheck(ctx, rec)
		}
	}
	switch res.Kind {
	case check.OK:
		return e.finish(rec, e.afterGoodCheck(ctx, rec, lin, local.OAuth, vs, "inference check passed"))
	case check.Transient, check.Unexpected:
		return e.finish(rec, Outcome{Status: WARN, Code: ExitTempFail, Message: res.Reason + "; not restoring, the next pass retries"})
	}

	// Auth failure. The first remedy is a forced refresh by the single
	// refresher; a restore comes only after the refresh gets invalid_grant.
	rr, rerr := e.Refresh(ctx, lin, true, local.OAuth.RefreshToken())
	switch {
	case rerr == nil:
		if rr.OAuth != nil && rr.OAuth.RefreshToken() != local.OAuth.RefreshToken() {
			first := res.Reason
			res = e.runCheck(ctx, rec)
			if res.Kind == check.OK {
				what := "inference check passed after a forced refresh (" + first + ")"
				if !rr.Refreshed {
					what = "inference check passed with the login someone else refreshed (" + first + ")"
				}
				return e.finish(rec, e.afterGoodCheck(ctx, rec, lin, rr.OAuth, vs, what))
			}
			if res.Kind == check.Transient || res.Kind == check.Unexpected {
				return e.finish(rec, Outcome{Status: WARN, Code: ExitTempFail, Message: "refreshed the login, then: " + res.Reason + "; the next pass retries"})
			}
			if cur, err := credentials.Read(e.Cfg.CredentialsFile); err == nil && cur.State == credentials.Usable {
				if cur.OAuth.RefreshToken() != rr.OAuth.RefreshToken() {
					// Rotated again while we checked (each refresh revokes
					// the older access tokens): the check says nothing about
					// the login now in the file, and the refresh worked.
					return e.finish(rec, Outcome{Status: WARN, Code: ExitTempFail, Message: "the login kept rotating during the check (" + res.Reason + "); not restoring, the next pass retries"})
				}
				local = cur
			}
		}
	case errors.Is(rerr, ErrNotWritten) && rr.OAuth != nil:
		// A new login the file cannot take (full file system): into Vault.
		o := e.afterGoodCheck(ctx, rec, lin, rr.OAuth, vs, "the new login")
		return e.finish(rec, fail("%s; a forced refresh got a new login, but %v; %s", res.Reason, rerr, o.Message))
	case errors.Is(rerr, ErrLoginDead):
		// Go on: a newer login in the backup is the only way back.
	case tryLater(rerr):
		return e.finish(rec, Outcome{Status: WARN, Code: ExitTempFail, Message: res.Reason + "; a forced refresh could not run (" + rerr.Error() + "); not restoring, the next pass retries"})
	default:
		e.Diag.Warn("forced refresh failed", "err", rerr)
	}
	if vs.doc == nil {
		return e.finish(rec, fail("%s; cannot look for a backup: %v; %s", res.Reason, vs.down, LoginHint()))
	}
	vo, why := e.RestoreCandidate(lin, vs.doc, local)
	if vo == nil {
		return e.finish(rec, fail("%s; %s; %s", res.Reason, why, LoginHint()))
	}
	err = e.WriteLogin(ctx, lin, vo, sameRefresh(local.OAuth.RefreshToken()))
	if errors.Is(err, ErrChanged) {
		// Someone (a refresher that was mid-request, Claude) wrote a new
		// login while we decided to restore: that login is the one to check.
		if cur, rerr := credentials.Read(e.Cfg.CredentialsFile); rerr == nil && cur.State == credentials.Usable &&
			cur.OAuth.RefreshToken() != local.OAuth.RefreshToken() {
			_ = lin.Observe(cur.OAuth.RefreshToken())
			first := res.Reason
			if res = e.runCheck(ctx, rec); res.Kind == check.OK {
				return e.finish(rec, e.afterGoodCheck(ctx, rec, lin, cur.OAuth, vs, "inference check passed with the login written meanwhile ("+first+")"))
			}
			return e.finish(rec, Outcome{Status: WARN, Code: ExitTempFail, Message: "the login kept changing during the check (" + first + ", then " + res.Reason + "); not restoring, the next pass retries"})
		}
	}
	if err != nil {
		return e.finish(rec, fail("%s; restore from %s failed: %v", res.Reason, e.Store.Describe(), err))
	}
	e.Log.Event(RECOVERED, "%s; restored the login from the backup (v%d)", res.Reason, vs.doc.Version)
	res = e.runCheck(ctx, rec)
	if res.Kind != check.OK {
		return e.finish(rec, fail("restored login from the backup, but the check still fails: %s; %s", res.Reason, LoginHint()))
	}
	return e.finish(rec, e.afterGoodCheck(ctx, rec, lin, vo, vs, "inference check passed after restore"))
}

// TightenLoose sets a credentials file other users could read to 0600, with a
// WARN that names it (and says what to do).
func (e *Engine) TightenLoose(l *credentials.Local) {
	old, err := credentials.TightenMode(l)
	msg := ""
	switch {
	case err != nil:
		msg = fmt.Sprintf("credentials file %s is open to other users (mode %04o) and could not be set to 0600: %v", l.Target, l.Mode.Perm(), err)
	case old != 0:
		msg = fmt.Sprintf("credentials file %s was open to other users (mode %04o); set it to 0600. Whoever read it meanwhile holds the login: if that may have happened, log in again (`claude auth login`)", l.Target, old)
	}
	if msg != "" {
		e.Log.Event(WARN, "%s", msg)
	}
}

// loginDeadlineWarning: how long before refreshTokenExpiresAt passes warn.
const loginDeadlineWarning = 7 * 24 * time.Hour
