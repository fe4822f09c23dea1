package promfile

import (
	"strings"
	"testing"
)

const good = `# HELP claude_auth_sync_failures_total FAIL events.
# TYPE claude_auth_sync_failures_total counter
claude_auth_sync_failures_total{user="alice"} 3
# TYPE claude_auth_sync_last_success_timestamp_seconds gauge
claude_auth_sync_last_success_timestamp_seconds{user="a}b\"c"} 1760000000.5
claude_auth_sync_last_backup_lag_seconds 0.042
# TYPE claude_auth_sync_mcp_servers gauge
claude_auth_sync_mcp_servers{user="alice",state="ok"} 2
claude_auth_sync_mcp_servers{state="needs-login", user="a,b=\"c\""} 1
claude_auth_sync_mcp_servers{user="alice",state="retrying",} 0
claude_auth_sync_mcp_refreshes_total{user="alice"} 14
`

func TestParse(t *testing.T) {
	v, err := Parse([]byte(good))
	if err != nil {
		t.Fatalf("Parse(good) = %v", err)
	}
	want := map[string]float64{Failures: 3, LastSuccess: 1760000000.5, BackupLag: 0.042, MCPRefreshes: 14,
		MCPServers + `{state="ok"}`: 2, MCPServers + `{state="needs-login"}`: 1, MCPServers + `{state="retrying"}`: 0}
	if len(v) != len(want) {
		t.Errorf("Parse(good) = %v; want %v", v, want)
	}
	for k, w := range want {
		if v[k] != w {
			t.Errorf("%s = %v; want %v", k, v[k], w)
		}
	}
}

// Whatever a hostile user puts in their own file is refused whole.
func TestParseRefuses(t *testing.T) {
	for _, c := range []struct{ name, text, want string }{
		{"garbage", "\x00\x01garbage\n", "not printable"},
		{"not a sample", "{user=\"x\"} 1\n", "not a sample line"},
		{"other metric", "node_load1 99\n", "not a claude-auth-sync metric"},
		{"duplicate series", "claude_auth_sync_failures_total{user=\"a\"} 1\nclaude_auth_sync_failures_total{user=\"b\"} 2\n", "a second sample"},
		{"NaN", "claude_auth_sync_login_deadline_timestamp_seconds NaN\n", "not finite"},
		{"+Inf", "claude_auth_sync_login_deadline_timestamp_seconds +Inf\n", "not finite"},
		{"TYPE conflict", "# TYPE claude_auth_sync_failures_total gauge\n", "is a counter"},
		{"second HELP", "# HELP claude_auth_sync_failures_total a\n# HELP claude_auth_sync_failures_total b\n", "a second HELP"},
		{"HELP of another", "# HELP node_load1 x\n", "not a claude-auth-sync metric"},
		{"timestamp", "claude_auth_sync_failures_total 1 1760000000000\n", "timestamp"},
		{"negative counter", "claude_auth_sync_failures_total -1\n", "negative"},
		{"open labels", "claude_auth_sync_failures_total{user=\"a} 1\n", "not closed"},
		{"not a number", "claude_auth_sync_failures_total one\n", "not a number"},
		{"huge", strings.Repeat("# padding\n", MaxFileSize/10+1), "more than"},
		// The state label is the one label kept: only the known states, each once.
		{"no state", "claude_auth_sync_mcp_servers{user=\"a\"} 1\n", "no state label"},
		{"no labels", "claude_auth_sync_mcp_servers 1\n", "no state label"},
		{"unknown state", "claude_auth_sync_mcp_servers{state=\"https://mcp.example/\"} 1\n", "is not one of"},
		{"second sample of a state", "claude_auth_sync_mcp_servers{state=\"ok\"} 1\nclaude_auth_sync_mcp_servers{user=\"b\",state=\"ok\"} 2\n", "a second sample"},
		{"state twice", "claude_auth_sync_mcp_servers{state=\"ok\",state=\"skipped\"} 1\n", "twice"},
		{"state unquoted", "claude_auth_sync_mcp_servers{state=ok} 1\n", "not quoted"},
		{"labels run together", "claude_auth_sync_mcp_servers{state=\"ok\" user=\"a\"} 1\n", "comma"},
		{"negative MCP counter", "claude_auth_sync_mcp_refresh_failures_total -2\n", "negative"},
		{"MCP TYPE conflict", "# TYPE claude_auth_sync_mcp_servers counter\n", "is a gauge"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.text))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Parse(%q) = %v; want an error with %q", c.text, err, c.want)
			}
		})
	}
}

// The published file: every family once, its samples together, labelled by
// the owner; a refused user shows only as a publish error.
func TestRender(t *testing.T) {
	users := []UserResult{
		{User: "alice", Values: map[string]float64{Failures: 2, Deadline: 1767000000,
			MCPServers + `{state="ok"}`: 3, MCPServers + `{state="needs-login"}`: 1}},
		{User: "bob", Err: errTest},
		{User: `c"d`, Values: map[string]float64{Failures: 0}},
	}
	got := string(Render(users))
	for _, want := range []string{
		"# TYPE claude_auth_sync_failures_total counter\nclaude_auth_sync_failures_total{user=\"alice\"} 2\nclaude_auth_sync_failures_total{user=\"c\\\"d\"} 0\n",
		"claude_auth_sync_login_deadline_timestamp_seconds{user=\"alice\"} 1.767e+09\n",
		"claude_auth_sync_metrics_publish_error{user=\"alice\"} 0\nclaude_auth_sync_metrics_publish_error{user=\"bob\"} 1\n",
		"# TYPE claude_auth_sync_mcp_servers gauge\nclaude_auth_sync_mcp_servers{user=\"alice\",state=\"ok\"} 3\nclaude_auth_sync_mcp_servers{user=\"alice\",state=\"needs-login\"} 1\n# HELP",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Render lacks %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "# TYPE claude_auth_sync_failures_total") != 1 {
		t.Errorf("a family's TYPE twice:\n%s", got)
	}
}

var errTest = errString("refused")

type errString string

func (e errString) Error() string { return string(e) }
