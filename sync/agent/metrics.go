package agent

import (
	"context"
	"sync"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/fleet"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

// healthEvery spaces this host's health writes to Vault while its status
// stays the same (a burst of backups is one write, not hundreds); a new
// status is written at once.
const healthEvery = 5 * time.Second

// metricsWriter owns what the agent publishes about the login: the metrics
// for the node exporter and this host's health in the user's Vault metadata
// (for `fleet`). Its values live in memory, fed by the other components (a
// login seen, a backup written, a status event, counted in the state dir's
// metrics.json), and both are written after each change, from them alone:
// the .prom is never read back, and no file is re-read to write it.
type metricsWriter struct {
	e       *engine.Engine
	clk     clock.Clock
	prom    bool // CLAUDE_AUTH_METRICS_DIR is set
	health  bool // Vault is the store: health goes to its metadata
	changed signal

	mu         sync.Mutex
	m          telemetry.Metrics
	verdict    healthVerdict // what the health says (health.go)
	statusAt   time.Time     // the last line's time; zero: none yet
	published  verdict       // the verdict of the last health write
	lastHealth time.Time
	// tokenOK: the renewer's last verdict accepted the Vault token. Health
	// is written only then: before the first check the client holds no
	// token (Vault answers 403, which would read as a policy from before
	// the fleet), and a refused token can write nothing, except one refused
	// only as exposed that is still this user's (store.Vault.MayReport).
	tokenOK bool
}

func newMetrics(e *engine.Engine) *metricsWriter {
	mw := &metricsWriter{e: e, clk: e.Clock, prom: e.Cfg.MetricsDir != "", health: e.Vault != nil && e.Cfg.HostID != "",
		changed: newSignal()}
	mw.m = telemetry.Metrics{User: e.Cfg.User, LastBackupLag: -1}
	if mw.prom {
		c := e.Telemetry.LoadCounters()
		mw.m.LastSuccess, mw.m.FailuresTotal = c.LastSuccess, c.FailuresTotal
	}
	if rec := e.Telemetry.LoadRecord(); rec.LastBackup != nil {
		mw.m.LastBackup = rec.LastBackup.At
	}
	if l, err := readFile(e); err == nil && l.OAuth != nil {
		mw.m.CredentialExpiry, mw.m.LoginDeadline = l.OAuth.ExpiresAt(), l.OAuth.RefreshTokenExpiresAt()
	}
	mw.changed.poke() // the first write
	return mw
}

func (mw *metricsWriter) set(f func(*telemetry.Metrics)) {
	mw.mu.Lock()
	before := mw.m
	f(&mw.m)
	same := mw.m == before
	mw.mu.Unlock()
	if !same {
		mw.changed.poke()
	}
}

// event notes a status event; it is the agent's EventLog.AfterEvent, so it
// never blocks on the metrics file or on Vault.
func (mw *metricsWriter) event(st eventlog.Status) {
	if mw.prom && (st == eventlog.OK || st == eventlog.RECOVERED || st == eventlog.FAIL) {
		c := mw.e.Telemetry.CountEvent(st)
		mw.set(func(m *telemetry.Metrics) { m.LastSuccess, m.FailuresTotal = c.LastSuccess, c.FailuresTotal })
	}
	mw.changed.poke()
}

// token notes the renewer's verdict on the Vault token; a token accepted
// (again) writes the health that waited for it.
func (mw *metricsWriter) token(ok bool) {
	mw.mu.Lock()
	news := ok != mw.tokenOK
	mw.tokenOK = ok
	mw.mu.Unlock()
	if news && ok {
		mw.changed.poke()
	}
}

// login notes the login now in the file (nil: none).
func (mw *metricsWriter) login(o *credentials.OAuth) {
	mw.set(func(m *telemetry.Metrics) {
		if o == nil {
			m.CredentialExpiry, m.LoginDeadline = time.Time{}, time.Time{}
			return
		}
		m.CredentialExpiry, m.LoginDeadline = o.ExpiresAt(), o.RefreshTokenExpiresAt()
	})
}

// backup notes a backup written at, lag after the change.
func (mw *metricsWriter) backup(at time.Time, lag time.Duration) {
	mw.set(func(m *telemetry.Metrics) { m.LastBackup, m.LastBackupLag = at, lag })
}

// Run writes after each change, off the path of backups, restores, stops
// and the watchdog (a slow disk under the metrics dir, a slow Vault, holds
// up nothing else).
func (mw *metricsWriter) Run(ctx context.Context) error {
	later := clock.Stopped(mw.clk)
	defer later.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-mw.changed:
		case <-later.C():
		}
		if mw.prom {
			mw.writeProm()
		}
		if wait := mw.healthDue(); wait > 0 {
			later.Reset(wait)
		} else if wait == 0 {
			mw.writeHealth(ctx)
		}
	}
}

// flush writes everything now (at the stop).
func (mw *metricsWriter) flush() {
	if mw.prom {
		mw.writeProm()
	}
	if mw.healthDue() >= 0 {
		mw.writeHealth(context.Background())
	}
}

func (mw *metricsWriter) writeProm() {
	mw.mu.Lock()
	m := mw.m
	mw.mu.Unlock()
	mw.e.Telemetry.PublishMetrics(m)
}

// healthDue is how long until the health may be written: 0 now, -1 never
// (no Vault, nothing to say yet, or no token that checked out).
func (mw *metricsWriter) healthDue() time.Duration {
	if !mw.health {
		return -1
	}
	mw.mu.Lock()
	defer mw.mu.Unlock()
	if mw.statusAt.IsZero() || !mw.tokenOK {
		return -1 // nothing happened yet, or nothing to write with
	}
	if mw.verdict.current() != mw.published || mw.lastHealth.IsZero() {
		return 0
	}
	return max(healthEvery-mw.clk.Now().Sub(mw.lastHealth), 0)
}

func (mw *metricsWriter) writeHealth(ctx context.Context) {
	mw.mu.Lock()
	v := mw.verdict.current()
	h := fleet.Health{Status: v.status, Reason: v.reason, StatusAt: mw.statusAt, BackupAt: mw.m.LastBackup,
		ExpiresAt: mw.m.CredentialExpiry, Deadline: mw.m.LoginDeadline}
	mw.published, mw.lastHealth = v, mw.clk.Now()
	mw.mu.Unlock()
	mw.e.Telemetry.PublishHealth(ctx, h)
}
