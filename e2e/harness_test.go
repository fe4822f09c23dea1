package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
	for name, pkg := range map[string]string{"claude-auth-sync": "../cmd/claude-auth-sync", "claude": "./cmd/claude-standin", "racy-claude": "./cmd/racy-claude"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, name), pkg)
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
	return m.Run()
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
}

var userSeq int

func newWorld(t *testing.T) *world { t.Helper(); return newWorldOn(t, vsrv) }

// newWorldOn is newWorld against a given Vault server.
func newWorldOn(t *testing.T, srv *vaultserver.Server) *world {
	t.Helper()
	userSeq++
	name := fmt.Sprintf("%s-%d", strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())), userSeq)
	if len(name) > 40 {
		name = fmt.Sprintf("u%d-%s", userSeq, name[len(name)-30:])
	}
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
	w.env = []string{
		"HOME=" + home, "PATH=" + binDir + ":/usr/bin:/bin",
		"VAULT_ADDR=" + srv.Addr, "CLAUDE_AUTH_USER=" + name,
		"ANTHROPIC_BASE_URL=" + w.api.URL, "CLAUDE_AUTH_CLAUDE_BIN=" + filepath.Join(binDir, "claude"),
		"CLAUDE_AUTH_SYSTEM_CONFIG=" + filepath.Join(home, "no-system-config"),
		"CLAUDE_AUTH_JOURNAL_SOCKET=off",
		"CLAUDE_AUTH_OAUTH_TOKEN_URL=" + w.api.URL + "/v1/oauth/token",
	}
	t.Cleanup(w.assertNoSecrets)
	return w
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "claude-auth-sync"), args...)
	cmd.Env = append(append([]string(nil), w.env...), extraEnv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		w.t.Fatalf("run %v: %v", args, err)
	}
	w.mu.Lock()
	w.outputs = append(w.outputs, out.String(), errb.String())
	w.mu.Unlock()
	return result{code, out.String(), errb.String()}
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

// assertNoSecrets: no token ever shows in stdout, stderr, sync.log or state.json.
func (w *world) assertNoSecrets() {
	w.mu.Lock()
	defer w.mu.Unlock()
	texts := append([]string(nil), w.outputs...)
	texts = append(texts, w.syncLog())
	if b, err := os.ReadFile(filepath.Join(w.state, "state.json")); err == nil {
		texts = append(texts, string(b))
	}
	if b, err := os.ReadFile(filepath.Join(w.state, "lineage")); err == nil {
		texts = append(texts, string(b))
	}
	for _, s := range w.secrets {
		for _, txt := range texts {
			if s != "" && strings.Contains(txt, s) {
				w.t.Errorf("a secret (%d chars, prefix %q) appears in output or logs", len(s), s[:min(8, len(s))])
			}
		}
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
