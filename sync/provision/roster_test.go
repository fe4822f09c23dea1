package provision

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseRosterDefaults(t *testing.T) {
	r, err := ParseRoster([]byte(`# the fleet
users:
  carol: {claude_auth: false, tier: gpu}
  alice: {}
  bob:
    parked: true
    tier: [not, a, known, tier]
    team: infra
  dave:
  _svc-x: {claude_auth: true, parked: false}
other_tool: {whatever: 1}
`))
	if err != nil {
		t.Fatalf("ParseRoster: %v", err)
	}
	want := []Entry{
		{Name: "_svc-x", ClaudeAuth: true, Line: 10},
		{Name: "alice", ClaudeAuth: true, Line: 4},
		{Name: "bob", ClaudeAuth: true, Parked: true, Line: 5},
		{Name: "carol", ClaudeAuth: false, Line: 3},
		{Name: "dave", ClaudeAuth: true, Line: 9},
	}
	if len(r.Users) != len(want) {
		t.Fatalf("got %d users %+v; want %d", len(r.Users), r.Users, len(want))
	}
	for i, w := range want {
		if r.Users[i] != w {
			t.Errorf("user %d = %+v; want %+v", i, r.Users[i], w)
		}
	}
	active := map[string]bool{}
	for _, e := range r.Users {
		active[e.Name] = e.Active()
	}
	if !active["alice"] || active["bob"] || active["carol"] || !active["dave"] {
		t.Errorf("Active() = %v; want alice and dave (and _svc-x) only", active)
	}
}

func TestParseRosterEmpty(t *testing.T) {
	r, err := ParseRoster([]byte("users: {}\n"))
	if err != nil || len(r.Users) != 0 {
		t.Errorf("ParseRoster(users: {}) = %+v, %v; want no users, no error", r, err)
	}
}

func TestParseRosterRejects(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       string // in the error, with the line number
	}{
		{"claude_auth string", "users:\n  alice:\n    claude_auth: \"true\"\n", `line 3: user alice: claude_auth: want true or false, not "true"`},
		{"claude_auth yes", "users:\n  alice: {}\n  bob:\n    claude_auth: yes\n", `line 4: user bob: claude_auth: want true or false, not "yes"`},
		{"claude_auth number", "users:\n  alice: {claude_auth: 1}\n", `line 2: user alice: claude_auth: want true or false, not "1"`},
		{"claude_auth list", "users:\n  alice:\n    claude_auth:\n      - true\n", `line 4: user alice: claude_auth: want true or false, not "a list"`},
		{"parked string", "users:\n\n  alice: {parked: \"no\"}\n", `line 3: user alice: parked: want true or false`},
		{"dotdot", "users:\n  ../x: {}\n", `line 2: "../x" is not a plain POSIX user name`},
		{"slash", "users:\n  a/b: {}\n", `line 2: "a/b" is not a plain POSIX user name`},
		{"dot", "users:\n  first.last: {}\n", `line 2: "first.last" is not a plain POSIX user name`},
		{"upper", "users:\n  Alice: {}\n", `line 2: "Alice" is not a plain POSIX user name`},
		{"leading dash", "users:\n  -x: {}\n", `line 2: "-x" is not a plain POSIX user name`},
		{"leading digit", "users:\n  1x: {}\n", `line 2: "1x" is not a plain POSIX user name`},
		{"too long", "users:\n  " + strings.Repeat("a", 33) + ": {}\n", `line 2: "aaaa`},
		{"empty name", "users:\n  \"\": {}\n", `line 2: "" is not a plain POSIX user name`},
		{"space", "users:\n  \"a b\": {}\n", `line 2: "a b" is not a plain POSIX user name`},
		{"at sign", "users:\n  \"a@b\": {}\n", `is not a plain POSIX user name`},
		{"newline", "users:\n  \"a\\nb\": {}\n", `is not a plain POSIX user name`},
		{"bool name", "users:\n  true: {}\n", `line 2: user name true reads as !!bool in YAML; quote it`},
		{"duplicate", "users:\n  alice: {}\n  bob: {}\n  alice: {parked: true}\n", `line 4: user alice is listed twice (first at line 2)`},
		{"duplicate setting", "users:\n  alice:\n    parked: true\n    parked: false\n", `line 4: user alice: parked given twice`},
		{"no users key", "user:\n  alice: {}\n", `no users: key`},
		{"null users", "users:\n", `line 1: users: is empty`},
		{"users list", "users:\n  - alice\n", `line 2: users: must be a map`},
		{"users twice", "users: {}\nusers: {}\n", `line 2: users: given twice`},
		{"user scalar", "users:\n  alice: yes\n", `line 2: user alice: want a map of settings`},
		{"top list", "- users\n", `line 1: the roster must be a map`},
		{"empty doc", "", `empty roster`},
		{"not yaml", "users: {alice: [}\n", `bad roster`},
		{"alias", "base: &b {parked: true}\nusers:\n  alice: *b\n", `line 3: user alice: anchors and aliases are not supported`},
		{"merge", "base: &b {parked: true}\nusers:\n  alice:\n    <<: *b\n", `line 4: user alice: settings must be plain keys`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRoster([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("ParseRoster(%q) = %+v, nil; want an error containing %q", tc.yaml, r, tc.want)
			}
			if !errors.Is(err, ErrRoster) {
				t.Errorf("ParseRoster(%q) error %v is not ErrRoster", tc.yaml, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseRoster(%q) = %v; want it to contain %q", tc.yaml, err, tc.want)
			}
		})
	}
}

func TestValidUserName(t *testing.T) {
	for name, want := range map[string]bool{
		"alice": true, "_a": true, "a-b_c9": true, "cas-p-1a2b": true, strings.Repeat("a", 32): true,
		"": false, "..": false, ".": false, "../x": false, "a.b": false, "a/b": false, "A": false,
		"-a": false, "9a": false, strings.Repeat("a", 33): false, "a$": false, "a b": false, "é": false,
	} {
		if got := ValidUserName(name); got != want {
			t.Errorf("ValidUserName(%q) = %v; want %v", name, got, want)
		}
	}
}

// FuzzRoster: any input parses or fails cleanly, and whatever parses holds only
// safe names, each once.
func FuzzRoster(f *testing.F) {
	for _, s := range []string{
		"users:\n  alice: {}\n  bob: {parked: true}\n  carol: {claude_auth: false, tier: gpu}\n",
		"users: {}\n",
		"users:\n  ../x: {}\n",
		"users:\n  alice: {claude_auth: yes}\n",
		"users:\n  alice: {}\n  alice: {}\n",
		"a: &a [*a]\nusers: *a\n",
		"users:\n  alice:\n    <<: {parked: true}\n",
		"users: !!map {? alice : ~}\n",
		"%YAML 1.2\n---\nusers:\n  x:\n...\n",
		"users:\n  \"\\u0000\": {}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r *Roster
		var err error
		done := make(chan struct{})
		go func() { r, err = ParseRoster(data); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("ParseRoster(%q) took more than 5s", data)
		}
		if err != nil {
			if !errors.Is(err, ErrRoster) {
				t.Fatalf("error %v is not ErrRoster", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, e := range r.Users {
			if !ValidUserName(e.Name) {
				t.Fatalf("parsed an unsafe name %q", e.Name)
			}
			if seen[e.Name] {
				t.Fatalf("user %q twice", e.Name)
			}
			seen[e.Name] = true
		}
	})
}
