package agent

import (
	"context"
	"sync"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
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
// the .prom is never read back, and no file is re-read to write it but
// mcp.json (the MCP logins' counters and states, which the MCP refresher and
// exec keep there), read anew at each write of the .prom.
//
// Components tell it through its methods (safe from any goroutine, never
// waiting on a write); Run writes.
type metricsWriter struct {
	metricsConfig
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
	// the fleet), and a refused token can write nothing.
	tokenOK bool
}

// metricsConfig is what the metrics writer uses.
type metricsConfig struct {
	Engine          metricsEngine
	Clock           clock.Clock
	User            string
	CredentialsFile string // the login's expiry at the start
	Prom            bool   // CLAUDE_AUTH_METRICS_DIR is set
	Health          bool   // Vault is the store and the host has an id: health goes to its metadata
}

// metricsEngine is what the metrics writer asks of the engine: the counters
// in the state dir and the two places it publishes.
type metricsEngine interface {
	LoadCounters() telemetry.Counters
	CountEvent(st eventlog.Status) telemetry.Counters
	LoadRecord() *telemetry.Record
	LoadMCPMetrics() telemetry.MCPMetrics
	PublishMetrics(m telemetry.Metrics)
	PublishHealth(ctx context.Context, h fleet.Health)
}

func newMetricsWriter(c metricsConfig) *metricsWriter {
	mw := &metricsWriter{metricsConfig: c, changed: newSignal()}
	mw.m = telemetry.Metrics{User: c.User, LastBackupLag: -1}
	if mw.Prom {
		cnt := c.Engine.LoadCounters()
		mw.m.LastSuccess, mw.m.FailuresTotal = cnt.LastSuccess, cnt.FailuresTotal
	}
	if rec := c.Engine.LoadRecord(); rec.LastBackup != nil {
		mw.m.LastBackup = rec.LastBackup.At
	}
	if l, err := credentials.Read(c.CredentialsFile); err == nil && l.OAuth != nil {
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
	if mw.Prom && (st == eventlog.OK || st == eventlog.RECOVERED || st == eventlog.FAIL) {
		c := mw.Engine.CountEvent(st)
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
// up nothing else). It never fails: the publishers report what they cannot
// write, and the next change writes again.
func (mw *metricsWriter) Run(ctx context.Context) error {
	later := clock.Stopped(mw.Clock)
	defer later.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-mw.changed:
		case <-later.C():
		}
		if mw.Prom {
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
	if mw.Prom {
		mw.writeProm()
	}
	if mw.healthDue() >= 0 {
		mw.writeHealth(context.Background())
	}
}

// mcpChanged: the MCP manager wrote mcp.json (a refresh, a failure, a
// server's state): the .prom follows.
func (mw *metricsWriter) mcpChanged() {
	if mw.Prom {
		mw.changed.poke()
	}
}

// writeProm writes the .prom: what the writer holds, and mcp.json as it is
// now (the MCP manager says when it changed it: mcpChanged).
func (mw *metricsWriter) writeProm() {
	mw.mu.Lock()
	m := mw.m
	mw.mu.Unlock()
	m.MCP = mw.Engine.LoadMCPMetrics()
	mw.Engine.PublishMetrics(m)
}

// healthDue is how long until the health may be written: 0 now, -1 never
// (no Vault, nothing to say yet, or no token that checked out).
func (mw *metricsWriter) healthDue() time.Duration {
	if !mw.Health {
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
	return max(healthEvery-mw.Clock.Now().Sub(mw.lastHealth), 0)
}

func (mw *metricsWriter) writeHealth(ctx context.Context) {
	mw.mu.Lock()
	v := mw.verdict.current()
	h := fleet.Health{Status: v.status, Reason: v.reason, StatusAt: mw.statusAt, BackupAt: mw.m.LastBackup,
		ExpiresAt: mw.m.CredentialExpiry, Deadline: mw.m.LoginDeadline}
	mw.published, mw.lastHealth = v, mw.Clock.Now()
	mw.mu.Unlock()
	mw.Engine.PublishHealth(ctx, h)
}
