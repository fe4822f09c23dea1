package telemetry

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gofrs/flock"

	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/mcp"
	"github.com/claude-auth-sync/claude-auth-sync/sync/promfile"
)

// Metrics for the node exporter's textfile collector: one file per user,
// <CLAUDE_AUTH_METRICS_DIR>/<user>/claude_auth_sync.prom in a directory of the
// user's own, rewritten atomically after each status event; the root-side
// publisher (sync/promfile, claude-auth-sync publish-metrics) puts every
// user's into the node exporter's directory, labelled by the file's owner.
// The fleet alerts on them (packaging/alerts/prometheus-rules.yaml) next to
// the Loki rule on FAIL lines.
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
	// MCP is the user's MCP server logins, from the state dir's mcp.json.
	MCP MCPMetrics
}

// MCPMetrics is what the metrics say of the MCP logins: per user, never per
// server or URL.
type MCPMetrics struct {
	// Known: mcp.json could be read (or there is none: all zero). An
	// unreadable one leaves the MCP series out rather than write zeros.
	Known bool
	// RefreshesTotal and FailuresTotal are mcp.json's counters.
	RefreshesTotal, FailuresTotal uint64
	// Servers counts the servers in each state, in mcp.States' order.
	Servers [len(mcp.States)]int
}

// LoadMCPMetrics reads mcp.json for the metrics; each render reads it anew.
func LoadMCPMetrics(stateDir string) MCPMetrics {
	st, err := mcp.Load(stateDir)
	if err != nil {
		return MCPMetrics{}
	}
	m := MCPMetrics{Known: true, RefreshesTotal: uint64(max(st.RefreshesTotal, 0)), FailuresTotal: uint64(max(st.FailuresTotal, 0))}
	for _, s := range st.Servers {
		if i := slices.Index(mcp.States[:], s.State); i >= 0 {
			m.Servers[i]++
		}
	}
	return m
}

// MetricsFile is the user's file under the metrics dir.
func MetricsFile(dir, user string) string { return promfile.UserFile(dir, user) }

// ErrMetricsRefused: the user's metrics directory is not the user's own, or
// the file's name holds something that is not a regular file of the user's:
// nothing is written there.
var ErrMetricsRefused = errors.New("metrics file refused")

// WriteMetrics writes m as Prometheus text to the user's file in the user's
// own directory under dir (provision makes it), through atomicfile like every
// file of ours (its temp file, O_EXCL beside it, does not end in .prom and is
// never published), mode 0644. A
// directory that is missing, a link or not the user's own is refused: the
// agent never makes it (in a directory others can write to, another user
// could have made it first). Labels in the file are only for a reader's
// eyes: the publisher labels every series by the file's owner. Unknown values
// are left out rather than written as zero, so an alert on "expiry < now"
// never fires on a host that has no login yet.
func WriteMetrics(dir string, m Metrics) error {
	var b strings.Builder
	label := fmt.Sprintf(`{user="%s"}`, escapeLabel(m.User))
	values := map[string]float64{}
	stamp := func(name string, t time.Time) {
		if !t.IsZero() {
			values[name] = float64(t.UnixMilli()) / 1000
		}
	}
	stamp(promfile.LastSuccess, m.LastSuccess)
	stamp(promfile.Expiry, m.CredentialExpiry)
	stamp(promfile.Deadline, m.LoginDeadline)
	stamp(promfile.LastBackup, m.LastBackup)
	if m.LastBackupLag >= 0 {
		values[promfile.BackupLag] = m.LastBackupLag.Seconds()
	}
	values[promfile.Failures] = float64(m.FailuresTotal)
	if m.MCP.Known {
		values[promfile.MCPRefreshes] = float64(m.MCP.RefreshesTotal)
		values[promfile.MCPFailures] = float64(m.MCP.FailuresTotal)
		for i, state := range mcp.States {
			values[promfile.MCPServersKey(state)] = float64(m.MCP.Servers[i])
		}
	}
	for _, f := range promfile.AgentFamilies {
		lvs := f.LabelValues
		if f.Label == "" {
			lvs = []string{""}
		}
		header := false
		for _, lv := range lvs {
			v, ok := values[f.Key(lv)]
			if !ok {
				continue
			}
			if !header {
				fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", f.Name, f.Help, f.Name, f.Type)
				header = true
			}
			labels := label
			if f.Label != "" {
				labels = fmt.Sprintf(`{user="%s",%s="%s"}`, escapeLabel(m.User), f.Label, escapeLabel(lv))
			}
			fmt.Fprintf(&b, "%s%s %s\n", f.Name, labels, formatFloat(v))
		}
	}

	own := promfile.UserDir(dir, m.User)
	if err := ownDir(own); err != nil {
		return err
	}
	target := MetricsFile(dir, m.User)
	if err := ownRegularOrAbsent(target); err != nil {
		return err
	}
	if _, err := atomicfile.Write(target, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// ownDir: path is a directory (not a link) owned by this uid.
func ownDir(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("metrics: %s does not exist; claude-auth-sync provision makes it (or, as root: install -d -o $USER -m 0700 %s)", path, path)
	}
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("%w: %s is a %s, not this user's directory; an admin should remove it", ErrMetricsRefused, path, promfile.Kind(fi.Mode()))
	case st != nil && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%w: %s belongs to uid %d, not to this user (uid %d); an admin should remove it", ErrMetricsRefused, path, st.Uid, os.Geteuid())
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
		return fmt.Errorf("%w: %s is a %s, not a file this agent wrote; an admin should remove it", ErrMetricsRefused, path, promfile.Kind(fi.Mode()))
	case st != nil && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%w: %s belongs to uid %d, not to this user (uid %d); an admin should remove it", ErrMetricsRefused, path, st.Uid, os.Geteuid())
	}
	return nil
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

func (t *Reporter) countersPath() string { return filepath.Join(t.Cfg.StateDir, "metrics.json") }

// CountEvent adds a status event to the counters (OK/RECOVERED set the last
// success, FAIL adds a failure; others count nothing) under a flock, since a
// pass and the agent may count at once, and returns the counters after it.
func (t *Reporter) CountEvent(st eventlog.Status) Counters {
	if st != eventlog.OK && st != eventlog.RECOVERED && st != eventlog.FAIL {
		return t.LoadCounters()
	}
	if err := os.MkdirAll(t.Cfg.StateDir, 0o700); err != nil {
		return Counters{}
	}
	lk := flock.New(t.countersPath()+".lock", flock.SetPermissions(0o600))
	if err := lk.Lock(); err != nil {
		return t.LoadCounters()
	}
	defer lk.Unlock()
	c := t.LoadCounters()
	if st == eventlog.FAIL {
		c.FailuresTotal++
	} else {
		c.LastSuccess = t.now()
	}
	data, _ := json.Marshal(c)
	_, _ = atomicfile.Write(t.countersPath(), append(data, '\n'), 0o600)
	return c
}

// LoadCounters reads the counters (zero when none were kept).
func (t *Reporter) LoadCounters() Counters {
	var c Counters
	if data, err := os.ReadFile(t.countersPath()); err == nil {
		_ = json.Unmarshal(data, &c) // a corrupt file is only history
	}
	return c
}

// MetricsEvent is the one-shot commands' EventLog.AfterEvent: it counts a
// status event and rewrites the metrics file at once. (The agent counts
// through its own metrics writer.) A no-op without CLAUDE_AUTH_METRICS_DIR.
func (t *Reporter) MetricsEvent(st eventlog.Status) {
	if t.Cfg == nil || t.Cfg.MetricsDir == "" {
		return
	}
	// Count and write as one step among every process of the user: a write
	// that read the counters before another's count would otherwise land
	// last, and the file would stay one event behind.
	if err := os.MkdirAll(t.Cfg.StateDir, 0o700); err == nil {
		lk := flock.New(t.countersPath()+".write.lock", flock.SetPermissions(0o600))
		if lk.Lock() == nil {
			defer lk.Unlock()
		}
	}
	t.CountEvent(st)
	t.WriteMetricsNow()
}

// WriteMetricsNow writes the metrics file from the counters, the credentials
// file, the records and mcp.json: what a one-shot command knows.
func (t *Reporter) WriteMetricsNow() {
	if t.Cfg == nil || t.Cfg.MetricsDir == "" {
		return
	}
	c := t.LoadCounters()
	m := Metrics{User: t.Cfg.User, LastSuccess: c.LastSuccess, FailuresTotal: c.FailuresTotal, LastBackupLag: -1}
	if local, err := credentials.Read(t.Cfg.CredentialsFile); err == nil && local.OAuth != nil {
		m.CredentialExpiry = local.OAuth.ExpiresAt()
		m.LoginDeadline = local.OAuth.RefreshTokenExpiresAt()
	}
	if rec := t.LoadRecord(); rec.LastBackup != nil {
		m.LastBackup = rec.LastBackup.At
	}
	if a := LoadAgentState(t.Cfg.StateDir); a != nil && a.LastBackup != nil {
		if a.LastBackup.After(m.LastBackup) {
			m.LastBackup = *a.LastBackup
		}
		m.LastBackupLag = time.Duration(a.LastBackupLagMs * float64(time.Millisecond))
	}
	m.MCP = LoadMCPMetrics(t.Cfg.StateDir)
	t.PublishMetrics(m)
}

// PublishMetrics writes m to the metrics file. A refusal (a foreign file in
// the name) is logged once per process as WARN; the metrics stay unwritten
// until an admin removes it.
func (t *Reporter) PublishMetrics(m Metrics) {
	err := WriteMetrics(t.Cfg.MetricsDir, m)
	t.metricsMu.Lock()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	report := msg != "" && msg != t.metricsErr
	t.metricsErr = msg
	t.metricsMu.Unlock()
	if report {
		if errors.Is(err, ErrMetricsRefused) {
			t.Log.Event(eventlog.WARN, "not writing metrics: %v", err)
		} else if t.Diag != nil {
			t.Diag.Warn("cannot write metrics", "dir", t.Cfg.MetricsDir, "err", err)
		}
	}
}
