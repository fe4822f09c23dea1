// Package lock holds the locks our processes take: flocks in the state dir that
// order the agent, `sync`, `exec` and `refresh` against each other. A flock is
// released by the kernel when its holder dies, so a crash never blocks anyone.
// The agent adds a socket no path names (AgentLock), so that deleting the
// state dir does not let a second agent start beside it.
package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gofrs/flock"
	"golang.org/x/sys/unix"
)

// Names of our flocks, in the one order they are ever taken:
// sync → refresh (the credentials-file writer lock). The agent lock is held for
// the agent's whole life and is never waited for.
const (
	Agent   = "agent.lock"
	Sync    = "sync.lock"
	Refresh = "refresh.lock"
)

// ErrHeld means a non-blocking try found the lock taken.
var ErrHeld = errors.New("lock held by another process")

// Flock is one held lock.
type Flock struct {
	fl *flock.Flock
}

func open(dir, name string) (*flock.Flock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	return flock.New(filepath.Join(dir, name), flock.SetPermissions(0o600)), nil
}

// Try takes the lock without waiting. ErrHeld when someone has it; the error
// names the holder's pid when it wrote one.
func Try(dir, name string) (*Flock, error) {
	fl, err := open(dir, name)
	if err != nil {
		return nil, err
	}
	ok, err := fl.TryLock()
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	if !ok {
		if pid := holder(fl.Path()); pid != "" {
			return nil, fmt.Errorf("%w (%s, pid %s)", ErrHeld, name, pid)
		}
		return nil, fmt.Errorf("%w (%s)", ErrHeld, name)
	}
	l := &Flock{fl: fl}
	l.recordHolder()
	return l, nil
}

// Wait takes the lock, waiting until ctx ends.
func Wait(ctx context.Context, dir, name string) (*Flock, error) {
	fl, err := open(dir, name)
	if err != nil {
		return nil, err
	}
	ok, err := fl.TryLockContext(ctx, 10*time.Millisecond)
	if err != nil || !ok {
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("wait for %s: %w", name, err)
	}
	l := &Flock{fl: fl}
	l.recordHolder()
	return l, nil
}

// recordHolder writes our pid into the lock file, for "held by pid N" messages.
func (l *Flock) recordHolder() {
	if f, err := os.OpenFile(l.fl.Path(), os.O_WRONLY|os.O_TRUNC, 0o600); err == nil {
		_, _ = f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
		f.Close()
	}
}

func holder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(b))
	if _, err := strconv.Atoi(s); err != nil {
		return ""
	}
	return s
}

// Unlock releases the lock. Safe to call more than once.
func (l *Flock) Unlock() {
	if l != nil && l.fl != nil {
		_ = l.fl.Unlock()
	}
}

// Held reports whether someone holds the lock, without creating anything: a
// missing lock file means nobody has ever taken it. The pid is "" when unknown.
func Held(dir, name string) (bool, string) {
	path := filepath.Join(dir, name)
	f, err := os.Open(path)
	if err != nil {
		return false, ""
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return true, holder(path)
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false, ""
}
