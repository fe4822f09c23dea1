package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

// An MCP server's login is refreshed the way Claude Code's MCP client does
// it: the token endpoint comes from the authorization server's metadata
// (RFC 8414, or OpenID Connect discovery), found from the entry's
// discoveryState, else from the server's protected-resource metadata
// (RFC 9728); the request is a form POST with grant_type=refresh_token,
// refresh_token and resource=<server URL>, no scope, and the client
// authenticates as the metadata says. Nothing here ever puts a URL in an
// error: a server URL may carry a key in its query.

// MCPServer is what a refresh of one MCP login needs from its entry.
type MCPServer struct {
	ServerURL    string
	ClientID     string
	ClientSecret credentials.Secret
	Discovery    credentials.Discovery
}

// MCPClient refreshes MCP server logins. Its zero value works.
type MCPClient struct {
	UserAgent string        // default: claude-auth-sync's own
	Timeout   time.Duration // each HTTP request (default 10 s)
	HTTP      *http.Client  // nil: a client honouring HTTPS_PROXY

	mu    sync.Mutex
	metas map[string]cachedMeta // by the URL it was found from
}

type cachedMeta struct {
	meta asMetadata
	at   time.Time
}

// asMetadata is what we use of an authorization server's metadata.
type asMetadata struct {
	Issuer        string   `json:"issuer"`
	TokenEndpoint string   `json:"token_endpoint"`
	AuthMethods   []string `json:"token_endpoint_auth_methods_supported"`
}

// MCPUserAgent is what MCP token requests say they are.
const MCPUserAgent = "claude-auth-sync (MCP refresher)"

const metaTTL = time.Hour

// ErrNoTokenEndpoint: no metadata names the server's token endpoint.
var ErrNoTokenEndpoint = errors.New("the MCP server's token endpoint cannot be found")

// RefreshMCP trades the entry's refresh token for new tokens. Errors wrap
// ErrInvalidGrant or ErrTransient, or say what was wrong; never a token or a URL.
func (c *MCPClient) RefreshMCP(ctx context.Context, s MCPServer, refresh credentials.Secret) (*Token, error) {
	if refresh == "" {
		return nil, fmt.Errorf("%w: no refresh token", ErrInvalidGrant)
	}
	meta, err := c.metadata(ctx, s)
	if err != nil {
		return nil, err
	}
	if err := allowedURL(meta.TokenEndpoint); err != nil {
		return nil, fmt.Errorf("token endpoint: %w", err)
	}
	form := url.Values{}
	form.Set("grant_type", "refresh_token")
	form.Set("refresh_token", refresh.Reveal())
	if r := resourceOf(s.ServerURL); r != "" {
		form.Set("resource", r)
	}
	method := authMethod(meta.AuthMethods, s.ClientSecret != "")
	switch method {
	case "client_secret_post":
		form.Set("client_id", s.ClientID)
		form.Set("client_secret", s.ClientSecret.Reveal())
	case "none":
		form.Set("client_id", s.ClientID)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, meta.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, errors.New("token request: the token endpoint is not a usable URL")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", or(c.UserAgent, MCPUserAgent))
	if method == "client_secret_basic" {
		req.SetBasicAuth(s.ClientID, s.ClientSecret.Reveal())
	}
	return exchange(c.client(), req, ParseMCPToken,
		func(response) string { return "the MCP authorization server refused the refresh token" },
		func(r response) string {
			if c := errorCode(r.Error); c != "" {
				return " " + c
			}
			return ""
		})
}

// ParseMCPToken reads an MCP token endpoint's answer: an access token, and
// optionally a new refresh token, a lifetime and a scope.
func ParseMCPToken(body []byte) (*Token, error) {
	var r struct {
		AccessToken  string          `json:"access_token"`
		RefreshToken string          `json:"refresh_token"`
		ExpiresIn    json.RawMessage `json:"expires_in"`
		Scope        string          `json:"scope"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, errors.New("token response is not JSON")
	}
	if r.AccessToken == "" {
		return nil, errors.New("token response lacks access_token")
	}
	var secs float64
	if len(r.ExpiresIn) > 0 && string(r.ExpiresIn) != "null" {
		// Some servers send the number as a string.
		s := strings.Trim(string(r.ExpiresIn), `"`)
		if _, err := fmt.Sscan(s, &secs); err != nil || secs < 0 {
			return nil, errors.New("token response has an unreadable expires_in")
		}
	}
	return &Token{AccessToken: credentials.Secret(r.AccessToken), RefreshToken: credentials.Secret(r.RefreshToken),
		ExpiresIn: time.Duration(secs * float64(time.Second)), Scope: r.Scope,
		Raw: append(json.RawMessage(nil), body...)}, nil
}

// authMethod picks the client authentication the way Claude's MCP client
// does: with a secret, basic when the server supports it, else post; without
// one, none. No list at all means basic (RFC 8414's default).
func authMethod(supported []string, hasSecret bool) string {
	if !hasSecret {
		return "none"
	}
	if len(supported) == 0 {
		return "client_secret_basic"
	}
	for _, want := range []string{"client_secret_basic", "client_secret_post"} {
		for _, m := range supported {
			if m == want {
				return want
			}
		}
	}
	return "client_secret_post"
}

// resourceOf is the server URL as an RFC 8707 resource: without a fragment.
func resourceOf(serverURL string) string {
	u, err := url.Parse(serverURL)
	if err != nil {
		return ""
	}
	u.Fragment, u.RawFragment = "", ""
	return u.String()
}

// metadata finds the authorization server's metadata: from the entry's
// authorization server, else its stored metadata URL, else the server's
// protected-resource metadata.
func (c *MCPClient) metadata(ctx context.Context, s MCPServer) (asMetadata, error) {
	var firstErr error
	try := func(urls []string) (asMetadata, bool) {
		for _, u := range urls {
			m, err := c.fetchMeta(ctx, u)
			if err == nil {
				return m, true
			}
			if firstErr == nil || errors.Is(err, ErrTransient) {
				firstErr = err
			}
		}
		return asMetadata{}, false
	}
	if as := s.Discovery.AuthorizationServerURL; as != "" {
		if m, ok := try(metadataURLs(as)); ok {
			return m, nil
		}
	}
	if mu := s.Discovery.AuthServerMetadataURL; mu != "" {
		if m, ok := try([]string{mu}); ok {
			return m, nil
		}
	}
	if as, err := c.protectedResourceAS(ctx, s); err == nil {
		if m, ok := try(metadataURLs(as)); ok {
			return m, nil
		}
	} else if firstErr == nil || errors.Is(err, ErrTransient) {
		firstErr = err
	}
	if errors.Is(firstErr, ErrTransient) {
		return asMetadata{}, firstErr
	}
	if firstErr != nil {
		return asMetadata{}, fmt.Errorf("%w: %v", ErrNoTokenEndpoint, firstErr)
	}
	return asMetadata{}, ErrNoTokenEndpoint
}

// metadataURLs are where an issuer's metadata may be: RFC 8414's
// path-inserted well-known URI, OpenID's (both placements), and the root one.
func metadataURLs(issuer string) []string {
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" {
		return nil
	}
	origin := u.Scheme + "://" + u.Host
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	out := []string{origin + "/.well-known/oauth-authorization-server" + path}
	if path == "" {
		return append(out, origin+"/.well-known/openid-configuration")
	}
	return append(out, origin+"/.well-known/openid-configuration"+path,
		origin+path+"/.well-known/openid-configuration",
		origin+"/.well-known/oauth-authorization-server")
}

// protectedResourceAS is the first authorization server the MCP server's
// RFC 9728 metadata names.
func (c *MCPClient) protectedResourceAS(ctx context.Context, s MCPServer) (string, error) {
	var urls []string
	if s.Discovery.ResourceMetadataURL != "" {
		urls = append(urls, s.Discovery.ResourceMetadataURL)
	}
	if u, err := url.Parse(s.ServerURL); err == nil && u.Host != "" {
		origin := u.Scheme + "://" + u.Host
		if p := strings.TrimSuffix(u.EscapedPath(), "/"); p != "" {
			urls = append(urls, origin+"/.well-known/oauth-protected-resource"+p)
		}
		urls = append(urls, origin+"/.well-known/oauth-protected-resource")
	}
	var last error = ErrNoTokenEndpoint
	for _, mu := range urls {
		var prm struct {
			AuthorizationServers []string `json:"authorization_servers"`
		}
		if err := c.getJSON(ctx, mu, &prm); err != nil {
			last = err
			continue
		}
		if len(prm.AuthorizationServers) > 0 && prm.AuthorizationServers[0] != "" {
			return prm.AuthorizationServers[0], nil
		}
		last = errors.New("the protected-resource metadata names no authorization server")
	}
	return "", last
}

func (c *MCPClient) fetchMeta(ctx context.Context, metaURL string) (asMetadata, error) {
	c.mu.Lock()
	cm, ok := c.metas[metaURL]
	c.mu.Unlock()
	if ok && time.Since(cm.at) < metaTTL {
		return cm.meta, nil
	}
	var m asMetadata
	if err := c.getJSON(ctx, metaURL, &m); err != nil {
		return asMetadata{}, err
	}
	if m.TokenEndpoint == "" {
		return asMetadata{}, errors.New("the authorization server's metadata has no token_endpoint")
	}
	c.mu.Lock()
	if c.metas == nil {
		c.metas = map[string]cachedMeta{}
	}
	c.metas[metaURL] = cachedMeta{meta: m, at: time.Now()}
	c.mu.Unlock()
	return m, nil
}

// getJSON GETs a metadata document.
func (c *MCPClient) getJSON(ctx context.Context, u string, v any) error {
	if err := allowedURL(u); err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return errors.New("metadata: not a usable URL")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", or(c.UserAgent, MCPUserAgent))
	resp, err := c.client().Do(req)
	if err != nil {
		return fmt.Errorf("%w: metadata: %v", ErrTransient, causeOf(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%w: metadata: %v", ErrTransient, causeOf(err))
	}
	if resp.StatusCode == 429 || resp.StatusCode >= 500 {
		return fmt.Errorf("%w: metadata: HTTP %d", ErrTransient, resp.StatusCode)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("metadata: HTTP %d", resp.StatusCode)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return errors.New("metadata: not JSON")
	}
	return nil
}

// allowedURL: tokens go over https, or plain http to this machine only.
func allowedURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return errors.New("not an absolute URL")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if host == "localhost" {
			return nil
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			return nil
		}
		return errors.New("plain http to another host carries tokens in the clear; refused")
	}
	return errors.New("not an http(s) URL")
}

func (c *MCPClient) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return 10 * time.Second
}

func (c *MCPClient) client() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true},
		// A redirect could carry the form elsewhere: refuse to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// errorCode is an OAuth error code as it may be shown: a short word of
// [a-z_] (RFC 6749 §5.2), else nothing. A server's free text is never shown.
func errorCode(code string) string {
	if code == "" || len(code) > 40 {
		return ""
	}
	for _, r := range code {
		if (r < 'a' || r > 'z') && r != '_' {
			return ""
		}
	}
	return "(" + code + ")"
}
