package authsync

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

// Metrics for the node exporter's textfile collector: one file per user,
// claude_auth_sync_<user>.prom in CLAUDE_AUTH_METRICS_DIR, rewritten
// atomically after each status event. The fleet alerts on them
// (packaging/alerts/prometheus-rules.yaml) next to the Loki rule on FAIL lines.
type Metrics struct {
	User string
	// LastSuccess is the last OK or RECOVERED event; zero = none seen yet.
	LastSuccess time.Time
	// CredentialExpiry is the access token's expiresAt; LoginDeadline the
	// refresh token's own end (refreshTokenExpiresAt). Zero = unknown.
	CredentialExpiry time.Time
	LoginDeadline    time.Time
	// LastBackup is this host's last backup; LastBackupLag how long after the
	// file changed it reached the store (the agent measures it; -1 = unknown).
	LastBackup    time.Time
	LastBackupLag time.Duration
	// FailuresTotal counts FAIL events; it survives restarts in the file itself.
	FailuresTotal uint64
}

// MetricsFile is the user's file in dir.
func MetricsFile(dir, user string) string {
	return filepath.Join(dir, "claude_auth_sync_"+user+".prom")
}

const (
	mLastSuccess = "claude_auth_sync_last_success_timestamp_seconds"
	mExpiry      = "claude_auth_sync_credential_expiry_timestamp_seconds"
	mDeadline    = "claude_auth_sync_login_deadline_timestamp_seconds"
	mLastBackup  = "claude_auth_sync_last_backup_timestamp_seconds"
	mBackupLag   = "claude_auth_sync_last_backup_lag_seconds"
	mFailures    = "claude_auth_sync_failures_total"
)

// WriteMetrics writes m as Prometheus text to the user's file in dir: a temp
// file in the same dir (the collector ignores names not ending in .prom), mode
// 0644 for the exporter, synced, renamed into place. Unknown values are left
// out rather than written as zero, so an alert on "expiry < now" never fires
// on a host that has no login yet.
func WriteMetrics(dir string, m Metrics) error {
	var b strings.Builder
	label := fmt.Sprintf(`{user="%s"}`, escapeLabel(m.User))
	gauge := func(name, help string, v float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s%s %s\n", name, help, name, name, label, formatFloat(v))
	}
	stamp := func(name, help string, t time.Time) {
		if !t.IsZero() {
			gauge(name, help, float64(t.UnixMilli())/1000)
		}
	}
	stamp(mLastSuccess, "Unix time of the last OK or RECOVERED event for this user.", m.LastSuccess)
	stamp(mExpiry, "Unix time the access token in the credentials file expires.", m.CredentialExpiry)
	stamp(mDeadline, "Unix time the login itself ends (refresh token expiry); an interactive login is needed after it.", m.LoginDeadline)
	stamp(mLastBackup, "Unix time of this host's last backup of the login.", m.LastBackup)
	if m.LastBackupLag >= 0 {
		gauge(mBackupLag, "Seconds between the credentials file changing and its backup reaching the store (last backup).", m.LastBackupLag.Seconds())
	}
	fmt.Fprintf(&b, "# HELP %s FAIL events (unusable login, foreign Vault token, 403, failed restore).\n# TYPE %s counter\n%s%s %d\n",
		mFailures, mFailures, mFailures, label, m.FailuresTotal)

	f, err := os.CreateTemp(dir, ".claude_auth_sync_"+m.User+".prom.tmp*")
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("metrics: %w", err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return fmt.Errorf("metrics: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("metrics: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if err := os.Rename(tmp, MetricsFile(dir, m.User)); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// ReadMetrics reads back what WriteMetrics wrote (the counter and the last
// success carry over from it). A missing file is zero Metrics, no error.
func ReadMetrics(dir, user string) (Metrics, error) {
	m := Metrics{User: user, LastBackupLag: -1}
	f, err := os.Open(MetricsFile(dir, user))
	if os.IsNotExist(err) {
		return m, nil
	}
	if err != nil {
		return m, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok := strings.Cut(line, "{")
		if !ok {
			continue
		}
		_, val, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		at := time.UnixMilli(int64(math.Round(v * 1000)))
		switch name {
		case mLastSuccess:
			m.LastSuccess = at
		case mExpiry:
			m.CredentialExpiry = at
		case mDeadline:
			m.LoginDeadline = at
		case mLastBackup:
			m.LastBackup = at
		case mBackupLag:
			m.LastBackupLag = time.Duration(v * float64(time.Second))
		case mFailures:
			if v >= 0 {
				m.FailuresTotal = uint64(v)
			}
		}
	}
	return m, sc.Err()
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// metricsMu orders the read-modify-write of the file between the agent's
// goroutines (one engine per process).
var metricsMu sync.Mutex

// MetricsEvent counts a status event into the metrics file (OK/RECOVERED set
// the last success, FAIL adds a failure) and refreshes the gauges. It fits
// EventLog.AfterEvent. A no-op without CLAUDE_AUTH_METRICS_DIR.
func (e *Engine) MetricsEvent(st Status) { e.exportMetrics(&st) }

// ExportMetrics refreshes the gauges (expiry, deadline, backup and its lag)
// without counting an event: for the agent after a backup.
func (e *Engine) ExportMetrics() { e.exportMetrics(nil) }

func (e *Engine) exportMetrics(st *Status) {
	if e.Cfg == nil || e.Cfg.MetricsDir == "" {
		return
	}
	metricsMu.Lock()
	defer metricsMu.Unlock()
	dir := e.Cfg.MetricsDir
	m, err := ReadMetrics(dir, e.Cfg.User)
	if err != nil && e.Diag != nil {
		e.Diag.Debug("metrics: previous file unreadable; starting over", "err", err)
	}
	now := time.Now()
	if e.Now != nil {
		now = e.Now()
	}
	if st != nil {
		switch *st {
		case OK, RECOVERED:
			m.LastSuccess = now
		case FAIL:
			m.FailuresTotal++
		}
	}
	m.CredentialExpiry, m.LoginDeadline = time.Time{}, time.Time{}
	if local, err := credentials.Read(e.Cfg.CredentialsFile); err == nil && local.OAuth != nil {
		m.CredentialExpiry = local.OAuth.ExpiresAt()
		m.LoginDeadline = local.OAuth.RefreshTokenExpiresAt()
	}
	if rec := loadRecord(e.recordPath()); rec.LastBackup != nil {
		m.LastBackup = rec.LastBackup.At
	}
	if a := LoadAgentState(e.Cfg.StateDir); a != nil && a.LastBackup != nil {
		if a.LastBackup.After(m.LastBackup) {
			m.LastBackup = *a.LastBackup
		}
		m.LastBackupLag = time.Duration(a.LastBackupLagMs * float64(time.Millisecond))
	}
	if err := WriteMetrics(dir, m); err != nil && e.Diag != nil {
		e.Diag.Warn("cannot write metrics", "dir", dir, "err", err)
	}
}
