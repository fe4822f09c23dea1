package telemetry

import (
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/gofrs/flock"

	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
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

	// StoreDown: this pass found the store unreachable, so the check's
	// subject is recorded without reading the store again (not saved).
	StoreDown bool `json:"-"`
}

type PassRecord struct {
	At      time.Time       `json:"at"`
	Status  eventlog.Status `json:"status"`
	Message string          `json:"message"`
}

type CheckRecord struct {
	At     time.Time `json:"at"`
	Result string    `json:"result"`
	Reason string    `json:"reason"`
	// Subject is what the check vouched for, as it stood when the pass ended,
	// so an agent start can tell whether anything changed since.
	Subject *CheckSubject `json:"subject,omitempty"`
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

// NewRecord is an empty record.
func NewRecord() *Record { return &Record{SetupTokenFirstSeen: map[string]time.Time{}} }

// mergeRecord writes what r learned into the record on disk: a fresh read under
// a flock, r's non-nil fields on top, the earliest first-seen time per setup
// token. A pass and the agent's backup writer so never undo each other's news.
func mergeRecord(path string, r *Record) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	lk := flock.New(path+".lock", flock.SetPermissions(0o600))
	if err := lk.Lock(); err != nil {
		return err
	}
	defer lk.Unlock()
	disk := loadRecord(path)
	if r.LastPass != nil {
		disk.LastPass = r.LastPass
	}
	if r.LastCheck != nil {
		disk.LastCheck = r.LastCheck
	}
	if r.LastBackup != nil {
		disk.LastBackup = r.LastBackup
	}
	for fp, t := range r.SetupTokenFirstSeen {
		if old, ok := disk.SetupTokenFirstSeen[fp]; !ok || t.Before(old) {
			disk.SetupTokenFirstSeen[fp] = t
		}
	}
	data, err := json.MarshalIndent(disk, "", "  ")
	if err != nil {
		return err
	}
	_, err = atomicfile.Write(path, append(data, '\n'), 0o600)
	return err
}

// RecordPath is state.json in the state dir.
func (t *Reporter) RecordPath() string { return filepath.Join(t.Cfg.StateDir, "state.json") }

// LoadRecord reads state.json (an empty record when absent or unreadable).
func (t *Reporter) LoadRecord() *Record { return loadRecord(t.RecordPath()) }

// MergeRecord writes r's set fields into state.json.
func (t *Reporter) MergeRecord(r *Record) error { return mergeRecord(t.RecordPath(), r) }
