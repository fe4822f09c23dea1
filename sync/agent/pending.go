package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

// pendingBackup is the newest login not yet in the store.
type pendingBackup struct {
	oauth     *credentials.OAuth
	seenAt    time.Time // for the lag
	persisted bool      // in pending-backup.json
}

// pendingFile is pending-backup.json: the pending login survives a restart
// or a crash before its backup.
type pendingFile struct {
	OAuth  json.RawMessage `json:"claudeAiOauth"`
	SeenAt time.Time       `json:"seen_at"`
}

func (bw *backupWriter) pendingPath() string {
	return filepath.Join(bw.StateDir, "pending-backup.json")
}

// setPending makes o the login to back up. It reaches the disk only if its
// backup has to wait (persistPending): a backup that succeeds at once has
// the credentials file as its other copy all along, and one fsync less
// before the Vault write.
func (bw *backupWriter) setPending(o *credentials.OAuth) {
	now := bw.Clock.Now()
	bw.pending = &pendingBackup{oauth: o, seenAt: now}
	bw.Live.update(func(s *telemetry.AgentState) { s.Pending, s.PendingSince = true, &now })
}

// persistPending writes the pending login to pending-backup.json (0600), so
// a restart or a crash before its backup loses nothing.
func (bw *backupWriter) persistPending() {
	p := bw.pending
	if p == nil || p.persisted {
		return
	}
	data, _ := json.Marshal(pendingFile{OAuth: p.oauth.Compact(), SeenAt: p.seenAt})
	if _, err := atomicfile.Write(bw.pendingPath(), data, 0o600); err != nil {
		bw.Diag.Warn("cannot persist the pending backup", "err", err)
		return
	}
	p.persisted = true
}

// loadPending takes up the backup a stop left pending: it is written first.
func (bw *backupWriter) loadPending() {
	data, err := os.ReadFile(bw.pendingPath())
	if err != nil {
		return
	}
	var pf pendingFile
	if json.Unmarshal(data, &pf) != nil {
		return
	}
	o, err := credentials.ParseOAuth(pf.OAuth)
	if err != nil || o.Usable() != nil {
		return
	}
	bw.pending = &pendingBackup{oauth: o, seenAt: bw.Clock.Now(), persisted: true}
	bw.Diag.Info("a backup was pending at the last stop; it is written first")
}
