package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Claude Code's own locks are directories made with mkdir (proper-lockfile): a
// holder keeps the directory's mtime fresh, and a directory whose mtime is older
// than the stale time belongs to a dead holder and may be removed. flock(2) is
// invisible to Claude, so around the credentials file we take these too.

// ErrClaudeLocksUnavailable: the lock directories cannot be created (read-only
// file system, permissions). No refresh may run then.
var ErrClaudeLocksUnavailable = errors.New("claude's lock directories cannot be created")

// Touch period and stale times. Claude touches every 5 s; we touch every 2 s.
// We judge another holder's lock stale only after the longest stale time any
// Claude version uses for it, so we never break a live Claude's lock.
const (
	TouchEvery        = 2 * time.Second
	StaleRefreshLock  = 60 * time.Second // .oauth_refresh.lock and <dir>.lock (2.1.332: 60 s)
	StaleStorageWrite = 15 * time.Second // .storage-write.lock
)

// ClaudePaths returns Claude's three lock directories for a config dir that is
// already resolved with realpath: .oauth_refresh.lock inside it, the legacy
// <dir>.lock beside it, and .storage-write.lock inside it.
func ClaudePaths(realDir string) (refresh, legacy, storage string) {
	return filepath.Join(realDir, ".oauth_refresh.lock"), realDir + ".lock", filepath.Join(realDir, ".storage-write.lock")
}

// DirLock is a held mkdir lock, kept fresh until Release.
type DirLock struct {
	path string
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// AcquireDir takes a mkdir lock, waiting (polling every 50 ms) until ctx ends.
// A lock whose mtime is older than stale is removed and taken over.
func AcquireDir(ctx context.Context, path string, stale time.Duration) (*DirLock, error) {
	for {
		err := os.Mkdir(path, 0o700)
		if err == nil {
			d := &DirLock{path: path, stop: make(chan struct{}), done: make(chan struct{})}
			go d.keepFresh()
			return d, nil
		}
		if !errors.Is(err, os.ErrExist) {
			if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS) || errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return nil, fmt.Errorf("%w: %v", ErrClaudeLocksUnavailable, err)
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if fi, err := os.Stat(path); err == nil && time.Since(fi.ModTime()) > stale {
			// The holder died without releasing: take it over. Remove only if
			// it is still the stale one (a fresh mtime means someone took it).
			if fi2, err := os.Stat(path); err == nil && fi2.ModTime().Equal(fi.ModTime()) {
				_ = os.Remove(path)
				continue
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %s: %w", filepath.Base(path), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *DirLock) keepFresh() {
	defer close(d.done)
	t := time.NewTicker(TouchEvery)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			now := time.Now()
			_ = os.Chtimes(d.path, now, now)
		}
	}
}

// Release stops the toucher and removes the directory. Safe to call twice.
func (d *DirLock) Release() {
	if d == nil {
		return
	}
	d.once.Do(func() {
		close(d.stop)
		<-d.done
		_ = os.Remove(d.path)
	})
}

// ClaudeRefresh holds Claude's refresh locks in the one order:
// .oauth_refresh.lock, then <realpath>.lock.
type ClaudeRefresh struct {
	refresh, legacy *DirLock
	storagePath     string
}

// AcquireClaudeRefresh takes both refresh locks of the resolved config dir.
func AcquireClaudeRefresh(ctx context.Context, realDir string) (*ClaudeRefresh, error) {
	rp, lp, sp := ClaudePaths(realDir)
	if err := os.MkdirAll(realDir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrClaudeLocksUnavailable, err)
	}
	r, err := AcquireDir(ctx, rp, StaleRefreshLock)
	if err != nil {
		return nil, err
	}
	l, err := AcquireDir(ctx, lp, StaleRefreshLock)
	if err != nil {
		r.Release()
		return nil, err
	}
	return &ClaudeRefresh{refresh: r, legacy: l, storagePath: sp}, nil
}

// WithStorageWrite runs fn under .storage-write.lock (inside the refresh locks).
func (c *ClaudeRefresh) WithStorageWrite(ctx context.Context, fn func() error) error {
	s, err := AcquireDir(ctx, c.storagePath, StaleStorageWrite)
	if err != nil {
		return err
	}
	defer s.Release()
	return fn()
}

// Release drops the locks in reverse order.
func (c *ClaudeRefresh) Release() {
	if c == nil {
		return
	}
	c.legacy.Release()
	c.refresh.Release()
}
