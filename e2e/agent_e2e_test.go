package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
	"github.com/claude-auth-sync/claude-auth-sync/e2e/vaultserver"
)

// agentProc is a running `claude-auth-sync run`.
type agentProc struct {
	w    *world
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// startAgent starts the real agent as this user and waits until it watches.
func (w *world) startAgent(extraEnv []string, args ...string) *agentProc {
	w.t.Helper()
	a := w.startAgentProc(extraEnv, nil, args...)
	eventually(w.t, 45*time.Second, "agent started", func() bool { return strings.Contains(a.output(), "agent started") })
	return a
}

func (a *agentProc) output() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.out.String()
}

// stop sends SIGTERM and waits; the output joins the secret scan.
func (a *agentProc) stop() {
	select {
	case <-a.done:
	default:
		a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(30 * time.Second):
			a.cmd.Process.Kill()
			<-a.done
			a.w.t.Errorf("agent did not stop within 30s of SIGTERM")
		}
	}
	a.w.mu.Lock()
	a.w.outputs = append(a.w.outputs, a.output())
	a.w.mu.Unlock()
}

func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(10 * time.Millisecond) // the poll interval of this bounded wait
	}
}

// writeLogin writes l as the credentials file the way Claude 2.1.332 does:
// temp file, then rename over.
func (w *world) writeLogin(l fakeanthropic.Login) {
	w.t.Helper()
	w.mu.Lock()
	w.secrets = append(w.secrets, l.AccessToken, l.RefreshToken)
	w.mu.Unlock()
	os.MkdirAll(filepath.Dir(w.creds), 0o700)
	tmp := w.creds + ".tmp"
	if err := os.WriteFile(tmp, fakeanthropic.CredentialsJSON(l), 0o600); err != nil {
		w.t.Fatal(err)
	}
	if err := os.Rename(tmp, w.creds); err != nil {
		w.t.Fatal(err)
	}
}

// rotate refreshes l at the fake, as Claude would, and writes the result.
func (w *world) rotate(l fakeanthropic.Login) fakeanthropic.Login {
	w.t.Helper()
	n, err := w.fake.Rotate(l.RefreshToken)
	if err != nil {
		w.t.Fatalf("rotate: %v", err)
	}
	w.writeLogin(n)
	return n
}

// vaultRefresh is the refresh token Vault holds now ("" when none).
func (w *world) vaultRefresh() string {
	doc, _ := w.vaultDoc()
	s, _ := doc["claude_ai_oauth_json"].(string)
	if s == "" {
		return ""
	}
	return refreshTokenOf(w.t, s)
}

func (w *world) vaultHolds(l fakeanthropic.Login) func() bool {
	return func() bool { return w.vaultRefresh() == l.RefreshToken }
}

// Every way Claude or an editor writes the file ends with Vault holding it.
func TestAgentBacksUpEveryWayOfWriting(t *testing.T) {
	w := newWorld(t)
	l := w.login()
	w.startAgent(nil)
	eventually(t, 45*time.Second, "initial backup", w.vaultHolds(l))

	l = w.rotate(l) // rename over
	eventually(t, 30*time.Second, "rename-over write", w.vaultHolds(l))

	n, _ := w.fake.Rotate(l.RefreshToken) // in place, like Claude 2.1.88
	w.secrets = append(w.secrets, n.AccessToken, n.RefreshToken)
	f, err := os.OpenFile(w.creds, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(fakeanthropic.CredentialsJSON(n))
	f.Close()
	l = n
	eventually(t, 30*time.Second, "in-place write", w.vaultHolds(l))

	os.Remove(w.creds) // delete, then create
	l, _ = w.fake.Rotate(l.RefreshToken)
	w.writeLogin(l)
	eventually(t, 30*time.Second, "delete and recreate", w.vaultHolds(l))

	dir := filepath.Dir(w.creds) // the directory goes away and comes back
	removed := strings.Count(w.syncLog(), "WARN credentials file was removed")
	os.RemoveAll(dir)
	eventually(t, 30*time.Second, "the directory's removal seen (a logout)", func() bool {
		return strings.Count(w.syncLog(), "WARN credentials file was removed") > removed
	})
	l, _ = w.fake.Rotate(l.RefreshToken)
	w.writeLogin(l)
	eventually(t, 30*time.Second, "directory recreated", w.vaultHolds(l))

	if strings.Contains(w.syncLog(), " FAIL ") {
		t.Errorf("FAIL lines:\n%s", w.syncLog())
	}
}

// Vault stopped while three rotations happen, each kept pending and its backup
// retried against the outage: afterwards Vault holds the newest, and its
// history never went back from a newer login to an older.
func TestAgentSurvivesVaultOutage(t *testing.T) {
	srv, err := vaultserver.StartPersistent(t.TempDir())
	if err != nil {
		t.Fatalf("persistent vault: %v", err)
	}
	defer srv.Stop()
	w := newWorldOn(t, srv)
	order := map[string]int{}
	l := w.login()
	order[l.RefreshToken] = 0
	w.startAgent([]string{"VAULT_CLIENT_TIMEOUT=2s"})
	eventually(t, 45*time.Second, "initial backup", w.vaultHolds(l))

	srv.Stop()
	for i := 1; i <= 3; i++ {
		l = w.rotate(l)
		order[l.RefreshToken] = i
		// Each rotation taken in, and its backup retried against the outage.
		w.waitPending(t, l, fmt.Sprintf("rotation %d during the outage", i))
		w.waitRetries(t, 2, fmt.Sprintf("rotation %d during the outage", i))
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "newest login in vault after the outage", w.vaultHolds(l))

	// The history: each version's login is never older than the one before.
	ctx := context.Background()
	kv := srv.Root().KVv2("secret")
	meta, err := kv.GetMetadata(ctx, w.user.Path)
	if err != nil {
		t.Fatal(err)
	}
	last := -1
	for v := 1; v <= meta.CurrentVersion; v++ {
		sec, err := kv.GetVersion(ctx, w.user.Path, v)
		if err != nil {
			t.Fatalf("version %d: %v", v, err)
		}
		idx, ok := order[refreshTokenOf(t, sec.Data["claude_ai_oauth_json"].(string))]
		if !ok {
			t.Fatalf("version %d holds a login the test never wrote", v)
		}
		if idx < last {
			t.Errorf("version %d holds login #%d after login #%d: an older one overwrote a newer", v, idx, last)
		}
		last = idx
	}
	if n := strings.Count(w.syncLog(), "WARN vault unreachable; backups pending"); n != 1 {
		t.Errorf("outage warned %d times; want once:\n%s", n, w.syncLog())
	}
}

// A restart of the agent while a backup is pending: the login is backed up after
// the restart (pending-backup.json survives the stop).
func TestAgentRestartWithPendingBackup(t *testing.T) {
	srv, err := vaultserver.StartPersistent(t.TempDir())
	if err != nil {
		t.Fatalf("persistent vault: %v", err)
	}
	defer srv.Stop()
	w := newWorldOn(t, srv)
	l := w.login()
	a := w.startAgent([]string{"VAULT_CLIENT_TIMEOUT=1s"})
	eventually(t, 45*time.Second, "initial backup", w.vaultHolds(l))
	srv.Stop()
	l = w.rotate(l)
	pending := filepath.Join(w.state, "pending-backup.json")
	// The rotated login itself, not just a pending file (an earlier failed
	// backup may have left one): the clobber below destroys the file's copy.
	eventually(t, 30*time.Second, "pending backup persisted", func() bool {
		b, err := os.ReadFile(pending)
		return err == nil && strings.Contains(string(b), l.RefreshToken)
	})
	if fi, _ := os.Stat(pending); fi.Mode().Perm() != 0o600 {
		t.Errorf("pending-backup.json mode %v; want 0600", fi.Mode().Perm())
	}
	a.stop()
	if !strings.Contains(w.syncLog(), "stopping with a backup pending") {
		t.Errorf("stop did not report the pending backup:\n%s", w.syncLog())
	}
	// The file is clobbered while nothing runs: only the pending copy has l.
	b, _ := os.ReadFile(w.creds)
	os.WriteFile(w.creds, regexp.MustCompile(`"refreshToken": "[^"]*"`).ReplaceAll(b, []byte(`"refreshToken": ""`)), 0o600)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	w.startAgent(nil)
	eventually(t, 30*time.Second, "pending login backed up after restart", w.vaultHolds(l))
	eventually(t, 30*time.Second, "clobbered file restored from the pending login", func() bool {
		return refreshTokenOf(t, w.localOAuthCompact()) == l.RefreshToken
	})
	eventually(t, 30*time.Second, "pending-backup.json removed once the backup is in", func() bool {
		_, err := os.Stat(pending)
		return os.IsNotExist(err)
	})
}

// 1,000 writes in about a second: Vault ends with the final state, in far fewer
// writes than changes.
func TestAgentBurst(t *testing.T) {
	w := newWorld(t)
	l := w.login()
	w.startAgent(nil)
	eventually(t, 45*time.Second, "initial backup", w.vaultHolds(l))
	_, before := w.vaultDoc()
	for i := 0; i < 1000; i++ {
		l = w.rotate(l)
		time.Sleep(time.Millisecond) // the burst's pace (about 1,000 writes a second): the load under test
	}
	eventually(t, 30*time.Second, "final state in vault", w.vaultHolds(l))
	_, after := w.vaultDoc()
	t.Logf("1000 rotations became %d vault writes", after-before)
	if after-before < 1 || after-before > 1000 {
		t.Errorf("vault versions went %d -> %d", before, after)
	}
}

// The stale window: a rotation, then the file wiped. The reference tool (a
// six-hourly backup) restores a spent login and FAILs; with the agent running,
// Vault already holds the rotated login and `sync` ends OK.
func TestStaleWindowClosedByAgent(t *testing.T) {
	scenario := func(t *testing.T, withAgent bool) (*world, result) {
		w := newWorld(t)
		l := w.login()
		w.mustCode(w.run(nil, "sync"), 0, "six-hourly pass")
		var a *agentProc
		if withAgent {
			a = w.startAgent([]string{"CLAUDE_AUTH_CHECK_INTERVAL=6h"})
		}
		l = w.rotate(l) // Claude refreshes: the backed-up refresh token is spent
		if withAgent {
			eventually(t, 30*time.Second, "rotation backed up", w.vaultHolds(l))
			a.stop() // the agent's own instant restore is not what this shows
		}
		b, _ := os.ReadFile(w.creds)
		os.WriteFile(w.creds, regexp.MustCompile(`"refreshToken": "[^"]*"`).ReplaceAll(b, []byte(`"refreshToken": ""`)), 0o600)
		return w, w.run(nil, "sync")
	}
	t.Run("reference behaviour", func(t *testing.T) {
		w, r := scenario(t, false)
		w.mustCode(r, 1, "sync after the wipe without the agent")
		if !regexp.MustCompile(`(?m)^\S+ FAIL `).MatchString(w.syncLog()) {
			t.Errorf("want FAIL:\n%s", w.syncLog())
		}
	})
	t.Run("with the agent", func(t *testing.T) {
		w, r := scenario(t, true)
		w.mustCode(r, 0, "sync after the wipe with the agent")
		if !regexp.MustCompile(`(?m)^\S+ RECOVERED .*\n\S+ OK `).MatchString(w.syncLog()) {
			t.Errorf("want RECOVERED then OK:\n%s", w.syncLog())
		}
	})
}

// One agent per user: a second `run` exits saying who holds the lock.
func TestSecondAgentRefused(t *testing.T) {
	w := newWorld(t)
	w.login()
	w.startAgent(nil)
	r := w.run(nil, "run")
	w.mustCode(r, 4, "second run (exit 4: another agent runs)")
	if !strings.Contains(r.stderr, "already running") || !strings.Contains(r.stderr, "pid") {
		t.Errorf("second agent's message: %s", r.stderr)
	}
}
