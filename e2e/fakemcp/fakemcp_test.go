package fakemcp

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type tokenAnswer struct {
	Status       int
	Error        string `json:"error"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int    `json:"expires_in"`
	hasRefresh   bool
}

func refresh(t *testing.T, s *Server, rt string, edit func(f url.Values, r *http.Request)) tokenAnswer {
	t.Helper()
	f := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "resource": {s.MCPURL()}, "client_id": {s.Options().ClientID}}
	r, _ := http.NewRequest("POST", s.URL()+"/token", nil)
	if edit != nil {
		edit(f, r)
	}
	r.Body = ioNop(f.Encode())
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&raw)
	b, _ := json.Marshal(raw)
	var a tokenAnswer
	_ = json.Unmarshal(b, &a)
	_, a.hasRefresh = raw["refresh_token"]
	a.Status = resp.StatusCode
	return a
}

func TestReuseRevokesFamily(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	l := s.Issue()
	other := s.Issue()
	a1 := refresh(t, s, l.RefreshToken, nil)
	if a1.Status != 200 || a1.RefreshToken == "" || a1.RefreshToken == l.RefreshToken || a1.ExpiresIn != 3600 {
		t.Fatalf("first refresh: %+v", a1.Status)
	}
	a2 := refresh(t, s, a1.RefreshToken, nil)
	if a2.Status != 200 {
		t.Fatalf("second refresh: %d", a2.Status)
	}
	// The first refresh token again: reuse.
	if a := refresh(t, s, l.RefreshToken, nil); a.Status != 400 || a.Error != "invalid_grant" {
		t.Fatalf("reuse answered %d %s; want 400 invalid_grant", a.Status, a.Error)
	}
	if s.Valid(a2.AccessToken) || s.RefreshValid(a2.RefreshToken) || s.Valid(l.AccessToken) {
		t.Error("reuse left tokens of the family valid")
	}
	if !s.Valid(other.AccessToken) || !s.RefreshValid(other.RefreshToken) {
		t.Error("reuse revoked another family")
	}
	if a := refresh(t, s, a2.RefreshToken, nil); a.Error != "invalid_grant" {
		t.Errorf("the family's newest refresh token after revocation: %d %s", a.Status, a.Error)
	}
	c := s.Counters()
	if c.Refreshes != 2 || c.ReuseDetected != 1 || c.FamiliesRevoked != 1 || c.InvalidGrant != 2 || c.RefreshesByAgent != 2 {
		t.Errorf("counters %+v", c)
	}
}

func TestNonRotating(t *testing.T) {
	for _, rot := range []Rotation{Same, Omit} {
		t.Run(rot.String(), func(t *testing.T) {
			s := New(Options{Rotation: rot})
			defer s.Close()
			l := s.Issue()
			for i := 0; i < 3; i++ {
				a := refresh(t, s, l.RefreshToken, nil)
				if a.Status != 200 {
					t.Fatalf("refresh %d: %d %s", i, a.Status, a.Error)
				}
				if rot == Same && a.RefreshToken != l.RefreshToken {
					t.Error("same: a different refresh token came back")
				}
				if rot == Omit && a.hasRefresh {
					t.Error("omit: refresh_token present")
				}
				if !s.Valid(a.AccessToken) {
					t.Error("new access token not valid")
				}
			}
			if c := s.Counters(); c.Refreshes != 3 || c.ReuseDetected != 0 {
				t.Errorf("counters %+v", c)
			}
		})
	}
}

func TestAuthMethods(t *testing.T) {
	post := func(id, secret string) func(url.Values, *http.Request) {
		return func(f url.Values, _ *http.Request) { f.Set("client_id", id); f.Set("client_secret", secret) }
	}
	basic := func(id, secret string) func(url.Values, *http.Request) {
		return func(f url.Values, r *http.Request) {
			f.Del("client_id")
			r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
		}
	}
	none := func(id string) func(url.Values, *http.Request) {
		return func(f url.Values, _ *http.Request) { f.Set("client_id", id) }
	}
	for _, tc := range []struct {
		method AuthMethod
		edit   func(url.Values, *http.Request)
		want   int
	}{
		{AuthNone, none("fakemcp-client"), 200},
		{AuthNone, none("someone-else"), 401},
		{AuthPost, post("fakemcp-client", "fakemcp-secret"), 200},
		{AuthPost, post("fakemcp-client", "wrong"), 401},
		{AuthPost, none("fakemcp-client"), 401},
		{AuthPost, basic("fakemcp-client", "fakemcp-secret"), 401},
		{AuthBasic, basic("fakemcp-client", "fakemcp-secret"), 200},
		{AuthBasic, basic("fakemcp-client", "wrong"), 401},
		{AuthBasic, post("fakemcp-client", "fakemcp-secret"), 401},
	} {
		s := New(Options{AuthMethod: tc.method})
		a := refresh(t, s, s.Issue().RefreshToken, tc.edit)
		if a.Status != tc.want || (tc.want == 401 && a.Error != "invalid_client") {
			t.Errorf("%s: %d %s; want %d", tc.method, a.Status, a.Error, tc.want)
		}
		var meta struct {
			Methods []string `json:"token_endpoint_auth_methods_supported"`
			Issuer  string   `json:"issuer"`
			Token   string   `json:"token_endpoint"`
		}
		getJSON(t, s.URL()+"/.well-known/oauth-authorization-server", &meta)
		if len(meta.Methods) != 1 || meta.Methods[0] != string(tc.method) || meta.Issuer != s.URL() || meta.Token != s.URL()+"/token" {
			t.Errorf("metadata %+v", meta)
		}
		s.Close()
	}
}

func TestOptionsAndCounters(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	l := s.Issue()
	s.SetFailStatus(503)
	if a := refresh(t, s, l.RefreshToken, nil); a.Status != 503 {
		t.Errorf("fail status: %d", a.Status)
	}
	s.SetFailStatus(0)
	s.SetDelay(200 * time.Millisecond)
	start := time.Now()
	a := refresh(t, s, l.RefreshToken, func(f url.Values, r *http.Request) {
		f.Set("resource", "http://elsewhere/mcp")
		r.Header.Set("User-Agent", "Bun/1.4.6")
	})
	if a.Status != 200 || time.Since(start) < 200*time.Millisecond {
		t.Errorf("delayed refresh: %d after %v", a.Status, time.Since(start))
	}
	if c := s.Counters(); c.Failed != 1 || c.WrongResource != 1 || c.RefreshesByClaude != 1 || c.RefreshesByAgent != 0 {
		t.Errorf("counters %+v", c)
	}
}

func mcpPost(t *testing.T, s *Server, bearer, body string) (*http.Response, map[string]any) {
	t.Helper()
	r, _ := http.NewRequest("POST", s.MCPURL(), strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json, text/event-stream")
	if bearer != "" {
		r.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp, out
}

func TestMCPEndpoint(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	resp, _ := mcpPost(t, s, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`)
	wa := resp.Header.Get("WWW-Authenticate")
	if resp.StatusCode != 401 || !strings.Contains(wa, `resource_metadata="`+s.URL()+`/.well-known/oauth-protected-resource"`) {
		t.Errorf("no bearer: %d %q", resp.StatusCode, wa)
	}
	var prm struct {
		Resource string   `json:"resource"`
		AS       []string `json:"authorization_servers"`
	}
	getJSON(t, s.URL()+"/.well-known/oauth-protected-resource", &prm)
	if prm.Resource != s.MCPURL() || len(prm.AS) != 1 || prm.AS[0] != s.URL() {
		t.Errorf("protected-resource metadata %+v", prm)
	}
	l := s.Issue()
	_, out := mcpPost(t, s, l.AccessToken, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"ping","arguments":{}}}`)
	if b, _ := json.Marshal(out["result"]); !strings.Contains(string(b), `"text":"PONG"`) {
		t.Errorf("tools/call: %s", b)
	}
	expired := s.IssueFor(-time.Second)
	if resp, _ := mcpPost(t, s, expired.AccessToken, `{"jsonrpc":"2.0","id":3,"method":"tools/list"}`); resp.StatusCode != 401 {
		t.Errorf("expired token: %d", resp.StatusCode)
	}
	s.RevokeFamily(l.RefreshToken)
	if resp, _ := mcpPost(t, s, l.AccessToken, `{"jsonrpc":"2.0","id":4,"method":"tools/list"}`); resp.StatusCode != 401 {
		t.Errorf("revoked token: %d", resp.StatusCode)
	}
	if c := s.Counters(); c.ToolCalls != 1 || c.FailedToolCalls != 3 {
		t.Errorf("counters %+v", c)
	}
}

func TestEntryKey(t *testing.T) {
	if got, want := KeyJSON("http", "http://127.0.0.1:1/mcp", nil), `{"type":"http","url":"http://127.0.0.1:1/mcp","headers":{}}`; got != want {
		t.Errorf("KeyJSON %s; want %s", got, want)
	}
	if got, want := KeyJSON("http", "https://x/a?b=<&>", map[string]string{"B": "2", "A": "1"}), `{"type":"http","url":"https://x/a?b=<&>","headers":{"A":"1","B":"2"}}`; got != want {
		t.Errorf("KeyJSON %s; want %s", got, want)
	}
	// sha256 of {"type":"http","url":"https://mcp.example.com/mcp","headers":{}}
	// computed independently with: printf %s '...' | sha256sum
	if k := EntryKey("ex", "https://mcp.example.com/mcp", nil); k != "ex|4282f2a9112820d2" {
		t.Errorf("EntryKey %s", k)
	}
}

func TestSeedCredentials(t *testing.T) {
	s := New(Options{AuthMethod: AuthPost})
	defer s.Close()
	p := filepath.Join(t.TempDir(), ".credentials.json")
	if err := os.WriteFile(p, []byte(`{"claudeAiOauth":{"accessToken":"x"},"mcpOAuth":{"other|1":{"serverName":"other"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	l := s.Issue()
	key, err := SeedCredentials(p, s.Entry("srv", l))
	if err != nil || key != EntryKey("srv", s.MCPURL(), nil) {
		t.Fatalf("key %s err %v", key, err)
	}
	e, ok, err := ReadEntry(p, key)
	if err != nil || !ok || e.AccessToken != l.AccessToken || e.ClientSecret != "fakemcp-secret" || e.DiscoveryState.AuthorizationServerURL != s.URL() {
		t.Errorf("entry: ok=%v err=%v", ok, err)
	}
	b, _ := os.ReadFile(p)
	if !strings.Contains(string(b), `"claudeAiOauth"`) || !strings.Contains(string(b), `"other|1"`) {
		t.Error("other keys lost")
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	if m := Mask(l.AccessToken); strings.Contains(m, l.AccessToken[8:]) {
		t.Error("Mask leaks the token")
	}
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

type nopBody struct{ *strings.Reader }

func (nopBody) Close() error { return nil }

func ioNop(s string) nopBody { return nopBody{strings.NewReader(s)} }
