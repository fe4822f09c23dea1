package e2e_test

// Other local users are adversaries: real unprivileged OS users, one the
// victim whose agent and commands run, one hostile, against the real binary
// and a real Vault.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sharedDir is a sticky world-writable dir (what the runbook once advised for
// metrics), reachable by every user.
func sharedDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for p := filepath.Dir(d); p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o711)
	}
	if err := os.Chmod(d, 0o1777); err != nil {
		t.Fatal(err)
	}
	return d
}

func hostileRun(t *testing.T, u faultUser, name string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	u.as(cmd)
	return cmd.CombinedOutput()
}

// A metrics dir left shared (1777, the layout of earlier versions, not yet
// made root's by provision): a hostile user takes the victim's directory name
// first, with a FIFO, then with a directory of its own holding a forged file.
// The victim's agent never makes or writes into a directory not its own: one
// WARN each, backups within their usual lag, a stop at once on SIGTERM,
// nothing forged read back. (The publisher refuses such a dir too, see
// TestMetricsPublishedToNodeExporter; provision makes the dir root's.)
func TestHostileMetricsFile(t *testing.T) {
	victim, mallory := newFaultUser(t), newFaultUser(t)
	w := newWorld(t)
	l := w.login()
	victim.adopt(t, w)
	dir := sharedDir(t)
	w.setEnvVar("CLAUDE_AUTH_METRICS_DIR", dir)
	own := filepath.Join(dir, w.name)
	prom := filepath.Join(own, "claude_auth_sync.prom")

	for _, squat := range []struct {
		what string
		make func() error
	}{
		{"FIFO", func() error { _, err := hostileRun(t, mallory, "mkfifo", "-m", "0666", own); return err }},
		{"directory with a forged file", func() error {
			_, err := hostileRun(t, mallory, "sh", "-c", `umask 022; mkdir -m 0777 "$0" && printf 'claude_auth_sync_last_success_timestamp_seconds{user="`+w.name+`"} 9999999999\n' > "$0/claude_auth_sync.prom"`, own)
			return err
		}},
	} {
		t.Run(squat.what, func(t *testing.T) {
			os.RemoveAll(own)
			if err := squat.make(); err != nil {
				t.Fatalf("the hostile user could not make the %s: %v", squat.what, err)
			}
			warnsBefore := strings.Count(w.syncLog(), " WARN not writing metrics: ")
			a := w.startAgentProc(nil, victim.as)
			eventually(t, 45*time.Second, "the agent's start-up pass", func() bool {
				return strings.Count(w.syncLog(), " OK inference check passed") > 0 && strings.Contains(a.output(), "agent started")
			})
			n, err := w.fake.Rotate(l.RefreshToken)
			if err != nil {
				t.Fatal(err)
			}
			l = n
			start := time.Now()
			victim.writeLogin(t, w, l)
			eventually(t, 15*time.Second, "the rotation backed up", func() bool {
				d, _ := w.vaultDoc()
				j, _ := d["claude_ai_oauth_json"].(string)
				return j != "" && refreshTokenOf(t, j) == l.RefreshToken
			})
			t.Logf("with a %s squatting the metrics dir: backup %s after the rename", squat.what, time.Since(start).Round(time.Millisecond))
			stopAt := time.Now()
			a.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-a.done:
			case <-time.After(20 * time.Second):
				t.Fatalf("the agent did not stop within 20 s of SIGTERM")
			}
			t.Logf("stopped %s after SIGTERM", time.Since(stopAt).Round(time.Millisecond))
			if got := strings.Count(w.syncLog(), " WARN not writing metrics: ") - warnsBefore; got != 1 {
				t.Errorf("%d WARN lines about the refused metrics dir; want 1\n%s", got, w.syncLog())
			}
			fi, err := os.Lstat(own)
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != mallory.uid {
				t.Errorf("the squatted name now belongs to uid %d; the victim must not have replaced it", st.Uid)
			}
			if fi, err := os.Lstat(prom); err == nil && fi.Sys().(*syscall.Stat_t).Uid == uint32(victim.uid) {
				t.Errorf("the victim's agent wrote into the hostile user's directory")
			}
		})
	}

	// An admin makes the directory the victim's (as provision does): the
	// victim's next agent writes real values (its counters come from its
	// state dir, never from a file).
	os.RemoveAll(own)
	os.Mkdir(own, 0o700)
	os.Chown(own, victim.uid, victim.gid)
	a := w.startAgentProc(nil, victim.as)
	eventually(t, 30*time.Second, "metrics written", func() bool {
		b, err := os.ReadFile(prom)
		return err == nil && strings.Contains(string(b), "claude_auth_sync_failures_total")
	})
	a.stop()
	b, _ := os.ReadFile(prom)
	if strings.Contains(string(b), "9999999999") {
		t.Errorf("the forged value came back:\n%s", b)
	}
	if fi, _ := os.Lstat(prom); fi.Sys().(*syscall.Stat_t).Uid != uint32(victim.uid) {
		t.Errorf("the metrics file is not the victim's")
	}
}

// A credentials file clobbered with a loose mode (umask 022: 0644, in a 0755
// home) is never restored, refreshed or backfilled with that mode: every
// write is 0600, and the hostile user's read of it fails afterwards.
func TestCredentialsWrittenPrivate(t *testing.T) {
	victim, mallory := newFaultUser(t), newFaultUser(t)
	w := newWorld(t)
	l := w.login()
	victim.adopt(t, w)
	os.Chmod(w.home, 0o755)
	os.Chmod(filepath.Dir(w.creds), 0o755)
	w.mustCode(w.runWith(nil, victim.as, time.Minute, "sync"), 0, "first sync (backs the login up)")

	clobberLoose := func() {
		t.Helper()
		if err := os.WriteFile(w.creds, []byte(`{"claudeAiOauth":{"accessToken":"","refreshToken":"","expiresAt":0}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chown(w.creds, victim.uid, victim.gid)
		os.Chmod(w.creds, 0o644)
	}
	private := func(what string) {
		t.Helper()
		fi, err := os.Stat(w.creds)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: the credentials file is %v; want 0600", what, fi.Mode().Perm())
		}
		if out, err := hostileRun(t, mallory, "cat", w.creds); err == nil {
			t.Errorf("%s: the hostile user read the credentials file (%d bytes)", what, len(out))
		}
	}

	// sync restores a clobbered login.
	clobberLoose()
	w.mustCode(w.runWith(nil, victim.as, time.Minute, "sync"), 0, "sync over a loose clobbered file")
	private("sync's restore")

	// refresh of a usable but loose file.
	os.Chmod(w.creds, 0o644)
	w.mustCode(w.runWith(nil, victim.as, time.Minute, "refresh"), 0, "refresh of a loose file")
	private("refresh")
	if !regexp.MustCompile(`WARN credentials file \S+ was open to other users \(mode 0644\); set it to 0600`).MatchString(w.syncLog()) {
		t.Errorf("no WARN naming the loose file:\n%s", w.syncLog())
	}

	// The agent restores a clobbered login.
	a := w.startAgentProc(nil, victim.as)
	eventually(t, 30*time.Second, "agent started", func() bool { return strings.Contains(a.output(), "agent started") })
	recovered := strings.Count(w.syncLog(), " RECOVERED ")
	clobberLoose()
	eventually(t, 30*time.Second, "the agent's restore", func() bool { return strings.Count(w.syncLog(), " RECOVERED ") > recovered })
	private("the agent's restore")
	a.stop()

	// The setup-token backfill (a one-year token) into a loose file.
	os.Chmod(w.creds, 0o644)
	setup := w.fake.IssueSetupToken(365 * 24 * time.Hour)
	w.mu.Lock()
	w.secrets = append(w.secrets, setup)
	w.mu.Unlock()
	if _, err := rootKV().Patch(context.Background(), w.user.Path, map[string]any{"setup_token": setup}); err != nil {
		t.Fatal(err)
	}
	w.mustCode(w.runWith(nil, victim.as, time.Minute, "sync"), 0, "sync in setup-token mode")
	private("the setup-token backfill")
	env := filepath.Join(w.home, ".config", "claude-auth-sync", "claude-oauth.env")
	if fi, err := os.Stat(env); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the setup-token env file: %v %v; want 0600", fi, err)
	}
	_ = l
}
