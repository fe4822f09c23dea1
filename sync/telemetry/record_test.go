package telemetry

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
)

func TestRecordCorruptStartsFresh(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(p, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := loadRecord(p)
	if r.LastPass != nil || r.SetupTokenFirstSeen == nil {
		t.Errorf("loadRecord(corrupt) = %+v; want a fresh record", r)
	}
	r.LastPass = &PassRecord{At: testNow, Status: eventlog.OK, Message: "m"}
	if err := mergeRecord(p, r); err != nil {
		t.Fatal(err)
	}
	if got := loadRecord(p); got.LastPass == nil || got.LastPass.Status != eventlog.OK || !got.LastPass.At.Equal(testNow) {
		t.Errorf("loadRecord after save = %+v; want the saved pass", got.LastPass)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("state.json mode = %v; want 0600", fi.Mode().Perm())
	}
}
