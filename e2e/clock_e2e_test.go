package e2e_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/agent"
)

// A clock stepped back by hours (injected: the machine's clock is left alone)
// does not stop backups of new rotations: their expiresAt is now earlier than
// the backed-up one's, but lineage, not the clock, says they are newer.
func TestAgentClockSteppedBack(t *testing.T) {
	w := newWorld(t)
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	w.fake.Now = now // set before any request reaches the fake

	eng := w.inProcessEngine(now)

	l := w.login()
	w.runAgentInProcess(eng, agent.Options{CheckInterval: time.Hour, RetryMax: time.Second})
	eventually(t, 45*time.Second, "initial backup", w.vaultHolds(l))

	prevExpiry := l.ExpiresAt
	for i := 1; i <= 3; i++ {
		offset.Add(int64(-5 * time.Hour))
		l = w.rotate(l)
		if !l.ExpiresAt.Before(prevExpiry) {
			t.Fatalf("rotation %d: the stepped clock did not make expiresAt earlier", i)
		}
		prevExpiry = l.ExpiresAt
		eventually(t, 30*time.Second, "rotation backed up despite the clock", w.vaultHolds(l))
	}
}
