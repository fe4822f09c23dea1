package e2e_test

// These tests run the REAL Claude Code CLI (from the npm registry, cached by
// claudecli.Install) against the fake Anthropic: inference goes to the fake over
// plain http (ANTHROPIC_BASE_URL), the OAuth refresh to platform.claude.com is
// intercepted by claudecli's CONNECT proxy. They pin down the behaviour the
// agent relies on: request shapes, refresh, Claude's lock directories, how long
// Claude waits on a held lock, and the stream-json session format. A CLI that
// cannot be installed fails the test: it never skips.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/claudecli"
	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
)

const (
	claudeCurrent = "2.1.332" // native (Bun); both lock styles and the storage-write lock
	claudeLegacy  = "2.1.124" // native (Bun); the legacy <realpath>.lock only
	claudeCliJS   = "2.1.80"  // the older cli.js shape, run by the machine's node
	authPrompt    = "Reply with exactly AUTH_OK and nothing else."
	oauthClientID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
)

var claudeVersions = []string{claudeCurrent, claudeLegacy}

// claudeCheckArgs is the inference check, exactly as the agent runs it.
var claudeCheckArgs = []string{"-p", authPrompt, "--model", "haiku", "--max-turns", "1",
	"--no-session-persistence", "--tools", "", "--disable-slash-commands", "--setting-sources", ""}

// requireClaude installs (or finds in the cache) a pinned CLI. Failure is fatal,
// in CI and out of it.
func requireClaude(t *testing.T, version string) string {
	t.Helper()
	bin, err := claudecli.Install(version)
	if err != nil {
		t.Fatalf("FAIL: cannot install the real Claude Code %s from the npm registry (these tests never skip): %v", version, err)
	}
	return bin
}

// seen is one request the fake received, directly or through the proxy.
type seen struct {
	at      time.Time // arrived
	end     time.Time // answered
	method  string
	host    string
	uri     string
	proxied bool // arrived through the CONNECT proxy (TLS)
	header  http.Header
	body    []byte
	status  int
}

// recorder wraps the fake's handler and keeps every request.
type recorder struct {
	next http.Handler
	mu   sync.Mutex
	reqs []seen
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	r.Body = io.NopCloser(bytes.NewReader(body))
	s := seen{at: time.Now(), method: r.Method, host: r.Host, uri: r.URL.RequestURI(), proxied: r.TLS != nil,
		header: r.Header.Clone(), body: body}
	sw := &statusWriter{ResponseWriter: w, status: 200}
	rc.next.ServeHTTP(sw, r)
	s.status, s.end = sw.status, time.Now()
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, s)
	rc.mu.Unlock()
}

func (rc *recorder) all() []seen {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]seen(nil), rc.reqs...)
}

func (rc *recorder) path(p string) []seen {
	var out []seen
	for _, s := range rc.all() {
		if strings.SplitN(s.uri, "?", 2)[0] == p {
			out = append(out, s)
		}
	}
	return out
}

func (rc *recorder) summary() string {
	var b strings.Builder
	for _, s := range rc.all() {
		via := "direct"
		if s.proxied {
			via = "proxy"
		}
		b.WriteString("\n  " + s.at.Format("15:04:05.000") + " " + s.method + " " + s.host + s.uri + " (" + via + ") -> " + http.StatusText(s.status))
	}
	return b.String()
}

// claudeUser is one hermetic user of the real CLI.
type claudeUser struct {
	t       *testing.T
	version string
	bin     string
	fake    *fakeanthropic.Server
	rec     *recorder
	api     *httptest.Server
	proxy   *claudecli.Proxy
	home    string
	cfg     string
	legacy  string // <realpath(cfg)>.lock
	env     []string
}

func newClaudeUser(t *testing.T, version string) *claudeUser {
	t.Helper()
	u := &claudeUser{t: t, version: version, bin: requireClaude(t, version), fake: fakeanthropic.New()}
	u.rec = &recorder{next: u.fake.Handler()}
	u.api = httptest.NewServer(u.rec)
	t.Cleanup(u.api.Close)
	var err error
	if u.proxy, err = claudecli.StartProxy(u.rec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = u.proxy.Close() })
	u.home = t.TempDir()
	u.cfg = filepath.Join(u.home, ".claude")
	u.env = claudecli.Env(u.home, u.cfg, u.api.URL, u.proxy)
	real, err := filepath.EvalSymlinks(u.cfg)
	if err != nil {
		t.Fatal(err)
	}
	u.legacy = real + ".lock"
	return u
}

func (u *claudeUser) credsPath() string { return filepath.Join(u.cfg, ".credentials.json") }

// login writes a fresh login whose local expiresAt is expiresAt.
func (u *claudeUser) login(expiresAt time.Time) fakeanthropic.Login {
	u.t.Helper()
	l := u.fake.Issue()
	l.ExpiresAt = expiresAt
	u.writeCreds(l)
	return l
}

func (u *claudeUser) writeCreds(l fakeanthropic.Login) {
	u.t.Helper()
	if err := os.WriteFile(u.credsPath(), fakeanthropic.CredentialsJSON(l), 0o600); err != nil {
		u.t.Fatal(err)
	}
}

type fileOAuth struct {
	ClaudeAiOauth struct {
		AccessToken  string `json:"accessToken"`
		RefreshToken string `json:"refreshToken"`
		ExpiresAt    int64  `json:"expiresAt"`
	} `json:"claudeAiOauth"`
	McpOAuth map[string]any `json:"mcpOAuth"`
}

func (u *claudeUser) creds() fileOAuth {
	u.t.Helper()
	var f fileOAuth
	b, err := os.ReadFile(u.credsPath())
	if err != nil {
		u.t.Fatal(err)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		u.t.Fatalf("credentials file: %v\n%s", err, b)
	}
	return f
}

type cliRun struct {
	stdout, stderr string
	err            error
	took           time.Duration
}

func (u *claudeUser) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, u.bin, args...)
	cmd.Env = u.env
	cmd.Dir = u.home
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func (u *claudeUser) run(timeout time.Duration, args ...string) cliRun {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := u.command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	return cliRun{stdout: out.String(), stderr: errb.String(), err: err, took: time.Since(start)}
}

// check runs the inference check and fails unless it printed exactly AUTH_OK.
func (u *claudeUser) check(timeout time.Duration) cliRun {
	u.t.Helper()
	r := u.run(timeout, claudeCheckArgs...)
	if r.err != nil || r.stdout != "AUTH_OK\n" {
		u.t.Fatalf("claude %s check: err=%v after %v\nstdout=%q\nstderr=%q\nrequests:%s", u.version, r.err, r.took.Round(time.Millisecond), r.stdout, r.stderr, u.rec.summary())
	}
	return r
}

// lockEvent is a create or remove of one of Claude's lock paths, or a change of
// its mtime while it exists.
type lockEvent struct {
	at    time.Time
	name  string // base name: .oauth_refresh.lock, .claude.lock, .storage-write.lock, ...
	op    string // create, remove, touch
	mtime time.Time
}

// lockWatch records what happens to Claude's lock paths: inotify for creation
// and removal (the storage-write lock lives for milliseconds), and a 50 ms poll
// of mtimes for the touches that keep a held lock fresh.
type lockWatch struct {
	mu     sync.Mutex
	events []lockEvent
	stop   chan struct{}
	done   chan struct{}
}

func (u *claudeUser) watchLocks() *lockWatch {
	u.t.Helper()
	paths := map[string]bool{
		filepath.Join(u.cfg, ".oauth_refresh.lock"):       true,
		filepath.Join(u.cfg, ".oauth_refresh.lock.owner"): true,
		filepath.Join(u.cfg, ".storage-write.lock"):       true,
		u.legacy: true,
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		u.t.Fatal(err)
	}
	for _, d := range []string{u.cfg, filepath.Dir(u.legacy)} {
		if err := w.Add(d); err != nil {
			u.t.Fatal(err)
		}
	}
	lw := &lockWatch{stop: make(chan struct{}), done: make(chan struct{})}
	add := func(e lockEvent) {
		lw.mu.Lock()
		lw.events = append(lw.events, e)
		lw.mu.Unlock()
	}
	go func() {
		defer close(lw.done)
		defer w.Close()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		mt := map[string]time.Time{}
		for {
			select {
			case <-lw.stop:
				return
			case ev := <-w.Events:
				if !paths[ev.Name] {
					continue
				}
				switch {
				case ev.Has(fsnotify.Create):
					e := lockEvent{at: time.Now(), name: filepath.Base(ev.Name), op: "create"}
					if st, err := os.Stat(ev.Name); err == nil {
						e.mtime = st.ModTime()
						mt[ev.Name] = e.mtime
					}
					add(e)
				case ev.Has(fsnotify.Remove), ev.Has(fsnotify.Rename):
					delete(mt, ev.Name)
					add(lockEvent{at: time.Now(), name: filepath.Base(ev.Name), op: "remove"})
				}
			case <-w.Errors:
			case <-tick.C:
				for p := range paths {
					st, err := os.Stat(p)
					if err != nil {
						continue
					}
					if old, ok := mt[p]; ok && !old.Equal(st.ModTime()) {
						add(lockEvent{at: time.Now(), name: filepath.Base(p), op: "touch", mtime: st.ModTime()})
					}
					mt[p] = st.ModTime()
				}
			}
		}
	}()
	u.t.Cleanup(lw.close)
	return lw
}

func (lw *lockWatch) close() {
	select {
	case <-lw.stop:
	default:
		close(lw.stop)
	}
	<-lw.done
}

func (lw *lockWatch) all() []lockEvent {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return append([]lockEvent(nil), lw.events...)
}

func (lw *lockWatch) find(name, op string) []lockEvent {
	var out []lockEvent
	for _, e := range lw.all() {
		if e.name == name && e.op == op {
			out = append(out, e)
		}
	}
	return out
}

func (lw *lockWatch) String() string {
	var b strings.Builder
	for _, e := range lw.all() {
		b.WriteString("\n  " + e.at.Format("15:04:05.000") + " " + e.op + " " + e.name)
		if !e.mtime.IsZero() {
			b.WriteString(" (mtime " + e.mtime.Format("15:04:05.000") + ")")
		}
	}
	return b.String()
}

// holdLocks makes the lock directories as another refresher would and keeps
// their mtime fresh every second until the returned release is called.
func holdLocks(t *testing.T, dirs ...string) (release func()) {
	t.Helper()
	return holdLocksAs(t, time.Second, 0, dirs...)
}

// holdLocksAs makes the lock directories with an mtime age in the past and,
// when touch > 0, sets their mtime to now every touch; release removes them.
func holdLocksAs(t *testing.T, touch, age time.Duration, dirs ...string) (release func()) {
	t.Helper()
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("hold %s: %v", d, err)
		}
		if age > 0 {
			then := time.Now().Add(-age)
			if err := os.Chtimes(d, then, then); err != nil {
				t.Fatal(err)
			}
		}
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		if touch <= 0 {
			<-stop
			return
		}
		tick := time.NewTicker(touch)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				now := time.Now()
				for _, d := range dirs {
					if err := os.Chtimes(d, now, now); err != nil {
						t.Errorf("touch %s: %v (did Claude remove a held lock?)", d, err)
					}
				}
			}
		}
	}()
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(stop)
			<-done
			for _, d := range dirs {
				if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
					t.Errorf("release %s: %v", d, err)
				}
			}
		})
	}
	t.Cleanup(release)
	return release
}

// TestClaudeCLIVersion: every pinned build answers --version offline (the proxy
// variables point at a closed port, so any network attempt would fail), in both
// package shapes.
func TestClaudeCLIVersion(t *testing.T) {
	for _, v := range []string{claudeCurrent, claudeLegacy, claudeCliJS} {
		t.Run(v, func(t *testing.T) {
			bin := requireClaude(t, v)
			target, err := filepath.EvalSymlinks(bin)
			if err != nil {
				t.Fatal(err)
			}
			head := make([]byte, 4)
			if f, err := os.Open(target); err == nil {
				_, _ = io.ReadFull(f, head)
				f.Close()
			}
			native := string(head) == "\x7fELF"
			if want := v != claudeCliJS; native != want {
				t.Errorf("%s resolves to %s: native=%v, want %v", bin, target, native, want)
			}
			home := t.TempDir()
			env := append(claudecli.Env(home, "", "http://127.0.0.1:1", nil),
				"HTTPS_PROXY=http://127.0.0.1:1", "https_proxy=http://127.0.0.1:1", "HTTP_PROXY=http://127.0.0.1:1")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "--version")
			cmd.Env, cmd.Dir = env, home
			out, err := cmd.CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != v+" (Claude Code)" {
				t.Fatalf("claude --version: err=%v output=%q", err, out)
			}
		})
	}
}

// TestClaudeCLIInference: the exact inference check prints AUTH_OK against the
// fake with a valid login, and sends what we expect.
func TestClaudeCLIInference(t *testing.T) {
	for _, v := range claudeVersions {
		t.Run(v, func(t *testing.T) {
			u := newClaudeUser(t, v)
			l := u.login(time.Now().Add(8 * time.Hour))
			r := u.check(time.Minute)
			t.Logf("%s: AUTH_OK in %v; requests:%s", v, r.took.Round(time.Millisecond), u.rec.summary())

			if c := u.fake.Counters(); c.Refreshes != 0 || c.Messages != 1 || c.OK != 1 {
				t.Errorf("counters %+v, want one OK message and no refresh", c)
			}
			msgs := u.rec.path("/v1/messages")
			if len(msgs) != 1 {
				t.Fatalf("want 1 POST /v1/messages, got %d:%s", len(msgs), u.rec.summary())
			}
			m := msgs[0]
			if m.proxied || m.method != http.MethodPost || m.uri != "/v1/messages?beta=true" {
				t.Errorf("messages request %s %s proxied=%v, want a direct POST /v1/messages?beta=true", m.method, m.uri, m.proxied)
			}
			if got := m.header.Get("Authorization"); got != "Bearer "+l.AccessToken {
				t.Errorf("Authorization %q, want the file's access token", got)
			}
			if m.header.Get("X-Api-Key") != "" {
				t.Errorf("an x-api-key was sent with an OAuth login")
			}
			if got := m.header.Get("Anthropic-Version"); got != "2023-06-01" {
				t.Errorf("anthropic-version %q", got)
			}
			if beta := m.header.Get("Anthropic-Beta"); !strings.Contains(beta, "oauth-2025-04-20") {
				t.Errorf("anthropic-beta %q lacks oauth-2025-04-20", beta)
			}
			if ua := m.header.Get("User-Agent"); !strings.HasPrefix(ua, "claude-cli/"+v) {
				t.Errorf("User-Agent %q", ua)
			}
			var body struct {
				Model    string `json:"model"`
				Stream   bool   `json:"stream"`
				Messages []any  `json:"messages"`
			}
			if err := json.Unmarshal(m.body, &body); err != nil {
				t.Fatalf("messages body: %v", err)
			}
			if !body.Stream || body.Model == "" || len(body.Messages) == 0 {
				t.Errorf("messages body: model=%q stream=%v messages=%d, want a streaming request", body.Model, body.Stream, len(body.Messages))
			}
			t.Logf("%s: POST %s stream=%v model=%s anthropic-beta=%s user-agent=%s", v, m.uri, body.Stream, body.Model,
				m.header.Get("Anthropic-Beta"), m.header.Get("User-Agent"))
			if len(u.rec.path("/v1/oauth/token")) != 0 {
				t.Errorf("a valid login was refreshed")
			}
			for _, s := range u.rec.all() {
				if s.proxied && s.host != "api.anthropic.com" {
					t.Errorf("unexpected proxied request to %s%s", s.host, s.uri)
				}
			}
		})
	}
}

// TestClaudeCLIRefresh: a login within five minutes of expiresAt (or past it) is
// refreshed through the proxy against the fake token endpoint, written back,
// and used; and the locks Claude takes meanwhile are the ones the facts name.
func TestClaudeCLIRefresh(t *testing.T) {
	for _, v := range claudeVersions {
		t.Run(v, func(t *testing.T) {
			t.Run("expiring", func(t *testing.T) {
				u := newClaudeUser(t, v)
				old := u.login(time.Now().Add(2 * time.Minute))
				// Hold the token POST long enough to see the locks held and touched.
				const delay = 7 * time.Second
				u.fake.SetTokenDelay(delay)
				lw := u.watchLocks()
				r := u.check(time.Minute)
				lw.close()
				u.assertRefreshed(old)
				t.Logf("%s: refresh+check took %v; lock events:%s\nrequests:%s", v, r.took.Round(time.Millisecond), lw, u.rec.summary())

				tok := u.rec.path("/v1/oauth/token")[0]
				post, answered := tok.at, tok.end
				held := func(name string) {
					t.Helper()
					cr, rm := lw.find(name, "create"), lw.find(name, "remove")
					if len(cr) == 0 || len(rm) == 0 {
						t.Errorf("%s: %s not created and removed around the refresh:%s", v, name, lw)
						return
					}
					if !cr[0].at.Before(post) || rm[len(rm)-1].at.Before(answered) {
						t.Errorf("%s: %s held %s..%s, not across the token POST %s..%s", v, name,
							cr[0].at.Format("15:04:05.000"), rm[len(rm)-1].at.Format("15:04:05.000"),
							post.Format("15:04:05.000"), answered.Format("15:04:05.000"))
					}
					if len(lw.find(name, "touch")) == 0 {
						t.Errorf("%s: %s was not touched during a %v refresh", v, name, delay)
					}
				}
				legacy := filepath.Base(u.legacy)
				held(legacy)
				switch v {
				case claudeCurrent:
					held(".oauth_refresh.lock")
					if len(lw.find(".storage-write.lock", "create")) == 0 {
						t.Errorf("%s: no .storage-write.lock around the credentials write:%s", v, lw)
					}
					if len(lw.find(".oauth_refresh.lock.owner", "create")) == 0 {
						t.Errorf("%s: no .oauth_refresh.lock.owner record:%s", v, lw)
					}
				case claudeLegacy:
					for _, n := range []string{".oauth_refresh.lock", ".storage-write.lock", ".oauth_refresh.lock.owner"} {
						if len(lw.find(n, "create")) != 0 {
							t.Errorf("%s: created %s, which the legacy build should not know:%s", v, n, lw)
						}
					}
				}
				for _, p := range []string{u.legacy, filepath.Join(u.cfg, ".oauth_refresh.lock"), filepath.Join(u.cfg, ".storage-write.lock"), filepath.Join(u.cfg, ".oauth_refresh.lock.owner")} {
					if _, err := os.Lstat(p); err == nil {
						t.Errorf("%s: %s left behind", v, p)
					}
				}

				// The next run uses the refreshed token from the file, without refreshing again.
				u.fake.SetTokenDelay(0)
				u.check(time.Minute)
				if c := u.fake.Counters(); c.Refreshes != 1 {
					t.Errorf("second run refreshed again: %+v", c)
				}
				msgs := u.rec.path("/v1/messages")
				if got, want := msgs[len(msgs)-1].header.Get("Authorization"), "Bearer "+u.creds().ClaudeAiOauth.AccessToken; got != want {
					t.Errorf("second run sent %q, want the refreshed token", got)
				}
			})
			t.Run("expired", func(t *testing.T) {
				u := newClaudeUser(t, v)
				old := u.login(time.Now().Add(-time.Minute))
				u.check(time.Minute)
				u.assertRefreshed(old)
			})
		})
	}
}

// assertRefreshed: exactly one refresh of old through the proxy to
// platform.claude.com, its result in the file, and the check used it.
func (u *claudeUser) assertRefreshed(old fakeanthropic.Login) {
	t := u.t
	t.Helper()
	if c := u.fake.Counters(); c.Refreshes != 1 || c.InvalidGrant != 0 {
		t.Fatalf("counters %+v, want exactly one refresh:%s", c, u.rec.summary())
	}
	toks := u.rec.path("/v1/oauth/token")
	if len(toks) != 1 {
		t.Fatalf("want one token request, got %d", len(toks))
	}
	tok := toks[0]
	if !tok.proxied || tok.host != "platform.claude.com" || tok.method != http.MethodPost {
		t.Errorf("token request %s %s%s proxied=%v, want POST https://platform.claude.com/v1/oauth/token", tok.method, tok.host, tok.uri, tok.proxied)
	}
	var body map[string]string
	if err := json.Unmarshal(tok.body, &body); err != nil {
		t.Fatalf("token body %q: %v", tok.body, err)
	}
	if body["grant_type"] != "refresh_token" || body["refresh_token"] != old.RefreshToken || body["client_id"] != oauthClientID || body["scope"] == "" {
		t.Errorf("token body %v", redactBody(body))
	}
	t.Logf("%s token request: content-type=%s user-agent=%s body keys=%v scope=%q", u.version, tok.header.Get("Content-Type"),
		tok.header.Get("User-Agent"), slices.Sorted(maps.Keys(body)), body["scope"])
	issued := u.fake.Issued()
	newAccess, newRefresh := issued[len(issued)-2], issued[len(issued)-1]
	f := u.creds()
	if f.ClaudeAiOauth.RefreshToken != newRefresh || f.ClaudeAiOauth.AccessToken != newAccess {
		t.Errorf("credentials file does not hold the refreshed pair")
	}
	if exp := time.UnixMilli(f.ClaudeAiOauth.ExpiresAt); time.Until(exp) < 7*time.Hour {
		t.Errorf("expiresAt %v, want ~8 h ahead (expires_in)", exp)
	}
	if _, ok := f.McpOAuth["example|0123abcd"]; !ok {
		t.Errorf("the refresh lost the file's mcpOAuth entry")
	}
	msgs := u.rec.path("/v1/messages")
	if len(msgs) == 0 || msgs[len(msgs)-1].header.Get("Authorization") != "Bearer "+newAccess {
		t.Errorf("the check did not use the refreshed access token")
	}
	if st, err := os.Stat(u.credsPath()); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("credentials file mode after refresh: %v %v", st.Mode(), err)
	}
}

func redactBody(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if k == "refresh_token" && len(v) > 20 {
			v = v[:20] + "…"
		}
		out[k] = v
	}
	return out
}

// TestClaudeCLILockWait: while another refresher holds Claude's lock
// directories (fresh mtime), a CLI whose token needs a refresh does not call the
// token endpoint; it refreshes once they are released, and gives up waiting
// (then goes on with the token it has) if they never are.
func TestClaudeCLILockWait(t *testing.T) {
	for _, v := range claudeVersions {
		t.Run(v, func(t *testing.T) {
			t.Run("released", func(t *testing.T) {
				u := newClaudeUser(t, v)
				old := u.login(time.Now().Add(-time.Minute))
				release := holdLocks(t, filepath.Join(u.cfg, ".oauth_refresh.lock"), u.legacy)
				done := make(chan cliRun, 1)
				go func() { done <- u.run(time.Minute, claudeCheckArgs...) }()
				const holdFor = 3 * time.Second
				select {
				case r := <-done:
					t.Fatalf("the CLI finished while the locks were held: %+v", r)
				case <-time.After(holdFor):
				}
				if got := u.fake.Received(); len(got) != 0 {
					t.Fatalf("the CLI called the token endpoint while the locks were held")
				}
				released := time.Now()
				release()
				r := <-done
				if r.err != nil || r.stdout != "AUTH_OK\n" {
					t.Fatalf("after release: err=%v stdout=%q stderr=%q", r.err, r.stdout, r.stderr)
				}
				u.assertRefreshed(old)
				tok := u.rec.path("/v1/oauth/token")[0]
				if tok.at.Before(released) {
					t.Errorf("token request at %v, before the release at %v", tok.at, released)
				}
				t.Logf("%s: held %v, refreshed %v after the release (it polls every 1-2 s)", v, holdFor, tok.at.Sub(released).Round(time.Millisecond))
			})
			t.Run("never-released", func(t *testing.T) {
				u := newClaudeUser(t, v)
				old := u.login(time.Now().Add(-time.Minute)) // locally expired; the server still takes it
				holdLocks(t, filepath.Join(u.cfg, ".oauth_refresh.lock"), u.legacy)
				r := u.run(40*time.Second, claudeCheckArgs...)
				if r.err != nil || r.stdout != "AUTH_OK\n" {
					t.Fatalf("err=%v after %v stdout=%q stderr=%q", r.err, r.took, r.stdout, r.stderr)
				}
				if got := u.fake.Received(); len(got) != 0 {
					t.Fatalf("the CLI called the token endpoint although the locks were held")
				}
				msgs := u.rec.path("/v1/messages")
				if len(msgs) != 1 || msgs[0].header.Get("Authorization") != "Bearer "+old.AccessToken {
					t.Errorf("want one message with the old (locally expired) token:%s", u.rec.summary())
				}
				if r.took < 4*time.Second || r.took > 30*time.Second {
					t.Errorf("gave up after %v, want the 5-6 tries with 1-2 s sleeps (~5-12 s)", r.took)
				}
				if f := u.creds(); f.ClaudeAiOauth.RefreshToken != old.RefreshToken {
					t.Errorf("the credentials file changed")
				}
				t.Logf("%s: with the locks held and never released the CLI waited %v, then sent the old token without refreshing", v, r.took.Round(time.Millisecond))
			})
			// A holder that never touches its locks looks dead. 2.1.332 compares the
			// lock's mtime across its ~7.5 s of retries: unchanged means "holder
			// exited mid-refresh", and with no owner record to take over from it
			// fails the whole run without sending a message. 2.1.124 only knows
			// staleness (10 s), so it gives up and goes on with the token it has.
			t.Run("untouched", func(t *testing.T) {
				u := newClaudeUser(t, v)
				old := u.login(time.Now().Add(-time.Minute))
				holdLocksAs(t, 0, 0, filepath.Join(u.cfg, ".oauth_refresh.lock"), u.legacy)
				r := u.run(40*time.Second, claudeCheckArgs...)
				switch v {
				case claudeCurrent:
					if got := u.fake.Received(); len(got) != 0 {
						t.Fatalf("the CLI called the token endpoint although the locks were held")
					}
					if r.err == nil || !strings.Contains(r.stdout, "Failed to refresh OAuth token") || len(u.rec.path("/v1/messages")) != 0 {
						t.Fatalf("want a failed run without any message: err=%v after %v stdout=%q", r.err, r.took, r.stdout)
					}
					t.Logf("%s: with untouched locks the run failed after %v: %s", v, r.took.Round(time.Millisecond), strings.TrimSpace(r.stdout))
				default:
					if r.err != nil || r.stdout != "AUTH_OK\n" {
						t.Fatalf("err=%v after %v stdout=%q", r.err, r.took, r.stdout)
					}
					if len(u.fake.Received()) != 0 {
						// Its last retry came after the lock had gone stale (10 s).
						if r.took < 10*time.Second {
							t.Fatalf("refreshed after %v, before the held lock went stale", r.took)
						}
						u.assertRefreshed(old)
						t.Logf("%s: retried past the 10 s stale time and broke the untouched lock (%v)", v, r.took.Round(time.Millisecond))
						return
					}
					if msgs := u.rec.path("/v1/messages"); len(msgs) != 1 || msgs[0].header.Get("Authorization") != "Bearer "+old.AccessToken {
						t.Errorf("want one message with the old token:%s", u.rec.summary())
					}
					t.Logf("%s: with untouched (not yet stale) locks the CLI waited %v, then sent the old token", v, r.took.Round(time.Millisecond))
				}
			})
			// Locks older than the stale time are broken at once: 60 s for 2.1.332,
			// 10 s (proper-lockfile's default) for 2.1.124.
			t.Run("stale", func(t *testing.T) {
				u := newClaudeUser(t, v)
				old := u.login(time.Now().Add(-time.Minute))
				age := 65 * time.Second
				if v == claudeLegacy {
					age = 15 * time.Second
				}
				holdLocksAs(t, 0, age, filepath.Join(u.cfg, ".oauth_refresh.lock"), u.legacy)
				r := u.check(time.Minute)
				if r.took > 5*time.Second {
					t.Errorf("took %v to break a %v-old lock", r.took, age)
				}
				u.assertRefreshed(old)
				t.Logf("%s: a %v-old untouched lock was broken at once (%v)", v, age, r.took.Round(time.Millisecond))
			})
		})
	}
}

// TestClaudeCLIReactive401: a token the server ends before its local expiresAt
// (401 while the file says it is valid) is refreshed on the 401.
func TestClaudeCLIReactive401(t *testing.T) {
	for _, v := range claudeVersions {
		t.Run(v, func(t *testing.T) {
			u := newClaudeUser(t, v)
			u.fake.SetServerLifetime(time.Nanosecond) // the server ends the access token at once
			old := u.login(time.Now().Add(8 * time.Hour))
			u.fake.SetServerLifetime(0) // the refreshed token lives its full 8 h
			u.check(time.Minute)
			if c := u.fake.Counters(); c.Unauthorized != 1 {
				t.Errorf("counters %+v, want one 401 before the refresh", c)
			}
			u.assertRefreshed(old)
			t.Logf("%s: refreshed on a server-side 401 while locally valid; requests:%s", v, u.rec.summary())
		})
	}
}

// streamLine is the part of a stream-json output line we look at.
type streamLine struct {
	Type    string `json:"type"`
	Subtype string `json:"subtype"`
	Result  string `json:"result"`
	IsError bool   `json:"is_error"`
	Session string `json:"session_id"`
	Version string `json:"claude_code_version"`
	Message struct {
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	} `json:"message"`
}

// TestClaudeCLIStreamJSON: one long-running `claude -p --input-format
// stream-json` process answers a user message per JSON line; when the token on
// disk is replaced (and the old one revoked) between two messages, the second
// still succeeds with the new token and Claude does not refresh by itself.
func TestClaudeCLIStreamJSON(t *testing.T) {
	for _, v := range claudeVersions {
		t.Run(v, func(t *testing.T) {
			u := newClaudeUser(t, v)
			l := u.login(time.Now().Add(8 * time.Hour))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := u.command(ctx, "-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose",
				"--model", "haiku", "--no-session-persistence", "--tools", "", "--disable-slash-commands", "--setting-sources", "")
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := make(chan string)
			go func() {
				defer close(lines)
				sc := bufio.NewScanner(stdout)
				sc.Buffer(make([]byte, 1<<16), 16<<20)
				for sc.Scan() {
					lines <- sc.Text()
				}
			}()
			send := func(text string) {
				t.Helper()
				b, _ := json.Marshal(map[string]any{"type": "user", "message": map[string]any{"role": "user", "content": text}})
				if _, err := stdin.Write(append(b, '\n')); err != nil {
					t.Fatalf("write stdin: %v", err)
				}
			}
			// readTurn reads lines up to and including the result line.
			readTurn := func() (types []string, res streamLine) {
				t.Helper()
				for {
					select {
					case line, ok := <-lines:
						if !ok {
							t.Fatalf("stdout closed before a result; stderr=%q types so far %v", stderr.String(), types)
						}
						var sl streamLine
						if err := json.Unmarshal([]byte(line), &sl); err != nil {
							t.Fatalf("not a JSON line: %q", line)
						}
						typ := sl.Type
						if sl.Subtype != "" {
							typ += "/" + sl.Subtype
						}
						types = append(types, typ)
						if sl.Type == "result" {
							return types, sl
						}
					case <-ctx.Done():
						t.Fatalf("no result line; stderr=%q types so far %v", stderr.String(), types)
					}
				}
			}

			send(authPrompt)
			types, res := readTurn()
			t.Logf("%s first turn lines: %v", v, types)
			if res.Subtype != "success" || res.IsError || res.Result != "AUTH_OK" || res.Session == "" {
				t.Fatalf("result line %+v", res)
			}
			if !slices.Contains(types, "system/init") || !slices.Contains(types, "assistant") {
				t.Errorf("first turn lines %v, want system/init, assistant, ..., result/success", types)
			}

			// An outside refresher rotates the login and replaces the file.
			l2, err := u.fake.Rotate(l.RefreshToken)
			if err != nil {
				t.Fatal(err)
			}
			before, err := os.Stat(u.credsPath())
			if err != nil {
				t.Fatal(err)
			}
			u.writeCreds(l2)
			// A distinct mtime (how a session notices the change): written
			// again until the file's mtime is not the one it had.
			eventually(t, 10*time.Second, "the replaced credentials file with a new mtime", func() bool {
				if fi, err := os.Stat(u.credsPath()); err == nil && !fi.ModTime().Equal(before.ModTime()) {
					return true
				}
				u.writeCreds(l2)
				return false
			})
			send(authPrompt)
			types2, res2 := readTurn()
			t.Logf("%s second turn lines: %v; counters %+v", v, types2, u.fake.Counters())
			if res2.Result != "AUTH_OK" || res2.IsError {
				t.Fatalf("after the token changed on disk: result %+v; requests:%s", res2, u.rec.summary())
			}
			msgs := u.rec.path("/v1/messages")
			if last := msgs[len(msgs)-1]; last.header.Get("Authorization") != "Bearer "+l2.AccessToken || last.status != 200 {
				t.Errorf("second turn not answered with the new token:%s", u.rec.summary())
			}
			if c := u.fake.Counters(); c.Refreshes != 1 || len(u.rec.path("/v1/oauth/token")) != 0 {
				t.Errorf("the session refreshed by itself: %+v", c)
			}
			if c := u.fake.Counters(); c.Forbidden != 0 {
				t.Logf("%s: the session first used the revoked token (403) and then re-read the file", v)
			} else {
				t.Logf("%s: the session picked up the new token from the file before sending", v)
			}

			stdin.Close()
			for range lines {
			}
			if err := cmd.Wait(); err != nil {
				t.Errorf("exit after stdin closed: %v; stderr=%q", err, stderr.String())
			}
		})
	}
}
