// Command agent-bench measures the agent against a real Vault dev server:
// backup lag to the new version readable in Vault (p50/p99/max over N
// rotations) for a rename over .credentials.json and for an in-place rewrite
// (open O_TRUNC, write, close), a direct Vault write+read as the floor, what a
// burst of 1,000 writes becomes in Vault writes, and the idle cost (CPU time,
// wakeups, RSS) over a quiet period.
// It reports; it asserts nothing. Run it through e2e/bench/agent.sh.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakemcp"
	"github.com/claude-auth-sync/claude-auth-sync/e2e/vaultserver"
)

func main() {
	agentBin := flag.String("agent", "", "claude-auth-sync binary")
	claudeBin := flag.String("claude", "", "stand-in claude binary")
	rotations := flag.Int("rotations", 1000, "rotations for the lag measurement")
	idle := flag.Duration("idle", 60*time.Second, "quiet period for the idle measurement")
	gap := flag.Duration("gap", 0, "pause after each measured rotation (0: back to back, the next one as soon as Vault holds the last)")
	agentLog := flag.String("agent-log", "", "file for the agent's stdout and stderr (default: discarded)")
	mcpServers := flag.Int("mcp-servers", 0, "MCP server logins (mcpOAuth entries, 1 h from expiry) in the credentials file")
	idleOnly := flag.Bool("idle-only", false, "measure only the idle cost")
	flag.Parse()
	if *agentBin == "" || *claudeBin == "" {
		log.Fatal("need --agent and --claude")
	}
	dir, _ := os.MkdirTemp("", "agent-bench-")
	defer os.RemoveAll(dir)
	srv, err := vaultserver.Start(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Stop()
	home := filepath.Join(dir, "home")
	ctx := context.Background()
	// The agent acts for a real account (it looks --user up in the user
	// database): the caller's own, with HOME pointing into the sandbox.
	me, err := osuser.Current()
	if err != nil {
		log.Fatal(err)
	}
	user, err := srv.Provision(ctx, me.Username, filepath.Join(home, ".config", "claude-auth-sync", "vault-token"))
	if err != nil {
		log.Fatal(err)
	}
	fake := fakeanthropic.New()
	api := httptest.NewServer(fake.Handler())
	defer api.Close()
	creds := filepath.Join(home, ".claude", ".credentials.json")
	write := func(l fakeanthropic.Login) {
		tmp := creds + ".tmp"
		if err := os.WriteFile(tmp, fakeanthropic.CredentialsJSON(l), 0o600); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(tmp, creds); err != nil {
			log.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Dir(creds), 0o700)
	l := fake.Issue()
	write(l)
	if *mcpServers > 0 {
		seedMCP(creds, *mcpServers)
	}

	// The first check at once, before the measurements, not at a random
	// moment within them.
	cmd := exec.Command(*agentBin, "run", "--check-interval", "24h", "--check-spread", "0")
	cmd.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin", "VAULT_ADDR=" + srv.Addr, "CLAUDE_AUTH_USER=" + me.Username,
		"ANTHROPIC_BASE_URL=" + api.URL, "CLAUDE_AUTH_CLAUDE_BIN=" + *claudeBin,
		"CLAUDE_AUTH_SYSTEM_CONFIG=" + filepath.Join(dir, "none"), "CLAUDE_AUTH_JOURNAL_SOCKET=off"}
	cmd.Stdout, cmd.Stderr = nil, nil
	if *agentLog != "" {
		f, err := os.Create(*agentLog)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()

	kv := srv.Root().KVv2("secret")
	holds := func(refresh string) bool {
		s, err := kv.Get(ctx, user.Path)
		if err != nil {
			return false
		}
		js, _ := s.Data["claude_ai_oauth_json"].(string)
		return strings.Contains(js, `"refreshToken":"`+refresh+`"`)
	}
	waitFor := func(refresh string, limit time.Duration) time.Duration {
		start := time.Now()
		for !holds(refresh) {
			if time.Since(start) > limit {
				log.Fatalf("vault did not get the login within %s", limit)
			}
			time.Sleep(200 * time.Microsecond)
		}
		return time.Since(start)
	}
	waitFor(l.RefreshToken, 30*time.Second)
	time.Sleep(2 * time.Second) // let the start-up pass finish
	if !*idleOnly {

		// Lag, one rotation at a time, for each way a writer replaces the login:
		// from the moment the new content is being put in place to the moment the
		// new version is readable in Vault.
		lag := func(mode string, put func(l fakeanthropic.Login) time.Time) {
			lags := make([]time.Duration, 0, *rotations)
			for i := 0; i < *rotations; i++ {
				n, err := fake.Rotate(l.RefreshToken)
				if err != nil {
					log.Fatal(err)
				}
				l = n
				start := put(l)
				// Polled gently (a tight poll would compete with the agent and
				// Vault for the two cores); the lag is Vault's own record of
				// when it stored the version, against the same clock.
				for !holds(l.RefreshToken) {
					if time.Since(start) > 30*time.Second {
						log.Fatalf("%s: rotation not backed up within 30s", mode)
					}
					time.Sleep(2 * time.Millisecond)
				}
				lags = append(lags, storedAt(ctx, kv, user.Path).Sub(start))
				time.Sleep(*gap)
			}
			fmt.Printf("backup lag over %d rotations (%s -> version readable in vault): %s\n", len(lags), mode, quantiles(lags))
		}
		// Rename: the new file is written beside it, then renamed over it (what
		// Claude and careful editors do); the clock starts at the rename.
		lag("rename", func(l fakeanthropic.Login) time.Time {
			tmp := creds + ".tmp"
			if err := os.WriteFile(tmp, fakeanthropic.CredentialsJSON(l), 0o600); err != nil {
				log.Fatal(err)
			}
			start := time.Now()
			if err := os.Rename(tmp, creds); err != nil {
				log.Fatal(err)
			}
			return start
		})
		// In place: a naive writer truncates the file, writes, closes; the clock
		// starts at the open that truncates it.
		lag("in-place", func(l fakeanthropic.Login) time.Time {
			start := time.Now()
			f, err := os.OpenFile(creds, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				log.Fatal(err)
			}
			if _, err := f.Write(fakeanthropic.CredentialsJSON(l)); err != nil {
				log.Fatal(err)
			}
			if err := f.Close(); err != nil {
				log.Fatal(err)
			}
			return start
		})
		// The floor: one write and one read of a version straight to Vault on the
		// same loopback, without the agent (a scratch path, the root token).
		floor := make([]time.Duration, 0, *rotations)
		for i := 0; i < *rotations; i++ {
			start := time.Now()
			if _, err := kv.Put(ctx, "bench-floor", map[string]any{"n": i}); err != nil {
				log.Fatal(err)
			}
			if _, err := kv.Get(ctx, "bench-floor"); err != nil {
				log.Fatal(err)
			}
			floor = append(floor, time.Since(start))
		}
		fmt.Printf("vault floor over %d rounds (one kv write + one kv read, no agent): %s\n", len(floor), quantiles(floor))

		// Burst: 1,000 writes in about a second.
		meta, _ := kv.GetMetadata(ctx, user.Path)
		before := meta.CurrentVersion
		start := time.Now()
		for i := 0; i < 1000; i++ {
			n, _ := fake.Rotate(l.RefreshToken)
			l = n
			write(l)
			time.Sleep(time.Millisecond)
		}
		burst := time.Since(start)
		waitFor(l.RefreshToken, 30*time.Second)
		meta, _ = kv.GetMetadata(ctx, user.Path)
		fmt.Printf("burst: 1000 writes in %s became %d vault writes; vault ends with the final state\n", burst.Round(time.Millisecond), meta.CurrentVersion-before)
	}

	// Idle: nothing happens for the idle period.
	time.Sleep(2 * time.Second)
	pid := cmd.Process.Pid
	cpu0, sw0 := procCPU(pid)
	time.Sleep(*idle)
	cpu1, sw1 := procCPU(pid)
	per := float64(time.Minute) / float64(*idle)
	fmt.Printf("idle %s: CPU %.2f ms (%.2f ms per minute), %d context switches (%.1f per minute), RSS %d KiB\n",
		*idle, float64(cpu1-cpu0)/1e6, float64(cpu1-cpu0)/1e6*per, sw1-sw0, float64(sw1-sw0)*per, rss(pid))
}

// quantiles sorts ds and says its p50, p99 and max.
// storedAt is when Vault stored the latest version at path (its
// created_time), the moment from which that version is readable.
func storedAt(ctx context.Context, kv *vaultapi.KVv2, path string) time.Time {
	s, err := kv.Get(ctx, path)
	if err != nil || s.VersionMetadata == nil {
		log.Fatalf("read the version's metadata: %v", err)
	}
	return s.VersionMetadata.CreatedTime
}

func quantiles(ds []time.Duration) string {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	q := func(p float64) time.Duration {
		return ds[min(len(ds)-1, int(float64(len(ds))*p))].Round(10 * time.Microsecond)
	}
	return fmt.Sprintf("p50 %s  p99 %s  max %s", q(0.50), q(0.99), q(1))
}

// procCPU sums CPU time (ns, from schedstat) and context switches over threads.
func procCPU(pid int) (int64, int64) {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	var cpu, sw int64
	for _, t := range tasks {
		if b, err := os.ReadFile(t + "/schedstat"); err == nil {
			f := strings.Fields(string(b))
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				cpu += n
			}
		}
		if b, err := os.ReadFile(t + "/status"); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(line, "voluntary_ctxt_switches:") || strings.HasPrefix(line, "nonvoluntary_ctxt_switches:") {
					n, _ := strconv.ParseInt(strings.TrimSpace(line[strings.Index(line, ":")+1:]), 10, 64)
					sw += n
				}
			}
		}
	}
	return cpu, sw
}

func rss(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			n, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return n
		}
	}
	return 0
}

// seedMCP adds n MCP server logins to the credentials file, each an hour
// from expiry (due in 45 min: none is refreshed during the measurement).
func seedMCP(creds string, n int) {
	b, err := os.ReadFile(creds)
	if err != nil {
		log.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		log.Fatal(err)
	}
	entries := map[string]any{}
	for i := range n {
		name := fmt.Sprintf("server%d", i)
		url := fmt.Sprintf("https://mcp%d.invalid/mcp", i)
		entries[fakemcp.EntryKey(name, url, nil)] = map[string]any{"serverName": name, "serverUrl": url, "clientId": "c",
			"accessToken": fmt.Sprintf("bench-access-%d", i), "refreshToken": fmt.Sprintf("bench-refresh-%d", i),
			"expiresAt": time.Now().Add(time.Hour).UnixMilli(), "scope": "mcp",
			"discoveryState": map[string]any{"authorizationServerUrl": fmt.Sprintf("https://auth%d.invalid", i)}}
	}
	doc["mcpOAuth"] = entries
	out, _ := json.MarshalIndent(doc, "", "  ")
	if err := os.WriteFile(creds, out, 0o600); err != nil {
		log.Fatal(err)
	}
}
