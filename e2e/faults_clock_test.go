package e2e_test

import (
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/agent"
)

// The agent's clock (injected: the machine's clock is left alone) jumps
// forward and back by hours while the token endpoint keeps real time, as when
// NTP corrects a host clock. A jump past the login's expiry gets exactly one
// refresh (no storm); a login rotated after a jump back, whose expiresAt is
// now earlier than the backup's, is still backed up (lineage decides, not the
// clock); then random jumps of 1-12 h with rotations in between. Throughout:
// no invalid_grant, the file valid, Vault's history never going back.
func TestFaultClockJumps(t *testing.T) {
	steps := faultIterations(t, 12, 0.4)
	w := newWorld(t)
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	eng := w.inProcessEngine(now)
	hist := newVaultHistory(t, vsrv.Root(), w.user.Path)

	l := w.login()
	w.runAgentInProcess(eng, agent.Options{CheckInterval: time.Hour, RetryMax: time.Second, Rescan: 300 * time.Millisecond})
	eventually(t, 20*time.Second, "initial backup", w.vaultHolds(l))
	check := func(what string) {
		t.Helper()
		if _, p := credsInvariant(t, w.creds, -1); p != "" {
			t.Fatalf("%s: %s", what, p)
		}
		if c := w.fake.Counters(); c.InvalidGrant != 0 {
			t.Fatalf("%s: invalid_grant %d", what, c.InvalidGrant)
		}
		hist.check(t, issueOrder(w.fake))
	}

	// Forward past the expiry: one refresh, and no more.
	offset.Add(int64(10 * time.Hour))
	eventually(t, 10*time.Second, "a refresh after the jump past expiry", func() bool { return w.fake.Counters().Refreshes == 1 })
	// The refresher has planned the next refresh of the refreshed login for
	// later on its clock (a storm would have found it due at once), and has
	// been woken by a few rescans since, each a look at the login again.
	eventually(t, 10*time.Second, "the refresher waiting for the refreshed login's due time", func() bool {
		next := w.agentLive().NextRefresh
		return next != nil && next.After(now())
	})
	w.waitWakeups(t, 3, "after the refresh past expiry")
	if c := w.fake.Counters(); c.Refreshes != 1 {
		t.Fatalf("%d refreshes after one jump forward; want 1 (no storm)", c.Refreshes)
	}
	eventually(t, 10*time.Second, "the refreshed login backed up", func() bool { return w.vaultRefresh() == lastMintedRefresh(w) })
	check("after +10h")

	// Back: a rotation now carries an earlier expiresAt than the backup's.
	offset.Add(int64(-10 * time.Hour))
	cur := refreshTokenOf(t, w.localOAuthCompact())
	n, err := w.fake.Rotate(cur)
	if err != nil {
		t.Fatal(err)
	}
	w.writeLogin(n)
	eventually(t, 10*time.Second, "a rotation after the jump back backed up", w.vaultHolds(n))
	check("after -10h")
	l = n

	// A refresh is due after a jump forward past the expiry, and after a
	// rotation by the test whose expiresAt (set by the token endpoint's real
	// clock) is already past on the agent's clock: at most one for each. A
	// storm is more than that, or refreshes while nothing changes.
	forward, rotations := 1, 0
	for i := 0; i < steps; i++ {
		h := time.Duration(1+rand.IntN(12)) * time.Hour
		if rand.IntN(2) == 0 {
			h = -h
		} else {
			forward++
		}
		offset.Add(int64(h))
		if rand.IntN(2) == 0 {
			cur := refreshTokenOf(t, w.localOAuthCompact())
			n, err := w.fake.Rotate(cur)
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			w.writeLogin(n)
			rotations++
			eventually(t, 10*time.Second, "a rotation backed up", func() bool {
				v := w.vaultRefresh()
				return v == n.RefreshToken || v == lastMintedRefresh(w)
			})
		}
		// How long the clock stays at this offset before the next jump is
		// random on purpose (a jump may land mid-refresh): fault timing.
		time.Sleep(time.Duration(200+rand.IntN(400)) * time.Millisecond)
		check("after a jump")
	}
	agentRefreshes := func() int { // over HTTP: the test's own rotations do not count
		n := 0
		for _, k := range w.fake.RefreshesBy() {
			n += k
		}
		return n
	}
	// Settled: the file's login backed up, and the refresher planning its
	// next refresh for later on its clock.
	eventually(t, 10*time.Second, "the agent settled after the last jump", func() bool {
		next := w.agentLive().NextRefresh
		return next != nil && next.After(now()) && w.vaultRefresh() == refreshTokenOf(t, w.localOAuthCompact())
	})
	settled := agentRefreshes()
	if settled > forward+rotations {
		t.Errorf("the agent refreshed %d times over %d jumps forward and %d rotations; at most one each (a refresh storm)", settled, forward, rotations)
	}
	// Several more wake-ups (rescans) of the worker and the refresher while
	// neither the clock nor the login changes.
	w.waitWakeups(t, 5, "while nothing changes")
	if n := agentRefreshes(); n != settled {
		t.Errorf("the agent refreshed %d more times while neither the clock nor the login changed (a refresh storm)", n-settled)
	}
	c := w.fake.Counters()
	eventually(t, 10*time.Second, "vault holds the file's login at the end", func() bool {
		return w.vaultRefresh() == refreshTokenOf(t, w.localOAuthCompact())
	})
	faultReport(t, "2 fixed jumps (+10 h, -10 h) and %d random jumps of 1-12 h (%d forward, %d test rotations); %d agent refreshes, %d rotations in all, %d invalid_grant, %d vault versions checked",
		steps, forward-1, rotations, settled, c.Refreshes, c.InvalidGrant, hist.checked)
}
