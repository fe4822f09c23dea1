package engine

import (
	"path/filepath"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/lineage"
)

// OpenLineage loads this user's lineage (the order of the logins seen here).
func (e *Engine) OpenLineage() (*lineage.Lineage, error) { return lineage.Load(e.lineagePath()) }

func (e *Engine) lineagePath() string { return filepath.Join(e.Cfg.StateDir, "lineage") }

// knows says whether a login in the user's unclaimed main document may be
// this host's: it is the one in the credentials file, this host's lineage
// has seen it, or this host has no history at all (a first start, taking
// over from the reference tool, whose document is this host's). A host with
// a history that never saw it is looking at another host's login.
func (e *Engine) knows(o *credentials.OAuth) bool {
	if l, err := credentials.Read(e.Cfg.CredentialsFile); err == nil && l.OAuth != nil && l.OAuth.RefreshToken() == o.RefreshToken() {
		return true
	}
	lin, err := lineage.Load(e.lineagePath())
	return err == nil && (lin.Len() == 0 || lin.Known(o.RefreshToken()))
}
