package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
	"github.com/claude-auth-sync/claude-auth-sync/e2e/vaultserver"
	"github.com/claude-auth-sync/claude-auth-sync/sync/agent"
	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
)

var (
	binDir string
	vsrv   *vaultserver.Server
)

// TestMain builds the real binaries once and starts one real Vault dev server
// for the package. Without Vault the suite fails: it never skips.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "cas-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = filepath.Join(dir, "bin")
	for name, pkg := range map[string]string{"claude-auth-sync": "../cmd/claude-auth-sync", "claude": "./cmd/claude-standin", "racy-claude": "./cmd/racy-claude", "inotify-hog": "./cmd/inotify-hog", "name-squatter": "./cmd/name-squatter", "hostile-claude": "./cmd/hostile-claude"} {
		// casfakeusers: the worlds name made-up users (see sync/config/testaccounts.go).
		cmd := exec.Command("go", "build", "-tags", "casfakeusers", "-o", filepath.Join(binDir, name), pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: build %s: %v\n", name, err)
			return 1
		}
	}
	vsrv, err = vaultserver.Start(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: cannot start a real Vault server: %v\n", err)
		return 1
	}
	defer vsrv.Stop()
	// Every process's argv is sampled for the whole run: a token there is a
	// failure of the run, whichever test started the process.
	sampler = startArgvSampler(10 * time.Millisecond)
	code := m.Run()
	if !sampler.finish() && code == 0 {
		code = 1
	}
	return code
}

// world is one test's user: a home, a provisioned Vault token, a fake Anthropic.
type world struct {
	t       *testing.T
	srv     *vaultserver.Server
	name    string
	home    string
	creds   string
	state   string
	user    *vaultserver.User
	fake    *fakeanthropic.Server
	api     *httptest.Server
	env     []string
	mu      sync.Mutex
	secrets []string // every token the test created; none may show up in output
	outputs []string
	journal *journalSink // the journald stand-in this world's events go to
}

var (
	userSeq   int
	userSeqMu sync.Mutex // the MCP sessions test runs its two worlds side by side
)

func newWorld(t *testing.T) *world { t.Helper(); return newWorldOn(t, vsrv) }

// newWorldOn is newWorld against a given Vault server.
func newWorldOn(t *testing.T, srv *vaultserver.Server) *world {
	t.Helper()
	userSeqMu.Lock()
	userSeq++
	seq := userSeq
	userSeqMu.Unlock()
	name := fmt.Sprintf("%s-%d", strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())), seq)
	if len(name) > 40 {
		name = fmt.Sprintf("u%d-%s", seq, name[len(name)-30:])
	}
	return newWorldNamed(t, srv, name)
}

// newWorldNamed is a world whose user is name (an OS user's, when what the
// test checks goes by the owner of a file).
func newWorldNamed(t *testing.T, srv *vaultserver.Server, name string) *world {
	t.Helper()
	home := t.TempDir()
	w := &world{t: t, srv: srv, name: name, home: home,
		creds: filepath.Join(home, ".claude", ".credentials.json"),
		state: filepath.Join(home, ".local", "state", "claude-auth-sync")}
	var err error
	w.user, err = srv.Provision(context.Background(), name, filepath.Join(home, ".config", "claude-auth-sync", "vault-token"))
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	w.secrets = append(w.secrets, w.user.Token, srv.RootTokenValue())
	w.fake = fakeanthropic.New()
	w.api = httptest.NewServer(w.fake.Handler())
	t.Cleanup(w.api.Close)
	w.journal = newJournalSink(t)
	fake, vaultToken := w.fake, w.user.Token
	registerSecrets(func() []string { return append(fake.Issued(), vaultToken) })
	w.env = []string{
		"HOME=" + home, "PATH=" + binDir + ":/usr/bin:/bin",
		"VAULT_ADDR=" + srv.Addr, "CLAUDE_AUTH_USER=" + name,
		"ANTHROPIC_BASE_URL=" + w.api.URL, "CLAUDE_AUTH_CLAUDE_BIN=" + filepath.Join(binDir, "claude"),
		"CLAUDE_AUTH_SYSTEM_CONFIG=" + filepath.Join(home, "no-system-config"),
		"CLAUDE_AUTH_JOURNAL_SOCKET=" + w.journal.path,
		"CLAUDE_AUTH_OAUTH_TOKEN_URL=" + w.api.URL + "/v1/oauth/token",
		// Tests wait for an agent's first pass; the spread is the storm test's.
		"CLAUDE_AUTH_CHECK_SPREAD=0",
	}
	t.Cleanup(w.assertNoSecrets)
	return w
}

// reprovision mints the user a new scoped token into the same file, as an
// admin's provision run does; the new token joins the secrets no output may hold.
func (w *world) reprovision(ctx context.Context) {
	w.t.Helper()
	u, err := w.srv.Provision(ctx, w.name, w.user.TokenFile)
	if err != nil {
		w.t.Fatal(err)
	}
	w.mu.Lock()
	w.secrets = append(w.secrets, u.Token)
	w.mu.Unlock()
	registerSecrets(func() []string { return []string{u.Token} })
}

// login writes a fresh login from the fake as the credentials file.
func (w *world) login() fakeanthropic.Login {
	w.t.Helper()
	l := w.fake.Issue()
	w.mu.Lock()
	w.secrets = append(w.secrets, l.AccessToken, l.RefreshToken)
	w.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(w.creds), 0o700); err != nil {
		w.t.Fatal(err)
	}
	if err := os.WriteFile(w.creds, fakeanthropic.CredentialsJSON(l), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return l
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs the real binary as this user.
func (w *world) run(extraEnv []string, args ...string) result {
	w.t.Helper()
	return w.runWith(extraEnv, nil, 2*time.Minute, args...)
}

func (w *world) mustCode(r result, want int, what string) {
	w.t.Helper()
	if r.code != want {
		w.t.Fatalf("%s: exit %d; want %d\nstdout: %s\nstderr: %s", what, r.code, want, r.stdout, r.stderr)
	}
}

// syncLog returns the user's sync.log.
func (w *world) syncLog() string {
	b, _ := os.ReadFile(filepath.Join(w.state, "sync.log"))
	return string(b)
}

// assertNoSecrets: no token ever shows in stdout, stderr, sync.log, the
// journal, state.json, agent.json or the lineage; the tokens are the ones the
// test noted and every token the world's fake ever minted.
func (w *world) assertNoSecrets() {
	journal := w.journal.messages()
	var minted []string
	if w.fake != nil {
		minted = w.fake.Issued()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	texts := append([]string(nil), w.outputs...)
	texts = append(texts, w.syncLog())
	texts = append(texts, journal...)
	for _, name := range []string{"state.json", "lineage", "agent.json"} {
		if b, err := os.ReadFile(filepath.Join(w.state, name)); err == nil {
			texts = append(texts, string(b))
		}
	}
	for _, s := range findSecrets(texts, append(minted, w.secrets...)) {
		w.t.Errorf("a secret (%d chars, prefix %q) appears in output or logs", len(s), s[:min(8, len(s))])
	}
}

// vaultDoc reads the user's document as root (latest version).
func (w *world) vaultDoc() (map[string]any, int) {
	w.t.Helper()
	s, err := w.srv.Root().KVv2("secret").Get(context.Background(), w.user.Path)
	if err != nil {
		return nil, 0
	}
	return s.Data, s.VersionMetadata.Version
}

// localOAuthCompact is the compact JSON of the file's claudeAiOauth.
func (w *world) localOAuthCompact() string {
	w.t.Helper()
	b, err := os.ReadFile(w.creds)
	if err != nil {
		w.t.Fatalf("read credentials: %v", err)
	}
	var f map[string]json.RawMessage
	if err := json.Unmarshal(b, &f); err != nil {
		w.t.Fatalf("credentials not JSON: %v", err)
	}
	var c bytes.Buffer
	if err := json.Compact(&c, f["claudeAiOauth"]); err != nil {
		w.t.Fatal(err)
	}
	return c.String()
}

func refreshTokenOf(t *testing.T, oauthJSON string) string {
	t.Helper()
	var o struct {
		RefreshToken string `json:"refreshToken"`
	}
	if err := json.Unmarshal([]byte(oauthJSON), &o); err != nil {
		t.Fatalf("oauth json: %v", err)
	}
	return o.RefreshToken
}

func rootKV() *vault.KVv2 { return vsrv.Root().KVv2("secret") }

// inProcessEngine is this user's engine inside the test process, for the tests
// that inject its clock (now). The check's child reads ANTHROPIC_BASE_URL and
// HOME from the environment, so they are set for the test.
func (w *world) inProcessEngine(now func() time.Time) *engine.Engine {
	t := w.t
	t.Helper()
	env := map[string]string{}
	for _, kv := range w.env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	// The world's made-up user name stands for this process's own account, as
	// the harness binaries' casfakeusers build makes it for them.
	known := &config.Account{Name: w.name, UID: os.Geteuid(), GID: os.Getegid(), Home: w.home}
	cfg, err := config.Load(func(k string) string { return env[k] }, config.Flags{Account: known})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("ANTHROPIC_BASE_URL", w.api.URL)
	t.Setenv("HOME", w.home)
	eng, err := engine.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), false)
	if err != nil {
		t.Fatal(err)
	}
	eng.SetClock(clock.WithNow(now))
	return eng
}

// runAgentInProcess runs eng's agent until the test ends (then stops it and
// fails the test if it returned an error), returning once it has started.
func (w *world) runAgentInProcess(eng *engine.Engine, opt agent.Options) {
	t := w.t
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan struct{})
	opt.Started = started
	go func() { done <- agent.Run(ctx, eng, opt) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("agent did not start: %v", err)
	}
}
