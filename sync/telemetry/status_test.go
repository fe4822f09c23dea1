package telemetry

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

func TestClampTime(t *testing.T) {
	east := time.FixedZone("UTC+14", 14*3600)
	west := time.FixedZone("UTC-12", -12*3600)
	for _, tc := range []struct {
		name  string
		in    time.Time
		want  time.Time
		moved bool
	}{
		{"ordinary", time.UnixMilli(1767225600000), time.UnixMilli(1767225600000), false},
		{"zero", time.Time{}, time.Time{}, false},
		{"max int64 ms", time.UnixMilli(math.MaxInt64), reportTimeMax, true},
		{"min int64 ms", time.UnixMilli(math.MinInt64), reportTimeMin, true},
		{"first instant of year 10000", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), reportTimeMax, true},
		{"last instant of year 9999", reportTimeMax, reportTimeMax, false},
		{"year -1", time.Date(-1, 12, 31, 23, 59, 59, 0, time.UTC), reportTimeMin, true},
		// In range, but its own zone puts it in year 10000 (or -1): UTC.
		{"year 10000 only east of UTC", time.Date(9999, 12, 31, 12, 0, 0, 0, time.UTC).In(east), time.Date(9999, 12, 31, 12, 0, 0, 0, time.UTC), false},
		{"year -1 only west of UTC", time.Date(0, 1, 1, 6, 0, 0, 0, time.UTC).In(west), time.Date(0, 1, 1, 6, 0, 0, 0, time.UTC), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, moved := ClampTime(tc.in)
			if !got.Equal(tc.want) || moved != tc.moved {
				t.Errorf("ClampTime(%v) = %v, %v; want %v, %v", tc.in, got, moved, tc.want, tc.moved)
			}
			if _, err := json.Marshal(got); err != nil {
				t.Errorf("the clamped time does not encode: %v", err)
			}
		})
	}
}

// TestStatusOutOfRangeTimes: whatever expiresAt and refreshTokenExpiresAt the
// credentials file holds, the report encodes, and says which times it clamped.
func TestStatusOutOfRangeTimes(t *testing.T) {
	for _, tc := range []struct {
		name, expiresAt, deadline string
		wantOut                   map[string]string
	}{
		{"ordinary", "1767225600000", "1769817600000", nil},
		{"max int64", "9223372036854775807", "1769817600000",
			map[string]string{"expires_at": "9223372036854775807 ms since the epoch, after year 9999"}},
		{"min int64", "-9223372036854775808", "-9223372036854775808", map[string]string{
			"expires_at":     "-9223372036854775808 ms since the epoch, before year 0",
			"login_deadline": "-9223372036854775808 ms since the epoch, before year 0"}},
		{"4e18 deadline", "1767225600000", "4e18",
			map[string]string{"login_deadline": "4000000000000000000 ms since the epoch, after year 9999"}},
		{"1e300", "1e300", "1e300", nil}, // not a number to the credentials reader
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.writeCreds(credsFile(`{"accessToken":"sk-ant-oat01-status","refreshToken":"sk-ant-ort01-status","expiresAt":` +
				tc.expiresAt + `,"refreshTokenExpiresAt":` + tc.deadline + `}`))
			r := h.rep.Status(context.Background())
			data, err := json.Marshal(r)
			if err != nil {
				t.Fatalf("the report does not encode: %v", err)
			}
			var back Report
			if err := json.Unmarshal(data, &back); err != nil {
				t.Fatalf("the report does not decode: %v", err)
			}
			if len(r.OutOfRange) != len(tc.wantOut) {
				t.Errorf("OutOfRange = %v; want %v", r.OutOfRange, tc.wantOut)
			}
			for k, v := range tc.wantOut {
				if r.OutOfRange[k] != v {
					t.Errorf("OutOfRange[%s] = %q; want %q", k, r.OutOfRange[k], v)
				}
			}
		})
	}
}

// TestStatusUsability: status's exit code says whether the login can be
// used, like `systemctl is-active`: 0 usable, 3 not logged in, 1 unusable.
func TestStatusUsability(t *testing.T) {
	good := oauthJSON(access1, refresh1, testNow.Add(8*time.Hour))
	for _, tc := range []struct {
		name      string
		creds     string // "" = no file
		doc       map[string]any
		lastCheck *CheckRecord
		setupSeen time.Time // SetupTokenFirstSeen for setupTok
		code      int
		why       string // in Unusable
		step      string // in NextStep; "" = none
		setupEnd  time.Time
		setupFrom string
	}{
		{name: "usable", creds: credsFile(good), code: StatusUsable},
		{name: "access token expired, refreshable", creds: credsFile(oauthJSON(access1, refresh1, testNow.Add(-time.Hour))), code: StatusUsable},
		// No backup: restore cannot work, so it is not the step.
		{name: "no file", code: StatusNotLoggedIn, why: "not logged in", step: "run `claude auth login` (the store holds no backup to restore)"},
		{name: "no file, a backup", doc: map[string]any{"claudeAiOauth": map[string]any{"accessToken": access1, "refreshToken": refresh1, "expiresAt": testNow.Add(8 * time.Hour).UnixMilli()}},
			code: StatusNotLoggedIn, why: "not logged in", step: "run `claude-auth-sync restore`"},
		{name: "no claudeAiOauth", creds: `{"mcpOAuth":{}}`, code: StatusNotLoggedIn, why: "not logged in"},
		{name: "clobbered", creds: credsFile(`{"accessToken":"` + access1 + `","refreshToken":"","expiresAt":1}`), code: StatusUnusable, why: "clobbered"},
		{name: "broken JSON", creds: `{"claudeAiOauth":`, code: StatusUnusable, why: "clobbered"},
		{name: "past its deadline", creds: credsFile(`{"accessToken":"` + access1 + `","refreshToken":"` + refresh1 + `","expiresAt":` +
			strconv.FormatInt(testNow.Add(time.Hour).UnixMilli(), 10) + `,"refreshTokenExpiresAt":` + strconv.FormatInt(testNow.Add(-time.Minute).UnixMilli(), 10) + `}`),
			code: StatusUnusable, why: "deadline"},
		{name: "the last check refused this login", creds: credsFile(good),
			lastCheck: &CheckRecord{At: testNow, Result: "dead", Reason: "login is dead: invalid_grant", Subject: &CheckSubject{Login: credentials.Secret(refresh1).Short()}},
			code:      StatusUnusable, why: "invalid_grant"},
		{name: "the last check refused an older login", creds: credsFile(good),
			lastCheck: &CheckRecord{At: testNow, Result: "auth", Reason: "credential refused", Subject: &CheckSubject{Login: credentials.Secret(refresh2).Short()}},
			code:      StatusUsable},
		{name: "setup token with its end in Vault", doc: map[string]any{"setup_token": setupTok, "setup_token_expires_at": testNow.Add(40 * 24 * time.Hour).Format(time.RFC3339)},
			code: StatusUsable, setupEnd: testNow.Add(40 * 24 * time.Hour), setupFrom: "vault"},
		{name: "setup token one year after first seen", creds: credsFile(good), doc: map[string]any{"setup_token": setupTok}, setupSeen: testNow.Add(-300 * 24 * time.Hour),
			code: StatusUsable, setupEnd: testNow.Add(-300 * 24 * time.Hour).Add(SetupTokenLifetime), setupFrom: "first-seen"},
		{name: "setup token expired", creds: credsFile(good), doc: map[string]any{"setup_token": setupTok, "setup_token_expires_at": testNow.Add(-time.Hour).Format(time.RFC3339)},
			code: StatusUnusable, why: "setup token expired", setupEnd: testNow.Add(-time.Hour), setupFrom: "vault"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if tc.creds != "" {
				h.writeCreds(tc.creds)
			}
			if tc.doc != nil {
				h.setDoc(tc.doc)
			}
			rec := NewRecord()
			rec.LastCheck = tc.lastCheck
			if !tc.setupSeen.IsZero() {
				rec.SetupTokenFirstSeen[credentials.Secret(setupTok).Fingerprint()] = tc.setupSeen
			}
			if err := h.rep.MergeRecord(rec); err != nil {
				t.Fatal(err)
			}
			r := h.rep.Status(context.Background())
			if r.ExitCode != tc.code || r.Usable != (tc.code == StatusUsable) || !strings.Contains(r.Unusable, tc.why) {
				t.Errorf("Status() exit %d, usable %v (%q); want %d and %q", r.ExitCode, r.Usable, r.Unusable, tc.code, tc.why)
			}
			if r.Usable && r.Unusable != "" {
				t.Errorf("a usable login with a reason: %q", r.Unusable)
			}
			// One verdict, and a next step exactly when something needs doing.
			if r.Usable != strings.HasPrefix(r.Verdict, "usable") || (!r.Usable && r.NextStep == "") {
				t.Errorf("verdict %q, next step %q for usable=%v", r.Verdict, r.NextStep, r.Usable)
			}
			if tc.step != "" && !strings.HasPrefix(r.NextStep, tc.step) {
				t.Errorf("next step %q; want %q", r.NextStep, tc.step)
			}
			if tc.code == StatusNotLoggedIn && r.Backup == nil && strings.Contains(r.NextStep+r.Unusable, "restore`") {
				t.Errorf("no backup, yet the step is restore: %q", r.NextStep)
			}
			switch {
			case tc.setupEnd.IsZero() && r.SetupToken != nil:
				t.Errorf("SetupToken = %+v; want none in rotating mode", r.SetupToken)
			case !tc.setupEnd.IsZero() && (r.SetupToken == nil || r.SetupToken.ExpiresAt == nil ||
				!r.SetupToken.ExpiresAt.Equal(tc.setupEnd) || r.SetupToken.ExpiresFrom != tc.setupFrom):
				t.Errorf("SetupToken = %+v; want it to end %v (from %s)", r.SetupToken, tc.setupEnd, tc.setupFrom)
			}
			if data, _ := json.Marshal(r); strings.Contains(string(data), "sk-ant-") {
				t.Errorf("the report holds a token")
			}
		})
	}
}

// TestStatusAgent: the agent's pid is a number; while logged out the report
// says nothing about the next refresh.
func TestStatusAgent(t *testing.T) {
	for _, tc := range []struct {
		name        string
		creds       string
		doc         map[string]any
		wantRefresh bool
	}{
		{"logged in", credsFile(oauthJSON(access1, refresh1, testNow.Add(8*time.Hour))), nil, true},
		{"logged out", "", nil, false},
		{"clobbered", credsFile(`{"accessToken":"` + access1 + `","refreshToken":"","expiresAt":1}`), nil, false},
		// Nothing to refresh on an admin's setup token (issue 23).
		{"setup-token mode", credsFile(oauthJSON(access1, refresh1, testNow.Add(8*time.Hour))), map[string]any{"setup_token": setupTok}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			if tc.creds != "" {
				h.writeCreds(tc.creds)
			}
			if tc.doc != nil {
				h.setDoc(tc.doc)
			}
			next := testNow.Add(7 * time.Hour)
			st := AgentState{PID: 1, Started: testNow, Watch: "inotify", NextRefresh: &next, VaultTokenTTL: "767h59m59s"}
			data, _ := json.Marshal(st)
			if err := os.MkdirAll(h.cfg.StateDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(h.cfg.StateDir, "agent.json"), data, 0o600); err != nil {
				t.Fatal(err)
			}
			lk, err := lock.Try(h.cfg.StateDir, lock.Agent)
			if err != nil || lk == nil {
				t.Fatalf("take the agent lock: %v", err)
			}
			defer lk.Unlock()

			r := h.rep.Status(context.Background())
			if !r.Agent.Running || r.Agent.PID != os.Getpid() {
				t.Errorf("Agent = running %v, pid %d; want running, pid %d", r.Agent.Running, r.Agent.PID, os.Getpid())
			}
			if r.Agent.AgentState == nil || r.Agent.Watch != "inotify" {
				t.Fatalf("Agent state = %+v; want the agent's", r.Agent.AgentState)
			}
			if got := r.Agent.NextRefresh != nil; got != tc.wantRefresh {
				t.Errorf("NextRefresh present = %v; want %v", got, tc.wantRefresh)
			}
			out, _ := json.Marshal(r)
			var back map[string]any
			if err := json.Unmarshal(out, &back); err != nil {
				t.Fatal(err)
			}
			agent, _ := back["agent"].(map[string]any)
			if pid, ok := agent["pid"].(float64); !ok || int(pid) != os.Getpid() {
				t.Errorf("agent.pid = %#v; want the number %d", agent["pid"], os.Getpid())
			}
			if _, ok := agent["vault_token_ttl"]; ok {
				t.Errorf("agent.vault_token_ttl is there; the report's own vault_token_ttl says it")
			}
			if _, ok := agent["next_refresh"]; ok != tc.wantRefresh {
				t.Errorf("agent.next_refresh present = %v; want %v", ok, tc.wantRefresh)
			}
		})
	}
}

// TestStatusPrintable: what status reports from the user's side (state.json,
// agent.json) reaches root's terminal without an escape sequence.
func TestStatusPrintableStrings(t *testing.T) {
	r := Report{LoginProblem: "bad \x1b]0;owned\x07file", Claude: ClaudeCLI{Tried: []string{"/x\x1b[2J"}},
		LastCheck: &CheckRecord{Reason: "claude said \x1b[31mred\nline"}, OutOfRange: map[string]string{"k": "\x07v"},
		Agent: AgentReport{AgentState: &AgentState{NextCheckWhy: "\u009b31m why"}}}
	printableStrings(reflect.ValueOf(&r).Elem())
	if r.LoginProblem != "bad file" || r.Claude.Tried[0] != "/x" || r.LastCheck.Reason != "claude said red line" ||
		r.OutOfRange["k"] != "v" || r.Agent.NextCheckWhy != " why" {
		t.Errorf("printableStrings left %+v %+v %+v %v", r, r.LastCheck, r.Agent.AgentState, r.OutOfRange)
	}
}

// TestStatusMCP: the report's MCP section is mcp.json: each server with its
// state, times and reason, its name made printable; a needs-login server
// adds the MCP next step, never a verdict or an exit code (those are the
// Claude login's); an unreadable mcp.json is said, not fatal; with MCP off
// no server is listed.
func TestStatusMCP(t *testing.T) {
	exp, last, next := testNow.Add(50*time.Minute), testNow.Add(-7*time.Hour), testNow.Add(35*time.Minute)
	ts := func(t time.Time) string { return `"` + t.Format(time.RFC3339) + `"` }
	full := `{"updated":` + ts(testNow) + `,"refreshes_total":14,"failures_total":2,"servers":[
  {"name":"linear","id":"a1b2c3","state":"ok","expires_at":` + ts(exp) + `,"last_refresh":` + ts(last) + `,"next_refresh":` + ts(next) + `},
  {"name":"git\u001b]0;owned\u0007hub","id":"d4e5f6","state":"needs-login","reason":"the server refused the refresh token: log in again with /mcp in Claude Code","expires_at":` + ts(testNow.Add(-2*time.Hour)) + `},
  {"name":"jira","id":"778899","state":"retrying","reason":"token endpoint unreachable","next_refresh":` + ts(testNow.Add(time.Minute)) + `},
  {"name":"notion","id":"aabbcc","state":"skipped","reason":"named in CLAUDE_AUTH_MCP_SKIP"}]}`
	for _, tc := range []struct {
		name     string
		mcpJSON  string // "" = none
		off      bool
		servers  int
		errWant  string
		nextStep string
		counts   [2]int
		agent    bool // an agent holds its lock
	}{
		{name: "no mcp.json"},
		{name: "no servers", mcpJSON: `{"refreshes_total":3,"failures_total":0,"servers":[]}`, counts: [2]int{3, 0}},
		{name: "four servers", mcpJSON: full, servers: 4, counts: [2]int{14, 2}, agent: true,
			nextStep: `MCP server "github": log in again with /mcp in Claude Code`},
		{name: "four servers, no agent", mcpJSON: full, servers: 4, counts: [2]int{14, 2},
			nextStep: `MCP server "github": log in again with /mcp in Claude Code`},
		{name: "two need a login", mcpJSON: `{"servers":[{"name":"a","id":"1","state":"needs-login"},{"name":"b","id":"2","state":"needs-login"}]}`,
			servers: 2, nextStep: `MCP servers "a", "b": log in again to each with /mcp in Claude Code`},
		{name: "unreadable", mcpJSON: "{not json", errWant: "mcp.json is not readable"},
		{name: "off", mcpJSON: full, off: true, counts: [2]int{14, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.writeCreds(credsFile(oauthJSON(access1, refresh1, testNow.Add(8*time.Hour))))
			h.cfg.MCPOff = tc.off
			if tc.mcpJSON != "" {
				if err := os.MkdirAll(h.cfg.StateDir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(h.cfg.StateDir, "mcp.json"), []byte(tc.mcpJSON), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tc.agent {
				if err := os.MkdirAll(h.cfg.StateDir, 0o700); err != nil {
					t.Fatal(err)
				}
				lk, err := lock.Try(h.cfg.StateDir, lock.Agent)
				if err != nil || lk == nil {
					t.Fatalf("take the agent lock: %v", err)
				}
				defer lk.Unlock()
			}
			r := h.rep.Status(context.Background())
			m := r.MCP
			if m.Off != tc.off || len(m.Servers) != tc.servers || m.Servers == nil || m.NextStep != tc.nextStep ||
				!strings.Contains(m.Error, tc.errWant) || (tc.errWant == "") != (m.Error == "") ||
				m.RefreshesTotal != tc.counts[0] || m.FailuresTotal != tc.counts[1] {
				t.Errorf("MCP = %+v; want off %v, %d servers, counts %v, next step %q, error %q", m, tc.off, tc.servers, tc.counts, tc.nextStep, tc.errWant)
			}
			// The Claude login is usable, whatever its MCP servers are.
			if r.ExitCode != StatusUsable || !r.Usable || !strings.HasPrefix(r.Verdict, "usable") || strings.Contains(r.Verdict+r.NextStep, "MCP") {
				t.Errorf("verdict %q, next step %q, exit %d; MCP must not touch them", r.Verdict, r.NextStep, r.ExitCode)
			}
			if tc.servers == 4 {
				s := m.Servers[0]
				if s.Name != "linear" || s.ID != "a1b2c3" || s.State != "ok" || s.Reason != "" || s.ExpiresAt == nil || !s.ExpiresAt.Equal(exp) ||
					s.LastRefresh == nil || !s.LastRefresh.Equal(last) {
					t.Errorf("Servers[0] = %+v", s)
				}
				// The next refresh is the agent's promise: shown only while
				// one runs to keep it.
				if tc.agent != (s.NextRefresh != nil) || (s.NextRefresh != nil && !s.NextRefresh.Equal(next)) || tc.agent != (m.Servers[2].NextRefresh != nil) {
					t.Errorf("agent running %v: next refreshes %v, %v; want %v only with an agent", tc.agent, s.NextRefresh, m.Servers[2].NextRefresh, next)
				}
				if m.Updated == nil || !m.Updated.Equal(testNow) {
					t.Errorf("MCP updated = %v; want %v", m.Updated, testNow)
				}
				if g := m.Servers[1]; g.Name != "github" || g.State != "needs-login" || !strings.Contains(g.Reason, "/mcp") || g.NextRefresh != nil {
					t.Errorf("Servers[1] = %+v; want the printable name github, needs-login", g)
				}
			}
			data, _ := json.Marshal(r)
			if strings.Contains(string(data), "\\u001b") || strings.Contains(string(data), "sk-ant-") {
				t.Errorf("an escape or a token in the report: %s", data)
			}
			var back map[string]any
			if err := json.Unmarshal(data, &back); err != nil {
				t.Fatal(err)
			}
			if servers, ok := back["mcp"].(map[string]any)["servers"].([]any); !ok || len(servers) != tc.servers {
				t.Errorf("mcp.servers = %#v; want an array of %d", back["mcp"], tc.servers)
			}
		})
	}
}
