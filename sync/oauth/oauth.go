// Package oauth is the refresh client for Claude's OAuth token endpoint: one
// bounded POST, JSON body, no retries of its own (the agent's backoff is the one
// retry layer). Endpoint, client id and user agent are configuration, with
// Claude Code's values as defaults; the scopes asked for are the login's own
// (RFC 6749 §6), so a refresh never narrows what the user logged in with.
package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

// Claude Code's values (see claude-code-facts.md); Anthropic may change them.
// The user agent and Accept header are what Claude Code 2.1.332's own refresh
// sends (its HTTP library's), so the endpoint sees the same request from us.
const (
	DefaultTokenURL  = "https://platform.claude.com/v1/oauth/token"
	DefaultClientID  = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
	DefaultUserAgent = "axios/1.15.2"
	acceptHeader     = "application/json, text/plain, */*"
)

var (
	// ErrInvalidGrant: the refresh token is spent, revoked or expired.
	ErrInvalidGrant = errors.New("invalid_grant")
	// ErrTransient: network, timeout, 5xx, 429: try again later.
	ErrTransient = errors.New("token endpoint unavailable")
)

// Client refreshes tokens.
type Client struct {
	TokenURL string
	ClientID string
	// Scopes, when set, replaces the login's own scopes in every request (a
	// site override, space separated); empty asks for what the login holds.
	Scopes    string
	UserAgent string
	Timeout   time.Duration // whole request (default 10 s)
	HTTP      *http.Client  // nil = a client honouring HTTPS_PROXY
}

// Token is a refresh response. It holds secrets and prints redacted.
type Token struct {
	AccessToken           credentials.Secret
	RefreshToken          credentials.Secret
	ExpiresIn             time.Duration
	RefreshTokenExpiresIn time.Duration // 0 when not given
	Scope                 string
	Raw                   json.RawMessage // the response body, for the durable pending record
}

func (t *Token) String() string { return "[redacted token response]" }

type response struct {
	AccessToken           string `json:"access_token"`
	RefreshToken          string `json:"refresh_token"`
	ExpiresIn             int64  `json:"expires_in"`
	RefreshTokenExpiresIn int64  `json:"refresh_token_expires_in"`
	Scope                 string `json:"scope"`
	Error                 string `json:"error"`
	ErrorDescription      string `json:"error_description"`
}

// ParseToken decodes a token response body (also used for a pending record).
func ParseToken(body []byte) (*Token, error) {
	var r response
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("token response is not JSON")
	}
	if r.AccessToken == "" || r.RefreshToken == "" || r.ExpiresIn <= 0 {
		return nil, fmt.Errorf("token response lacks access_token, refresh_token or expires_in")
	}
	return &Token{AccessToken: credentials.Secret(r.AccessToken), RefreshToken: credentials.Secret(r.RefreshToken),
		ExpiresIn: time.Duration(r.ExpiresIn) * time.Second, RefreshTokenExpiresIn: time.Duration(r.RefreshTokenExpiresIn) * time.Second,
		Scope: r.Scope, Raw: append(json.RawMessage(nil), body...)}, nil
}

// RequestScope is the scope a refresh asks for: the override when set, else
// the login's scopes in their order, else "" (the field is left out, which
// means "what was granted").
func (c *Client) RequestScope(loginScopes []string) string {
	if c.Scopes != "" {
		return strings.Join(strings.Fields(c.Scopes), " ")
	}
	return strings.Join(loginScopes, " ")
}

// Narrowed lists the login's scopes an override would drop (nil when none).
func (c *Client) Narrowed(loginScopes []string) []string {
	if c.Scopes == "" {
		return nil
	}
	asked := map[string]bool{}
	for _, s := range strings.Fields(c.Scopes) {
		asked[s] = true
	}
	var out []string
	for _, s := range loginScopes {
		if !asked[s] {
			out = append(out, s)
		}
	}
	return out
}

// tokenRequest is the body, in the field order Claude sends.
type tokenRequest struct {
	GrantType    string `json:"grant_type"`
	RefreshToken string `json:"refresh_token"`
	ClientID     string `json:"client_id"`
	Scope        string `json:"scope,omitempty"`
}

// Refresh trades the refresh token for a new pair, asking for loginScopes (the
// login's claudeAiOauth.scopes; nil when it has none). Errors wrap
// ErrInvalidGrant or ErrTransient, or say what was wrong; they never contain a
// token.
func (c *Client) Refresh(ctx context.Context, refresh credentials.Secret, loginScopes []string) (*Token, error) {
	if refresh == "" {
		return nil, fmt.Errorf("%w: no refresh token", ErrInvalidGrant)
	}
	body, _ := json.Marshal(tokenRequest{GrantType: "refresh_token", RefreshToken: refresh.Reveal(),
		ClientID: or(c.ClientID, DefaultClientID), Scope: c.RequestScope(loginScopes)})
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, or(c.TokenURL, DefaultTokenURL), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("token request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", acceptHeader)
	req.Header.Set("User-Agent", or(c.UserAgent, DefaultUserAgent))
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true}}
	}
	return exchange(hc, req, ParseToken,
		func(r response) string { return sanitize(r.ErrorDescription) },
		func(r response) string { return ": " + sanitize(r.Error) + " " + sanitize(r.ErrorDescription) })
}

// exchange sends a token request and reads the endpoint's answer, the same
// way for every token family: on 200 the token (parse reads it; an answer it
// cannot read is transient), ErrInvalidGrant when the server refuses the
// refresh token (refused says what it said, as it may be shown),
// ErrTransient on a transport failure, 429 or 5xx, else an error naming the
// status and what other says of the answer. No error names the URL or holds a
// token.
func exchange(hc *http.Client, req *http.Request, parse func([]byte) (*Token, error), refused, other func(response) string) (*Token, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTransient, causeOf(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the response: %v", ErrTransient, causeOf(err))
	}
	if resp.StatusCode == http.StatusOK {
		tok, err := parse(data)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrTransient, err)
		}
		return tok, nil
	}
	var r response
	_ = json.Unmarshal(data, &r)
	if r.Error == "invalid_grant" {
		return nil, fmt.Errorf("%w: %s", ErrInvalidGrant, refused(r))
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		return nil, fmt.Errorf("%w: HTTP %d", ErrTransient, resp.StatusCode)
	}
	return nil, fmt.Errorf("token endpoint answered HTTP %d%s", resp.StatusCode, other(r))
}

// causeOf drops the URL (url.Error) and the address (net.OpError) from a
// transport error: what is left says what went wrong, not where.
func causeOf(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return fmt.Errorf("%s: %w", oe.Op, oe.Err)
	}
	return err
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// sanitize keeps a server's words short and free of anything token-shaped.
func sanitize(s string) string {
	if len(s) > 200 {
		s = s[:200]
	}
	if strings.Contains(s, "sk-ant-") {
		return "[redacted]"
	}
	return s
}
