package e2e_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// needPrometheus: Debian's prometheus (promtool) and prometheus-node-exporter,
// which make test's tools target installs.
func needPrometheus(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: apt-get install prometheus prometheus-node-exporter (make tools does it as root)", tool)
		}
	}
}

// The shipped alert rules pass Prometheus's own checker and their unit tests
// (prometheus-rules.test.yaml: each alert firing for one user and not for
// another), and every alert has its section in the runbook.
func TestPrometheusRules(t *testing.T) {
	needPrometheus(t, "promtool")
	dir := filepath.Join(repoRoot(t), "packaging", "alerts")
	for _, args := range [][]string{
		{"check", "rules", "prometheus-rules.yaml"},
		{"test", "rules", "prometheus-rules.test.yaml"},
	} {
		cmd := exec.Command("promtool", args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	rules, _ := os.ReadFile(filepath.Join(dir, "prometheus-rules.yaml"))
	tests, _ := os.ReadFile(filepath.Join(dir, "prometheus-rules.test.yaml"))
	runbook, _ := os.ReadFile(filepath.Join(repoRoot(t), "docs", "runbook.md"))
	alerts := regexp.MustCompile(`(?m)^\s*- alert: (\S+)`).FindAllStringSubmatch(string(rules), -1)
	if len(alerts) < 9 {
		t.Fatalf("%d alerts in prometheus-rules.yaml; want the 9 shipped", len(alerts))
	}
	for _, a := range alerts {
		name := a[1]
		if n := strings.Count(string(tests), "alertname: "+name+"\n"); n < 1 {
			t.Errorf("alert %s has no unit test in prometheus-rules.test.yaml", name)
		}
		if !strings.Contains(string(runbook), "### "+name+"\n") {
			t.Errorf("alert %s has no section in docs/runbook.md", name)
		}
	}
}
