package e2e_test

// The package's life cycle beyond one build: the upgrade from the build where
// claude-auth-sync@<user>.service was the agent, and the .rpm's install,
// upgrade and erase, each under a real systemd.

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// agentNamedBuild is the last commit whose package ran the agent as
// claude-auth-sync@<user>.service.
const agentNamedBuild = "3cce315"

// previousDeb builds the .deb of agentNamedBuild from this repository's history.
func previousDeb(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	root := repoRoot(t)
	arch := exec.Command("sh", "-c", "git -C '"+root+"' archive "+agentNamedBuild+" | tar -x -C '"+src+"'")
	if out, err := arch.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", agentNamedBuild, err, out)
	}
	cmd := exec.Command("make", "package", "VERSION=1.2.1-e2e")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make package of %s: %v\n%s", agentNamedBuild, err, out)
	}
	return filepath.Join(src, "dist", "claude-auth-sync_1.2.1.e2e_amd64.deb")
}

// Each test has users of its own: one Vault serves every test of the run, and
// a user's main document belongs to the first host that wrote it.
func TestSystemdUpgradeFromTheAgentNamedBuild(t *testing.T) {
	_, newDeb := debs(t)
	prev := previousDeb(t)
	h := bootHost(t, "cas-upgrade")
	h.install(prev)
	h.configure(vsrv.Addr)
	ugo, uma := h.addUser("ugo"), h.addUser("uma")
	for _, u := range []sdUser{ugo, uma} {
		h.vaultToken(u)
		h.login(u)
	}
	// ugo's agent as the previous provision left it (enabled), uma's
	// started by hand.
	h.sh("systemctl enable --now claude-auth-sync@ugo.service && systemctl start claude-auth-sync@uma.service")
	for _, u := range []sdUser{ugo, uma} {
		eventually(t, 60*time.Second, u.name+"'s old agent backs up", func() bool {
			rt, _ := vaultRefreshToken(t, u.name)
			return rt != ""
		})
	}

	h.install(newDeb)
	for _, c := range []struct {
		u    sdUser
		want map[string][]string
	}{
		{ugo, map[string][]string{"claude-auth-sync-agent@ugo.service": {"enabled", "active"}, "claude-auth-sync@ugo.timer": {"enabled", "active"}}},
		{uma, map[string][]string{"claude-auth-sync-agent@uma.service": {"disabled", "active"}, "claude-auth-sync@uma.timer": {"disabled", "inactive"}}},
	} {
		for unit, want := range c.want {
			if got := strings.Fields(h.sh("systemctl is-enabled " + unit + " || true; systemctl is-active " + unit + " || true")); !slices.Equal(got, want) {
				t.Errorf("%s after the upgrade: %v; want %v", unit, got, want)
			}
		}
		if p := h.props(nil, "claude-auth-sync@"+c.u.name+".service", "ActiveState"); p["ActiveState"] != "inactive" {
			t.Errorf("claude-auth-sync@%s.service (the pass now) is %s after the upgrade; want inactive", c.u.name, p["ActiveState"])
		}
		eventually(t, 30*time.Second, "one agent for "+c.u.name, func() bool { return agentsOf(h, c.u) == 1 })
		if out, err := h.try("systemctl start claude-auth-sync@" + c.u.name + ".service; journalctl --no-pager -u claude-auth-sync@" + c.u.name + ".service -o cat"); err != nil || !strings.Contains(out, "(the agent's pass, pid ") {
			t.Errorf("sync now after the upgrade: %v\n%s", err, out)
		}
	}
	if left := h.sh("ls /etc/systemd/system/multi-user.target.wants/ | grep claude-auth-sync@ || true"); strings.TrimSpace(left) != "" {
		t.Errorf("the old agent's enablement link is left: %s", left)
	}
}

// installRPM puts the host's rpm (and what it loads) into the container, as
// a distribution with rpm would have it.
func (h *sdHost) installRPM() {
	h.t.Helper()
	needTools(h.t, "rpm")
	// Only what the container lacks: its own libc and friends are in use
	// (rewriting them in place crashes what runs in there).
	for _, b := range []string{"/usr/bin/rpm", "/usr/bin/rpmdb", "/usr/bin/rpmkeys"} {
		out, err := exec.Command("ldd", b).Output()
		if err != nil {
			h.t.Fatalf("ldd %s: %v", b, err)
		}
		for _, f := range append([]string{b}, regexp.MustCompile(`(/\S+)`).FindAllString(string(out), -1)...) {
			dst := filepath.Join(h.c.Root, f)
			if _, err := os.Stat(dst); err == nil {
				continue
			}
			if out, err := exec.Command("cp", "-L", f, dst).CombinedOutput(); err != nil {
				h.t.Fatalf("cp %s: %v %s", f, err, out)
			}
		}
	}
	if out, err := exec.Command("cp", "-a", "/usr/lib/rpm", filepath.Join(h.c.Root, "usr/lib/")).CombinedOutput(); err != nil {
		h.t.Fatalf("cp /usr/lib/rpm: %v %s", err, out)
	}
	if _, err := os.Stat("/etc/rpm"); err == nil {
		exec.Command("cp", "-a", "/etc/rpm", filepath.Join(h.c.Root, "etc/")).Run()
	}
	h.sh("rpm --initdb")
}

func (h *sdHost) copyIn(path string) string {
	h.t.Helper()
	if out, err := exec.Command("cp", path, filepath.Join(h.c.Root, "root")).CombinedOutput(); err != nil {
		h.t.Fatalf("cp: %v %s", err, out)
	}
	return "/root/" + filepath.Base(path)
}

func TestSystemdRPMLifecycle(t *testing.T) {
	oldRPM, newRPM := rpms(t)
	h := bootHost(t, "cas-rpm")
	h.installRPM()
	out := h.sh("rpm -i --nodeps " + h.copyIn(oldRPM))
	if !strings.Contains(out, "no agent runs yet") {
		t.Errorf("rpm -i does not say the next step:\n%s", out)
	}
	if u := h.sh("systemctl list-units --no-legend --no-pager --all 'claude-auth-sync*'"); strings.TrimSpace(u) != "" {
		t.Errorf("units loaded or running after rpm -i:\n%s", u)
	}
	for _, l := range strings.Split(strings.TrimSpace(h.sh("systemctl list-unit-files --no-legend --no-pager 'claude-auth-sync*'")), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[1] != "disabled" && f[1] != "static" {
			t.Errorf("after rpm -i: %s", l)
		}
	}
	if _, err := os.Stat(filepath.Join(h.c.Root, "usr/share/zsh/site-functions/_claude-auth-sync")); err != nil {
		t.Errorf("the zsh completion where rpm distributions look: %v", err)
	}
	h.configure(vsrv.Addr)
	rita := h.addUser("rita")
	h.vaultToken(rita)
	l := h.login(rita)
	h.sh("systemctl enable --now claude-auth-sync-agent@rita.service claude-auth-sync@rita.timer")
	eventually(t, 60*time.Second, "rita's agent backs up", func() bool {
		rt, _ := vaultRefreshToken(t, "rita")
		return rt == l.RefreshToken
	})
	before := h.props(nil, "claude-auth-sync-agent@rita.service", "MainPID")["MainPID"]

	h.sh("rpm -U --nodeps " + h.copyIn(newRPM))
	eventually(t, 60*time.Second, "rita's agent restarted on the new binary", func() bool {
		p := h.props(nil, "claude-auth-sync-agent@rita.service", "MainPID", "ActiveState")
		return p["ActiveState"] == "active" && p["MainPID"] != before && p["MainPID"] != "0"
	})
	if v := h.sh("claude-auth-sync version"); !strings.Contains(v, newVersion) {
		t.Errorf("after rpm -U: %s", v)
	}
	if p := h.props(nil, "claude-auth-sync@rita.timer", "ActiveState"); p["ActiveState"] != "active" {
		t.Errorf("rita's timer after rpm -U: %v", p)
	}
	if out, err := h.try("systemctl start claude-auth-sync@rita.service && journalctl --no-pager -u claude-auth-sync@rita.service -o cat"); err != nil || !strings.Contains(out, "(the agent's pass, pid ") {
		t.Errorf("sync now after rpm -U: %v\n%s", err, out)
	}

	h.sh("rpm -e --nodeps claude-auth-sync")
	for _, unit := range []string{"claude-auth-sync-agent@rita.service", "claude-auth-sync@rita.timer"} {
		if p := h.props(nil, unit, "ActiveState"); p["ActiveState"] == "active" {
			t.Errorf("%s still active after rpm -e", unit)
		}
	}
	if agentsOf(h, rita) != 0 {
		t.Errorf("an agent runs after rpm -e")
	}
	if _, err := os.Stat(filepath.Join(h.c.Root, "usr/bin/claude-auth-sync")); !os.IsNotExist(err) {
		t.Errorf("the binary after rpm -e: %v", err)
	}
	if _, err := os.Stat(rita.hostHome + "/.config/claude-auth-sync/vault-token"); err != nil {
		t.Errorf("rpm -e took rita's token file: %v", err)
	}
}
