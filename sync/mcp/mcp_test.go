package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
)

// authServer is a small OAuth authorization server for unit tests: RFC 8414
// metadata and a token endpoint with rotating refresh tokens and reuse
// detection. (The e2e tests use e2e/fakemcp with the real CLI.)
type authServer struct {
	*httptest.Server
	mu       sync.Mutex
	methods  []string
	lifetime int // expires_in, s
	rotate   bool
	live     map[string]bool // refresh tokens not yet spent
	spent    map[string]bool
	n        int
	requests []url.Values
	auth     []string // Authorization header of each request
	reuses   int
	status   int // answer this instead, when set
}

func newAuthServer(t testing.TB) *authServer {
	a := &authServer{lifetime: 3600, rotate: true, live: map[string]bool{}, spent: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/oauth-authorization-server", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": a.URL, "token_endpoint": a.URL + "/token",
			"token_endpoint_auth_methods_supported": a.methods})
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		a.mu.Lock()
		defer a.mu.Unlock()
		a.requests = append(a.requests, r.PostForm)
		a.auth = append(a.auth, r.Header.Get("Authorization"))
		if a.status != 0 {
			w.WriteHeader(a.status)
			return
		}
		rt := r.PostForm.Get("refresh_token")
		if !a.live[rt] {
			if a.spent[rt] {
				a.reuses++
			}
			w.WriteHeader(400)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant"})
			return
		}
		a.n++
		out := map[string]any{"access_token": fmt.Sprintf("mcp-access-%d", a.n), "expires_in": a.lifetime, "token_type": "Bearer"}
		if a.rotate {
			delete(a.live, rt)
			a.spent[rt] = true
			next := fmt.Sprintf("mcp-refresh-%d", a.n)
			a.live[next] = true
			out["refresh_token"] = next
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	a.Server = httptest.NewServer(mux)
	t.Cleanup(a.Close)
	return a
}

func (a *authServer) issue(rt string) {
	a.mu.Lock()
	a.live[rt] = true
	a.mu.Unlock()
}

func (a *authServer) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.requests)
}

// home is a Claude config dir with a credentials file.
type home struct {
	dir, file, state string
}

func newHome(t testing.TB) home {
	d := t.TempDir()
	h := home{dir: filepath.Join(d, ".claude"), state: filepath.Join(d, "state")}
	h.file = filepath.Join(h.dir, ".credentials.json")
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return h
}

func entry(name, asURL, rt string, expires time.Time) map[string]any {
	e := map[string]any{"serverName": name, "serverUrl": "http://127.0.0.1:1/mcp", "clientId": "client-" + name,
		"accessToken": "old-access-" + name, "scope": "read",
		"discoveryState": map[string]any{"authorizationServerUrl": asURL}}
	if rt != "" {
		e["refreshToken"] = rt
	}
	if !expires.IsZero() {
		e["expiresAt"] = expires.UnixMilli()
	}
	return e
}

func (h home) write(t testing.TB, top map[string]any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(top, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

func (h home) read(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(h.file)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func (h home) entry(t *testing.T, key string) map[string]any {
	t.Helper()
	var all map[string]map[string]any
	if err := json.Unmarshal(h.read(t)["mcpOAuth"], &all); err != nil {
		t.Fatal(err)
	}
	return all[key]
}

// logs collects what the Manager says.
type logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (h home) manager(lg *logs, now time.Time, mut ...func(*Config)) (*Manager, *clock.Fake) {
	fc := clock.NewFake(now)
	c := Config{CredentialsFile: h.file, ClaudeConfigDir: h.dir, StateDir: h.state, Lead: 15 * time.Minute,
		Clock: fc, Diag: slog.New(slog.NewTextHandler(lg, &slog.HandlerOptions{Level: slog.LevelDebug})),
		LockWait: 2 * time.Second, Publish: true}
	for _, f := range mut {
		f(&c)
	}
	return New(c), fc
}

const keyA, keyB = "alpha|0123456789abcdef", "beta|fedcba9876543210"

func TestRefreshesOnlyTheDueEntry(t *testing.T) {
	as := newAuthServer(t)
	as.issue("rt-a")
	as.issue("rt-b")
	h := newHome(t)
	now := time.Now()
	h.write(t, map[string]any{
		"claudeAiOauth": map[string]any{"accessToken": "claude-a", "refreshToken": "claude-r", "expiresAt": now.Add(8 * time.Hour).UnixMilli()},
		"mcpOAuth": map[string]any{
			keyA: entry("alpha", as.URL, "rt-a", now.Add(10*time.Minute)), // due (lead 15 min)
			keyB: entry("beta", as.URL, "rt-b", now.Add(2*time.Hour)),     // not due
		},
		"pluginSecrets": map[string]any{"x": "y"},
	})
	before := h.read(t)
	var lg logs
	m, _ := h.manager(&lg, now)
	next := m.Pass(context.Background())

	if as.count() != 1 {
		t.Fatalf("token requests = %d, want 1 (only the due entry)", as.count())
	}
	req := as.requests[0]
	for k, want := range map[string]string{"grant_type": "refresh_token", "refresh_token": "rt-a",
		"resource": "http://127.0.0.1:1/mcp", "client_id": "client-alpha"} {
		if got := req.Get(k); got != want {
			t.Errorf("request %s = %q, want %q", k, got, want)
		}
	}
	if req.Has("scope") {
		t.Error("the request carries a scope; Claude sends none")
	}
	a := h.entry(t, keyA)
	if a["accessToken"] != "mcp-access-1" || a["refreshToken"] != "mcp-refresh-1" {
		t.Errorf("entry alpha not refreshed: access %v", a["accessToken"] == "mcp-access-1")
	}
	if exp := int64(a["expiresAt"].(float64)); exp < now.Add(59*time.Minute).UnixMilli() {
		t.Errorf("expiresAt not moved on: %d", exp)
	}
	if a["serverName"] != "alpha" || a["clientId"] != "client-alpha" || a["scope"] != "read" {
		t.Errorf("entry alpha lost its other fields: %v", a["serverName"])
	}
	after := h.read(t)
	for _, k := range []string{"claudeAiOauth", "pluginSecrets"} {
		if !bytes.Equal(compact(before[k]), compact(after[k])) {
			t.Errorf("%s changed", k)
		}
	}
	b := h.entry(t, keyB)
	if b["refreshToken"] != "rt-b" || b["accessToken"] != "old-access-beta" {
		t.Error("entry beta was touched")
	}
	fi, err := os.Stat(h.file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("credentials file mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := os.Stat(lock.MCPRefreshPath(h.dir, keyA)); !os.IsNotExist(err) {
		t.Error("Claude's MCP lock directory was left behind")
	}
	if want := now.Add(2*time.Hour - 15*time.Minute); next.Sub(want).Abs() > time.Second {
		t.Errorf("next look at %v, want beta's due time %v", next, want)
	}
	if strings.Contains(lg.String(), "rt-a") || strings.Contains(lg.String(), "mcp-access") || strings.Contains(lg.String(), "127.0.0.1") {
		t.Errorf("a token or URL in the log:\n%s", lg.String())
	}
	if !strings.Contains(lg.String(), `MCP server \"alpha\": refreshed`) {
		t.Errorf("no line for the refresh:\n%s", lg.String())
	}
	st, err := Load(h.state)
	if err != nil || st.RefreshesTotal != 1 || len(st.Servers) != 2 {
		t.Fatalf("mcp.json: %+v %v", st, err)
	}
	if st.Servers[0].Name != "alpha" || st.Servers[0].LastRefresh == nil || st.Servers[1].NextRefresh == nil {
		t.Errorf("mcp.json servers: %+v", st.Servers)
	}
	raw, _ := os.ReadFile(filepath.Join(h.state, StateFile))
	if bytes.Contains(raw, []byte("mcp-refresh")) || bytes.Contains(raw, []byte("http")) {
		t.Errorf("mcp.json holds a token or URL: %s", raw)
	}
}

func compact(b []byte) []byte {
	var out bytes.Buffer
	_ = json.Compact(&out, b)
	return out.Bytes()
}

func TestNonRotatingServerKeepsRefreshToken(t *testing.T) {
	as := newAuthServer(t)
	as.rotate = false
	as.issue("rt-a")
	h := newHome(t)
	now := time.Now()
	h.write(t, map[string]any{"mcpOAuth": map[string]any{keyA: entry("alpha", as.URL, "rt-a", now.Add(time.Minute))}})
	var lg logs
	m, _ := h.manager(&lg, now)
	m.Pass(context.Background())
	a := h.entry(t, keyA)
	if as.count() != 1 || a["refreshToken"] != "rt-a" || a["accessToken"] != "mcp-access-1" {
		t.Fatalf("requests %d; refresh token kept %v; access new %v", as.count(), a["refreshToken"] == "rt-a", a["accessToken"] == "mcp-access-1")
	}
}

func TestInvalidGrantLeavesEntryAndWarnsOnce(t *testing.T) {
	as := newAuthServer(t) // rt-a never issued: refused
	h := newHome(t)
	now := time.Now()
	h.write(t, map[string]any{"mcpOAuth": map[string]any{keyA: entry("alpha", as.URL, "rt-a", now.Add(time.Minute))}})
	before, _ := os.ReadFile(h.file)
	var lg logs
	m, fc := h.manager(&lg, now)
	m.Pass(context.Background())
	fc.Advance(time.Minute)
	m.Pass(context.Background())
	after, _ := os.ReadFile(h.file)
	if !bytes.Equal(before, after) {
		t.Error("the entry was changed after invalid_grant; it must be left for Claude's /mcp re-auth")
	}
	if as.count() != 1 {
		t.Errorf("token requests = %d, want 1 (a refused refresh token is not presented again)", as.count())
	}
	if n := strings.Count(lg.String(), "refused its refresh token"); n != 1 {
		t.Errorf("%d WARN lines for the refused server, want 1:\n%s", n, lg.String())
	}
	if !strings.Contains(lg.String(), "level=WARN") || !strings.Contains(lg.String(), `\"alpha\"`) {
		t.Errorf("the WARN does not name the server:\n%s", lg.String())
	}
	st, _ := Load(h.state)
	if len(st.Servers) != 1 || st.Servers[0].State != "needs-login" || st.FailuresTotal != 1 {
		t.Errorf("mcp.json: %+v", st)
	}
	// The user logs in again (/mcp): a new refresh token is taken up.
	as.issue("rt-new")
	h.write(t, map[string]any{"mcpOAuth": map[string]any{keyA: entry("alpha", as.URL, "rt-new", fc.Now().Add(time.Minute))}})
	m.Pass(context.Background())
	if a := h.entry(t, keyA); a["accessToken"] != "mcp-access-1" {
		t.Errorf("the new login was not refreshed (requests %d)", as.count())
	}
}

func TestUnreachableBacksOffAndLosesNothing(t *testing.T) {
	as := newAuthServer(t)
	as.issue("rt-a")
	as.status = 503
	h := newHome(t)
	now := time.Now()
	h.write(t, map[string]any{"mcpOAuth": map[string]any{keyA: entry("alpha", as.URL, "rt-a", now.Add(time.Minute))}})
	before, _ := os.ReadFile(h.file)
	var lg logs
	m, fc := h.manager(&lg, now)
	next := m.Pass(context.Background())
	if after, _ := os.ReadFile(h.file); !bytes.Equal(before, after) {
		t.Error("the file changed after a failed refresh")
	}
	if d := next.Sub(fc.Now()); d < 25*time.Second || d > 35*time.Second {
		t.Errorf("retry in %v, want about 30 s", d)
	}
	m.Pass(context.Background()) // before the retry time: no request
	if as.count() != 1 {
		t.Errorf("requests = %d before the backoff ended, want 1", as.count())
	}
	as.mu.Lock()
	as.status = 0
	as.mu.Unlock()
	fc.Advance(31 * time.Second)
	m.Pass(context.Background())
	if a := h.entry(t, keyA); a["accessToken"] != "mcp-access-1" {
		t.Error("not refreshed once the server answered again")
	}
	st, _ := Load(h.state)
	if st.FailuresTotal != 1 || st.RefreshesTotal != 1 {
		t.Errorf("counters: %+v", st)
	}
}

func TestSkippedEntriesSayOnce(t *testing.T) {
	as := newAuthServer(t)
	h := newHome(t)
	now := time.Now()
	h.write(t, map[string]any{"mcpOAuth": map[string]any{
		"norefresh|1111111111111111": entry("norefresh", as.URL, "", now.Add(time.Minute)),
		"noexpiry|2222222222222222":  entry("noexpiry", as.URL, "rt", time.Time{}),
		"leftalone|3333333333333333": entry("leftalone", as.URL, "rt2", now.Add(time.Minute)),
	}})
	var lg logs
	m, fc := h.manager(&lg, now, func(c *Config) { c.Skip = []string{"leftalone"} })
	m.Pass(context.Background())
	fc.Advance(time.Minute)
	m.Pass(context.Background())
	if as.count() != 0 {
		t.Errorf("%d token requests for entries to skip", as.count())
	}
	for _, want := range []string{`\"norefresh\": skipped, its login has no refresh token`, `\"noexpiry\": skipped, its access token has no expiry`,
		`\"leftalone\": left to Claude`} {
		if n := strings.Count(lg.String(), want); n != 1 {
			t.Errorf("%q said %d times, want once:\n%s", want, n, lg.String())
		}
	}
	st, _ := Load(h.state)
	for _, s := range st.Servers {
		if s.State != "skipped" || s.Reason == "" {
			t.Errorf("server %s: %+v", s.Name, s)
		}
	}
}

func TestShortLivedTokensAreSkipped(t *testing.T) {
	as := newAuthServer(t)
	as.lifetime = 20 * 60 // < 2 × 15 min
	as.issue("rt-a")
	h := newHome(t)
	now := time.Now()
	h.write(t, map[string]any{"mcpOAuth": map[string]any{keyA: entry("alpha", as.URL, "rt-a", now.Add(time.Minute))}})
	var lg logs
	m, fc := h.manager(&lg, now)
	m.Pass(context.Background())
	fc.Advance(10 * time.Minute) // now due again by the lead
	m.Pass(context.Background())
	if as.count() != 1 {
		t.Errorf("requests = %d, want 1: tokens shorter than twice the lead are left to Claude after the first", as.count())
	}
	if !strings.Contains(lg.String(), "less than twice the lead") {
		t.Errorf("no INFO line for the short tokens:\n%s", lg.String())
	}
}

func TestClientSecretAuthMethods(t *testing.T) {
	for _, tc := range []struct {
		methods   []string
		wantBasic bool
	}{{[]string{"client_secret_basic"}, true}, {[]string{"client_secret_post"}, false}, {nil, true}} {
		as := newAuthServer(t)
		as.methods = tc.methods
		as.issue("rt-a")
		h := newHome(t)
		now := time.Now()
		h.write(t, map[string]any{
			"mcpOAuth":             map[string]any{keyA: entry("alpha", as.URL, "rt-a", now.Add(time.Minute))},
			"mcpOAuthClientConfig": map[string]any{keyA: map[string]any{"clientSecret": "s3cret"}},
		})
		var lg logs
		m, _ := h.manager(&lg, now)
		m.Pass(context.Background())
		if as.count() != 1 {
			t.Fatalf("%v: requests %d", tc.methods, as.count())
		}
		req, auth := as.requests[0], as.auth[0]
		if tc.wantBasic {
			if !strings.HasPrefix(auth, "Basic ") || req.Has("client_secret") {
				t.Errorf("%v: want basic auth only (auth set %v, form secret %v)", tc.methods, auth != "", req.Has("client_secret"))
			}
		} else if auth != "" || req.Get("client_secret") != "s3cret" || req.Get("client_id") != "client-alpha" {
			t.Errorf("%v: want client_secret_post", tc.methods)
		}
	}
}

func TestWaitsForClaudesLockAndSeesItsRefresh(t *testing.T) {
	as := newAuthServer(t)
	as.issue("rt-a")
	h := newHome(t)
	now := time.Now()
	h.write(t, map[string]any{"mcpOAuth": map[string]any{keyA: entry("alpha", as.URL, "rt-a", now.Add(time.Minute))}})
	// A Claude session holds the per-server lock and refreshes meanwhile.
	lockDir := lock.MCPRefreshPath(h.dir, keyA)
	if err := os.Mkdir(lockDir, 0o700); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(300 * time.Millisecond)
		e := entry("alpha", as.URL, "rt-claude", time.Now().Add(time.Hour))
		h.write(t, map[string]any{"mcpOAuth": map[string]any{keyA: e}})
		_ = os.Remove(lockDir)
	}()
	var lg logs
	m, _ := h.manager(&lg, now)
	m.Pass(context.Background())
	<-done
	if as.count() != 0 {
		t.Errorf("%d token requests: the refresh under Claude's lock was not seen", as.count())
	}
	if a := h.entry(t, keyA); a["refreshToken"] != "rt-claude" {
		t.Error("Claude's refresh was overwritten")
	}
}

func TestRemovedEntryIsNotBroughtBack(t *testing.T) {
	as := newAuthServer(t)
	as.issue("rt-a")
	h := newHome(t)
	now := time.Now()
	h.write(t, map[string]any{"mcpOAuth": map[string]any{keyA: entry("alpha", as.URL, "rt-a", now.Add(time.Hour))}})
	var lg logs
	m, _ := h.manager(&lg, now)
	m.Pass(context.Background())
	h.write(t, map[string]any{"mcpOAuth": map[string]any{}})
	m.Pass(context.Background())
	if _, ok := h.entry(t, keyA)["refreshToken"]; ok {
		t.Error("a removed entry came back")
	}
	st, _ := Load(h.state)
	if len(st.Servers) != 0 {
		t.Errorf("mcp.json still lists %d servers", len(st.Servers))
	}
}

// An expiry out of range (year > 9999) counts as none: skipped, and mcp.json
// is still written (a time JSON cannot carry would fail every write).
func TestExpiryOutOfRangeIsNoExpiry(t *testing.T) {
	as := newAuthServer(t)
	h := newHome(t)
	now := time.Now()
	e := entry("far", as.URL, "rt", time.Time{})
	e["expiresAt"] = int64(1) << 60
	h.write(t, map[string]any{"mcpOAuth": map[string]any{keyA: e}})
	var lg logs
	changed := 0
	m, _ := h.manager(&lg, now, func(c *Config) { c.Changed = func() { changed++ } })
	m.Pass(context.Background())
	st, err := Load(h.state)
	if err != nil || len(st.Servers) != 1 || st.Servers[0].State != "skipped" || st.Servers[0].ExpiresAt != nil {
		t.Fatalf("mcp.json: %+v %v\n%s", st, err, lg.String())
	}
	if as.count() != 0 || changed != 1 {
		t.Errorf("requests %d, Changed told %d times (want 0, 1)", as.count(), changed)
	}
}

// A server issuing tokens of exactly twice the lead is the agent's: the
// lifetime it sees (from the answer, read a moment after it was issued) is a
// little shorter, and that is not "short".
func TestTokensOfTwiceTheLeadAreRefreshedAgain(t *testing.T) {
	as := newAuthServer(t)
	as.lifetime = 30 * 60 // exactly 2 × 15 min
	as.issue("rt-a")
	h := newHome(t)
	base := time.Now()
	var mu sync.Mutex
	var ticks, offset time.Duration
	now := func() time.Time { // time passes at every look
		mu.Lock()
		defer mu.Unlock()
		ticks += 50 * time.Millisecond
		return base.Add(ticks + offset)
	}
	h.write(t, map[string]any{"mcpOAuth": map[string]any{keyA: entry("alpha", as.URL, "rt-a", base.Add(time.Minute))}})
	var lg logs
	m, _ := h.manager(&lg, base, func(c *Config) { c.Clock = clock.WithNow(now) })
	m.Pass(context.Background())
	mu.Lock()
	offset += 15*time.Minute + 5*time.Second // the new token is due
	mu.Unlock()
	m.Pass(context.Background())
	if as.count() != 2 {
		t.Fatalf("token requests = %d, want 2 (the second lifetime refreshed by us too)\n%s", as.count(), lg.String())
	}
}
