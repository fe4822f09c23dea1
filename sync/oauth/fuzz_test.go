package oauth

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

// FuzzParseToken: whatever the token endpoint (or a pending-refresh record)
// holds, parsing never panics, and a parsed answer has both tokens and a
// positive lifetime, and prints without them.
func FuzzParseToken(f *testing.F) {
	f.Add([]byte(`{"access_token":"sk-ant-oat01-a","refresh_token":"sk-ant-ort01-r","expires_in":28800,"scope":"user:inference user:profile"}`))
	f.Add([]byte(`{"access_token":"a","refresh_token":"r","expires_in":-1}`))
	f.Add([]byte(`{"access_token":1,"refresh_token":null,"expires_in":"28800"}`))
	f.Add([]byte(`{"access_token":"a","refresh_token":"r","expires_in":1e300,"refresh_token_expires_in":9223372036854775807}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, err := ParseToken(body)
		if err != nil {
			if strings.Contains(err.Error(), "sk-ant-") {
				t.Fatalf("a parse error quotes a token: %v", err)
			}
			return
		}
		if tok.AccessToken == "" || tok.RefreshToken == "" || tok.ExpiresIn <= 0 {
			t.Fatalf("accepted an answer without tokens or lifetime")
		}
		// Exactly the redaction: a one-letter token is a substring of any
		// text (testdata/fuzz/FuzzParseToken/1387a9fb86dd0c85: "a").
		if s := tok.String(); s != "[redacted token response]" {
			t.Fatalf("a token response prints as %q", s)
		}
		if s := fmt.Sprintf("%v %+v %s", tok, tok, tok); strings.Contains(s, tok.AccessToken.Reveal()) && len(tok.AccessToken) > 8 {
			t.Fatalf("a token response prints its access token")
		}
	})
}

// bodyTransport answers every request with a fixed status and body.
type bodyTransport struct {
	status int
	body   []byte
}

func (b bodyTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: b.status, Body: io.NopCloser(bytes.NewReader(b.body)), Header: http.Header{}}, nil
}

// FuzzRefreshResponse: any status and body from the token endpoint gives a
// token or an error; the error is one of the kinds callers branch on or says
// what was wrong, and never quotes a token (not the one sent, not one in the
// body).
func FuzzRefreshResponse(f *testing.F) {
	f.Add(200, []byte(`{"access_token":"x","refresh_token":"y","expires_in":60}`))
	f.Add(400, []byte(`{"error":"invalid_grant","error_description":"Refresh token not found or invalid"}`))
	f.Add(400, []byte(`{"error":"invalid_request","error_description":"bad sk-ant-ort01-echoedTOKENechoed"}`))
	f.Add(500, []byte(`<html>oops</html>`))
	f.Add(429, []byte(``))
	f.Add(401, []byte(`{"error":"sk-ant-oat01-`+strings.Repeat("x", 300)+`"}`))
	const sent = credentials.Secret("sk-ant-ort01-SENTsentSENTsent")
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 999 {
			return
		}
		c := &Client{TokenURL: "http://token.invalid/v1/oauth/token", Timeout: time.Second, HTTP: &http.Client{Transport: bodyTransport{status, body}}}
		tok, err := c.Refresh(context.Background(), sent, nil)
		if err == nil {
			if status != 200 || tok == nil || tok.RefreshToken == "" {
				t.Fatalf("status %d accepted as a refresh", status)
			}
			return
		}
		msg := err.Error()
		if strings.Contains(msg, sent.Reveal()) || strings.Contains(msg, "sk-ant-") {
			t.Fatalf("refresh error quotes a token: %q", msg)
		}
	})
}
