// Package promfile is the product's metrics in Prometheus text form: the
// families an agent may write, the strict reader of a user's file, and the
// root-side publisher that merges every user's file into the one file the node
// exporter's textfile collector reads. Each user writes only into a directory
// of their own; what the publisher publishes for a user is labelled with the
// owner of the file it came from, never with what the file says.
package promfile

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Family is one metric the agent writes.
type Family struct {
	Name, Type, Help string
	// Label, when set, is the one label besides user its samples carry, and
	// LabelValues the only values it takes: one sample for each (a fixed
	// set, never anything a user names).
	Label       string
	LabelValues []string
}

// Key is how a values map names the family's sample whose Label is v: its
// name alone for a family without a label, else name{label="v"}.
func (f Family) Key(v string) string {
	if f.Label == "" {
		return f.Name
	}
	return f.Name + "{" + f.Label + `="` + v + `"}`
}

// Keys are the keys of every sample the family may have.
func (f Family) Keys() []string {
	if f.Label == "" {
		return []string{f.Name}
	}
	keys := make([]string, len(f.LabelValues))
	for i, v := range f.LabelValues {
		keys[i] = f.Key(v)
	}
	return keys
}

// The agent's metrics (one sample each, per user).
const (
	LastSuccess = "claude_auth_sync_last_success_timestamp_seconds"
	Expiry      = "claude_auth_sync_credential_expiry_timestamp_seconds"
	Deadline    = "claude_auth_sync_login_deadline_timestamp_seconds"
	LastBackup  = "claude_auth_sync_last_backup_timestamp_seconds"
	BackupLag   = "claude_auth_sync_last_backup_lag_seconds"
	Failures    = "claude_auth_sync_failures_total"
	// The user's MCP server logins (mcp.json): refreshes and failed ones
	// over every server, and how many servers are in each state.
	MCPRefreshes = "claude_auth_sync_mcp_refreshes_total"
	MCPFailures  = "claude_auth_sync_mcp_refresh_failures_total"
	MCPServers   = "claude_auth_sync_mcp_servers"
)

// MCPStates are the values of MCPServers' state label (sync/mcp.States).
var MCPStates = []string{"ok", "retrying", "needs-login", "skipped"}

// MCPServersKey is the values key of MCPServers' sample for state.
func MCPServersKey(state string) string {
	f, _ := agentFamily(MCPServers)
	return f.Key(state)
}

// The publisher's own, per user.
const (
	Updated      = "claude_auth_sync_metrics_updated_timestamp_seconds"
	PublishError = "claude_auth_sync_metrics_publish_error"
)

// AgentFamilies are what an agent's file may hold, in the order written.
var AgentFamilies = []Family{
	{LastSuccess, "gauge", "Unix time of the last OK or RECOVERED event for this user.", "", nil},
	{Expiry, "gauge", "Unix time the access token in the credentials file expires.", "", nil},
	{Deadline, "gauge", "Unix time the login itself ends (refresh token expiry); an interactive login is needed after it.", "", nil},
	{LastBackup, "gauge", "Unix time of this host's last backup of the login.", "", nil},
	{BackupLag, "gauge", "Seconds between the credentials file changing and its backup reaching the store (last backup).", "", nil},
	{Failures, "counter", "FAIL events (unusable login, foreign Vault token, 403, failed restore).", "", nil},
	{MCPRefreshes, "counter", "Refreshes of the user's MCP server logins by claude-auth-sync, over every server.", "", nil},
	{MCPFailures, "counter", "Failed refreshes of the user's MCP server logins (refused, unreachable, not written).", "", nil},
	{MCPServers, "gauge", "The user's MCP server logins in each state (needs-login: log in again with /mcp in Claude Code).", "state", MCPStates},
}

// publisherFamilies are what the publisher adds for every user it knows.
var publisherFamilies = []Family{
	{Updated, "gauge", "Unix time the user's agent last wrote its metrics file (its mtime).", "", nil},
	{PublishError, "gauge", "1 when the user's metrics file was refused (see the journal's WARN line), else 0.", "", nil},
}

func agentFamily(name string) (Family, bool) {
	for _, f := range AgentFamilies {
		if f.Name == name {
			return f, true
		}
	}
	return Family{}, false
}

// MaxFileSize caps a user's file: the agent writes under 3 KiB.
const MaxFileSize = 16 << 10

// Parse reads an agent's file strictly: only the agent's families, each of
// its own type, one sample each, finite values (a counter not negative), no
// client-side timestamps. Labels in the file are skipped, never kept: the
// publisher labels by the file's owner. Any fault refuses the whole file, so
// a half-forged file publishes nothing.
func Parse(data []byte) (map[string]float64, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%d bytes, more than %d", len(data), MaxFileSize)
	}
	values := map[string]float64{}
	help, typ := map[string]bool{}, map[string]bool{}
	for i, line := range bytes.Split(data, []byte("\n")) {
		n := i + 1
		s := strings.TrimRight(string(line), " \t\r")
		if strings.TrimSpace(s) == "" {
			continue
		}
		if !isPrint(s) {
			return nil, fmt.Errorf("line %d: not printable text", n)
		}
		if strings.HasPrefix(s, "#") {
			fields := strings.Fields(s[1:])
			if len(fields) < 2 || (fields[0] != "HELP" && fields[0] != "TYPE") {
				continue // a comment
			}
			f, ok := agentFamily(fields[1])
			if !ok {
				return nil, fmt.Errorf("line %d: %s %q is not a claude-auth-sync metric", n, fields[0], fields[1])
			}
			seen := help
			if fields[0] == "TYPE" {
				seen = typ
				if len(fields) != 3 || fields[2] != f.Type {
					return nil, fmt.Errorf("line %d: %s is a %s, not %q", n, f.Name, f.Type, strings.Join(fields[2:], " "))
				}
			}
			if seen[f.Name] {
				return nil, fmt.Errorf("line %d: a second %s for %s", n, fields[0], f.Name)
			}
			seen[f.Name] = true
			continue
		}
		name, labels, v, err := parseSample(s)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		f, ok := agentFamily(name)
		if !ok {
			return nil, fmt.Errorf("line %d: %q is not a claude-auth-sync metric", n, name)
		}
		key := name
		if f.Label != "" {
			lv, err := labelValue(labels, f.Label)
			if err != nil {
				return nil, fmt.Errorf("line %d: %s: %w", n, name, err)
			}
			if !slices.Contains(f.LabelValues, lv) {
				return nil, fmt.Errorf("line %d: %s: %s=%q is not one of %s", n, name, f.Label, lv, strings.Join(f.LabelValues, ", "))
			}
			key = f.Key(lv)
		}
		if _, dup := values[key]; dup {
			return nil, fmt.Errorf("line %d: a second sample of %s", n, key)
		}
		if f.Type == "counter" && v < 0 {
			return nil, fmt.Errorf("line %d: counter %s is negative", n, name)
		}
		values[key] = v
	}
	return values, nil
}

// parseSample reads `name[{labels}] value`; labels is what the braces hold
// ("" without), for the families that keep a label to read.
func parseSample(s string) (string, string, float64, error) {
	end := 0
	for end < len(s) && isNameChar(s[end], end == 0) {
		end++
	}
	if end == 0 {
		return "", "", 0, errors.New("not a sample line")
	}
	name, rest := s[:end], s[end:]
	labels := ""
	if strings.HasPrefix(rest, "{") {
		close, err := labelsEnd(rest)
		if err != nil {
			return "", "", 0, fmt.Errorf("%s: %w", name, err)
		}
		labels, rest = rest[1:close], rest[close+1:]
	}
	fields := strings.Fields(rest)
	switch {
	case len(fields) == 0:
		return "", "", 0, fmt.Errorf("%s: no value", name)
	case len(fields) > 1:
		return "", "", 0, fmt.Errorf("%s: a timestamp or more after the value", name)
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return "", "", 0, fmt.Errorf("%s: value %q is not a number", name, fields[0])
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "", "", 0, fmt.Errorf("%s: value %s is not finite", name, fields[0])
	}
	return name, labels, v, nil
}

// labelValue is the value of label want in a label set's inside (`a="x",b="y"`),
// read strictly: each pair name="value", comma-separated, want exactly once.
// The other labels (user) are read past, never kept.
func labelValue(set, want string) (string, error) {
	found, value := false, ""
	rest := strings.TrimSpace(set)
	for rest != "" {
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return "", errors.New("labels not name=\"value\" pairs")
		}
		name := strings.TrimSpace(rest[:eq])
		for i := 0; i < len(name); i++ {
			if !isNameChar(name[i], i == 0) || name[i] == ':' {
				return "", fmt.Errorf("label name %q", name)
			}
		}
		rest = strings.TrimLeft(rest[eq+1:], " ")
		if !strings.HasPrefix(rest, `"`) {
			return "", fmt.Errorf("label %s: value not quoted", name)
		}
		var b strings.Builder
		i, closed := 1, false
		for ; i < len(rest); i++ {
			c := rest[i]
			if c == '"' {
				closed = true
				break
			}
			if c == '\\' && i+1 < len(rest) {
				i++
				switch rest[i] {
				case 'n':
					c = '\n'
				default:
					c = rest[i]
				}
			}
			b.WriteByte(c)
		}
		if !closed {
			return "", fmt.Errorf("label %s: value not closed", name)
		}
		if name == want {
			if found {
				return "", fmt.Errorf("label %s twice", want)
			}
			found, value = true, b.String()
		}
		rest = strings.TrimLeft(rest[i+1:], " ")
		if rest == "" {
			break
		}
		if rest[0] != ',' {
			return "", errors.New("labels not comma-separated")
		}
		rest = strings.TrimLeft(rest[1:], " ")
	}
	if !found {
		return "", fmt.Errorf("no %s label", want)
	}
	return value, nil
}

// labelsEnd is the index of the '}' closing the label set s opens, quoted
// values (with their escapes) stepped over.
func labelsEnd(s string) (int, error) {
	quoted := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == '}':
			return i, nil
		}
	}
	return 0, errors.New("labels not closed")
}

func isNameChar(c byte, first bool) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (!first && c >= '0' && c <= '9')
}

func isPrint(s string) bool {
	for _, r := range s {
		if r < 0x20 && r != '\t' || r == 0x7f || r == '\uFFFD' {
			return false
		}
	}
	return true
}
