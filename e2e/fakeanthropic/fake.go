// Package fakeanthropic is a local stand-in for Anthropic's two endpoints that a
// Claude login touches: the OAuth token endpoint (refresh tokens rotate, a spent
// one gets invalid_grant, a refresh revokes older access tokens) and the
// messages endpoint (checks the bearer, answers like the real API). Nobody can
// reach Anthropic from a test machine; this is what tests and the demo talk to.
package fakeanthropic

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Login is one issued credential pair.
type Login struct {
	AccessToken  string
	RefreshToken string
	ExpiresAt    time.Time
}

// Counters are what a test asserts on.
type Counters struct {
	Refreshes    int
	InvalidGrant int
	Messages     int
	OK           int
	Unauthorized int
	Forbidden    int
}

type access struct {
	expires time.Time // server-side end (may be before what the client was told)
	revoked bool
	family  int
}

type refresh struct {
	spent  bool
	family int
}

// Server is the fake. The zero value is not usable; call New.
type Server struct {
	mu sync.Mutex
	// ExpiresIn is what a refresh advertises (default 8 h).
	ExpiresIn time.Duration
	// ServerLifetime, when > 0, ends access tokens server-side this long after
	// issue, whatever expires_in said (401 while the client thinks it is valid).
	ServerLifetime time.Duration
	// Reply is the text the messages endpoint answers (default AUTH_OK).
	Reply string
	// FailStatus, when non-zero, makes every messages call fail with it (e.g. 500, 529).
	FailStatus int
	// TokenDelay, when > 0, holds every token-endpoint request this long
	// before answering it, so a test can watch what a client does (e.g. which
	// lock directories it holds) while its refresh is in flight.
	TokenDelay time.Duration
	// BeforeRefresh, when set (before serving), is called for every token
	// request before it is answered, with the refresh token presented and the
	// client's User-Agent: a test checks there what Vault holds at that moment.
	BeforeRefresh func(refreshToken, userAgent string)

	refreshedBy map[string]int // successful refreshes per User-Agent

	toolSuffix  string   // SetMCPTool: answer tool_use for mcp__<server>__<toolSuffix>
	toolUses    []string // tool names the fake asked the client to call
	toolResults []string // tool_result texts the client sent back
	// Now is the server's clock.
	Now func() time.Time

	access   map[string]*access
	refresh  map[string]*refresh
	families int
	// granted is each login family's scope, as the server granted it: a
	// refresh that asks for scopes is granted exactly those (what an OAuth
	// server does when asked for the original ones or fewer; the fake does not
	// refuse more), one that asks for none keeps what the family had.
	granted  map[int]string
	requests []TokenRequest
	counters Counters
	received []string // refresh tokens presented, in order
	issued   []string // every access and refresh token minted, in order
}

// DefaultScopes is what a login from Issue is granted: the scopes
// CredentialsJSON writes into the file.
var DefaultScopes = []string{"user:inference", "user:profile", "user:sessions:claude_code"}

// TokenRequest is what one token-endpoint request asked for (no secrets).
type TokenRequest struct {
	UserAgent string
	Accept    string
	// Fields are the JSON body's keys, in the order sent.
	Fields []string
	// Scope is the scope asked for; HasScope is false when the field was left out.
	Scope    string
	HasScope bool
	ClientID string
}

// New returns a fake with an 8 h token lifetime.
func New() *Server {
	return &Server{ExpiresIn: 8 * time.Hour, Reply: "AUTH_OK", Now: time.Now,
		access: map[string]*access{}, refresh: map[string]*refresh{}, granted: map[int]string{}}
}

// TokenRequests lists every token-endpoint request received, in order.
func (s *Server) TokenRequests() []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TokenRequest(nil), s.requests...)
}

func token(prefix string) string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// Issue mints a fresh login, as an interactive `claude auth login` would.
func (s *Server) Issue() Login {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.families++
	s.granted[s.families] = strings.Join(DefaultScopes, " ")
	return s.issueLocked(s.families)
}

func (s *Server) issueLocked(family int) Login {
	now := s.Now()
	l := Login{AccessToken: token("sk-ant-oat01-fake-"), RefreshToken: token("sk-ant-ort01-fake-"), ExpiresAt: now.Add(s.ExpiresIn)}
	end := l.ExpiresAt
	if s.ServerLifetime > 0 {
		end = now.Add(s.ServerLifetime)
	}
	s.access[l.AccessToken] = &access{expires: end, family: family}
	s.refresh[l.RefreshToken] = &refresh{family: family}
	s.issued = append(s.issued, l.AccessToken, l.RefreshToken)
	return l
}

// Issued lists every access and refresh token the fake has minted (by Issue or
// by a refresh), in order, so a test can assert none of them leaks.
func (s *Server) Issued() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}

// SetFailStatus sets FailStatus while the server may be serving (0 = answer normally).
func (s *Server) SetFailStatus(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.FailStatus = status
}

// SetExpiresIn sets ExpiresIn (for logins issued and refreshed from now on)
// while serving.
func (s *Server) SetExpiresIn(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ExpiresIn = d
}

// SetServerLifetime sets ServerLifetime (for tokens issued from now on) while
// the server may be serving.
func (s *Server) SetServerLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ServerLifetime = d
}

// SetTokenDelay sets TokenDelay while the server may be serving.
func (s *Server) SetTokenDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.TokenDelay = d
}

// SetReply sets Reply while the server may be serving.
func (s *Server) SetReply(text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Reply = text
}

// Revoke makes an access token answer 403 "revoked".
func (s *Server) Revoke(accessToken string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.access[accessToken]; ok {
		a.revoked = true
	}
}

// RefreshesBy counts successful HTTP refreshes per client User-Agent.
func (s *Server) RefreshesBy() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, v := range s.refreshedBy {
		out[k] = v
	}
	return out
}

// Counters returns a snapshot of the counters.
func (s *Server) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters
}

// Received lists the refresh tokens presented to the token endpoint, in order.
func (s *Server) Received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.received...)
}

// Handler serves /v1/oauth/token and /v1/messages.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/oauth/token", s.serveToken)
	mux.HandleFunc("POST /v1/messages", s.serveMessages)
	return mux
}

// ErrInvalidGrant is what a spent or unknown refresh token gets.
var ErrInvalidGrant = errors.New("invalid_grant")

// Rotate performs a refresh exactly as the token endpoint would (the refresh
// token is spent, the family's older access tokens are revoked), for tests that
// play Claude without HTTP.
func (s *Server) Rotate(refreshToken string) (Login, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rotateLocked(refreshToken)
}

func (s *Server) rotateLocked(refreshToken string) (Login, error) {
	s.received = append(s.received, refreshToken)
	rt, ok := s.refresh[refreshToken]
	if !ok || rt.spent {
		s.counters.InvalidGrant++
		return Login{}, ErrInvalidGrant
	}
	rt.spent = true
	// A refresh revokes the family's older access tokens.
	for _, a := range s.access {
		if a.family == rt.family {
			a.revoked = true
		}
	}
	s.counters.Refreshes++
	return s.issueLocked(rt.family), nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<16))
	var req struct {
		GrantType    string  `json:"grant_type"`
		RefreshToken string  `json:"refresh_token"`
		ClientID     string  `json:"client_id"`
		Scope        *string `json:"scope"`
	}
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil || req.GrantType != "refresh_token" {
		writeJSON(w, 400, map[string]string{"error": "invalid_request", "error_description": "Invalid request format"})
		return
	}
	seen := TokenRequest{UserAgent: r.UserAgent(), Accept: r.Header.Get("Accept"), Fields: jsonKeys(body), ClientID: req.ClientID}
	if req.Scope != nil {
		seen.Scope, seen.HasScope = *req.Scope, true
	}
	s.mu.Lock()
	s.requests = append(s.requests, seen)
	delay, hook := s.TokenDelay, s.BeforeRefresh
	s.mu.Unlock()
	if hook != nil {
		hook(req.RefreshToken, r.UserAgent())
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	family := 0
	if rt, ok := s.refresh[req.RefreshToken]; ok {
		family = rt.family
	}
	l, err := s.rotateLocked(req.RefreshToken)
	if err != nil {
		writeJSON(w, 400, map[string]string{"error": "invalid_grant", "error_description": "Refresh token not found or invalid"})
		return
	}
	if s.refreshedBy == nil {
		s.refreshedBy = map[string]int{}
	}
	s.refreshedBy[r.UserAgent()]++
	scope := s.granted[family]
	if seen.HasScope && seen.Scope != "" {
		scope = seen.Scope
	}
	s.granted[family] = scope
	writeJSON(w, 200, map[string]any{
		"token_type": "Bearer", "access_token": l.AccessToken, "refresh_token": l.RefreshToken,
		"expires_in": int(s.ExpiresIn / time.Second), "scope": scope,
		"account": map[string]string{"uuid": "00000000-0000-4000-8000-000000000001", "email_address": "user@example.invalid"},
	})
}

// jsonKeys lists a JSON object's top-level keys in order (nil if not an object).
func jsonKeys(body []byte) []string {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var keys []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return keys
		}
		k, _ := t.(string)
		keys = append(keys, k)
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return keys
		}
	}
	return keys
}

func (s *Server) serveMessages(w http.ResponseWriter, r *http.Request) {
	bearer := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if bearer == "" {
		bearer = r.Header.Get("x-api-key")
	}
	var req messagesRequest
	_ = json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<20)).Decode(&req)

	s.mu.Lock()
	s.counters.Messages++
	a, ok := s.access[bearer]
	now := s.Now()
	status, errType, msg := 200, "", ""
	switch {
	case s.FailStatus != 0:
		status, errType, msg = s.FailStatus, "api_error", "Internal server error"
		if s.FailStatus == 529 {
			errType, msg = "overloaded_error", "Overloaded"
		}
	case !ok:
		status, errType, msg = 401, "authentication_error", "Invalid bearer token"
	case a.revoked:
		status, errType, msg = 403, "permission_error", "OAuth token has been revoked. Please obtain a new token or refresh your existing token."
	case !now.Before(a.expires):
		status, errType, msg = 401, "authentication_error", "OAuth token has expired. Please obtain a new token or refresh your existing token."
	}
	switch status {
	case 200:
		s.counters.OK++
	case 401:
		s.counters.Unauthorized++
	case 403:
		s.counters.Forbidden++
	}
	reply := s.Reply
	toolSuffix := s.toolSuffix
	s.mu.Unlock()

	if status != 200 {
		w.Header().Set("request-id", "req_fake")
		writeJSON(w, status, map[string]any{"type": "error", "error": map[string]string{"type": errType, "message": msg}})
		return
	}
	model := req.Model
	if model == "" {
		model = "claude-haiku-4-5"
	}
	id := "msg_" + token("")[:24]
	usage := map[string]int{"input_tokens": 12, "output_tokens": 4}
	block := map[string]any{"type": "text", "text": reply}
	stop := "end_turn"
	if toolSuffix != "" {
		if tool, ok := req.mcpTool(toolSuffix); ok {
			if result, answered := req.lastToolResult(); answered {
				s.mu.Lock()
				s.toolResults = append(s.toolResults, result)
				s.mu.Unlock()
				block = map[string]any{"type": "text", "text": result}
			} else {
				s.mu.Lock()
				s.toolUses = append(s.toolUses, tool)
				s.mu.Unlock()
				block = map[string]any{"type": "tool_use", "id": "toolu_" + token("")[:24], "name": tool, "input": map[string]any{}}
				stop = "tool_use"
			}
		}
	}
	if !req.Stream {
		writeJSON(w, 200, map[string]any{"id": id, "type": "message", "role": "assistant", "model": model,
			"content":     []map[string]any{block},
			"stop_reason": stop, "stop_sequence": nil, "usage": usage})
		return
	}
	start, delta := map[string]any{"type": "text", "text": ""}, map[string]any{"type": "text_delta", "text": block["text"]}
	if block["type"] == "tool_use" {
		start = map[string]any{"type": "tool_use", "id": block["id"], "name": block["name"], "input": map[string]any{}}
		delta = map[string]any{"type": "input_json_delta", "partial_json": "{}"}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	events := []struct {
		name string
		data any
	}{
		{"message_start", map[string]any{"type": "message_start", "message": map[string]any{"id": id, "type": "message", "role": "assistant", "model": model, "content": []any{}, "stop_reason": nil, "stop_sequence": nil, "usage": usage}}},
		{"content_block_start", map[string]any{"type": "content_block_start", "index": 0, "content_block": start}},
		{"content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": delta}},
		{"content_block_stop", map[string]any{"type": "content_block_stop", "index": 0}},
		{"message_delta", map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": stop, "stop_sequence": nil}, "usage": map[string]int{"output_tokens": 4}}},
		{"message_stop", map[string]any{"type": "message_stop"}},
	}
	fl, _ := w.(http.Flusher)
	for _, ev := range events {
		b, _ := json.Marshal(ev.data)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.name, b)
		if fl != nil {
			fl.Flush()
		}
	}
}

// CredentialsJSON renders a credentials file holding l, with the fields Claude
// writes and one unknown top-level key, as a real file would have.
func CredentialsJSON(l Login) []byte {
	doc := map[string]any{
		"claudeAiOauth": map[string]any{
			"accessToken": l.AccessToken, "refreshToken": l.RefreshToken, "expiresAt": l.ExpiresAt.UnixMilli(),
			"scopes":           DefaultScopes,
			"subscriptionType": "enterprise", "rateLimitTier": "default_claude_max_20x",
		},
		"mcpOAuth": map[string]any{"example|0123abcd": map[string]any{"serverName": "example", "accessToken": "mcp-fake-token", "expiresAt": 0}},
	}
	b, _ := json.MarshalIndent(doc, "", "  ")
	return b
}
