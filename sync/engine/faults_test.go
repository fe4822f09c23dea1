package engine

// Regression tests for the defects the fault-injection suite (e2e/faults_*)
// found; each names the fault that showed it.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
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
	go func() { done <- h.eng.Pass(context.Background(), PassOptions{}) }()
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
