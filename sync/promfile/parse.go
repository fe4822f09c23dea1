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
	"strconv"
	"strings"
)

// Family is one metric the agent writes.
type Family struct {
	Name, Type, Help string
}

// The agent's metrics (one sample each, per user).
const (
	LastSuccess = "claude_auth_sync_last_success_timestamp_seconds"
	Expiry      = "claude_auth_sync_credential_expiry_timestamp_seconds"
	Deadline    = "claude_auth_sync_login_deadline_timestamp_seconds"
	LastBackup  = "claude_auth_sync_last_backup_timestamp_seconds"
	BackupLag   = "claude_auth_sync_last_backup_lag_seconds"
	Failures    = "claude_auth_sync_failures_total"
)

// The publisher's own, per user.
const (
	Updated      = "claude_auth_sync_metrics_updated_timestamp_seconds"
	PublishError = "claude_auth_sync_metrics_publish_error"
)

// AgentFamilies are what an agent's file may hold, in the order written.
var AgentFamilies = []Family{
	{LastSuccess, "gauge", "Unix time of the last OK or RECOVERED event for this user."},
	{Expiry, "gauge", "Unix time the access token in the credentials file expires."},
	{Deadline, "gauge", "Unix time the login itself ends (refresh token expiry); an interactive login is needed after it."},
	{LastBackup, "gauge", "Unix time of this host's last backup of the login."},
	{BackupLag, "gauge", "Seconds between the credentials file changing and its backup reaching the store (last backup)."},
	{Failures, "counter", "FAIL events (unusable login, foreign Vault token, 403, failed restore)."},
}

// publisherFamilies are what the publisher adds for every user it knows.
var publisherFamilies = []Family{
	{Updated, "gauge", "Unix time the user's agent last wrote its metrics file (its mtime)."},
	{PublishError, "gauge", "1 when the user's metrics file was refused (see the journal's WARN line), else 0."},
}

func agentFamily(name string) (Family, bool) {
	for _, f := range AgentFamilies {
		if f.Name == name {
			return f, true
		}
	}
	return Family{}, false
}

// MaxFileSize caps a user's file: the agent writes well under 2 KiB.
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
		name, v, err := parseSample(s)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		f, ok := agentFamily(name)
		if !ok {
			return nil, fmt.Errorf("line %d: %q is not a claude-auth-sync metric", n, name)
		}
		if _, dup := values[name]; dup {
			return nil, fmt.Errorf("line %d: a second sample of %s", n, name)
		}
		if f.Type == "counter" && v < 0 {
			return nil, fmt.Errorf("line %d: counter %s is negative", n, name)
		}
		values[name] = v
	}
	return values, nil
}

// parseSample reads `name[{labels}] value`; the labels are skipped.
func parseSample(s string) (string, float64, error) {
	end := 0
	for end < len(s) && isNameChar(s[end], end == 0) {
		end++
	}
	if end == 0 {
		return "", 0, errors.New("not a sample line")
	}
	name, rest := s[:end], s[end:]
	if strings.HasPrefix(rest, "{") {
		close, err := labelsEnd(rest)
		if err != nil {
			return "", 0, fmt.Errorf("%s: %w", name, err)
		}
		rest = rest[close+1:]
	}
	fields := strings.Fields(rest)
	switch {
	case len(fields) == 0:
		return "", 0, fmt.Errorf("%s: no value", name)
	case len(fields) > 1:
		return "", 0, fmt.Errorf("%s: a timestamp or more after the value", name)
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return "", 0, fmt.Errorf("%s: value %q is not a number", name, fields[0])
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "", 0, fmt.Errorf("%s: value %s is not finite", name, fields[0])
	}
	return name, v, nil
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
