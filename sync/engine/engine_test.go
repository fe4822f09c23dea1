package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofrs/flock"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/lineage"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Tokens used across the tests; every one must stay out of logs and state.
const (
	access1  = "sk-ant-oat01-access1ACCESSaccessACCESS0001"
	refresh1 = "sk-ant-ort01-refresh1REFRESHrefreshREFR0001"
	access2  = "sk-ant-oat01-access2ACCESSaccessACCESS0002"
	refresh2 = "sk-ant-ort01-refresh2REFRESHrefreshREFR0002"
	setupTok = "sk-ant-oat01-setupSETUPsetupSETUPsetup00099"
)

var allTokens = []string{access1, refresh1, access2, refresh2, setupTok}

// oauthJSON is a claudeAiOauth object as Claude writes it, with a field we do
// not know about.
func oauthJSON(access, refresh string, expires time.Time) string {
	return `{"accessToken":"` + access + `","refreshToken":"` + refresh + `","expiresAt":` +
		strconv.FormatInt(expires.UnixMilli(), 10) + `,"scopes":["user:inference","user:profile"],"subscriptionType":"enterprise","futureField":{"x":1}}`
}

func mustOAuth(t *testing.T, js string) *credentials.OAuth {
	t.Helper()
	o, err := credentials.ParseOAuth([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// credsFile is a whole credentials file with keys another part of Claude owns.
func credsFile(oauth string) string {
	return `{
  "mcpOAuth": {"github|1a2b": {"serverName": "github", "accessToken": "gho_mcp", "expiresAt": 0}},
  "claudeAiOauth": ` + oauth + `,
  "pluginSecrets": {"p": "v"}
}
`
}

// fakeClaude answers the inference check like the API would: OK for an access
// token it accepts (from the env token, else the credentials file), 401 for
// any other. force, when set, overrides the answer.
type fakeClaude struct {
	credsPath string
	mu        sync.Mutex
	valid     map[string]bool
	force     *check.Result
	calls     [][]string
}

func (f *fakeClaude) Run(ctx context.Context, extraEnv ...string) check.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, append([]string{}, extraEnv...))
	if f.force != nil {
		return *f.force
	}
	tok := ""
	for _, kv := range extraEnv {
		if v, ok := strings.CutPrefix(kv, "CLAUDE_CODE_OAUTH_TOKEN="); ok {
			tok = v
		}
	}
	if tok == "" {
		if l, err := credentials.Read(f.credsPath); err == nil && l.OAuth != nil {
			tok = l.OAuth.AccessToken().Reveal()
		}
	}
	if f.valid[tok] {
		return check.Result{Kind: check.OK, Reason: "inference check answered AUTH_OK"}
	}
	out := `API Error: 401 {"type":"error","error":{"type":"authentication_error","message":"OAuth token has expired."}}`
	k, reason := check.Classify(1, out, "")
	return check.Result{Kind: k, Reason: reason, ExitCode: 1}
}

func (f *fakeClaude) nCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

type harness struct {
	t      *testing.T
	dir    string
	cfg    *config.Config
	store  *store.File
	eng    *Engine
	claude *fakeClaude
	diag   *bytes.Buffer
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	claudeDir := filepath.Join(dir, "home", ".claude")
	if err := os.MkdirAll(claudeDir, 0o700); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "home", ".local", "state", "claude-auth-sync")
	cfg := &config.Config{
		User:            "alice",
		Home:            filepath.Join(dir, "home"),
		ClaudeConfigDir: claudeDir,
		CredentialsFile: filepath.Join(claudeDir, credentials.FileName),
		ConfigDir:       filepath.Join(dir, "home", ".config", "claude-auth-sync"),
		TokenEnvFile:    filepath.Join(dir, "home", ".config", "claude-auth-sync", "claude-oauth.env"),
		StateDir:        state,
		LogFile:         filepath.Join(state, "sync.log"),
		LocalStoreFile:  filepath.Join(dir, "backup", "backup.json"),
		Store:           "file",
	}
	st := store.NewFile(cfg.LocalStoreFile)
	fc := &fakeClaude{credsPath: cfg.CredentialsFile, valid: map[string]bool{}}
	var diag bytes.Buffer
	clk := clock.WithNow(func() time.Time { return testNow })
	// A token endpoint that knows none of the test's tokens: a forced refresh
	// gets invalid_grant, as for a dead login.
	tokenAPI := httptest.NewServer(fakeanthropic.New().Handler())
	t.Cleanup(tokenAPI.Close)
	eng := &Engine{
		Cfg:     cfg,
		Store:   st,
		Log:     &eventlog.EventLog{User: cfg.User, LogFile: cfg.LogFile, Clock: clk},
		Checker: fc,
		Diag:    slog.New(slog.NewTextHandler(&diag, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clock:   clk,
	}
	Assemble(eng, &oauth.Client{TokenURL: tokenAPI.URL + "/v1/oauth/token"})
	h := &harness{t: t, dir: dir, cfg: cfg, store: st, eng: eng, claude: fc, diag: &diag}
	t.Cleanup(h.assertNoSecrets)
	return h
}

func (h *harness) writeCreds(content string) {
	h.t.Helper()
	if err := os.WriteFile(h.cfg.CredentialsFile, []byte(content), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) readCreds() *credentials.Local {
	h.t.Helper()
	l, err := credentials.Read(h.cfg.CredentialsFile)
	if err != nil {
		h.t.Fatal(err)
	}
	return l
}

func (h *harness) rawCreds() string {
	h.t.Helper()
	b, err := os.ReadFile(h.cfg.CredentialsFile)
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

// setDoc merges fields into the backup store.
func (h *harness) setDoc(fields map[string]any) {
	h.t.Helper()
	if _, err := h.store.Update(context.Background(), func(*store.Doc) (map[string]any, error) { return fields, nil }); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) putBackup(oauth string) {
	h.t.Helper()
	h.setDoc(store.BackupFields(mustOAuth(h.t, oauth), testNow.Add(-time.Hour)))
}

func (h *harness) doc() *store.Doc {
	h.t.Helper()
	d, err := h.store.Read(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

func (h *harness) backupRefresh() string {
	h.t.Helper()
	o, err := h.doc().OAuth()
	if err != nil || o == nil {
		h.t.Fatalf("backup holds no login (%v)", err)
	}
	return o.RefreshToken().Reveal()
}

func (h *harness) syncLog() string {
	b, _ := os.ReadFile(h.cfg.LogFile)
	return string(b)
}

func (h *harness) observe(toks ...string) {
	h.t.Helper()
	lin, err := lineage.Load(h.eng.lineagePath())
	if err != nil {
		h.t.Fatal(err)
	}
	for _, tok := range toks {
		if err := lin.Observe(credentials.Secret(tok)); err != nil {
			h.t.Fatal(err)
		}
	}
}

// assertNoSecrets: no token in sync.log, state.json, the lineage or the
// diagnostic log, whatever the test did.
func (h *harness) assertNoSecrets() {
	places := map[string]string{"diag log": h.diag.String(), "sync.log": h.syncLog()}
	for _, name := range []string{"state.json", "lineage"} {
		b, _ := os.ReadFile(filepath.Join(h.cfg.StateDir, name))
		places[name] = string(b)
	}
	for name, s := range places {
		for _, tok := range allTokens {
			if strings.Contains(s, tok) {
				h.t.Errorf("%s contains a token: %q", name, s)
			}
		}
		if strings.Contains(s, "sk-ant-") {
			h.t.Errorf("%s contains something token-shaped: %q", name, s)
		}
	}
}

func (h *harness) pass() Outcome {
	h.t.Helper()
	return h.eng.Pass(context.Background(), PassOptions{})
}

func wantOutcome(t *testing.T, o Outcome, st eventlog.Status, code int, msgHas string) {
	t.Helper()
	if o.Status != st || o.Code != code || !strings.Contains(o.Message, msgHas) {
		t.Errorf("Pass() = %s %d %q; want %s %d containing %q", o.Status, o.Code, o.Message, st, code, msgHas)
	}
}

var (
	exp8h  = testNow.Add(8 * time.Hour)
	exp7h  = testNow.Add(7 * time.Hour)
	exp9h  = testNow.Add(9 * time.Hour)
	login1 = oauthJSON(access1, refresh1, exp8h)
	login2 = oauthJSON(access2, refresh2, exp9h)
)

func TestPassOKBacksUp(t *testing.T) {
	h := newHarness(t)
	h.writeCreds(credsFile(login1))
	h.claude.valid[access1] = true
	h.setDoc(map[string]any{"vaultwarden_master_password": "vw"})

	wantOutcome(t, h.pass(), eventlog.OK, ExitOK, "backed up")
	d := h.doc()
	if got, _ := d.OAuth(); got == nil || string(got.Compact()) != login1 {
		t.Errorf("backup after a good pass = %v; want the file's login %s", got, login1)
	}
	if !d.BackedUpAt().Equal(testNow) {
		t.Errorf("backed_up_at = %v; want %v", d.BackedUpAt(), testNow)
	}
	if got := d.Keys(); !contains(got, "vaultwarden_master_password") || !contains(got, store.FieldExpiresAtMs) {
		t.Errorf("backup keys = %v; want the other tool's key kept and %s written", got, store.FieldExpiresAtMs)
	}
	if !strings.Contains(h.syncLog(), testNow.Format(time.RFC3339)+" OK ") {
		t.Errorf("sync.log = %q; want an OK line", h.syncLog())
	}
	rec := h.eng.Telemetry.LoadRecord()
	if rec.LastBackup == nil || rec.LastBackup.Version != d.Version || rec.LastPass == nil || rec.LastPass.Status != eventlog.OK || rec.LastCheck == nil || rec.LastCheck.Result != "ok" {
		t.Errorf("state.json = %+v; want the pass, the check and the backup recorded", rec)
	}
	// The file is not touched by a good pass.
	if h.rawCreds() != credsFile(login1) {
		t.Errorf("a good pass rewrote the credentials file")
	}

	// A second pass finds the backup current and writes nothing.
	v := d.Version
	wantOutcome(t, h.pass(), eventlog.OK, ExitOK, "up to date")
	if h.doc().Version != v {
		t.Errorf("second pass wrote v%d; want the backup left at v%d", h.doc().Version, v)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func TestPassMissingFile(t *testing.T) {
	tests := []struct {
		name    string
		content string // "" = no file
	}{
		{name: "no file"},
		{name: "no claudeAiOauth", content: `{"mcpOAuth":{}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.putBackup(login1)
			h.claude.valid[access1] = true
			if tt.content != "" {
				h.writeCreds(tt.content)
			}
			o := h.pass()
			wantOutcome(t, o, eventlog.WARN, ExitLoggedOut, "not restoring automatically")
			for _, hint := range []string{"claude auth login", "claude-auth-sync restore"} {
				if !strings.Contains(o.Message, hint) {
					t.Errorf("Pass() message %q; want the way back %q", o.Message, hint)
				}
			}
			if tt.content == "" {
				if _, err := os.Stat(h.cfg.CredentialsFile); !os.IsNotExist(err) {
					t.Errorf("Pass() created the credentials file after a logout (%v)", err)
				}
			} else if h.rawCreds() != tt.content {
				t.Errorf("Pass() changed a file without a login")
			}
			if h.claude.nCalls() != 0 {
				t.Errorf("Pass() ran the check %d times; want none without a login", h.claude.nCalls())
			}
			if !strings.Contains(h.syncLog(), " WARN ") {
				t.Errorf("sync.log = %q; want a WARN line", h.syncLog())
			}
		})
	}
}

func TestPassClobbered(t *testing.T) {
	tests := []struct {
		name  string
		creds string
	}{
		{name: "empty refresh token", creds: credsFile(oauthJSON(access1, "", exp8h))},
		{name: "claude's dead login", creds: credsFile(`{"accessToken":"","refreshToken":"","expiresAt":0}`)},
		{name: "expiresAt a string", creds: credsFile(`{"accessToken":"x","refreshToken":"y","expiresAt":"1"}`)},
		{name: "claudeAiOauth null", creds: credsFile(`null`)},
		{name: "invalid UTF-8 in the token", creds: credsFile(oauthJSON("sk-ant-oat01-"+"\xff\xfe", refresh1, exp8h))},
		{name: "not JSON", creds: `{"claudeAiOauth": {"accessToken": "` + access1 + `", `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.putBackup(login2)
			h.claude.valid[access2] = true
			h.writeCreds(tt.creds)

			wantOutcome(t, h.pass(), eventlog.OK, ExitOK, "inference check passed")
			l := h.readCreds()
			if l.State != credentials.Usable || l.OAuth.RefreshToken().Reveal() != refresh2 {
				t.Fatalf("after restoring a clobbered file: %v, refresh %s; want the backup's login", l.State, l.OAuth.RefreshToken().Short())
			}
			if string(l.OAuth.Compact()) != login2 {
				t.Errorf("restored login = %s; want the backup's %s", l.OAuth.Compact(), login2)
			}
			if l.File != nil && strings.Contains(tt.creds, "mcpOAuth") && !contains(l.File.Keys(), "mcpOAuth") {
				t.Errorf("restore dropped mcpOAuth: keys %v", l.File.Keys())
			}
			if l.Mode != 0o600 {
				t.Errorf("restored file mode = %v; want 0600", l.Mode)
			}
			log := h.syncLog()
			if !strings.Contains(log, " RECOVERED ") || !strings.Contains(log, " OK ") || strings.Index(log, " RECOVERED ") > strings.Index(log, " OK ") {
				t.Errorf("sync.log = %q; want RECOVERED then OK", log)
			}
			prev, err := os.ReadFile(filepath.Join(h.cfg.StateDir, "previous-credentials.json"))
			if err != nil || string(prev) != tt.creds {
				t.Errorf("previous-credentials.json = %q (%v); want the clobbered file kept", prev, err)
			}
		})
	}
}

func TestPassClobberedNoRestore(t *testing.T) {
	tests := []struct {
		name   string
		backup string // "" = none
		msgHas string
	}{
		{name: "no backup", msgHas: "no backup"},
		{name: "unusable backup", backup: oauthJSON(access2, "", exp9h), msgHas: "not usable"},
		{name: "backup with the same dead token", backup: oauthJSON(access1, "", exp8h), msgHas: "not usable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.backup != "" {
				h.setDoc(map[string]any{store.FieldOAuthJSON: tt.backup})
			}
			creds := credsFile(oauthJSON(access1, "", exp8h))
			h.writeCreds(creds)
			o := h.pass()
			wantOutcome(t, o, eventlog.FAIL, ExitFail, tt.msgHas)
			if !strings.Contains(o.Message, "claude auth login") {
				t.Errorf("Pass() = %q; want the login command", o.Message)
			}
			if h.rawCreds() != creds {
				t.Errorf("Pass() rewrote the file without a backup to restore")
			}
			if !strings.Contains(h.syncLog(), " FAIL ") {
				t.Errorf("sync.log = %q; want a FAIL line", h.syncLog())
			}
		})
	}
}

func TestPassAuthFailureRestores(t *testing.T) {
	h := newHarness(t)
	h.writeCreds(credsFile(login1))
	h.putBackup(login2)
	h.claude.valid[access2] = true // the file's access token is refused

	wantOutcome(t, h.pass(), eventlog.OK, ExitOK, "after restore")
	l := h.readCreds()
	if l.OAuth == nil || l.OAuth.RefreshToken().Reveal() != refresh2 || !contains(l.File.Keys(), "mcpOAuth") {
		t.Errorf("after an auth failure the file holds %v; want the backup's login with mcpOAuth kept", l.OAuth)
	}
	if h.claude.nCalls() != 2 {
		t.Errorf("checks run = %d; want 2 (the failure, then the retry)", h.claude.nCalls())
	}
	if !strings.Contains(h.syncLog(), " RECOVERED ") {
		t.Errorf("sync.log = %q; want RECOVERED", h.syncLog())
	}
	if h.backupRefresh() != refresh2 {
		t.Errorf("backup changed after a restore")
	}
}

func TestPassAuthFailureNoRestore(t *testing.T) {
	tests := []struct {
		name    string
		backup  string // "" = none
		lineage []string
		msgHas  string
	}{
		{name: "no backup", msgHas: "no backup"},
		{name: "backup with the same refresh token", backup: oauthJSON(access2, refresh1, exp9h), msgHas: "same refresh token"},
		{name: "backup older by lineage", backup: login2, lineage: []string{refresh2, refresh1}, msgHas: "older refresh token"},
		{name: "backup is a backfill", backup: oauthJSON(setupTok, refresh2, testNow.Add(300*24*time.Hour)), msgHas: "backfill"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			creds := credsFile(login1)
			h.writeCreds(creds)
			if tt.backup != "" {
				h.setDoc(map[string]any{store.FieldOAuthJSON: tt.backup})
			}
			h.observe(tt.lineage...)
			h.claude.valid[access2] = true
			h.claude.valid[setupTok] = true
			o := h.pass()
			wantOutcome(t, o, eventlog.FAIL, ExitFail, tt.msgHas)
			if !strings.Contains(o.Message, "claude auth login") {
				t.Errorf("Pass() = %q; want the login command", o.Message)
			}
			if h.rawCreds() != creds {
				t.Errorf("Pass() rewrote the file when it should not restore")
			}
		})
	}
}

func TestPassTransientLeavesFile(t *testing.T) {
	tests := []struct {
		name   string
		result check.Result
	}{
		{name: "timeout", result: check.Result{Kind: check.Transient, Reason: "claude check timed out after 1m30s"}},
		{name: "overloaded", result: check.Result{Kind: check.Transient, Reason: "transient failure: API Error: 529 overloaded", ExitCode: 1}},
		{name: "unexpected answer", result: check.Result{Kind: check.Unexpected, Reason: "claude answered something other than AUTH_OK: hello"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			creds := credsFile(login1)
			h.writeCreds(creds)
			h.putBackup(login2)
			v := h.doc().Version
			res := tt.result
			h.claude.force = &res
			wantOutcome(t, h.pass(), eventlog.WARN, ExitTempFail, "not restoring")
			if h.rawCreds() != creds {
				t.Errorf("a transient failure changed the credentials file")
			}
			if h.doc().Version != v || h.backupRefresh() != refresh2 {
				t.Errorf("a transient failure changed the backup")
			}
			if h.claude.nCalls() != 1 {
				t.Errorf("checks run = %d; want 1", h.claude.nCalls())
			}
		})
	}
}

func TestPassSkipWhenLocked(t *testing.T) {
	h := newHarness(t)
	h.writeCreds(credsFile(login1))
	h.claude.valid[access1] = true
	if err := os.MkdirAll(h.cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	other := flock.New(filepath.Join(h.cfg.StateDir, lock.Sync))
	if ok, err := other.TryLock(); !ok || err != nil {
		t.Fatalf("take the sync lock: %v %v", ok, err)
	}
	o := h.pass()
	other.Unlock()
	wantOutcome(t, o, eventlog.SKIP, ExitOK, "another sync pass")
	if h.claude.nCalls() != 0 || h.doc().Exists {
		t.Errorf("a skipped pass ran the check (%d) or wrote a backup (%v)", h.claude.nCalls(), h.doc().Exists)
	}
	if !strings.Contains(h.syncLog(), " SKIP ") {
		t.Errorf("sync.log = %q; want a SKIP line", h.syncLog())
	}
	// Once the lock is free the pass runs.
	wantOutcome(t, h.pass(), eventlog.OK, ExitOK, "backed up")
}

func TestPassNeverOverwritesNewerBackup(t *testing.T) {
	tests := []struct {
		name        string
		stored      string
		lineage     []string
		wantRefresh string // in the backup after the pass
		msgHas      string
	}{
		{name: "stored newer by lineage though it expires earlier", stored: oauthJSON(access2, refresh2, exp7h),
			lineage: []string{refresh1, refresh2}, wantRefresh: refresh2, msgHas: "newer login"},
		{name: "stored older by lineage though it expires later", stored: login2,
			lineage: []string{refresh2, refresh1}, wantRefresh: refresh1, msgHas: "backed up"},
		{name: "stored unknown, expires later", stored: login2, wantRefresh: refresh2, msgHas: "newer login"},
		{name: "stored unknown, expires earlier", stored: oauthJSON(access2, refresh2, exp7h), wantRefresh: refresh1, msgHas: "backed up"},
		{name: "same refresh token, later expiry stored", stored: oauthJSON(access2, refresh1, exp9h), wantRefresh: refresh1, msgHas: "newer login"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.writeCreds(credsFile(login1))
			h.claude.valid[access1] = true
			h.setDoc(map[string]any{store.FieldOAuthJSON: tt.stored})
			h.observe(tt.lineage...)
			v := h.doc().Version
			wantOutcome(t, h.pass(), eventlog.OK, ExitOK, tt.msgHas)
			d := h.doc()
			o, _ := d.OAuth()
			if o.RefreshToken().Reveal() != tt.wantRefresh {
				t.Errorf("backup refresh token = %s; want %s", o.RefreshToken().Short(), credentials.Secret(tt.wantRefresh).Short())
			}
			if tt.wantRefresh == refresh2 && (d.Version != v || string(o.Compact()) != tt.stored) {
				t.Errorf("the newer backup was rewritten (v%d -> v%d)", v, d.Version)
			}
		})
	}
}

func readEnvFile(t *testing.T, path string) (string, os.FileMode, bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return "", 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	return string(b), fi.Mode().Perm(), true
}

func TestSetupTokenMode(t *testing.T) {
	h := newHarness(t)
	h.writeCreds(credsFile(login1))
	h.putBackup(login1)
	h.setDoc(map[string]any{store.FieldSetupToken: setupTok})
	h.claude.valid[setupTok] = true
	before := h.doc()

	wantOutcome(t, h.pass(), eventlog.OK, ExitOK, "setup-token mode")

	env, mode, ok := readEnvFile(t, h.cfg.TokenEnvFile)
	if !ok || env != "CLAUDE_CODE_OAUTH_TOKEN="+setupTok+"\n" || mode != 0o600 {
		t.Errorf("env file = %q mode %v (exists %v); want CLAUDE_CODE_OAUTH_TOKEN=<setup token> mode 0600", env, mode, ok)
	}
	l := h.readCreds()
	if l.OAuth == nil || l.OAuth.AccessToken().Reveal() != setupTok || l.OAuth.RefreshToken().Reveal() != refresh1 {
		t.Fatalf("credentials after setup-token pass: %v; want the setup token backfilled with the refresh token kept", l.OAuth)
	}
	if want := testNow.Add(365 * 24 * time.Hour).UnixMilli(); l.OAuth.ExpiresAtMs() != want {
		t.Errorf("backfill expiresAt = %d; want %d (a year on)", l.OAuth.ExpiresAtMs(), want)
	}
	if !contains(l.File.Keys(), "mcpOAuth") || !contains(l.File.Keys(), "pluginSecrets") {
		t.Errorf("backfill dropped keys: %v", l.File.Keys())
	}
	if !IsBackfill(l.OAuth, setupTok, testNow) {
		t.Errorf("IsBackfill(the backfilled login) = false")
	}
	h.claude.mu.Lock()
	calls := h.claude.calls
	h.claude.mu.Unlock()
	if len(calls) != 1 || len(calls[0]) != 1 || calls[0][0] != "CLAUDE_CODE_OAUTH_TOKEN="+setupTok {
		t.Errorf("check extraEnv = %d calls %v; want one call with CLAUDE_CODE_OAUTH_TOKEN", len(calls), len(calls))
	}
	after := h.doc()
	if after.Version != before.Version {
		t.Errorf("setup-token pass wrote the backup (v%d -> v%d); want no backups", before.Version, after.Version)
	}
	if o, _ := after.OAuth(); o == nil || string(o.Compact()) != login1 {
		t.Errorf("backup after setup-token pass = %v; want the rotating login untouched", o)
	}

	// A second pass changes nothing and still makes no backup.
	credsBefore := h.rawCreds()
	wantOutcome(t, h.pass(), eventlog.OK, ExitOK, "setup-token mode")
	if h.rawCreds() != credsBefore || h.doc().Version != before.Version {
		t.Errorf("second setup-token pass rewrote the file or the backup")
	}

	// The admin clears the field: the env file goes, the rotating login comes back.
	h.setDoc(map[string]any{store.FieldSetupToken: nil})
	cleared := h.doc().Version
	h.claude.valid = map[string]bool{access1: true}
	wantOutcome(t, h.pass(), eventlog.OK, ExitOK, "inference check passed")
	if _, _, ok := readEnvFile(t, h.cfg.TokenEnvFile); ok {
		t.Errorf("env file still there after the setup token was cleared")
	}
	l = h.readCreds()
	if l.OAuth == nil || string(l.OAuth.Compact()) != login1 {
		t.Errorf("credentials after leaving setup-token mode = %v; want the rotating login from the backup", l.OAuth)
	}
	if !contains(l.File.Keys(), "mcpOAuth") {
		t.Errorf("leaving setup-token mode dropped mcpOAuth: %v", l.File.Keys())
	}
	if !strings.Contains(h.syncLog(), "setup-token mode ended") {
		t.Errorf("sync.log = %q; want the end of setup-token mode logged", h.syncLog())
	}
	if d := h.doc(); d.Version != cleared {
		t.Errorf("leaving setup-token mode wrote the backup (v%d -> v%d)", cleared, d.Version)
	}
}

func TestSetupTokenModeOutcomes(t *testing.T) {
	tests := []struct {
		name      string
		expiresAt any // setup_token_expires_at
		valid     bool
		status    eventlog.Status
		code      int
		msgHas    string
		logHas    string
	}{
		{name: "ok, no end recorded", valid: true, status: eventlog.OK, code: ExitOK, msgHas: "no backups"},
		{name: "ends in 10 days", expiresAt: testNow.Add(10 * 24 * time.Hour).Format(time.RFC3339), valid: true, status: eventlog.OK, code: ExitOK, logHas: "expires on 2026-03-11"},
		{name: "ends in 40 days", expiresAt: strconv.FormatInt(testNow.Add(40*24*time.Hour).UnixMilli(), 10), valid: true, status: eventlog.OK, code: ExitOK},
		{name: "expired", expiresAt: testNow.Add(-time.Hour).Format(time.RFC3339), valid: true, status: eventlog.FAIL, code: ExitFail, msgHas: "expired"},
		{name: "refused", valid: false, status: eventlog.FAIL, code: ExitFail, msgHas: "no restore"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.writeCreds(credsFile(login1))
			h.putBackup(login2)
			fields := map[string]any{store.FieldSetupToken: setupTok}
			if tt.expiresAt != nil {
				fields[store.FieldSetupTokenExpiresAt] = tt.expiresAt
			}
			h.setDoc(fields)
			h.claude.valid[setupTok] = tt.valid
			h.claude.valid[access2] = true // a restore would "work": it must not happen
			wantOutcome(t, h.pass(), tt.status, tt.code, tt.msgHas)
			if tt.logHas != "" && !strings.Contains(h.syncLog(), tt.logHas) {
				t.Errorf("sync.log = %q; want %q", h.syncLog(), tt.logHas)
			}
			if tt.logHas == "" && strings.Contains(h.syncLog(), "expires on") {
				t.Errorf("sync.log = %q; want no expiry warning", h.syncLog())
			}
			if l := h.readCreds(); l.OAuth != nil && l.OAuth.RefreshToken().Reveal() == refresh2 {
				t.Errorf("setup-token mode restored the rotating backup")
			}
			if h.backupRefresh() != refresh2 {
				t.Errorf("setup-token mode changed the backup")
			}
		})
	}
}

func TestRecordHasNoSecret(t *testing.T) {
	h := newHarness(t)
	h.writeCreds(credsFile(login1))
	res := check.Result{Kind: check.Transient, Reason: "claude said " + access1}
	h.claude.force = &res
	// The check's reason is masked by check.Runner in production; the record and
	// sync.log mask again (assertNoSecrets checks sync.log at cleanup).
	wantOutcome(t, h.pass(), eventlog.WARN, ExitTempFail, "claude said")
	b, _ := os.ReadFile(h.eng.Telemetry.RecordPath())
	var rec telemetry.Record
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatalf("state.json is not JSON: %v", err)
	}
	if rec.LastCheck == nil || strings.Contains(rec.LastCheck.Reason, access1) || strings.Contains(rec.LastPass.Message, access1) {
		t.Errorf("state.json = %s; want the check's reason masked", b)
	}
}

// rotatingClaude plays a Claude that refreshes during the first check: the
// check used the old access token (now revoked) and the file holds a new login.
type rotatingClaude struct {
	*fakeClaude
	h    *harness
	done bool
}

func (r *rotatingClaude) Run(ctx context.Context, env ...string) check.Result {
	if !r.done {
		r.done = true
		r.h.writeCreds(credsFile(login2))
		k, reason := check.Classify(1, `API Error: 403 {"type":"error","error":{"type":"permission_error","message":"OAuth token has been revoked."}}`, "")
		return check.Result{Kind: k, Reason: reason, ExitCode: 1}
	}
	return r.fakeClaude.Run(ctx, env...)
}

// A login rotated during the check is checked again, not declared dead and not
// replaced by the backup.
func TestPassLoginRotatedDuringCheck(t *testing.T) {
	h := newHarness(t)
	h.writeCreds(credsFile(login1))
	h.putBackup(login1)
	h.claude.valid[access2] = true
	h.eng.Checker = &rotatingClaude{fakeClaude: h.claude, h: h}
	wantOutcome(t, h.pass(), eventlog.OK, ExitOK, "inference check passed")
	if l := h.readCreds(); l.OAuth == nil || l.OAuth.RefreshToken().Reveal() != refresh2 {
		t.Errorf("file after the pass holds %v; want the rotated login kept", l.OAuth)
	}
	if h.backupRefresh() != refresh2 {
		t.Errorf("backup holds %q; want the rotated login backed up", h.backupRefresh())
	}
	if strings.Contains(h.syncLog(), "RECOVERED") || strings.Contains(h.syncLog(), "FAIL") {
		t.Errorf("sync.log = %q; want no restore and no FAIL", h.syncLog())
	}
}

// At a terminal, the pass says it is checking and how long that may take
// before the check starts; elsewhere (a timer, a pipe) it does not.
func TestPassSaysItIsChecking(t *testing.T) {
	for _, interactive := range []bool{true, false} {
		h := newHarness(t)
		h.cfg.CheckTimeout = 90 * time.Second
		h.eng.Interactive = interactive
		h.writeCreds(credsFile(login1))
		h.claude.valid[access1] = true
		wantOutcome(t, h.pass(), eventlog.OK, ExitOK, "backed up")
		said := strings.Contains(h.diag.String(), "checking the login") && strings.Contains(h.diag.String(), "can take up to 1m30s")
		if said != interactive {
			t.Errorf("Interactive=%v: diagnostics %q; want the check announced with its timeout: %v", interactive, h.diag.String(), interactive)
		}
	}
}
