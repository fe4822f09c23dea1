package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/fleet"
)

// fleetRowsOf runs the real `fleet` (text and --json) as the admin and
// returns, for each user, the JSON row and the text line; and the exit
// status of the text run.
func fleetRowsOf(t *testing.T, users ...string) (map[string]map[string]any, map[string]string, int) {
	t.Helper()
	run := func(args ...string) (string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "claude-auth-sync"), append([]string{"fleet"}, args...)...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "VAULT_ADDR=" + vsrv.Addr, "VAULT_TOKEN=" + vsrv.RootTokenValue(),
			"CLAUDE_AUTH_SYSTEM_CONFIG=/nonexistent", "CLAUDE_AUTH_USER=root"}
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("fleet: %v", err)
		}
		if code != 0 && code != 1 {
			t.Fatalf("fleet %v: exit %d\n%s\n%s", args, code, out.String(), errb.String())
		}
		return out.String(), code
	}
	text, code := run()
	js, _ := run("--json")
	var rep struct {
		Rows []map[string]any `json:"rows"`
	}
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatalf("fleet --json: %v\n%s", err, js)
	}
	rows, lines := map[string]map[string]any{}, map[string]string{}
	for _, u := range users {
		for _, r := range rep.Rows {
			if r["user"] == u {
				rows[u] = r
			}
		}
		for _, l := range strings.Split(text, "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[1] == u {
				lines[u] = l
			}
		}
	}
	return rows, lines, code
}

// A FAIL or a misconfiguration always reaches `fleet` (issue 23). Two users'
// real agents, healthy and reported OK first; then one's token file is
// opened to others (chmod 0644) and its agent reloaded: the agent refuses
// the token (exposed) but still tells the fleet with it, FAIL with that
// reason. The other's Vault address is made wrong (https to the plain-http
// listener) and its agent restarted: the stopping agent writes STOPPED, the
// misconfigured one cannot reach Vault and writes nothing, and no OK ever
// follows. `fleet` and `fleet --json` show each row non-OK with its reason.
func TestFleetSeesFailAndMisconfiguration(t *testing.T) {
	hf := newFleetHost(t, nil, "ws-fail")
	hm := newFleetHost(t, nil, "ws-misconf")
	for _, h := range []*fleetHost{hf, hm} {
		h.login()
		h.agent = h.startAgent(nil)
		h.waitFirstPass(t)
		waitHealth(t, h.user.Path, h.id, h.label, "OK", fleet.DocMain)
	}
	rows, _, _ := fleetRowsOf(t, hf.name, hm.name)
	for _, h := range []*fleetHost{hf, hm} {
		if rows[h.name]["status"] != "OK" {
			t.Fatalf("%s before the faults: %v; want OK", h.name, rows[h.name])
		}
	}

	// The exposed token: chmod, then `systemctl reload` (SIGHUP: a full pass).
	_, before := hf.vaultDoc()
	if err := os.Chmod(hf.user.TokenFile, 0o644); err != nil {
		t.Fatal(err)
	}
	hf.agent.cmd.Process.Signal(syscall.SIGHUP)
	exposed := regexp.MustCompile(`(?m)^\S+ FAIL vault token: .*readable by others \(mode 0644\), consider the token exposed`)
	eventually(t, 30*time.Second, "the agent's FAIL about the exposed token", func() bool { return exposed.MatchString(hf.syncLog()) })
	got := waitHealth(t, hf.user.Path, hf.id, hf.label, "FAIL", fleet.DocMain)
	if !strings.Contains(got.Reason, "readable by others (mode 0644), consider the token exposed") {
		t.Errorf("the FAIL health's reason: %q; want the token file's mode", got.Reason)
	}
	l := hf.fake.Issue()
	hf.writeLogin(l)
	eventually(t, 30*time.Second, "the new login kept pending, not backed up with the exposed token", func() bool {
		b, _ := os.ReadFile(filepath.Join(hf.state, "pending-backup.json"))
		return strings.Contains(string(b), l.RefreshToken)
	})
	if _, v := hf.vaultDoc(); v != before {
		t.Errorf("the exposed token moved a login: the document v%d -> v%d", before, v)
	}

	// The misconfigured Vault address, set while the agent runs, takes
	// effect at its restart.
	sampler := sampleHealth(t, hm.user.Path)
	hm.agent.stop()
	stopped := waitHealth(t, hm.user.Path, hm.id, hm.label, "STOPPED", fleet.DocMain)
	hm.withVaultAddr(strings.Replace(vsrv.Addr, "http://", "https://", 1))
	hm.agent = hm.startAgent(nil)
	misconf := regexp.MustCompile(`(?m)^\S+ FAIL vault: .*vault configuration error: .*plain http`)
	eventuallyWhy(t, 30*time.Second, "the misconfigured agent's FAIL", func() string {
		if misconf.MatchString(hm.syncLog()) {
			return ""
		}
		return "sync.log:\n" + hm.syncLog() + "\nagent:\n" + hm.agent.output()
	})
	hm.waitRetries(t, 3, "the misconfigured agent's backups")
	select {
	case <-hm.agent.done:
		t.Fatalf("the misconfigured agent stopped:\n%s", hm.agent.output())
	default:
	}
	sampler.end()
	var after bool
	for _, v := range sampler.seen[hm.id] {
		h, err := fleet.ParseHealth(v)
		if err != nil {
			t.Errorf("unreadable health %q: %v", v, err)
			continue
		}
		if h.Status == "STOPPED" && h.StatusAt.Equal(stopped.StatusAt) {
			after = true
			continue
		}
		if after && h.Status == "OK" {
			t.Errorf("an OK health after the agent stopped: %s", v)
		}
	}
	if !after {
		t.Errorf("the STOPPED health never seen in the samples: %v", sampler.seen[hm.id])
	}
	if h, _ := hostHealthOf(t, hm.user.Path, hm.id); h.Status != "STOPPED" {
		t.Errorf("the misconfigured host's health now: %s; want STOPPED", h.Encode())
	}

	rows, lines, code := fleetRowsOf(t, hf.name, hm.name)
	want := map[string]struct{ status, reason string }{
		hf.name: {"FAIL", "readable by others"},
		hm.name: {"STOPPED", "stopped"},
	}
	for u, w := range want {
		r := rows[u]
		reason, _ := r["reason"].(string)
		if r["status"] != w.status || !strings.Contains(reason, w.reason) {
			t.Errorf("fleet --json row of %s: status %v, reason %q; want %s with %q", u, r["status"], reason, w.status, w.reason)
		}
		if l := lines[u]; !strings.Contains(l, w.status) || !strings.Contains(l, w.reason) {
			t.Errorf("fleet's line for %s: %q; want %s with %q", u, l, w.status, w.reason)
		}
		t.Logf("fleet: %s", lines[u])
	}
	if code != 1 {
		t.Errorf("fleet exit %d with a FAIL; want 1", code)
	}
}
