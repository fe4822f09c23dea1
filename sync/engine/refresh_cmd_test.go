package engine

import (
	"context"
	"strings"
	"testing"

	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// rotatingStore is the backup store of a `refresh` that another refresher
// beats: the login in the file rotates while the command reads its backup.
type rotatingStore struct {
	store.Store
	rotate func()
}

func (s *rotatingStore) Read(ctx context.Context) (*store.Doc, error) {
	if s.rotate != nil {
		s.rotate()
		s.rotate = nil
	}
	return s.Store.Read(ctx)
}

// A `refresh` whose login another refresher rotated while the command set up
// (Vault's round trips, before any lock) takes that rotation as the refresh
// it asked for: no token request for the new login (this harness's token
// endpoint knows no login, so a request would end in invalid_grant and a
// FAIL), and the new login is backed up.
func TestRefreshNowTakesARotationDuringSetupAsItsRefresh(t *testing.T) {
	h := newHarness(t)
	h.writeCreds(credsFile(login1))
	h.eng.Store = &rotatingStore{Store: h.store, rotate: func() { h.writeCreds(credsFile(login2)) }}
	o := h.eng.RefreshNow(context.Background())
	if o.Code != ExitOK || !strings.Contains(o.Message, "someone already refreshed") {
		t.Fatalf("refresh: exit %d, %q; want 0, someone already refreshed", o.Code, o.Message)
	}
	if got := h.readCreds().OAuth.RefreshToken(); got != mustOAuth(t, login2).RefreshToken() {
		t.Error("the file no longer holds the login the other refresher wrote")
	}
	if got := h.backupRefresh(); got != mustOAuth(t, login2).RefreshToken().Reveal() {
		t.Error("the rotated login was not backed up")
	}
}
