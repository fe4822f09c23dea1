package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

func TestParseMCPToken(t *testing.T) {
	for _, tc := range []struct {
		body        string
		ok          bool
		refresh     string
		expiresSecs int
	}{
		{`{"access_token":"a","refresh_token":"r","expires_in":3600}`, true, "r", 3600},
		{`{"access_token":"a","expires_in":"600"}`, true, "", 600}, // no new refresh token; a string lifetime
		{`{"access_token":"a"}`, true, "", 0},                      // no lifetime at all
		{`{"refresh_token":"r"}`, false, "", 0},
		{`{"access_token":"a","expires_in":"soon"}`, false, "", 0},
		{`not json`, false, "", 0},
	} {
		tok, err := ParseMCPToken([]byte(tc.body))
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok %v", tc.body, err, tc.ok)
			continue
		}
		if err == nil && (tok.RefreshToken.Reveal() != tc.refresh || tok.ExpiresIn != time.Duration(tc.expiresSecs)*time.Second) {
			t.Errorf("%s: refresh %q, expires %v", tc.body, tok.RefreshToken.Reveal(), tok.ExpiresIn)
		}
	}
}

// The token endpoint is found from the MCP server's protected-resource
// metadata (RFC 9728) when the entry's discovery state names none, with the
// path-inserted well-known URI of an issuer that has a path (RFC 8414 §3).
func TestMCPDiscoveryFallsBackToProtectedResource(t *testing.T) {
	var srv *httptest.Server
	var asked []string
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = append(asked, r.URL.Path)
		switch r.URL.Path {
		case "/.well-known/oauth-protected-resource/tenant/mcp":
			_ = json.NewEncoder(w).Encode(map[string]any{"resource": srv.URL + "/tenant/mcp", "authorization_servers": []string{srv.URL + "/auth"}})
		case "/.well-known/oauth-authorization-server/auth":
			_ = json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL + "/auth", "token_endpoint": srv.URL + "/auth/token",
				"token_endpoint_auth_methods_supported": []string{"none"}})
		case "/auth/token":
			_ = r.ParseForm()
			if r.PostForm.Get("resource") != srv.URL+"/tenant/mcp" || r.PostForm.Get("client_id") != "cid" {
				w.WriteHeader(400)
				return
			}
			_, _ = w.Write([]byte(`{"access_token":"new","refresh_token":"r2","expires_in":3600}`))
		default:
			w.WriteHeader(404)
		}
	}))
	defer srv.Close()
	c := &MCPClient{}
	tok, err := c.RefreshMCP(context.Background(), MCPServer{ServerURL: srv.URL + "/tenant/mcp#frag", ClientID: "cid"}, "r1")
	if err != nil {
		t.Fatalf("refresh: %v (asked %v)", err, asked)
	}
	if tok.AccessToken.Reveal() != "new" {
		t.Error("wrong answer")
	}
}

func TestMCPErrorsNameNoURLAndRefusePlainRemoteHTTP(t *testing.T) {
	c := &MCPClient{Timeout: 500 * time.Millisecond}
	// Plain http to another host would carry the refresh token in the clear.
	_, err := c.RefreshMCP(context.Background(), MCPServer{ServerURL: "http://mcp.example.com/mcp?key=SECRETKEY",
		Discovery: credentials.Discovery{AuthorizationServerURL: "http://auth.example.com/?key=SECRETKEY"}}, "r")
	if err == nil || strings.Contains(err.Error(), "SECRETKEY") || strings.Contains(err.Error(), "example.com") {
		t.Fatalf("err = %v", err)
	}
	// Unreachable (a closed port): transient, no URL in the text.
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	_, err = c.RefreshMCP(context.Background(), MCPServer{ServerURL: url + "/mcp?key=SECRETKEY",
		Discovery: credentials.Discovery{AuthorizationServerURL: url + "/?key=SECRETKEY"}}, "r")
	if !errors.Is(err, ErrTransient) || strings.Contains(err.Error(), "SECRETKEY") || strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("err = %v", err)
	}
}

func TestMCPInvalidGrantAndServerText(t *testing.T) {
	var srv *httptest.Server
	status, body := 400, `{"error":"invalid_grant","error_description":"token sk-secret-123 was reused"}`
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/.well-known/") {
			_ = json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "token_endpoint": srv.URL + "/token"})
			return
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	defer srv.Close()
	c := &MCPClient{}
	s := MCPServer{ServerURL: srv.URL + "/mcp", Discovery: credentials.Discovery{AuthorizationServerURL: srv.URL}}
	_, err := c.RefreshMCP(context.Background(), s, "r")
	if !errors.Is(err, ErrInvalidGrant) || strings.Contains(err.Error(), "sk-secret") {
		t.Fatalf("err = %v", err)
	}
	status, body = 401, `{"error":"invalid_client sk-secret-123"}`
	_, err = c.RefreshMCP(context.Background(), s, "r")
	if err == nil || errors.Is(err, ErrTransient) || strings.Contains(err.Error(), "sk-secret") {
		t.Fatalf("err = %v", err)
	}
}
