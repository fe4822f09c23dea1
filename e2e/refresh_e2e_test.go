package e2e_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
)

// loginExpiringIn writes a fresh login whose expiresAt is d from now (the fake
// still honours it server-side for its normal lifetime).
func (w *world) loginExpiringIn(d time.Duration) fakeanthropic.Login {
	w.t.Helper()
	l := w.fake.Issue()
	l.ExpiresAt = time.Now().Add(d)
	w.writeLogin(l)
	return l
}

// exec passes pid, signals and the exit status through.
func TestExecPassesThrough(t *testing.T) {
	w := newWorld(t)
	w.login()
	pidFile := filepath.Join(t.TempDir(), "pid")
	cmd := exec.Command(filepath.Join(binDir, "claude-auth-sync"), "exec", "--",
		"sh", "-c", `echo $$ > "$0"; trap 'exit 42' TERM; while :; do sleep 0.05; done`, pidFile)
	cmd.Env = w.env
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "child wrote its pid", func() bool { b, _ := os.ReadFile(pidFile); return len(b) > 0 })
	b, _ := os.ReadFile(pidFile)
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("command pid = %s; want the exec's own pid %d", got, cmd.Process.Pid)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 42 {
		t.Errorf("exit = %v; want 42 from the trapped SIGTERM", err)
	}
	r := w.run(nil, "exec", "--", "sh", "-c", "exit 7")
	if r.code != 7 {
		t.Errorf("exit status = %d; want 7", r.code)
	}
	r = w.run(nil, "exec", "--", "no-such-command-here")
	if r.code != 127 {
		t.Errorf("missing command: exit %d; want 127", r.code)
	}
}

// 64 concurrent exec at an expiry boundary: exactly one refresh, and every
// command starts with the same, refreshed login.
func TestConcurrentExecOneRefresh(t *testing.T) {
	w := newWorld(t)
	old := w.loginExpiringIn(5 * time.Minute) // inside the 15 min lead
	out := t.TempDir()
	var wg sync.WaitGroup
	codes := make([]int, 64)
	for i := range codes {
		wg.Go(func() {
			cmd := exec.Command(filepath.Join(binDir, "claude-auth-sync"), "exec", "--", "sh", "-c",
				`grep -o '"refreshToken": *"[^"]*"' "$HOME/.claude/.credentials.json" > "$0"`, filepath.Join(out, strconv.Itoa(i)))
			cmd.Env = w.env
			if err := cmd.Run(); err != nil {
				codes[i] = 1
			}
		})
	}
	wg.Wait()
	c := w.fake.Counters()
	if c.Refreshes != 1 || c.InvalidGrant != 0 {
		t.Errorf("fake counters %+v; want exactly 1 refresh and no invalid_grant", c)
	}
	seen := map[string]int{}
	for i := range codes {
		if codes[i] != 0 {
			t.Errorf("exec %d failed", i)
		}
		b, _ := os.ReadFile(filepath.Join(out, strconv.Itoa(i)))
		seen[string(b)]++
	}
	if len(seen) != 1 {
		t.Errorf("commands started with %d different logins; want 1", len(seen))
	}
	for k := range seen {
		if strings.Contains(k, old.RefreshToken) {
			t.Errorf("commands started with the old, spent login")
		}
		if strings.Contains(k, `""`) {
			t.Errorf("a command started logged out")
		}
	}
	// The new login is in Vault (exec backs it up when Vault answers).
	if refreshTokenOf(t, w.localOAuthCompact()) != w.vaultRefresh() {
		t.Errorf("the refreshed login is not in vault")
	}
	w.secrets = append(w.secrets, w.fake.Issued()...)
}

// A 401 while the local token is still valid (the server ended it early): the
// pass force-refreshes first and the check passes, no restore.
func TestForcedRefreshOnEarly401(t *testing.T) {
	w := newWorld(t)
	w.fake.ServerLifetime = time.Nanosecond // the server ends the access token at once
	w.login()
	w.fake.ServerLifetime = 0
	r := w.run(nil, "sync")
	w.mustCode(r, 0, "sync")
	if !strings.Contains(w.syncLog(), "after a forced refresh") {
		t.Errorf("no forced refresh in the log:\n%s", w.syncLog())
	}
	if strings.Contains(w.syncLog(), "RECOVERED") {
		t.Errorf("restored although a refresh fixed it")
	}
	if c := w.fake.Counters(); c.Refreshes != 1 {
		t.Errorf("refreshes = %d; want 1", c.Refreshes)
	}
	if w.vaultRefresh() != refreshTokenOf(t, w.localOAuthCompact()) {
		t.Errorf("refreshed login not backed up")
	}
	w.secrets = append(w.secrets, w.fake.Issued()...)
}

// The racy writer reproduces the logout without the agent (deterministically,
// with a barrier), and causes none with the agent refreshing ahead of it.
func TestRacyWriterWithAndWithoutAgent(t *testing.T) {
	racy := func(w *world, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(binDir, "racy-claude"), append([]string{"--creds", w.creds, "--api", w.api.URL}, args...)...)
		cmd.Env = append(append([]string(nil), w.env...), "RACY_STATS_DIR="+w.state)
		return cmd
	}
	t.Run("without the agent the race logs the user out", func(t *testing.T) {
		w := newWorld(t)
		w.loginExpiringIn(time.Minute)
		barrier := filepath.Join(t.TempDir(), "go")
		reads := watchFS(t, w.creds, syscall.IN_CLOSE_NOWRITE, "")
		var cmds []*exec.Cmd
		for i := 0; i < 2; i++ {
			c := racy(w, "--threshold", "5m", "--barrier", barrier, "--once", "--loser-writes-last", "--for", "20s")
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			cmds = append(cmds, c)
			// It has read the refresh token (a read of the file ends with a
			// close) and waits for the barrier. One at a time: inotify merges
			// two like events still queued.
			reads.waitMore(t, 0, i+1, "a racy writer read the credentials file")
		}
		os.WriteFile(barrier, nil, 0o600)
		for _, c := range cmds {
			c.Wait()
		}
		if c := w.fake.Counters(); c.Refreshes != 1 || c.InvalidGrant != 1 {
			t.Errorf("fake counters %+v; want one winner and one invalid_grant", c)
		}
		// The loser's dead login landed last: the user is logged out.
		b, _ := os.ReadFile(w.creds)
		var f map[string]map[string]any
		json.Unmarshal(b, &f)
		if rt, _ := f["claudeAiOauth"]["refreshToken"].(string); rt != "" {
			t.Errorf("refreshToken after the race is not empty: the failure did not reproduce")
		}
		w.secrets = append(w.secrets, w.fake.Issued()...)
	})
	t.Run("with the agent there is no logout", func(t *testing.T) {
		w := newWorld(t)
		w.fake.ExpiresIn = 10 * time.Second
		l := w.fake.Issue()
		w.writeLogin(l)
		w.startAgent([]string{"CLAUDE_AUTH_REFRESH_LEAD=8s"})
		var cmds []*exec.Cmd
		for i := 0; i < 4; i++ {
			c := racy(w, "--threshold", "5s", "--for", "35s")
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			cmds = append(cmds, c)
		}
		for _, c := range cmds {
			c.Wait()
		}
		c := w.fake.Counters()
		if c.InvalidGrant != 0 {
			t.Errorf("invalid_grant = %d; want 0", c.InvalidGrant)
		}
		if c.Refreshes < 3 {
			t.Errorf("refreshes = %d over 35 s of 10 s tokens; want the agent to have refreshed at least 3 times", c.Refreshes)
		}
		stats, _ := filepath.Glob(filepath.Join(w.state, "racy-*.json"))
		if len(stats) != 4 {
			t.Fatalf("%d racy reports; want 4", len(stats))
		}
		for _, p := range stats {
			b, _ := os.ReadFile(p)
			var s struct{ Refreshes, InvalidGrant, Logouts, CallsFailed int }
			json.Unmarshal(b, &s)
			if s.Logouts != 0 || s.Refreshes != 0 || s.InvalidGrant != 0 {
				t.Errorf("racy process %s: %+v; want no refresh of its own and no logout", filepath.Base(p), s)
			}
		}
		if refreshTokenOf(t, w.localOAuthCompact()) == "" {
			t.Errorf("logged out")
		}
		w.secrets = append(w.secrets, w.fake.Issued()...)
	})
}
