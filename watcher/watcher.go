// Package watcher reports "the credentials file may have changed" without
// polling, through inotify (by way of fsnotify) on the file's parent directory
// (Claude and editors replace the file by rename, which a watch on the file
// itself would lose), filtered to the file's name.
//
// A Change is sent at once, with no debounce, when the new content is complete:
// a file renamed onto the name or created under it, the file removed or
// renamed away, its directory removed, renamed or come back, and a change of
// its mode or owner. Only an in-place write is waited for: until the writes
// have been quiet for Debounce, and never longer than MaxDelay after the first
// of them, so a file rewritten non-stop is still reported. (fsnotify v1.10
// keeps inotify's close-after-write event unexported, so the end of an
// in-place write is known by its quiet; Claude itself writes by rename.)
// A file created and then written (O_CREAT|O_TRUNC on a new name) is reported
// at the creation and again once its writes are quiet.
//
// The watcher survives the directory disappearing and coming back (it watches
// the nearest existing ancestor meanwhile), turns an event-queue overflow into
// a full rescan, adds a slow safety-net rescan for file systems that deliver no
// events (which also takes anew a watch the kernel dropped), and falls back to
// that rescan alone while no inotify instance can be had. The channel holds at
// most one pending Change: never a backlog.
package watcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Reason says why a Change was sent.
type Reason string

const (
	Changed  Reason = "changed"  // an event named the file (or its directory)
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
	// Debounce is how long in-place writes must be quiet before a Change is
	// sent (default 10ms). Renames, creations, removals and changes of mode
	// are reported at once.
	Debounce time.Duration
	// MaxDelay bounds how long a stream of in-place writes can hold a Change
	// back, counted from the first of them (default 10× Debounce), so a file
	// rewritten non-stop is still backed up.
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

	// open gives a new event source; tests replace it (before Run).
	open func() (source, error)
	// trace, when set (by tests, before Run), is told of each step the loop
	// has taken: "watch" with the path now watched, "wait" when an in-place
	// write starts or extends a wait for quiet, "event" with the path an event
	// of the current watch named, once the event has been handled.
	trace func(kind, path string)
}

// New returns a watcher for path. Run starts it.
func New(path string, opts Options) *Watcher {
	if opts.Debounce <= 0 {
		opts.Debounce = 10 * time.Millisecond
	}
	if opts.Rescan <= 0 {
		opts.Rescan = 5 * time.Minute
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = 10 * opts.Debounce
	}
	return &Watcher{path: filepath.Clean(path), opts: opts, c: make(chan Change, 1), open: openFsnotify}
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

// source is an fsnotify watcher, or what a test makes of one.
type source interface {
	add(path string) error
	remove(path string)
	events() <-chan fsnotify.Event
	errors() <-chan error
	close()
}

// fsSource is the real source: one fsnotify watcher, one watch at a time.
type fsSource struct{ w *fsnotify.Watcher }

// openFsnotify gives a new inotify instance through fsnotify. Its error says
// which call failed and why, as inotify_init1's own would.
func openFsnotify() (source, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return nil, os.NewSyscallError("inotify_init1", errno)
		}
		return nil, err
	}
	return fsSource{w}, nil
}

func (s fsSource) add(path string) error         { return s.w.Add(path) }
func (s fsSource) remove(path string)            { _ = s.w.Remove(path) }
func (s fsSource) events() <-chan fsnotify.Event { return s.w.Events }
func (s fsSource) errors() <-chan error          { return s.w.Errors }
func (s fsSource) close()                        { _ = s.w.Close() }

// Run watches until ctx ends. If inotify cannot be had at all (the per-user
// instance limit is reached) it falls back to the rescan timer alone, says so
// through OnError, tries again at every rescan and goes back to inotify (and
// says so through OnRecover) as soon as an instance is free. It does the same
// if reading events ever fails.
func (w *Watcher) Run(ctx context.Context) error {
	src, err := w.open()
	if err != nil {
		w.report(fmt.Errorf("no inotify watcher (%w); falling back to a rescan every %s", err, w.opts.Rescan))
		if src = w.pollUntilInotify(ctx); src == nil {
			return nil
		}
		w.recovered()
	}
	for {
		err := w.watch(ctx, src)
		if ctx.Err() != nil {
			return nil
		}
		why := "inotify stopped"
		if err != nil {
			why += " (" + err.Error() + ")"
		}
		w.report(fmt.Errorf("%s; falling back to a rescan every %s", why, w.opts.Rescan))
		if src = w.pollUntilInotify(ctx); src == nil {
			return nil
		}
		w.recovered()
	}
}

// watch handles src's events until ctx ends (nil) or src stops (why).
func (w *Watcher) watch(ctx context.Context, src source) error {
	defer src.close()
	d := w.newDirWatch(src)
	d.attach(true)
	w.send(Rescan) // a fresh watch: whatever happened before it is unknown

	rescan := time.NewTicker(w.opts.Rescan)
	defer rescan.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-src.events():
			if !ok {
				return errStreamEnded
			}
			d.handle(ev)
		case err, ok := <-src.errors():
			switch {
			case !ok:
				return errStreamEnded
			case errors.Is(err, fsnotify.ErrEventOverflow):
				// Events were lost, the directory's own among them maybe.
				d.attach(true)
				d.now(Overflow)
			default:
				return err
			}
		case <-d.quiet.C:
			if d.pending {
				d.now(Changed)
			}
		case <-rescan.C:
			// Asked again even for the path watched: a watch the kernel
			// dropped without a word (an unmount) is taken anew.
			d.attach(true)
			w.send(Rescan)
		}
	}
}

var errStreamEnded = errors.New("event stream ended")

// dirWatch is what watch keeps for one source: the one watch (on the file's
// directory, or an ancestor while it is missing) and the Change an in-place
// write holds back. Only watch's goroutine touches it.
type dirWatch struct {
	w         *Watcher
	src       source
	dir, base string   // the file's directory and name
	chain     []string // the directory and its ancestors, nearest first
	watched   string   // the path the one watch is on, "" for none
	failed    bool     // the last add failed (a watch limit): said through OnError

	// In-place writes wait on quiet: pending is set from the first write
	// until the Change is sent.
	quiet   *time.Timer
	pending bool
	since   time.Time // the first write of the pending Change
}

func (w *Watcher) newDirWatch(src source) *dirWatch {
	d := &dirWatch{w: w, src: src, dir: filepath.Dir(w.path), base: filepath.Base(w.path)}
	d.chain = []string{d.dir}
	for p := d.dir; filepath.Dir(p) != p; {
		p = filepath.Dir(p)
		d.chain = append(d.chain, p)
	}
	d.quiet = time.NewTimer(time.Hour)
	d.quiet.Stop()
	return d
}

// attach watches the file's directory, or the nearest existing ancestor
// while the directory is missing (it is re-attached when it comes back).
// Forced, it asks the kernel again even for the path it watches: a new
// directory under that path is then watched instead of the old one.
func (d *dirWatch) attach(force bool) {
	for range d.chain { // bounded, should directories come and go meanwhile
		i := d.nearestExisting()
		target := d.chain[i]
		if !force && target == d.watched {
			return
		}
		if err := d.src.add(target); err != nil {
			d.drop(target, err)
			return
		}
		d.moveTo(target)
		// The next directory down may have been made between its Stat
		// and this watch, unseen by it: then go on down.
		if i == 0 {
			return
		}
		if _, err := os.Stat(d.chain[i-1]); err != nil {
			return
		}
	}
}

// nearestExisting is the index in chain of the nearest directory that
// exists (the root, last, when none does).
func (d *dirWatch) nearestExisting() int {
	i := 0
	for i < len(d.chain)-1 {
		if _, err := os.Stat(d.chain[i]); err == nil {
			break
		}
		i++
	}
	return i
}

// drop gives the watch up after target could not be watched: the rescan
// timer is all that is left until an attach succeeds.
func (d *dirWatch) drop(target string, err error) {
	if d.watched != "" {
		d.src.remove(d.watched)
	}
	d.watched = ""
	d.w.report(fmt.Errorf("watch %s: %w; relying on the rescan every %s", target, err, d.w.opts.Rescan))
	d.failed = true
}

// moveTo makes the watch just added on target the one watch.
func (d *dirWatch) moveTo(target string) {
	moved := target != d.watched
	if moved && d.watched != "" {
		d.src.remove(d.watched)
	}
	d.watched = target
	if d.failed {
		d.failed = false
		d.w.recovered()
	}
	if moved {
		d.w.tell("watch", target)
	}
}

// now sends a Change at once, ending any wait for quiet.
func (d *dirWatch) now(r Reason) {
	d.pending = false
	d.quiet.Stop()
	d.w.send(r)
}

// later (re)starts the quiet time, but never past MaxDelay after the
// first write.
func (d *dirWatch) later() {
	if !d.pending {
		d.pending, d.since = true, time.Now()
	}
	wait := d.w.opts.Debounce
	if left := time.Until(d.since.Add(d.w.opts.MaxDelay)); left < wait {
		wait = max(left, 0)
	}
	d.quiet.Reset(wait)
	d.w.tell("wait", d.w.path)
}

// handle acts on one event: re-attach, send now, wait for quiet, or nothing.
// An event names the watched directory itself or one of its children.
func (d *dirWatch) handle(ev fsnotify.Event) {
	name := filepath.Clean(ev.Name)
	self := d.watched != "" && name == d.watched
	child := d.watched != "" && !self && filepath.Dir(name) == d.watched
	// The watched directory removed or renamed: fsnotify has given its
	// watch up.
	gone := self && ev.Op&(fsnotify.Remove|fsnotify.Rename) != 0
	if gone {
		d.watched = ""
	}
	switch {
	case d.watched != d.dir:
		// Watching an ancestor, or the directory just went: anything may be
		// the directory coming back.
		wasDir := gone && name == d.dir
		d.attach(false)
		if wasDir || d.watched == d.dir {
			d.now(Changed)
		}
	case !child:
		// Left over from a watch given up.
	case filepath.Base(name) != d.base:
	case ev.Op&(fsnotify.Create|fsnotify.Remove|fsnotify.Rename) != 0:
		// Made, renamed onto the name, removed or renamed away: complete.
		d.now(Changed)
	case ev.Op&fsnotify.Write != 0:
		d.later()
	case ev.Op&fsnotify.Chmod != 0:
		if d.pending {
			d.later() // a writer still at it: its quiet will tell
		} else {
			d.now(Changed)
		}
	}
	if self || child {
		d.w.tell("event", name)
	}
}

// pollUntilInotify rescans every Rescan until an inotify instance can be had
// again (it is returned, to watch with) or ctx ends (nil).
func (w *Watcher) pollUntilInotify(ctx context.Context) source {
	t := time.NewTicker(w.opts.Rescan)
	defer t.Stop()
	w.send(Rescan)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.send(Rescan)
			if src, err := w.open(); err == nil {
				return src
			}
		}
	}
}

func (w *Watcher) tell(kind, path string) {
	if w.trace != nil {
		w.trace(kind, path)
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
