package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
)

const agentUA = "claude-auth-sync-e2e-agent"

// TestRealClaudeWithAgent: the real Claude Code CLI, 8 long-running stream-json
// sessions plus one-shot checks, the agent running, at least 10 compressed token
// lifetimes. Tokens live 306 s by the clock Claude reads, so Claude would refresh
// 6 s after each rotation (at 5 minutes left); the agent's lead is 303 s, so it
// refreshes after 3 s, first. It must show: no invalid_grant, no failed turn, the
// agent did every refresh, and each refresh token the endpoint receives is
// already in Vault. The early-expiry variant ends access tokens server-side
// after 2 s (a 401 while locally valid): sessions keep working.
func TestRealClaudeWithAgent(t *testing.T) {
	for _, v := range claudeVersions {
		t.Run(v, func(t *testing.T) { realClaudeScenario(t, v, false) })
		t.Run(v+"/early-expiry", func(t *testing.T) { realClaudeScenario(t, v, true) })
	}
}

func realClaudeScenario(t *testing.T, version string, early bool) {
	u := newClaudeUser(t, version)
	ctx := context.Background()
	userSeq++
	name := fmt.Sprintf("realcli-%d", userSeq)
	user, err := vsrv.Provision(ctx, name, filepath.Join(u.home, ".config", "claude-auth-sync", "vault-token"))
	if err != nil {
		t.Fatal(err)
	}
	kv := vsrv.Root().KVv2("secret")
	vaultRefresh := func() string {
		s, err := kv.Get(ctx, user.Path)
		if err != nil {
			return ""
		}
		js, _ := s.Data["claude_ai_oauth_json"].(string)
		var o struct{ RefreshToken string }
		_ = json.Unmarshal([]byte(js), &o)
		return o.RefreshToken
	}
	var notInVault atomic.Int64
	u.fake.BeforeRefresh = func(k, ua string) {
		if vaultRefresh() != k {
			notInVault.Add(1)
			t.Logf("the token endpoint received a refresh token Vault does not hold (from %q)", ua)
		}
	}
	u.fake.SetServerLifetime(0)
	u.fake.ExpiresIn = 306 * time.Second
	if early {
		u.fake.SetServerLifetime(2 * time.Second)
	}
	u.writeCreds(u.fake.Issue())

	// The agent, as the user would run it.
	w := &world{t: t, srv: vsrv, name: name, home: u.home, creds: u.credsPath(),
		state: filepath.Join(u.home, ".local", "state", "claude-auth-sync"), user: user, fake: u.fake}
	w.env = append(append([]string(nil), u.env...),
		"VAULT_ADDR="+vsrv.Addr, "CLAUDE_AUTH_USER="+name, "CLAUDE_AUTH_CLAUDE_BIN="+u.bin,
		"CLAUDE_AUTH_OAUTH_TOKEN_URL="+u.api.URL+"/v1/oauth/token", "CLAUDE_AUTH_OAUTH_USER_AGENT="+agentUA,
		"CLAUDE_AUTH_REFRESH_LEAD=303s", "CLAUDE_AUTH_CHECK_INTERVAL=6h",
		"CLAUDE_AUTH_SYSTEM_CONFIG="+filepath.Join(u.home, "none"), "CLAUDE_AUTH_JOURNAL_SOCKET=off")
	t.Cleanup(w.assertNoSecrets)
	w.secrets = append(w.secrets, user.Token)
	w.startAgent(nil)

	// 8 long-running sessions.
	var turnsOK, turnsFailed, shotsOK, shotsFailed atomic.Int64
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Go(func() { session(t, u, runCtx, &turnsOK, &turnsFailed) })
	}
	// One-shot checks, the agent's own kind of run.
	wg.Go(func() {
		for runCtx.Err() == nil {
			r := u.run(60*time.Second, claudeCheckArgs...)
			if r.err == nil && r.stdout == "AUTH_OK\n" {
				shotsOK.Add(1)
			} else if runCtx.Err() == nil {
				shotsFailed.Add(1)
				t.Logf("one-shot failed: %v %q %q", r.err, r.stdout, r.stderr)
			}
			time.Sleep(time.Second) // the one-shots' pace, one a second: the load, not a wait
		}
	})
	deadline := time.Now().Add(150 * time.Second)
	for u.fake.Counters().Refreshes < 10 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond) // the poll interval of this bounded wait (checked below)
	}
	stop()
	wg.Wait()

	c := u.fake.Counters()
	by := u.fake.RefreshesBy()
	t.Logf("%s early=%v: refreshes %d (by client: %v), invalid_grant %d, 401 %d, 403 %d; turns ok %d failed %d; one-shots ok %d failed %d",
		version, early, c.Refreshes, by, c.InvalidGrant, c.Unauthorized, c.Forbidden, turnsOK.Load(), turnsFailed.Load(), shotsOK.Load(), shotsFailed.Load())
	if c.Refreshes < 10 {
		t.Errorf("only %d token lifetimes within the time limit; want at least 10", c.Refreshes)
	}
	if c.InvalidGrant != 0 {
		t.Errorf("invalid_grant = %d; want 0", c.InvalidGrant)
	}
	if turnsFailed.Load() != 0 || shotsFailed.Load() != 0 {
		t.Errorf("failed turns %d, failed one-shots %d; want 0", turnsFailed.Load(), shotsFailed.Load())
	}
	if turnsOK.Load() < 8 || shotsOK.Load() < 1 {
		t.Errorf("too little traffic to mean anything: %d turns, %d one-shots", turnsOK.Load(), shotsOK.Load())
	}
	if n := notInVault.Load(); n != 0 {
		t.Errorf("%d times the endpoint received a refresh token Vault did not hold yet", n)
	}
	if !early && by[agentUA] != c.Refreshes {
		t.Errorf("refreshes by the agent = %d of %d; want all of them", by[agentUA], c.Refreshes)
	}
	// Refresh-to-Vault: the agent's own measure, from the file change to the
	// Vault write.
	var lags []time.Duration
	for _, m := range regexp.MustCompile(`backed up the (?:changed )?login to vault \S+ \S+ \(v\d+, ([0-9.]+[µm]?s) after the change\)`).FindAllStringSubmatch(w.syncLog(), -1) {
		if d, err := time.ParseDuration(strings.Replace(m[1], "µ", "u", 1)); err == nil {
			lags = append(lags, d)
		}
	}
	if len(lags) > 0 {
		sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
		t.Logf("refresh-to-vault over %d backups: p50 %s p99 %s worst %s", len(lags), lags[len(lags)/2], lags[len(lags)*99/100], lags[len(lags)-1])
	}
	w.secrets = append(w.secrets, u.fake.Issued()...)
	if strings.Contains(w.syncLog(), " FAIL ") {
		t.Errorf("FAIL lines in sync.log:\n%s", w.syncLog())
	}
}

// session runs one stream-json Claude process, one turn about every 700 ms.
func session(t *testing.T, u *claudeUser, ctx context.Context, ok, failed *atomic.Int64) {
	cmd := u.command(context.Background(), "-p", "--input-format", "stream-json", "--output-format", "stream-json",
		"--verbose", "--model", "haiku", "--no-session-persistence", "--tools", "", "--disable-slash-commands", "--setting-sources", "")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Error(err)
		return
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Error(err)
		return
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Error(err)
		return
	}
	defer func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	msg := `{"type":"user","message":{"role":"user","content":"Reply with exactly AUTH_OK and nothing else."}}` + "\n"
	for ctx.Err() == nil {
		if _, err := io.WriteString(stdin, msg); err != nil {
			failed.Add(1)
			t.Logf("session stdin: %v", err)
			return
		}
		for {
			if !lines.Scan() {
				failed.Add(1)
				t.Logf("session ended unexpectedly: %v", lines.Err())
				return
			}
			var ev struct {
				Type    string `json:"type"`
				Subtype string `json:"subtype"`
				IsError bool   `json:"is_error"`
				Result  string `json:"result"`
			}
			if json.Unmarshal(lines.Bytes(), &ev) != nil || ev.Type != "result" {
				continue
			}
			if ev.IsError || ev.Subtype != "success" {
				failed.Add(1)
				t.Logf("turn failed: %s", fakeanthropic.Mask(lines.Text()))
			} else {
				ok.Add(1)
			}
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(700 * time.Millisecond):
		}
	}
}
