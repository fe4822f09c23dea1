package engine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/lineage"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

func TestRestore(t *testing.T) {
	tests := []struct {
		name    string
		creds   string // "" = no file
		backup  string // "" = none
		setup   bool   // setup token in the doc
		lineage []string
		force   bool
		status  eventlog.Status
		code    int
		msgHas  string
		wantRT  string // refresh token in the file after; "" = file unchanged
	}{
		{name: "after a logout", backup: login2, status: eventlog.RECOVERED, code: ExitOK, msgHas: "restored the login", wantRT: refresh2},
		{name: "onto a file without a login", creds: `{"mcpOAuth":{}}`, backup: login2, status: eventlog.RECOVERED, code: ExitOK, wantRT: refresh2},
		{name: "onto a clobbered file", creds: credsFile(oauthJSON(access1, "", exp8h)), backup: login2, status: eventlog.RECOVERED, code: ExitOK, wantRT: refresh2},
		{name: "no backup", status: eventlog.WARN, code: ExitLoggedOut, msgHas: "no backup"},
		{name: "unusable backup", backup: oauthJSON(access2, "", exp9h), status: eventlog.FAIL, code: ExitFail, msgHas: "not usable"},
		{name: "already there", creds: credsFile(login2), backup: login2, status: eventlog.OK, code: ExitOK, msgHas: "already holds"},
		{name: "working login not known older", creds: credsFile(login1), backup: oauthJSON(access2, refresh2, exp7h), lineage: []string{refresh1}, status: eventlog.FAIL, code: ExitFail, msgHas: "--force"},
		{name: "working login newer by lineage", creds: credsFile(login1), backup: login2, lineage: []string{refresh2, refresh1}, status: eventlog.FAIL, code: ExitFail, msgHas: "rotated out"},
		{name: "backup unknown but expires later", creds: credsFile(login1), backup: login2, lineage: []string{refresh1}, status: eventlog.RECOVERED, code: ExitOK, wantRT: refresh2},
		{name: "working login older by lineage", creds: credsFile(login1), backup: login2, lineage: []string{refresh1, refresh2}, status: eventlog.RECOVERED, code: ExitOK, wantRT: refresh2},
		{name: "force", creds: credsFile(login1), backup: login2, lineage: []string{refresh2, refresh1}, force: true, status: eventlog.RECOVERED, code: ExitOK, wantRT: refresh2},
		{name: "setup-token mode noted", backup: login2, setup: true, status: eventlog.RECOVERED, code: ExitOK, msgHas: "setup-token mode is on", wantRT: refresh2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.creds != "" {
				h.writeCreds(tt.creds)
			}
			if tt.backup != "" {
				h.setDoc(map[string]any{store.FieldOAuthJSON: tt.backup})
			}
			if tt.setup {
				h.setDoc(map[string]any{store.FieldSetupToken: setupTok})
			}
			h.observe(tt.lineage...)
			o := h.eng.Restore(context.Background(), tt.force)
			if o.Status != tt.status || o.Code != tt.code || !strings.Contains(o.Message, tt.msgHas) {
				t.Errorf("Restore(force=%v) = %s %d %q; want %s %d containing %q", tt.force, o.Status, o.Code, o.Message, tt.status, tt.code, tt.msgHas)
			}
			if tt.wantRT == "" {
				if tt.creds == "" {
					if _, err := os.Stat(h.cfg.CredentialsFile); !os.IsNotExist(err) {
						t.Errorf("Restore created a file it should not have")
					}
				} else if h.rawCreds() != tt.creds {
					t.Errorf("Restore changed the file it should have left")
				}
				return
			}
			l := h.readCreds()
			if l.State != credentials.Usable || l.OAuth.RefreshToken().Reveal() != tt.wantRT {
				t.Errorf("after Restore the file is %v; want the backup's login", l.State)
			}
			if l.Mode != 0o600 {
				t.Errorf("restored file mode = %v; want 0600", l.Mode)
			}
			if strings.Contains(tt.creds, "mcpOAuth") && !contains(l.File.Keys(), "mcpOAuth") {
				t.Errorf("Restore dropped mcpOAuth: %v", l.File.Keys())
			}
			if tt.creds != "" {
				prev, err := os.ReadFile(filepath.Join(h.cfg.StateDir, "previous-credentials.json"))
				if err != nil || string(prev) != tt.creds {
					t.Errorf("previous-credentials.json = %q (%v); want the replaced file", prev, err)
				}
			}
			// The restored login is known to the lineage as the newest.
			lin, _ := lineage.Load(h.eng.lineagePath())
			if !lin.Known(credentials.Secret(tt.wantRT)) {
				t.Errorf("restored refresh token is not in the lineage")
			}
		})
	}
}

// A symlinked credentials file (dotfiles repos) is restored through the link:
// the target is written and the link kept; the file's mode is kept too.
func TestRestoreThroughSymlink(t *testing.T) {
	h := newHarness(t)
	target := filepath.Join(h.dir, "dotfiles", "claude-credentials.json")
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		t.Fatal(err)
	}
	clobbered := credsFile(oauthJSON(access1, "", exp8h))
	if err := os.WriteFile(target, []byte(clobbered), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(target, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../dotfiles/claude-credentials.json", h.cfg.CredentialsFile); err != nil {
		t.Fatal(err)
	}
	h.putBackup(login2)
	h.claude.valid[access2] = true

	wantOutcome(t, h.pass(), eventlog.OK, ExitOK, "inference check passed")
	fi, err := os.Lstat(h.cfg.CredentialsFile)
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("credentials path is no longer a symlink (%v, %v)", fi.Mode(), err)
	}
	l := h.readCreds()
	if !l.Symlink || l.Target != target || l.State != credentials.Usable || l.OAuth.RefreshToken().Reveal() != refresh2 {
		t.Errorf("after restore through a symlink: symlink %v target %q state %v; want the target restored", l.Symlink, l.Target, l.State)
	}
	if l.Mode != 0o600 {
		t.Errorf("restored target mode = %v; want 0600 (a credentials file is never left open to others)", l.Mode)
	}
	if !strings.Contains(h.syncLog(), "WARN credentials file "+target+" was open to other users (mode 0640); set it to 0600") {
		t.Errorf("sync.log = %q; want a WARN naming the loose file", h.syncLog())
	}
	if !strings.Contains(h.diag.String(), "symlink") {
		t.Errorf("diag log = %q; want a note that the symlink's target was written", h.diag.String())
	}
}
