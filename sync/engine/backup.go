package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// backfillHorizon: an expiresAt further ahead than this is a setup-token
// backfill, not a rotating login (those live ~8 h).
const backfillHorizon = 30 * 24 * time.Hour

// BackupResult says what a backup did.
type BackupResult struct {
	Written bool
	Version int
	Message string
}

// BackupRecord is what state.json keeps of a backup written now: when, the
// version, the store and the login's short fingerprint (never the token).
func (e *Engine) BackupRecord(res BackupResult, o *credentials.OAuth) *BackupRecord {
	return &BackupRecord{At: e.now(), Version: res.Version, Store: e.Store.Describe(), Fingerprint: o.RefreshToken().Short()}
}

// IsBackfill says whether a login is a setup-token backfill, which is never
// backed up: its access token is the setup token, or it expires implausibly late.
func IsBackfill(o *credentials.OAuth, setupToken credentials.Secret, now time.Time) bool {
	if setupToken != "" && o.AccessToken() == setupToken {
		return true
	}
	return o.ExpiresAt().After(now.Add(backfillHorizon))
}

// Backup writes the login to the store if it should be: usable, not a backfill,
// different from the stored one, and not older than it by lineage.
func (e *Engine) Backup(ctx context.Context, lin *Lineage, o *credentials.OAuth) (BackupResult, error) {
	if err := o.Usable(); err != nil {
		return BackupResult{}, fmt.Errorf("not backing up an unusable login: %w", err)
	}
	now := e.now()
	if IsBackfill(o, "", now) {
		return BackupResult{Message: "not backing up a setup-token backfill"}, nil
	}
	// Ordered at once; on disk after the Vault write, off the backup's lag.
	lin.Note(o.RefreshToken())
	defer func() {
		if err := lin.Persist(); err != nil {
			e.Diag.Warn("cannot record lineage", "err", err)
		}
	}()
	var skip string
	doc, err := e.Store.Update(ctx, func(cur *store.Doc) (map[string]any, error) {
		skip = ""
		if IsBackfill(o, cur.SetupToken(), now) {
			skip = "not backing up a setup-token backfill"
			return nil, store.ErrSkip
		}
		vo, err := cur.OAuth()
		if err != nil {
			e.Diag.Warn("backup copy is unreadable; replacing it", "err", err)
			vo = nil
		}
		if vo != nil && vo.Equal(o) {
			skip = fmt.Sprintf("backup up to date (v%d)", cur.Version)
			return nil, store.ErrSkip
		}
		if vo != nil && vo.Usable() == nil && Newer(lin, vo, o) {
			skip = fmt.Sprintf("backup (v%d) holds a newer login than this file; not overwriting it", cur.Version)
			return nil, store.ErrSkip
		}
		return store.BackupFields(o, now), nil
	})
	if errors.Is(err, store.ErrSkip) {
		v := 0
		if doc != nil {
			v = doc.Version
		}
		return BackupResult{Version: v, Message: skip}, nil
	}
	if err != nil {
		return BackupResult{}, fmt.Errorf("backup to %s: %w", e.Store.Describe(), err)
	}
	return BackupResult{Written: true, Version: doc.Version, Message: fmt.Sprintf("backed up to %s (v%d)", e.Store.Describe(), doc.Version)}, nil
}

// Newer says whether stored is known to be newer than local. Lineage decides
// when this host saw both; a refresh token this host never saw is newer only if it
// also expires later (the tie-breaker, since clocks step).
func Newer(lin *Lineage, stored, local *credentials.OAuth) bool {
	if stored.RefreshToken() == local.RefreshToken() {
		return stored.ExpiresAtMs() > local.ExpiresAtMs()
	}
	switch lin.Order(stored.RefreshToken(), local.RefreshToken()) {
	case 1:
		return true
	case -1:
		return false
	}
	if lin.Known(stored.RefreshToken()) {
		return false
	}
	return stored.ExpiresAtMs() > local.ExpiresAtMs()
}

// RestoreCandidate returns the stored login when restoring it could help: usable,
// a different refresh token from the local one, and not known to be older.
func (e *Engine) RestoreCandidate(lin *Lineage, doc *store.Doc, local *credentials.Local) (*credentials.OAuth, string) {
	vo, err := doc.OAuth()
	if err != nil {
		return nil, "the backup is unreadable: " + err.Error()
	}
	if vo == nil {
		return nil, "there is no backup in " + e.Store.Describe()
	}
	if err := vo.Usable(); err != nil {
		return nil, "the backup is not usable: " + err.Error()
	}
	if IsBackfill(vo, doc.SetupToken(), e.now()) {
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
