package refresh

import (
	"bytes"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
)

// harness is one user's home: a credentials file holding a login the fake
// token endpoint knows, Claude's config dir, our state dir, and the Claude
// login's refresher over them (on the real clock: the fake's tokens expire
// by it).
type harness struct {
	t         *testing.T
	dir       string
	claudeDir string
	creds     string
	stateDir  string
	logFile   string
	tokenURL  string
	fam       *ClaudeLogin
	r         *Claude
	seen      *witness
	diag      *bytes.Buffer
}

func refreshHarness(t *testing.T) (*harness, *fakeanthropic.Server, fakeanthropic.Login) {
	t.Helper()
	fake := fakeanthropic.New()
	srv := httptest.NewServer(fake.Handler())
	t.Cleanup(srv.Close)
	h := newHarness(t, srv.URL+"/v1/oauth/token")
	l := fake.Issue()
	h.writeCreds(string(fakeanthropic.CredentialsJSON(l)))
	return h, fake, l
}

func newHarness(t *testing.T, tokenURL string) *harness {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dir: dir, claudeDir: filepath.Join(dir, "home", ".claude"),
		stateDir: filepath.Join(dir, "home", ".local", "state", "claude-auth-sync"), tokenURL: tokenURL,
		seen: &witness{}, diag: &bytes.Buffer{}}
	h.creds = filepath.Join(h.claudeDir, credentials.FileName)
	h.logFile = filepath.Join(h.stateDir, "sync.log")
	if err := os.MkdirAll(h.claudeDir, 0o700); err != nil {
		t.Fatal(err)
	}
	h.build(nil)
	t.Cleanup(h.assertNoSecrets)
	return h
}

// build makes the refresher afresh, as New does from the config; mod may
// change its settings first.
func (h *harness) build(mod func(*ClaudeLogin, *Config[*credentials.OAuth])) {
	diag := slog.New(slog.NewTextHandler(h.diag, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.fam = &ClaudeLogin{CredentialsFile: h.creds, ClaudeConfigDir: h.claudeDir,
		LocksHeld: lock.NewHolderRecord(filepath.Join(h.stateDir, "claude-locks-held")),
		Client:    &oauth.Client{TokenURL: h.tokenURL},
		Log:       &eventlog.EventLog{User: "alice", LogFile: h.logFile}, Diag: diag}
	c := Config[*credentials.OAuth]{Family: h.fam, StateDir: h.stateDir, Clock: clock.Real, Diag: diag, Lead: 15 * time.Minute}
	if mod != nil {
		mod(h.fam, &c)
	}
	h.r = New(c)
}

func (h *harness) writeCreds(content string) {
	h.t.Helper()
	if err := os.WriteFile(h.creds, []byte(content), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) readCreds() *credentials.Local {
	h.t.Helper()
	l, err := credentials.Read(h.creds)
	if err != nil {
		h.t.Fatal(err)
	}
	return l
}

func (h *harness) rawCreds() string {
	h.t.Helper()
	b, err := os.ReadFile(h.creds)
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

func (h *harness) syncLog() string {
	b, _ := os.ReadFile(h.logFile)
	return string(b)
}

// assertNoSecrets: nothing token-shaped in sync.log or the diagnostic log,
// whatever the test did.
func (h *harness) assertNoSecrets() {
	for name, s := range map[string]string{"diag log": h.diag.String(), "sync.log": h.syncLog()} {
		if strings.Contains(s, "sk-ant-") {
			h.t.Errorf("%s contains something token-shaped: %q", name, s)
		}
	}
}

// witness records the refresh tokens a refresh brought into being, in order.
type witness struct {
	mu      sync.Mutex
	seen    []credentials.Secret
	reloads int
}

func (w *witness) Observe(tok credentials.Secret) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, tok)
	return nil
}

func (w *witness) Reload() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reloads++
	return nil
}

func (w *witness) last() credentials.Secret {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.seen) == 0 {
		return ""
	}
	return w.seen[len(w.seen)-1]
}

func mustOAuth(t *testing.T, js string) *credentials.OAuth {
	t.Helper()
	o, err := credentials.ParseOAuth([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func oauthJSON(access, refresh string, expires time.Time) string {
	return `{"accessToken":"` + access + `","refreshToken":"` + refresh + `","expiresAt":` +
		strconv.FormatInt(expires.UnixMilli(), 10) + `,"scopes":["user:inference","user:profile"],"subscriptionType":"enterprise","futureField":{"x":1}}`
}
