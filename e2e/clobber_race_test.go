package e2e_test

import (
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// TestARacerClobbersEachRefreshTheMomentItLands: the mission's second way
// to lose a login, at its narrowest. The agent refreshes a short-lived login
// every few seconds; a racer watching the directory with inotify clobbers
// the file (empty tokens, as the losing writer of a refresh race persists)
// the moment each new login lands there, before the agent has read it, let
// alone backed it up. The backup then holds the refresh token the refresh
// just spent. Each clobber must come back as the new login: the fake sees no
// invalid_grant, the agent logs no FAIL, and after the last clobber the
// login still refreshes.
func TestARacerClobbersEachRefreshTheMomentItLands(t *testing.T) {
	const clobbers = 8
	w := newWorld(t)
	w.fake.SetExpiresIn(6 * time.Second) // the agent refreshes at 3 s left
	first := w.login()
	a := w.startAgent([]string{"CLAUDE_AUTH_REFRESH_LEAD=3s"})
	eventually(t, 60*time.Second, "the first login backed up", func() bool { return strings.Contains(w.syncLog(), "OK backed up") })

	// The racer: every refresh token it has not seen before, once it is of
	// the fake's chain, is clobbered at once.
	watch, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	if err := watch.Add(filepath.Dir(w.creds)); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		done    int
		errs    []string
		stopped = make(chan struct{})
	)
	go func() {
		defer close(stopped)
		seen := map[string]bool{first.RefreshToken: true}
		for ev := range watch.Events {
			if ev.Name != w.creds || !ev.Has(fsnotify.Create) && !ev.Has(fsnotify.Write) {
				continue
			}
			r := refreshInFile(w.creds)
			if r == "" || seen[r] || !slices.Contains(w.fake.Issued(), r) {
				continue
			}
			seen[r] = true
			mu.Lock()
			if done < clobbers {
				if err := clobberFile(w.creds, -1, -1); err != nil {
					errs = append(errs, err.Error())
				}
				done++
			}
			mu.Unlock()
		}
	}()
	eventually(t, 3*time.Minute, "the racer's clobbers", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return done == clobbers
	})
	mu.Lock()
	if len(errs) > 0 {
		t.Fatalf("the racer could not clobber: %v", errs)
	}
	mu.Unlock()
	// After the last clobber the login is alive: it is restored, and it
	// still refreshes (two more rotations of the chain).
	n := w.fake.Counters().Refreshes
	eventually(t, 60*time.Second, "two more refreshes after the last clobber", func() bool { return w.fake.Counters().Refreshes >= n+2 })
	eventually(t, 30*time.Second, "the newest login in the file", func() bool {
		iss := w.fake.Issued()
		return len(iss) > 0 && refreshInFile(w.creds) == iss[len(iss)-1]
	})
	watch.Close()
	<-stopped
	a.stop()

	log := w.syncLog()
	if c := w.fake.Counters(); c.InvalidGrant != 0 {
		t.Errorf("the fake answered invalid_grant %d times: a spent refresh token was restored and presented", c.InvalidGrant)
	}
	if l := failLine.FindAllString(log, -1); len(l) > 0 {
		t.Errorf("the agent logged FAIL:\n%s", strings.Join(l, "\n"))
	}
	restored := clobberRestored.FindAllString(log, -1)
	if len(restored) != clobbers {
		t.Errorf("%d RECOVERED lines for %d clobbers:\n%s", len(restored), clobbers, log)
	}
	fromAnswer := 0
	for _, l := range restored {
		if strings.Contains(l, "restored the newest login") {
			fromAnswer++
		}
	}
	t.Logf("RACE-REPORT %d clobbers the moment each refresh landed: %d restored from the refresh's own login (not yet backed up), %d from a backup that already held it; %d refreshes, %d invalid_grant",
		clobbers, fromAnswer, len(restored)-fromAnswer, w.fake.Counters().Refreshes, w.fake.Counters().InvalidGrant)
}
