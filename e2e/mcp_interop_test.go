package e2e_test

// These tests run the REAL Claude Code CLI against e2e/fakemcp (an MCP server
// behind OAuth, over plain http on 127.0.0.1) and pin down what the agent needs
// to become the refresher of the mcpOAuth entries in .credentials.json: the
// entry's key, that Claude uses a seeded token as it is, the shape of its
// proactive refresh request, the lock directory it takes for it, and what it
// writes back. A CLI that cannot be installed fails the test (requireClaude):
// they never skip. No token is printed: requests are identified by the
// position of their token in the fake's Issued() list.

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/claudecli"
	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakemcp"
)

const mcpServerName = "fakesrv"

// mcpUser is one hermetic user of the real CLI with one user-scope HTTP MCP
// server (fakemcp) and a Claude login at the fake Anthropic, which makes the
// session call the server's ping tool.
type mcpUser struct {
	t       *testing.T
	version string
	bin     string
	fa      *fakeanthropic.Server
	mcp     *fakemcp.Server
	home    string
	cfg     string
	env     []string
}

func newMCPUser(t *testing.T, version string, opts fakemcp.Options, headers map[string]string) *mcpUser {
	t.Helper()
	u := &mcpUser{t: t, version: version, bin: requireClaude(t, version), fa: fakeanthropic.New()}
	u.fa.SetMCPTool("ping")
	api := httptest.NewServer(u.fa.Handler())
	t.Cleanup(api.Close)
	proxy, err := claudecli.StartProxy(u.fa.Handler())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	u.mcp = fakemcp.New(opts)
	t.Cleanup(u.mcp.Close)
	u.home = t.TempDir()
	u.cfg = filepath.Join(u.home, ".claude")
	// Without ENABLE_TOOL_SEARCH=false, 2.1.332 defers MCP tools behind its
	// ToolSearch tool and the first turn does not offer mcp__fakesrv__ping.
	u.env = append(claudecli.Env(u.home, u.cfg, api.URL, proxy), "ENABLE_TOOL_SEARCH=false")

	// The user-scope server, added by the CLI itself.
	// (--header takes several values: it goes after the positional arguments.)
	args := []string{"mcp", "add", "--transport", "http", "--scope", "user", mcpServerName, u.mcp.MCPURL()}
	for k, v := range headers {
		args = append(args, "--header", k+": "+v)
	}
	out, err := u.cmd(time.Minute, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("claude %s mcp add: %v\n%s", version, err, out)
	}
	if err := os.WriteFile(u.credsPath(), fakeanthropic.CredentialsJSON(u.fa.Issue()), 0o600); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u *mcpUser) credsPath() string { return filepath.Join(u.cfg, ".credentials.json") }

func (u *mcpUser) cmd(timeout time.Duration, args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	u.t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, u.bin, args...)
	cmd.Env, cmd.Dir, cmd.WaitDelay = u.env, u.home, 5*time.Second
	return cmd
}

// seed writes an mcpOAuth entry for a fresh login whose access token has
// lifetime left, under fakemcp.EntryKey; it returns the login and the key.
func (u *mcpUser) seed(lifetime time.Duration, headers map[string]string) (fakemcp.Login, string) {
	u.t.Helper()
	l := u.mcp.IssueFor(lifetime)
	key, err := fakemcp.SeedCredentials(u.credsPath(), u.mcp.Entry(mcpServerName, l))
	if err != nil {
		u.t.Fatal(err)
	}
	if headers != nil { // SeedCredentials keys without headers: move the entry
		want := fakemcp.EntryKey(mcpServerName, u.mcp.MCPURL(), headers)
		b, _ := os.ReadFile(u.credsPath())
		var doc map[string]map[string]json.RawMessage
		if err := json.Unmarshal(b, &doc); err != nil {
			u.t.Fatal(err)
		}
		doc["mcpOAuth"][want] = doc["mcpOAuth"][key]
		delete(doc["mcpOAuth"], key)
		b, _ = json.Marshal(doc)
		if err := os.WriteFile(u.credsPath(), b, 0o600); err != nil {
			u.t.Fatal(err)
		}
		key = want
	}
	return l, key
}

type mcpRun struct {
	stdout, stderr string
	err            error
	took           time.Duration
}

// ask runs `claude -p` with a prompt the fake answers with a ping tool call.
func (u *mcpUser) ask() mcpRun {
	cmd := u.cmd(2*time.Minute, "-p", "Call the ping tool.", "--model", "haiku", "--max-turns", "3",
		"--no-session-persistence", "--allowedTools", "mcp__"+mcpServerName+"__ping")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	return mcpRun{stdout: out.String(), stderr: errb.String(), err: err, took: time.Since(start)}
}

// summary describes the fake's traffic without tokens.
func (u *mcpUser) summary() string {
	var b strings.Builder
	for _, r := range u.mcp.MCPRequests() {
		b.WriteString("\n  mcp " + r.At.Format("15:04:05.000") + " " + r.HTTPMethod + " " + r.Method +
			" bearer#" + strconv.Itoa(r.BearerIndex) + " -> " + strconv.Itoa(r.Status))
	}
	for _, r := range u.mcp.TokenRequests() {
		b.WriteString("\n  token " + r.At.Format("15:04:05.000") + " fields=" + strings.Join(r.Fields, ",") + " auth=" + r.Auth +
			" ua=" + r.UserAgent + " rt#" + strconv.Itoa(r.RefreshTokenIndex) + " -> " + strconv.Itoa(r.Status) + " " + r.Error)
	}
	return b.String()
}

// mustPONG fails unless the run printed PONG (the tool's answer).
func (u *mcpUser) mustPONG(r mcpRun) {
	u.t.Helper()
	if r.err != nil || r.stdout != "PONG\n" {
		u.t.Fatalf("claude %s -p: err=%v after %v\nstdout=%q\nstderr=%q\nfake MCP traffic:%s", u.version, r.err,
			r.took.Round(time.Millisecond), r.stdout, r.stderr, u.summary())
	}
}

// bearers lists the token indexes the MCP endpoint saw (all requests).
func (u *mcpUser) bearers() []int {
	var out []int
	for _, r := range u.mcp.MCPRequests() {
		if !slices.Contains(out, r.BearerIndex) {
			out = append(out, r.BearerIndex)
		}
	}
	return out
}

// mcpKeys lists the mcpOAuth keys in the credentials file.
func (u *mcpUser) mcpKeys() []string {
	u.t.Helper()
	b, err := os.ReadFile(u.credsPath())
	if err != nil {
		u.t.Fatal(err)
	}
	var doc struct {
		MCP map[string]json.RawMessage `json:"mcpOAuth"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		u.t.Fatal(err)
	}
	var keys []string
	for k := range doc.MCP {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// dirWatch records the names of directories created in a directory.
type mcpDirWatch struct {
	mu      sync.Mutex
	created []string
	stop    chan struct{}
	done    chan struct{}
}

func watchMCPDir(t *testing.T, dir string) *mcpDirWatch {
	t.Helper()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(dir); err != nil {
		t.Fatal(err)
	}
	dw := &mcpDirWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(dw.done)
		defer w.Close()
		for {
			select {
			case <-dw.stop:
				return
			case ev := <-w.Events:
				if ev.Has(fsnotify.Create) {
					if st, err := os.Stat(ev.Name); err == nil && st.IsDir() {
						dw.mu.Lock()
						dw.created = append(dw.created, filepath.Base(ev.Name))
						dw.mu.Unlock()
					}
				}
			case <-w.Errors:
			}
		}
	}()
	t.Cleanup(dw.close)
	return dw
}

func (dw *mcpDirWatch) close() {
	select {
	case <-dw.stop:
	default:
		close(dw.stop)
	}
	<-dw.done
}

func (dw *mcpDirWatch) dirs() []string {
	dw.mu.Lock()
	defer dw.mu.Unlock()
	return append([]string(nil), dw.created...)
}

// mcpLockName is the proactive-refresh lock directory for an mcpOAuth key:
// "mcp-refresh-<key, every non-alphanumeric as _>.lock" plus proper-lockfile's
// own ".lock".
func mcpLockName(key string) string {
	return "mcp-refresh-" + regexp.MustCompile(`[^a-zA-Z0-9]`).ReplaceAllString(key, "_") + ".lock.lock"
}

// TestMCPUserConfig: `claude mcp add --scope user` writes the server to
// mcpServers in $CLAUDE_CONFIG_DIR/.claude.json as {"type":"http","url":...}.
func TestMCPUserConfig(t *testing.T) {
	for _, v := range claudeVersions {
		t.Run(v, func(t *testing.T) {
			u := newMCPUser(t, v, fakemcp.Options{}, nil)
			b, err := os.ReadFile(filepath.Join(u.cfg, ".claude.json"))
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				MCPServers map[string]map[string]any `json:"mcpServers"`
			}
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatal(err)
			}
			got := doc.MCPServers[mcpServerName]
			if got["type"] != "http" || got["url"] != u.mcp.MCPURL() {
				t.Errorf("user-scope server in $CLAUDE_CONFIG_DIR/.claude.json: %v; want type http, url %s", got, u.mcp.MCPURL())
			}
		})
	}
}

// TestMCPSeededToken: an entry seeded under EntryKey with a token far from
// expiry is used as it is (the key matches Claude's), over plain http to
// 127.0.0.1, with no refresh and no write to the file.
func TestMCPSeededToken(t *testing.T) {
	for _, v := range claudeVersions {
		t.Run(v, func(t *testing.T) {
			for _, tc := range []struct {
				name    string
				headers map[string]string
			}{{"no headers", nil}, {"one header", map[string]string{"X-Fake-Tenant": "t1"}}} {
				t.Run(tc.name, func(t *testing.T) {
					u := newMCPUser(t, v, fakemcp.Options{}, tc.headers)
					l, key := u.seed(time.Hour, tc.headers)
					before, _ := os.ReadFile(u.credsPath())
					u.mustPONG(u.ask())
					at := u.mcp.IndexOf(l.AccessToken)
					if got := u.bearers(); !slices.Equal(got, []int{at}) {
						t.Errorf("bearers seen by the MCP endpoint: %v; want only the seeded access token #%d (the key %s did not match?)%s", got, at, key, u.summary())
					}
					if c := u.mcp.Counters(); c.ToolCalls != 1 || c.Refreshes != 0 || len(u.mcp.TokenRequests()) != 0 {
						t.Errorf("counters %+v; want one tool call and no token request", c)
					}
					if after, _ := os.ReadFile(u.credsPath()); !bytes.Equal(before, after) {
						t.Errorf("the credentials file changed although nothing was refreshed")
					}
					if keys := u.mcpKeys(); !slices.Contains(keys, key) || len(keys) != 2 {
						t.Errorf("mcpOAuth keys %v; want the seeded %s (and the fixture's example entry)", keys, key)
					}
				})
			}
		})
	}
}

// TestMCPProactiveRefresh: with 200 s left (under Claude's 300 s), Claude
// refreshes before connecting, under mcp-refresh-<key>.lock.lock in the config
// dir, with a form-encoded refresh_token grant naming the resource, and saves
// the new tokens under the same key (mode 0600), other fields unchanged.
func TestMCPProactiveRefresh(t *testing.T) {
	for _, v := range claudeVersions {
		t.Run(v, func(t *testing.T) {
			for _, method := range []fakemcp.AuthMethod{fakemcp.AuthNone, fakemcp.AuthPost, fakemcp.AuthBasic} {
				t.Run(string(method), func(t *testing.T) {
					u := newMCPUser(t, v, fakemcp.Options{AuthMethod: method}, nil)
					l, key := u.seed(200*time.Second, nil)
					before, _, err := fakemcp.ReadEntry(u.credsPath(), key)
					if err != nil {
						t.Fatal(err)
					}
					dw := watchMCPDir(t, u.cfg)
					start := time.Now()
					u.mustPONG(u.ask())
					dw.close()

					reqs := u.mcp.TokenRequests()
					if len(reqs) != 1 {
						t.Fatalf("%d token requests; want 1:%s", len(reqs), u.summary())
					}
					r := reqs[0]
					wantFields := []string{"grant_type", "refresh_token", "resource"}
					if method != fakemcp.AuthBasic {
						wantFields = append(wantFields, "client_id")
					}
					if method == fakemcp.AuthPost {
						wantFields = append(wantFields, "client_secret")
					}
					slices.Sort(wantFields)
					if !slices.Equal(r.Fields, wantFields) || r.GrantType != "refresh_token" || r.HasScope {
						t.Errorf("form fields %v (grant %q, scope present %v); want %v, no scope", r.Fields, r.GrantType, r.HasScope, wantFields)
					}
					if r.ContentType != "application/x-www-form-urlencoded" || r.Accept != "application/json" {
						t.Errorf("Content-Type %q Accept %q", r.ContentType, r.Accept)
					}
					if r.Auth != string(method) || r.Status != 200 {
						t.Errorf("client authentication %s answered %d %s; want %s accepted", r.Auth, r.Status, r.Error, method)
					}
					if r.Resource != u.mcp.MCPURL() {
						t.Errorf("resource %q; want the server URL %q", r.Resource, u.mcp.MCPURL())
					}
					if r.RefreshTokenIndex != u.mcp.IndexOf(l.RefreshToken) {
						t.Errorf("refresh token presented #%d; want the seeded one", r.RefreshTokenIndex)
					}
					if !strings.HasPrefix(r.UserAgent, "Bun/") || fakemcp.IsAgent(r.UserAgent) {
						t.Errorf("User-Agent %q; want Bun's default (Bun/x.y.z)", r.UserAgent)
					}
					if c := u.mcp.Counters(); c.RefreshesByClaude != 1 || c.InvalidGrant != 0 || c.WrongResource != 0 {
						t.Errorf("counters %+v", c)
					}

					lock := mcpLockName(key)
					if !slices.Contains(dw.dirs(), lock) {
						t.Errorf("directories created in the config dir: %v; want %s", dw.dirs(), lock)
					}
					if _, err := os.Stat(filepath.Join(u.cfg, lock)); !os.IsNotExist(err) {
						t.Errorf("%s still there after the run (%v)", lock, err)
					}

					after, ok, err := fakemcp.ReadEntry(u.credsPath(), key)
					if err != nil || !ok {
						t.Fatalf("entry %s after the refresh: ok=%v err=%v (keys %v)", key, ok, err, u.mcpKeys())
					}
					issued := u.mcp.Issued()
					newAT, newRT := u.mcp.IndexOf(after.AccessToken), u.mcp.IndexOf(after.RefreshToken)
					if newAT != len(issued)-2 || newRT != len(issued)-1 {
						t.Errorf("saved tokens #%d/#%d; want the refresh's #%d/#%d", newAT, newRT, len(issued)-2, len(issued)-1)
					}
					wantExp := start.Add(u.mcp.Options().ExpiresIn)
					if got := time.UnixMilli(after.ExpiresAt); got.Before(wantExp.Add(-time.Second)) || got.After(time.Now().Add(u.mcp.Options().ExpiresIn)) {
						t.Errorf("expiresAt %v; want now + expires_in (%v)", got, u.mcp.Options().ExpiresIn)
					}
					b2, a2 := before, after
					b2.AccessToken, b2.RefreshToken, b2.ExpiresAt = "", "", 0
					a2.AccessToken, a2.RefreshToken, a2.ExpiresAt = "", "", 0
					if bj, aj := mcpJSON(b2), mcpJSON(a2); bj != aj {
						t.Errorf("entry fields besides the tokens changed:\nbefore %s\nafter  %s", bj, aj)
					}
					if st, err := os.Stat(u.credsPath()); err != nil || st.Mode().Perm() != 0o600 {
						t.Errorf("credentials file mode after Claude's write: %v %v; want 0600", st.Mode(), err)
					}
					if got := u.bearers(); !slices.Equal(got, []int{newAT}) {
						t.Errorf("bearers seen by the MCP endpoint %v; want only the refreshed #%d", got, newAT)
					}
				})
			}
		})
	}
}

func mcpJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestMCPConcurrentRefresh: three sessions started together with the token
// 200 s from expiry refresh once between them (the per-server lock holds): no
// invalid_grant, no reuse, and no MCP request with a stale token. (2.1.332's
// `-p` may start its turn before a session waiting on the lock has connected,
// so not every session necessarily calls the tool.)
func TestMCPConcurrentRefresh(t *testing.T) {
	const sessions = 3
	for _, v := range claudeVersions {
		t.Run(v, func(t *testing.T) {
			u := newMCPUser(t, v, fakemcp.Options{}, nil)
			_, key := u.seed(200*time.Second, nil)
			var wg sync.WaitGroup
			runs := make([]mcpRun, sessions)
			for i := range runs {
				wg.Add(1)
				go func() { defer wg.Done(); runs[i] = u.ask() }()
			}
			wg.Wait()
			for i, r := range runs {
				if r.err != nil || (r.stdout != "PONG\n" && r.stdout != "AUTH_OK\n") {
					t.Errorf("session %d: err=%v stdout=%q stderr=%q", i, r.err, r.stdout, r.stderr)
				}
			}
			c := u.mcp.Counters()
			if c.Refreshes != 1 || c.InvalidGrant != 0 || c.ReuseDetected != 0 || c.FailedToolCalls != 0 {
				t.Errorf("counters %+v; want exactly one refresh and no failure%s", c, u.summary())
			}
			after, ok, err := fakemcp.ReadEntry(u.credsPath(), key)
			if err != nil || !ok {
				t.Fatalf("entry after: ok=%v err=%v", ok, err)
			}
			if got, want := u.bearers(), u.mcp.IndexOf(after.AccessToken); len(got) > 1 || (len(got) == 1 && got[0] != want) {
				t.Errorf("bearers %v; want only the refreshed #%d", got, want)
			}
			t.Logf("%s: %d sessions, %d refresh, %d tool calls", v, sessions, c.Refreshes, c.ToolCalls)
		})
	}
}
