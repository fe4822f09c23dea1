package lock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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
	rec  *HolderRecord
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// AcquireDir takes a mkdir lock, waiting (polling every 50 ms) until ctx ends.
// A lock whose mtime is older than stale is removed and taken over.
func AcquireDir(ctx context.Context, path string, stale time.Duration) (*DirLock, error) {
	return acquireDir(ctx, path, stale, nil)
}

// acquireDir is AcquireDir that also takes over, at once, a lock directory rec
// names as left behind by a dead holder of our refresh flock.
func acquireDir(ctx context.Context, path string, stale time.Duration, rec *HolderRecord) (*DirLock, error) {
	rec.sweep(path)
	for {
		err := rec.mkdir(path)
		if err == nil {
			d := &DirLock{path: path, rec: rec, stop: make(chan struct{}), done: make(chan struct{})}
			go d.keepFresh()
			return d, nil
		}
		if !errors.Is(err, os.ErrExist) {
			if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS) || errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return nil, fmt.Errorf("%w: %v", ErrClaudeLocksUnavailable, err)
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if rec.leftBehind(path) {
			// Ours, from a holder that died holding it (kill -9, OOM): the
			// very directory it made (same inode and birth time), and we hold
			// the flock it held, so it is not coming back. Waiting for it to
			// go stale would block every refresh and restore, Claude's too,
			// for up to a minute.
			_ = os.Remove(path)
			continue
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
		d.rec.drop(d.path)
	})
}

// HolderRecord is a file in our state dir naming the lock directories the
// current holder of our refresh flock made, each with its inode and birth
// time. Only a holder of that flock may use it: then whatever it names that
// still exists, unchanged, was left by a holder that died.
type HolderRecord struct {
	path string
}

// NewHolderRecord returns the record kept at path ("" = none: leftovers wait
// for the stale time, as Claude's own do).
func NewHolderRecord(path string) *HolderRecord {
	if path == "" {
		return nil
	}
	return &HolderRecord{path: path}
}

type heldDir struct {
	Path  string `json:"path"`
	Ino   uint64 `json:"ino"`
	Btime int64  `json:"btime_ns"`
}

// dirIdentity is a directory's inode and birth time; false when the file
// system does not report a birth time (then nothing is ever taken over).
func dirIdentity(path string) (heldDir, bool) {
	var sx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_INO|unix.STATX_BTIME|unix.STATX_TYPE, &sx); err != nil ||
		sx.Mask&unix.STATX_BTIME == 0 || sx.Mode&unix.S_IFMT != unix.S_IFDIR {
		return heldDir{}, false
	}
	return heldDir{Path: path, Ino: sx.Ino, Btime: sx.Btime.Sec*int64(time.Second) + int64(sx.Btime.Nsec)}, true
}

func (r *HolderRecord) load() []heldDir {
	var held []heldDir
	if b, err := os.ReadFile(r.path); err == nil {
		_ = json.Unmarshal(b, &held)
	}
	return held
}

// save is best effort: without the record a leftover only waits to go stale.
func (r *HolderRecord) save(held []heldDir) {
	if len(held) == 0 {
		_ = os.Remove(r.path)
		return
	}
	b, _ := json.Marshal(held)
	tmp := r.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		_ = os.Remove(tmp)
		return
	}
	_ = os.Rename(tmp, r.path)
}

// mkdir makes the lock directory at path. With a record, the directory is
// made under a temp name, recorded, and only then renamed into place (with
// RENAME_NOREPLACE, so an existing lock is never replaced): a holder killed at
// any instant leaves nothing at path the record does not name.
func (r *HolderRecord) mkdir(path string) error {
	if r == nil {
		return os.Mkdir(path, 0o700)
	}
	if _, err := os.Lstat(path); err == nil {
		return &os.PathError{Op: "mkdir", Path: path, Err: syscall.EEXIST}
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	tmp := path + tempMark + hex.EncodeToString(b[:])
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	id, ok := dirIdentity(tmp)
	if ok {
		id.Path = path
		r.update(func(held []heldDir) []heldDir { return append(held, id) })
	}
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE)
	if err == nil {
		return nil
	}
	_ = os.Remove(tmp)
	if ok {
		r.update(func(held []heldDir) []heldDir {
			return slices.DeleteFunc(held, func(h heldDir) bool { return h == id })
		})
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// No RENAME_NOREPLACE on this file system: mkdir, then record.
		if err := os.Mkdir(path, 0o700); err != nil {
			return err
		}
		if id, ok := dirIdentity(path); ok {
			r.update(func(held []heldDir) []heldDir { return append(held, id) })
		}
		return nil
	}
	return &os.PathError{Op: "mkdir", Path: path, Err: err}
}

// tempMark names a lock directory being made: <lock path>.cas-<12 hex>.
const tempMark = ".cas-"

// sweep removes lock directories a killed holder left half made (under their
// temp name). Only a holder of our refresh flock makes them, so none is in
// the making now.
func (r *HolderRecord) sweep(path string) {
	if r == nil {
		return
	}
	m, _ := filepath.Glob(path + tempMark + "*")
	for _, p := range m {
		if len(p) == len(path)+len(tempMark)+12 {
			_ = syscall.Rmdir(p)
		}
	}
}

func (r *HolderRecord) update(f func([]heldDir) []heldDir) {
	r.save(f(r.load()))
}

func (r *HolderRecord) drop(path string) {
	if r == nil {
		return
	}
	held := r.load()
	if n := len(held); n > 0 {
		if held = slices.DeleteFunc(held, func(h heldDir) bool { return h.Path == path }); len(held) != n {
			r.save(held)
		}
	}
}

// leftBehind says whether the directory at path is the very one the record
// names (so a dead holder of our flock made it).
func (r *HolderRecord) leftBehind(path string) bool {
	if r == nil {
		return false
	}
	id, ok := dirIdentity(path)
	return ok && slices.Contains(r.load(), id)
}

// ClaudeRefresh holds Claude's refresh locks in the one order:
// .oauth_refresh.lock, then <realpath>.lock.
type ClaudeRefresh struct {
	refresh, legacy *DirLock
	storagePath     string
	rec             *HolderRecord
}

// AcquireClaudeRefresh takes both refresh locks of the resolved config dir.
// rec (nil for none) must belong to the caller's held refresh flock: lock
// directories it names as left by a dead holder are taken over at once.
func AcquireClaudeRefresh(ctx context.Context, realDir string, rec *HolderRecord) (*ClaudeRefresh, error) {
	rp, lp, sp := ClaudePaths(realDir)
	if err := os.MkdirAll(realDir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrClaudeLocksUnavailable, err)
	}
	r, err := acquireDir(ctx, rp, StaleRefreshLock, rec)
	if err != nil {
		return nil, err
	}
	l, err := acquireDir(ctx, lp, StaleRefreshLock, rec)
	if err != nil {
		r.Release()
		return nil, err
	}
	return &ClaudeRefresh{refresh: r, legacy: l, storagePath: sp, rec: rec}, nil
}

// WithStorageWrite runs fn under .storage-write.lock (inside the refresh locks).
func (c *ClaudeRefresh) WithStorageWrite(ctx context.Context, fn func() error) error {
	s, err := acquireDir(ctx, c.storagePath, StaleStorageWrite, c.rec)
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
