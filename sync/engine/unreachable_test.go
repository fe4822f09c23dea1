package engine

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// flakyStore is the real local store with Vault's failure modes injected.
type flakyStore struct {
	*store.File
	readErr, updateErr error
}

func (f *flakyStore) Read(ctx context.Context) (*store.Doc, error) {
	if f.readErr != nil {
		return nil, f.readErr
	}
	return f.File.Read(ctx)
}

func (f *flakyStore) Update(ctx context.Context, fn func(*store.Doc) (map[string]any, error)) (*store.Doc, error) {
	if f.updateErr != nil {
		return nil, f.updateErr
	}
	return f.File.Update(ctx, fn)
}

var (
	errDown      = fmt.Errorf("read secret/workstation/claude-users/alice: %w (dial tcp: connection refused)", store.ErrUnreachable)
	errForbidden = fmt.Errorf("read secret/workstation/claude-users/alice: %w (403: permission denied)", store.ErrForbidden)
)

func TestPassStoreFailures(t *testing.T) {
	tests := []struct {
		name      string
		creds     string // "" = none
		envFile   bool
		readErr   error
		updateErr error
		valid     []string
		status    eventlog.Status
		code      int
		msgHas    string
	}{
		{name: "down, login fine: backup pending", creds: credsFile(login1), readErr: errDown, valid: []string{access1},
			status: eventlog.WARN, code: ExitTempFail, msgHas: "backup pending"},
		{name: "down at write: backup pending", creds: credsFile(login1), updateErr: errDown, valid: []string{access1},
			status: eventlog.WARN, code: ExitTempFail, msgHas: "backup pending"},
		{name: "down, auth failure", creds: credsFile(login1), readErr: errDown,
			status: eventlog.FAIL, code: ExitFail, msgHas: "cannot look for a backup"},
		{name: "down, clobbered", creds: credsFile(oauthJSON(access1, "", exp8h)), readErr: errDown,
			status: eventlog.FAIL, code: ExitFail, msgHas: "backup cannot be read"},
		{name: "down, missing file", readErr: errDown, status: eventlog.WARN, code: ExitLoggedOut, msgHas: "not restoring"},
		{name: "403 on read", creds: credsFile(login1), readErr: errForbidden, valid: []string{access1},
			status: eventlog.FAIL, code: ExitFail, msgHas: "permission denied"},
		{name: "403 on write", creds: credsFile(login1), updateErr: errForbidden, valid: []string{access1},
			status: eventlog.FAIL, code: ExitFail, msgHas: "backup failed"},
		{name: "down, setup-token env file", creds: credsFile(login1), envFile: true, readErr: errDown, valid: []string{setupTok},
			status: eventlog.WARN, code: ExitTempFail, msgHas: "not re-confirmed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.putBackup(login2)
			v := h.doc().Version
			h.eng.Store = &flakyStore{File: h.store, readErr: tt.readErr, updateErr: tt.updateErr}
			if tt.creds != "" {
				h.writeCreds(tt.creds)
			}
			if tt.envFile {
				if err := os.MkdirAll(filepath.Dir(h.cfg.TokenEnvFile), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(h.cfg.TokenEnvFile, []byte("CLAUDE_CODE_OAUTH_TOKEN="+setupTok+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			for _, tok := range tt.valid {
				h.claude.valid[tok] = true
			}
			h.claude.valid[access2] = true // a restore would work: it must not happen when the store is down
			wantOutcome(t, h.pass(), tt.status, tt.code, tt.msgHas)
			if tt.envFile {
				// Setup-token mode carries on from the env file: the backfill is kept.
				if l := h.readCreds(); l.OAuth == nil || l.OAuth.AccessToken().Reveal() != setupTok || l.OAuth.RefreshToken().Reveal() != refresh1 {
					t.Errorf("setup-token mode with the store down: the file does not hold the backfill")
				}
			} else if tt.creds != "" && h.rawCreds() != tt.creds {
				t.Errorf("Pass() with the store failing rewrote the credentials file")
			}
			if h.doc().Version != v {
				t.Errorf("Pass() with the store failing wrote the store")
			}
			if tt.envFile {
				h.claude.mu.Lock()
				calls := h.claude.calls
				h.claude.mu.Unlock()
				if len(calls) != 1 || len(calls[0]) != 1 || !strings.HasPrefix(calls[0][0], "CLAUDE_CODE_OAUTH_TOKEN=") {
					t.Errorf("check with the env file and the store down got %d calls; want the env token", len(calls))
				}
			}
		})
	}
}

// A pass that runs no check (the agent's answer to a request its own check
// already answered) still backs the login up: with the store down it ends
// WARN pending (75), never OK; with the store up the backup is written.
func TestSkipCheckPassBacksUp(t *testing.T) {
	const why = "no second inference check: test"
	for _, down := range []bool{true, false} {
		t.Run(fmt.Sprintf("store down %v", down), func(t *testing.T) {
			h := newHarness(t)
			h.writeCreds(credsFile(login1))
			fs := &flakyStore{File: h.store}
			if down {
				fs.readErr, fs.updateErr = errDown, errDown
			}
			h.eng.Store = fs
			o := h.eng.Pass(context.Background(), PassOptions{SkipCheck: why})
			if down {
				wantOutcome(t, o, eventlog.WARN, ExitTempFail, "backup pending")
			} else {
				wantOutcome(t, o, eventlog.OK, ExitOK, why)
				if got, _ := h.doc().OAuth(); got == nil || string(got.Compact()) != login1 {
					t.Errorf("backup after a pass without a check = %v; want the file's login", got)
				}
			}
			h.claude.mu.Lock()
			calls := len(h.claude.calls)
			h.claude.mu.Unlock()
			if calls != 0 {
				t.Errorf("a pass told to skip the check ran claude %d times", calls)
			}
		})
	}
}

// A pass whose context ends while Vault is being asked (the agent stopping
// mid-lookup) is a WARN pending, never a FAIL: nothing was refused.
func TestPrepareCutShortIsNoFail(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // never answers before the pass is stopped
	}))
	defer srv.Close()
	defer close(release)
	v, err := store.NewVault(store.VaultConfig{Address: srv.URL, TokenFile: writeToken(t), Mount: "secret", Path: "workstation/claude-users/alice"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }() // the stop lands while the lookup waits: fault timing
	_, o := prepare(ctx, v, v)
	if o == nil || o.Status != eventlog.WARN || o.Code != ExitTempFail {
		t.Fatalf("prepare cut short by a stop = %+v; want WARN %d", o, ExitTempFail)
	}
}

func writeToken(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vault-token")
	if err := os.WriteFile(p, []byte("hvs.testtokenTESTtoken0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
