package watcher

// These tests run the watcher on a real inotify instance (through fsnotify)
// in a temp dir. None
// sleeps and none measures time: a test waits (bounded, 5 s) for what it
// expects, and a claim that nothing was sent is checked only after a point the
// watcher is known to have passed: it has handled the event of a sentinel file
// made after the action under test, and inotify hands events over in order.
// A Debounce of an hour makes "reported" mean "reported without waiting for
// quiet".

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const bound = 5 * time.Second // how long a test waits for what must happen

// tracer records the steps the watcher reports through its trace hook.
type tracer struct {
	mu    sync.Mutex
	steps [][2]string
	next  int           // steps before it were matched by wait
	more  chan struct{} // a step was added
	hold  func(kind, path string)
}

func (tr *tracer) record(kind, path string) {
	if tr.hold != nil {
		tr.hold(kind, path)
	}
	tr.mu.Lock()
	tr.steps = append(tr.steps, [2]string{kind, path})
	tr.mu.Unlock()
	select {
	case tr.more <- struct{}{}:
	default:
	}
}

// wait returns once the watcher has taken the step (kind, path), after the
// last step an earlier wait matched.
func (tr *tracer) wait(t *testing.T, kind, path string) {
	t.Helper()
	deadline := time.After(bound)
	for {
		tr.mu.Lock()
		for i := tr.next; i < len(tr.steps); i++ {
			if tr.steps[i] == [2]string{kind, path} {
				tr.next = i + 1
				tr.mu.Unlock()
				return
			}
		}
		tr.mu.Unlock()
		select {
		case <-tr.more:
		case <-deadline:
			t.Fatalf("the watcher did not %s %s", kind, path)
		}
	}
}

// took says whether the watcher has taken a step of this kind at all.
func (tr *tracer) took(kind string) bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, s := range tr.steps {
		if s[0] == kind {
			return true
		}
	}
	return false
}

type harness struct {
	*Watcher
	tr       *tracer
	sentinel int
}

// run starts w (its options and hooks set) with a tracer, and drains the
// first Change unless it is told not to.
func run(t *testing.T, w *Watcher, tr *tracer) *harness {
	t.Helper()
	if tr == nil {
		tr = &tracer{more: make(chan struct{}, 1)}
	}
	w.trace = tr.record
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &harness{Watcher: w, tr: tr}
}

// start watches path and drains the first Change, the fresh watch's Rescan.
func start(t *testing.T, path string, opts Options) *harness {
	t.Helper()
	if opts.Rescan == 0 {
		opts.Rescan = time.Hour
	}
	h := run(t, New(path, opts), nil)
	if c := h.expect(t, "the fresh watch"); c.Reason != Rescan {
		t.Fatalf("first change = %s; want rescan", c.Reason)
	}
	// The first watch was taken before that Rescan: waits start after it.
	h.tr.mu.Lock()
	h.tr.next = len(h.tr.steps)
	h.tr.mu.Unlock()
	return h
}

func (h *harness) expect(t *testing.T, what string) Change {
	t.Helper()
	select {
	case c := <-h.C():
		return c
	case <-time.After(bound):
		t.Fatalf("%s: no change reported", what)
	}
	return Change{}
}

func (h *harness) expectChanged(t *testing.T, what string) {
	t.Helper()
	if c := h.expect(t, what); c.Reason != Changed {
		t.Fatalf("%s: reason %s; want changed", what, c.Reason)
	}
}

// none checks that no Change is pending now; call it after sync.
func (h *harness) none(t *testing.T, what string) {
	t.Helper()
	select {
	case c := <-h.C():
		t.Fatalf("%s: unexpected change %s", what, c.Reason)
	default:
	}
}

// sync makes a sentinel file in dir, which must be the directory watched, and
// returns once the watcher has handled its creation: every event before it
// has been handled too.
func (h *harness) sync(t *testing.T, dir string) {
	t.Helper()
	h.sentinel++
	name := filepath.Join(dir, "sentinel-"+strconv.Itoa(h.sentinel))
	if err := os.WriteFile(name, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h.tr.wait(t, "event", name)
}

// waitsForQuiet checks that what was written to f (open, in dir) has sent
// nothing, and that closing f sends nothing either: only the quiet time does.
func (h *harness) waitsForQuiet(t *testing.T, dir string, f *os.File, what string) {
	t.Helper()
	h.sync(t, dir)
	h.none(t, what+", not closed")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	h.sync(t, dir)
	h.none(t, what+", then closed")
	if !h.tr.took("wait") {
		t.Errorf("%s: no wait for quiet", what)
	}
}

// drain syncs, then empties the channel: what comes after is caused by what
// the test does next.
func (h *harness) drain(t *testing.T, dir string) {
	t.Helper()
	h.sync(t, dir)
	select {
	case <-h.C():
	default:
	}
}

func credsIn(t *testing.T) (dir, path string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, ".credentials.json")
	if err := os.WriteFile(path, []byte(`{"a":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, path
}

// Every way of changing the file is reported without waiting for quiet.
func TestWatcherSeesEveryWayOfWriting(t *testing.T) {
	cases := []struct {
		name  string
		write func(t *testing.T, dir, path string)
	}{
		{"rename over", func(t *testing.T, dir, path string) {
			tmp := filepath.Join(dir, ".credentials.json.tmp-1")
			if err := os.WriteFile(tmp, []byte(`{"a":2}`), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}},
		{"delete then create", func(t *testing.T, dir, path string) {
			os.Remove(path)
			os.WriteFile(path, []byte(`{"a":4}`), 0o600)
		}},
		{"delete", func(t *testing.T, dir, path string) { os.Remove(path) }},
		{"rename away", func(t *testing.T, dir, path string) { os.Rename(path, path+".old") }},
		{"chmod", func(t *testing.T, dir, path string) { os.Chmod(path, 0o644) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, path := credsIn(t)
			// An hour's debounce: a Change within the bound was not waited for.
			h := start(t, path, Options{Debounce: time.Hour})
			tc.write(t, filepath.Dir(path), path)
			h.expectChanged(t, tc.name)
		})
	}
}

// A rename over the file is reported at once, and the file written beside it
// first is not reported at all.
func TestWatcherRenameOverAtOnce(t *testing.T) {
	dir, path := credsIn(t)
	h := start(t, path, Options{Debounce: time.Hour})
	tmp := filepath.Join(dir, ".credentials.json.tmp-7")
	if err := os.WriteFile(tmp, []byte(`{"a":2}`), 0o600); err != nil {
		t.Fatal(err)
	}
	h.sync(t, dir)
	h.none(t, "the new file written beside it")
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	h.expectChanged(t, "rename over")
}

// An in-place writer is waited for until its writes are quiet: nothing while
// it writes nor when it closes the file (the quiet time is an hour).
func TestWatcherInPlaceWriteWaitsForQuiet(t *testing.T) {
	dir, path := credsIn(t)
	h := start(t, path, Options{Debounce: time.Hour})
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := range 3 {
		if _, err := f.WriteString(`{"a":` + strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
		h.sync(t, dir)
		h.none(t, "written, not closed")
	}
	// A change of mode while the writer is at it waits with it.
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	h.waitsForQuiet(t, dir, f, "chmod while written")
}

// An editor's O_CREAT|O_TRUNC on a new file: the creation is reported at once,
// and the writes that follow are waited for.
func TestWatcherCreateThenWriteReportedAfterWrites(t *testing.T) {
	dir, path := credsIn(t)
	h := start(t, path, Options{Debounce: time.Hour})
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	h.expectChanged(t, "removed")
	h.drain(t, dir)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h.expectChanged(t, "created")
	if _, err := f.WriteString(`{"a":5}`); err != nil {
		t.Fatal(err)
	}
	h.waitsForQuiet(t, dir, f, "written after the creation")
}

// An in-place writer that writes and closes is reported once it has been
// quiet, as is one that never closes.
func TestWatcherInPlaceWriteAfterQuiet(t *testing.T) {
	for _, closed := range []bool{true, false} {
		t.Run(fmt.Sprint("closed=", closed), func(t *testing.T) {
			_, path := credsIn(t)
			h := start(t, path, Options{Debounce: 20 * time.Millisecond})
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteString(`{"a":6}`); err != nil {
				t.Fatal(err)
			}
			if closed {
				if err := f.Close(); err != nil {
					t.Fatal(err)
				}
			}
			h.expectChanged(t, "written in place")
			if !h.tr.took("wait") {
				t.Error("the Change did not come from the quiet time")
			}
		})
	}
}

// A file rewritten in place without a pause and never closed is still reported:
// the writes cannot hold the Change back past MaxDelay. The quiet time is an
// hour and the file stays open, so only MaxDelay can send it.
func TestWatcherMaxDelayUnderEndlessWrites(t *testing.T) {
	_, path := credsIn(t)
	h := start(t, path, Options{Debounce: time.Hour, MaxDelay: 50 * time.Millisecond})
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			default:
				if _, err := f.WriteAt([]byte(`{}`), 0); err != nil {
					return
				}
			}
		}
	}()
	defer func() { close(stop); <-stopped; f.Close() }()
	h.expectChanged(t, "rewritten non-stop")
}

// Other files in the directory, written in every way, are neither reported
// nor waited for.
func TestWatcherIgnoresOtherFiles(t *testing.T) {
	dir, path := credsIn(t)
	h := start(t, path, Options{Debounce: time.Hour})
	os.WriteFile(filepath.Join(dir, "settings.json"), []byte("{}"), 0o600)
	os.WriteFile(filepath.Join(dir, ".credentials.json.bak"), []byte("{}"), 0o600)
	os.Rename(filepath.Join(dir, "settings.json"), filepath.Join(dir, "settings.old"))
	os.Chmod(filepath.Join(dir, ".credentials.json.bak"), 0o644)
	f, err := os.OpenFile(filepath.Join(dir, "history.jsonl"), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("{}\n") // and left open
	os.Mkdir(filepath.Join(dir, "projects"), 0o700)
	h.sync(t, dir)
	h.none(t, "other files")
	if h.tr.took("wait") {
		t.Error("a write to another file started a wait")
	}
}

// A reader that does not keep up gets one Change for many events, never a
// backlog.
func TestWatcherHoldsOneChange(t *testing.T) {
	dir, path := credsIn(t)
	h := start(t, path, Options{Debounce: time.Hour})
	for i := range 200 {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(`{"i":`+strconv.Itoa(i)+`}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(`{"j":`+strconv.Itoa(i)+`}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h.sync(t, dir)
	if n := len(h.C()); n != 1 {
		t.Fatalf("%d changes pending after 400 writes; want 1", n)
	}
	before := time.Now()
	c := <-h.C()
	if c.At.IsZero() || c.At.After(before) {
		t.Errorf("Change.At = %v; want the time it was sent", c.At)
	}
	h.none(t, "after the one pending change")
}

// The directory removed and made again: both reported at once, and the file
// in the new directory is watched.
func TestWatcherSurvivesDirectoryRecreate(t *testing.T) {
	home, dir, path, h := startInHome(t)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	h.expectChanged(t, "directory removed")
	h.tr.wait(t, "watch", home)
	h.drain(t, home)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	h.expectChanged(t, "directory made again")
	h.watchesAnew(t, dir, path)
}

// startInHome watches home/.claude/.credentials.json (made) with an hour's
// debounce.
func startInHome(t *testing.T) (home, dir, path string, h *harness) {
	t.Helper()
	home = t.TempDir()
	dir = filepath.Join(home, ".claude")
	path = filepath.Join(dir, ".credentials.json")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(`{}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return home, dir, path, start(t, path, Options{Debounce: time.Hour})
}

// watchesAnew waits for a new watch of dir, then checks that a file renamed
// onto path there is reported.
func (h *harness) watchesAnew(t *testing.T, dir, path string) {
	t.Helper()
	h.tr.wait(t, "watch", dir)
	h.drain(t, dir)
	if err := os.WriteFile(path+".tmp", []byte(`{"b":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	h.expectChanged(t, "file renamed over in the new "+dir)
}

// The directory renamed away and another put in its place.
func TestWatcherSurvivesDirectorySwap(t *testing.T) {
	home, dir, path, h := startInHome(t)
	next := filepath.Join(home, ".claude.new")
	os.MkdirAll(next, 0o700)
	os.WriteFile(filepath.Join(next, ".credentials.json"), []byte(`{"c":1}`), 0o600)
	if err := os.Rename(dir, filepath.Join(home, ".claude.old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, dir); err != nil {
		t.Fatal(err)
	}
	h.expectChanged(t, "directory swapped")
	// Whichever way the watcher went meanwhile (the ancestor while no
	// directory was there), it ends on the new directory: a new watch.
	h.watchesAnew(t, dir, path)
}

// Started before the directory (and its parent) exist: watches the nearest
// ancestor, then the directory as soon as it is made.
func TestWatcherStartsBeforeDirectoryExists(t *testing.T) {
	home := t.TempDir()
	dir := filepath.Join(home, "a", "b", ".claude")
	path := filepath.Join(dir, ".credentials.json")
	h := start(t, path, Options{Debounce: time.Hour})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	h.expectChanged(t, "directory made")
	h.watchesAnew(t, dir, path)
}

// A real overflow of the kernel's queue: the loop is held (in its trace hook)
// while more events than the queue holds happen, then let go; the Change is a
// full rescan, and the watch still works after it.
func TestWatcherOverflowIsAFullRescan(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Skip("no inotify queue limit to read:", err)
	}
	limit, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || limit > 100000 {
		t.Skipf("inotify queue limit %q: too large to overflow here", strings.TrimSpace(string(b)))
	}
	dir, path := credsIn(t)
	block := filepath.Join(dir, "block")
	held, release := make(chan struct{}), make(chan struct{})
	tr := &tracer{more: make(chan struct{}, 1), hold: func(kind, p string) {
		if kind == "event" && p == block {
			close(held)
			<-release
		}
	}}
	w := New(path, Options{Debounce: time.Hour, Rescan: time.Hour})
	h := run(t, w, tr)
	if c := h.expect(t, "the fresh watch"); c.Reason != Rescan {
		t.Fatalf("first change = %s; want rescan", c.Reason)
	}
	if err := os.Mkdir(block, 0o700); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-time.After(bound):
		t.Fatal("the watcher did not reach the block")
	}
	// Each directory made and removed is two events with its own name; the
	// reader may hold a buffer's worth (some hundreds) besides the queue.
	for i := 0; i < limit/2+2000; i++ {
		d := filepath.Join(dir, "d"+strconv.Itoa(i))
		if err := os.Mkdir(d, 0o700); err != nil {
			close(release)
			t.Fatal(err)
		}
		os.Remove(d)
	}
	close(release)
	for {
		c := h.expect(t, "overflow")
		if c.Reason == Overflow {
			break
		}
		t.Logf("change %s before the overflow", c.Reason)
	}
	h.drain(t, dir)
	os.Chmod(path, 0o644)
	h.expectChanged(t, "chmod after the overflow")
}

// injected wraps a real fsnotify source: a test can end its stream with an
// error, as a failed read would.
type injected struct {
	source
	errs chan error
	stop chan error
	quit chan struct{}
}

func inject(s source) *injected {
	in := &injected{source: s, errs: make(chan error), stop: make(chan error, 1), quit: make(chan struct{})}
	go func() {
		for {
			var err error
			var ok bool
			select {
			case err = <-in.stop:
			case err, ok = <-s.errors():
				if !ok {
					return
				}
			case <-in.quit:
				return
			}
			select {
			case in.errs <- err:
			case <-in.quit:
				return
			}
		}
	}()
	return in
}

func (in *injected) errors() <-chan error { return in.errs }
func (in *injected) close()               { close(in.quit); in.source.close() }

// No inotify instance at the start (the per-user limit reached): the watcher
// rescans on its timer, says so once through OnError, and goes back to inotify,
// saying so through OnRecover, once an instance can be had. A read that fails
// later is handled the same way.
func TestWatcherFallsBackWithoutInotify(t *testing.T) {
	dir, path := credsIn(t)
	errs := make(chan error, 100)
	recovered := make(chan struct{}, 100)
	allow := make(chan struct{})
	var mu sync.Mutex
	var last *injected
	w := New(path, Options{Debounce: time.Hour, Rescan: 5 * time.Millisecond,
		OnError:   func(err error) { errs <- err },
		OnRecover: func() { recovered <- struct{}{} },
	})
	w.open = func() (source, error) {
		select {
		case <-allow:
		default:
			return nil, errors.New("too many open files")
		}
		s, err := openFsnotify()
		if err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		last = inject(s)
		return last, nil
	}
	h := run(t, w, nil)
	waitErr := func(want string) {
		t.Helper()
		select {
		case err := <-errs:
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("OnError(%v); want %q", err, want)
			}
		case <-time.After(bound):
			t.Fatalf("OnError not told %q", want)
		}
	}
	waitRecovered := func() {
		t.Helper()
		select {
		case <-recovered:
		case <-time.After(bound):
			t.Fatal("OnRecover not called")
		}
	}
	waitErr("no inotify watcher (too many open files)")
	for range 2 {
		if c := h.expect(t, "rescan without inotify"); c.Reason != Rescan {
			t.Fatalf("reason %s without inotify; want rescan", c.Reason)
		}
	}
	close(allow)
	waitRecovered()
	h.tr.wait(t, "watch", dir)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	h.tr.wait(t, "event", path)

	// The event stream breaks: the same fallback, and back again.
	mu.Lock()
	last.stop <- fmt.Errorf("read: input/output error")
	mu.Unlock()
	waitErr("inotify stopped (read: input/output error)")
	waitRecovered()
	h.tr.wait(t, "watch", dir)
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	h.tr.wait(t, "event", path)
	select {
	case err := <-errs:
		t.Errorf("OnError(%v) again", err)
	default:
	}
}
