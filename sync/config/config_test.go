package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// env is a fake environment for Load.
type env map[string]string

func (e env) get(k string) string { return e[k] }

// base is an environment that pins everything Load would otherwise take from the
// machine (the user, the system config file, the journal socket).
func base(t *testing.T) (env, string) {
	t.Helper()
	home, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return env{
		"HOME":                       home,
		"CLAUDE_AUTH_USER":           "first.last",
		"CLAUDE_AUTH_SYSTEM_CONFIG":  filepath.Join(home, "no-system-config"),
		"CLAUDE_AUTH_JOURNAL_SOCKET": "off",
	}, home
}

// unsetVault restores the VAULT_* variables Load may set from the system file.
func unsetVault(t *testing.T) {
	for _, k := range VaultClientKeys {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

func TestLoadDefaults(t *testing.T) {
	unsetVault(t)
	e, home := base(t)
	c, err := Load(e.get, Flags{})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"User", c.User, "first.last"},
		{"Home", c.Home, home},
		{"ClaudeConfigDir", c.ClaudeConfigDir, filepath.Join(home, ".claude")},
		{"CredentialsFile", c.CredentialsFile, filepath.Join(home, ".claude", ".credentials.json")},
		{"ConfigDir", c.ConfigDir, filepath.Join(home, ".config", "claude-auth-sync")},
		{"VaultTokenFile", c.VaultTokenFile, filepath.Join(home, ".config", "claude-auth-sync", "vault-token")},
		{"TokenEnvFile", c.TokenEnvFile, filepath.Join(home, ".config", "claude-auth-sync", "claude-oauth.env")},
		{"StateDir", c.StateDir, filepath.Join(home, ".local", "state", "claude-auth-sync")},
		{"LogFile", c.LogFile, filepath.Join(home, ".local", "state", "claude-auth-sync", "sync.log")},
		{"LocalStoreFile", c.LocalStoreFile, filepath.Join(home, ".local", "state", "claude-auth-sync", "backup.json")},
		{"Store", c.Store, "file"},
		{"VaultMount", c.VaultMount, "secret"},
		{"VaultPath", c.VaultPath, "workstation/claude-users/first.last"},
		{"ClaudeBin", c.ClaudeBin, ""}, // unset: FindClaude searches
		{"JournalSocket", c.JournalSocket, ""},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("Load() %s = %q; want %q", ch.name, ch.got, ch.want)
		}
	}
	durs := []struct {
		name      string
		got, want time.Duration
	}{
		{"CheckTimeout", c.CheckTimeout, 90 * time.Second},
		{"CheckInterval", c.CheckInterval, 6 * time.Hour},
		{"VaultTimeout", c.VaultTimeout, 15 * time.Second},
	}
	for _, d := range durs {
		if d.got != d.want {
			t.Errorf("Load() %s = %v; want %v", d.name, d.got, d.want)
		}
	}
}

func TestLoadOverrides(t *testing.T) {
	tests := []struct {
		name  string
		env   env
		flags Flags
		check func(t *testing.T, c *Config, home string)
	}{
		{name: "CLAUDE_CONFIG_DIR through a symlink", env: env{"CLAUDE_CONFIG_DIR": "LINK"},
			check: func(t *testing.T, c *Config, home string) {
				want := filepath.Join(home, "real-claude")
				if c.ClaudeConfigDir != want || c.CredentialsFile != filepath.Join(want, ".credentials.json") {
					t.Errorf("ClaudeConfigDir, CredentialsFile = %q, %q; want %q and the file in it", c.ClaudeConfigDir, c.CredentialsFile, want)
				}
			}},
		{name: "CLAUDE_CREDENTIALS_FILE", env: env{"CLAUDE_CREDENTIALS_FILE": "/srv/creds.json"},
			check: func(t *testing.T, c *Config, home string) {
				if c.CredentialsFile != "/srv/creds.json" || c.ClaudeConfigDir != filepath.Join(home, ".claude") {
					t.Errorf("CredentialsFile = %q (dir %q); want /srv/creds.json", c.CredentialsFile, c.ClaudeConfigDir)
				}
			}},
		{name: "flag beats CLAUDE_CREDENTIALS_FILE", env: env{"CLAUDE_CREDENTIALS_FILE": "/srv/creds.json"}, flags: Flags{CredentialsFile: "/flag/creds.json"},
			check: func(t *testing.T, c *Config, home string) {
				if c.CredentialsFile != "/flag/creds.json" {
					t.Errorf("CredentialsFile = %q; want /flag/creds.json", c.CredentialsFile)
				}
			}},
		{name: "XDG dirs", env: env{"XDG_CONFIG_HOME": "/xdg/config", "XDG_STATE_HOME": "/xdg/state"},
			check: func(t *testing.T, c *Config, home string) {
				if c.VaultTokenFile != "/xdg/config/claude-auth-sync/vault-token" || c.LogFile != "/xdg/state/claude-auth-sync/sync.log" {
					t.Errorf("VaultTokenFile, LogFile = %q, %q; want them under XDG dirs", c.VaultTokenFile, c.LogFile)
				}
			}},
		{name: "vault path with {user}", env: env{"CLAUDE_AUTH_VAULT_PATH": "kv/team/{user}/claude"},
			check: func(t *testing.T, c *Config, home string) {
				if c.VaultMount != "kv" || c.VaultPath != "team/first.last/claude" {
					t.Errorf("VaultMount, VaultPath = %q, %q; want kv, team/first.last/claude", c.VaultMount, c.VaultPath)
				}
			}},
		{name: "vault path with slashes around", env: env{"CLAUDE_AUTH_VAULT_PATH": "/secret/workstation/claude-users/{user}/"},
			check: func(t *testing.T, c *Config, home string) {
				if c.VaultMount != "secret" || c.VaultPath != "workstation/claude-users/first.last" {
					t.Errorf("VaultMount, VaultPath = %q, %q", c.VaultMount, c.VaultPath)
				}
			}},
		{name: "explicit nested mount", env: env{"CLAUDE_AUTH_VAULT_MOUNT": "kv/ws", "CLAUDE_AUTH_VAULT_PATH": "kv/ws/users/{user}"},
			check: func(t *testing.T, c *Config, home string) {
				if c.VaultMount != "kv/ws" || c.VaultPath != "users/first.last" {
					t.Errorf("VaultMount, VaultPath = %q, %q; want kv/ws, users/first.last", c.VaultMount, c.VaultPath)
				}
			}},
		{name: "flag vault path", env: env{"CLAUDE_AUTH_VAULT_PATH": "kv/env/{user}"}, flags: Flags{VaultPath: "kv/flag/{user}"},
			check: func(t *testing.T, c *Config, home string) {
				if c.VaultPath != "flag/first.last" {
					t.Errorf("VaultPath = %q; want flag/first.last", c.VaultPath)
				}
			}},
		{name: "auto becomes vault with VAULT_ADDR", env: env{"VAULT_ADDR": "https://vault.example:8200"},
			check: func(t *testing.T, c *Config, home string) {
				if c.Store != "vault" || c.VaultAddr != "https://vault.example:8200" || c.Sources["VAULT_ADDR"] != "environment" {
					t.Errorf("Store, VaultAddr, source = %q, %q, %q; want vault", c.Store, c.VaultAddr, c.Sources["VAULT_ADDR"])
				}
			}},
		{name: "explicit file store with VAULT_ADDR", env: env{"VAULT_ADDR": "https://v", "CLAUDE_AUTH_STORE": "file"},
			check: func(t *testing.T, c *Config, home string) {
				if c.Store != "file" {
					t.Errorf("Store = %q; want file", c.Store)
				}
			}},
		{name: "flag store beats env", env: env{"CLAUDE_AUTH_STORE": "vault"}, flags: Flags{Store: "file"},
			check: func(t *testing.T, c *Config, home string) {
				if c.Store != "file" {
					t.Errorf("Store = %q; want file", c.Store)
				}
			}},
		{name: "durations", env: env{"CLAUDE_AUTH_CHECK_TIMEOUT": "2m", "CLAUDE_AUTH_CHECK_INTERVAL": "3600", "VAULT_CLIENT_TIMEOUT": "5s"},
			check: func(t *testing.T, c *Config, home string) {
				if c.CheckTimeout != 2*time.Minute || c.CheckInterval != time.Hour || c.VaultTimeout != 5*time.Second {
					t.Errorf("CheckTimeout, CheckInterval, VaultTimeout = %v, %v, %v; want 2m, 1h, 5s", c.CheckTimeout, c.CheckInterval, c.VaultTimeout)
				}
			}},
		{name: "flag timeout beats env", env: env{"CLAUDE_AUTH_CHECK_TIMEOUT": "2m"}, flags: Flags{CheckTimeout: 7 * time.Second},
			check: func(t *testing.T, c *Config, home string) {
				if c.CheckTimeout != 7*time.Second {
					t.Errorf("CheckTimeout = %v; want 7s", c.CheckTimeout)
				}
			}},
		{name: "flag user", flags: Flags{User: "bob"},
			check: func(t *testing.T, c *Config, home string) {
				if c.User != "bob" || c.VaultPath != "workstation/claude-users/bob" {
					t.Errorf("User, VaultPath = %q, %q; want bob", c.User, c.VaultPath)
				}
			}},
		{name: "metrics dir", env: env{"CLAUDE_AUTH_METRICS_DIR": "/var/lib/prometheus/node-exporter"},
			check: func(t *testing.T, c *Config, home string) {
				if c.MetricsDir != "/var/lib/prometheus/node-exporter" {
					t.Errorf("MetricsDir = %q; want /var/lib/prometheus/node-exporter", c.MetricsDir)
				}
			}},
		{name: "metrics off by default",
			check: func(t *testing.T, c *Config, home string) {
				if c.MetricsDir != "" {
					t.Errorf("MetricsDir = %q; want \"\" (off)", c.MetricsDir)
				}
			}},
		{name: "journal socket", env: env{"CLAUDE_AUTH_JOURNAL_SOCKET": "/run/j.sock"},
			check: func(t *testing.T, c *Config, home string) {
				if c.JournalSocket != "/run/j.sock" {
					t.Errorf("JournalSocket = %q; want /run/j.sock", c.JournalSocket)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unsetVault(t)
			e, home := base(t)
			if err := os.Mkdir(filepath.Join(home, "real-claude"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(home, "real-claude"), filepath.Join(home, "link")); err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.env {
				if v == "LINK" {
					v = filepath.Join(home, "link")
				}
				e[k] = v
			}
			c, err := Load(e.get, tt.flags)
			if err != nil {
				t.Fatalf("Load() = %v; want no error", err)
			}
			tt.check(t, c, home)
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name   string
		env    env
		flags  Flags
		errHas string
	}{
		{name: "bad store", env: env{"CLAUDE_AUTH_STORE": "s3"}, errHas: "CLAUDE_AUTH_STORE"},
		{name: "vault store without address", env: env{"CLAUDE_AUTH_STORE": "vault"}, errHas: "VAULT_ADDR"},
		{name: "bad check timeout", env: env{"CLAUDE_AUTH_CHECK_TIMEOUT": "soon"}, errHas: "CLAUDE_AUTH_CHECK_TIMEOUT"},
		{name: "negative check timeout", env: env{"CLAUDE_AUTH_CHECK_TIMEOUT": "-5s"}, errHas: "CLAUDE_AUTH_CHECK_TIMEOUT"},
		{name: "zero check interval", env: env{"CLAUDE_AUTH_CHECK_INTERVAL": "0"}, errHas: "CLAUDE_AUTH_CHECK_INTERVAL"},
		{name: "bad vault timeout", env: env{"VAULT_CLIENT_TIMEOUT": "1x"}, errHas: "VAULT_CLIENT_TIMEOUT"},
		{name: "vault path without mount", env: env{"CLAUDE_AUTH_VAULT_PATH": "{user}"}, errHas: "CLAUDE_AUTH_VAULT_PATH"},
		{name: "vault path with ..", env: env{"CLAUDE_AUTH_VAULT_PATH": "secret/a/../b/{user}"}, errHas: "not a plain KV path"},
		{name: "vault API path with data", env: env{"CLAUDE_AUTH_VAULT_PATH": "secret/data/workstation/claude-users/{user}"}, errHas: "not a plain KV path"},
		{name: "vault metadata path", env: env{"CLAUDE_AUTH_VAULT_PATH": "secret/metadata/workstation/claude-users/{user}"}, errHas: "not a plain KV path"},
		{name: "vault path with inner data", env: env{"CLAUDE_AUTH_VAULT_PATH": "secret/ws/data/{user}"}, errHas: "not a plain KV path"},
		{name: "vault path with //", env: env{"VAULT_ADDR": "http://127.0.0.1:8200", "CLAUDE_AUTH_VAULT_PATH": "secret/a//b/{user}"}, errHas: "not a usable Vault path segment"},
		{name: "vault path with an encoded dot segment", env: env{"VAULT_ADDR": "http://127.0.0.1:8200", "CLAUDE_AUTH_VAULT_PATH": "secret/a/%2e%2e/{user}"}, errHas: "not a usable Vault path segment"},
		{name: "vault path with a glob", env: env{"VAULT_ADDR": "http://127.0.0.1:8200", "CLAUDE_AUTH_VAULT_PATH": "secret/a/*/{user}"}, errHas: "not a usable Vault path segment"},
		{name: "vault mount with a dot segment", env: env{"VAULT_ADDR": "http://127.0.0.1:8200", "CLAUDE_AUTH_VAULT_MOUNT": "kv/.", "CLAUDE_AUTH_VAULT_PATH": "kv/./users/{user}"}, errHas: "not a usable Vault path segment"},
		{name: "named system config missing", flags: Flags{SystemConfig: "/nonexistent/claude-auth-sync/config"}, errHas: "/nonexistent/claude-auth-sync/config"},
		{name: "no home", env: env{"HOME": "", "CLAUDE_AUTH_USER": "nobody-here-xyz"}, errHas: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unsetVault(t)
			e, _ := base(t)
			for k, v := range tt.env {
				e[k] = v
			}
			c, err := Load(e.get, tt.flags)
			if tt.name == "no home" {
				// HOME unset falls back to the passwd entry of the current user:
				// either that works, or it is a configuration error.
				if err != nil && !errors.Is(err, ErrConfig) {
					t.Errorf("Load() without HOME = %v; want success or %v", err, ErrConfig)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load(%v, %+v) = %+v, nil; want an error", tt.env, tt.flags, c)
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("Load(%v, %+v) = %v; want %v", tt.env, tt.flags, err, ErrConfig)
			}
			if !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("Load(%v, %+v) = %q; want it to mention %q", tt.env, tt.flags, err, tt.errHas)
			}
		})
	}
}

func writeSys(t *testing.T, dir, content string) string {
	t.Helper()
	p := filepath.Join(dir, "config")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadFile(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    map[string]string
		errHas  string
	}{
		{name: "keys, comments, quotes", content: `# fleet settings
VAULT_ADDR=https://vault.example:8200

  # indented comment
CLAUDE_AUTH_VAULT_PATH="secret/workstation/claude-users/{user}"
CLAUDE_AUTH_CHECK_TIMEOUT='2m'
export VAULT_NAMESPACE = admin
CLAUDE_AUTH_CLAUDE_BIN=/opt/claude/bin/claude
CLAUDE_AUTH_STORE=
`, want: map[string]string{
			"VAULT_ADDR":                "https://vault.example:8200",
			"CLAUDE_AUTH_VAULT_PATH":    "secret/workstation/claude-users/{user}",
			"CLAUDE_AUTH_CHECK_TIMEOUT": "2m",
			"VAULT_NAMESPACE":           "admin",
			"CLAUDE_AUTH_CLAUDE_BIN":    "/opt/claude/bin/claude",
			"CLAUDE_AUTH_STORE":         "",
		}},
		{name: "value with = inside", content: "VAULT_ADDR=https://v/?a=b\n", want: map[string]string{"VAULT_ADDR": "https://v/?a=b"}},
		{name: "unknown key names its line", content: "# c\nVAULT_ADDR=x\n\nVAULT_TOKEN=hvs.secret\n", errHas: ":4: unknown setting VAULT_TOKEN"},
		{name: "typo", content: "CLAUDE_AUTH_STOR=file\n", errHas: ":1: unknown setting CLAUDE_AUTH_STOR"},
		{name: "no equals", content: "VAULT_ADDR=x\nVAULT_ADDR\n", errHas: ":2: want KEY=value"},
		{name: "empty key", content: "=x\n", errHas: ":1: want KEY=value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeSys(t, t.TempDir(), tt.content)
			got, err := ReadFile(p)
			if tt.errHas != "" {
				if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.errHas) {
					t.Errorf("ReadFile(%q) = %v; want %v containing %q", tt.content, err, ErrConfig, tt.errHas)
				}
				if err != nil && strings.Contains(err.Error(), "hvs.secret") {
					t.Errorf("ReadFile error %q contains a value", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadFile(%q) = %v", tt.content, err)
			}
			if len(got) != len(tt.want) {
				t.Errorf("ReadFile(%q) = %v; want %v", tt.content, got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("ReadFile(%q)[%s] = %q; want %q", tt.content, k, got[k], v)
				}
			}
		})
	}
}

func TestLoadSystemFile(t *testing.T) {
	sys := `VAULT_ADDR=https://file.vault:8200
CLAUDE_AUTH_VAULT_PATH=kv/fleet/{user}
CLAUDE_AUTH_CHECK_TIMEOUT=45s
CLAUDE_AUTH_CLAUDE_BIN=/opt/claude
VAULT_CACERT=/etc/ssl/fleet-ca.pem
VAULT_NAMESPACE=fleet
`
	tests := []struct {
		name  string
		env   env
		flags Flags
		check func(t *testing.T, c *Config, sysPath string)
	}{
		{name: "file applies",
			check: func(t *testing.T, c *Config, sysPath string) {
				if c.VaultAddr != "https://file.vault:8200" || c.Store != "vault" || c.VaultMount != "kv" || c.VaultPath != "fleet/first.last" ||
					c.CheckTimeout != 45*time.Second || c.ClaudeBin != "/opt/claude" {
					t.Errorf("Load() with the system file = %+v; want its settings", c)
				}
				if c.Sources["VAULT_ADDR"] != sysPath {
					t.Errorf("Sources[VAULT_ADDR] = %q; want %q", c.Sources["VAULT_ADDR"], sysPath)
				}
				if got := os.Getenv("VAULT_CACERT"); got != "/etc/ssl/fleet-ca.pem" {
					t.Errorf("VAULT_CACERT from the file reached the environment as %q; want /etc/ssl/fleet-ca.pem", got)
				}
			}},
		{name: "env beats file", env: env{"VAULT_ADDR": "https://env.vault", "CLAUDE_AUTH_CHECK_TIMEOUT": "10s", "VAULT_NAMESPACE": "envns"},
			check: func(t *testing.T, c *Config, sysPath string) {
				if c.VaultAddr != "https://env.vault" || c.CheckTimeout != 10*time.Second || c.Sources["VAULT_ADDR"] != "environment" {
					t.Errorf("VaultAddr, CheckTimeout = %q, %v; want the environment's", c.VaultAddr, c.CheckTimeout)
				}
				if got := os.Getenv("VAULT_NAMESPACE"); got == "fleet" {
					t.Errorf("VAULT_NAMESPACE from the file overrode the environment's")
				}
			}},
		{name: "flags beat env and file", env: env{"VAULT_ADDR": "https://env.vault"},
			flags: Flags{VaultAddr: "https://flag.vault", ClaudeBin: "/flag/claude", CheckTimeout: time.Second},
			check: func(t *testing.T, c *Config, sysPath string) {
				if c.VaultAddr != "https://flag.vault" || c.ClaudeBin != "/flag/claude" || c.CheckTimeout != time.Second {
					t.Errorf("VaultAddr, ClaudeBin, CheckTimeout = %q, %q, %v; want the flags'", c.VaultAddr, c.ClaudeBin, c.CheckTimeout)
				}
			}},
		{name: "via --system-config", flags: Flags{SystemConfig: "SYS"},
			check: func(t *testing.T, c *Config, sysPath string) {
				if c.VaultAddr != "https://file.vault:8200" {
					t.Errorf("VaultAddr = %q; want the file's", c.VaultAddr)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unsetVault(t)
			e, home := base(t)
			p := writeSys(t, home, sys)
			e["CLAUDE_AUTH_SYSTEM_CONFIG"] = p
			for k, v := range tt.env {
				e[k] = v
			}
			fl := tt.flags
			if fl.SystemConfig == "SYS" {
				fl.SystemConfig = p
				e["CLAUDE_AUTH_SYSTEM_CONFIG"] = filepath.Join(home, "elsewhere")
			}
			if v, ok := tt.env["VAULT_NAMESPACE"]; ok {
				t.Setenv("VAULT_NAMESPACE", v) // the real environment Load consults for VAULT_*
			}
			c, err := Load(e.get, fl)
			if err != nil {
				t.Fatalf("Load() = %v", err)
			}
			tt.check(t, c, p)
		})
	}
}

func TestLoadSystemFileError(t *testing.T) {
	unsetVault(t)
	e, home := base(t)
	e["CLAUDE_AUTH_SYSTEM_CONFIG"] = writeSys(t, home, "VAULT_ADDR=x\nCLAUDE_AUTH_BOGUS=1\n")
	_, err := Load(e.get, Flags{})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), ":2:") {
		t.Errorf("Load() with a bad system file = %v; want %v naming line 2", err, ErrConfig)
	}
}

func TestHostIdentity(t *testing.T) {
	dir := t.TempDir()
	mid := filepath.Join(dir, "machine-id")
	if err := os.WriteFile(mid, []byte("3d1219c7c4c5404aaa1f6d2a48adfda4\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	old := MachineIDFile
	MachineIDFile = mid
	defer func() { MachineIDFile = old }()
	host, _ := os.Hostname()
	for _, c := range []struct {
		id, label         string
		wantID, wantLabel string
		err               bool
	}{
		{wantID: "3d1219c7c4c5404aaa1f6d2a48adfda4", wantLabel: host},
		{id: "devvm-07", label: "devvm 07", wantID: "devvm-07", wantLabel: "devvm 07"},
		{id: "a/b", err: true},
		{id: "..", err: true},
		{id: strings.Repeat("x", 65), err: true},
		{id: "ok", label: "evil;status=OK\nx", wantID: "ok", wantLabel: "evil_status_OK_x"},
	} {
		id, label, err := hostIdentity(c.id, c.label)
		if c.err {
			if err == nil || !errors.Is(err, ErrConfig) {
				t.Errorf("hostIdentity(%q) = %q, %v; want a configuration error", c.id, id, err)
			}
			continue
		}
		if err != nil || id != c.wantID || label != c.wantLabel {
			t.Errorf("hostIdentity(%q, %q) = %q, %q, %v; want %q, %q", c.id, c.label, id, label, err, c.wantID, c.wantLabel)
		}
	}
}
