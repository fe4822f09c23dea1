package agent

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// tokenAPI answers Vault's lookup-self and renew-self for alice's scoped
// token, or 403 while refuse is set: the two calls the renewer makes. (The
// renewer's e2e tests run against the real Vault server; this one moves the
// fake clock through its schedule.)
type tokenAPI struct {
	refuse atomic.Bool
	calls  atomic.Int32
}

func (a *tokenAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.calls.Add(1)
	w.Header().Set("Content-Type", "application/json")
	if a.refuse.Load() {
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"errors":["permission denied"]}`))
		return
	}
	switch r.URL.Path {
	case "/v1/auth/token/lookup-self":
		_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{
			"display_name": store.SanitizedDisplayName(store.DisplayNameFor("alice")), "policies": []string{"default", store.PolicyFor("alice")},
			"ttl": 3600, "period": 3600, "orphan": true, "renewable": true}})
	case "/v1/auth/token/renew-self":
		_ = json.NewEncoder(w).Encode(map[string]any{"auth": map[string]any{"lease_duration": 3600, "renewable": true}})
	default:
		http.NotFound(w, r)
	}
}

func TestRenewerChecksTheTokenOnItsSchedule(t *testing.T) {
	r := newRig(t)
	api := &tokenAPI{}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	tokenFile := filepath.Join(r.e.Cfg.Home, ".config", "claude-auth-sync", "vault-token")
	if err := os.MkdirAll(filepath.Dir(tokenFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("hvs.renewer-test-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := store.NewVault(store.VaultConfig{Address: srv.URL, Mount: "secret", Path: "workstation/claude-users/alice", TokenFile: tokenFile, User: "alice", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r.e.Vault, r.e.Cfg.VaultTokenFile = v, tokenFile
	g := r.components()
	g.runRenewer()
	live := g.live

	select {
	case ok := <-g.firstTokenVerdict:
		if !ok {
			t.Fatal("the first check says the token is not usable")
		}
	case <-time.After(bound):
		t.Fatal("no first verdict")
	}
	if ok := <-g.tokenOK; !ok {
		t.Fatal("the writer was told the token is not usable")
	}
	r.armed(1) // asleep until half the TTL
	if at, _ := r.clk.Next(); !at.Equal(t0.Add(30 * time.Minute)) {
		t.Errorf("next check at %v; want half the hour's TTL, %v", at, t0.Add(30*time.Minute))
	}
	if s := live.snapshot(); s.VaultTokenTTL != "1h0m0s" {
		t.Errorf("live TTL = %q; want 1h0m0s", s.VaultTokenTTL)
	}

	// Revoked: one FAIL, the writer told to hold its backups, a patient retry.
	api.refuse.Store(true)
	r.clk.Advance(30 * time.Minute)
	r.await("FAIL vault token:")
	select {
	case ok := <-g.tokenOK:
		if ok {
			t.Fatal("the writer was told a refused token is usable")
		}
	case <-time.After(bound):
		t.Fatal("the writer was not told the token was refused")
	}
	r.armed(1)
	if at, _ := r.clk.Next(); at.Sub(r.clk.Now()) != r.opt.RetryMax {
		t.Errorf("retry in %v; want the cap %v (waiting does not mend a refused token)", at.Sub(r.clk.Now()), r.opt.RetryMax)
	}
	calls := api.calls.Load()
	r.clk.Advance(r.opt.RetryMax) // refused again: not said again
	r.armed(1)
	if api.calls.Load() == calls {
		t.Fatal("the renewer did not try again")
	}
	r.noEvent("a second refusal")

	// Re-provisioned: a refused backup makes it look at once, and it says so.
	api.refuse.Store(false)
	g.tokenRecheck.poke()
	r.await("OK vault token accepted again")
	if ok := <-g.tokenOK; !ok {
		t.Fatal("the writer was not told the token works again")
	}
}
