package lock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gofrs/flock"
)

func TestTry(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "claude-auth-sync")
	l, err := Try(dir, Sync)
	if err != nil {
		t.Fatalf("Try(%s) = %v; want the lock", Sync, err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode = %v (%v); want 0700", fi.Mode().Perm(), err)
	}
	path := filepath.Join(dir, Sync)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file mode = %v (%v); want 0600", fi.Mode().Perm(), err)
	}
	if b, _ := os.ReadFile(path); strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("lock file holds %q; want our pid %d", b, os.Getpid())
	}

	// A second taker (another open file description) is refused, told who holds it.
	_, err = Try(dir, Sync)
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("Try(held) = %v; want %v naming pid %d", err, ErrHeld, os.Getpid())
	}
	// Other names are independent.
	r, err := Try(dir, Refresh)
	if err != nil {
		t.Errorf("Try(%s) while %s is held = %v; want the lock", Refresh, Sync, err)
	}
	r.Unlock()

	l.Unlock()
	l.Unlock() // twice is fine
	var nilLock *Flock
	nilLock.Unlock()

	l2, err := Try(dir, Sync)
	if err != nil {
		t.Fatalf("Try after Unlock = %v; want the lock", err)
	}
	l2.Unlock()
}

func TestTryHeldByForeignFlock(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, Agent)
	// A holder that wrote no pid (or not a number) is reported without one.
	if err := os.WriteFile(path, []byte("not-a-pid\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := flock.New(path)
	if ok, err := other.TryLock(); !ok || err != nil {
		t.Fatalf("foreign TryLock = %v, %v", ok, err)
	}
	defer other.Unlock()
	_, err := Try(dir, Agent)
	if !errors.Is(err, ErrHeld) || strings.Contains(err.Error(), "pid") {
		t.Errorf("Try(held, no pid) = %v; want %v without a pid", err, ErrHeld)
	}
}

func TestWait(t *testing.T) {
	dir := t.TempDir()
	held, err := Try(dir, Refresh)
	if err != nil {
		t.Fatal(err)
	}

	// Times out while held.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	start := time.Now()
	_, err = Wait(ctx, dir, Refresh)
	cancel()
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait(held) = %v; want %v", err, context.DeadlineExceeded)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Wait(held) returned after %v; want about the 100ms deadline", d)
	}

	// Gets it once the holder lets go.
	go func() {
		// The holder keeps the lock a while, so that Wait starts while it is
		// held: the scenario, not a wait for anything (had Wait started
		// later, it would find the lock free and the test would hold too).
		time.Sleep(50 * time.Millisecond)
		held.Unlock()
	}()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := Wait(ctx, dir, Refresh)
	if err != nil {
		t.Fatalf("Wait after release = %v; want the lock", err)
	}
	if _, err := Try(dir, Refresh); !errors.Is(err, ErrHeld) {
		t.Errorf("Try while Wait holds it = %v; want %v", err, ErrHeld)
	}
	l.Unlock()
}

func TestStateDirUnusable(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Try(filepath.Join(f, "state"), Sync); err == nil || errors.Is(err, ErrHeld) {
		t.Errorf("Try(state dir under a file) = %v; want a state dir error", err)
	}
	if _, err := Wait(context.Background(), filepath.Join(f, "state"), Sync); err == nil {
		t.Errorf("Wait(state dir under a file) = nil; want an error")
	}
}

func TestHeldCreatesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if held, _ := Held(dir, Agent); held {
		t.Fatalf("Held on a missing dir = true")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("Held created %s", dir)
	}
	l, err := Try(dir, Agent)
	if err != nil {
		t.Fatal(err)
	}
	if held, pid := Held(dir, Agent); !held || pid != strconv.Itoa(os.Getpid()) {
		t.Errorf("Held while locked = %v, %q; want true, our pid", held, pid)
	}
	l.Unlock()
	if held, _ := Held(dir, Agent); held {
		t.Errorf("Held after unlock = true")
	}
}
