package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

// Restore puts the latest backup into the credentials file on request: the way
// back after a logout or onto a new home. It refuses to replace a working login
// that is not known to be older than the backup unless force is set (and even
// then keeps the replaced file in the state dir).
func (e *Engine) Restore(ctx context.Context, force bool) Outcome {
	lctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	lk, err := lock.Wait(lctx, e.Cfg.StateDir, lock.Sync)
	if err != nil {
		return e.finish(nil, fail("restore: %v", err))
	}
	defer lk.Unlock()
	rec := newRecord()
	lin, err := LoadLineage(e.lineagePath())
	if err != nil {
		return e.finish(rec, fail("lineage: %v", err))
	}
	vs, hard := e.prepare(ctx)
	if hard != nil {
		return e.finish(rec, *hard)
	}
	if vs.doc == nil {
		return e.finish(rec, Outcome{Status: WARN, Code: ExitTempFail, Message: "restore: the backup cannot be read, nothing changed: " + vs.down.Error()})
	}
	vo, err := vs.doc.OAuth()
	switch {
	case err != nil:
		return e.finish(rec, fail("restore: the backup is unreadable: %v", err))
	case vo == nil:
		// Nothing to restore is not a dead login (a new user, a host whose
		// agent never backed up): WARN, which does not page, with exit 3.
		return e.finish(rec, Outcome{Status: WARN, Code: ExitLoggedOut, Message: fmt.Sprintf(
			"restore: there is no backup in %s yet, nothing to restore; log in with `claude auth login` (the agent backs the new login up at once)", e.Store.Describe())})
	case vo.Usable() != nil:
		return e.finish(rec, fail("restore: the backup is not usable (%v); %s", vo.Usable(), LoginHint()))
	case IsBackfill(vo, vs.doc.SetupToken(), e.now()):
		return e.finish(rec, fail("restore: the backup is a setup-token backfill, not a login"))
	}
	local, err := credentials.Read(e.Cfg.CredentialsFile)
	if err != nil {
		return e.finish(rec, fail("restore: %v", err))
	}
	if local.OAuth != nil && local.OAuth.Equal(vo) {
		return e.finish(rec, Outcome{Status: OK, Code: ExitOK, Message: fmt.Sprintf("restore: the file already holds the backup (v%d)", vs.doc.Version)})
	}
	if local.State == credentials.Usable && !force && !Newer(lin, vo, local.OAuth) {
		why := "the file holds a working login that is not known to be older than the backup"
		if lin.Order(vo.RefreshToken(), local.OAuth.RefreshToken()) < 0 {
			why = "the file holds a newer login than the backup (the backup's refresh token was rotated out)"
		}
		return e.finish(rec, fail("restore: %s; not replacing it. Use `claude-auth-sync restore --force` to replace it anyway (the old file is kept in %s)", why, e.Cfg.StateDir))
	}
	if err := e.WriteLogin(ctx, lin, vo, nil); err != nil {
		return e.finish(rec, fail("restore: %v", err))
	}
	msg := fmt.Sprintf("restored the login from %s (v%d", e.Store.Describe(), vs.doc.Version)
	if t := vs.doc.BackedUpAt(); !t.IsZero() {
		msg += ", backed up " + t.Format(time.RFC3339)
	}
	msg += ")"
	if vs.doc.SetupToken() != "" {
		msg += "; note: setup-token mode is on, so Claude uses the setup token"
	}
	return e.finish(rec, Outcome{Status: RECOVERED, Code: ExitOK, Message: msg})
}
