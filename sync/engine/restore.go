package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/lineage"
	"github.com/claude-auth-sync/claude-auth-sync/sync/refresh"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
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
	rec := telemetry.NewRecord()
	lin, vs, hard := e.openState(ctx)
	if hard != nil {
		return e.finish(rec, *hard)
	}
	if vs.doc == nil {
		return e.finish(rec, Outcome{Status: eventlog.WARN, Code: ExitTempFail, Message: "restore: the backup cannot be read, nothing changed: " + vs.down.Error()})
	}
	return e.finish(rec, e.restoreOnRequest(ctx, lin, vs.doc, force))
}

// restoreOnRequest is the restore command once the backup is read.
func (e *Engine) restoreOnRequest(ctx context.Context, lin *lineage.Lineage, doc *store.Doc, force bool) Outcome {
	vo, problem, err := storedLogin(doc, e.now())
	switch problem {
	case backupUnreadable:
		return fail("restore: the backup is unreadable: %v", err)
	case backupAbsent:
		// Nothing to restore is not a dead login (a new user, a host whose
		// agent never backed up): WARN, which does not page, with exit 3.
		return Outcome{Status: eventlog.WARN, Code: ExitLoggedOut, Message: fmt.Sprintf(
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
		return Outcome{Status: eventlog.OK, Code: ExitOK, Message: fmt.Sprintf("restore: the file already holds the backup (v%d)", doc.Version)}
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
	return Outcome{Status: eventlog.RECOVERED, Code: ExitOK, Message: msg}
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
func storedLogin(doc *store.Doc, now time.Time) (*credentials.OAuth, backupProblem, error) {
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
	if IsBackfill(vo, doc.SetupToken(), now) {
		return nil, backupBackfill, nil
	}
	return vo, backupRestorable, nil
}

// RestoreCandidate returns the stored login when restoring it could help: usable,
// a different refresh token from the local one, and not known to be older.
func (e *Engine) RestoreCandidate(lin *lineage.Lineage, doc *store.Doc, local *credentials.Local) (*credentials.OAuth, string) {
	vo, problem, err := storedLogin(doc, e.now())
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

// restoreBackup writes the backup's login into the file when it may help
// (RestoreCandidate), unless expect, given the file under the locks, vetoes it.
func (p *pass) restoreBackup(ctx context.Context, expect func(*credentials.Local) error) restoreState {
	if p.vs.doc == nil {
		return restoreNoStore
	}
	vo, why := p.e.RestoreCandidate(p.lin, p.vs.doc, p.local)
	if vo == nil {
		p.why = why
		return restoreNoCandidate
	}
	p.err = p.e.WriteLogin(ctx, p.lin, vo, expect)
	switch {
	case errors.Is(p.err, refresh.ErrChanged):
		return restoreRaced
	case p.err != nil:
		return restoreFailed
	}
	p.login = vo
	return restoreDone
}

// repair restores the backup into a broken file, unless someone makes the
// file usable first. In the agent its backup worker does it (PassOptions).
func (p *pass) repair(ctx context.Context) {
	if p.opt.AwaitRestore != nil {
		p.at.restore = restoreAgentPending
		if p.newer = p.opt.AwaitRestore(ctx); p.newer != nil {
			p.at.restore = restoreByAgent
		}
		return
	}
	p.at.restore = p.restoreBackup(ctx, func(cur *credentials.Local) error {
		if cur.State == credentials.Usable {
			return errors.New("the file became usable meanwhile; leaving it")
		}
		return nil
	})
}

// repairFile is a pass's repair of a broken file, for the refresh command: the
// outcome when it ended there, nil when the file may be usable now.
func (e *Engine) repairFile(ctx context.Context, lin *lineage.Lineage, vs vaultState, local *credentials.Local) *Outcome {
	p := e.newPass(PassOptions{})
	p.lin, p.vs, p.local, p.at.file = lin, vs, local, fileBroken
	return p.follow(ctx, actSettle)
}

// restore is the remedy when the refresh did not help: the backup's login,
// if it differs, over the refused one (compare-and-swap on its refresh token).
// Then the check runs again, on whichever login the file holds.
func (p *pass) restore(ctx context.Context) {
	p.at.restore = p.restoreBackup(ctx, sameRefresh(p.local.OAuth.RefreshToken()))
	switch p.at.restore {
	case restoreRaced:
		cur, err := credentials.Read(p.e.Cfg.CredentialsFile)
		if err != nil || cur.State != credentials.Usable || cur.OAuth.RefreshToken() == p.local.OAuth.RefreshToken() {
			p.at.restore = restoreFailed // with the ErrChanged in p.err
			return
		}
		_ = p.lin.Observe(cur.OAuth.RefreshToken())
		p.login, p.at.file = cur.OAuth, fileChanged
	case restoreDone:
		p.at.file = fileUsable
	default:
		return
	}
	p.first, p.at.check = p.result.Reason, checkNone
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
