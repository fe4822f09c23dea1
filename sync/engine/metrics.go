package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gofrs/flock"

	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
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
	// FailuresTotal counts FAIL events; it survives restarts in the state dir.
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

// ErrMetricsRefused: the metrics file's name is taken by something this user
// does not own, or that is not a regular file (another user's forgery in a
// shared directory, a FIFO, a link): nothing is written over it.
var ErrMetricsRefused = errors.New("metrics file refused")

// WriteMetrics writes m as Prometheus text to the user's file in dir: a temp
// file of ours in the same dir (O_EXCL: never an existing name, never through
// a link; the collector ignores names not ending in .prom), mode 0644 for the
// exporter, synced, renamed into place. The file in place is never opened (a
// FIFO there cannot block us); if its name holds anything but a regular file
// of ours, it is left alone and ErrMetricsRefused says why. In a sticky shared
// directory another user's file cannot be renamed over anyway. Unknown values
// are left out rather than written as zero, so an alert on "expiry < now"
// never fires on a host that has no login yet.
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

	target := MetricsFile(dir, m.User)
	if err := ownRegularOrAbsent(target); err != nil {
		return err
	}
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
	if err := os.Rename(tmp, target); err != nil {
		if errors.Is(err, os.ErrPermission) {
			// Another user's file took the name after the look (sticky dir).
			return fmt.Errorf("%w: %s: %v", ErrMetricsRefused, target, err)
		}
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// ownRegularOrAbsent: path is missing, or a regular file owned by this uid.
func ownRegularOrAbsent(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%w: %s is a %s, not a file this agent wrote; an admin should remove it", ErrMetricsRefused, path, kindOf(fi.Mode()))
	case st != nil && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%w: %s belongs to uid %d, not to this user (uid %d); an admin should remove it", ErrMetricsRefused, path, st.Uid, os.Geteuid())
	}
	return nil
}

func kindOf(m os.FileMode) string {
	switch {
	case m&os.ModeSymlink != 0:
		return "symlink"
	case m&os.ModeNamedPipe != 0:
		return "FIFO"
	case m.IsDir():
		return "directory"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// Counters are what the metrics count across events and restarts: kept in
// the user's private state dir (metrics.json, 0600), never read back from the
// .prom, which others may be able to see or tamper with.
type Counters struct {
	LastSuccess   time.Time `json:"last_success,omitempty"`
	FailuresTotal uint64    `json:"failures_total"`
}

func (e *Engine) countersPath() string { return filepath.Join(e.Cfg.StateDir, "metrics.json") }

// CountEvent adds a status event to the counters (OK/RECOVERED set the last
// success, FAIL adds a failure; others count nothing) under a flock, since a
// pass and the agent may count at once, and returns the counters after it.
func (e *Engine) CountEvent(st Status) Counters {
	if st != OK && st != RECOVERED && st != FAIL {
		return e.LoadCounters()
	}
	if err := os.MkdirAll(e.Cfg.StateDir, 0o700); err != nil {
		return Counters{}
	}
	lk := flock.New(e.countersPath()+".lock", flock.SetPermissions(0o600))
	if err := lk.Lock(); err != nil {
		return e.LoadCounters()
	}
	defer lk.Unlock()
	c := e.LoadCounters()
	if st == FAIL {
		c.FailuresTotal++
	} else {
		c.LastSuccess = e.Clock.Now()
	}
	data, _ := json.Marshal(c)
	_, _ = atomicfile.Write(e.countersPath(), append(data, '\n'), 0o600)
	return c
}

// LoadCounters reads the counters (zero when none were kept).
func (e *Engine) LoadCounters() Counters {
	var c Counters
	if data, err := os.ReadFile(e.countersPath()); err == nil {
		_ = json.Unmarshal(data, &c) // a corrupt file is only history
	}
	return c
}

// MetricsEvent is the one-shot commands' EventLog.AfterEvent: it counts a
// status event and rewrites the metrics file at once. (The agent counts
// through its own metrics writer.) A no-op without CLAUDE_AUTH_METRICS_DIR.
func (e *Engine) MetricsEvent(st Status) {
	if e.Cfg == nil || e.Cfg.MetricsDir == "" {
		return
	}
	e.CountEvent(st)
	e.WriteMetricsNow()
}

// WriteMetricsNow writes the metrics file from the counters, the credentials
// file and the records: what a one-shot command knows.
func (e *Engine) WriteMetricsNow() {
	if e.Cfg == nil || e.Cfg.MetricsDir == "" {
		return
	}
	c := e.LoadCounters()
	m := Metrics{User: e.Cfg.User, LastSuccess: c.LastSuccess, FailuresTotal: c.FailuresTotal, LastBackupLag: -1}
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
	e.PublishMetrics(m)
}

// PublishMetrics writes m to the metrics file. A refusal (a foreign file in
// the name) is logged once per process as WARN; the metrics stay unwritten
// until an admin removes it.
func (e *Engine) PublishMetrics(m Metrics) {
	err := WriteMetrics(e.Cfg.MetricsDir, m)
	e.metricsMu.Lock()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	report := msg != "" && msg != e.metricsErr
	e.metricsErr = msg
	e.metricsMu.Unlock()
	if report {
		if errors.Is(err, ErrMetricsRefused) {
			e.Log.Event(WARN, "not writing metrics: %v", err)
		} else if e.Diag != nil {
			e.Diag.Warn("cannot write metrics", "dir", e.Cfg.MetricsDir, "err", err)
		}
	}
}
