package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The product as an admin installs it and users run it, under a real systemd:
// the package life cycle, the user unit under a real user manager, the system
// template, the watchdog and restart policy, the journal, and the real Claude
// CLI inside the hardened unit. One container, one story, in order.
func TestSystemdUnitsAndPackage(t *testing.T) {
	oldDeb, newDeb := debs(t)
	h := bootHost(t, "cas-units")

	// 1. dpkg -i installs and enables nothing.
	h.install(oldDeb)
	t.Run("install enables nothing", func(t *testing.T) {
		files := h.sh("systemctl list-unit-files --no-legend --no-pager 'claude-auth-sync*'")
		if len(strings.Fields(files)) == 0 {
			t.Fatalf("no claude-auth-sync unit files after dpkg -i")
		}
		for _, l := range strings.Split(strings.TrimSpace(files), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[1] != "disabled" && f[1] != "static" {
				t.Errorf("after dpkg -i: %s", l)
			}
		}
		if st, _ := h.try("systemctl --global is-enabled claude-auth-sync.service"); strings.TrimSpace(st) != "disabled" {
			t.Errorf("the user unit is globally %q after dpkg -i; want disabled", strings.TrimSpace(st))
		}
		if units := h.sh("systemctl list-units --no-legend --no-pager --all 'claude-auth-sync*'"); strings.TrimSpace(units) != "" {
			t.Errorf("units loaded or running after dpkg -i:\n%s", units)
		}
		if ps, _ := h.try("pgrep -a claude-auth"); strings.TrimSpace(ps) != "" {
			t.Errorf("processes after dpkg -i: %s", ps)
		}
	})

	h.configure(h.vault.srv.URL)
	alice, bob := h.addUser("alice"), h.addUser("bob")
	for _, u := range []sdUser{alice, bob} {
		h.vaultToken(u)
		h.login(u)
	}

	// 2. The user unit under a real user manager (lingering); its check runs
	// the real Claude CLI (7), as carol's template unit's does below.
	h.useRealClaude(alice, "/etc/systemd/user/claude-auth-sync.service.d/real-claude.conf")
	h.waitUserManager(alice)
	t.Run("user unit starts", func(t *testing.T) {
		start := time.Now()
		h.mustAsUser(alice, "systemctl --user enable --now claude-auth-sync.service")
		t.Logf("SYSTEMD-REPORT user unit: enable --now returned (READY) in %s", time.Since(start).Round(time.Millisecond))
		p := h.props(&alice, "claude-auth-sync.service", "ActiveState", "SubState", "Type", "StatusText", "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
		if p["ActiveState"] != "active" || p["SubState"] != "running" || p["Type"] != "notify" {
			t.Fatalf("user unit: %v", p)
		}
		if p["StatusText"] == "" {
			t.Errorf("user unit: no StatusText")
		}
		t.Logf("SYSTEMD-REPORT user unit: exec to READY %s; StatusText %q", monoGap(p["ExecMainStartTimestampMonotonic"], p["ActiveEnterTimestampMonotonic"]), p["StatusText"])
	})

	// 3. The system template for a second user.
	t.Run("template unit starts", func(t *testing.T) {
		start := time.Now()
		h.sh("systemctl enable --now claude-auth-sync-agent@bob.service")
		t.Logf("SYSTEMD-REPORT template unit: enable --now returned (READY) in %s", time.Since(start).Round(time.Millisecond))
		p := h.props(nil, "claude-auth-sync-agent@bob.service", "ActiveState", "SubState", "Type", "StatusText", "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
		if p["ActiveState"] != "active" || p["SubState"] != "running" || p["Type"] != "notify" {
			t.Fatalf("template unit: %v", p)
		}
		if p["StatusText"] == "" {
			t.Errorf("template unit: no StatusText")
		}
		t.Logf("SYSTEMD-REPORT template unit: exec to READY %s; StatusText %q", monoGap(p["ExecMainStartTimestampMonotonic"], p["ActiveEnterTimestampMonotonic"]), p["StatusText"])
	})

	for _, u := range []sdUser{alice, bob} {
		t.Run("start-up pass, rotation and reload for "+u.name, func(t *testing.T) {
			passed := `^user=` + u.name + ` OK inference check passed`
			eventually(t, 60*time.Second, u.name+"'s start-up pass in the journal", func() bool { return h.journalCount(passed) >= 1 })
			lag := h.rotateAndWait(u)
			t.Logf("SYSTEMD-REPORT %s: rotation readable in Vault %s after the rename", u.name, lag.Round(time.Millisecond))
			before := h.journalCount(passed)
			if u.name == "alice" {
				h.mustAsUser(u, "systemctl --user reload claude-auth-sync.service")
			} else {
				h.sh("systemctl reload claude-auth-sync-agent@bob.service")
			}
			eventually(t, 60*time.Second, "a pass after reload", func() bool { return h.journalCount(passed) > before })
		})
	}

	// systemd's Status: says what the journal says, at once: each backup
	// (not only a full pass) updates STATUS= (issue 23). Measured from the
	// journal's "OK backed up … (vN," line to StatusText showing vN.
	t.Run("Status: follows each backup", func(t *testing.T) {
		backedUp := regexp.MustCompile(`^(\d+\.\d+) .*user=bob OK backed up the (?:changed )?login .*\(v(\d+),`)
		var lags []string
		for i := 0; i < 3; i++ {
			before := h.journalCount(`^user=bob OK backed up `)
			h.writeLogin(bob, h.fake.Issue())
			eventually(t, 30*time.Second, "bob's backup in the journal", func() bool { return h.journalCount(`^user=bob OK backed up `) > before })
			var at, version string
			for _, l := range strings.Split(h.sh("journalctl --no-pager -t claude-auth-sync -o short-unix | grep 'user=bob OK backed up' | tail -1"), "\n") {
				if m := backedUp.FindStringSubmatch(l); m != nil {
					at, version = m[1], m[2]
				}
			}
			if version == "" {
				t.Fatalf("no backup line with a version in bob's journal")
			}
			// Polled inside the container: each look is one systemctl show.
			out, err := h.try(`for i in $(seq 1 1500); do s=$(systemctl show claude-auth-sync-agent@bob.service -p StatusText --value); case "$s" in *"backed up"*"(v` + version + `,"*) date +%s.%N; echo "$s"; exit 0;; esac; sleep 0.02; done; echo "$s"; exit 1`)
			if err != nil {
				t.Fatalf("StatusText never showed the backup v%s the journal has: %s", version, out)
			}
			seen, status, _ := strings.Cut(strings.TrimSpace(out), "\n")
			a, _ := strconv.ParseFloat(at, 64)
			b, _ := strconv.ParseFloat(seen, 64)
			lags = append(lags, fmt.Sprintf("%.0f ms", (b-a)*1000))
			if strings.Contains(status, "backup pending") {
				t.Errorf("StatusText %q still says a backup is pending after the journal's backup v%s", status, version)
			}
			if i == 2 {
				t.Logf("SYSTEMD-REPORT StatusText after a backup: %q", status)
			}
		}
		t.Logf("SYSTEMD-REPORT seconds from the journal's OK backed up line to Status: showing it (3 backups, polled every 20 ms in the container): %s", strings.Join(lags, ", "))
	})

	// The reference's "sync now" reaches either agent: the user unit's
	// (PrivateUsers=yes: its uid is mapped into its own user namespace, and
	// SO_PEERCRED still says alice on both ends) and the template's.
	t.Run("sync now asks the running agent", func(t *testing.T) {
		for _, c := range []struct {
			u   sdUser
			pid func() string
		}{
			{alice, func() string { return h.props(&alice, "claude-auth-sync.service", "MainPID")["MainPID"] }},
			{bob, func() string { return h.props(nil, "claude-auth-sync-agent@bob.service", "MainPID")["MainPID"] }},
		} {
			h.sh("systemctl start claude-auth-sync@" + c.u.name + ".service")
			want := "user=" + c.u.name + " OK inference check passed; backup up to date"
			log := h.sh("journalctl --no-pager -u claude-auth-sync@" + c.u.name + ".service -o cat")
			if !strings.Contains(log, want) || !strings.Contains(log, "(the agent's pass, pid "+c.pid()+")") {
				t.Errorf("systemctl start claude-auth-sync@%s.service: not the agent's pass (pid %s):\n%s", c.u.name, c.pid(), log)
			}
		}
	})

	t.Run("exposure of the live units", func(t *testing.T) {
		re := regexp.MustCompile(`Overall exposure level for (\S+): ([0-9.]+) (\S+)`)
		sys, _ := h.try("systemd-analyze security --no-pager claude-auth-sync-agent@bob.service | tail -1")
		usr, _ := h.asUser(alice, "systemd-analyze --user security --no-pager claude-auth-sync.service | tail -1")
		for _, out := range []string{sys, usr} {
			m := re.FindStringSubmatch(out)
			if m == nil {
				t.Errorf("systemd-analyze security: %q", out)
				continue
			}
			t.Logf("SYSTEMD-REPORT exposure %s: %s %s", m[1], m[2], m[3])
		}
	})

	// The sandbox is really applied by each manager, not only accepted.
	t.Run("hardening applied in the running units", func(t *testing.T) {
		for _, c := range []struct {
			who string
			pid string
			rw  string
		}{
			{"user unit", h.props(&alice, "claude-auth-sync.service", "MainPID")["MainPID"], "/home/alice"},
			{"template unit", h.props(nil, "claude-auth-sync-agent@bob.service", "MainPID")["MainPID"], "/home"},
		} {
			pid := hostPID(t, h, c.pid)
			status, _ := os.ReadFile("/proc/" + pid + "/status")
			for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2"} {
				if !strings.Contains(string(status), want) {
					t.Errorf("%s: /proc/%s/status lacks %q", c.who, pid, want)
				}
			}
			// LimitCORE=0: a crash leaves no core holding the login.
			limits, _ := os.ReadFile("/proc/" + pid + "/limits")
			if !regexp.MustCompile(`(?m)^Max core file size\s+0\s+0\s`).Match(limits) {
				t.Errorf("%s: core dumps not off:\n%s", c.who, limits)
			}
			mounts, _ := os.ReadFile("/proc/" + pid + "/mountinfo")
			var rootRO, homeRW bool
			for _, l := range strings.Split(string(mounts), "\n") {
				f := strings.Fields(l)
				if len(f) < 6 {
					continue
				}
				opts := "," + f[5] + ","
				switch f[4] {
				case "/usr":
					rootRO = rootRO || strings.Contains(opts, ",ro,")
				case "/":
					rootRO = rootRO || strings.Contains(opts, ",ro,")
				case c.rw:
					homeRW = strings.Contains(opts, ",rw,")
				}
			}
			if !rootRO || !homeRW {
				t.Errorf("%s: read-only system %v, writable %s %v (ProtectSystem=strict, ReadWritePaths=)", c.who, rootRO, c.rw, homeRW)
			}
		}
	})

	// 1 again: an upgrade while agents run leaves every agent on the new binary.
	t.Run("upgrade restarts running agents", func(t *testing.T) {
		props := []string{"MainPID", "ActiveState", "ActiveExitTimestampMonotonic", "ActiveEnterTimestampMonotonic"}
		beforeA := h.props(&alice, "claude-auth-sync.service", props...)
		beforeB := h.props(nil, "claude-auth-sync-agent@bob.service", props...)
		h.install(newDeb)
		for _, c := range []struct {
			u      sdUser
			before map[string]string
			after  func() map[string]string
		}{
			{alice, beforeA, func() map[string]string { return h.props(&alice, "claude-auth-sync.service", props...) }},
			{bob, beforeB, func() map[string]string { return h.props(nil, "claude-auth-sync-agent@bob.service", props...) }},
		} {
			var after map[string]string
			eventually(t, 60*time.Second, c.u.name+"'s agent restarted", func() bool {
				after = c.after()
				return after["ActiveState"] == "active" && after["MainPID"] != c.before["MainPID"] && after["MainPID"] != "0"
			})
			exe, err := os.Readlink(fmt.Sprintf("/proc/%s/exe", hostPID(t, h, after["MainPID"])))
			if err != nil || exe != "/usr/bin/claude-auth-sync" {
				t.Errorf("%s's agent runs %q (%v); want /usr/bin/claude-auth-sync, not a deleted file", c.u.name, exe, err)
			}
			eventually(t, 30*time.Second, c.u.name+"'s agent.json says "+newVersion, func() bool {
				b, _ := os.ReadFile(filepath.Join(c.u.stateDir(), "agent.json"))
				return strings.Contains(string(b), `"version":"`+newVersion+`"`) || strings.Contains(string(b), `"version": "`+newVersion+`"`)
			})
			t.Logf("SYSTEMD-REPORT upgrade: %s's agent was not running for %s (stop began -> new READY)", c.u.name, monoGap(after["ActiveExitTimestampMonotonic"], after["ActiveEnterTimestampMonotonic"]))
			lag := h.rotateAndWait(c.u)
			t.Logf("SYSTEMD-REPORT %s: after the upgrade, rotation in Vault %s after the rename", c.u.name, lag.Round(time.Millisecond))
		}
	})

	// 5. The watchdog: a main loop that stops is killed and restarted.
	t.Run("watchdog restarts a stuck agent", func(t *testing.T) {
		h.writeFile("/etc/systemd/system/claude-auth-sync-agent@bob.service.d/watchdog.conf", "[Service]\nWatchdogSec=3s\nTimeoutAbortSec=3s\n", 0o644)
		h.sh("systemctl daemon-reload && systemctl restart claude-auth-sync-agent@bob.service")
		p := h.props(nil, "claude-auth-sync-agent@bob.service", "MainPID", "NRestarts", "WatchdogUSec")
		if p["WatchdogUSec"] != "3s" {
			t.Fatalf("drop-in not applied: %v", p)
		}
		h.sh("kill -STOP " + p["MainPID"])
		var after map[string]string
		eventually(t, 90*time.Second, "systemd restarts the stopped agent", func() bool {
			after = h.props(nil, "claude-auth-sync-agent@bob.service", "MainPID", "NRestarts", "ActiveState")
			return after["ActiveState"] == "active" && after["MainPID"] != p["MainPID"] && after["MainPID"] != "0"
		})
		if after["NRestarts"] == p["NRestarts"] {
			t.Errorf("NRestarts %s -> %s; want a restart counted", p["NRestarts"], after["NRestarts"])
		}
		if log := h.sh("journalctl --no-pager -u claude-auth-sync-agent@bob.service -o cat"); !strings.Contains(log, "Watchdog timeout") {
			t.Errorf("no watchdog timeout in bob's unit journal:\n%s", log)
		}
		if n := h.journalCount(`^user=bob WARN the agent stopped answering systemd's watchdog`); n != 1 {
			t.Errorf("%d watchdog WARN lines for bob; want 1", n)
		}
		dump := filepath.Join(bob.stateDir(), "agent-abort.txt")
		if fi, err := os.Stat(dump); err != nil || fi.Mode().Perm() != 0o600 || fi.Sys().(*syscall.Stat_t).Uid != uint32(bob.uid) {
			t.Errorf("the goroutine dump: %v %v; want bob's, 0600", fi, err)
		}
		lag := h.rotateAndWait(bob)
		t.Logf("SYSTEMD-REPORT watchdog: restarted agent backs up (%s)", lag.Round(time.Millisecond))
		h.sh("rm /etc/systemd/system/claude-auth-sync-agent@bob.service.d/watchdog.conf && systemctl daemon-reload")
	})

	// 5. Errors that a restart cannot mend are not restarted every 10 s.
	t.Run("configuration error is not restarted", func(t *testing.T) {
		erin := h.addUser("erin")
		h.writeFile("/etc/systemd/system/claude-auth-sync-agent@erin.service.d/bad.conf", "[Service]\nEnvironment=CLAUDE_AUTH_STORE=bogus\n", 0o644)
		h.sh("systemctl daemon-reload")
		if out, err := h.try("systemctl start claude-auth-sync-agent@erin.service"); err == nil {
			t.Fatalf("a unit with a configuration error started: %s", out)
		}
		p := h.props(nil, "claude-auth-sync-agent@erin.service", "ActiveState", "SubState", "Result", "ExecMainStatus", "NRestarts")
		if p["ActiveState"] != "failed" || p["SubState"] != "failed" || p["ExecMainStatus"] != "78" || p["NRestarts"] != "0" {
			t.Errorf("after a configuration error: %v; want failed, status 78, no restart (an auto-restart shows as activating/auto-restart)", p)
		}
		if n := h.journalCount(`^user=erin FAIL .*CLAUDE_AUTH_STORE`); n != 1 {
			t.Errorf("%d FAIL lines for erin's configuration error; want 1", n)
		}
		_ = erin
	})

	t.Run("second agent for a user is not restarted", func(t *testing.T) {
		if out, err := h.try("systemctl start claude-auth-sync-agent@alice.service"); err == nil {
			t.Fatalf("a second agent for alice started: %s", out)
		}
		p := h.props(nil, "claude-auth-sync-agent@alice.service", "ActiveState", "SubState", "ExecMainStatus", "NRestarts")
		if p["ActiveState"] != "failed" || p["ExecMainStatus"] != "4" || p["NRestarts"] != "0" {
			t.Errorf("second agent: %v; want failed, status 4, no restart", p)
		}
		if n := h.journalCount(`^user=alice WARN another claude-auth-sync agent is already running`); n != 1 {
			t.Errorf("%d WARN lines for the second agent; want 1", n)
		}
		if a := h.props(&alice, "claude-auth-sync.service", "ActiveState"); a["ActiveState"] != "active" {
			t.Errorf("alice's own agent: %v", a)
		}
		h.sh("systemctl reset-failed 'claude-auth-sync-agent@*'")
	})

	// 7. The real Claude CLI runs the check inside the hardened template unit.
	t.Run("real claude CLI inside the hardened unit", func(t *testing.T) {
		carol := h.addUser("carol")
		h.vaultToken(carol)
		h.login(carol)
		h.useRealClaude(carol, "/etc/systemd/system/claude-auth-sync-agent@carol.service.d/real-claude.conf")
		before := h.fake.Counters()
		h.sh("systemctl daemon-reload && systemctl start claude-auth-sync-agent@carol.service")
		eventually(t, 120*time.Second, "carol's check with the real CLI", func() bool {
			return h.journalCount(`^user=carol (OK inference check passed|WARN|FAIL)`) >= 1
		})
		if n := h.journalCount(`^user=carol OK inference check passed`); n != 1 {
			out, _ := h.try("journalctl --no-pager -u claude-auth-sync-agent@carol.service -o cat")
			t.Fatalf("the real CLI's check in the hardened unit did not pass:\n%s", out)
		}
		after := h.fake.Counters()
		if after.Messages <= before.Messages {
			t.Errorf("the fake saw no inference request (%d -> %d)", before.Messages, after.Messages)
		}
		st := h.sh("runuser -u carol -- env CLAUDE_AUTH_CLAUDE_BIN=/opt/claude-code/claude claude-auth-sync status")
		if !strings.Contains(st, "2.1.332") {
			t.Errorf("status does not name the real CLI's version:\n%s", st)
		}
		// alice's user unit ran the same CLI for its checks.
		if n := h.journalCount(`^user=alice OK inference check passed`); n < 2 {
			t.Errorf("alice's checks with the real CLI in the user unit: %d passed", n)
		}
	})

	// 6. The real journal.
	t.Run("journal", func(t *testing.T) {
		entries, raw := h.journal()
		units := map[string]int{}
		for _, e := range entries {
			msg := e.str("MESSAGE")
			if !regexp.MustCompile(`^user=[a-z]+ `).MatchString(msg) {
				t.Errorf("a journal line without its user: %q (unit %s%s)", msg, e.str("_SYSTEMD_UNIT"), e.str("_SYSTEMD_USER_UNIT"))
			}
			if u := e.str("_SYSTEMD_USER_UNIT"); u != "" {
				units["user:"+u]++
			} else {
				units[e.str("_SYSTEMD_UNIT")]++
			}
		}
		for _, want := range []string{"user:claude-auth-sync.service", "claude-auth-sync-agent@bob.service", "claude-auth-sync-agent@erin.service"} {
			if units[want] == 0 {
				t.Errorf("no journal lines from %s (have %v)", want, units)
			}
		}
		for _, re := range []string{`(?m)^user=alice (OK|WARN|FAIL) `, `(?m)^user=bob (OK|WARN|FAIL) `} {
			if h.journalCount(strings.TrimPrefix(re, "(?m)")) == 0 {
				t.Errorf("no %s lines", re)
			}
		}
		// The shipped Loki rule, read from the package's source, run by the
		// strict evaluator (logql_eval_test.go) on the real entries: it must
		// select erin's FAIL from her agent unit as erin's, and no OK line.
		rule, relabel := shippedLokiRule(t), runbookRelabel(t)
		var fails, oks int
		for _, e := range entries {
			msg := e.str("MESSAGE")
			g, err := rule.selects(e, relabel)
			if err != nil {
				t.Fatalf("the Loki rule on %q: %v", msg, err)
			}
			switch {
			case strings.HasPrefix(msg, "user=erin FAIL "):
				fails++
				if g["user"] != "erin" {
					t.Errorf("the Loki rule selects the FAIL line %q as %v; want erin", msg, g)
				}
			case regexp.MustCompile(`^user=\S+ OK `).MatchString(msg):
				oks++
				if g != nil {
					t.Errorf("the Loki rule matches an OK line %q", msg)
				}
			}
		}
		if fails == 0 || oks == 0 {
			t.Errorf("journal has %d FAIL and %d OK lines to try the rule on", fails, oks)
		}
		all := h.sh("journalctl --no-pager -o json")
		if leaked := findSecrets([]string{raw, all}, append(h.fake.Issued(), h.secrets...)); len(leaked) > 0 {
			t.Errorf("%d secrets in journalctl -o json (every entry, every field)", len(leaked))
		}
	})

	// 2/3. stop ends with Result=success, a login Vault could not take kept.
	t.Run("stop keeps a pending login", func(t *testing.T) {
		h.vault.failEvery.Store(1) // every Vault request now answers 500
		for _, c := range []struct {
			u    sdUser
			stop func()
			show func() map[string]string
		}{
			{alice, func() { h.mustAsUser(alice, "systemctl --user stop claude-auth-sync.service") },
				func() map[string]string { return h.props(&alice, "claude-auth-sync.service", "ActiveState", "Result") }},
			{bob, func() { h.sh("systemctl stop claude-auth-sync-agent@bob.service") },
				func() map[string]string {
					return h.props(nil, "claude-auth-sync-agent@bob.service", "ActiveState", "Result")
				}},
		} {
			l := h.fake.Issue()
			h.writeLogin(c.u, l)
			pending := filepath.Join(c.u.stateDir(), "pending-backup.json")
			eventually(t, 30*time.Second, c.u.name+"'s pending backup", func() bool {
				b, _ := os.ReadFile(pending)
				return strings.Contains(string(b), l.RefreshToken)
			})
			c.stop()
			if p := c.show(); p["ActiveState"] != "inactive" || p["Result"] != "success" {
				t.Errorf("%s after stop: %v; want inactive, success", c.u.name, p)
			}
			b, _ := os.ReadFile(pending)
			if !strings.Contains(string(b), l.RefreshToken) {
				t.Errorf("%s's pending login was not kept across the stop", c.u.name)
			}
			if fi, err := os.Stat(pending); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s's pending file: %v %v", c.u.name, fi, err)
			}
		}
		h.vault.failEvery.Store(0)
		h.mustAsUser(alice, "systemctl --user start claude-auth-sync.service")
		h.sh("systemctl start claude-auth-sync-agent@bob.service")
		for _, u := range []sdUser{alice, bob} {
			b, _ := os.ReadFile(u.creds())
			eventually(t, 30*time.Second, u.name+"'s kept login reaches Vault after the start", func() bool {
				rt, _ := vaultRefreshToken(t, u.name)
				return rt != "" && strings.Contains(string(b), rt)
			})
		}
	})

	// 1. remove stops every agent; purge leaves homes and Vault alone.
	t.Run("remove and purge", func(t *testing.T) {
		_, verA := vaultRefreshToken(t, "alice")
		_, verB := vaultRefreshToken(t, "bob")
		h.sh("DEBIAN_FRONTEND=noninteractive dpkg -r claude-auth-sync")
		if ps, _ := h.try("pgrep -a claude-auth"); strings.TrimSpace(ps) != "" {
			t.Errorf("agents still run after dpkg -r: %s", ps)
		}
		if p := h.props(nil, "claude-auth-sync-agent@bob.service", "ActiveState"); p["ActiveState"] == "active" {
			t.Errorf("bob's agent after remove: %v", p)
		}
		h.sh("DEBIAN_FRONTEND=noninteractive dpkg -P claude-auth-sync")
		for _, u := range []sdUser{alice, bob} {
			for _, f := range []string{u.creds(), filepath.Join(u.hostHome, ".config", "claude-auth-sync", "vault-token"), filepath.Join(u.stateDir(), "sync.log")} {
				if _, err := os.Stat(f); err != nil {
					t.Errorf("purge removed %s: %v", f, err)
				}
			}
		}
		if _, v := vaultRefreshToken(t, "alice"); v != verA {
			t.Errorf("alice's Vault document v%d -> v%d across remove and purge", verA, v)
		}
		if _, v := vaultRefreshToken(t, "bob"); v != verB {
			t.Errorf("bob's Vault document v%d -> v%d across remove and purge", verB, v)
		}
		if _, err := os.Stat(filepath.Join(h.c.Root, "usr/bin/claude-auth-sync")); err == nil {
			t.Errorf("the binary is still there after purge")
		}
	})
}

// hostPID maps a PID inside the container to the host's, through the
// NSpid line of the host's /proc (the container has its own PID namespace).
func hostPID(t *testing.T, h *sdHost, inner string) string {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == "NSpid:" && f[len(f)-1] == inner {
				if ns, _ := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "pid")); ns == pidNS(h) {
					return e.Name()
				}
			}
		}
	}
	t.Fatalf("no host pid for container pid %s", inner)
	return ""
}

func pidNS(h *sdHost) string {
	ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", h.c.PID1()))
	return ns
}

// 4. provision as root with the real systemctl, and the timers: a roster with
// a normal, a parked, a claude_auth: false and (later) a removed user.
func TestSystemdProvisionAndTimers(t *testing.T) {
	_, newDeb := debs(t)
	h := bootHost(t, "cas-provision")
	h.install(newDeb)
	h.configure(vsrv.Addr)
	pa, pb, pc, pd := h.addUser("pnormal"), h.addUser("pparked"), h.addUser("poff"), h.addUser("pgone")
	// A directory account (LDAP/SSSD on real workstations): only NSS knows
	// it, through libnss-extrausers; /etc/passwd does not.
	h.sh(`sed -i -E 's/^(passwd|group|shadow):(.*)$/\1:\2 extrausers/' /etc/nsswitch.conf
mkdir -p /var/lib/extrausers /home/dirsvc
echo 'dirsvc:x:5001:5001:Directory user:/home/dirsvc:/bin/bash' > /var/lib/extrausers/passwd
echo 'dirsvc:x:5001:' > /var/lib/extrausers/group
echo 'dirsvc:*:19000:0:99999:7:::' > /var/lib/extrausers/shadow
chmod 0640 /var/lib/extrausers/shadow
chown 5001:5001 /home/dirsvc && chmod 0750 /home/dirsvc`)
	if out, _ := h.try("grep -c '^dirsvc:' /etc/passwd"); strings.TrimSpace(out) != "0" {
		t.Fatalf("dirsvc is in /etc/passwd: the test proves nothing")
	}
	if out := h.sh("getent passwd dirsvc"); !strings.HasPrefix(out, "dirsvc:x:5001:5001:") {
		t.Fatalf("NSS does not know dirsvc: %q", out)
	}
	pe := sdUser{name: "dirsvc", uid: 5001, gid: 5001, home: "/home/dirsvc", hostHome: filepath.Join(h.c.Root, "home", "dirsvc")}
	// Agents an earlier roster left enabled for the users now parked or off.
	h.sh("systemctl enable --now claude-auth-sync-agent@pparked.service claude-auth-sync-agent@poff.service || true")
	for _, u := range []sdUser{pa, pd, pe} {
		h.login(u)
	}
	roster := "users:\n  pnormal: {}\n  pparked:\n    parked: true\n  poff:\n    claude_auth: false\n  pgone:\n    tier: heavy\n  dirsvc: {}\n"
	h.writeFile("/etc/claude-auth-sync/roster.yaml", roster, 0o644)
	// The admin token in a root-only file, never in argv or the environment
	// of a command line.
	h.writeFile("/root/admin-token", vsrv.RootTokenValue()+"\n", 0o600)
	provision := func() string {
		out, err := h.c.Command(context.Background(), nil,
			"claude-auth-sync", "provision", "--roster", "/etc/claude-auth-sync/roster.yaml", "--admin-token-file", "/root/admin-token").CombinedOutput()
		if err != nil {
			t.Fatalf("provision: %v\n%s", err, out)
		}
		if leaked := findSecrets([]string{string(out)}, []string{vsrv.RootTokenValue()}); len(leaked) > 0 {
			t.Errorf("the admin token in provision's output")
		}
		return string(out)
	}
	state := func(u sdUser) string {
		out, _ := h.try("systemctl is-enabled claude-auth-sync-agent@" + u.name + ".service; systemctl is-active claude-auth-sync-agent@" + u.name + ".service")
		return strings.Join(strings.Fields(out), " ")
	}
	out := provision()
	t.Logf("provision:\n%s", out)
	want := map[string]string{"pnormal": "enabled active", "pgone": "enabled active", "pparked": "disabled inactive", "poff": "disabled inactive", "dirsvc": "enabled active"}
	for _, u := range []sdUser{pa, pb, pc, pd, pe} {
		if got := state(u); got != want[u.name] {
			t.Errorf("%s after provision: %s; want %s", u.name, got, want[u.name])
		}
	}
	for _, u := range []sdUser{pa, pd, pe} {
		tok := filepath.Join(u.hostHome, ".config", "claude-auth-sync", "vault-token")
		b, err := os.ReadFile(tok)
		if err != nil {
			t.Fatalf("%s's token: %v", u.name, err)
		}
		h.mu.Lock()
		h.secrets = append(h.secrets, strings.TrimSpace(string(b)))
		h.mu.Unlock()
		eventually(t, 60*time.Second, u.name+"'s provisioned agent backs the login up", func() bool {
			rt, _ := vaultRefreshToken(t, u.name)
			b, _ := os.ReadFile(u.creds())
			return rt != "" && strings.Contains(string(b), rt)
		})
	}
	// The directory account's own commands know who they are without USER or
	// HOME (a cron job's bare environment): through NSS.
	if out := h.sh("setpriv --reuid=5001 --regid=5001 --clear-groups env -i PATH=/usr/bin:/bin claude-auth-sync status"); !strings.Contains(out, "/home/dirsvc/.claude/.credentials.json") {
		t.Errorf("status as dirsvc with a bare environment:\n%s", out)
	}
	typoSession(t, h, pa, pd)
	_, gonever := vaultRefreshToken(t, "pgone")

	h.writeFile("/etc/claude-auth-sync/roster.yaml", "users:\n  pnormal: {}\n  pparked:\n    parked: true\n  poff:\n    claude_auth: false\n  dirsvc: {}\n", 0o644)
	provision()
	if got := state(pd); got != "disabled inactive" {
		t.Errorf("a user removed from the roster: %s; want disabled inactive", got)
	}
	if got := state(pa); got != "enabled active" {
		t.Errorf("pnormal after the second run: %s", got)
	}
	if _, v := vaultRefreshToken(t, "pgone"); v != gonever {
		t.Errorf("the removed user's Vault document changed: v%d -> v%d", gonever, v)
	}
	if _, err := os.Stat(filepath.Join(pd.hostHome, ".config", "claude-auth-sync", "vault-token")); err != nil {
		t.Errorf("the removed user's token file: %v", err)
	}

	// The timers are listed, and their services run to OK.
	h.sh("systemctl enable --now claude-auth-sync-provision.timer claude-auth-sync@pgone.timer")
	timers := h.sh("systemctl list-timers --all --no-legend --no-pager")
	for _, tm := range []string{"claude-auth-sync-provision.timer", "claude-auth-sync@pgone.timer"} {
		if !strings.Contains(timers, tm) {
			t.Errorf("list-timers lacks %s:\n%s", tm, timers)
		}
	}
	start := time.Now()
	h.sh("systemctl start claude-auth-sync-provision.service")
	p := h.props(nil, "claude-auth-sync-provision.service", "Result", "ExecMainStatus")
	if p["Result"] != "success" || p["ExecMainStatus"] != "0" {
		t.Errorf("provision service: %v\n%s", p, h.sh("journalctl --no-pager -u claude-auth-sync-provision.service -o cat"))
	}
	t.Logf("SYSTEMD-REPORT provision service ran in %s", time.Since(start).Round(time.Millisecond))
	// Every user is as the runs above left them: the hourly run (the shipped
	// unit has no admin token, so it reports) writes its summary and no line
	// per user.
	if log := h.sh("journalctl --no-pager -u claude-auth-sync-provision.service -o cat"); !regexp.MustCompile(`(?m)^provision: report-only; 4 users .*; 0 changed, 4 unchanged, 0 need an admin token, 0 failed$`).MatchString(log) ||
		regexp.MustCompile(`(?m)^user=`).MatchString(log) {
		t.Errorf("the provision service's lines: want its summary only:\n%s", log)
	}
	// pgone's agent is disabled: the pass is this user's only job now.
	h.sh("systemctl start claude-auth-sync@pgone.service")
	p = h.props(nil, "claude-auth-sync@pgone.service", "Result", "ExecMainStatus")
	log := h.sh("journalctl --no-pager -u claude-auth-sync@pgone.service -o cat")
	if p["Result"] != "success" || !regexp.MustCompile(`(?m)^user=pgone OK inference check passed`).MatchString(log) {
		t.Errorf("pass service: %v\n%s", p, log)
	}
	if leaked := findSecrets([]string{h.sh("journalctl --no-pager -o json")}, append(h.fake.Issued(), append(h.secrets, vsrv.RootTokenValue())...)); len(leaked) > 0 {
		t.Errorf("%d secrets in the journal", len(leaked))
	}

	purgeLeavesNothing(t, h, []sdUser{pa, pe})
}

// typoSession: an admin and two users mistype commands and name the wrong
// user, as people do; none of it is a FAIL line in the journal (which the
// alert reads), whatever the command's exit status says (issue 23).
func typoSession(t *testing.T, h *sdHost, u1, u2 sdUser) {
	t.Helper()
	cursor := strings.TrimSpace(h.sh("journalctl --no-pager -n 0 --show-cursor | sed -n 's/^-- cursor: //p'"))
	if cursor == "" {
		t.Fatal("no journal cursor")
	}
	type typo struct {
		who  *sdUser // nil: root
		cmd  string
		want int // the exit status; -1: not 0, -2: any
	}
	typos := []typo{
		{nil, "claude-auth-sync status --user nosuch", 78},
		{nil, "claude-auth-sync sync --user nosuch", 78},
		{nil, "claude-auth-sync restore --user nosuch", 78},
		{nil, "claude-auth-sync stauts", 2},
		{nil, "claude-auth-sync sync --bogus", 2},
		{nil, "claude-auth-sync provision --roster /etc/claude-auth-sync/nosuch.yaml", -1},
		{nil, "systemctl start claude-auth-sync@nosuch.service", -1},
		{nil, "VAULT_ADDR=https://127.0.0.1:9 claude-auth-sync status --user " + u1.name, -2},
		{&u1, "claude-auth-sync status --user " + u2.name, 78},
		{&u1, "claude-auth-sync sync --user " + u2.name, 78},
		{&u1, "claude-auth-sync run --user " + u2.name, 78},
		{&u1, "claude-auth-sync restore --user " + u2.name, 78},
		{&u1, "claude-auth-sync sync --bogus", 2},
		{&u1, "VAULT_ADDR=vault.example.internal:8200 claude-auth-sync status", 78},
		{&u1, "VAULT_ADDR=https://127.0.0.1:9 claude-auth-sync status", -2},
		{&u1, "VAULT_ADDR=https://127.0.0.1:9 claude-auth-sync sync", -2}, // the agent's pass, or WARN 75
		{&u1, "claude-auth-sync fleet", 78},
		{&u1, "claude-auth-sync provision --roster /etc/claude-auth-sync/roster.yaml", -1},
		{&u2, "claude-auth-sync status --user " + u1.name, 78},
		// exec is a launcher: its own settings failing, it still runs the
		// command as the caller (never as the named user), and says why.
		{&u2, "claude-auth-sync exec --user " + u1.name + " -- true", -2},
		{&u2, "claude-auth-sync refresh --bogus", 2},
		{&u2, "claude-auth-sync statsu", 2},
		{&u2, "CLAUDE_AUTH_USER=" + u1.name + " claude-auth-sync status", 78},
	}
	for _, ty := range typos {
		script := ty.cmd + "; echo \"rc=$?\""
		var out string
		who := "root"
		if ty.who != nil {
			who = ty.who.name
			out, _ = h.asUser(*ty.who, "export HOME="+ty.who.home+"; "+script)
		} else {
			out, _ = h.try(script)
		}
		m := regexp.MustCompile(`rc=(\d+)\s*$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("%s: %s: no exit status:\n%s", who, ty.cmd, out)
		}
		rc, _ := strconv.Atoi(m[1])
		if (ty.want >= 0 && rc != ty.want) || (ty.want == -1 && rc == 0) {
			t.Errorf("%s: %s exited %d; want %d (-1: not 0):\n%s", who, ty.cmd, rc, ty.want, out)
		}
	}
	fails := regexp.MustCompile(`(?m)(^|\s)FAIL(\s|$)`)
	journal := h.sh("journalctl --no-pager -o short-iso --after-cursor='" + cursor + "'")
	var failLines []string
	for _, l := range strings.Split(journal, "\n") {
		if fails.MatchString(l) {
			failLines = append(failLines, l)
		}
	}
	t.Logf("SYSTEMD-REPORT typo session: %d commands (root, %s, %s), %d FAIL lines in the journal", len(typos), u1.name, u2.name, len(failLines))
	if len(failLines) != 0 {
		t.Errorf("the typo session wrote %d FAIL lines; want 0:\n%s", len(failLines), strings.Join(failLines, "\n"))
	}
}

// purgeLeavesNothing: dpkg -P after a provisioned life (agents, timers, the
// provision timer, the publisher, a global enable of the user unit, a fleet
// reader) leaves no enablement link, no fleet-reader token, no published
// metrics, and prints the command that revokes the reader token; users' homes
// and Vault stay (issue 23).
func purgeLeavesNothing(t *testing.T, h *sdHost, users []sdUser) {
	t.Helper()
	const reader = "/etc/claude-auth-sync/fleet-reader-token"
	out, err := h.c.Command(context.Background(), nil, "claude-auth-sync", "provision", "--roster", "/etc/claude-auth-sync/roster.yaml",
		"--admin-token-file", "/root/admin-token", "--fleet-reader-token", reader).CombinedOutput()
	if err != nil {
		t.Fatalf("provision --fleet-reader-token: %v\n%s", err, out)
	}
	tokB, err := os.ReadFile(filepath.Join(h.c.Root, reader))
	if err != nil {
		t.Fatalf("no fleet-reader token after provision: %v\n%s", err, out)
	}
	tok := strings.TrimSpace(string(tokB))
	h.mu.Lock()
	h.secrets = append(h.secrets, tok)
	h.mu.Unlock()
	ctx := context.Background()
	look, err := vsrv.Root().Auth().Token().LookupWithContext(ctx, tok)
	if err != nil {
		t.Fatalf("look the reader token up: %v", err)
	}
	accessor, _ := look.Data["accessor"].(string)
	rec, _ := os.ReadFile(filepath.Join(h.c.Root, "var/lib/claude-auth-sync/fleet-reader"))
	if want := "token_file=" + reader + "\naccessor=" + accessor + "\n"; accessor == "" || string(rec) != want {
		t.Errorf("provision's record of the reader token: %q; want %q", rec, want)
	}
	// What else an admin enables: the publisher, the user unit for everyone;
	// and what the publisher leaves for the node exporter.
	h.sh("systemctl enable claude-auth-sync-metrics.service && systemctl --global enable claude-auth-sync.service")
	h.sh("mkdir -p /var/lib/prometheus/node-exporter && echo '# claude-auth-sync' > /var/lib/prometheus/node-exporter/claude_auth_sync.prom")
	links := h.sh("find /etc/systemd -type l -name 'claude-auth-sync*' | sort")
	if n := len(strings.Fields(links)); n < 6 {
		t.Fatalf("only %d enablement links before the purge; the test proves little:\n%s", n, links)
	}
	h.sh("DEBIAN_FRONTEND=noninteractive dpkg -r claude-auth-sync")
	dangling := h.sh("find /etc/systemd -xtype l")
	t.Logf("SYSTEMD-REPORT purge: %d enablement links before; %d dangling after dpkg -r (kept for a reinstall)", len(strings.Fields(links)), len(strings.Fields(dangling)))
	if _, err := os.Stat(filepath.Join(h.c.Root, "var/lib/prometheus/node-exporter/claude_auth_sync.prom")); err == nil {
		t.Errorf("dpkg -r left the published metrics for the node exporter")
	}
	purge, err := h.try("DEBIAN_FRONTEND=noninteractive dpkg -P claude-auth-sync")
	if err != nil {
		t.Fatalf("dpkg -P: %v\n%s", err, purge)
	}
	t.Logf("dpkg -P:\n%s", purge)
	if d := strings.TrimSpace(h.sh("find /etc/systemd -xtype l")); d != "" {
		t.Errorf("dangling links after purge:\n%s", d)
	}
	if l := strings.TrimSpace(h.sh("find /etc/systemd -name 'claude-auth-sync*' -type l")); l != "" {
		t.Errorf("enablement links after purge:\n%s", l)
	}
	for _, f := range []string{reader, "var/lib/claude-auth-sync"} {
		if _, err := os.Lstat(filepath.Join(h.c.Root, f)); err == nil {
			t.Errorf("%s is still there after purge", f)
		}
	}
	cmd := "vault token revoke -accessor " + accessor
	if !strings.Contains(purge, cmd) {
		t.Fatalf("purge does not say how to revoke the reader token (%q):\n%s", cmd, purge)
	}
	if leaked := findSecrets([]string{purge}, []string{tok}); len(leaked) > 0 {
		t.Errorf("the reader token in dpkg's output")
	}
	// The command it printed is the one that revokes that token.
	if err := vsrv.Root().Auth().Token().RevokeAccessorWithContext(ctx, accessor); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	if _, err := vsrv.Root().Auth().Token().LookupWithContext(ctx, tok); err == nil {
		t.Errorf("the reader token is still valid after %s", cmd)
	}
	for _, u := range users {
		if _, err := os.Stat(filepath.Join(u.hostHome, ".config", "claude-auth-sync", "vault-token")); err != nil {
			t.Errorf("purge removed %s's token file: %v", u.name, err)
		}
	}
}
