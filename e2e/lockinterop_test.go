package e2e_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// ourCmd runs claude-auth-sync as the claude user u (local store, the fake's
// token endpoint reached directly).
func ourCmd(u *claudeUser, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(binDir, "claude-auth-sync"), args...)
	cmd.Env = append(append([]string(nil), u.env...),
		"CLAUDE_AUTH_CLAUDE_BIN="+u.bin, "CLAUDE_AUTH_OAUTH_TOKEN_URL="+u.api.URL+"/v1/oauth/token",
		"CLAUDE_AUTH_OAUTH_USER_AGENT="+agentUA, "CLAUDE_AUTH_SYSTEM_CONFIG="+filepath.Join(u.home, "none"),
		"CLAUDE_AUTH_JOURNAL_SOCKET=off", "VAULT_ADDR=")
	return cmd
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// While we hold Claude's locks (our refresh is in flight), a real Claude that
// needs to refresh waits, then re-reads the file and uses our new login: one
// refresh in all, no invalid_grant. Without the wait, both would have spent the
// same refresh token.
func TestLockInteropClaudeWaitsForUs(t *testing.T) {
	for _, v := range claudeVersions {
		t.Run(v, func(t *testing.T) {
			u := newClaudeUser(t, v)
			u.login(time.Now().Add(2 * time.Minute)) // Claude would refresh this
			u.fake.SetTokenDelay(3 * time.Second)
			ours := ourCmd(u, "refresh")
			var out bytes.Buffer
			ours.Stdout, ours.Stderr = &out, &out
			if err := ours.Start(); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "our refresh holds Claude's legacy lock", func() bool { return exists(u.legacy) })
			r := u.run(60*time.Second, claudeCheckArgs...)
			if err := ours.Wait(); err != nil {
				t.Fatalf("our refresh: %v\n%s", err, out.String())
			}
			if r.err != nil || r.stdout != "AUTH_OK\n" {
				t.Fatalf("claude check while we refreshed: %v %q", r.err, r.stdout)
			}
			c := u.fake.Counters()
			by := u.fake.RefreshesBy()
			t.Logf("%s: claude's run took %s while our refresh held the locks; refreshes %v", v, r.took.Round(time.Millisecond), by)
			if c.Refreshes != 1 || by[agentUA] != 1 || c.InvalidGrant != 0 {
				t.Errorf("refreshes %v, invalid_grant %d; want exactly our one refresh: Claude must have waited and re-read", by, c.InvalidGrant)
			}
		})
	}
}

// While a real Claude holds its locks (its refresh is in flight), our refresh
// waits, re-reads the file under the locks and finds Claude's new login: that
// was the refresh (a brokered refresh stops when someone else already
// refreshed, so 64 concurrent ones make one). The endpoint receives only
// Claude's old token, never a stale one from us; no invalid_grant.
func TestLockInteropWeWaitForClaude(t *testing.T) {
	for _, v := range claudeVersions {
		t.Run(v, func(t *testing.T) {
			u := newClaudeUser(t, v)
			first := u.login(time.Now().Add(2 * time.Minute))
			u.fake.SetTokenDelay(3 * time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			claude := u.command(ctx, claudeCheckArgs...)
			var cout bytes.Buffer
			claude.Stdout = &cout
			if err := claude.Start(); err != nil {
				t.Fatal(err)
			}
			eventually(t, 20*time.Second, "claude holds its legacy lock", func() bool { return exists(u.legacy) })
			start := time.Now()
			out, err := ourCmd(u, "refresh").CombinedOutput()
			took := time.Since(start)
			if err != nil {
				t.Fatalf("our refresh: %v\n%s", err, out)
			}
			if err := claude.Wait(); err != nil || cout.String() != "AUTH_OK\n" {
				t.Fatalf("claude: %v %q", err, cout.String())
			}
			got := u.fake.Received()
			t.Logf("%s: our refresh took %s while Claude held the locks; refreshes %v", v, took.Round(time.Millisecond), u.fake.RefreshesBy())
			if len(got) != 1 || got[0] != first.RefreshToken {
				t.Errorf("refresh tokens received: %d, first is Claude's old one: %v; want only Claude's", len(got), len(got) > 0 && got[0] == first.RefreshToken)
			}
			if !bytes.Contains(out, []byte("someone already refreshed")) {
				t.Errorf("our refresh did not say Claude had just refreshed:\n%s", out)
			}
			if c := u.fake.Counters(); c.InvalidGrant != 0 || c.Refreshes != 1 {
				t.Errorf("counters %+v; want Claude's one refresh and no invalid_grant", c)
			}
		})
	}
}
