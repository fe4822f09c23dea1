package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/lineage"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
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
func (e *Engine) Backup(ctx context.Context, lin *lineage.Lineage, o *credentials.OAuth) (BackupResult, error) {
	if err := o.Usable(); err != nil {
		return BackupResult{}, fmt.Errorf("not backing up an unusable login: %w", err)
	}
	now := e.now()
	if IsBackfill(o, "", now) {
		return BackupResult{Message: "not backing up a setup-token backfill"}, nil
	}
	// In the lineage file before the Vault write (unsynced: off the
	// backup's lag), durable after.
	if err := lin.Note(o.RefreshToken()); err != nil {
		e.Diag.Warn("cannot record lineage", "err", err)
	}
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
		if vo != nil && !lin.Known(vo.RefreshToken()) {
			// Another process of ours (the agent, a pass) may have written
			// it: each notes a login in the lineage file before its backup.
			if err := lin.Reload(); err != nil {
				e.Diag.Warn("cannot reload lineage", "err", err)
			}
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
func Newer(lin *lineage.Lineage, stored, local *credentials.OAuth) bool {
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

// BackupRecord is the record of a backup that wrote o, for state.json (nil
// when res wrote nothing): when, which version, where, and o's refresh
// token's fingerprint. The pass and the agent's backup worker both note a
// backup with it.
func (e *Engine) BackupRecord(res BackupResult, o *credentials.OAuth) *telemetry.BackupRecord {
	if !res.Written {
		return nil
	}
	return &telemetry.BackupRecord{At: e.now(), Version: res.Version, Store: e.Store.Describe(), Fingerprint: o.RefreshToken().Short()}
}

// afterGoodCheck backs up the working login and words the outcome.
func (e *Engine) afterGoodCheck(ctx context.Context, rec *telemetry.Record, lin *lineage.Lineage, oauth *credentials.OAuth, vs vaultState, what string) Outcome {
	// vs.down is the store found unreachable by the pass: the backup waits.
	res, err := BackupResult{}, vs.down
	if err == nil {
		res, err = e.Backup(ctx, lin, oauth)
	}
	switch {
	case errors.Is(err, store.ErrUnreachable):
		return Outcome{Status: eventlog.WARN, Code: ExitTempFail, Message: what + "; backup pending: " + err.Error()}
	case err != nil && ctx.Err() != nil:
		// This process is stopping (SIGTERM, the unit's stop): the backup
		// was cut short, not refused. Not a FAIL: nothing is wrong with the
		// login or the store, and the next start or pass backs it up.
		return Outcome{Status: eventlog.WARN, Code: ExitTempFail, Message: what + "; backup pending: stopped before the store answered"}
	case err != nil:
		return fail("%s, but the backup failed: %v", what, err)
	}
	if b := e.BackupRecord(res, oauth); b != nil {
		rec.LastBackup = b
	}
	return Outcome{Status: eventlog.OK, Code: ExitOK, Message: what + "; " + res.Message}
}
