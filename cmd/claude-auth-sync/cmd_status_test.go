package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

// TestStatusExtremeExpiry runs `status` and `status --json` on credentials
// files whose expiry no RFC 3339 time can hold: both succeed, the JSON parses,
// and the time reads as out of range.
func TestStatusExtremeExpiry(t *testing.T) {
	const (
		secretA = "sk-ant-oat01-STATUS-TEST-ACCESS"
		secretR = "sk-ant-ort01-STATUS-TEST-REFRESH"
	)
	for _, tc := range []struct {
		name, expiresAt string
		wantJSON        string // expires_at in the JSON, as an instant ("" = absent)
		wantOutOfRange  string // out_of_range.expires_at ("" = absent)
		wantText        string // the "access expires:" line starts so ("" = no line; "-" = a time)
		wantCode        int    // the exit code: whether the login is usable
	}{
		{"max int64", "9223372036854775807", "9999-12-31T23:59:59.999999999Z",
			"9223372036854775807 ms since the epoch, after year 9999",
			"out of range (9223372036854775807 ms since the epoch, after year 9999)", 0},
		{"min int64", "-9223372036854775808", "0000-01-01T00:00:00Z",
			"-9223372036854775808 ms since the epoch, before year 0",
			"out of range (-9223372036854775808 ms since the epoch, before year 0)", 0},
		{"1e18 as a float", "1e18", "9999-12-31T23:59:59.999999999Z",
			"1000000000000000000 ms since the epoch, after year 9999",
			"out of range (1000000000000000000 ms since the epoch, after year 9999)", 0},
		{"first ms of year 10000", "253402300800000", "9999-12-31T23:59:59.999999999Z",
			"253402300800000 ms since the epoch, after year 9999", "out of range (253402300800000", 0},
		// In range in UTC, maybe not in the local zone: written in UTC then.
		{"last ms of year 9999", "253402300799999", "9999-12-31T23:59:59.999Z", "", "-", 0},
		// The credentials package reads a number beyond ±2^62 ms as no number
		// at all: a broken login, and no time to show.
		{"1e300", "1e300", "", "", "", telemetry.StatusUnusable},
		{"ordinary", "1767225600000", "2026-01-01T00:00:00Z", "", "-", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := sandboxHome(t)
			creds := filepath.Join(dir, "credentials.json")
			body := `{"claudeAiOauth":{"accessToken":"` + secretA + `","refreshToken":"` + secretR +
				`","expiresAt":` + tc.expiresAt + `,"scopes":["user:inference"]}}`
			if err := os.WriteFile(creds, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{"--credentials", creds, "--state-dir", filepath.Join(dir, "state"),
				"--store", "file", "--claude", filepath.Join(dir, "no-claude")}

			var out, errb bytes.Buffer
			code := Main(append([]string{"status", "--json"}, args...), &out, &errb)
			if code != tc.wantCode || errb.Len() > 0 {
				t.Fatalf("status --json: exit %d, stderr %q; want %d and nothing", code, errb.String(), tc.wantCode)
			}
			var got struct {
				ExpiresAt  *string           `json:"expires_at"`
				OutOfRange map[string]string `json:"out_of_range"`
			}
			if err := json.Unmarshal(out.Bytes(), &got); err != nil {
				t.Fatalf("status --json printed no valid JSON: %v\n%s", err, out.String())
			}
			switch {
			case tc.wantJSON == "" && got.ExpiresAt != nil:
				t.Errorf("expires_at = %q; want none", *got.ExpiresAt)
			case tc.wantJSON != "" && got.ExpiresAt == nil:
				t.Errorf("no expires_at; want %s", tc.wantJSON)
			case tc.wantJSON != "":
				g, err := time.Parse(time.RFC3339Nano, *got.ExpiresAt)
				w, _ := time.Parse(time.RFC3339Nano, tc.wantJSON)
				if err != nil || !g.Equal(w) {
					t.Errorf("expires_at = %q (%v); want %s", *got.ExpiresAt, err, tc.wantJSON)
				}
			}
			if g := got.OutOfRange["expires_at"]; g != tc.wantOutOfRange {
				t.Errorf("out_of_range.expires_at = %q; want %q", g, tc.wantOutOfRange)
			}

			out.Reset()
			errb.Reset()
			code = Main(append([]string{"status"}, args...), &out, &errb)
			if code != tc.wantCode || errb.Len() > 0 {
				t.Fatalf("status: exit %d, stderr %q; want %d and nothing", code, errb.String(), tc.wantCode)
			}
			var line string
			for _, l := range strings.Split(out.String(), "\n") {
				if v, ok := strings.CutPrefix(l, "access expires:"); ok {
					line = strings.TrimSpace(v)
				}
			}
			switch tc.wantText {
			case "":
				if line != "" {
					t.Errorf("access expires: %q; want no such line", line)
				}
			case "-":
				if _, err := time.Parse(time.RFC3339, strings.Fields(line + " x")[0]); err != nil {
					t.Errorf("access expires: %q; want a time: %v", line, err)
				}
			default:
				if !strings.HasPrefix(line, tc.wantText) {
					t.Errorf("access expires: %q; want %q\n%s", line, tc.wantText, out.String())
				}
			}
			if strings.Contains(out.String(), "2562047h") {
				t.Errorf("a saturated duration shows:\n%s", out.String())
			}
			for _, s := range []string{secretA, secretR} {
				if strings.Contains(out.String(), s) {
					t.Errorf("a token shows in the output")
				}
			}
		})
	}
}

// TestPrintJSONError: a report that cannot be encoded says why on stderr and
// exits non-zero, with nothing on stdout.
func TestPrintJSONError(t *testing.T) {
	far := time.UnixMilli(math.MaxInt64)
	for _, tc := range []struct {
		name    string
		r       telemetry.Report
		code    int
		wantErr string
	}{
		{"fine", telemetry.Report{User: "alice"}, 0, ""},
		{"a record time past year 9999", telemetry.Report{User: "alice", LastBackup: &telemetry.BackupRecord{At: far}},
			engine.ExitFail, "claude-auth-sync status: cannot write the report as JSON: "},
		{"an unclamped report time", telemetry.Report{User: "alice", ExpiresAt: &far},
			engine.ExitFail, "year outside of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := printJSON(&out, &errb, tc.r)
			if code != tc.code {
				t.Errorf("exit %d; want %d", code, tc.code)
			}
			if tc.wantErr == "" {
				if errb.Len() > 0 || !json.Valid(out.Bytes()) {
					t.Errorf("stdout %q, stderr %q; want JSON and no error", out.String(), errb.String())
				}
				return
			}
			if out.Len() > 0 {
				t.Errorf("stdout %q; want nothing", out.String())
			}
			if !strings.Contains(errb.String(), tc.wantErr) {
				t.Errorf("stderr %q; want it to contain %q", errb.String(), tc.wantErr)
			}
		})
	}
}

// TestWhenFar: beyond ±292 years Sub saturates; when says so rather than
// print the saturated duration as if it were the distance.
func TestWhenFar(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		t    time.Time
		want string
	}{
		{"soon", now.Add(90 * time.Minute), "(in 1h30m)"},
		{"just past", now.Add(-400 * time.Millisecond), "(0s ago)"},
		{"year 9999", time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), "(in more than 292 years)"},
		{"year 1", time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), "(more than 292 years ago)"},
		{"max", time.UnixMilli(math.MaxInt64), "(in more than 292 years)"},
		{"min", time.UnixMilli(math.MinInt64), "(more than 292 years ago)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := when(tc.t, now); !strings.HasSuffix(got, tc.want) {
				t.Errorf("when(%v) = %q; want it to end in %q", tc.t, got, tc.want)
			}
		})
	}
}

// TestHuman: distances as a person reads them, never Go's 767h59m59s.
func TestHuman(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{400 * time.Millisecond, "0s"},
		{45 * time.Second, "45s"},
		{2 * time.Minute, "2m"},
		{2*time.Minute + 5*time.Second, "2m5s"},
		{9*time.Minute + 59*time.Second + 999*time.Millisecond, "9m59s"},
		{42*time.Minute + 30*time.Second, "42m"},
		{8*time.Hour - time.Second, "7h59m"},
		{8 * time.Hour, "8h"},
		{51 * time.Hour, "2d3h"},
		{767*time.Hour + 59*time.Minute + 59*time.Second, "31d"},
		{-2 * time.Minute, "2m"},
	} {
		if got := human(tc.d); got != tc.want {
			t.Errorf("human(%v) = %q; want %q", tc.d, got, tc.want)
		}
	}
	for _, tc := range []struct {
		ms   float64
		want string
	}{
		{0.4, "0.4 ms"}, {350.2, "350 ms"}, {1500, "1.5s"}, {120010.9, "2m"}, {7200000, "2h"},
	} {
		if got := lag(tc.ms); got != tc.want {
			t.Errorf("lag(%v) = %q; want %q", tc.ms, got, tc.want)
		}
	}
}

// TestPrintStatus: the text form says the same as the JSON, in words: the
// setup token's end in setup-token mode, the CLI or where it was looked for,
// the agent's pid and lag as a person reads them.
func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	ttl := int64(767*3600 + 59*60 + 59)
	lagAt := now.Add(-2 * time.Minute)
	for _, tc := range []struct {
		name      string
		r         telemetry.Report
		want, not []string
	}{
		{"setup-token mode", telemetry.Report{User: "alice", Mode: "setup-token", Usable: true, Login: "usable", Verdict: "usable (on the admin's setup token)",
			SetupToken:    &telemetry.SetupTokenReport{ExpiresAt: at(40 * 24 * time.Hour), ExpiresFrom: "vault"},
			VaultTokenTTL: &ttl, Claude: telemetry.ClaudeCLI{Path: "/home/alice/.local/bin/claude", Version: "2.1.332 (Claude Code)"}},
			[]string{"setup token:      expires ", "(in 40d)", "verdict:          usable (on the admin's setup token)\nuser:", "vault token ttl:  31d\n",
				"claude:           /home/alice/.local/bin/claude 2.1.332 (Claude Code)\n"},
			[]string{"767h", "next step", "usable:"}},
		{"first-seen end", telemetry.Report{Mode: "setup-token", SetupToken: &telemetry.SetupTokenReport{ExpiresAt: at(-time.Hour), ExpiresFrom: "first-seen"},
			Unusable: "the setup token expired; ask your admin for a new one", Verdict: "not usable: the setup token expired", NextStep: "ask your admin for a new one"},
			[]string{"(1h ago), one year after this host first saw it", "verdict:          not usable: the setup token expired\nnext step:        ask your admin for a new one\n"}, nil},
		{"logged out, agent running", telemetry.Report{Mode: "rotating", Login: "missing", Unusable: "not logged in",
			Claude: telemetry.ClaudeCLI{Tried: []string{"claude on PATH (/usr/bin:/bin)", "/home/alice/.local/bin/claude"}},
			Agent: telemetry.AgentReport{Running: true, PID: 4242, AgentState: &telemetry.AgentState{Watch: "inotify",
				LastBackup: &lagAt, LastBackupVer: 5, LastBackupLagMs: 120010.9, Backups: 2}}},
			[]string{"claude:           not found (tried claude on PATH (/usr/bin:/bin), /home/alice/.local/bin/claude)\n",
				"agent:            running, pid 4242\n", "agent backup:     v5, ", "(2m ago), 2m after the change (2 this run)"},
			[]string{"next refresh", "ms after", "refreshes"}},
		{"store and host backups", telemetry.Report{Mode: "rotating", Login: "usable", Usable: true,
			Backup:     &telemetry.StoreBackup{Version: 5, BackedUpAt: at(-time.Minute)},
			LastBackup: &telemetry.BackupRecord{At: now.Add(-3 * time.Hour), Version: 3}},
			[]string{"backup:           v5, backed up ", "(1m ago)", "last backup:      v3, ", "(3h ago), by this host"}, nil},
		// Relative times are computed as printed, from absolute ones: the
		// next check's reason carries none of its own.
		{"next check as printed", telemetry.Report{Mode: "rotating", Login: "usable", Usable: true, Verdict: "usable",
			LastCheck: &telemetry.CheckRecord{At: now.Add(-77 * time.Second), Result: "ok", Reason: "inference check answered AUTH_OK"},
			Agent: telemetry.AgentReport{Running: true, PID: 7, AgentState: &telemetry.AgentState{Watch: "inotify",
				NextCheck: at(5 * time.Hour), NextCheckWhy: "the last check passed and nothing changed since"}}},
			[]string{"last check:       ", "(1m17s ago) ok: inference check answered AUTH_OK",
				"next check:       ", "(in 5h); the last check passed and nothing changed since\n"},
			[]string{"57s ago", "next step"}},
		// The MCP server logins: a line each, after the agent; a needs-login
		// server adds a next step under the verdict's, and the verdict stays.
		{"mcp servers", telemetry.Report{Mode: "rotating", Login: "usable", Usable: true, Verdict: "usable", Agent: telemetry.AgentReport{Running: true, PID: 42},
			MCP: telemetry.MCPReport{RefreshesTotal: 14, FailuresTotal: 2, NextStep: `MCP server "github": log in again with /mcp in Claude Code`, Updated: at(-time.Minute),
				Servers: []telemetry.MCPServer{
					{Name: "linear", ID: "a1", State: "ok", ExpiresAt: at(50 * time.Minute), LastRefresh: at(-7 * time.Hour), NextRefresh: at(35 * time.Minute)},
					{Name: "github", ID: "b2", State: "needs-login", Reason: "the server refused the refresh token", ExpiresAt: at(-2 * time.Hour)},
					{Name: "git\x1b[2Jhub", ID: "c3", State: "skipped", Reason: "named in CLAUDE_AUTH_MCP_SKIP"},
					{Name: "github", ID: "d4", State: "retrying", Reason: "unreachable", NextRefresh: at(time.Minute)}}}},
			[]string{"verdict: usable\nnext step: MCP server \"github\": log in again with /mcp in Claude Code\nmode:",
				"mcp: 4 servers; 14 refreshes, 2 failed (since the state dir was made); as of ", "(1m ago)\nmcp server: \"linear\" ok; token expires ",
				"(in 50m); last refresh ", "(7h ago); next refresh ", "(in 35m)\n",
				"mcp server: \"github\" (id b2) needs-login (the server refused the refresh token); token expires ", "(2h ago)\n",
				"mcp server: \"github\" (id c3) skipped (named in CLAUDE_AUTH_MCP_SKIP)\n",
				"mcp server: \"github\" (id d4) retrying (unreachable); next refresh "},
			[]string{"\x1b", "a1", "agent is not running"}},
		{"mcp servers, no agent", telemetry.Report{Mode: "rotating", Login: "usable", Usable: true, Verdict: "usable",
			MCP: telemetry.MCPReport{RefreshesTotal: 1, Updated: at(-3 * time.Hour),
				Servers: []telemetry.MCPServer{{Name: "linear", ID: "a1", State: "ok", ExpiresAt: at(50 * time.Minute)}}}},
			[]string{"agent: not running\nmcp: 1 server; 1 refreshes, 0 failed (since the state dir was made); the agent is not running, so nothing refreshes them ahead of Claude; as of ", "(3h ago)\n"},
			[]string{"next refresh"}},
		{"mcp off", telemetry.Report{Mode: "rotating", Verdict: "usable", MCP: telemetry.MCPReport{Off: true, RefreshesTotal: 3}},
			[]string{"mcp: off (CLAUDE_AUTH_MCP=off): MCP server logins are not refreshed by claude-auth-sync; Claude refreshes them itself\n"},
			[]string{"mcp server", "next step"}},
		{"mcp.json unreadable", telemetry.Report{Mode: "rotating", Verdict: "usable", MCP: telemetry.MCPReport{Error: "mcp.json is not readable"}},
			[]string{"mcp: mcp.json is unreadable (mcp.json is not readable): the MCP server logins' state is not known\n"},
			[]string{"mcp server", "next step"}},
		{"mcp, no servers", telemetry.Report{Mode: "rotating", Verdict: "usable", MCP: telemetry.MCPReport{RefreshesTotal: 9, Servers: []telemetry.MCPServer{}}},
			nil, []string{"mcp"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			printStatus(&b, tc.r, now)
			// Without MCP servers (and MCP on), the output is what it was
			// before the MCP section: byte for byte.
			if m := tc.r.MCP; !m.Off && m.Error == "" && len(m.Servers) == 0 && strings.Contains(b.String(), "mcp") {
				t.Errorf("printStatus: an MCP line without MCP servers:\n%s", b.String())
			}
			// Compared with the label's padding squeezed to one space.
			squeeze := func(s string) string { return regexp.MustCompile(`: +`).ReplaceAllString(s, ": ") }
			out := squeeze(b.String())
			for _, w := range tc.want {
				if !strings.Contains(out, squeeze(w)) {
					t.Errorf("printStatus: no %q in\n%s", w, b.String())
				}
			}
			for _, n := range tc.not {
				if strings.Contains(b.String(), n) {
					t.Errorf("printStatus: %q in\n%s", n, b.String())
				}
			}
		})
	}
}

// sandboxHome is a temp HOME for a command run in-process: no system config,
// no journal, no Vault (the local file store).
func sandboxHome(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("CLAUDE_AUTH_SYSTEM_CONFIG", filepath.Join(dir, "no-config"))
	t.Setenv("CLAUDE_AUTH_JOURNAL_SOCKET", "off")
	t.Setenv("VAULT_ADDR", "")
	return dir
}

// TestStatusMCPCommand runs `status` and `status --json` on a home whose
// state dir holds mcp.json: the servers show (the JSON as documented), a
// server that needs a login adds a next step but leaves the exit status the
// Claude login's, an unreadable mcp.json is said and breaks nothing, and
// CLAUDE_AUTH_MCP=off says MCP refreshing is off.
func TestStatusMCPCommand(t *testing.T) {
	schema := readSchema(t)
	dir := sandboxHome(t)
	creds, state := filepath.Join(dir, "credentials.json"), filepath.Join(dir, "state")
	body := `{"claudeAiOauth":{"accessToken":"sk-ant-oat01-MCP-A","refreshToken":"sk-ant-ort01-MCP-R","expiresAt":4102444800000},
"mcpOAuth":{"linear|abc":{"serverName":"linear","serverUrl":"https://mcp.linear.example/sse","accessToken":"lin-SECRET","refreshToken":"lin-R-SECRET","expiresAt":4102444800000}}}`
	if err := os.WriteFile(creds, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	args := []string{"--credentials", creds, "--state-dir", state, "--store", "file", "--claude", filepath.Join(dir, "no-claude")}
	run := func(extra ...string) (string, int) {
		t.Helper()
		var out, errb bytes.Buffer
		code := Main(append(extra, args...), &out, &errb)
		if errb.Len() > 0 {
			t.Errorf("%v: stderr %q", extra, errb.String())
		}
		for _, secret := range []string{"SECRET", "mcp.linear.example", "sk-ant-"} {
			if strings.Contains(out.String(), secret) {
				t.Errorf("%v printed %q:\n%s", extra, secret, out.String())
			}
		}
		// The label's padding squeezed to one space.
		return regexp.MustCompile(`: +`).ReplaceAllString(out.String(), ": "), code
	}
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(state, "mcp.json"), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// No agent runs here: the next refresh mcp.json names is nobody's, so
	// neither form shows it, and both say as of when the states are.
	write(`{"updated":"2026-01-02T03:04:05Z","refreshes_total":4,"failures_total":1,"servers":[
  {"name":"linear","id":"9f8e7d","state":"needs-login","reason":"the server refused the refresh token: log in again with /mcp in Claude Code","expires_at":"2099-12-31T00:00:00Z","last_refresh":"2026-01-01T00:00:00Z","next_refresh":"2099-12-30T00:00:00Z"}]}`)
	text, code := run("status")
	if code != 0 {
		t.Errorf("status: exit %d; want 0 (MCP never makes the login unusable)\n%s", code, text)
	}
	for _, want := range []string{"next step: MCP server \"linear\": log in again with /mcp in Claude Code\n",
		"mcp: 1 server; 4 refreshes, 1 failed", "the agent is not running, so nothing refreshes them ahead of Claude; as of 2026-01-02",
		"mcp server: \"linear\" needs-login (the server refused", "; token expires 2099-", "; last refresh 2026-"} {
		if !strings.Contains(text, want) {
			t.Errorf("status: no %q in\n%s", want, text)
		}
	}
	if strings.Contains(text, "next refresh 2099") {
		t.Errorf("status shows a next MCP refresh with no agent to make it:\n%s", text)
	}
	if v := strings.SplitN(text, "\n", 2)[0]; strings.Contains(v, "MCP") || !strings.HasPrefix(v, "verdict: usable") {
		t.Errorf("the verdict line is %q; want the Claude login's alone", v)
	}
	var jsb, errb bytes.Buffer
	code = Main(append([]string{"status", "--json"}, args...), &jsb, &errb)
	js := jsb.String()
	if code != 0 {
		t.Errorf("status --json: exit %d; want 0", code)
	}
	checkAgainstSchema(t, schema, []byte(js))
	var got struct {
		NextStep string              `json:"next_step"`
		MCP      telemetry.MCPReport `json:"mcp"`
	}
	if err := json.Unmarshal([]byte(js), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.MCP.Servers) != 1 || got.MCP.Servers[0].Name != "linear" || got.MCP.Servers[0].State != "needs-login" ||
		got.MCP.RefreshesTotal != 4 || got.MCP.FailuresTotal != 1 || !strings.HasPrefix(got.MCP.NextStep, `MCP server "linear"`) ||
		strings.Contains(got.NextStep, "MCP") || got.MCP.Servers[0].NextRefresh != nil ||
		got.MCP.Updated == nil || !got.MCP.Updated.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("status --json: next_step %q, mcp %+v", got.NextStep, got.MCP)
	}

	write("{not json")
	text, code = run("status")
	if code != 0 || !strings.Contains(text, "mcp: mcp.json is unreadable (") {
		t.Errorf("unreadable mcp.json: exit %d\n%s", code, text)
	}
	jsb.Reset()
	code = Main(append([]string{"status", "--json"}, args...), &jsb, &errb)
	js = jsb.String()
	if code != 0 || !strings.Contains(js, `"error": "mcp.json is not readable"`) {
		t.Errorf("unreadable mcp.json: exit %d\n%s", code, js)
	}
	checkAgainstSchema(t, schema, []byte(js))

	t.Setenv("CLAUDE_AUTH_MCP", "off")
	write(`{"servers":[{"name":"linear","id":"9f8e7d","state":"needs-login"}]}`)
	text, code = run("status")
	if code != 0 || !strings.Contains(text, "mcp: off (CLAUDE_AUTH_MCP=off)") || strings.Contains(text, "mcp server") || strings.Contains(text, "MCP server \"") {
		t.Errorf("CLAUDE_AUTH_MCP=off: exit %d\n%s", code, text)
	}
}
