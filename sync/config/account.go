package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/claude-auth-sync/claude-auth-sync/sync/session"
)

// Account is an OS account as the user databases (NSS: /etc/passwd, LDAP,
// SSSD) know it.
type Account struct {
	Name     string
	UID, GID int
	Home     string
	Groups   []int // supplementary groups, the primary one included
}

// ErrNoAccount: the user databases do not know the name.
var ErrNoAccount = errors.New("no such user")

// LookupAccount finds an account by name: LookupNSS, which tests replace.
var LookupAccount = LookupNSS

// geteuid is os.Geteuid; tests pretend to be someone else.
var geteuid = os.Geteuid

// accountName is what getent is asked about: a POSIX-like name (with SSSD's
// fully qualified user@domain), never an option ("-s") nor a number (getent
// would read that as a uid).
var accountName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9._@-]*\$?$`)

// LookupNSS finds an account by name in the user databases through NSS
// (`getent passwd`): the binary is static, and Go's os/user then reads only
// /etc/passwd, which does not hold directory accounts (LDAP, SSSD,
// extrausers). An *exec.Error says getent itself could not run.
func LookupNSS(name string) (*Account, error) {
	if !accountName.MatchString(name) {
		return nil, fmt.Errorf("%q is not a user name", name)
	}
	f, err := getentPasswd(name)
	if err != nil {
		return nil, err
	}
	if f[0] != name {
		return nil, fmt.Errorf("%s: %w", name, ErrNoAccount)
	}
	a, err := parsePasswd(f)
	if err != nil {
		return nil, err
	}
	// Supplementary groups, through NSS too; without them, the primary one.
	if out, err := exec.Command("id", "-G", name).Output(); err == nil {
		var gs []int
		for _, s := range strings.Fields(string(out)) {
			if g, err := strconv.Atoi(s); err == nil {
				gs = append(gs, g)
			}
		}
		if len(gs) > 0 {
			a.Groups = gs
		}
	}
	return a, nil
}

// CurrentAccount is this process's user name and home: from /etc/passwd
// (Go's own reader) or, for directory accounts only NSS knows, from
// `getent passwd <uid>`. Empty when neither knows it.
func CurrentAccount() (name, home string) {
	if u, err := user.Current(); err == nil && u.Username != "" && u.HomeDir != "" {
		return u.Username, u.HomeDir
	}
	uid := strconv.Itoa(os.Getuid())
	f, err := getentPasswd(uid)
	if err != nil || f[2] != uid {
		return "", ""
	}
	return f[0], f[5]
}

// getentPasswd is the seven fields of `getent passwd -- key`'s first line;
// ErrNoAccount when the databases do not know key.
func getentPasswd(key string) ([]string, error) {
	var errb bytes.Buffer
	cmd := exec.Command("getent", "passwd", "--", key)
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 2 { // getent: key not found
			return nil, fmt.Errorf("%s: %w", key, ErrNoAccount)
		}
		var xe *exec.Error
		if errors.As(err, &xe) {
			return nil, xe
		}
		return nil, fmt.Errorf("getent passwd %s: %v %s", key, err, strings.TrimSpace(errb.String()))
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	f := strings.Split(line, ":")
	if len(f) != 7 {
		return nil, fmt.Errorf("getent passwd %s: unexpected answer %q", key, line)
	}
	return f, nil
}

// parsePasswd makes an Account of passwd(5) fields: numeric uid and gid, an
// absolute home.
func parsePasswd(f []string) (*Account, error) {
	uid, err1 := strconv.Atoi(f[2])
	gid, err2 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil || uid < 0 || gid < 0 || !strings.HasPrefix(f[5], "/") {
		return nil, fmt.Errorf("getent passwd %s: an entry with no usable uid, gid or home", f[0])
	}
	return &Account{Name: f[0], UID: uid, GID: gid, Home: f[5], Groups: []int{gid}}, nil
}

// resolveUser decides whose login this process works on. named is --user or
// CLAUDE_AUTH_USER ("" = the caller). It returns the account to act for when
// that is another one than the caller's (only root may), nil otherwise.
func resolveUser(named, me string, known *Account) (*Account, error) {
	if named == "" || named == me {
		return nil, nil
	}
	a := known
	if a == nil || a.Name != named {
		var err error
		if a, err = LookupAccount(named); err != nil {
			return nil, fmt.Errorf("%w: --user/CLAUDE_AUTH_USER %s: %v", ErrConfig, named, err)
		}
	}
	euid := geteuid()
	if a.UID == euid {
		return nil, nil // another name of the caller's own account
	}
	if euid != 0 {
		if me == "" {
			me = "uid " + strconv.Itoa(euid)
		}
		return nil, fmt.Errorf("%w: --user/CLAUDE_AUTH_USER %s: only root can act for another user (this is %s); run it as %s, or leave --user and CLAUDE_AUTH_USER unset", ErrConfig, named, me, named)
	}
	return a, nil
}

// callerPaths are the environment settings that describe the caller's own
// files: when root acts for another user, they are root's, not the user's.
var callerPaths = []string{
	"HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "CLAUDE_CONFIG_DIR", "CLAUDE_CREDENTIALS_FILE",
	"CLAUDE_AUTH_STATE_DIR", "CLAUDE_AUTH_CONFIG_DIR", "CLAUDE_AUTH_VAULT_TOKEN_FILE",
	"CLAUDE_AUTH_TOKEN_ENV_FILE", "CLAUDE_AUTH_LOCAL_STORE",
}

func withoutCallerPaths(getenv func(string) string) func(string) string {
	return func(k string) string {
		for _, p := range callerPaths {
			if k == p {
				return ""
			}
		}
		return getenv(k)
	}
}

// TakeIdentity makes this process the account the config acts for (root's
// --user), before anything is read or written: every file is then made with
// the user's uid and checked with the user's rights, never root's, and the
// claude CLI the user controls never runs as root. A no-op for the caller's
// own login.
//
// The process then runs with the user's uid while it still holds root's
// environment and descriptors, so it also: marks every inherited descriptor
// close-on-exec (none reaches a child), makes itself not dumpable (the user
// may not ptrace it nor read its /proc files, environ included), drops the
// secret-named variables it has no use for, and resolves the paths in the
// user's home only now, as the user.
func (c *Config) TakeIdentity() error {
	a := c.ActFor
	if a == nil {
		return nil
	}
	if err := session.CloseOnExec(); err != nil {
		return fmt.Errorf("%w: act for %s: %v", ErrConfig, a.Name, err)
	}
	// Go applies these to every thread of the process.
	if err := syscall.Setgroups(a.Groups); err != nil {
		return fmt.Errorf("%w: act for %s: setgroups: %v", ErrConfig, a.Name, err)
	}
	if err := syscall.Setgid(a.GID); err != nil {
		return fmt.Errorf("%w: act for %s: setgid %d: %v", ErrConfig, a.Name, a.GID, err)
	}
	if err := syscall.Setuid(a.UID); err != nil {
		return fmt.Errorf("%w: act for %s: setuid %d: %v", ErrConfig, a.Name, a.UID, err)
	}
	// The kernel resets dumpable to fs.suid_dumpable on the uid change (0 by
	// default, 2 on some distributions): say 0 whatever the sysctl holds.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("%w: act for %s: prctl(PR_SET_DUMPABLE): %v", ErrConfig, a.Name, err)
	}
	// Children (the check's claude, exec's command, the refresh child) see
	// the user's environment, not root's (and ChildEnv allow-lists it).
	for _, k := range append(callerPaths, "XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_DATA_HOME", "DBUS_SESSION_BUS_ADDRESS") {
		os.Unsetenv(k)
	}
	for _, kv := range os.Environ() {
		// Our own settings stay (VAULT_CLIENT_KEY names a file, the token
		// URL is no token); every other secret-named one is root's alone.
		if k, _, _ := strings.Cut(kv, "="); SecretName(k) && !ownSetting(k) {
			os.Unsetenv(k)
		}
	}
	os.Setenv("HOME", a.Home)
	os.Setenv("USER", a.Name)
	os.Setenv("LOGNAME", a.Name)
	_ = os.Chdir(a.Home)
	return c.resolveClaudeDir()
}
