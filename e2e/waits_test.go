package e2e_test

// Waiting for events instead of sleeping: the agent's live state (agent.json,
// what `status` shows) and inotify on the files the product touches give a
// test a point after which something has happened, whatever the agent's speed.
// Each wait is bounded and fails the test, naming what never came.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
)

// eventuallyWhy is eventually for a condition that says why it does not hold
// yet ("" once it does): the last reason is in the failure.
func eventuallyWhy(t *testing.T, limit time.Duration, what string, cond func() string) {
	t.Helper()
	why := ""
	done := false
	defer func() {
		if !done { // eventually failed the test (t.Fatal runs the defers)
			t.Logf("%s: the last look found: %s", what, why)
		}
	}()
	eventually(t, limit, what, func() bool {
		why = cond()
		return why == ""
	})
	done = true
}

// agentLive is the part of agent.json (the running agent's state) the tests
// wait on. It is read as JSON, the format `status` reads.
type agentLive struct {
	Started     time.Time  `json:"started"`
	LastEvent   *time.Time `json:"last_event"`
	Retries     int        `json:"retries"`
	NextRefresh *time.Time `json:"next_refresh"`
}

// agentLive reads the world's agent.json (zero when absent or unreadable: the
// agent replaces it whole, so a read never sees half of it).
func (w *world) agentLive() agentLive {
	var s agentLive
	if b, err := os.ReadFile(filepath.Join(w.state, "agent.json")); err == nil {
		_ = json.Unmarshal(b, &s)
	}
	return s
}

// waitRetries waits until the agent has retried n more times than it had when
// called (agent.json counts every retry of its backup loop): the retries a
// claim such as "reported once, not once per retry" is about have happened.
func (w *world) waitRetries(t *testing.T, n int, what string) {
	t.Helper()
	from := w.agentLive().Retries
	eventually(t, 60*time.Second, fmt.Sprintf("%s: %d more retries by the agent (agent.json retries from %d)", what, n, from),
		func() bool { return w.agentLive().Retries >= from+n })
}

// waitWakeups waits until the agent has taken in k more watcher events
// (agent.json's last_event changed k times): each one woke its worker and its
// refresher, which looked at the file again.
func (w *world) waitWakeups(t *testing.T, k int, what string) {
	t.Helper()
	last := w.agentLive().LastEvent
	seen := 0
	eventually(t, 60*time.Second, fmt.Sprintf("%s: %d more events taken in by the agent", what, k), func() bool {
		if cur := w.agentLive().LastEvent; cur != nil && (last == nil || cur.After(*last)) {
			last = cur
			seen++
		}
		return seen >= k
	})
}

// touchSeen changes path's times (a watcher event for the agent) and waits
// until the agent has taken the event in: agent.json, which the agent writes
// after each look at the file, records an event after the touch. Two of the
// agent's routines write agent.json, and an older copy can land last: a touch
// not seen after a while is made again (any touch after the first will do).
func (w *world) touchSeen(t *testing.T, path string) {
	t.Helper()
	now := time.Now()
	polls := 0
	eventually(t, 30*time.Second, "the agent took in a touch of "+filepath.Base(path), func() bool {
		if polls%50 == 0 {
			if err := os.Chtimes(path, time.Now(), time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		polls++
		ev := w.agentLive().LastEvent
		return ev != nil && !ev.Before(now)
	})
}

// passEndedAfter waits until state.json, which every pass writes as it ends
// (under a lock, so no write of it is lost), records a pass that ended after
// since.
func (w *world) passEndedAfter(t *testing.T, since time.Time, what string) {
	t.Helper()
	eventually(t, 60*time.Second, what, func() bool {
		var rec struct {
			LastPass *struct {
				At time.Time `json:"at"`
			} `json:"last_pass"`
		}
		b, err := os.ReadFile(filepath.Join(w.state, "state.json"))
		return err == nil && json.Unmarshal(b, &rec) == nil && rec.LastPass != nil && rec.LastPass.At.After(since)
	})
}

// waitFirstPass waits until the world's running agent (its only one) has
// ended its first pass: one that ended after the agent started.
func (w *world) waitFirstPass(t *testing.T) {
	t.Helper()
	var started time.Time
	eventually(t, 30*time.Second, "the agent's agent.json", func() bool {
		started = w.agentLive().Started
		return !started.IsZero()
	})
	w.passEndedAfter(t, started, "the agent's start-up pass")
}

// fsEvents counts inotify events on one path: a file, or a directory, where
// only entries whose name has the given prefix count. An attempt the product
// makes there (a temp file it creates, a read of the file) is seen even when
// it fails or leaves nothing behind. The kernel merges an event with a like
// one still queued (same name, same kind): count events on distinct names
// (temp files), or wait for one before causing the next.
type fsEvents struct {
	mu sync.Mutex
	n  int
	f  *os.File
}

func watchFS(t *testing.T, path string, mask uint32, prefix string) *fsEvents {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	if _, err := syscall.InotifyAddWatch(fd, path, mask); err != nil {
		syscall.Close(fd)
		t.Fatalf("inotify watch %s: %v", path, err)
	}
	// Non-blocking, so the runtime poller owns it and Close ends the Read.
	e := &fsEvents{f: os.NewFile(uintptr(fd), "inotify")}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := e.f.Read(buf)
			if err != nil {
				if !errors.Is(err, os.ErrClosed) {
					t.Errorf("inotify read: %v", err)
				}
				return
			}
			for off := 0; off+syscall.SizeofInotifyEvent <= n; {
				ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := strings.TrimRight(string(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)]), "\x00")
				if ev.Mask&mask != 0 && strings.HasPrefix(name, prefix) {
					e.mu.Lock()
					e.n++
					e.mu.Unlock()
				}
				off += syscall.SizeofInotifyEvent + int(ev.Len)
			}
		}
	}()
	t.Cleanup(func() { e.f.Close(); <-done })
	return e
}

func (e *fsEvents) count() int { e.mu.Lock(); defer e.mu.Unlock(); return e.n }

// waitMore waits until k more events than from have been counted.
func (e *fsEvents) waitMore(t *testing.T, from, k int, what string) {
	t.Helper()
	eventually(t, 60*time.Second, fmt.Sprintf("%s (%d inotify events after %d)", what, k, from), func() bool { return e.count() >= from+k })
}

// tempFilePrefix is the name prefix of the temp files the product writes a
// file through ("."+name+".tmp-"+hex, renamed over the file).
func tempFilePrefix(path string) string { return "." + filepath.Base(path) + ".tmp-" }

// waitPending waits until the agent keeps l as its pending backup
// (pending-backup.json holds it): it has taken the change in.
func (w *world) waitPending(t *testing.T, l fakeanthropic.Login, what string) {
	t.Helper()
	eventually(t, 30*time.Second, what+": the login kept pending", func() bool {
		b, err := os.ReadFile(filepath.Join(w.state, "pending-backup.json"))
		return err == nil && strings.Contains(string(b), l.RefreshToken)
	})
}
