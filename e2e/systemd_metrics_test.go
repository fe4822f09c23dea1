package e2e_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Metrics under a real systemd, from the package: an upgrade from the shared
// 1777 metrics dir (a user's own file in it, another user's forged file and
// directory in a third user's name) makes the dir root's and the first user's
// directory theirs, drops the forgeries, keeps the counters (state dir) and
// starts the publisher unit; a user
// unit agent (systemd --user, PrivateUsers=yes, ProtectSystem=strict) and a
// template agent both write into their own directories; the hardened
// publisher unit publishes both within a fraction of a second of a write; the
// third user cannot write into anyone's directory.
func TestSystemdMetrics(t *testing.T) {
	oldDeb, newDeb := debs(t)
	h := bootHost(t, "cas-metrics")
	h.install(oldDeb)
	h.configure(h.vault.srv.URL)
	const dir = "/var/lib/claude-auth-sync/metrics"
	cfg, _ := os.ReadFile(filepath.Join(h.c.Root, "etc/claude-auth-sync/config"))
	h.writeFile("/etc/claude-auth-sync/config", string(cfg)+"CLAUDE_AUTH_METRICS_DIR="+dir+"\n", 0o644)
	alice, bob, mallory := h.addUser("mtalice"), h.addUser("mtbob"), h.addUser("mtmallory")
	for _, u := range []sdUser{alice, bob} {
		h.vaultToken(u)
		h.login(u)
	}

	// The layout of earlier versions, with a hostile user in it.
	h.sh("install -d -m 1777 " + dir + " && install -d -m 0755 /var/lib/prometheus/node-exporter")
	h.mustAsUser(alice, "printf 'claude_auth_sync_failures_total{user=\"mtalice\"} 4\\n' > "+dir+"/claude_auth_sync_mtalice.prom")
	h.mustAsUser(mallory, "printf 'claude_auth_sync_login_deadline_timestamp_seconds{user=\"mtbob\"} 9999999999\\n' > "+dir+
		"/claude_auth_sync_mtbob.prom && mkdir -m 0777 "+dir+"/mtbob && cp "+dir+"/claude_auth_sync_mtbob.prom "+dir+"/mtbob/claude_auth_sync.prom")

	// alice's counters, kept in her state dir (never in the .prom), from
	// before the upgrade.
	h.mustAsUser(alice, `umask 077; mkdir -p ~/.local/state/claude-auth-sync && echo '{"failures_total":4}' > ~/.local/state/claude-auth-sync/metrics.json`)

	out := h.install(newDeb)
	t.Run("upgrade migrates the shared dir", func(t *testing.T) {
		if !strings.Contains(out, dir+" is root's now (0755)") {
			t.Errorf("the upgrade did not say it migrated:\n%s", out)
		}
		if got := strings.TrimSpace(h.sh("stat -c '%U %a' " + dir)); got != "root 755" {
			t.Errorf("%s: %s; want root 755", dir, got)
		}
		if got := strings.TrimSpace(h.sh("stat -c '%U %a' " + dir + "/mtalice")); got != "mtalice 700" {
			t.Errorf("alice's dir: %q; want mtalice 700", got)
		}
		if got := strings.TrimSpace(h.sh("ls -A " + dir)); got != "mtalice" {
			t.Errorf("left in %s: %q; want only mtalice (the old files and the forgeries gone)", dir, got)
		}
		if got := strings.TrimSpace(h.sh("systemctl is-active claude-auth-sync-metrics.service; systemctl is-enabled claude-auth-sync-metrics.service")); got != "active\nenabled" {
			t.Errorf("the publisher unit: %q; want active and enabled", got)
		}
	})
	// What provision does for bob.
	h.sh("install -d -o mtbob -g mtbob -m 0700 " + dir + "/mtbob")

	h.waitUserManager(alice)
	h.mustAsUser(alice, "systemctl --user enable --now claude-auth-sync.service")
	h.sh("systemctl enable --now claude-auth-sync-agent@mtbob.service")
	published := filepath.Join(h.c.Root, "var/lib/prometheus/node-exporter/claude_auth_sync.prom")
	backupOf := func(user string) string {
		b, _ := os.ReadFile(published)
		m := regexp.MustCompile(`(?m)^claude_auth_sync_last_backup_timestamp_seconds\{user="` + user + `"\} (\S+)$`).FindStringSubmatch(string(b))
		if m == nil {
			return ""
		}
		return m[1]
	}
	for _, u := range []sdUser{alice, bob} {
		eventually(t, 60*time.Second, u.name+"'s backup published", func() bool { return backupOf(u.name) != "" })
	}
	t.Run("both agents publish, labelled by owner", func(t *testing.T) {
		b, _ := os.ReadFile(published)
		if strings.Contains(string(b), "9999999999") || strings.Contains(string(b), "mtmallory") {
			t.Errorf("the forgery was published:\n%s", b)
		}
		if !strings.Contains(string(b), `claude_auth_sync_failures_total{user="mtalice"} 4`+"\n") {
			t.Errorf("alice's 4 failures from before the upgrade were lost:\n%s", b)
		}
		for _, u := range []sdUser{alice, bob} {
			if !strings.Contains(string(b), `claude_auth_sync_metrics_publish_error{user="`+u.name+`"} 0`) {
				t.Errorf("no publish_error 0 for %s:\n%s", u.name, b)
			}
		}
		if got := h.sh("journalctl --no-pager -u claude-auth-sync-metrics.service -o cat"); strings.Contains(got, "WARN") || strings.Contains(got, "FAIL") {
			t.Errorf("the publisher's journal:\n%s", got)
		}
		if _, err := h.asUser(mallory, "echo x > "+dir+"/mtalice/x.prom || echo x > "+dir+"/x.prom"); err == nil {
			t.Errorf("mallory wrote into the metrics dir")
		}
	})
	t.Run("a write is published within a second", func(t *testing.T) {
		for _, u := range []sdUser{alice, bob} {
			before := backupOf(u.name)
			start := time.Now()
			h.writeLogin(u, h.fake.Issue())
			eventually(t, 30*time.Second, u.name+"'s new backup published", func() bool { return backupOf(u.name) != before })
			t.Logf("SYSTEMD-REPORT metrics: %s's new login reached the published file %s after the rename", u.name, time.Since(start).Round(time.Millisecond))
		}
	})
}
