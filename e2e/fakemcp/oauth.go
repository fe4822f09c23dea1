package fakemcp

import (
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// serveASMetadata answers RFC 8414 (and OpenID discovery) metadata.
func (s *Server) serveASMetadata(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	base, method := s.base, s.opts.AuthMethod
	s.mu.Unlock()
	writeJSON(w, 200, map[string]any{
		"issuer":                                base,
		"authorization_endpoint":                base + "/authorize",
		"token_endpoint":                        base + "/token",
		"response_types_supported":              []string{"code"},
		"grant_types_supported":                 []string{"authorization_code", "refresh_token"},
		"code_challenge_methods_supported":      []string{"S256"},
		"token_endpoint_auth_methods_supported": []string{string(method)},
		"scopes_supported":                      []string{s.Options().Scope},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"jwks_uri":                              base + "/jwks",
	})
}

// servePRMetadata answers RFC 9728 protected-resource metadata for /mcp.
func (s *Server) servePRMetadata(w http.ResponseWriter, r *http.Request) {
	base := s.URL()
	writeJSON(w, 200, map[string]any{
		"resource":                 base + "/mcp",
		"authorization_servers":    []string{base},
		"bearer_methods_supported": []string{"header"},
		"scopes_supported":         []string{s.Options().Scope},
	})
}

// clientAuth tells how the request authenticated ("none", "client_secret_post"
// or "client_secret_basic") and with which id and secret.
func clientAuth(r *http.Request) (method, id, secret string) {
	if h := r.Header.Get("Authorization"); h != "" {
		if u, p, ok := r.BasicAuth(); ok {
			// RFC 6749 2.3.1: both parts are form-urlencoded before Basic.
			if d, err := url.QueryUnescape(u); err == nil {
				u = d
			}
			if d, err := url.QueryUnescape(p); err == nil {
				p = d
			}
			return string(AuthBasic), u, p
		}
		return "malformed", "", ""
	}
	if r.PostForm.Has("client_secret") {
		return string(AuthPost), r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	return string(AuthNone), r.PostForm.Get("client_id"), ""
}

// serveToken answers the refresh-token grant.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<16)
	if err := r.ParseForm(); err != nil || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		oauthError(w, 400, "invalid_request", "expected a form-encoded body")
		return
	}
	f := r.PostForm
	method, id, secret := clientAuth(r)
	if id == "" {
		id = f.Get("client_id")
	}
	req := TokenRequest{At: time.Now(), UserAgent: r.UserAgent(), ContentType: r.Header.Get("Content-Type"),
		Accept: r.Header.Get("Accept"), GrantType: f.Get("grant_type"), ClientID: id,
		Resource: f.Get("resource"), Scope: f.Get("scope"), HasScope: f.Has("scope"), Auth: method}
	for k := range f {
		req.Fields = append(req.Fields, k)
	}
	sort.Strings(req.Fields)

	s.mu.Lock()
	req.RefreshTokenIndex = s.indexLocked(f.Get("refresh_token"))
	delay := s.delay
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	status, code, body := s.tokenLocked(r, f, method, id, secret)
	req.Status, req.Error = status, code
	s.tokenReq = append(s.tokenReq, req)
	if status != 200 {
		if status == 401 {
			w.Header().Set("WWW-Authenticate", `Basic realm="fakemcp"`)
		}
		oauthError(w, status, code, body["error_description"].(string))
		return
	}
	writeJSON(w, 200, body)
}

// tokenLocked decides the answer to a token request.
func (s *Server) tokenLocked(r *http.Request, f url.Values, method, id, secret string) (int, string, map[string]any) {
	fail := func(status int, code, desc string) (int, string, map[string]any) {
		return status, code, map[string]any{"error_description": desc}
	}
	if s.fail != 0 {
		s.counters.Failed++
		return fail(s.fail, "temporarily_unavailable", "the fake is set to fail")
	}
	o := s.opts
	okClient := id == o.ClientID
	switch o.AuthMethod {
	case AuthNone:
		okClient = okClient && method != "malformed"
	case AuthPost, AuthBasic:
		okClient = okClient && method == string(o.AuthMethod) && secret == o.ClientSecret
	}
	if !okClient {
		s.counters.InvalidClient++
		return fail(401, "invalid_client", "client authentication failed")
	}
	if f.Get("grant_type") != "refresh_token" {
		return fail(400, "unsupported_grant_type", "only refresh_token is supported")
	}
	if f.Get("resource") != s.base+"/mcp" {
		s.counters.WrongResource++
	}
	presented := f.Get("refresh_token")
	rt, ok := s.refresh[presented]
	switch {
	case !ok:
		s.counters.InvalidGrant++
		return fail(400, "invalid_grant", "refresh token not found")
	case rt.revoked:
		s.counters.InvalidGrant++
		return fail(400, "invalid_grant", "refresh token revoked")
	case rt.spent:
		s.counters.InvalidGrant++
		s.counters.ReuseDetected++
		if s.revokeFamilyLocked(rt.family) {
			s.counters.FamiliesRevoked++
		}
		return fail(400, "invalid_grant", "refresh token already used; the login is revoked")
	}
	now := s.now()
	at := s.mintLocked("fakemcp-at-")
	s.access[at] = &accessToken{family: rt.family, expires: now.Add(o.ExpiresIn)}
	body := map[string]any{"access_token": at, "token_type": "Bearer",
		"expires_in": int(o.ExpiresIn / time.Second), "scope": o.Scope}
	switch o.Rotation {
	case Rotate:
		rt.spent = true
		next := s.mintLocked("fakemcp-rt-")
		s.refresh[next] = &refreshToken{family: rt.family}
		body["refresh_token"] = next
	case Same:
		body["refresh_token"] = presented
	case Omit:
	}
	s.counters.Refreshes++
	if IsAgent(r.UserAgent()) {
		s.counters.RefreshesByAgent++
	} else {
		s.counters.RefreshesByClaude++
	}
	return 200, "", body
}
