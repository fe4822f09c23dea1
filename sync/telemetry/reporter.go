// Package telemetry is what a user's sync says about itself to the people
// and tools outside it, never a secret: the records of the last pass, check
// and backup (state.json), the agent's live state (agent.json), the metrics
// file for the node exporter and its counters, this host's health in the
// Vault metadata (for `fleet`), and the `status` report built from them all.
package telemetry

import (
	"log/slog"
	"sync"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// Reporter writes and reads one user's telemetry.
type Reporter struct {
	Cfg   *config.Config
	Store store.Store
	Vault *store.Vault // nil with the local store
	Log   *eventlog.EventLog
	Diag  *slog.Logger
	Clock clock.Clock
	// Version is this program's version, as `fleet` shows it.
	Version string

	health healthMemory

	metricsMu  sync.Mutex
	metricsErr string // the metrics error last reported (reported once)
}

func (t *Reporter) now() time.Time {
	if t.Clock == nil {
		return time.Now()
	}
	return t.Clock.Now()
}
