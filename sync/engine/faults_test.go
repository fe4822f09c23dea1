package engine

// Regression tests for the defects the fault-injection suite (e2e/faults_*)
// found; each names the fault that showed it.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
	"golang.org/x/sys/unix"
)

// readSignal is a store that says when a pass has read it (step 2 is over).
type readSignal struct {
	store.Store
	read chan struct{}
}

func (r *readSignal) Read(ctx context.Context) (*store.Doc, error) {
	d, err := r.Store.Read(ctx)
	select {
	case r.read <- struct{}{}:
	default:
	}
	return d, err
}

// Fault: kill -9 of the agent, then `sync` and the restarted agent both see the
// clobbered file. The pass waits for the file locks while the other restores
// it; finding the file usable under the locks is not a failed restore (it was
// logged as FAIL, a false alert) but a reason to go on with the pass.
func TestPassRestoreRacedByAnotherRestorer(t *testing.T) {
	h := newHarness(t)
	h.putBackup(login2)
	h.claude.valid[access2] = true
	h.writeCreds(credsFile(oauthJSON(access1, "", exp8h)))
	sig := &readSignal{Store: h.store, read: make(chan struct{}, 1)}
	h.eng.Store = sig

	held, err := lock.Try(h.cfg.StateDir, lock.Refresh)
	if err != nil {
		t.Fatal(err)
	}
	// The pass's read of the clobbered file (after its read of the store) is
	// the point past which it can only go on by taking the lock we hold.
	fileRead := closedAfterRead(t, h.cfg.CredentialsFile)
	done := make(chan Outcome, 1)
	go func() { done <- h.eng.Pass(context.Background()) }()
	<-sig.read
	select {
	case <-fileRead:
	case <-time.After(10 * time.Second):
		t.Fatal("the pass did not read the credentials file after the store")
	}
	h.writeCreds(credsFile(login2)) // the other restorer wins, while the pass waits for the lock
	held.Unlock()

	o := <-done
	wantOutcome(t, o, eventlog.OK, ExitOK, "inference check passed")
	if strings.Contains(h.syncLog(), " FAIL ") {
		t.Errorf("sync.log has a FAIL for a restore someone else did:\n%s", h.syncLog())
	}
	// The race was met: under the locks the pass found the file usable.
	if !strings.Contains(h.diag.String(), "the credentials file became usable before the restore") {
		t.Errorf("the pass did not meet the other restorer's write under the locks; diagnostics:\n%s", h.diag.String())
	}
}

// closedAfterRead is closed when path (the file there now) is next closed by
// a reader: inotify's IN_CLOSE_NOWRITE on its inode.
func closedAfterRead(t *testing.T, path string) <-chan struct{} {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_CLOSE_NOWRITE); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	ch := make(chan struct{})
	go func() {
		defer unix.Close(fd)
		buf := make([]byte, 4096)
		if n, err := unix.Read(fd, buf); err == nil && n > 0 {
			close(ch)
		}
	}()
	return ch
}

// Fault: the agent's refresher and its backup worker share one Lineage; with
// refreshes every second (the kill -9 loop), Observe on one goroutine and
// Order on the other touched the same maps at once, which Go treats as a fatal
// error (the agent dies). Run under -race as well.
func TestLineageSharedByGoroutines(t *testing.T) {
	dir := t.TempDir()
	lin, err := LoadLineage(filepath.Join(dir, "lineage"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			if err := lin.Observe(credentials.Secret(fmt.Sprintf("sk-ant-ort01-w%04d", i))); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() {
		for i := range n * 20 {
			a := credentials.Secret(fmt.Sprintf("sk-ant-ort01-w%04d", i%n))
			b := credentials.Secret(fmt.Sprintf("sk-ant-ort01-w%04d", (i+1)%n))
			_ = lin.Order(a, b)
			_ = lin.Known(a)
		}
	})
	wg.Wait()
	if got := lin.Order("sk-ant-ort01-w0000", credentials.Secret(fmt.Sprintf("sk-ant-ort01-w%04d", n-1))); got != -1 {
		t.Errorf("Order(first, last) = %d; want -1", got)
	}
}

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
	if err := h.eng.refresher().writePendingRefresh(tok, credentials.Secret(l.RefreshToken), time.Now()); err != nil {
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
			res, err := h.eng.Refresh(context.Background(), h.lineage(), force, "")
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
			if _, err := os.Stat(h.eng.refresher().pendingPath()); !os.IsNotExist(err) {
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
	if err := os.Remove(h.cfg.CredentialsFile); err != nil {
		t.Fatal(err)
	}
	res, err := h.eng.ApplyPendingRefresh(context.Background(), h.lineage())
	if !errors.Is(err, ErrNotWritten) || res.OAuth == nil || res.OAuth.RefreshToken().Reveal() != n.RefreshToken {
		t.Fatalf("ApplyPendingRefresh after a logout = %+v, %v; want ErrNotWritten with the new login", res, err)
	}
	if _, err := os.Stat(h.cfg.CredentialsFile); !os.IsNotExist(err) {
		t.Fatalf("the refresh answer recreated the credentials file after a logout")
	}
	if _, err := os.Stat(h.eng.refresher().pendingPath()); err != nil {
		t.Errorf("the answer is no longer kept: %v", err)
	}
	// And a refresh now does not write it either.
	if _, err := h.eng.Refresh(context.Background(), h.lineage(), true, ""); err == nil {
		t.Errorf("Refresh with no credentials file succeeded")
	}
	if _, err := os.Stat(h.cfg.CredentialsFile); !os.IsNotExist(err) {
		t.Fatalf("Refresh recreated the credentials file after a logout")
	}
}
