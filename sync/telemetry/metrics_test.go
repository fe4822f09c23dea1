package telemetry

import (
	"errors"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/mcp"
	"github.com/claude-auth-sync/claude-auth-sync/sync/promfile"
)

// userDirs makes each user's own metrics directory, as provision does.
func userDirs(t *testing.T, dir string, users ...string) {
	t.Helper()
	for _, u := range users {
		if err := os.MkdirAll(promfile.UserDir(dir, u), 0o700); err != nil {
			t.Fatal(err)
		}
	}
}

// Every sample line of the text format: name{user="…"} value, or
// name{user="…",state="…"} value for the MCP servers by state.
var sampleLine = regexp.MustCompile(`^claude_auth_sync_[a-z_]+\{user="[^"\\]*"(,state="[a-z-]+")?\} -?[0-9]+(\.[0-9]+)?$`)

func checkExposition(t *testing.T, text string) map[string]string {
	t.Helper()
	samples := map[string]string{}
	typed := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if strings.HasPrefix(l, "# TYPE ") {
			typed[strings.Fields(l)[2]] = true
			continue
		}
		if strings.HasPrefix(l, "# HELP ") {
			continue
		}
		if !sampleLine.MatchString(l) {
			t.Errorf("not a valid sample line: %q", l)
			continue
		}
		name, labels, _ := strings.Cut(l, "{")
		if !typed[name] {
			t.Errorf("sample %s before its # TYPE", name)
		}
		key := name
		if _, state, ok := strings.Cut(labels, `,state="`); ok {
			key = promfile.MCPServersKey(state[:strings.IndexByte(state, '"')])
		}
		if _, dup := samples[key]; dup {
			t.Errorf("a second sample of %s", key)
		}
		samples[key] = l[strings.LastIndex(l, " ")+1:]
	}
	return samples
}

// ReadMetrics parses what WriteMetrics wrote (tests only: the product never
// reads its .prom back). A missing file is zero Metrics, no error.
func ReadMetrics(dir, user string) (Metrics, error) {
	m := Metrics{User: user, LastBackupLag: -1}
	data, err := os.ReadFile(MetricsFile(dir, user))
	if os.IsNotExist(err) {
		return m, nil
	}
	if err != nil {
		return m, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok := strings.Cut(line, "{")
		if !ok {
			continue
		}
		labels, val, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		at := time.UnixMilli(int64(math.Round(v * 1000)))
		switch name {
		case promfile.LastSuccess:
			m.LastSuccess = at
		case promfile.Expiry:
			m.CredentialExpiry = at
		case promfile.Deadline:
			m.LoginDeadline = at
		case promfile.LastBackup:
			m.LastBackup = at
		case promfile.BackupLag:
			m.LastBackupLag = time.Duration(v * float64(time.Second))
		case promfile.Failures:
			if v >= 0 {
				m.FailuresTotal = uint64(v)
			}
		case promfile.MCPRefreshes:
			m.MCP.Known, m.MCP.RefreshesTotal = true, uint64(v)
		case promfile.MCPFailures:
			m.MCP.Known, m.MCP.FailuresTotal = true, uint64(v)
		case promfile.MCPServers:
			for i, st := range mcp.States {
				if strings.HasSuffix(labels, `,state="`+st+`"`) {
					m.MCP.Known, m.MCP.Servers[i] = true, int(v)
				}
			}
		}
	}
	return m, nil
}

func TestWriteMetrics(t *testing.T) {
	dir := t.TempDir()
	userDirs(t, dir, "alice")
	m := Metrics{
		User:             "alice",
		LastSuccess:      time.UnixMilli(1_760_000_000_500),
		CredentialExpiry: time.UnixMilli(1_760_028_800_000),
		LoginDeadline:    time.UnixMilli(1_767_000_000_000),
		LastBackup:       time.UnixMilli(1_759_999_000_000),
		LastBackupLag:    42 * time.Millisecond,
		FailuresTotal:    3,
		MCP:              MCPMetrics{Known: true, RefreshesTotal: 14, FailuresTotal: 2, Servers: [4]int{3, 0, 1, 0}},
	}
	if err := WriteMetrics(dir, m); err != nil {
		t.Fatalf("WriteMetrics: %v", err)
	}
	path := filepath.Join(dir, "alice", "claude_auth_sync.prom")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o644 {
		t.Errorf("mode = %v; want 0644 (the node exporter reads it)", fi.Mode())
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("dir holds %d entries; want only the .prom file (no temp left)", len(ents))
	}
	data, _ := os.ReadFile(path)
	got := checkExposition(t, string(data))
	want := map[string]string{
		"claude_auth_sync_last_success_timestamp_seconds":      "1760000000.5",
		"claude_auth_sync_credential_expiry_timestamp_seconds": "1760028800",
		"claude_auth_sync_login_deadline_timestamp_seconds":    "1767000000",
		"claude_auth_sync_last_backup_timestamp_seconds":       "1759999000",
		"claude_auth_sync_last_backup_lag_seconds":             "0.042",
		"claude_auth_sync_failures_total":                      "3",
		"claude_auth_sync_mcp_refreshes_total":                 "14",
		"claude_auth_sync_mcp_refresh_failures_total":          "2",
		`claude_auth_sync_mcp_servers{state="ok"}`:             "3",
		`claude_auth_sync_mcp_servers{state="retrying"}`:       "0",
		`claude_auth_sync_mcp_servers{state="needs-login"}`:    "1",
		`claude_auth_sync_mcp_servers{state="skipped"}`:        "0",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q; want %q\n%s", k, got[k], v, data)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d series; want %d:\n%s", len(got), len(want), data)
	}
	for _, f := range []string{"# TYPE claude_auth_sync_mcp_servers gauge\n", "# TYPE claude_auth_sync_mcp_refreshes_total counter\n",
		"# TYPE claude_auth_sync_mcp_refresh_failures_total counter\n",
		"claude_auth_sync_mcp_servers{user=\"alice\",state=\"needs-login\"} 1\n"} {
		if strings.Count(string(data), f) != 1 {
			t.Errorf("not once: %q\n%s", f, data)
		}
	}
	// The publisher takes the file as it is, every series.
	if pv, err := promfile.Parse(data); err != nil || len(pv) != len(want) {
		t.Errorf("promfile.Parse of the agent's file = %v, %v; want %d series", pv, err, len(want))
	}
	if !strings.Contains(string(data), "# TYPE claude_auth_sync_failures_total counter") {
		t.Errorf("failures_total is not typed as a counter:\n%s", data)
	}
	back, err := ReadMetrics(dir, "alice")
	if err != nil || back != m {
		t.Errorf("ReadMetrics = %+v, %v; want %+v", back, err, m)
	}
}

func TestWriteMetricsOmitsUnknown(t *testing.T) {
	dir := t.TempDir()
	userDirs(t, dir, "bob")
	if err := WriteMetrics(dir, Metrics{User: "bob", LastBackupLag: -1}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(MetricsFile(dir, "bob"))
	got := checkExposition(t, string(data))
	if len(got) != 1 || got["claude_auth_sync_failures_total"] != "0" {
		t.Errorf("samples = %v; want only failures_total 0 (unknown times are left out, not 0)", got)
	}
	if m, err := ReadMetrics(dir, "nobody"); err != nil || m.FailuresTotal != 0 || !m.LastSuccess.IsZero() || m.LastBackupLag != -1 {
		t.Errorf("ReadMetrics of a missing file = %+v, %v; want zero", m, err)
	}
}

// Events drive the file: OK sets the last success, FAIL counts, the count
// survives a restart, and concurrent events never lose a count.
func TestMetricsEvents(t *testing.T) {
	home := t.TempDir()
	dir := filepath.Join(home, "metrics")
	userDirs(t, dir, "alice")
	creds := filepath.Join(home, ".credentials.json")
	expires := time.UnixMilli(1_760_028_800_000)
	oauth := strings.Replace(oauthJSON("sk-ant-oat01-aaaa", "sk-ant-ort01-bbbb", expires), `"scopes"`, `"refreshTokenExpiresAt":1767000000000,"scopes"`, 1)
	if err := os.WriteFile(creds, []byte(credsFile(oauth)), 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1_760_000_000_000)
	newEngine := func() *Reporter {
		e := &Reporter{Cfg: &config.Config{User: "alice", MetricsDir: dir, CredentialsFile: creds, StateDir: filepath.Join(home, "state")},
			Clock: clock.WithNow(func() time.Time { return now })}
		e.Log = &eventlog.EventLog{User: "alice", AfterEvent: e.MetricsEvent}
		return e
	}
	e := newEngine()
	e.Log.Event(eventlog.FAIL, "login expired")
	e.Log.Event(eventlog.WARN, "backup pending")
	e.Log.Event(eventlog.OK, "inference check passed")
	m, _ := ReadMetrics(dir, "alice")
	if m.FailuresTotal != 1 || !m.LastSuccess.Equal(now) || !m.CredentialExpiry.Equal(expires) || m.LoginDeadline.UnixMilli() != 1_767_000_000_000 {
		t.Errorf("after FAIL, WARN, OK: %+v; want 1 failure, success at now, expiry and deadline from the file", m)
	}

	now = now.Add(time.Hour)
	e = newEngine() // a restart
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() { defer wg.Done(); e.Log.Event(eventlog.FAIL, "x") }()
	}
	wg.Wait()
	m, _ = ReadMetrics(dir, "alice")
	if m.FailuresTotal != 21 {
		t.Errorf("failures_total = %d; want 21 (1 before the restart + 20 concurrent)", m.FailuresTotal)
	}
	if m.LastSuccess.Equal(now) {
		t.Errorf("a FAIL moved the last success")
	}
	data, _ := os.ReadFile(MetricsFile(dir, "alice"))
	if strings.Contains(string(data), "sk-ant") {
		t.Errorf("a token reached the metrics file")
	}

	// Metrics off: nothing written.
	off := &Reporter{Cfg: &config.Config{User: "carol", CredentialsFile: creds}}
	off.MetricsEvent(eventlog.FAIL)
	off.WriteMetricsNow()
	if _, err := os.Stat(MetricsFile(dir, "carol")); !os.IsNotExist(err) {
		t.Errorf("metrics written with CLAUDE_AUTH_METRICS_DIR unset")
	}
}

// A name taken by something that is not this user's regular file is refused,
// at once (a FIFO is never opened), and left as it is.
func TestWriteMetricsRefusesSquattedName(t *testing.T) {
	for _, c := range []struct {
		name string
		make func(path string) error
	}{
		{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o644) }},
		{"symlink", func(p string) error { return os.Symlink("/etc/passwd", p) }},
		{"directory", func(p string) error { return os.Mkdir(p, 0o755) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			userDirs(t, dir, "bob")
			target := MetricsFile(dir, "bob")
			if err := c.make(target); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- WriteMetrics(dir, Metrics{User: "bob", LastBackupLag: -1}) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("WriteMetrics blocked on what squats its file name")
			}
			if !errors.Is(err, ErrMetricsRefused) {
				t.Fatalf("WriteMetrics over a %s = %v; want ErrMetricsRefused", c.name, err)
			}
			if ents, _ := os.ReadDir(filepath.Dir(target)); len(ents) != 1 {
				t.Errorf("dir holds %d entries; want only the squatter (no temp left)", len(ents))
			}
		})
	}
}

// The counters come from the state dir, never from the .prom: a forged file
// (here the user's own, the only kind WriteMetrics replaces) is overwritten
// with the real values.
func TestMetricsNeverReadBack(t *testing.T) {
	state, dir := t.TempDir(), t.TempDir()
	userDirs(t, dir, "bob")
	e := &Reporter{Cfg: &config.Config{User: "bob", StateDir: state, MetricsDir: dir, CredentialsFile: filepath.Join(state, "none")}, Clock: clock.Real}
	e.Log = &eventlog.EventLog{User: "bob", AfterEvent: e.MetricsEvent}
	forged := "claude_auth_sync_last_success_timestamp_seconds{user=\"bob\"} 9999999999\nclaude_auth_sync_failures_total{user=\"bob\"} 0\n"
	if err := os.WriteFile(MetricsFile(dir, "bob"), []byte(forged), 0o644); err != nil {
		t.Fatal(err)
	}
	e.Log.Event(eventlog.FAIL, "x")
	m, _ := ReadMetrics(dir, "bob")
	if !m.LastSuccess.IsZero() || m.FailuresTotal != 1 {
		t.Errorf("after one FAIL: last success %v, failures %d; want none and 1 (the forged values ignored)", m.LastSuccess, m.FailuresTotal)
	}
}

// The agent writes only into a directory of the user's own: one that is
// missing (never made by the agent: others could have made it first), a
// link, or another uid's is refused, and nothing is written.
func TestWriteMetricsNeedsOwnDir(t *testing.T) {
	dir := t.TempDir()
	err := WriteMetrics(dir, Metrics{User: "bob", LastBackupLag: -1})
	if err == nil || errors.Is(err, ErrMetricsRefused) || !strings.Contains(err.Error(), "provision makes it") {
		t.Errorf("no user dir: %v; want an error that says provision makes it", err)
	}
	if _, err := os.Stat(promfile.UserDir(dir, "bob")); !os.IsNotExist(err) {
		t.Errorf("the agent made its own metrics dir")
	}
	if err := os.Symlink(t.TempDir(), promfile.UserDir(dir, "bob")); err != nil {
		t.Fatal(err)
	}
	if err := WriteMetrics(dir, Metrics{User: "bob", LastBackupLag: -1}); !errors.Is(err, ErrMetricsRefused) {
		t.Errorf("a symlink for the user dir: %v; want ErrMetricsRefused", err)
	}
	if os.Geteuid() != 0 {
		return // chown needs root; the e2e covers real users
	}
	userDirs(t, dir, "carol")
	if err := os.Chown(promfile.UserDir(dir, "carol"), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := WriteMetrics(dir, Metrics{User: "carol", LastBackupLag: -1}); !errors.Is(err, ErrMetricsRefused) {
		t.Errorf("another uid's user dir: %v; want ErrMetricsRefused", err)
	}
}

// The MCP series come from mcp.json: its counters and how many servers are
// in each state (all four always, 0 when none), per user only: no server
// name, id or URL reaches the file. No mcp.json is all zeros; an unreadable
// one leaves the MCP series out (unknown, not zero).
func TestMetricsMCP(t *testing.T) {
	if !slices.Equal(mcp.States[:], promfile.MCPStates) {
		t.Fatalf("mcp.States %v and promfile.MCPStates %v differ", mcp.States, promfile.MCPStates)
	}
	home := t.TempDir()
	state, dir := filepath.Join(home, "state"), filepath.Join(home, "metrics")
	userDirs(t, dir, "alice")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	e := &Reporter{Cfg: &config.Config{User: "alice", StateDir: state, MetricsDir: dir, CredentialsFile: filepath.Join(home, "none")}, Clock: clock.Real}
	read := func() map[string]string {
		t.Helper()
		e.WriteMetricsNow()
		data, err := os.ReadFile(MetricsFile(dir, "alice"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := promfile.Parse(data); err != nil {
			t.Errorf("the publisher refuses the file: %v\n%s", err, data)
		}
		for _, secret := range []string{"linear-secret-name", "mcp.example", "0a1b2c3d"} {
			if strings.Contains(string(data), secret) {
				t.Errorf("%q reached the metrics file:\n%s", secret, data)
			}
		}
		return checkExposition(t, string(data))
	}
	mcpSeries := func(got map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range got {
			if strings.HasPrefix(k, "claude_auth_sync_mcp_") {
				out[k] = v
			}
		}
		return out
	}
	zero := map[string]string{promfile.MCPRefreshes: "0", promfile.MCPFailures: "0",
		promfile.MCPServersKey("ok"): "0", promfile.MCPServersKey("retrying"): "0",
		promfile.MCPServersKey("needs-login"): "0", promfile.MCPServersKey("skipped"): "0"}
	if got := mcpSeries(read()); !maps.Equal(got, zero) {
		t.Errorf("no mcp.json: %v; want %v", got, zero)
	}

	body := `{"refreshes_total": 14, "failures_total": 2, "servers": [
  {"name": "linear-secret-name", "id": "0a1b2c3d", "state": "ok"},
  {"name": "b", "id": "2", "state": "ok"},
  {"name": "c", "id": "3", "state": "needs-login", "reason": "https://mcp.example/ refused"},
  {"name": "d", "id": "4", "state": "skipped"},
  {"name": "e", "id": "5", "state": "a state from a later version"}]}`
	if err := os.WriteFile(filepath.Join(state, mcp.StateFile), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{promfile.MCPRefreshes: "14", promfile.MCPFailures: "2",
		promfile.MCPServersKey("ok"): "2", promfile.MCPServersKey("retrying"): "0",
		promfile.MCPServersKey("needs-login"): "1", promfile.MCPServersKey("skipped"): "1"}
	if got := mcpSeries(read()); !maps.Equal(got, want) {
		t.Errorf("mcp.json with servers: %v; want %v", got, want)
	}

	if err := os.WriteFile(filepath.Join(state, mcp.StateFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := read()
	if m := mcpSeries(got); len(m) != 0 {
		t.Errorf("unreadable mcp.json: %v; want no MCP series", m)
	}
	if got[promfile.Failures] != "0" {
		t.Errorf("unreadable mcp.json took the other series with it: %v", got)
	}
}
