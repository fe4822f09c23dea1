package e2e_test

// The reference runbook ("Workstation Claude authentication renewal",
// ../shared/spec/reference-runbook.md) typed word for word against the
// installed .deb under a real systemd and a real Vault: the migration from
// the reference's own units, then each section's commands for a user whose
// agent runs and for one without an agent, with what the runbook promises
// checked after each.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
	"github.com/claude-auth-sync/claude-auth-sync/e2e/vaultserver"
)

// The reference install as its runbook describes it: a oneshot
// claude-auth-sync@.service running the bash tool as the user, and a
// six-hourly claude-auth-sync@.timer, both in /etc/systemd/system. The tool
// here only records that it ran.
const (
	referenceTool = `#!/bin/bash
echo "$(date +%s) ran" >> "$HOME/.reference-runs"
echo "user=$(id -un) OK reference tool pass"
`
	referenceService = `[Unit]
Description=Workstation Claude authentication renewal for %i
After=network-online.target

[Service]
Type=oneshot
User=%i
ExecStart=/usr/local/bin/claude-auth-sync-reference
SyslogIdentifier=claude-auth-sync
`
	referenceTimer = `[Unit]
Description=Workstation Claude authentication renewal for %i every six hours

[Timer]
OnBootSec=5min
OnUnitActiveSec=6h

[Install]
WantedBy=timers.target
`
)

// The migration, as docs/runbook.md ("Migrating from the reference install")
// gives it, run as root.
const migrationSteps = `systemctl stop 'claude-auth-sync@*.timer' 'claude-auth-sync@*.service'
mkdir -p /root/claude-auth-sync-reference
mv /etc/systemd/system/claude-auth-sync@.service /etc/systemd/system/claude-auth-sync@.timer /root/claude-auth-sync-reference/
find /etc/systemd/system -name 'claude-auth-sync@*' -type l -delete
systemctl daemon-reload
export VAULT_TOKEN="$(cat /root/.vault-token)"
claude-auth-sync provision --roster /etc/claude-auth-sync/roster.yaml
`

func TestRunbookWordForWord(t *testing.T) {
	_, newDeb := debs(t)
	h := bootHost(t, "cas-runbook")
	// The timers' first run is five minutes after boot; this test does not
	// want one in the middle of its own passes (it starts one on purpose).
	h.writeFile("/etc/systemd/system/claude-auth-sync@.timer.d/e2e.conf", "[Timer]\nOnBootSec=\nOnBootSec=2h\n", 0o644)

	ref := h.addUser("ref")
	h.vaultToken(ref)
	refLogin := h.login(ref)

	t.Run("the reference install", func(t *testing.T) {
		h.writeFile("/usr/local/bin/claude-auth-sync-reference", referenceTool, 0o755)
		h.writeFile("/etc/systemd/system/claude-auth-sync@.service", referenceService, 0o644)
		h.writeFile("/etc/systemd/system/claude-auth-sync@.timer", referenceTimer, 0o644)
		h.sh("systemctl daemon-reload && systemctl enable --now claude-auth-sync@ref.timer && systemctl start claude-auth-sync@ref.service")
		h.install(newDeb)
		h.configure(vsrv.Addr)
		// Installed beside it, the package changes nothing: /etc wins.
		h.sh("systemctl start claude-auth-sync@ref.service")
		if n := refRuns(h, ref); n != 2 {
			t.Errorf("the reference tool ran %d times; want 2 (its units still win after dpkg -i)", n)
		}
		if ps, _ := h.try("pgrep -a -f 'claude-auth-sync run'"); strings.TrimSpace(ps) != "" {
			t.Errorf("an agent runs after dpkg -i: %s", ps)
		}
	})

	ana, ben := h.addUser("ana"), h.addUser("ben")
	h.writeFile("/etc/claude-auth-sync/roster.yaml", "users:\n  ref: {}\n  ana: {}\n  ben: {}\n", 0o644)
	h.writeFile("/root/.vault-token", vsrv.RootTokenValue()+"\n", 0o600)

	// Normal lifecycle 1-2 (the roster, the root provisioner with the admin
	// token) are the migration's last step.
	t.Run("migration from the reference units", func(t *testing.T) {
		out := h.sh(migrationSteps)
		if leaked := findSecrets([]string{out}, []string{vsrv.RootTokenValue()}); len(leaked) > 0 {
			t.Errorf("the admin token in provision's output")
		}
		for _, u := range []sdUser{ref, ana, ben} {
			h.collectToken(u)
			for _, unit := range []string{"claude-auth-sync-agent@" + u.name + ".service", "claude-auth-sync@" + u.name + ".timer"} {
				if st := strings.Fields(h.sh("systemctl is-enabled " + unit + "; systemctl is-active " + unit + " || true")); !slices.Equal(st, []string{"enabled", "active"}) {
					t.Errorf("%s after the migration: %v; want enabled active", unit, st)
				}
			}
		}
		// ref's login goes on without a new login: the agent backs up the
		// login the reference tool looked after, and a pass is ours now.
		eventually(t, 60*time.Second, "ref's login in Vault", func() bool {
			rt, _ := vaultRefreshToken(t, "ref")
			return rt == refLogin.RefreshToken
		})
		out = h.sh("systemctl start claude-auth-sync@ref.service; systemctl status claude-auth-sync@ref.service || true")
		if !strings.Contains(out, "user=ref OK inference check passed") || !strings.Contains(out, "(the agent's pass, pid ") {
			t.Errorf("systemctl status after the migration:\n%s", out)
		}
		if n := refRuns(h, ref); n != 2 {
			t.Errorf("the reference tool ran %d times; want 2 (never again after the migration)", n)
		}
		if n := agentsOf(h, ref); n != 1 {
			t.Errorf("%d agents run for ref; want 1", n)
		}
	})

	// ben has no agent: his passes are the unit's own.
	h.sh("systemctl disable --now claude-auth-sync-agent@ben.service")
	var times = map[string][]time.Duration{}
	for _, c := range []struct {
		u     sdUser
		agent bool
	}{{ana, true}, {ben, false}} {
		name := "without an agent"
		if c.agent {
			name = "with the agent running"
		}
		t.Run(name, func(t *testing.T) { times[name] = runbookStory(t, h, c.u, c.agent) })
	}

	t.Run("a timer's pass beside the agent runs no second check", func(t *testing.T) {
		before := h.fake.Counters()
		h.writeFile("/etc/systemd/system/claude-auth-sync@ana.timer.d/soon.conf", "[Timer]\nOnActiveSec=1s\nRandomizedDelaySec=0\n", 0o644)
		h.sh("systemctl daemon-reload && systemctl restart claude-auth-sync@ana.timer")
		eventually(t, 60*time.Second, "the timer's pass", func() bool {
			out, _ := h.try("journalctl --no-pager -u claude-auth-sync@ana.service -o cat")
			return strings.Contains(out, "no second inference check")
		})
		after := h.fake.Counters()
		if after.Messages != before.Messages {
			t.Errorf("a timer's pass while the agent's check is fresh ran %d inference calls; want none", after.Messages-before.Messages)
		}
		h.sh("rm -r /etc/systemd/system/claude-auth-sync@ana.timer.d && systemctl daemon-reload")
	})

	for name, ds := range times {
		slices.Sort(ds)
		t.Logf("RUNBOOK-REPORT systemctl start claude-auth-sync@<user>.service %s: median %s of %d (min %s, max %s)",
			name, ds[len(ds)/2].Round(time.Millisecond), len(ds), ds[0].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
	}
	if leaked := findSecrets([]string{h.sh("journalctl --no-pager -o json")}, append(h.fake.Issued(), append(h.secrets, vsrv.RootTokenValue())...)); len(leaked) > 0 {
		t.Errorf("%d secrets in the journal", len(leaked))
	}
}

// runbookStory types the runbook's sections for u and checks each promise;
// it returns 20 timings of `systemctl start claude-auth-sync@<u>.service`.
func runbookStory(t *testing.T, h *sdHost, u sdUser, agent bool) []time.Duration {
	unit := "claude-auth-sync@" + u.name + ".service"
	agentPID := func() string { return h.props(nil, "claude-auth-sync-agent@"+u.name+".service", "MainPID")["MainPID"] }
	// start is `systemctl start <unit>` and what `systemctl status <unit>`
	// then says.
	start := func() (error, string) {
		_, err := h.try("systemctl start " + unit)
		status, _ := h.try("systemctl status --no-pager -n 5 " + unit)
		return err, status
	}
	whose := func(t *testing.T, status string) {
		t.Helper()
		says := strings.Contains(status, "(the agent's pass, pid ")
		switch {
		case agent && !strings.Contains(status, "(the agent's pass, pid "+agentPID()+")"):
			t.Errorf("with the agent running, the pass is not the agent's (pid %s):\n%s", agentPID(), status)
		case !agent && says:
			t.Errorf("without an agent, the status names one:\n%s", status)
		}
		if agent && agentsOf(h, u) != 1 {
			t.Errorf("%d agents run for %s; want 1", agentsOf(h, u), u.name)
		}
	}

	// Normal lifecycle 3: the initial login (what `claude auth login --claudeai
	// --sso` leaves: a credentials file written by rename).
	l := h.login(u)

	t.Run("normal lifecycle 4: start the first sync", func(t *testing.T) {
		err, status := start()
		if err != nil || !strings.Contains(status, "user="+u.name+" OK inference check passed") {
			t.Fatalf("systemctl start %s: %v\n%s", unit, err, status)
		}
		whose(t, status)
		if rt, _ := vaultRefreshToken(t, u.name); rt != l.RefreshToken {
			t.Errorf("Vault does not hold the login after the start returned")
		}
		if log := h.sh("tail -n 3 " + u.home + "/.local/state/claude-auth-sync/sync.log"); !regexp.MustCompile(`(?m)^\S+ OK inference check passed`).MatchString(log) {
			t.Errorf("sync.log:\n%s", log)
		}
	})

	t.Run("recovery requiring a person", func(t *testing.T) {
		// The refresh token was spent elsewhere and the access token revoked:
		// both the file and Vault's copy are dead.
		if _, err := h.fake.Rotate(l.RefreshToken); err != nil {
			t.Fatal(err)
		}
		h.fake.Revoke(l.AccessToken)
		err, status := start()
		if err == nil || !strings.Contains(status, "user="+u.name+" FAIL") {
			t.Errorf("a dead login: systemctl start %v; want the unit failed with a FAIL line\n%s", err, status)
		}
		if p := h.props(nil, unit, "Result", "ExecMainStatus"); p["ExecMainStatus"] != "1" {
			t.Errorf("a dead login: %v; want exit status 1", p)
		}
		// claude auth login …, then rerun the service.
		l = h.login(u)
		err, status = start()
		if err != nil || !strings.Contains(status, "user="+u.name+" OK inference check passed") {
			t.Errorf("after a new login: systemctl start: %v\n%s", err, status)
		}
		whose(t, status)
		if rt, _ := vaultRefreshToken(t, u.name); rt != l.RefreshToken {
			t.Errorf("Vault does not hold the new login")
		}
	})

	t.Run("long-lived per-user token: enable, rotate, disable", func(t *testing.T) {
		path := "secret/workstation/claude-users/" + u.name
		vaultCLI(t, "", "kv", "patch", "-method=rw", path, "vaultwarden_password=kept-by-another-tool")
		envFile := u.hostHome + "/.config/claude-auth-sync/claude-oauth.env"
		for i := range 2 { // enable, then rotate
			tok := h.fake.IssueSetupToken(365 * 24 * time.Hour)
			vaultCLI(t, tok, "kv", "patch", "-method=rw", path, "setup_token=-")
			err, status := start()
			if err != nil || !strings.Contains(status, "setup-token mode") {
				t.Errorf("setup token %d: systemctl start: %v\n%s", i+1, err, status)
			}
			whose(t, status)
			b, err := os.ReadFile(envFile)
			fi, serr := os.Stat(envFile)
			if err != nil || serr != nil || string(b) != "CLAUDE_CODE_OAUTH_TOKEN="+tok+"\n" || fi.Mode().Perm() != 0o600 {
				t.Errorf("setup token %d: claude-oauth.env does not hold it (0600) when the start returned: %v %v", i+1, err, serr)
			}
			if agent {
				if st := h.mustAsUser(u, "claude-auth-sync status --json || true"); !strings.Contains(st, `"mode": "setup-token"`) && !strings.Contains(st, `"mode":"setup-token"`) {
					t.Errorf("the agent is not in setup-token mode:\n%s", fakeanthropic.Mask(st))
				}
			}
		}
		vaultCLI(t, "", "kv", "patch", "-method=rw", path, `setup_token=`)
		err, status := start()
		if err != nil {
			t.Errorf("disable: systemctl start: %v\n%s", err, status)
		}
		if _, err := os.Stat(envFile); !os.IsNotExist(err) {
			t.Errorf("claude-oauth.env is still there after setup_token=\"\" and a start: %v", err)
		}
		doc, err := rootKV().Get(context.Background(), "workstation/claude-users/"+u.name)
		if err != nil || doc.Data["vaultwarden_password"] != "kept-by-another-tool" || doc.Data["claude_ai_oauth_json"] == nil {
			t.Errorf("the document's sibling keys after the token's round trip: %v", err)
		}
		if b, _ := os.ReadFile(u.creds()); !strings.Contains(string(b), l.RefreshToken) {
			t.Errorf("the rotating login is not back in the credentials file")
		}
	})

	t.Run("verification", func(t *testing.T) {
		timers := h.sh("systemctl list-timers 'claude-auth-sync@*'")
		if !regexp.MustCompile(`claude-auth-sync@` + u.name + `\.timer\s+claude-auth-sync@` + u.name + `\.service`).MatchString(timers) {
			t.Errorf("list-timers does not list %s's timer:\n%s", u.name, timers)
		}
		if _, status := start(); !strings.Contains(status, "user="+u.name+" OK") {
			t.Errorf("systemctl status:\n%s", status)
		}
		if j := h.sh("journalctl -t claude-auth-sync --since today"); !strings.Contains(j, "user="+u.name+" OK") {
			t.Errorf("journalctl -t claude-auth-sync --since today has no OK line of %s", u.name)
		}
		md := vaultCLI(t, "", "kv", "metadata", "get", "secret/workstation/claude-users/"+u.name)
		if !strings.Contains(md, "current_version") {
			t.Errorf("vault kv metadata get:\n%s", md)
		}
	})

	var ds []time.Duration
	for range 20 {
		t0 := time.Now()
		if _, err := h.try("systemctl start " + unit); err != nil {
			t.Fatalf("systemctl start %s: %v", unit, err)
		}
		ds = append(ds, time.Since(t0))
	}
	return ds
}

// vaultCLI runs the real vault CLI as the admin (root token), the value of a
// `key=-` argument on stdin; it returns the output.
func vaultCLI(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	bin, err := vaultserver.Binary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "VAULT_ADDR="+vsrv.Addr, "VAULT_TOKEN="+vsrv.RootTokenValue())
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("vault %s: %v\n%s", strings.Join(args[:2], " "), err, fakeanthropic.Mask(string(out)))
	}
	return string(out)
}

// refRuns counts the reference tool's runs for u.
func refRuns(h *sdHost, u sdUser) int {
	b, _ := os.ReadFile(u.hostHome + "/.reference-runs")
	return strings.Count(string(b), " ran\n")
}

// agentsOf counts the agent processes running as u.
func agentsOf(h *sdHost, u sdUser) int {
	out, _ := h.try(fmt.Sprintf("pgrep -u %s -f -x '/usr/bin/claude-auth-sync run'", u.name))
	return len(strings.Fields(out))
}

// collectToken registers u's provisioned Vault token as a secret to look for.
func (h *sdHost) collectToken(u sdUser) {
	h.t.Helper()
	b, err := os.ReadFile(u.hostHome + "/.config/claude-auth-sync/vault-token")
	if err != nil {
		h.t.Fatalf("%s's token: %v", u.name, err)
	}
	h.mu.Lock()
	h.secrets = append(h.secrets, strings.TrimSpace(string(b)))
	h.mu.Unlock()
}
