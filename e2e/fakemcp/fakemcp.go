// Package fakemcp is a local stand-in for a remote MCP server that needs an
// OAuth login, as Claude Code's `mcpOAuth` credentials talk to: an OAuth
// authorization server (RFC 8414 / OpenID metadata, a refresh-token grant with
// rotating refresh tokens and reuse detection) and a Streamable HTTP MCP
// server (JSON-RPC over POST) that accepts only that server's bearer tokens
// and points clients at it with RFC 9728 protected-resource metadata.
//
// Both live on one plain-http listener on 127.0.0.1. Nothing here dials out.
package fakemcp

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// AuthMethod is how a client authenticates at the token endpoint, as named in
// token_endpoint_auth_methods_supported.
type AuthMethod string

// The client authentication methods the fake can demand.
const (
	AuthNone  AuthMethod = "none"                // public client: client_id only
	AuthPost  AuthMethod = "client_secret_post"  // client_id and client_secret in the form
	AuthBasic AuthMethod = "client_secret_basic" // HTTP Basic with client_id:client_secret
)

// Rotation is what a refresh does with the refresh token.
type Rotation int

// Refresh-token behaviours.
const (
	// Rotate spends the presented refresh token and returns a new one; a spent
	// one presented again is reuse: invalid_grant and the whole login family
	// is revoked.
	Rotate Rotation = iota
	// Same keeps the refresh token and returns it again.
	Same
	// Omit keeps the refresh token and leaves refresh_token out of the answer.
	Omit
)

func (r Rotation) String() string {
	switch r {
	case Rotate:
		return "rotate"
	case Same:
		return "same"
	case Omit:
		return "omit"
	}
	return "rotation(?)"
}

// Options configure a Server. The zero value is a public client ("none"),
// rotating refresh tokens and one-hour access tokens.
type Options struct {
	// AuthMethod is the one method advertised and demanded (default AuthNone).
	AuthMethod AuthMethod
	// ClientID is the registered client (default "fakemcp-client").
	ClientID string
	// ClientSecret is its secret for AuthPost / AuthBasic (default "fakemcp-secret").
	ClientSecret string
	// ExpiresIn is the access-token lifetime a refresh grants and advertises
	// (default 1 h).
	ExpiresIn time.Duration
	// Rotation is the refresh-token behaviour (default Rotate).
	Rotation Rotation
	// Scope is the scope granted (default "mcp:tools").
	Scope string
	// ToolName is the one tool the MCP server offers (default "ping").
	ToolName string
	// ToolText is what the tool answers (default "PONG").
	ToolText string
}

// Login is one issued token set.
type Login struct {
	AccessToken  string
	RefreshToken string
	ExpiresAt    time.Time
}

// Counters are what a test asserts on.
type Counters struct {
	// Refreshes counts successful refresh-token grants.
	Refreshes int
	// RefreshesByAgent counts those whose User-Agent is Go's default or names
	// claude-auth-sync; RefreshesByClaude all the others.
	RefreshesByAgent  int
	RefreshesByClaude int
	// InvalidGrant counts refresh requests answered invalid_grant (reuse,
	// unknown or revoked tokens).
	InvalidGrant int
	// ReuseDetected counts presentations of an already spent refresh token.
	ReuseDetected int
	// FamiliesRevoked counts login families revoked because of reuse.
	FamiliesRevoked int
	// WrongResource counts refresh requests whose resource was missing or
	// not the MCP endpoint's URL (they are still answered).
	WrongResource int
	// InvalidClient counts token requests rejected for client authentication.
	InvalidClient int
	// Failed counts token requests answered with the configured fail status.
	Failed int
	// ToolCalls counts successful tools/call requests; MCPRequests every
	// authorised MCP POST; FailedToolCalls every 401 on the MCP endpoint.
	ToolCalls       int
	MCPRequests     int
	FailedToolCalls int
}

// TokenRequest is what one token-endpoint request carried. Token values are
// not kept here: RefreshTokenIndex tells which issued refresh token it was.
type TokenRequest struct {
	At        time.Time
	UserAgent string
	// ContentType and Accept are the request's headers.
	ContentType string
	Accept      string
	// Fields are the form's field names, sorted.
	Fields    []string
	GrantType string
	ClientID  string
	Resource  string
	Scope     string
	HasScope  bool
	// Auth is how the client authenticated: "none", "client_secret_post",
	// "client_secret_basic" (what it sent, right or wrong).
	Auth string
	// RefreshTokenIndex is the position of the presented refresh token in
	// Issued() (-1: unknown to the server).
	RefreshTokenIndex int
	// Status is the HTTP status answered; Error the OAuth error, if any.
	Status int
	Error  string
}

// MCPRequest is one request to the MCP endpoint (the bearer is not kept:
// BearerIndex is its position in Issued(), -1 unknown, -2 none).
type MCPRequest struct {
	At          time.Time
	Method      string // JSON-RPC method ("" for a GET or an unparsable body)
	HTTPMethod  string
	UserAgent   string
	BearerIndex int
	Status      int
}

type accessToken struct {
	family  int
	expires time.Time
	revoked bool
}

type refreshToken struct {
	family  int
	spent   bool
	revoked bool
}

// Server is the fake. Create it with New (listening) or NewUnstarted.
type Server struct {
	srv  *httptest.Server
	base string

	mu       sync.Mutex
	opts     Options
	delay    time.Duration
	fail     int
	now      func() time.Time
	access   map[string]*accessToken
	refresh  map[string]*refreshToken
	revoked  map[int]bool
	families int
	issued   []string
	index    map[string]int
	counters Counters
	tokenReq []TokenRequest
	mcpReq   []MCPRequest
}

// New starts a fake on 127.0.0.1 with opts. Close it when done.
func New(opts Options) *Server {
	s := NewUnstarted(opts)
	s.srv = httptest.NewServer(s.Handler())
	s.base = s.srv.URL
	return s
}

// NewUnstarted returns a fake that is not listening: serve Handler() yourself
// and tell it its base URL with SetBaseURL.
func NewUnstarted(opts Options) *Server {
	if opts.AuthMethod == "" {
		opts.AuthMethod = AuthNone
	}
	if opts.ClientID == "" {
		opts.ClientID = "fakemcp-client"
	}
	if opts.ClientSecret == "" && opts.AuthMethod != AuthNone {
		opts.ClientSecret = "fakemcp-secret"
	}
	if opts.ExpiresIn <= 0 {
		opts.ExpiresIn = time.Hour
	}
	if opts.Scope == "" {
		opts.Scope = "mcp:tools"
	}
	if opts.ToolName == "" {
		opts.ToolName = "ping"
	}
	if opts.ToolText == "" {
		opts.ToolText = "PONG"
	}
	return &Server{opts: opts, now: time.Now, access: map[string]*accessToken{},
		refresh: map[string]*refreshToken{}, revoked: map[int]bool{}, index: map[string]int{}}
}

// SetBaseURL sets the base URL (scheme://host:port, no trailing slash) of an
// unstarted server that is served elsewhere.
func (s *Server) SetBaseURL(u string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.base = strings.TrimRight(u, "/")
}

// Close stops a server started by New.
func (s *Server) Close() {
	if s.srv != nil {
		s.srv.Close()
	}
}

// URL is the base URL: the issuer of the authorization server.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.base
}

// MCPURL is the MCP endpoint (the protected resource): URL()+"/mcp".
func (s *Server) MCPURL() string { return s.URL() + "/mcp" }

// Options returns the options in force (defaults filled in).
func (s *Server) Options() Options {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts
}

// SetDelay holds every token request this long before answering it.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// SetFailStatus makes every token request fail with status (e.g. 503); 0
// answers normally again.
func (s *Server) SetFailStatus(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = status
}

// SetExpiresIn sets the lifetime of access tokens issued from now on.
func (s *Server) SetExpiresIn(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.ExpiresIn = d
}

// SetRotation sets the refresh-token behaviour from now on.
func (s *Server) SetRotation(r Rotation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Rotation = r
}

// SetClock replaces the server's clock (default time.Now).
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

func newToken(prefix string) string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// Issue mints a fresh login (a new family), as a completed authorization
// would, with the configured access-token lifetime.
func (s *Server) Issue() Login {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issueNewLocked(s.opts.ExpiresIn)
}

// IssueFor is Issue with an access token that ends after lifetime (e.g. a
// few minutes, to seed a login that is due for a proactive refresh).
func (s *Server) IssueFor(lifetime time.Duration) Login {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issueNewLocked(lifetime)
}

func (s *Server) issueNewLocked(lifetime time.Duration) Login {
	s.families++
	f := s.families
	l := Login{AccessToken: s.mintLocked("fakemcp-at-"), RefreshToken: s.mintLocked("fakemcp-rt-"), ExpiresAt: s.now().Add(lifetime)}
	s.access[l.AccessToken] = &accessToken{family: f, expires: l.ExpiresAt}
	s.refresh[l.RefreshToken] = &refreshToken{family: f}
	return l
}

func (s *Server) mintLocked(prefix string) string {
	t := newToken(prefix)
	s.index[t] = len(s.issued)
	s.issued = append(s.issued, t)
	return t
}

// Issued lists every token minted, in order, so a test can check that none
// leaks and can tell which one a request carried.
func (s *Server) Issued() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}

// IndexOf is a token's position in Issued() (-1 if the server never minted it).
func (s *Server) IndexOf(token string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.indexLocked(token)
}

func (s *Server) indexLocked(token string) int {
	if i, ok := s.index[token]; ok {
		return i
	}
	return -1
}

// Valid tells whether an access token would be accepted now.
func (s *Server) Valid(access string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.access[access]
	return ok && !a.revoked && s.now().Before(a.expires)
}

// RefreshValid tells whether a refresh token would be accepted now.
func (s *Server) RefreshValid(refresh string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.refresh[refresh]
	return ok && !r.spent && !r.revoked
}

// RevokeFamily revokes every token of the login that token (access or
// refresh) belongs to, as reuse detection does.
func (s *Server) RevokeFamily(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.access[token]; ok {
		s.revokeFamilyLocked(a.family)
	} else if r, ok := s.refresh[token]; ok {
		s.revokeFamilyLocked(r.family)
	}
}

func (s *Server) revokeFamilyLocked(f int) bool {
	if s.revoked[f] {
		return false
	}
	s.revoked[f] = true
	for _, a := range s.access {
		if a.family == f {
			a.revoked = true
		}
	}
	for _, r := range s.refresh {
		if r.family == f {
			r.revoked = true
		}
	}
	return true
}

// Counters returns a snapshot of the counters.
func (s *Server) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters
}

// TokenRequests lists every token-endpoint request, in order.
func (s *Server) TokenRequests() []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TokenRequest(nil), s.tokenReq...)
}

// MCPRequests lists every request to the MCP endpoint, in order.
func (s *Server) MCPRequests() []MCPRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]MCPRequest(nil), s.mcpReq...)
}

// IsAgent tells whether a User-Agent is claude-auth-sync's (Go's default
// client UA, or one naming claude-auth-sync); anything else counts as Claude.
func IsAgent(userAgent string) bool {
	return strings.HasPrefix(userAgent, "Go-http-client/") || strings.Contains(strings.ToLower(userAgent), "claude-auth-sync")
}

// Handler serves the metadata, token and MCP endpoints.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", s.serveASMetadata)
	mux.HandleFunc("GET /.well-known/openid-configuration", s.serveASMetadata)
	mux.HandleFunc("GET /.well-known/oauth-protected-resource", s.servePRMetadata)
	mux.HandleFunc("GET /.well-known/oauth-protected-resource/mcp", s.servePRMetadata)
	mux.HandleFunc("POST /token", s.serveToken)
	mux.HandleFunc("/mcp", s.serveMCP)
	return mux
}

// ErrInvalidGrant is what Refresh returns for a refresh token the server
// does not accept.
var ErrInvalidGrant = errors.New("invalid_grant")
