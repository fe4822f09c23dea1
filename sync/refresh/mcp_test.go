package refresh

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
)

// A process killed after the MCP token endpoint answered and the answer was
// kept, before the credentials file was written: the next refresher (a new
// process) writes the kept answer and presents nothing at the endpoint (the
// refresh token in the file is spent; presenting it would trip the server's
// reuse detection and revoke the whole login).
func TestMCPKeptAnswerWrittenAfterCrash(t *testing.T) {
	var posts atomic.Int32
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.well-known/oauth-authorization-server" {
			_ = json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "token_endpoint": srv.URL + "/token"})
			return
		}
		posts.Add(1)
		w.WriteHeader(400)
		_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	cfgDir, state := filepath.Join(dir, ".claude"), filepath.Join(dir, "state")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(cfgDir, ".credentials.json")
	key := "srv|00112233aabbccdd"
	now := time.Now()
	doc := map[string]any{"mcpOAuth": map[string]any{key: map[string]any{
		"serverName": "srv", "serverUrl": srv.URL + "/mcp", "clientId": "c", "accessToken": "a0", "refreshToken": "spent",
		"expiresAt": now.Add(time.Minute).UnixMilli(), "discoveryState": map[string]any{"authorizationServerUrl": srv.URL}}},
		"claudeAiOauth": map[string]any{"accessToken": "x", "refreshToken": "y", "expiresAt": 1}}
	b, _ := json.Marshal(doc)
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	build := func() *MCP {
		return NewMCP(&MCPLogin{Key: key, CredentialsFile: file, ClaudeConfigDir: cfgDir, StateDir: state},
			Config[*credentials.MCPEntry]{Lead: 15 * time.Minute, LeadExplicit: true, LockWait: 2 * time.Second})
	}
	tok, err := oauth.ParseMCPToken([]byte(`{"access_token":"a1","refresh_token":"live","expires_in":3600}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := build().keepAnswer(tok, "spent", now); err != nil {
		t.Fatal(err)
	}
	// The crashed process is gone; a new one comes.
	r := build()
	if !r.Pending() {
		t.Fatal("the kept answer is not seen by a new process")
	}
	res, err := r.Refresh(context.Background(), NoWitness{}, false, "")
	if err != nil || !res.Refreshed {
		t.Fatalf("refresh: %v (refreshed %v)", err, res.Refreshed)
	}
	if n := posts.Load(); n != 0 {
		t.Fatalf("%d token requests: the spent refresh token was presented", n)
	}
	l, err := credentials.Read(file)
	if err != nil {
		t.Fatal(err)
	}
	e, err := l.File.MCPEntry(key)
	if err != nil || e.RefreshToken() != "live" || e.AccessToken() != "a1" {
		t.Fatalf("the entry does not hold the kept answer (%v)", err)
	}
	if l.OAuth == nil || l.OAuth.RefreshToken() != "y" {
		t.Error("claudeAiOauth changed")
	}
	if r.Pending() {
		t.Error("the kept answer is still pending after it was written")
	}
}
