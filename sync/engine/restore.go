package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
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
	return e.finish(rec, e.restoreOnRequest(ctx, lin, vs.doc, force))
}

// restoreOnRequest is the restore command once the backup is read.
func (e *Engine) restoreOnRequest(ctx context.Context, lin *Lineage, doc *store.Doc, force bool) Outcome {
	vo, problem, err := e.storedLogin(doc)
	switch problem {
	case backupUnreadable:
		return fail("restore: the backup is unreadable: %v", err)
	case backupAbsent:
		// Nothing to restore is not a dead login (a new user, a host whose
		// agent never backed up): WARN, which does not page, with exit 3.
		return Outcome{Status: WARN, Code: ExitLoggedOut, Message: fmt.Sprintf(
			"restore: there is no backup in %s yet, nothing to restore; log in with `claude auth login` (the agent backs the new login up at once)", e.Store.Describe())}
	case backupUnusable:
		return fail("restore: the backup is not usable (%v); %s", err, LoginHint())
	case backupBackfill:
		return fail("restore: the backup is a setup-token backfill, not a login")
	}
	local, err := credentials.Read(e.Cfg.CredentialsFile)
	if err != nil {
		return fail("restore: %v", err)
	}
	if local.OAuth != nil && local.OAuth.Equal(vo) {
		return Outcome{Status: OK, Code: ExitOK, Message: fmt.Sprintf("restore: the file already holds the backup (v%d)", doc.Version)}
	}
	if local.State == credentials.Usable && !force && !Newer(lin, vo, local.OAuth) {
		why := "the file holds a working login that is not known to be older than the backup"
		if lin.Order(vo.RefreshToken(), local.OAuth.RefreshToken()) < 0 {
			why = "the file holds a newer login than the backup (the backup's refresh token was rotated out)"
		}
		return fail("restore: %s; not replacing it. Use `claude-auth-sync restore --force` to replace it anyway (the old file is kept in %s)", why, e.Cfg.StateDir)
	}
	if err := e.WriteLogin(ctx, lin, vo, nil); err != nil {
		return fail("restore: %v", err)
	}
	msg := fmt.Sprintf("restored the login from %s (v%d", e.Store.Describe(), doc.Version)
	if t := doc.BackedUpAt(); !t.IsZero() {
		msg += ", backed up " + t.Format(time.RFC3339)
	}
	msg += ")"
	if doc.SetupToken() != "" {
		msg += "; note: setup-token mode is on, so Claude uses the setup token"
	}
	return Outcome{Status: RECOVERED, Code: ExitOK, Message: msg}
}

// backupProblem says why the backup's login cannot be restored at all.
type backupProblem int

const (
	backupRestorable backupProblem = iota
	backupUnreadable               // the document's login does not parse
	backupAbsent                   // the store holds no login
	backupUnusable                 // a login without what Claude needs
	backupBackfill                 // a setup-token backfill, not a login
)

// storedLogin is the backup's login if it could be restored at all: readable,
// present, usable and not a setup-token backfill. Otherwise problem says which
// it is not (err says why for unreadable and unusable); each caller words it.
func (e *Engine) storedLogin(doc *store.Doc) (*credentials.OAuth, backupProblem, error) {
	vo, err := doc.OAuth()
	switch {
	case err != nil:
		return nil, backupUnreadable, err
	case vo == nil:
		return nil, backupAbsent, nil
	}
	if err := vo.Usable(); err != nil {
		return nil, backupUnusable, err
	}
	if IsBackfill(vo, doc.SetupToken(), e.now()) {
		return nil, backupBackfill, nil
	}
	return vo, backupRestorable, nil
}

// RestoreCandidate returns the stored login when restoring it could help: usable,
// a different refresh token from the local one, and not known to be older.
func (e *Engine) RestoreCandidate(lin *Lineage, doc *store.Doc, local *credentials.Local) (*credentials.OAuth, string) {
	vo, problem, err := e.storedLogin(doc)
	switch problem {
	case backupUnreadable:
		return nil, "the backup is unreadable: " + err.Error()
	case backupAbsent:
		return nil, "there is no backup in " + e.Store.Describe()
	case backupUnusable:
		return nil, "the backup is not usable: " + err.Error()
	case backupBackfill:
		return nil, "the backup is a setup-token backfill"
	}
	if local != nil && local.OAuth != nil {
		// The same refresh token: after a failed refresh (a usable file) it is
		// dead in the backup too. A broken file (a token of the wrong type,
		// bad UTF-8) with an intact copy of it in the backup is repaired.
		if vo.RefreshToken() == local.OAuth.RefreshToken() && (local.State == credentials.Usable || vo.Equal(local.OAuth)) {
			return nil, "the backup holds the same refresh token as this file"
		}
		if local.OAuth.RefreshToken() != "" && lin.Order(vo.RefreshToken(), local.OAuth.RefreshToken()) < 0 {
			return nil, "the backup holds an older refresh token than this file (already rotated out)"
		}
	}
	return vo, ""
}

// restoreClobbered handles a broken file: restore the backup when it differs
// from the dead login. A nil Outcome means "restored, go on with the pass".
func (e *Engine) restoreClobbered(ctx context.Context, lin *Lineage, local *credentials.Local, vs vaultState) *Outcome {
	if vs.doc == nil {
		o := fail("credentials file is unusable (%v) and the backup cannot be read: %v; %s", local.Problem, vs.down, LoginHint())
		return &o
	}
	vo, why := e.RestoreCandidate(lin, vs.doc, local)
	if vo == nil {
		o := fail("credentials file is unusable (%v); %s; %s", local.Problem, why, LoginHint())
		return &o
	}
	expect := func(cur *credentials.Local) error {
		if cur.State == credentials.Usable {
			return errors.New("the file became usable meanwhile; leaving it")
		}
		return nil
	}
	err := e.WriteLogin(ctx, lin, vo, expect)
	if errors.Is(err, ErrChanged) {
		// Someone (the agent's worker, a refresh, Claude) made the file usable
		// while we waited for the locks: nothing to restore, and no FAIL.
		e.Diag.Info("the credentials file became usable before the restore; leaving it")
		return nil
	}
	if err != nil {
		o := fail("credentials file is unusable (%v); restore failed: %v", local.Problem, err)
		return &o
	}
	e.Log.Event(RECOVERED, "credentials file was unusable (%v); restored the login from the backup (v%d)", local.Problem, vs.doc.Version)
	return nil
}

// sameRefresh is a writeLogin precondition: the file still holds the refresh
// token we decided on (compare-and-swap on the refresh token).
func sameRefresh(tok credentials.Secret) func(*credentials.Local) error {
	return func(cur *credentials.Local) error {
		if cur.OAuth != nil && cur.OAuth.RefreshToken() != tok && cur.State == credentials.Usable {
			return errors.New("the file's login changed meanwhile (someone refreshed or logged in); leaving it")
		}
		return nil
	}
}

// ErrChanged: the file changed under us and the write was abandoned.
var ErrChanged = errors.New("credentials file changed meanwhile")
