package provision

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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
		{"second document", "users:\n  alice: {}\n---\nusers:\n  bob: {}\n", `line 3: a second YAML document; the roster is one document`},
		{"second document after end marker", "users:\n  alice: {}\n...\n---\nusers: {}\n", `line 4: a second YAML document`},
		{"second document empty", "users:\n  alice: {}\n\n---\n", `line 4: a second YAML document`},
		{"second document comment only", "# fleet\n---\nusers: {}\n--- # old\n# bob: {}\n", `line 4: a second YAML document`},
		{"second document broken", "users: {}\n---\nusers: {alice: [}\n", `a second YAML document, which does not parse`},
		{"comments only", "# nothing yet\n", `empty roster`},
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

// One document with the optional markers is still one document.
func TestParseRosterDocumentMarkers(t *testing.T) {
	for _, tc := range []struct{ name, yaml string }{
		{"start marker", "---\nusers:\n  alice: {}\n"},
		{"end marker", "users:\n  alice: {}\n...\n"},
		{"end marker and comment", "users:\n  alice: {}\n...\n# trailing\n"},
		{"directive", "%YAML 1.1\n---\nusers:\n  alice: {}\n...\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRoster([]byte(tc.yaml))
			if err != nil || len(r.Users) != 1 || r.Users[0].Name != "alice" {
				t.Errorf("ParseRoster(%q) = %+v, %v; want alice", tc.yaml, r, err)
			}
		})
	}
}

func TestLoadRosterSecondDocument(t *testing.T) {
	path := filepath.Join(t.TempDir(), "roster.yaml")
	body := "# fleet\nusers:\n  alice: {}\n  bob: {}\n\n# the old list\n---\nusers:\n  mallory: {}\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := LoadRoster(path)
	want := path + ": bad roster: line 7: a second YAML document; the roster is one document"
	if err == nil || err.Error() != want || !errors.Is(err, ErrRoster) {
		t.Errorf("LoadRoster = %+v, %v; want %q", r, err, want)
	}
}

func TestReadUIDMin(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		defs *string // nil: no file
		want int
	}{
		{"absent", nil, 1000},
		{"debian", ptr("# comment\nMAIL_DIR /var/mail\n#\n# Min/max values\n#\nUID_MIN\t\t\t 1000\nUID_MAX\t\t\t60000\n#SYS_UID_MIN\t\t  100\n"), 1000},
		{"lower", ptr("UID_MIN 500\n"), 500},
		{"higher, spaces", ptr("   UID_MIN     5000   \n"), 5000},
		{"commented out", ptr("#UID_MIN 10\n# UID_MIN 10\n"), 1000},
		{"no line", ptr("UID_MAX 60000\nSYS_UID_MIN 100\n"), 1000},
		{"last wins", ptr("UID_MIN 500\nUID_MIN 2000\n"), 2000},
		{"garbage value", ptr("UID_MIN lots\n"), 1000},
		{"negative", ptr("UID_MIN -1\n"), 1000},
		{"no value", ptr("UID_MIN\n"), 1000},
		{"empty file", ptr(""), 1000},
		{"no final newline", ptr("UID_MIN 1500"), 1500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if tc.defs != nil {
				if err := os.WriteFile(path, []byte(*tc.defs), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := ReadUIDMin(path); got != tc.want {
				t.Errorf("ReadUIDMin(%q) = %d; want %d", path, got, tc.want)
			}
		})
	}
	// A directory opens but does not read: unreadable, so the default.
	if got := ReadUIDMin(dir); got != 1000 {
		t.Errorf("ReadUIDMin(a directory) = %d; want 1000", got)
	}
}

func ptr(s string) *string { return &s }

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

// TestRunRefusesSystemAccounts: root and accounts below UID_MIN get a FAIL
// line naming why, and nothing of theirs is touched (no Vault request, no file
// in the home, no unit change); the other users of the roster still run.
func TestRunRefusesSystemAccounts(t *testing.T) {
	asRoot := os.Geteuid() == 0
	for _, tc := range []struct {
		name     string
		entry    string // the user's roster line, beside carol and dave
		user     string
		uid      int  // -1: no such OS user
		unitOn   bool // its unit enabled and running before
		loginDef string
		want     string // the user's output line
		refused  bool
	}{
		{name: "root active", entry: "root: {}", user: "root", uid: 0,
			loginDef: "UID_MIN 1000\n", want: "user=root FAIL refused: root is never provisioned", refused: true},
		{name: "root parked", entry: "root: {parked: true}", user: "root", uid: 0, unitOn: true,
			loginDef: "UID_MIN 1000\n", want: "user=root FAIL refused: root is never provisioned", refused: true},
		{name: "root unknown to the OS", entry: "root: {}", user: "root", uid: -1,
			loginDef: "UID_MIN 1000\n", want: "user=root FAIL refused: root", refused: true},
		{name: "uid 0 by another name", entry: "toor: {}", user: "toor", uid: 0,
			loginDef: "UID_MIN 1000\n", want: "user=toor FAIL refused: toor has uid 0 (root)", refused: true},
		{name: "uid 0 even with UID_MIN 0", entry: "toor: {}", user: "toor", uid: 0,
			loginDef: "UID_MIN 0\n", want: "user=toor FAIL refused: toor has uid 0 (root)", refused: true},
		{name: "daemon", entry: "daemon: {}", user: "daemon", uid: 1,
			loginDef: "UID_MIN 1000\n", want: "user=daemon FAIL refused: daemon has uid 1, below UID_MIN 1000: a system account", refused: true},
		{name: "below UID_MIN from login.defs", entry: "svc: {}", user: "svc", uid: 1500,
			loginDef: "UID_MIN 2000\n", want: "user=svc FAIL refused: svc has uid 1500, below UID_MIN 2000", refused: true},
		{name: "below the default UID_MIN", entry: "svc: {}", user: "svc", uid: 999,
			want: "user=svc FAIL refused: svc has uid 999, below UID_MIN 1000", refused: true},
		{name: "system account parked", entry: "svc: {parked: true}", user: "svc", uid: 999, unitOn: true,
			loginDef: "UID_MIN 1000\n", want: "user=svc FAIL refused: svc has uid 999, below UID_MIN 1000", refused: true},
		{name: "system account claude_auth off", entry: "svc: {claude_auth: false}", user: "svc", uid: 500, unitOn: true,
			loginDef: "UID_MIN 1000\n", want: "user=svc FAIL refused: svc has uid 500", refused: true},
		{name: "at UID_MIN", entry: "erin: {parked: true}", user: "erin", uid: 2000, unitOn: true,
			loginDef: "UID_MIN 2000\n", want: "user=erin SKIP parked: stopped and disabled claude-auth-sync-agent@erin.service and claude-auth-sync@erin.timer"},
		{name: "gone from the OS, parked", entry: "frank: {parked: true}", user: "frank", uid: -1, unitOn: true,
			loginDef: "UID_MIN 1000\n", want: "user=frank SKIP parked: stopped and disabled claude-auth-sync-agent@frank.service and claude-auth-sync@frank.timer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var mu sync.Mutex
			var vaultPaths []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				vaultPaths = append(vaultPaths, r.URL.Path)
				mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte(`{"errors":["test vault says no"]}`))
			}))
			defer srv.Close()
			sysConf := filepath.Join(dir, "config")
			if err := os.WriteFile(sysConf, []byte("VAULT_ADDR="+srv.URL+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			loginDefs := filepath.Join(dir, "login.defs") // absent unless given
			if tc.loginDef != "" {
				if err := os.WriteFile(loginDefs, []byte(tc.loginDef), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			units := filepath.Join(dir, "units")
			sc := fakeSystemctl(t, units)
			accounts := map[string]Account{
				"carol": {Name: "carol", UID: 6000, GID: 6000},
				"dave":  {Name: "dave", UID: 6001, GID: 6001},
			}
			if tc.uid >= 0 {
				accounts[tc.user] = Account{Name: tc.user, UID: tc.uid, GID: tc.uid}
			}
			for name, a := range accounts {
				a.Home = filepath.Join(dir, "home", name)
				if err := os.MkdirAll(a.Home, 0o755); err != nil {
					t.Fatal(err)
				}
				if asRoot {
					os.Chown(a.Home, a.UID, a.GID)
				}
				accounts[name] = a
			}
			setUnit(t, units, "carol", true)
			setUnit(t, units, tc.user, tc.unitOn)
			var lookedUp []string
			lookup := func(name string) (Account, error) {
				mu.Lock()
				lookedUp = append(lookedUp, name)
				mu.Unlock()
				if a, ok := accounts[name]; ok {
					return a, nil
				}
				return Account{}, errors.New("unknown user " + name)
			}
			r, err := ParseRoster([]byte("users:\n  carol: {parked: true}\n  dave: {}\n  " + tc.entry + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			sum, err := Run(context.Background(), Options{
				Roster:        r,
				AdminToken:    "hvs.not-a-real-admin-token",
				SystemConfig:  sysConf,
				Getenv:        func(string) string { return "" },
				StateDir:      filepath.Join(dir, "state"),
				Systemctl:     sc,
				LookupAccount: lookup,
				LoginDefs:     loginDefs,
				Parallel:      1,
				Out:           &out,
			})
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, out.String())
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			var line string
			for _, l := range lines {
				if strings.HasPrefix(l, "user="+tc.user+" ") {
					line = l
				}
			}
			if !strings.HasPrefix(line, tc.want) {
				t.Errorf("%s's line = %q; want it to start with %q\nall:\n%s", tc.user, line, tc.want, out.String())
			}
			if strings.Contains(out.String(), "not-a-real-admin-token") {
				t.Errorf("the admin token shows in the output")
			}
			// The rest of the roster ran: carol's unit went off, dave reached
			// Vault (as root, where his home can be his) or his home check.
			if !strings.Contains(out.String(), "user=carol SKIP parked: stopped and disabled") {
				t.Errorf("carol was not reconciled:\n%s", out.String())
			}
			if unitOn(t, units, "carol") {
				t.Errorf("carol's unit is still on")
			}
			if !strings.Contains(out.String(), "user=dave FAIL") || strings.Contains(out.String(), "user=dave FAIL refused") {
				t.Errorf("dave: want a FAIL from Vault or his home, not a refusal:\n%s", out.String())
			}
			mu.Lock()
			defer mu.Unlock()
			if asRoot && !slices.ContainsFunc(vaultPaths, func(p string) bool { return strings.HasSuffix(p, "-dave") }) {
				t.Errorf("dave's policy was never asked for; Vault saw %v", vaultPaths)
			}
			wantFailed := 1
			if tc.refused {
				wantFailed = 2
			}
			if sum.Failed != wantFailed {
				t.Errorf("Summary.Failed = %d; want %d", sum.Failed, wantFailed)
			}
			if !tc.refused {
				return
			}
			// Nothing of the refused user's was touched.
			if tc.user == "root" && slices.Contains(lookedUp, "root") {
				t.Errorf("root was looked up; it is refused by name first")
			}
			for _, p := range vaultPaths {
				if strings.Contains(p, tc.user) {
					t.Errorf("Vault was asked about %s: %s", tc.user, p)
				}
			}
			if unitOn(t, units, tc.user) != tc.unitOn {
				t.Errorf("%s's unit changed from on=%v", tc.user, tc.unitOn)
			}
			calls, _ := os.ReadFile(filepath.Join(units, "calls"))
			for _, c := range strings.Split(string(calls), "\n") {
				if strings.Contains(c, "@"+tc.user+".") {
					t.Errorf("systemctl %s: not even asked about a refused user's unit", c)
				}
			}
			if home, ok := accounts[tc.user]; ok {
				if ents, _ := os.ReadDir(home.Home); len(ents) > 0 {
					t.Errorf("%s's home got %v", tc.user, ents)
				}
			}
		})
	}
}

// fakeSystemctl answers from marker files under dir and records every call.
func fakeSystemctl(t *testing.T, dir string) Systemctl {
	t.Helper()
	for _, d := range []string{"enabled", "active"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "systemctl")
	script := `#!/bin/sh
d='` + dir + `'
echo "$*" >> "$d/calls"
case "$1" in
is-enabled) if [ -e "$d/enabled/$2" ]; then echo enabled; exit 0; fi; echo disabled; exit 1 ;;
is-active) if [ -e "$d/active/$2" ]; then echo active; exit 0; fi; echo inactive; exit 3 ;;
enable) shift 2; for u; do touch "$d/enabled/$u" "$d/active/$u"; done ;;
disable) shift 2; for u; do rm -f "$d/enabled/$u" "$d/active/$u"; done ;;
*) exit 9 ;;
esac
`
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return Systemctl{Path: bin}
}

func setUnit(t *testing.T, dir, user string, on bool) {
	t.Helper()
	for _, d := range []string{"enabled", "active"} {
		for _, u := range UnitsFor(user) {
			p := filepath.Join(dir, d, u)
			if on {
				if err := os.WriteFile(p, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			} else {
				os.Remove(p)
			}
		}
	}
}

// unitOn: the agent and the timer both enabled (and a half-enabled pair fails
// the test: provision always moves them together).
func unitOn(t *testing.T, dir, user string) bool {
	t.Helper()
	n := 0
	for _, u := range UnitsFor(user) {
		if _, err := os.Stat(filepath.Join(dir, "enabled", u)); err == nil {
			n++
		}
	}
	if n == 1 {
		t.Errorf("%s: only one of %v is enabled", user, UnitsFor(user))
	}
	return n == len(UnitsFor(user))
}
