package refresh

// Regression tests for the defects the fault-injection suite (e2e/faults_*)
// found; each names the fault that showed it.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
)

// keptAnswer rotates the file's login at the fake and keeps the answer in
// pending-refresh without writing the file: what a kill -9 between the token
// endpoint's answer and the rename leaves.
func keptAnswer(t *testing.T, h *harness, fake *fakeanthropic.Server, l fakeanthropic.Login) fakeanthropic.Login {
	t.Helper()
	n, err := fake.Rotate(l.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"access_token":"` + n.AccessToken + `","refresh_token":"` + n.RefreshToken + `","expires_in":28800,"scope":"user:inference"}`
	tok, err := oauth.ParseToken([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.r.keepAnswer(tok, credentials.Secret(l.RefreshToken), time.Now()); err != nil {
		t.Fatal(err)
	}
	return n
}

// Fault: kill -9 of the agent after the refresh answer was saved, then `exec`
// (or `refresh`, or the pass's forced refresh) before the agent restarts.
// Refresh presented the file's refresh token, spent by the killed refresh:
// invalid_grant, a dead login. It now finishes the kept refresh instead, and a
// forced one then refreshes for real (the kept access token may have expired).
func TestRefreshFinishesAKeptAnswer(t *testing.T) {
	for _, force := range []bool{false, true} {
		t.Run(fmt.Sprintf("force=%v", force), func(t *testing.T) {
			h, fake, l := refreshHarness(t)
			n := keptAnswer(t, h, fake, l)
			res, err := h.r.Refresh(context.Background(), h.seen, force, "")
			if err != nil || !res.Refreshed {
				t.Fatalf("Refresh = %+v, %v; want the kept answer finished", res, err)
			}
			c := fake.Counters()
			if c.InvalidGrant != 0 {
				t.Fatalf("the spent refresh token was presented again (invalid_grant %d)", c.InvalidGrant)
			}
			got := h.readCreds().OAuth.RefreshToken().Reveal()
			switch {
			case !force && (got != n.RefreshToken || c.Refreshes != 1):
				t.Errorf("unforced: file holds the kept login = %v, refreshes %d; want the kept login and no new POST", got == n.RefreshToken, c.Refreshes)
			case force && (got == n.RefreshToken || got == l.RefreshToken || c.Refreshes != 2):
				t.Errorf("forced: refreshes %d; want the kept login written, then refreshed once more", c.Refreshes)
			}
			if _, err := os.Stat(h.r.keptPath()); !os.IsNotExist(err) {
				t.Errorf("pending-refresh left after it went into the file")
			}
		})
	}
}

// Fault: `claude auth logout` (the file deleted) while a refresh is in flight.
// The answer brought the file back, undoing the logout. It now stays kept
// (pending-refresh) and is handed back for a backup, never written.
func TestRefreshAnswerDoesNotUndoALogout(t *testing.T) {
	h, fake, l := refreshHarness(t)
	n := keptAnswer(t, h, fake, l)
	if err := os.Remove(h.creds); err != nil {
		t.Fatal(err)
	}
	res, err := h.r.ApplyPending(context.Background(), h.seen)
	if !errors.Is(err, ErrNotWritten) || res.OAuth == nil || res.OAuth.RefreshToken().Reveal() != n.RefreshToken {
		t.Fatalf("ApplyPendingRefresh after a logout = %+v, %v; want ErrNotWritten with the new login", res, err)
	}
	if _, err := os.Stat(h.creds); !os.IsNotExist(err) {
		t.Fatalf("the refresh answer recreated the credentials file after a logout")
	}
	if _, err := os.Stat(h.r.keptPath()); err != nil {
		t.Errorf("the answer is no longer kept: %v", err)
	}
	// And a refresh now does not write it either.
	if _, err := h.r.Refresh(context.Background(), h.seen, true, ""); err == nil {
		t.Errorf("Refresh with no credentials file succeeded")
	}
	if _, err := os.Stat(h.creds); !os.IsNotExist(err) {
		t.Fatalf("Refresh recreated the credentials file after a logout")
	}
}
