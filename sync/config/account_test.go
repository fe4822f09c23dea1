package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The tests' made-up users (first.last, bob) stand for the caller's own
// account; every other name goes to the real user databases.
func TestMain(m *testing.M) {
	real := LookupAccount
	LookupAccount = func(name string) (*Account, error) {
		switch name {
		case "first.last", "bob":
			return &Account{Name: name, UID: geteuid(), GID: os.Getegid()}, nil
		}
		return real(name)
	}
	os.Exit(m.Run())
}

func TestLookupAccount(t *testing.T) {
	for _, tc := range []struct {
		name     string
		wantHome string // "" = an error
		errIs    error
	}{
		{"root", "/root", nil},
		{"daemon", "/usr/sbin", nil},
		{"no-such-user-xyz", "", ErrNoAccount},
		{"0", "", nil},                                  // a uid, not a name: never looked up as one
		{"-s", "", nil},                                 // an option to getent, not a name
		{"a:b", "", nil},                                // not a name
		{"no-such-user@corp.example", "", ErrNoAccount}, // SSSD's form is a name
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := LookupNSS(tc.name)
			if tc.wantHome == "" {
				if err == nil {
					t.Fatalf("LookupNSS(%q) = %+v; want an error", tc.name, a)
				}
				if tc.errIs != nil && !errors.Is(err, tc.errIs) {
					t.Errorf("LookupNSS(%q) = %v; want %v", tc.name, err, tc.errIs)
				}
				return
			}
			if err != nil {
				t.Skipf("LookupNSS(%q): %v (no such account on this machine?)", tc.name, err)
			}
			if a.Home != tc.wantHome || a.Name != tc.name || len(a.Groups) == 0 {
				t.Errorf("LookupNSS(%q) = %+v; want home %s and groups", tc.name, a, tc.wantHome)
			}
		})
	}
}

// TestLoadActFor: --user or CLAUDE_AUTH_USER naming another account is root's
// only, and then means that account's home and files, never the caller's.
func TestLoadActFor(t *testing.T) {
	daemon, err := LookupNSS("daemon")
	if err != nil {
		t.Skipf("no daemon account: %v", err)
	}
	for _, tc := range []struct {
		name    string
		euid    int
		env     env
		flags   Flags
		errHas  string
		actFor  string // the account acted for ("" = the caller's own)
		stateIn string // the state dir is under this
	}{
		{name: "root for another user by flag", euid: 0, flags: Flags{User: "daemon"}, actFor: "daemon", stateIn: daemon.Home},
		{name: "root for another user by env", euid: 0, env: env{"CLAUDE_AUTH_USER": "daemon"}, actFor: "daemon", stateIn: daemon.Home},
		{name: "root's own paths from the environment are not the user's", euid: 0,
			env: env{"CLAUDE_AUTH_USER": "daemon", "XDG_STATE_HOME": "/root/.local/state", "CLAUDE_AUTH_STATE_DIR": "/root/state",
				"CLAUDE_CONFIG_DIR": "/root/.claude", "CLAUDE_CREDENTIALS_FILE": "/root/.claude/.credentials.json"},
			actFor: "daemon", stateIn: daemon.Home},
		{name: "non-root for another user", euid: 4242, flags: Flags{User: "daemon"}, errHas: "only root can act for another user"},
		{name: "non-root for another user by env", euid: 4242, env: env{"CLAUDE_AUTH_USER": "daemon"}, errHas: "only root can act for another user"},
		{name: "root for an unknown user", euid: 0, flags: Flags{User: "no-such-user-xyz"}, errHas: "no such user"},
		{name: "non-root for an unknown user", euid: 4242, flags: Flags{User: "no-such-user-xyz"}, errHas: "no such user"},
		{name: "a uid is not a user name", euid: 0, flags: Flags{User: "0"}, errHas: "not a user name"},
		{name: "the caller's own name", euid: 0, flags: Flags{User: "bob"}, actFor: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unsetVault(t)
			e, home := base(t)
			for k, v := range tc.env {
				e[k] = v
			}
			old := geteuid
			geteuid = func() int { return tc.euid }
			defer func() { geteuid = old }()
			if tc.name == "the caller's own name" {
				geteuid = old
			}
			c, err := Load(e.get, tc.flags)
			if tc.errHas != "" {
				if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("Load() = %v; want a configuration error with %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.actFor == "" {
				if c.ActFor != nil || c.Home != home {
					t.Errorf("ActFor, Home = %+v, %q; want nil, %q", c.ActFor, c.Home, home)
				}
				return
			}
			if c.ActFor == nil || c.ActFor.Name != tc.actFor || c.User != tc.actFor {
				t.Fatalf("ActFor, User = %+v, %q; want %s", c.ActFor, c.User, tc.actFor)
			}
			for name, p := range map[string]string{"Home": c.Home, "StateDir": c.StateDir, "CredentialsFile": c.CredentialsFile,
				"VaultTokenFile": c.VaultTokenFile, "TokenEnvFile": c.TokenEnvFile, "LocalStoreFile": c.LocalStoreFile, "ClaudeConfigDir": c.ClaudeConfigDir} {
				if !strings.HasPrefix(p, tc.stateIn) || strings.HasPrefix(p, "/root") || strings.HasPrefix(p, home) {
					t.Errorf("%s = %q; want it under %s", name, p, tc.stateIn)
				}
			}
			if c.VaultPath != "workstation/claude-users/"+tc.actFor {
				t.Errorf("VaultPath = %q", c.VaultPath)
			}
		})
	}
}

func TestExpandHome(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"~/.local/bin/claude", "/home/al/.local/bin/claude"},
		{"~", "/home/al"},
		{"$HOME/.local/bin/claude", "/home/al/.local/bin/claude"},
		{"${HOME}/bin/claude", "/home/al/bin/claude"},
		{"{home}/.claude/local/claude", "/home/al/.claude/local/claude"},
		{"/opt/claude/bin/claude", "/opt/claude/bin/claude"},
		{"claude", "claude"},
		{"~bob/claude", "~bob/claude"}, // another user's home is not ours to name
		{"", ""},
	} {
		if got := expandHome(tc.in, "/home/al"); got != tc.want {
			t.Errorf("expandHome(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

// TestLoadClaudeBin: the configured CLI gets the user's home wherever it was set.
func TestLoadClaudeBin(t *testing.T) {
	for _, tc := range []struct {
		name  string
		file  string
		env   env
		flags Flags
		want  string // under home
	}{
		{name: "env tilde", env: env{"CLAUDE_AUTH_CLAUDE_BIN": "~/.local/bin/claude"}, want: "/.local/bin/claude"},
		{name: "env $HOME", env: env{"CLAUDE_AUTH_CLAUDE_BIN": "$HOME/.local/bin/claude"}, want: "/.local/bin/claude"},
		{name: "file {home}", file: "CLAUDE_AUTH_CLAUDE_BIN={home}/.claude/local/claude\n", want: "/.claude/local/claude"},
		{name: "file tilde", file: "CLAUDE_AUTH_CLAUDE_BIN=~/.local/bin/claude\n", want: "/.local/bin/claude"},
		{name: "flag tilde", flags: Flags{ClaudeBin: "~/bin/claude"}, want: "/bin/claude"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unsetVault(t)
			e, home := base(t)
			for k, v := range tc.env {
				e[k] = v
			}
			if tc.file != "" {
				if err := os.WriteFile(e["CLAUDE_AUTH_SYSTEM_CONFIG"], []byte(tc.file), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			c, err := Load(e.get, tc.flags)
			if err != nil {
				t.Fatal(err)
			}
			if c.ClaudeBin != home+tc.want {
				t.Errorf("ClaudeBin = %q; want %q", c.ClaudeBin, home+tc.want)
			}
		})
	}
}

// TestFindClaude: the configured command, else the user's PATH, then the
// installers' places, in order; what was tried is named when nothing is found.
func TestFindClaude(t *testing.T) {
	exe := func(t *testing.T, p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name     string
		bin      string   // ClaudeBin ("" = search)
		setting  string   // where it came from
		exes     []string // under the temp dir; "home/…" is under the home
		want     string   // under the temp dir; "" = not found
		triedHas []string // in the NotFound text, "$T" is the temp dir
		triedNot []string
	}{
		{name: "on PATH", exes: []string{"path/claude", "home/.local/bin/claude"}, want: "path/claude"},
		{name: "native installer", exes: []string{"home/.local/bin/claude", "home/.claude/local/claude"}, want: "home/.local/bin/claude"},
		{name: "local install", exes: []string{"home/.claude/local/claude"}, want: "home/.claude/local/claude"},
		{name: "nowhere", want: "", triedHas: []string{"claude on PATH ($T/path)", "$T/home/.local/bin/claude", "$T/home/.claude/local/claude", "/usr/local/bin/claude", "/usr/bin/claude", "set CLAUDE_AUTH_CLAUDE_BIN"}},
		{name: "configured path", bin: "$T/home/.local/bin/claude", setting: "/etc/claude-auth-sync/config", exes: []string{"home/.local/bin/claude"}, want: "home/.local/bin/claude"},
		{name: "configured path missing", bin: "$T/home/.local/bin/claude", setting: "/etc/claude-auth-sync/config", exes: []string{"path/claude"},
			triedHas: []string{"tried $T/home/.local/bin/claude (CLAUDE_AUTH_CLAUDE_BIN from /etc/claude-auth-sync/config)"}, triedNot: []string{"PATH", "set CLAUDE_AUTH_CLAUDE_BIN"}},
		{name: "configured name on PATH", bin: "claude-2", setting: "environment", exes: []string{"path/claude-2"}, want: "path/claude-2"},
		{name: "configured name not on PATH", bin: "claude-2", setting: "environment", exes: []string{"home/.local/bin/claude"},
			triedHas: []string{"claude-2 on PATH"}, triedNot: []string{".local/bin"}},
		{name: "not executable", exes: []string{}, want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, e := range tc.exes {
				exe(t, filepath.Join(dir, e))
			}
			if tc.name == "not executable" {
				if err := os.MkdirAll(filepath.Join(dir, "path"), 0o755); err != nil {
					t.Fatal(err)
				}
				os.WriteFile(filepath.Join(dir, "path", "claude"), []byte("x"), 0o644)
			}
			c := &Config{Home: filepath.Join(dir, "home"), SearchPath: filepath.Join(dir, "path") + ":relative",
				ClaudeBin: strings.ReplaceAll(tc.bin, "$T", dir), Sources: map[string]string{}}
			if tc.setting != "" {
				c.Sources["CLAUDE_AUTH_CLAUDE_BIN"] = tc.setting
			}
			if tc.name == "nowhere" {
				c.SearchPath = filepath.Join(dir, "path")
				for _, p := range claudeFallbacks[2:] {
					if isExecutable(p) {
						t.Skipf("%s is installed on this machine", p)
					}
				}
			}
			l := c.FindClaude()
			want := ""
			if tc.want != "" {
				want = filepath.Join(dir, tc.want)
			}
			if l.Path != want {
				t.Errorf("FindClaude() = %q (tried %v); want %q", l.Path, l.Tried, want)
			}
			msg := l.NotFound()
			for _, s := range tc.triedHas {
				if s = strings.ReplaceAll(s, "$T", dir); !strings.Contains(msg, s) {
					t.Errorf("NotFound() = %q; want it to contain %q", msg, s)
				}
			}
			for _, s := range tc.triedNot {
				if strings.Contains(msg, s) {
					t.Errorf("NotFound() = %q; want no %q", msg, s)
				}
			}
		})
	}
}

func TestParsePasswd(t *testing.T) {
	for _, c := range []struct {
		line    string
		want    *Account
		wantErr bool
	}{
		{"alice:x:1001:1001:Alice,,,:/home/alice:/bin/bash", &Account{Name: "alice", UID: 1001, GID: 1001, Home: "/home/alice", Groups: []int{1001}}, false},
		{"alice:*:70001:100::/srv/home/alice:/usr/sbin/nologin", &Account{Name: "alice", UID: 70001, GID: 100, Home: "/srv/home/alice", Groups: []int{100}}, false},
		{"alice:x:1001:1001::home/alice:/bin/sh", nil, true}, // relative home
		{"alice:x:-1:1001::/home/alice:/bin/sh", nil, true},
		{"alice:x:one:1001::/home/alice:/bin/sh", nil, true},
	} {
		got, err := parsePasswd(strings.Split(c.line, ":"))
		if (err != nil) != c.wantErr || (c.want != nil && (got == nil || got.Name != c.want.Name || got.UID != c.want.UID || got.GID != c.want.GID || got.Home != c.want.Home || len(got.Groups) != 1 || got.Groups[0] != c.want.GID)) {
			t.Errorf("parsePasswd(%q) = %+v, %v; want %+v (error %v)", c.line, got, err, c.want, c.wantErr)
		}
	}
}

// The current account is known whether or not /etc/passwd holds it.
func TestCurrentAccount(t *testing.T) {
	if name, home := CurrentAccount(); name == "" || !strings.HasPrefix(home, "/") {
		t.Errorf("CurrentAccount() = %q, %q", name, home)
	}
}
