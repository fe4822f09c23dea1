package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// promAlert is one entry of Prometheus's /api/v1/alerts.
type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func promAlerts(t *testing.T, base string) []promAlert {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/alerts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Data struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc.Data.Alerts
}

// promHas: Prometheus holds a sample of query for user.
func promHas(t *testing.T, base, query, user string) bool {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var doc struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
			} `json:"result"`
		} `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&doc)
	for _, r := range doc.Data.Result {
		if r.Metric["user"] == user {
			return true
		}
	}
	return false
}

// The whole path, with the real programs: two users' real agents write their
// metrics, the publisher (running, watching) publishes them, the real node
// exporter serves them and a real Prometheus scrapes it every second and
// evaluates the shipped rules every second. The victim's login is made to
// FAIL (its refresh token spent elsewhere, its access token refused): Prometheus
// fires ClaudeAuthSyncFailing for the victim and nothing for the healthy user.
// The seconds from the FAIL line to the alert firing are reported.
func TestAlertFiresForFailingAgent(t *testing.T) {
	needPrometheus(t, "prometheus", "prometheus-node-exporter")
	victim, healthy := newFaultUser(t), newFaultUser(t)
	base, pub := metricsLayout(t, victim, healthy)
	worlds := map[string]*world{}
	for _, u := range []faultUser{victim, healthy} {
		w := newWorldNamed(t, vsrv, u.name)
		w.login()
		u.adopt(t, w)
		w.setEnvVar("CLAUDE_AUTH_METRICS_DIR", base)
		worlds[u.name] = w
	}
	agents := map[string]*agentProc{}
	for _, u := range []faultUser{victim, healthy} {
		agents[u.name] = worlds[u.name].startAgentProc(nil, u.as)
	}
	for _, u := range []faultUser{victim, healthy} {
		w := worlds[u.name]
		eventually(t, 60*time.Second, u.name+"'s start-up pass", func() bool {
			return strings.Contains(w.syncLog(), " OK inference check passed")
		})
	}

	pubCmd := exec.Command(filepath.Join(binDir, "claude-auth-sync"), "publish-metrics", "--from", base, "--to", pub)
	pubCmd.Env = []string{"PATH=/usr/bin:/bin", "CLAUDE_AUTH_SYSTEM_CONFIG=/nonexistent"}
	var pubMu sync.Mutex
	var pubBuf bytes.Buffer
	pubCmd.Stdout, pubCmd.Stderr = lockedWriter{&pubMu, &pubBuf}, lockedWriter{&pubMu, &pubBuf}
	if err := pubCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pubCmd.Process.Signal(syscall.SIGTERM); pubCmd.Wait() })
	nodeAddr := startNodeExporter(t, pub)

	dir := t.TempDir()
	rules, _ := filepath.Abs(filepath.Join(repoRoot(t), "packaging", "alerts", "prometheus-rules.yaml"))
	cfg := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - %s
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ['%s']
`, rules, nodeAddr)), 0o644)
	promAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	promURL := "http://" + promAddr
	startDaemon(t, promURL+"/-/ready", "prometheus", "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+promAddr)
	for _, u := range []faultUser{victim, healthy} {
		name := u.name
		eventually(t, 60*time.Second, "Prometheus has "+name+"'s failures_total", func() bool {
			return promHas(t, promURL, "claude_auth_sync_failures_total", name)
		})
	}
	time.Sleep(2 * time.Second) // a few samples of 0 before the FAIL

	// The victim's login dies: written, backed up, then its refresh token
	// spent elsewhere and its access token refused. A full pass FAILs.
	w := worlds[victim.name]
	bad := w.fake.Issue()
	w.mu.Lock()
	w.secrets = append(w.secrets, bad.AccessToken, bad.RefreshToken)
	w.mu.Unlock()
	victim.writeLogin(t, w, bad)
	eventually(t, 15*time.Second, "the new login backed up", w.vaultHolds(bad))
	if _, err := w.fake.Rotate(bad.RefreshToken); err != nil {
		t.Fatal(err)
	}
	w.fake.Revoke(bad.AccessToken)
	agents[victim.name].cmd.Process.Signal(syscall.SIGHUP)
	failLine := regexp.MustCompile(`(?m)^(\S+) FAIL .*$`)
	var failAt, failSeen time.Time
	eventually(t, 60*time.Second, "a FAIL line", func() bool {
		m := failLine.FindStringSubmatch(w.syncLog())
		if m == nil {
			return false
		}
		failSeen = time.Now()
		failAt, _ = time.Parse(time.RFC3339Nano, m[1])
		return true
	})
	t.Logf("the FAIL line: %s", failLine.FindString(w.syncLog()))

	var firingAt time.Time
	eventually(t, 60*time.Second, "ClaudeAuthSyncFailing firing for "+victim.name, func() bool {
		for _, a := range promAlerts(t, promURL) {
			if a.Labels["alertname"] == "ClaudeAuthSyncFailing" && a.Labels["user"] == victim.name && a.State == "firing" {
				firingAt = time.Now()
				return true
			}
		}
		return false
	})
	// The line's stamp has whole seconds; the test sees the line within ~50 ms.
	t.Logf("MEASURED: ClaudeAuthSyncFailing firing %.2f s after the FAIL line was seen (%.1f s after its stamp %s)",
		firingAt.Sub(failSeen).Seconds(), firingAt.Sub(failAt).Seconds(), failAt.Format(time.RFC3339))
	time.Sleep(3 * time.Second) // three more evaluations
	for _, a := range promAlerts(t, promURL) {
		if a.Labels["user"] == healthy.name {
			t.Errorf("an alert for the healthy user: %+v", a)
		}
		if a.Labels["user"] == victim.name && a.Labels["alertname"] != "ClaudeAuthSyncFailing" {
			t.Errorf("another alert for the victim: %+v", a)
		}
		if a.Labels["user"] == "" {
			t.Errorf("an alert for no user: %+v", a)
		}
	}
	if strings.Contains(worlds[healthy.name].syncLog(), " FAIL ") {
		t.Errorf("the healthy user FAILed:\n%s", worlds[healthy.name].syncLog())
	}
	pubMu.Lock()
	defer pubMu.Unlock()
	if strings.Contains(pubBuf.String(), "WARN") {
		t.Errorf("the publisher warned:\n%s", pubBuf.String())
	}
}
