package promfile

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// settle is how long the publisher waits after a change for more (an agent's
// temp file and rename are two events; a boot starts many agents at once).
const settle = 100 * time.Millisecond

// every republishes whatever inotify may have missed (a directory made
// between the listing and its watch) and refreshes the users' names.
const every = time.Minute

// Run publishes now, then again within settle of any change in Source or a
// user's directory, and every minute; until ctx ends. inotify sees the
// agents' renames, so a write reaches the node exporter's file in a fraction
// of a second. A failed publish is said (a WARN line) and retried at the next
// change or minute; only a watch that cannot be set up at all ends Run.
func (p *Publisher) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	watched := map[string]bool{}
	watch := func() {
		if !watched[p.Source] && w.Add(p.Source) == nil {
			watched[p.Source] = true
		}
		entries, _ := os.ReadDir(p.Source)
		for _, e := range entries {
			dir := filepath.Join(p.Source, e.Name())
			if e.IsDir() && !watched[dir] && w.Add(dir) == nil {
				watched[dir] = true
			}
		}
	}
	watch()
	_, _ = p.Publish()
	tick := time.NewTicker(every)
	defer tick.Stop()
	var due <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Op&(fsnotify.Remove|fsnotify.Rename) != 0 {
				delete(watched, ev.Name) // a user's directory gone
			}
			if due == nil {
				due = time.After(settle)
			}
		case <-w.Errors:
			// An overflow: publish all, as after any change.
			if due == nil {
				due = time.After(settle)
			}
		case <-tick.C:
			watch()
			_, _ = p.Publish()
		case <-due:
			due = nil
			watch()
			_, _ = p.Publish()
		}
	}
}
