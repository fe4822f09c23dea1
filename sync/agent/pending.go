package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
)

// pendingBackup is the newest login not yet in the store.
type pendingBackup struct {
	oauth  *credentials.OAuth
	seenAt time.Time // for the lag
}

// pendingFile is pending-backup.json: the pending login survives a restart
// or a crash before its backup.
type pendingFile struct {
	OAuth  json.RawMessage `json:"claudeAiOauth"`
	SeenAt time.Time       `json:"seen_at"`
}

func (bw *backupWriter) pendingPath() string {
	return filepath.Join(bw.e.Cfg.StateDir, "pending-backup.json")
}

// setPending makes o the login to back up and persists it (0600).
func (bw *backupWriter) setPending(o *credentials.OAuth) {
	now := bw.clk.Now()
	bw.pending = &pendingBackup{oauth: o, seenAt: now}
	data, _ := json.Marshal(pendingFile{OAuth: o.Compact(), SeenAt: now})
	if _, err := atomicfile.Write(bw.pendingPath(), data, 0o600); err != nil {
		bw.e.Diag.Warn("cannot persist the pending backup", "err", err)
	}
	bw.live.update(func(s *engine.AgentState) { s.Pending, s.PendingSince = true, &now })
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
	bw.pending = &pendingBackup{oauth: o, seenAt: bw.clk.Now()}
	bw.e.Diag.Info("a backup was pending at the last stop; it is written first")
}
