package agent

import (
	"context"
	"sync"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
)

// metricsWriter owns the metrics the agent publishes for the node exporter.
// Its values live in memory, fed by the other components (a login seen, a
// backup written, a status event counted in the state dir's metrics.json),
// and the .prom file is written after each change, from them alone: it is
// never read back, and no file is re-read to write it.
type metricsWriter struct {
	e       *engine.Engine
	enabled bool
	changed signal

	mu sync.Mutex
	m  engine.Metrics
}

func newMetrics(e *engine.Engine) *metricsWriter {
	mw := &metricsWriter{e: e, enabled: e.Cfg.MetricsDir != "", changed: newSignal()}
	if !mw.enabled {
		return mw
	}
	c := e.LoadCounters()
	mw.m = engine.Metrics{User: e.Cfg.User, LastSuccess: c.LastSuccess, FailuresTotal: c.FailuresTotal, LastBackupLag: -1}
	if rec := e.LoadRecord(); rec.LastBackup != nil {
		mw.m.LastBackup = rec.LastBackup.At
	}
	if l, err := readFile(e); err == nil && l.OAuth != nil {
		mw.m.CredentialExpiry, mw.m.LoginDeadline = l.OAuth.ExpiresAt(), l.OAuth.RefreshTokenExpiresAt()
	}
	mw.changed.poke() // the first write
	return mw
}

func (mw *metricsWriter) set(f func(*engine.Metrics)) {
	if !mw.enabled {
		return
	}
	mw.mu.Lock()
	before := mw.m
	f(&mw.m)
	same := mw.m == before
	mw.mu.Unlock()
	if !same {
		mw.changed.poke()
	}
}

// event counts a status event; it is the agent's EventLog.AfterEvent, so it
// never blocks on the metrics file.
func (mw *metricsWriter) event(st engine.Status) {
	if !mw.enabled || (st != engine.OK && st != engine.RECOVERED && st != engine.FAIL) {
		return
	}
	c := mw.e.CountEvent(st)
	mw.set(func(m *engine.Metrics) { m.LastSuccess, m.FailuresTotal = c.LastSuccess, c.FailuresTotal })
}

// login notes the login now in the file (nil: none).
func (mw *metricsWriter) login(o *credentials.OAuth) {
	mw.set(func(m *engine.Metrics) {
		if o == nil {
			m.CredentialExpiry, m.LoginDeadline = time.Time{}, time.Time{}
			return
		}
		m.CredentialExpiry, m.LoginDeadline = o.ExpiresAt(), o.RefreshTokenExpiresAt()
	})
}

// backup notes a backup written at, lag after the change.
func (mw *metricsWriter) backup(at time.Time, lag time.Duration) {
	mw.set(func(m *engine.Metrics) { m.LastBackup, m.LastBackupLag = at, lag })
}

// Run writes the metrics file after each change, off the path of backups,
// restores, stops and the watchdog (a slow disk under the metrics dir holds
// up nothing else).
func (mw *metricsWriter) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-mw.changed:
			mw.flush()
		}
	}
}

func (mw *metricsWriter) flush() {
	if !mw.enabled {
		return
	}
	mw.mu.Lock()
	m := mw.m
	mw.mu.Unlock()
	mw.e.PublishMetrics(m)
}
