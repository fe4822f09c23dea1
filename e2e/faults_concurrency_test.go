package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// 64 concurrent `exec`, `sync` and `refresh` and a starting agent, all at a
// token-expiry boundary (the login is due, and ends server-side seconds
// later), with the one refresh held in flight for 2 s so every process starts
// while it runs: exactly one refresh at the token endpoint, no invalid_grant,
// every process done within a bound (no deadlock), every `exec` command
// started with the refreshed login, the file valid, Vault holding the new
// login, and no FAIL.
func TestFaultConcurrentAtExpiryBoundary(t *testing.T) {
	rounds := faultIterations(t, 2, 0.02)
	for round := 0; round < rounds; round++ {
		t.Run(fmt.Sprintf("round %d", round), func(t *testing.T) { concurrentRound(t) })
	}
}

func concurrentRound(t *testing.T) {
	w := newWorld(t)
	w.fake.TokenDelay = 2 * time.Second
	// The access token ends (server side too) while the refresh is in
	// flight: checks after 1.5 s get 401 and ask for a forced refresh.
	w.fake.ServerLifetime = 1500 * time.Millisecond
	old := w.loginExpiringIn(time.Second)
	// Only that login: the refreshed one lives its full lifetime, or on a
	// loaded machine a check that comes 1.5 s after the refresh is refused
	// for real (a second refresh, and a FAIL that is the fake's doing; seen
	// in a 500-iteration fault run beside other work).
	w.fake.SetServerLifetime(0)
	hist := newVaultHistory(t, vsrv.Root(), w.user.Path)
	out := t.TempDir()

	type proc struct {
		kind string
		code int
		took time.Duration
		out  string
	}
	procs := make([]proc, 64)
	kinds := []string{"exec", "sync", "refresh"}
	a := w.startAgentProc(nil, nil)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range procs {
		procs[i].kind = kinds[i%3]
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			var args []string
			switch procs[i].kind {
			case "exec":
				args = []string{"exec", "--", "sh", "-c", `grep -o '"refreshToken": *"[^"]*"' "$HOME/.claude/.credentials.json" > "$0"`, filepath.Join(out, fmt.Sprint(i))}
			default:
				args = []string{procs[i].kind}
			}
			cmd := exec.CommandContext(ctx, filepath.Join(binDir, "claude-auth-sync"), args...)
			cmd.Env = w.env
			var b bytes.Buffer
			cmd.Stdout, cmd.Stderr = &b, &b
			t0 := time.Now()
			err := cmd.Run()
			procs[i].took = time.Since(t0)
			procs[i].out = b.String()
			if ee, ok := err.(*exec.ExitError); ok {
				procs[i].code = ee.ExitCode()
			} else if err != nil {
				procs[i].code = -1
			}
			if ctx.Err() != nil {
				procs[i].code = -2
			}
		})
	}
	wg.Wait()
	all := time.Since(start)
	var slowest time.Duration
	w.mu.Lock()
	for _, p := range procs {
		w.outputs = append(w.outputs, p.out)
		slowest = max(slowest, p.took)
	}
	w.mu.Unlock()
	for i, p := range procs {
		switch {
		case p.code == -2:
			t.Errorf("%s #%d did not finish within 90 s (a deadlock)", p.kind, i)
		case p.code != 0:
			t.Errorf("%s #%d: exit %d\n%s", p.kind, i, p.code, p.out)
		}
	}
	c := w.fake.Counters()
	if c.Refreshes != 1 || c.InvalidGrant != 0 {
		t.Errorf("fake counters %+v; want exactly one refresh and no invalid_grant\nsync.log (whose refresh was the other):\n%s\nagent:\n%s", c, w.syncLog(), a.output())
	}
	newRT := lastMintedRefresh(w)
	seen := map[string]int{}
	for i, p := range procs {
		if p.kind != "exec" {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(out, fmt.Sprint(i)))
		seen[strings.TrimSpace(string(b))]++
	}
	for k, n := range seen {
		if !strings.Contains(k, newRT) {
			t.Errorf("%d exec commands started with a login other than the refreshed one (old: %v, logged out: %v)", n, strings.Contains(k, old.RefreshToken), strings.Contains(k, `""`))
		}
	}
	if _, p := credsInvariant(t, w.creds, -1); p != "" {
		t.Error(p)
	}
	eventually(t, 20*time.Second, "the refreshed login in vault", func() bool { return w.vaultRefresh() == newRT })
	hist.check(t, issueOrder(w.fake))
	a.stop()
	if strings.Contains(w.syncLog(), " FAIL ") {
		t.Errorf("FAIL lines:\n%s", grepLines(w.syncLog(), " FAIL "))
	}
	faultReport(t, "64 processes (22 exec, 21 sync, 21 refresh) + agent: %d refresh, %d invalid_grant; all done in %s, slowest %s",
		c.Refreshes, c.InvalidGrant, all.Round(time.Millisecond), slowest.Round(time.Millisecond))
}
