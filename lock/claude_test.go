package lock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// die stops a held lock's toucher without removing anything: what kill -9
// leaves behind.
func (c *ClaudeRefresh) die() {
	for _, d := range []*DirLock{c.legacy, c.refresh} {
		d.once.Do(func() { close(d.stop); <-d.done })
	}
}

// A holder of our refresh flock killed while it held Claude's lock
// directories: the next holder takes exactly those over at once instead of
// waiting a minute for them to go stale (regression: every refresh and restore
// after a kill -9 mid-refresh waited up to 60 s).
func TestClaudeLocksLeftByADeadHolderAreTakenOver(t *testing.T) {
	root := t.TempDir()
	cfg := filepath.Join(root, ".claude")
	rec := NewHolderRecord(filepath.Join(root, "state", "claude-locks-held"))
	os.MkdirAll(filepath.Dir(rec.path), 0o700)

	first, err := AcquireClaudeRefresh(context.Background(), cfg, rec)
	if err != nil {
		t.Fatal(err)
	}
	first.die()
	rp, lp, _ := ClaudePaths(cfg)
	for _, p := range []string{rp, lp} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("the dead holder's %s is gone: %v", p, err)
		}
	}

	// Without the record: the leftover is respected until it goes stale.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = AcquireClaudeRefresh(ctx, cfg, nil)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AcquireClaudeRefresh without a record over a fresh leftover = %v; want it to wait", err)
	}

	// With it: taken over at once.
	start := time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	second, err := AcquireClaudeRefresh(ctx, cfg, rec)
	cancel()
	if err != nil {
		t.Fatalf("AcquireClaudeRefresh over our dead holder's leftovers = %v; want them taken over", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("takeover took %s", d)
	}
	if err := second.WithStorageWrite(context.Background(), func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	second.Release()
	if _, err := os.Stat(rec.path); !os.IsNotExist(err) {
		t.Errorf("the holder record outlived a clean release: %v", err)
	}
}

// A lock directory at the same path that is not the one the record names
// (Claude made it after our dead holder's went away) is never taken over,
// even though the record still names the path.
func TestClaudeLockRemadeByClaudeIsRespected(t *testing.T) {
	root := t.TempDir()
	cfg := filepath.Join(root, ".claude")
	rec := NewHolderRecord(filepath.Join(root, "claude-locks-held"))
	first, err := AcquireClaudeRefresh(context.Background(), cfg, rec)
	if err != nil {
		t.Fatal(err)
	}
	first.die()
	rp, lp, _ := ClaudePaths(cfg)
	ours, ok := dirIdentity(rp)
	if !ok {
		t.Fatalf("no identity (inode, birth time) for %s", rp)
	}
	// Claude removed ours (stale) and took the lock: a new directory. Made
	// again until it is not ours by inode and birth time (a reused inode
	// within the clock's tick would be ours, by design).
	os.Remove(lp)
	for deadline := time.Now().Add(10 * time.Second); ; {
		os.Remove(rp)
		if err := os.Mkdir(rp, 0o700); err != nil {
			t.Fatal(err)
		}
		if id, ok := dirIdentity(rp); ok && id != ours {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a new directory at %s keeps the identity of ours", rp)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := AcquireClaudeRefresh(ctx, cfg, rec); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AcquireClaudeRefresh over Claude's live lock = %v; want it to wait", err)
	}
	if _, err := os.Stat(rp); err != nil {
		t.Errorf("Claude's live lock was removed: %v", err)
	}
}

// A holder killed after making its lock directory under the temp name and
// before renaming it into place leaves the temp directory: the next holder
// removes it, and nothing is left at the lock path to wait for.
func TestClaudeLockHalfMadeIsSwept(t *testing.T) {
	root := t.TempDir()
	cfg := filepath.Join(root, ".claude")
	os.MkdirAll(cfg, 0o700)
	rec := NewHolderRecord(filepath.Join(root, "claude-locks-held"))
	rp, lp, _ := ClaudePaths(cfg)
	half := []string{rp + tempMark + "0123456789ab", lp + tempMark + "ba9876543210"}
	for _, p := range half {
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := AcquireClaudeRefresh(ctx, cfg, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	for _, p := range half {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("half-made lock directory %s left: %v", filepath.Base(p), err)
		}
	}
	// The record names both held directories before the release.
	if held := rec.load(); len(held) != 2 {
		t.Errorf("record names %d directories while two are held", len(held))
	}
}
