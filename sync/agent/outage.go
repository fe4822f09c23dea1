package agent

import (
	"sync"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

// outage reports a Vault outage once when it starts and once when it ends,
// whichever component (the backup writer, the token renewer) sees it.
type outage struct {
	e    *engine.Engine
	live *liveState
	clk  clock.Clock
	// metrics hears that the outage is over (nil in tests that have none).
	metrics *metricsWriter

	mu    sync.Mutex
	since time.Time
}

func (o *outage) down(err error) {
	o.mu.Lock()
	first := o.since.IsZero()
	if first {
		o.since = o.clk.Now()
	}
	since := o.since
	o.mu.Unlock()
	if first {
		o.live.update(func(s *telemetry.AgentState) { s.VaultDownSince = &since })
		o.e.Log.Event(eventlog.WARN, "vault unreachable; backups pending, retrying with backoff: %v", err)
	}
}

func (o *outage) up() {
	o.mu.Lock()
	since := o.since
	o.since = time.Time{}
	o.mu.Unlock()
	if !since.IsZero() {
		o.live.update(func(s *telemetry.AgentState) { s.VaultDownSince = nil })
		o.e.Log.Event(eventlog.OK, "vault reachable again after %s", clock.Since(o.clk, since).Round(time.Second))
		if o.metrics != nil {
			o.metrics.resolved("vault unreachable")
		}
	}
}
