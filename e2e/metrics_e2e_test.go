package e2e_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Metrics no user can write for another, read by the real programs they are
// made for: real OS users (a victim and a hostile one), their real agents
// against the real Vault, the root publisher, Debian's prometheus-node-exporter
// reading what it published, and a real Prometheus evaluating the shipped
// alert rules on that.

// metricsLayout is root's metrics dir with a directory of each user's own, as
// provision makes them; pub is the node exporter's textfile directory.
func metricsLayout(t *testing.T, users ...faultUser) (base, pub string) {
	t.Helper()
	root := t.TempDir()
	for p := root; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o711)
	}
	base, pub = filepath.Join(root, "metrics"), filepath.Join(root, "node-exporter")
	for _, d := range []string{base, pub} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range users {
		d := filepath.Join(base, u.name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, u.uid, u.gid); err != nil {
			t.Fatal(err)
		}
	}
	return base, pub
}

// sample is one series of a scrape.
type sample struct {
	name, typ string
	labels    map[string]string
	value     float64
}

var (
	sampleRe = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
	labelRe  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// scrape reads the node exporter's /metrics; every line must parse.
func scrape(t *testing.T, url string) []sample {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	types := map[string]string{}
	var out []sample
	for _, l := range strings.Split(string(body), "\n") {
		if f := strings.Fields(l); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
		}
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		m := sampleRe.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("scrape: a line that does not parse: %q", l)
		}
		s := sample{name: m[1], typ: types[m[1]], labels: map[string]string{}}
		for _, lm := range labelRe.FindAllStringSubmatch(m[2], -1) {
			s.labels[lm[1]] = lm[2]
		}
		s.value, _ = strconv.ParseFloat(m[3], 64)
		out = append(out, s)
	}
	return out
}

// seriesOf is user's series by name, name{state="…"} for the MCP servers by
// state.
func seriesOf(ss []sample, user string) map[string]sample {
	m := map[string]sample{}
	for _, s := range ss {
		if s.labels["user"] == user {
			key := s.name
			if st, ok := s.labels["state"]; ok {
				key += `{state="` + st + `"}`
			}
			m[key] = s
		}
	}
	return m
}

func valueOf(ss []sample, name string) (float64, bool) {
	for _, s := range ss {
		if s.name == name {
			return s.value, true
		}
	}
	return 0, false
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startDaemon runs a real server binary until the test ends, and waits for url.
func startDaemon(t *testing.T, url string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	logf, _ := os.Create(filepath.Join(t.TempDir(), "log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	eventually(t, 30*time.Second, name+" listening", func() bool {
		r, err := http.Get(url)
		if err == nil {
			r.Body.Close()
		}
		return err == nil && r.StatusCode == 200
	})
}

func startNodeExporter(t *testing.T, dir string) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startDaemon(t, "http://"+addr+"/metrics", "prometheus-node-exporter", "--web.listen-address="+addr,
		"--collector.disable-defaults", "--collector.textfile", "--collector.textfile.directory="+dir)
	return addr
}

func publishOnce(t *testing.T, base, pub string) result {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "claude-auth-sync"), "publish-metrics", "--once", "--from", base, "--to", pub)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "CLAUDE_AUTH_SYSTEM_CONFIG=/nonexistent"}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

// agentTruth is what the victim's agent's state says its series must be.
func agentTruth(t *testing.T, w *world, l time.Time) map[string]float64 {
	t.Helper()
	var counters struct {
		LastSuccess   time.Time `json:"last_success"`
		FailuresTotal uint64    `json:"failures_total"`
	}
	var agent struct {
		LastBackup      *time.Time `json:"last_backup"`
		LastBackupLagMs float64    `json:"last_backup_lag_ms"`
	}
	for path, v := range map[string]any{"metrics.json": &counters, "agent.json": &agent} {
		b, err := os.ReadFile(filepath.Join(w.state, path))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	want := map[string]float64{
		"claude_auth_sync_last_success_timestamp_seconds":      float64(counters.LastSuccess.UnixMilli()) / 1000,
		"claude_auth_sync_credential_expiry_timestamp_seconds": float64(l.UnixMilli()) / 1000,
		"claude_auth_sync_failures_total":                      float64(counters.FailuresTotal),
		"claude_auth_sync_metrics_publish_error":               0,
	}
	if agent.LastBackup != nil {
		want["claude_auth_sync_last_backup_timestamp_seconds"] = float64(agent.LastBackup.UnixMilli()) / 1000
		want["claude_auth_sync_last_backup_lag_seconds"] = agent.LastBackupLagMs / 1000
	}
	// The MCP logins: mcp.json's counters and servers by state (all zero
	// while there is none).
	var mcpState struct {
		RefreshesTotal float64 `json:"refreshes_total"`
		FailuresTotal  float64 `json:"failures_total"`
		Servers        []struct {
			State string `json:"state"`
		} `json:"servers"`
	}
	if b, err := os.ReadFile(filepath.Join(w.state, "mcp.json")); err == nil {
		if err := json.Unmarshal(b, &mcpState); err != nil {
			t.Fatalf("mcp.json: %v", err)
		}
	}
	want["claude_auth_sync_mcp_refreshes_total"] = mcpState.RefreshesTotal
	want["claude_auth_sync_mcp_refresh_failures_total"] = mcpState.FailuresTotal
	for _, st := range []string{"ok", "retrying", "needs-login", "skipped"} {
		want[`claude_auth_sync_mcp_servers{state="`+st+`"}`] = 0
	}
	for _, s := range mcpState.Servers {
		want[`claude_auth_sync_mcp_servers{state="`+s.State+`"}`]++
	}
	return want
}

var metricTypes = map[string]string{
	"claude_auth_sync_last_success_timestamp_seconds":      "gauge",
	"claude_auth_sync_credential_expiry_timestamp_seconds": "gauge",
	"claude_auth_sync_login_deadline_timestamp_seconds":    "gauge",
	"claude_auth_sync_last_backup_timestamp_seconds":       "gauge",
	"claude_auth_sync_last_backup_lag_seconds":             "gauge",
	"claude_auth_sync_failures_total":                      "counter",
	"claude_auth_sync_mcp_refreshes_total":                 "counter",
	"claude_auth_sync_mcp_refresh_failures_total":          "counter",
	"claude_auth_sync_mcp_servers":                         "gauge",
	"claude_auth_sync_metrics_updated_timestamp_seconds":   "gauge",
	"claude_auth_sync_metrics_publish_error":               "gauge",
}

// The victim's real agent writes into its own directory; the hostile user
// cannot write there, and whatever the hostile user puts in its own file (a
// forged series in the victim's name, garbage, a second sample, a huge file,
// a FIFO, a link to the victim's file, NaN, a TYPE conflict) never reaches the
// victim's series nor breaks the node exporter's scrape: it is refused and
// reported as the hostile user's publish error.
func TestMetricsPublishedToNodeExporter(t *testing.T) {
	needPrometheus(t, "prometheus-node-exporter")
	victim, hostile := newFaultUser(t), newFaultUser(t)
	base, pub := metricsLayout(t, victim, hostile)
	w := newWorldNamed(t, vsrv, victim.name)
	l := w.login()
	victim.adopt(t, w)
	w.setEnvVar("CLAUDE_AUTH_METRICS_DIR", base)
	a := w.startAgentProc(nil, victim.as)
	defer a.stop()
	victimFile := filepath.Join(base, victim.name, "claude_auth_sync.prom")
	eventually(t, 45*time.Second, "the victim's start-up pass and backup in its metrics", func() bool {
		b, _ := os.ReadFile(victimFile)
		return strings.Contains(w.syncLog(), " OK inference check passed") && strings.Contains(string(b), "last_backup_lag_seconds")
	})
	if fi, err := os.Lstat(victimFile); err != nil || fi.Sys().(*syscall.Stat_t).Uid != uint32(victim.uid) {
		t.Fatalf("the victim's metrics file: %v", err)
	}

	// The hostile user cannot write into the victim's directory, nor into
	// root's metrics dir.
	for _, p := range []string{filepath.Join(base, victim.name, "x.prom"), filepath.Join(base, "aaa.prom")} {
		if out, err := hostileRun(t, hostile, "sh", "-c", `echo x > "$0"`, p); err == nil {
			t.Errorf("the hostile user wrote %s: %s", p, out)
		}
	}

	addr := startNodeExporter(t, pub)
	hostileFile := filepath.Join(base, hostile.name, "claude_auth_sync.prom")
	forged := `claude_auth_sync_login_deadline_timestamp_seconds{user="` + victim.name + `"} 9999999999` + "\n" +
		`claude_auth_sync_failures_total{user="` + victim.name + `"} 0` + "\n"
	for _, c := range []struct {
		name    string
		make    string // run by the hostile user, $0 = its file, $1 = the victim's
		refused bool
	}{
		{"a forged series in the victim's name", `printf '%s' '` + forged + `' > "$0"`, false},
		{"garbage", `head -c 3000 /dev/urandom > "$0"`, true},
		{"a duplicate series", `printf 'claude_auth_sync_failures_total{user="a"} 1\nclaude_auth_sync_failures_total{user="b"} 2\n' > "$0"`, true},
		{"a huge file", `head -c 50000000 /dev/zero | tr '\0' '#' > "$0"`, true},
		{"a FIFO", `mkfifo "$0"`, true},
		{"a symlink to the victim's file", `ln -s "$1" "$0"`, true},
		{"NaN", `printf 'claude_auth_sync_login_deadline_timestamp_seconds NaN\n' > "$0"`, true},
		{"a HELP/TYPE conflict", `printf '# TYPE claude_auth_sync_failures_total gauge\nclaude_auth_sync_failures_total 1\n' > "$0"`, true},
		{"another metric", `printf 'node_load1 99\n' > "$0"`, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			os.Remove(hostileFile)
			if out, err := hostileRun(t, hostile, "sh", "-c", c.make, hostileFile, victimFile); err != nil {
				t.Fatalf("the hostile user's %s: %v %s", c.name, err, out)
			}
			start := time.Now()
			r := publishOnce(t, base, pub)
			t.Logf("published in %s", time.Since(start).Round(time.Millisecond))
			if r.code != 0 {
				t.Fatalf("publish-metrics --once: exit %d\n%s", r.code, r.stderr)
			}
			if warned := strings.Contains(r.stderr, "user="+hostile.name+" WARN metrics not published: "); warned != c.refused {
				t.Errorf("WARN for the hostile user = %v; want %v\n%s", warned, c.refused, r.stderr)
			}
			if strings.Contains(r.stderr, "FAIL") || strings.Contains(r.stderr, "user="+victim.name) {
				t.Errorf("the publisher said something of the victim or a FAIL:\n%s", r.stderr)
			}
			ss := scrape(t, "http://"+addr+"/metrics")
			if v, ok := valueOf(ss, "node_textfile_scrape_error"); !ok || v != 0 {
				t.Errorf("node_textfile_scrape_error = %v (present %v); want 0", v, ok)
			}
			want := agentTruth(t, w, l.ExpiresAt)
			got := seriesOf(ss, victim.name)
			if _, ok := got["claude_auth_sync_metrics_updated_timestamp_seconds"]; ok {
				fi, _ := os.Stat(victimFile)
				want["claude_auth_sync_metrics_updated_timestamp_seconds"] = float64(fi.ModTime().UnixMilli()) / 1000
			} else {
				t.Errorf("no metrics_updated series for the victim")
			}
			for name, v := range want {
				s, ok := got[name]
				switch {
				case !ok:
					t.Errorf("victim: %s missing", name)
				case s.typ != metricTypes[s.name]:
					t.Errorf("victim: %s is a %q; want %s", name, s.typ, metricTypes[s.name])
				case s.name == "claude_auth_sync_mcp_servers" && len(s.labels) != 2:
					t.Errorf("victim: %s labels %v; want only user and state", name, s.labels)
				case s.name != "claude_auth_sync_mcp_servers" && len(s.labels) != 1:
					t.Errorf("victim: %s labels %v; want only user", name, s.labels)
				case fmt.Sprint(s.value) != fmt.Sprint(v) && (s.value-v > 0.001 || v-s.value > 0.001):
					t.Errorf("victim: %s = %v; want %v (the agent's state)", name, s.value, v)
				}
			}
			if len(got) != len(want) {
				t.Errorf("victim has %d series; want %d: %v", len(got), len(want), got)
			}
			hs := seriesOf(ss, hostile.name)
			if e := hs["claude_auth_sync_metrics_publish_error"].value; (e == 1) != c.refused {
				t.Errorf("hostile publish_error = %v; want refused=%v", e, c.refused)
			}
			if c.refused && len(hs) != 1 {
				t.Errorf("a refused file published %d series: %v", len(hs), hs)
			}
			if !c.refused && hs["claude_auth_sync_login_deadline_timestamp_seconds"].value != 9999999999 {
				t.Errorf("the hostile user's own (forged) deadline is not labelled as its own: %v", hs)
			}
			for _, s := range ss {
				if s.value == 9999999999 && s.labels["user"] != hostile.name {
					t.Errorf("the forgery reached %v", s)
				}
			}
			t.Logf("victim: %d series; hostile: %d", len(got), len(hs))
		})
	}
	// The victim's file is untouched by all of it.
	if fi, err := os.Lstat(victimFile); err != nil || fi.Sys().(*syscall.Stat_t).Uid != uint32(victim.uid) || !fi.Mode().IsRegular() {
		t.Errorf("the victim's metrics file after the hostile user's tries: %v %v", fi, err)
	}
}
