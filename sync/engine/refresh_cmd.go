package engine

import (
	"context"
	"errors"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/refresh"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

// RefreshNow is the `refresh` command: prepare the store, one forced brokered
// refresh, then back the new login up.
func (e *Engine) RefreshNow(ctx context.Context) Outcome {
	// The login as the command found it, before Vault's round trips: if
	// another refresher rotates it from here on (many `refresh` at once, the
	// agent), that was the refresh asked for. Read after the setup, a
	// rotation during it was taken for the login to refresh again (two
	// refreshes where one was asked for, seen under load).
	first, _ := credentials.Read(e.Cfg.CredentialsFile)
	lin, vs, hard := e.openState(ctx)
	if hard != nil {
		return e.finish(nil, *hard)
	}
	saw := credentials.Secret("")
	cur, err := credentials.Read(e.Cfg.CredentialsFile)
	if err != nil {
		return e.finish(nil, fail("%v", err))
	}
	switch {
	case cur.State == credentials.Usable:
		saw = cur.OAuth.RefreshToken()
		if first != nil && first.State == credentials.Usable {
			saw = first.OAuth.RefreshToken()
		}
	case cur.State == credentials.Clobbered && !e.Refresher.Pending():
		// A clobbered file has nothing to present: restore it the way a pass
		// does (the latest backup, if it holds a different login), then
		// refresh what was restored. A kept refresh answer is written by
		// Refresh itself instead.
		if o := e.repairFile(ctx, lin, vs, cur); o != nil {
			return e.finish(nil, *o)
		}
	case cur.State == credentials.Missing || cur.State == credentials.NoLogin:
		return e.finish(nil, Outcome{Status: eventlog.WARN, Code: ExitLoggedOut, Message: "refresh: no login to refresh at " + cur.Path +
			" (a logout, or a new home). To get back in: `claude auth login`, or `claude-auth-sync restore` to restore the last backup"})
	}
	res, err := e.Refresher.Refresh(ctx, lin, true, saw)
	switch {
	case errors.Is(err, refresh.ErrNotWritten) && res.OAuth != nil:
		// The new login lives only in memory and pending-refresh: Vault too.
		o := e.afterGoodCheck(ctx, telemetry.NewRecord(), lin, res.OAuth, vs, "the new login")
		return e.finish(nil, fail("refresh: %v; %s", err, o.Message))
	case errors.Is(err, refresh.ErrLoginDead):
		return e.finish(nil, fail("refresh: %v; %s", err, LoginHint()))
	case refresh.TryLater(err):
		return e.finish(nil, Outcome{Status: eventlog.WARN, Code: ExitTempFail, Message: "refresh could not run now: " + err.Error()})
	case err != nil:
		return e.finish(nil, fail("refresh: %v", err))
	}
	msg := res.Message
	if res.OAuth != nil {
		return e.finish(nil, e.afterGoodCheck(ctx, telemetry.NewRecord(), lin, res.OAuth, vs, msg))
	}
	return e.finish(nil, Outcome{Status: eventlog.OK, Code: ExitOK, Message: msg})
}
