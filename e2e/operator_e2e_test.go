package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// An https VAULT_ADDR against Vault's plain-http listener is a mistake in the
// settings: `sync` exits 78 with what to fix, and the agent says so once as
// FAIL and keeps running (it is still the single refresher) instead of
// retrying "unreachable" forever. An address the agent cannot even build a
// client for stops it at start with 78 (the units do not restart on it). The
// runbook's alert table says each of these, for the line each one writes.
func TestVaultSchemeMismatchIsConfigError(t *testing.T) {
	w := newWorld(t)
	w.login()
	w.withVaultAddr(strings.Replace(w.srv.Addr, "http://", "https://", 1))
	r := w.runWith(nil, nil, time.Minute, "sync")
	w.mustCode(r, 78, "sync with https:// against an http listener")
	if !strings.Contains(r.stderr, "plain http") || !strings.Contains(r.stderr, "http://") {
		t.Errorf("sync does not say what to fix:\n%s", r.stderr)
	}
	if strings.Contains(r.stderr, "unreachable") {
		t.Errorf("a configuration mistake reported as an outage:\n%s", r.stderr)
	}
	// The agent says so once, as FAIL, and stays: it is still the single
	// refresher, and it keeps the newest login pending on disk.
	a := w.startAgentProc(nil, nil, "--retry-max", "1s")
	failLine := regexp.MustCompile(`(?m)^\S+ FAIL vault: .*plain http.*refreshes go on`)
	eventually(t, 20*time.Second, "the FAIL naming the setting to fix", func() bool { return failLine.MatchString(w.syncLog()) })
	l := w.rotate(w.login())
	eventually(t, 20*time.Second, "the new login kept pending", func() bool {
		b, _ := os.ReadFile(filepath.Join(w.state, "pending-backup.json"))
		return strings.Contains(string(b), l.RefreshToken)
	})
	// Several retries at the 1 s cap: still one FAIL, and the agent runs.
	w.waitRetries(t, 3, "backups with the misconfigured address")
	select {
	case <-a.done:
		t.Fatalf("the agent stopped on a misconfigured VAULT_ADDR:\n%s", a.output())
	default:
	}
	if n := len(failLine.FindAllString(w.syncLog(), -1)); n != 1 {
		t.Errorf("%d FAIL lines for the misconfigured address; want 1:\n%s", n, w.syncLog())
	}
	row := runbookRowFor(t, failLine.FindString(w.syncLog()))
	if !strings.Contains(row, "keeps running (`active`)") || strings.Contains(row, "exited 78") {
		t.Errorf("the runbook's row for the line the running agent wrote does not say it keeps running:\n%s", row)
	}
	a.stop()

	// A VAULT_ADDR that is no address at all: the agent cannot start.
	w.withVaultAddr("vault.example.internal:8200")
	b := w.startAgentProc(nil, nil)
	select {
	case <-b.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the agent runs with a VAULT_ADDR that is no address:\n%s", b.output())
	}
	if code := b.cmd.ProcessState.ExitCode(); code != 78 {
		t.Errorf("agent with a VAULT_ADDR that is no address exited %d; want 78:\n%s", code, b.output())
	}
	line := strings.TrimSpace(b.output())
	if !strings.Contains(line, "is not an address") {
		t.Fatalf("the agent does not say what is wrong:\n%s", line)
	}
	row = runbookRowFor(t, line)
	if !strings.Contains(row, "exited 78") || !strings.Contains(row, "not restarted") {
		t.Errorf("the runbook's row for the line the stopped agent wrote does not say it stopped with 78, not restarted:\n%s", row)
	}
}

// runbookRowFor is the row of the runbook's alert table ("the FAIL says")
// that quotes line: its first quoted fragment and one more are in line. It
// fails the test unless exactly one row does.
func runbookRowFor(t *testing.T, line string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	rb := string(b)
	i := strings.Index(rb, "| the FAIL says |")
	if i < 0 {
		t.Fatal("the runbook has no alert table")
	}
	table := rb[i:]
	table = table[:strings.Index(table, "\n\n")]
	quoted := regexp.MustCompile("`([^`]+)`")
	var rows []string
	for _, r := range strings.Split(table, "\n")[2:] {
		cells := strings.Split(r, "|")
		if len(cells) < 4 {
			continue
		}
		qs := quoted.FindAllStringSubmatch(cells[1], -1)
		if len(qs) < 2 || !strings.Contains(line, qs[0][1]) {
			continue
		}
		for _, q := range qs[1:] {
			if strings.Contains(line, q[1]) {
				rows = append(rows, r)
				break
			}
		}
	}
	if len(rows) != 1 {
		t.Fatalf("%d rows of the runbook's alert table quote %q; want 1:\n%s", len(rows), line, strings.Join(rows, "\n"))
	}
	return rows[0]
}

// A re-provisioned Vault token is used within a second of being installed,
// even when the agent's backoff (here its default 2 min cap) has far to run;
// the FAIL about the revoked token is one line saying what to do.
func TestAgentUsesReprovisionedTokenAtOnce(t *testing.T) {
	w := newWorld(t)
	l := w.login()
	w.startAgent(nil, "--retry-max", "2m")
	eventually(t, 20*time.Second, "initial backup", w.vaultHolds(l))
	ctx := context.Background()
	if err := vsrv.Root().Auth().Token().RevokeOrphanWithContext(ctx, w.user.Token); err != nil {
		t.Fatal(err)
	}
	l = w.rotate(l)
	eventually(t, 20*time.Second, "the refused token reported", func() bool {
		return strings.Contains(w.syncLog(), "claude-auth-sync provision")
	})
	// The token routine itself has met the refused token: it now waits out
	// its backoff (at least the 2 min cap for a refused token) unless the
	// token file changes.
	eventually(t, 20*time.Second, "the token routine's FAIL about the refused token", func() bool {
		return regexp.MustCompile(`(?m)^\S+ FAIL vault token: .*403`).MatchString(w.syncLog())
	})
	for _, line := range strings.Split(w.syncLog(), "\n") {
		if strings.Contains(line, " FAIL ") && strings.Contains(line, "403") &&
			!strings.Contains(line, "systemctl start claude-auth-sync@"+w.name+".service") {
			t.Errorf("FAIL about the refused token does not say what to do: %q", line)
		}
	}
	w.reprovision(ctx)
	installed := time.Now()
	// Bounded well below the backoff the agent used to wait out (2 min).
	eventually(t, 5*time.Second, "newest login backed up with the new token", w.vaultHolds(l))
	t.Logf("the new token was used %s after it was installed", time.Since(installed).Round(time.Millisecond))
}

// The agent's start, its own refreshes and its stop reach sync.log as status
// lines, and Ctrl-C (SIGINT) of an agent at a terminal prints that it stopped.
func TestAgentLifecycleInSyncLog(t *testing.T) {
	w := newWorld(t)
	w.fake.ExpiresIn = 6 * time.Second
	w.writeLogin(w.fake.Issue())
	a := w.startAgent([]string{"CLAUDE_AUTH_REFRESH_LEAD=3s"})
	eventually(t, 20*time.Second, "a refresh in sync.log", func() bool {
		return regexp.MustCompile(`(?m)^\S+ OK refreshed the login ahead of Claude \(valid until \S+\)$`).MatchString(w.syncLog())
	})
	_ = a.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-a.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not stop on SIGINT")
	}
	if code := a.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("agent exit code after SIGINT = %d; want 0", code)
	}
	if !regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d OK agent stopped`).MatchString(a.output()) {
		t.Errorf("the agent did not say it stopped:\n%s", a.output())
	}
	log := w.syncLog()
	for _, re := range []string{`(?m)^\S+ OK agent started \(pid \d+, .*\): watching `, `(?m)^\S+ OK agent stopped \(pid \d+\)`} {
		if !regexp.MustCompile(re).MatchString(log) {
			t.Errorf("sync.log has no line matching %s:\n%s", re, log)
		}
	}
	w.secrets = append(w.secrets, w.fake.Issued()...)
}
