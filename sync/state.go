package authsync

import (
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

// Record is what this host remembers between passes (state.json in the state
// dir). It holds fingerprints and times, never a token.
type Record struct {
	LastPass   *PassRecord   `json:"last_pass,omitempty"`
	LastCheck  *CheckRecord  `json:"last_check,omitempty"`
	LastBackup *BackupRecord `json:"last_backup,omitempty"`
	// SetupTokenFirstSeen maps a setup token's fingerprint to when this host first
	// saw it, for the one-year default end.
	SetupTokenFirstSeen map[string]time.Time `json:"setup_token_first_seen,omitempty"`
}

type PassRecord struct {
	At      time.Time `json:"at"`
	Status  Status    `json:"status"`
	Message string    `json:"message"`
}

type CheckRecord struct {
	At     time.Time `json:"at"`
	Result string    `json:"result"`
	Reason string    `json:"reason"`
}

type BackupRecord struct {
	At          time.Time `json:"at"`
	Version     int       `json:"version"`
	Store       string    `json:"store"`
	Fingerprint string    `json:"refresh_token_fingerprint"`
}

func loadRecord(path string) *Record {
	r := &Record{}
	if data, err := os.ReadFile(path); err == nil {
		// A corrupt record is only history: start a fresh one.
		_ = json.Unmarshal(data, r)
	}
	if r.SetupTokenFirstSeen == nil {
		r.SetupTokenFirstSeen = map[string]time.Time{}
	}
	return r
}

func (r *Record) save(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	_, err = credentials.WriteAtomic(path, append(data, '\n'), 0o600)
	return err
}
