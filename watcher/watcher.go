// Package watcher reports "the credentials file may have changed" without
// polling: fsnotify on the file's parent directory (Claude and editors replace
// the file by rename, which a watch on the file itself would lose), filtered to
// the file's name, coalesced with a short trailing debounce. It survives the
// directory disappearing and coming back, turns an event-queue overflow into a
// full rescan, and adds a slow safety-net rescan for file systems that deliver
// no events.
package watcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Reason says why a Change was sent.
type Reason string

const (
	Changed  Reason = "changed"  // an event named the file
	Rescan   Reason = "rescan"   // the safety-net timer, or a fresh watch
	Overflow Reason = "overflow" // the kernel dropped events
)

// Change is one coalesced notification; the receiver re-reads the file.
type Change struct {
	Reason Reason
	At     time.Time
}

// Options tune the watcher; zero values take the defaults.
type Options struct {
	Debounce time.Duration // trailing quiet time before a Change (default 10ms)
	// MaxDelay bounds how long a stream of events can hold a Change back
	// (default 10× Debounce), so a file rewritten non-stop is still backed up.
	MaxDelay time.Duration
	Rescan   time.Duration // safety-net rescan period (default 5m)
	// OnError is told about watch errors (e.g. inotify limits) once per kind.
	OnError func(error)
	// OnRecover is told when inotify watches the file's directory again
	// after an error (an inotify instance or watch became available).
	OnRecover func()
}

// Watcher watches one file.
type Watcher struct {
	path string
	opts Options
	c    chan Change
}

// New returns a watcher for path. Run starts it.
func New(path string, opts Options) *Watcher {
	if opts.Debounce <= 0 {
		opts.Debounce = 10 * time.Millisecond
	}
	if opts.Rescan <= 0 {
		opts.Rescan = 5 * time.Minute
	}
	if opts.MaxDelay < opts.Debounce {
		opts.MaxDelay = 10 * opts.Debounce
	}
	return &Watcher{path: filepath.Clean(path), opts: opts, c: make(chan Change, 1)}
}

// C delivers changes. It holds at most one pending Change: a reader that falls
// behind gets one notification for many events, never a backlog.
func (w *Watcher) C() <-chan Change { return w.c }

func (w *Watcher) send(r Reason) {
	select {
	case w.c <- Change{Reason: r, At: time.Now()}:
	default:
		// One is pending already; the reader will re-read the file anyway.
	}
}

// Run watches until ctx ends. If inotify cannot be had at all (the per-user
// instance limit is reached) it falls back to the rescan timer alone, says so
// through OnError, tries again at every rescan and goes back to inotify (and
// says so through OnRecover) as soon as an instance is free.
func (w *Watcher) Run(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		w.report(fmt.Errorf("no inotify watcher (%w); falling back to a rescan every %s", err, w.opts.Rescan))
		if fw = w.pollUntilInotify(ctx); fw == nil {
			return nil
		}
		w.recovered()
	}
	return w.watch(ctx, fw)
}

func (w *Watcher) watch(ctx context.Context, fw *fsnotify.Watcher) error {
	defer fw.Close()

	dir := filepath.Dir(w.path)
	watched := ""
	failed := false // the last Add failed (a watch limit): said through OnError
	// attach watches the file's directory, or the nearest existing ancestor
	// while the directory is missing (it is re-attached when it comes back).
	attach := func() {
		target := dir
		for {
			if _, err := os.Stat(target); err == nil {
				break
			}
			parent := filepath.Dir(target)
			if parent == target {
				break
			}
			target = parent
		}
		if target == watched {
			return
		}
		if watched != "" {
			_ = fw.Remove(watched)
		}
		if err := fw.Add(target); err != nil {
			w.report(fmt.Errorf("watch %s: %w; relying on the rescan every %s", target, err, w.opts.Rescan))
			watched, failed = "", true
			return
		}
		watched = target
		if failed {
			failed = false
			w.recovered()
		}
	}
	attach()
	w.send(Rescan) // a fresh watch: whatever happened before it is unknown

	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	pending := Reason("")
	var since time.Time // when the pending Change's first event came
	// arm (re)starts the trailing debounce, but never past MaxDelay after the
	// first event of the burst.
	arm := func(r Reason) {
		if pending == "" {
			since = time.Now()
		}
		if pending == "" || r == Overflow {
			pending = r
		}
		wait := w.opts.Debounce
		if left := time.Until(since.Add(w.opts.MaxDelay)); left < wait {
			wait = max(left, 0)
		}
		debounce.Reset(wait)
	}
	rescan := time.NewTicker(w.opts.Rescan)
	defer rescan.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return errors.New("fsnotify closed its event channel")
			}
			name := filepath.Clean(ev.Name)
			switch {
			case watched != dir:
				// Watching an ancestor: anything may be the directory coming back.
				attach()
				if watched == dir {
					arm(Changed)
				}
			case name == dir && ev.Has(fsnotify.Remove|fsnotify.Rename):
				attach()
				arm(Changed)
			case name == w.path:
				arm(Changed)
			}
		case err, ok := <-fw.Errors:
			if !ok {
				return errors.New("fsnotify closed its error channel")
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				arm(Overflow)
				continue
			}
			w.report(err)
		case <-debounce.C:
			if pending != "" {
				w.send(pending)
				pending = ""
			}
		case <-rescan.C:
			if watched != dir {
				attach()
			}
			w.send(Rescan)
		}
	}
}

// pollUntilInotify rescans every Rescan until an inotify instance can be had
// again (it is returned, to watch with) or ctx ends (nil).
func (w *Watcher) pollUntilInotify(ctx context.Context) *fsnotify.Watcher {
	t := time.NewTicker(w.opts.Rescan)
	defer t.Stop()
	w.send(Rescan)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.send(Rescan)
			if fw, err := fsnotify.NewWatcher(); err == nil {
				return fw
			}
		}
	}
}

func (w *Watcher) recovered() {
	if w.opts.OnRecover != nil {
		w.opts.OnRecover()
	}
}

func (w *Watcher) report(err error) {
	if w.opts.OnError != nil {
		w.opts.OnError(err)
	}
}
