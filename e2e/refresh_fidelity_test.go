package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
)

// An agent refresh leaves the login exactly as Claude's own refresh would, for
// each pinned real CLI: the same scopes asked for, the same file afterwards
// apart from the tokens and the expiry. The starting login is one the CLI
// itself wrote (its own refresh of a fresh login), so the comparison follows
// whatever the next pinned release does instead of a list kept here; a
// release that changes its refresh fails this test.
func TestRefreshLikeClaude(t *testing.T) {
	for _, v := range claudeVersions {
		t.Run(v, func(t *testing.T) {
			// The login as this CLI writes it after a refresh.
			cal := newClaudeUser(t, v)
			cal.login(time.Now().Add(2 * time.Minute))
			cal.check(time.Minute)
			base := oauthObject(t, cal.credsPath())
			delete(base, "accessToken")
			delete(base, "refreshToken")
			delete(base, "expiresAt")

			// Claude refreshes it ...
			byClaude := newClaudeUser(t, v)
			writeOAuth(t, byClaude, base, byClaude.fake.Issue())
			byClaude.check(time.Minute)
			claudeReq := onlyTokenRequest(t, byClaude.fake)

			// ... and the agent refreshes the same login.
			byAgent := newClaudeUser(t, v)
			writeOAuth(t, byAgent, base, byAgent.fake.Issue())
			agentRefresh(t, byAgent)
			agentReq := onlyTokenRequest(t, byAgent.fake)

			if !claudeReq.HasScope || !agentReq.HasScope || !sameSet(claudeReq.Scope, agentReq.Scope) {
				t.Errorf("scope asked: Claude %q (present %v), agent %q (present %v); want the same set", claudeReq.Scope, claudeReq.HasScope, agentReq.Scope, agentReq.HasScope)
			}
			if !slices.Equal(claudeReq.Fields, agentReq.Fields) || claudeReq.ClientID != agentReq.ClientID {
				t.Errorf("token request body: Claude %v client %s, agent %v client %s", claudeReq.Fields, claudeReq.ClientID, agentReq.Fields, agentReq.ClientID)
			}
			if v == claudeCurrent && (claudeReq.UserAgent != agentReq.UserAgent || claudeReq.Accept != agentReq.Accept) {
				t.Errorf("headers: Claude UA %q Accept %q; agent UA %q Accept %q", claudeReq.UserAgent, claudeReq.Accept, agentReq.UserAgent, agentReq.Accept)
			}
			c, a := withoutTokens(t, byClaude.credsPath()), withoutTokens(t, byAgent.credsPath())
			if c != a {
				t.Errorf("the file after Claude's refresh and after the agent's differ apart from tokens and expiry:\nClaude: %s\nagent:  %s", c, a)
			}
			t.Logf("%s: both asked %q; UA Claude %q agent %q", v, agentReq.Scope, claudeReq.UserAgent, agentReq.UserAgent)

			t.Run("extra scopes kept", func(t *testing.T) {
				u := newClaudeUser(t, v)
				extra := map[string]any{}
				for k, val := range base {
					extra[k] = val
				}
				scopes := anyStrings(base["scopes"])
				for _, s := range []string{"user:plugins", "user:projects:read"} {
					if !slices.Contains(scopes, s) {
						scopes = append(scopes, s)
					}
				}
				extra["scopes"] = scopes
				writeOAuth(t, u, extra, u.fake.Issue())
				agentRefresh(t, u)
				req := onlyTokenRequest(t, u.fake)
				if !sameSet(req.Scope, strings.Join(scopes, " ")) {
					t.Errorf("agent asked %q; want the login's %q", req.Scope, scopes)
				}
				if got := anyStrings(oauthObject(t, u.credsPath())["scopes"]); !slices.Equal(got, scopes) {
					t.Errorf("scopes after the agent's refresh %q; want %q", got, scopes)
				}
			})
			t.Run("no scopes, no scope asked", func(t *testing.T) {
				u := newClaudeUser(t, v)
				none := map[string]any{}
				for k, val := range base {
					if k != "scopes" {
						none[k] = val
					}
				}
				writeOAuth(t, u, none, u.fake.Issue())
				agentRefresh(t, u)
				if req := onlyTokenRequest(t, u.fake); req.HasScope {
					t.Errorf("a login without scopes: the agent asked scope %q; want the field left out", req.Scope)
				}
			})
		})
	}
}

// oauthObject reads a credentials file's claudeAiOauth as a map.
func oauthObject(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("credentials file: %v", err)
	}
	return doc["claudeAiOauth"]
}

// writeOAuth writes a credentials file holding fields plus l's tokens, due for
// a refresh (two minutes left), and the fake's other top-level key.
func writeOAuth(t *testing.T, u *claudeUser, fields map[string]any, l fakeanthropic.Login) {
	t.Helper()
	o := map[string]any{"accessToken": l.AccessToken, "refreshToken": l.RefreshToken, "expiresAt": time.Now().Add(2 * time.Minute).UnixMilli()}
	for k, v := range fields {
		o[k] = v
	}
	b, _ := json.Marshal(map[string]any{"claudeAiOauth": o})
	if err := os.WriteFile(u.credsPath(), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// agentRefresh runs `claude-auth-sync refresh` for u's login against u's fake
// (directly over http: the agent's endpoint is configuration).
func agentRefresh(t *testing.T, u *claudeUser) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "claude-auth-sync"), "refresh")
	cmd.Env = []string{"HOME=" + u.home, "PATH=/usr/bin:/bin", "CLAUDE_CONFIG_DIR=" + u.cfg, "CLAUDE_AUTH_STORE=file",
		"CLAUDE_AUTH_OAUTH_TOKEN_URL=" + u.api.URL + "/v1/oauth/token", "CLAUDE_AUTH_JOURNAL_SOCKET=off",
		"CLAUDE_AUTH_SYSTEM_CONFIG=" + filepath.Join(u.home, "none")}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("claude-auth-sync refresh: %v\n%s", err, out.String())
	}
	if c := u.fake.Counters(); c.Refreshes != 1 {
		t.Fatalf("the agent's refresh: %+v\n%s", c, out.String())
	}
}

func onlyTokenRequest(t *testing.T, f *fakeanthropic.Server) fakeanthropic.TokenRequest {
	t.Helper()
	reqs := f.TokenRequests()
	if len(reqs) != 1 {
		t.Fatalf("%d token requests; want 1", len(reqs))
	}
	return reqs[0]
}

func sameSet(a, b string) bool {
	x, y := strings.Fields(a), strings.Fields(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

func anyStrings(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, s := range l {
			if str, ok := s.(string); ok {
				out = append(out, str)
			}
		}
	}
	return out
}

// withoutTokens is the whole file as canonical JSON with the tokens and the
// expiry blanked (they differ by design).
func withoutTokens(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if o, ok := doc["claudeAiOauth"].(map[string]any); ok {
		for _, k := range []string{"accessToken", "refreshToken", "expiresAt"} {
			if _, has := o[k]; has {
				o[k] = "…"
			}
		}
	}
	out, _ := json.Marshal(doc)
	return string(out)
}
