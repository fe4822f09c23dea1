// Package config gathers the settings: built-in defaults, then the system-wide
// config file (the fleet's settings), then the environment (the reference tool's
// names keep working), then command-line flags. Later wins.
package config

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// SystemFile is the fleet-wide config file.
const SystemFile = "/etc/claude-auth-sync/config"

// ErrConfig marks a configuration mistake (exit code 78).
var ErrConfig = errors.New("configuration error")

// Config is everything a command needs to know.
type Config struct {
	User string
	// ActFor is the account root acts for (--user naming another user): the
	// process takes its identity (TakeIdentity) and its home. nil = the
	// caller's own login.
	ActFor          *Account
	Home            string
	ClaudeConfigDir string // realpath of Claude's config dir
	CredentialsFile string
	ConfigDir       string // ~/.config/claude-auth-sync
	VaultTokenFile  string
	TokenEnvFile    string // setup-token env file
	StateDir        string // ~/.local/state/claude-auth-sync
	LogFile         string // <state>/sync.log
	LocalStoreFile  string // backup file when no Vault is configured

	Store        string // auto | vault | file
	VaultAddr    string
	VaultMount   string
	VaultPath    string // inside the mount
	VaultTimeout time.Duration

	// ClaudeBin is the configured claude CLI, its home expanded ("" = search
	// the PATH and the installers' places: FindClaude).
	ClaudeBin string
	// SearchPath is the user's PATH, where FindClaude looks first.
	SearchPath    string
	CheckTimeout  time.Duration
	CheckInterval time.Duration
	// CheckSpread: an agent start with no fresh check waits a random delay
	// up to this long before checking, so the agents of many users (a
	// reboot, an upgrade) do not all run claude at once. 0 = no spread.
	CheckSpread time.Duration

	JournalSocket string

	// MetricsDir is the node exporter's textfile-collector dir; "" = no metrics.
	MetricsDir string
	// HostID names this workstation in the store: each host's login is
	// backed up and restored only for that host (default: /etc/machine-id).
	// HostLabel is its readable name (default: the hostname).
	HostID, HostLabel string

	// The single refresher: Claude's token endpoint and how early to refresh.
	OAuthTokenURL  string
	OAuthClientID  string
	OAuthScopes    string
	OAuthUserAgent string
	RefreshLead    time.Duration

	// MCP logins (mcpOAuth): refreshed ahead of Claude unless MCPOff; MCPLead
	// before expiry (never under MCPMinLead); servers named in MCPSkip are
	// left alone.
	MCPOff  bool
	MCPLead time.Duration
	MCPSkip []string

	// Sources says where each setting came from, for `status` and errors.
	Sources map[string]string

	// claudeDirSetting and credentialsSetting are CLAUDE_CONFIG_DIR and the
	// credentials file as set ("" = the default), kept to be resolved again.
	claudeDirSetting, credentialsSetting string
}

// VaultClientKeys are the Vault client's own settings (hashicorp/vault/api
// reads them from the environment). The system file takes them too: Load
// hands the file's values to the client through the environment, unless the
// environment already says otherwise. VAULT_ADDR is ours (flag, file, env).
var VaultClientKeys = []string{
	"VAULT_CACERT", "VAULT_CACERT_BYTES", "VAULT_CAPATH", "VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY",
	"VAULT_SKIP_VERIFY", "VAULT_TLS_SERVER_NAME", "VAULT_NAMESPACE", "VAULT_CLIENT_TIMEOUT",
	"VAULT_SRV_LOOKUP", "VAULT_HTTP_PROXY", "VAULT_PROXY_ADDR", "VAULT_DISABLE_REDIRECTS",
	"VAULT_RATE_LIMIT", "VAULT_HEADERS",
}

// VaultIgnoredKeys are Vault client settings that do not apply: only the
// scoped token file is used (VAULT_TOKEN), the engine is the one place that
// retries (VAULT_MAX_RETRIES), responses must not be wrapped, there is nobody
// to answer an MFA prompt, and VAULT_ADDR names the server (VAULT_AGENT_ADDR).
var VaultIgnoredKeys = []string{"VAULT_TOKEN", "VAULT_MAX_RETRIES", "VAULT_WRAP_TTL", "VAULT_MFA", "VAULT_AGENT_ADDR"}

// fileKeys are the settings the system file takes (unknown keys are errors).
var fileKeys = func() map[string]bool {
	m := map[string]bool{
		"VAULT_ADDR":        true,
		"CLAUDE_AUTH_STORE": true, "CLAUDE_AUTH_VAULT_MOUNT": true, "CLAUDE_AUTH_VAULT_PATH": true,
		"CLAUDE_AUTH_CLAUDE_BIN": true, "CLAUDE_AUTH_CHECK_TIMEOUT": true, "CLAUDE_AUTH_CHECK_INTERVAL": true, "CLAUDE_AUTH_CHECK_SPREAD": true,
		"CLAUDE_AUTH_STATE_DIR": true, "CLAUDE_AUTH_CONFIG_DIR": true, "CLAUDE_AUTH_VAULT_TOKEN_FILE": true,
		"CLAUDE_AUTH_TOKEN_ENV_FILE": true, "CLAUDE_AUTH_LOCAL_STORE": true, "CLAUDE_AUTH_JOURNAL_SOCKET": true,
		"CLAUDE_AUTH_OAUTH_TOKEN_URL": true, "CLAUDE_AUTH_OAUTH_CLIENT_ID": true, "CLAUDE_AUTH_OAUTH_SCOPES": true,
		"CLAUDE_AUTH_OAUTH_USER_AGENT": true, "CLAUDE_AUTH_REFRESH_LEAD": true,
		"CLAUDE_AUTH_MCP": true, "CLAUDE_AUTH_MCP_LEAD": true, "CLAUDE_AUTH_MCP_SKIP": true,
		"CLAUDE_AUTH_METRICS_DIR": true, "CLAUDE_AUTH_HOST_ID": true, "CLAUDE_AUTH_HOST_LABEL": true,
	}
	for _, k := range VaultClientKeys {
		m[k] = true
	}
	return m
}()

// FileKeys lists the settings the system file takes, sorted.
func FileKeys() []string {
	var out []string
	for k := range fileKeys {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Keys lists the keys the system file takes, for the man page.
func Keys() []string {
	out := make([]string, 0, len(fileKeys))
	for k := range fileKeys {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Flags are the command-line overrides ("" = not given).
type Flags struct {
	SystemConfig    string
	User            string
	CredentialsFile string
	StateDir        string
	Store           string
	VaultAddr       string
	VaultPath       string
	VaultTokenFile  string
	ClaudeBin       string
	CheckTimeout    time.Duration
	// Account is User already looked up (provision has its own lookup); nil
	// = Load asks the user databases.
	Account *Account
}

// Load builds the config. getenv is os.Getenv in production.
func Load(getenv func(string) string, fl Flags) (*Config, error) {
	s, err := readSettings(getenv, fl.SystemConfig)
	if err != nil {
		return nil, err
	}
	s.exportVaultClientKeys()
	c := &Config{Sources: s.src}
	if err := c.setUser(s, fl); err != nil {
		return nil, err
	}
	if err := c.setFiles(s, fl); err != nil {
		return nil, err
	}
	if err := c.setHost(s); err != nil {
		return nil, err
	}
	if err := c.setStore(s, fl); err != nil {
		return nil, err
	}
	if err := c.setClaude(s, fl); err != nil {
		return nil, err
	}
	if err := c.setRefresh(s); err != nil {
		return nil, err
	}
	if c.VaultTimeout, err = duration(0, s.getenv("VAULT_CLIENT_TIMEOUT"), 15*time.Second, "VAULT_CLIENT_TIMEOUT"); err != nil {
		return nil, err
	}
	return c, nil
}

// settings are where Load looks a setting up: the environment, then the
// system file. src notes where each one came from (Config.Sources).
type settings struct {
	getenv  func(string) string
	file    map[string]string
	sysPath string
	src     map[string]string
}

// readSettings reads the system file: the one named (--config), else
// CLAUDE_AUTH_SYSTEM_CONFIG's or SystemFile, which may be missing.
func readSettings(getenv func(string) string, named string) (*settings, error) {
	sysPath := firstNonEmpty(named, getenv("CLAUDE_AUTH_SYSTEM_CONFIG"), SystemFile)
	file, err := ReadFile(sysPath)
	if err != nil && !(errors.Is(err, os.ErrNotExist) && named == "") {
		if !errors.Is(err, ErrConfig) {
			// A config file named on the command line that does not exist.
			err = fmt.Errorf("%w: %v", ErrConfig, err)
		}
		return nil, err
	}
	return &settings{getenv: getenv, file: file, sysPath: sysPath, src: map[string]string{}}, nil
}

// get is the setting key ("" = unset) and notes its source.
func (s *settings) get(key string) string {
	if v := s.getenv(key); v != "" {
		s.src[key] = "environment"
		return v
	}
	if v, ok := s.file[key]; ok && v != "" {
		s.src[key] = s.sysPath
		return v
	}
	return ""
}

// exportVaultClientKeys: the VAULT_* settings from the file reach the Vault
// client through the environment it reads, unless the environment already
// says otherwise.
func (s *settings) exportVaultClientKeys() {
	for _, k := range VaultClientKeys {
		if v, ok := s.file[k]; ok && s.getenv(k) == "" {
			os.Setenv(k, v)
		}
	}
}

// setUser decides whose login this is (User, ActFor) and where its home is.
func (c *Config) setUser(s *settings, fl Flags) error {
	me, myHome := CurrentAccount()
	c.User = firstNonEmpty(fl.User, s.getenv("CLAUDE_AUTH_USER"), me)
	if c.User == "" {
		return fmt.Errorf("%w: cannot tell the OS user; set CLAUDE_AUTH_USER", ErrConfig)
	}
	var err error
	if c.ActFor, err = resolveUser(c.User, me, fl.Account); err != nil {
		return err
	}
	if c.ActFor != nil {
		// Root for another user: that user's home and files, none of the
		// caller's own paths from the environment.
		s.getenv = withoutCallerPaths(s.getenv)
		c.Home = c.ActFor.Home
	} else {
		c.Home = firstNonEmpty(s.getenv("HOME"), myHome)
	}
	return nil
}

// setFiles places Claude's files and ours: in the home and XDG dirs unless
// flags or settings say otherwise.
func (c *Config) setFiles(s *settings, fl Flags) error {
	getenv, get := s.getenv, s.get
	c.claudeDirSetting = getenv("CLAUDE_CONFIG_DIR")
	c.credentialsSetting = firstNonEmpty(fl.CredentialsFile, getenv("CLAUDE_CREDENTIALS_FILE"))
	if c.ActFor == nil {
		if err := c.resolveClaudeDir(); err != nil {
			return err
		}
	} else {
		// Root for a user: the links in the user's home are followed by
		// TakeIdentity, with the user's rights, never root's.
		c.ClaudeConfigDir = filepath.Join(c.Home, ".claude")
		c.CredentialsFile = firstNonEmpty(c.credentialsSetting, filepath.Join(c.ClaudeConfigDir, credentials.FileName))
	}

	xdgConfig := firstNonEmpty(getenv("XDG_CONFIG_HOME"), filepath.Join(c.Home, ".config"))
	xdgState := firstNonEmpty(getenv("XDG_STATE_HOME"), filepath.Join(c.Home, ".local", "state"))
	c.ConfigDir = firstNonEmpty(get("CLAUDE_AUTH_CONFIG_DIR"), filepath.Join(xdgConfig, "claude-auth-sync"))
	c.VaultTokenFile = firstNonEmpty(fl.VaultTokenFile, get("CLAUDE_AUTH_VAULT_TOKEN_FILE"), filepath.Join(c.ConfigDir, "vault-token"))
	c.TokenEnvFile = firstNonEmpty(get("CLAUDE_AUTH_TOKEN_ENV_FILE"), filepath.Join(c.ConfigDir, "claude-oauth.env"))
	c.StateDir = firstNonEmpty(fl.StateDir, get("CLAUDE_AUTH_STATE_DIR"), filepath.Join(xdgState, "claude-auth-sync"))
	c.LogFile = filepath.Join(c.StateDir, "sync.log")
	c.LocalStoreFile = firstNonEmpty(get("CLAUDE_AUTH_LOCAL_STORE"), filepath.Join(c.StateDir, "backup.json"))
	c.MetricsDir = get("CLAUDE_AUTH_METRICS_DIR")
	return nil
}

// resolveClaudeDir places Claude's config dir (its realpath) and the
// credentials file in it.
func (c *Config) resolveClaudeDir() error {
	dir, err := credentials.ResolveConfigDir(c.claudeDirSetting, c.Home)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	c.ClaudeConfigDir = dir
	c.CredentialsFile = firstNonEmpty(c.credentialsSetting, filepath.Join(dir, credentials.FileName))
	return nil
}

// setHost names this host and finds its journal ("off" = none).
func (c *Config) setHost(s *settings) error {
	var err error
	if c.HostID, c.HostLabel, err = hostIdentity(s.get("CLAUDE_AUTH_HOST_ID"), s.get("CLAUDE_AUTH_HOST_LABEL")); err != nil {
		return err
	}
	c.JournalSocket = s.get("CLAUDE_AUTH_JOURNAL_SOCKET")
	if c.JournalSocket == "" {
		if _, err := os.Stat("/run/systemd/journal/socket"); err == nil {
			c.JournalSocket = "/run/systemd/journal/socket"
		}
	} else if c.JournalSocket == "off" {
		c.JournalSocket = ""
	}
	return nil
}

// setStore picks the store (auto: Vault when it has an address) and where
// in Vault the user's documents are.
func (c *Config) setStore(s *settings, fl Flags) error {
	c.VaultAddr = firstNonEmpty(fl.VaultAddr, s.get("VAULT_ADDR"))
	c.Store = firstNonEmpty(fl.Store, s.get("CLAUDE_AUTH_STORE"), "auto")
	switch c.Store {
	case "auto":
		if c.VaultAddr != "" {
			c.Store = "vault"
		} else {
			c.Store = "file"
		}
	case "vault":
		if c.VaultAddr == "" {
			return fmt.Errorf("%w: store is vault but VAULT_ADDR is not set (environment, --vault-addr or %s)", ErrConfig, s.sysPath)
		}
	case "file":
	default:
		return fmt.Errorf("%w: CLAUDE_AUTH_STORE=%q: want auto, vault or file", ErrConfig, c.Store)
	}
	return c.setVaultPath(s, fl)
}

// setVaultPath splits the KV path, {user} filled in, into its mount and the
// path inside it, and refuses what is not a plain KV path.
func (c *Config) setVaultPath(s *settings, fl Flags) error {
	c.VaultMount = firstNonEmpty(s.get("CLAUDE_AUTH_VAULT_MOUNT"), "")
	full := firstNonEmpty(fl.VaultPath, s.get("CLAUDE_AUTH_VAULT_PATH"), "secret/workstation/claude-users/{user}")
	if c.Store == "vault" {
		// The user's name becomes one segment of every path the store
		// asks for (and of its policy's rules): a dot segment, a '/' or a
		// '%' in it would name another place.
		if err := store.CheckSegment("user name", c.User); err != nil {
			return fmt.Errorf("%w: %v", ErrConfig, err)
		}
	}
	full = strings.ReplaceAll(full, "{user}", c.User)
	full = strings.Trim(full, "/")
	if c.VaultMount == "" {
		// Like `vault kv`: the first segment is the mount.
		mount, rest, ok := strings.Cut(full, "/")
		if !ok || rest == "" {
			return fmt.Errorf("%w: CLAUDE_AUTH_VAULT_PATH=%q: want <mount>/<path>, e.g. secret/workstation/claude-users/%s", ErrConfig, full, c.User)
		}
		c.VaultMount, c.VaultPath = mount, rest
	} else {
		c.VaultPath = strings.TrimPrefix(full, c.VaultMount+"/")
	}
	// "secret/data/…" is the API path, not the KV path: `vault kv` adds data/ itself.
	if strings.Contains("/"+c.VaultPath+"/", "/../") || strings.Contains(c.VaultPath, "/data/") ||
		strings.HasPrefix(c.VaultPath, "data/") || strings.HasPrefix(c.VaultPath, "metadata/") {
		return fmt.Errorf("%w: CLAUDE_AUTH_VAULT_PATH=%q is not a plain KV path", ErrConfig, full)
	}
	if c.Store == "vault" {
		if err := store.CheckPath("CLAUDE_AUTH_VAULT_MOUNT", c.VaultMount); err != nil {
			return fmt.Errorf("%w: %v", ErrConfig, err)
		}
		if err := store.CheckPath("CLAUDE_AUTH_VAULT_PATH", c.VaultPath); err != nil {
			return fmt.Errorf("%w: %v", ErrConfig, err)
		}
	}
	return nil
}

// setClaude says which claude CLI the check runs, where it is looked for,
// and how long and how often the check runs.
func (c *Config) setClaude(s *settings, fl Flags) error {
	c.ClaudeBin = s.get("CLAUDE_AUTH_CLAUDE_BIN")
	if fl.ClaudeBin != "" {
		c.ClaudeBin, s.src["CLAUDE_AUTH_CLAUDE_BIN"] = fl.ClaudeBin, "--claude"
	}
	c.ClaudeBin = expandHome(c.ClaudeBin, c.Home)
	c.SearchPath = s.getenv("PATH")
	var err error
	if c.CheckTimeout, err = duration(fl.CheckTimeout, s.get("CLAUDE_AUTH_CHECK_TIMEOUT"), 90*time.Second, "CLAUDE_AUTH_CHECK_TIMEOUT"); err != nil {
		return err
	}
	if c.CheckInterval, err = duration(0, s.get("CLAUDE_AUTH_CHECK_INTERVAL"), 6*time.Hour, "CLAUDE_AUTH_CHECK_INTERVAL"); err != nil {
		return err
	}
	switch sp := s.get("CLAUDE_AUTH_CHECK_SPREAD"); sp {
	case "0", "0s", "off":
		c.CheckSpread = 0
	default:
		if c.CheckSpread, err = duration(0, sp, 5*time.Minute, "CLAUDE_AUTH_CHECK_SPREAD"); err != nil {
			return err
		}
	}
	return nil
}

// setRefresh is the single refresher's: Claude's token endpoint and how
// early to refresh.
func (c *Config) setRefresh(s *settings) error {
	c.OAuthTokenURL = s.get("CLAUDE_AUTH_OAUTH_TOKEN_URL")
	c.OAuthClientID = s.get("CLAUDE_AUTH_OAUTH_CLIENT_ID")
	c.OAuthScopes = s.get("CLAUDE_AUTH_OAUTH_SCOPES")
	c.OAuthUserAgent = s.get("CLAUDE_AUTH_OAUTH_USER_AGENT")
	var err error
	if c.RefreshLead, err = duration(0, s.get("CLAUDE_AUTH_REFRESH_LEAD"), 15*time.Minute, "CLAUDE_AUTH_REFRESH_LEAD"); err != nil {
		return err
	}
	return c.setMCP(s)
}

// MCPClaudeThreshold is how close to expiry Claude Code refreshes an MCP
// login itself (300 s); MCPMinLead, twice that, is the closest we refresh.
const (
	MCPClaudeThreshold = 300 * time.Second
	MCPMinLead         = 2 * MCPClaudeThreshold
)

// setMCP is the MCP refresher's: on or off, the lead, the servers to skip.
func (c *Config) setMCP(s *settings) error {
	switch v := strings.ToLower(strings.TrimSpace(s.get("CLAUDE_AUTH_MCP"))); v {
	case "", "on", "1", "true", "yes":
	case "off", "0", "false", "no":
		c.MCPOff = true
	default:
		return fmt.Errorf("%w: CLAUDE_AUTH_MCP=%q: want on or off", ErrConfig, v)
	}
	var err error
	if c.MCPLead, err = duration(0, s.get("CLAUDE_AUTH_MCP_LEAD"), 15*time.Minute, "CLAUDE_AUTH_MCP_LEAD"); err != nil {
		return err
	}
	if c.MCPLead < MCPMinLead {
		return fmt.Errorf("%w: CLAUDE_AUTH_MCP_LEAD=%s is closer to expiry than %s (twice Claude's own %s threshold): Claude would refresh first", ErrConfig, c.MCPLead, MCPMinLead, MCPClaudeThreshold)
	}
	c.MCPSkip = nil
	for _, name := range strings.Split(s.get("CLAUDE_AUTH_MCP_SKIP"), ",") {
		if name = strings.TrimSpace(name); name != "" {
			c.MCPSkip = append(c.MCPSkip, name)
		}
	}
	return nil
}

func duration(flag time.Duration, s string, def time.Duration, name string) (time.Duration, error) {
	if flag > 0 {
		return flag, nil
	}
	if s == "" {
		return def, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n > 0 {
		return time.Duration(n) * time.Second, nil
	}
	return 0, fmt.Errorf("%w: %s=%q: want a duration like 90s or 6h", ErrConfig, name, s)
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// ReadFile parses the system config file: KEY=value lines, # comments, optional
// quotes around the value. Unknown keys are errors with their line number.
func ReadFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return map[string]string{}, err
		}
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: %s:%d: want KEY=value", ErrConfig, path, n)
		}
		if !fileKeys[k] {
			return nil, fmt.Errorf("%w: %s:%d: unknown setting %s", ErrConfig, path, n, k)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
			v = v[1 : len(v)-1]
		}
		out[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	return out, nil
}

// MachineIDFile is where the host identity comes from by default.
var MachineIDFile = "/etc/machine-id"

// hostIdentity is the host's id (a Vault path segment and a metadata key, so
// 1-64 of [A-Za-z0-9_.-]) and its label, from the settings or the machine.
func hostIdentity(id, label string) (string, string, error) {
	if id == "" {
		// systemd's machine-id, D-Bus's copy of it, else the hostname.
		for _, f := range []string{MachineIDFile, "/var/lib/dbus/machine-id"} {
			if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) != "" {
				id = strings.TrimSpace(string(b))
				break
			}
		}
		if id == "" {
			h, err := os.Hostname()
			if err != nil || !validHostID(h) {
				return "", "", fmt.Errorf("%w: cannot tell this host's identity (no %s, hostname %q): set CLAUDE_AUTH_HOST_ID", ErrConfig, MachineIDFile, h)
			}
			id = h
		}
	}
	if !validHostID(id) {
		return "", "", fmt.Errorf("%w: host id %q: want 1-64 letters, digits, '.', '_' or '-' (CLAUDE_AUTH_HOST_ID, or %s)", ErrConfig, id, MachineIDFile)
	}
	if label == "" {
		label, _ = os.Hostname()
	}
	label = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == ';' || r == '=' {
			return '_'
		}
		return r
	}, label)
	if len(label) > 64 {
		label = label[:64]
	}
	if label == "" {
		label = id
	}
	return id, label, nil
}

func validHostID(id string) bool {
	if id == "" || len(id) > 64 || id == "." || id == ".." {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}
