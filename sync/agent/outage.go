package agent

import (
	"sync"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

// outage reports a Vault outage once when it starts and once when it ends,
// whichever component (the backup writer, the token renewer) sees it; both
// call it, from their own goroutines.
type outage struct {
	outageConfig

	mu    sync.Mutex
	since time.Time
}

// outageConfig is what the outage report uses.
type outageConfig struct {
	base
	State    stateFunc              // the live state: Vault down since
	Resolved func(prefix ...string) // the health: the outage is over
}

func newOutage(c outageConfig) *outage { return &outage{outageConfig: c} }

func (o *outage) down(err error) {
	o.mu.Lock()
	first := o.since.IsZero()
	if first {
		o.since = o.Clock.Now()
	}
	since := o.since
	o.mu.Unlock()
	if first {
		o.State(func(s *telemetry.AgentState) { s.VaultDownSince = &since })
		o.Log.Event(eventlog.WARN, "vault unreachable; backups pending, retrying with backoff: %v", err)
	}
}

func (o *outage) up() {
	o.mu.Lock()
	since := o.since
	o.since = time.Time{}
	o.mu.Unlock()
	if !since.IsZero() {
		o.State(func(s *telemetry.AgentState) { s.VaultDownSince = nil })
		o.Log.Event(eventlog.OK, "vault reachable again after %s", clock.Since(o.Clock, since).Round(time.Second))
		o.Resolved("vault unreachable")
	}
}
