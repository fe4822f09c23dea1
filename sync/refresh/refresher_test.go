package refresh

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
)

func TestRefreshRotatesAndKeepsFields(t *testing.T) {
	h, fake, l := refreshHarness(t)
	lin := h.seen
	res, err := h.r.Refresh(context.Background(), lin, true, "")
	if err != nil || !res.Refreshed {
		t.Fatalf("Refresh = %+v, %v; want a refresh", res, err)
	}
	cur := h.readCreds()
	if cur.State != credentials.Usable || cur.OAuth.RefreshToken().Reveal() == l.RefreshToken {
		t.Fatalf("file after refresh: %v; want a new usable login", cur.State)
	}
	raw := h.rawCreds()
	for _, keep := range []string{`"mcpOAuth"`, `"subscriptionType"`, `"rateLimitTier"`} {
		if !strings.Contains(raw, keep) {
			t.Errorf("refresh dropped %s", keep)
		}
	}
	if c := fake.Counters(); c.Refreshes != 1 || c.InvalidGrant != 0 {
		t.Errorf("fake counters %+v; want exactly one refresh", c)
	}
	if lin.last() != cur.OAuth.RefreshToken() {
		t.Errorf("the witness (the lineage) was not told of the new refresh token")
	}
	if _, err := os.Stat(h.r.keptPath()); !os.IsNotExist(err) {
		t.Errorf("pending-refresh left behind: %v", err)
	}
	for _, p := range []string{".oauth_refresh.lock", ".storage-write.lock"} {
		if _, err := os.Stat(filepath.Join(h.claudeDir, p)); !os.IsNotExist(err) {
			t.Errorf("lock %s not released", p)
		}
	}
	if _, err := os.Stat(h.claudeDir + ".lock"); !os.IsNotExist(err) {
		t.Errorf("legacy lock not released")
	}
}

func TestRefreshNotDueAndAlreadyRefreshed(t *testing.T) {
	h, fake, l := refreshHarness(t)
	lin := h.seen
	if res, err := h.r.Refresh(context.Background(), lin, false, ""); err != nil || res.Refreshed {
		t.Errorf("unforced refresh of an 8 h token = %+v, %v; want not due", res, err)
	}
	if res, err := h.r.Refresh(context.Background(), lin, true, "sk-ant-ort01-someone-elses"); err != nil || res.Refreshed {
		t.Errorf("refresh when the file no longer holds the failing token = %+v, %v; want no-op", res, err)
	}
	if fake.Counters().Refreshes != 0 {
		t.Errorf("the token endpoint was called")
	}
	_ = l
}

func TestRefreshInvalidGrantIsDeadAndWritesNothing(t *testing.T) {
	h, fake, l := refreshHarness(t)
	if _, err := fake.Rotate(l.RefreshToken); err != nil { // someone spent it, file not updated
		t.Fatal(err)
	}
	before := h.rawCreds()
	_, err := h.r.Refresh(context.Background(), h.seen, true, "")
	if !errors.Is(err, ErrLoginDead) {
		t.Fatalf("err = %v; want ErrLoginDead", err)
	}
	if h.rawCreds() != before {
		t.Errorf("file changed after invalid_grant")
	}
	if strings.Contains(err.Error(), l.RefreshToken) {
		t.Errorf("error names the token")
	}
}

func TestRefreshWaitsForClaudesLockAndTakesOverStaleOnes(t *testing.T) {
	h, fake, _ := refreshHarness(t)
	refreshLock, _, _ := lock.ClaudePaths(h.claudeDir)
	// A live holder: fresh mtime. The refresh waits until it is gone.
	if err := os.Mkdir(refreshLock, 0o700); err != nil {
		t.Fatal(err)
	}
	// The claim is checked where it matters: at each token request, Claude's
	// directory (marked inside, unlike ours) must be gone.
	mark := filepath.Join(refreshLock, "claude-holds-this")
	if err := os.WriteFile(mark, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var whileHeld atomic.Int32
	fake.BeforeRefresh = func(string, string) {
		if _, err := os.Stat(mark); err == nil {
			whileHeld.Add(1)
		}
	}
	done := make(chan error, 1)
	go func() { _, err := h.r.Refresh(context.Background(), h.seen, true, ""); done <- err }()
	// The refresh holds our flock: it is at Claude's lock (or on its way).
	deadline := time.Now().Add(10 * time.Second)
	for {
		lk, err := lock.Try(h.stateDir, lock.Refresh)
		if errors.Is(err, lock.ErrHeld) {
			break
		}
		if err == nil {
			lk.Unlock()
		}
		select {
		case err := <-done:
			t.Fatalf("the refresh ended (%v) while Claude held .oauth_refresh.lock", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the refresh never took our refresh lock")
		}
		runtime.Gosched()
	}
	os.RemoveAll(refreshLock)
	if err := <-done; err != nil {
		t.Fatalf("refresh after release: %v", err)
	}
	if n := whileHeld.Load(); n != 0 {
		t.Fatalf("%d token requests while Claude held .oauth_refresh.lock", n)
	}
	// A dead holder: mtime older than the stale time. Taken over at once.
	if err := os.Mkdir(refreshLock, 0o700); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * lock.StaleRefreshLock)
	os.Chtimes(refreshLock, old, old)
	if _, err := h.r.Refresh(context.Background(), h.seen, true, ""); err != nil {
		t.Fatalf("refresh with a stale lock: %v", err)
	}
	if fake.Counters().Refreshes != 2 {
		t.Errorf("refreshes = %d; want 2", fake.Counters().Refreshes)
	}
}

func TestRefreshWithoutClaudesLocksDoesNotRefresh(t *testing.T) {
	h, fake, _ := refreshHarness(t)
	// The legacy lock lives beside the config dir; make it impossible.
	h.build(func(f *ClaudeLogin, _ *Config[*credentials.OAuth]) {
		f.ClaudeConfigDir = filepath.Join(h.dir, "not-a-dir", "claude")
	})
	os.WriteFile(filepath.Join(h.dir, "not-a-dir"), []byte("x"), 0o600)
	_, err := h.r.Refresh(context.Background(), h.seen, true, "")
	if !errors.Is(err, lock.ErrClaudeLocksUnavailable) {
		t.Fatalf("err = %v; want ErrClaudeLocksUnavailable", err)
	}
	if fake.Counters().Refreshes != 0 {
		t.Errorf("refreshed without Claude's locks")
	}
}

// A crash between the token endpoint's answer and the rename: the saved
// response is applied at the next start, and only onto the token it replaced.
func TestApplyPendingRefresh(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fileMoved bool
		wantApply bool
	}{
		{"file still holds the sent token", false, true},
		{"file moved on meanwhile", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, fake, l := refreshHarness(t)
			n := keptAnswer(t, h, fake, l)
			if fi, _ := os.Stat(h.r.keptPath()); fi.Mode().Perm() != 0o600 {
				t.Errorf("pending-refresh mode %v", fi.Mode().Perm())
			}
			other := fake.Issue()
			if tc.fileMoved {
				h.writeCreds(string(fakeanthropic.CredentialsJSON(other)))
			}
			res, err := h.r.ApplyPending(context.Background(), h.seen)
			if applied := res.Refreshed; err != nil || applied != tc.wantApply {
				t.Fatalf("applied = %v, %v; want %v", res.Refreshed, err, tc.wantApply)
			}
			want := n.RefreshToken
			if tc.fileMoved {
				want = other.RefreshToken
			}
			if got := h.readCreds().OAuth.RefreshToken().Reveal(); got != want {
				t.Errorf("file holds the wrong refresh token after ApplyPendingRefresh")
			}
			if _, err := os.Stat(h.r.keptPath()); !os.IsNotExist(err) {
				t.Errorf("pending-refresh not removed")
			}
		})
	}
}

func TestMergeTokenDeadlineIsTheSmaller(t *testing.T) {
	o := mustOAuth(t, `{"accessToken":"a","refreshToken":"r","expiresAt":1,"refreshTokenExpiresAt":1000000,"x":1}`)
	tok := &oauth.Token{AccessToken: "a2", RefreshToken: "r2", ExpiresIn: time.Hour, RefreshTokenExpiresIn: 30 * 24 * time.Hour}
	now := time.UnixMilli(5000)
	next, err := (&ClaudeLogin{}).Merge(o, tok, now)
	if err != nil {
		t.Fatal(err)
	}
	if got := next.RefreshTokenExpiresAt().UnixMilli(); got != 1000000 {
		t.Errorf("refreshTokenExpiresAt = %d; want the older, smaller 1000000", got)
	}
	if got := next.ExpiresAtMs(); got != 5000+3600000 {
		t.Errorf("expiresAt = %d; want now + expires_in", got)
	}
	if !strings.Contains(string(next.Compact()), `"x":1`) {
		t.Errorf("unknown field dropped")
	}
}

func TestRefreshDueLead(t *testing.T) {
	h := newHarness(t, "")
	exp := time.UnixMilli(time.Now().Add(8 * time.Hour).UnixMilli())
	o := mustOAuth(t, oauthJSON("sk-ant-oat01-lead-a", "sk-ant-ort01-lead-a", exp))
	if got := exp.Sub(h.r.Due(o)); got != 15*time.Minute {
		t.Errorf("8 h token lead = %s; want 15m", got)
	}
	exp = time.UnixMilli(time.Now().Add(10 * time.Minute).UnixMilli())
	short := mustOAuth(t, oauthJSON("sk-ant-oat01-lead-b", "sk-ant-ort01-lead-b", exp))
	if got := exp.Sub(h.r.Due(short)); got != 15*time.Minute {
		t.Errorf("10 min token of unknown birth: lead = %s; want the full 15m (counted as long-lived)", got)
	}
	h.r.NoteNewLogin(short)
	if got := exp.Sub(h.r.Due(short)); got > 5*time.Minute+time.Second || got < 5*time.Minute-time.Second {
		t.Errorf("10 min token lead = %s; want half the lifetime, 5m", got)
	}
	h.build(func(_ *ClaudeLogin, c *Config[*credentials.OAuth]) { c.Lead, c.LeadExplicit = 8*time.Minute, true })
	exp = time.UnixMilli(time.Now().Add(10 * time.Minute).UnixMilli())
	expl := mustOAuth(t, oauthJSON("sk-ant-oat01-lead-c", "sk-ant-ort01-lead-c", exp))
	h.r.NoteNewLogin(expl)
	if got := exp.Sub(h.r.Due(expl)); got != 8*time.Minute {
		t.Errorf("explicit lead = %s; want 8m honoured", got)
	}
}

// A refresh asks for the scopes the login holds, keeps them in the file, and
// leaves scope out when the login has none; an override that narrows warns.
func TestRefreshKeepsTheLoginsScopes(t *testing.T) {
	for _, c := range []struct {
		name      string
		scopes    any // the file's claudeAiOauth.scopes; nil = no key
		override  string
		wantAsk   string
		wantHas   bool
		wantFile  []string
		wantWarns int
	}{
		{"extra scopes", []string{"user:profile", "user:inference", "user:sessions:claude_code", "user:plugins", "user:projects:read"}, "",
			"user:profile user:inference user:sessions:claude_code user:plugins user:projects:read", true,
			[]string{"user:profile", "user:inference", "user:sessions:claude_code", "user:plugins", "user:projects:read"}, 0},
		{"no scopes", nil, "", "", false, fakeanthropic.DefaultScopes, 0},
		{"narrowing override", []string{"user:inference", "user:profile", "user:plugins"}, "user:inference user:profile",
			"user:inference user:profile", true, []string{"user:inference", "user:profile"}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, fake, l := refreshHarness(t)
			h.fam.Client.Scopes = c.override
			o := map[string]any{"accessToken": l.AccessToken, "refreshToken": l.RefreshToken, "expiresAt": l.ExpiresAt.UnixMilli(),
				"subscriptionType": "enterprise", "rateLimitTier": "default_claude_max_20x"}
			if c.scopes != nil {
				o["scopes"] = c.scopes
			}
			b, _ := json.Marshal(map[string]any{"claudeAiOauth": o})
			h.writeCreds(string(b))
			if _, err := h.r.Refresh(context.Background(), h.seen, true, ""); err != nil {
				t.Fatal(err)
			}
			reqs := fake.TokenRequests()
			if len(reqs) != 1 || reqs[0].Scope != c.wantAsk || reqs[0].HasScope != c.wantHas {
				t.Fatalf("token requests %+v; want one asking scope %q (present %v)", reqs, c.wantAsk, c.wantHas)
			}
			got, ok := h.readCreds().OAuth.Scopes()
			if !ok || !slices.Equal(got, c.wantFile) {
				t.Errorf("file scopes after refresh = %q; want %q", got, c.wantFile)
			}
			if n := strings.Count(h.syncLog(), " WARN CLAUDE_AUTH_OAUTH_SCOPES"); n != c.wantWarns {
				t.Errorf("%d narrowing WARN lines; want %d\n%s", n, c.wantWarns, h.syncLog())
			}
		})
	}
}

// A refresh made by the agent's refresh child counts as the new login's birth
// in the agent too: a short-lived login is next due at half its lifetime, not
// at once (found by the demo: a 10 s login refreshed five times in a row).
func TestRefreshDueAfterChildRefresh(t *testing.T) {
	h := newHarness(t, "")
	exp := time.UnixMilli(time.Now().Add(10 * time.Minute).UnixMilli())
	next := mustOAuth(t, oauthJSON("sk-ant-oat01-child-a", "sk-ant-ort01-child-a", exp))
	h.r.Via = func(context.Context, bool, string) (ClaudeResult, error) {
		return ClaudeResult{Refreshed: true, OAuth: next}, nil
	}
	res, err := h.r.Refresh(context.Background(), h.seen, false, "")
	if err != nil || !res.Refreshed {
		t.Fatalf("Refresh through the child = %+v, %v", res, err)
	}
	if h.seen.reloads != 1 {
		t.Errorf("the witness was reloaded %d times after the child's refresh; want once (the child wrote the lineage)", h.seen.reloads)
	}
	if got := exp.Sub(h.r.Due(next)); got > 5*time.Minute+time.Second || got < 5*time.Minute-time.Second {
		t.Errorf("lead of a 10 min login the child just got = %s; want half its lifetime, 5m", got)
	}
}
