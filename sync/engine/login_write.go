package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/lineage"
	"github.com/claude-auth-sync/claude-auth-sync/sync/refresh"
)

// WriteLogin puts a login into the credentials file, merging only claudeAiOauth
// and keeping every other key. It holds the writer lock for the re-read and the
// write only. expect, given the file as re-read under the lock, may veto the
// write (the file changed meanwhile). What the write replaces is kept in the
// state dir (previous-credentials.json, 0600), so nothing is ever lost.
func (e *Engine) WriteLogin(ctx context.Context, lin *lineage.Lineage, o *credentials.OAuth, expect func(*credentials.Local) error) error {
	if o.RefreshToken() == "" {
		// An empty refresh token means "logged out" to Claude: never write one.
		return fmt.Errorf("refusing to write a login without a refresh token")
	}
	return e.Refresher.WithFileLocks(ctx, func() error { return e.writeLoginLocked(lin, o, expect) })
}

func (e *Engine) writeLoginLocked(lin *lineage.Lineage, o *credentials.OAuth, expect func(*credentials.Local) error) error {
	cur, err := credentials.Read(e.Cfg.CredentialsFile)
	if err != nil {
		return err
	}
	if expect != nil {
		if err := expect(cur); err != nil {
			return fmt.Errorf("%w: %v", refresh.ErrChanged, err)
		}
	}
	if cur.OAuth != nil && cur.OAuth.Equal(o) {
		return nil
	}
	if err := keepReplaced(e.Cfg.StateDir, cur); err != nil {
		return fmt.Errorf("keep a copy of the file being replaced: %w", err)
	}
	data, err := cur.Base().WithOAuth(o).Marshal()
	if err != nil {
		return err
	}
	if cur.State == credentials.Missing {
		// A new home (restore after a logout or onto a fresh account): Claude's
		// config dir may not exist yet.
		if err := os.MkdirAll(filepath.Dir(cur.Target), 0o700); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Dir(cur.Target), err)
		}
	}
	target, err := atomicfile.Write(e.Cfg.CredentialsFile, data, credentials.FileMode)
	if target != "" {
		e.Diag.Warn("credentials file is a symlink; wrote its target and kept the link", "link", e.Cfg.CredentialsFile, "target", target)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", e.Cfg.CredentialsFile, err)
	}
	if err := lin.Observe(o.RefreshToken()); err != nil {
		e.Diag.Warn("cannot record lineage", "err", err)
	}
	return nil
}

// keepReplaced keeps the file a write is about to replace in the state dir
// (previous-credentials.json, 0600), so a write never loses a login.
func keepReplaced(stateDir string, cur *credentials.Local) error {
	prev := filepath.Join(stateDir, "previous-credentials.json")
	if cur.Raw != nil {
		_, err := atomicfile.Write(prev, cur.Raw, 0o600)
		return err
	}
	if cur.State == credentials.Clobbered {
		// Too large to have been read (credentials.MaxFileSize): copied by
		// streaming, never held in memory, and never lost.
		return atomicfile.Copy(cur.Target, prev, 0o600)
	}
	return nil
}
